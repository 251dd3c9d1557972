// bulkgen admin: live updates, selection and the new-job form (uploads: uploads.js). Plain JS, no build step.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
  const FINAL = ["succeeded", "failed", "cancelled"];

  const thumbUrl = (key) => "/images/thumb/" + key.split("/").map(encodeURIComponent).join("/");

  function formatSeconds(s) {
    if (s === null || s === undefined) return "unknown time";
    if (s < 1) return "under a second";
    if (s < 90) return `about ${Math.round(s)} s`;
    if (s < 5400) return `about ${Math.round(s / 60)} min`;
    return `about ${(s / 3600).toFixed(1)} h`;
  }

  function formatUsd(v) {
    return "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function formatWhen(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  // --- status bars, relative times, the start banner ----------------------------------------

  // Mirrors status_bar in web/templates/_macros.html: a segment per status, its share of the total.
  const BAR_PARTS = ["succeeded", "failed", "cancelled", "running", "waiting"];
  const partCounts = (counts) => ({ ...counts, waiting: (counts.pending || 0) + (counts.queued || 0) });
  function statusLegend(counts) {
    const parts = partCounts(counts);
    const words = BAR_PARTS.filter((s) => parts[s]).map((s) => `${parts[s]} ${s}`);
    return words.length ? words.join(" · ") : "no items";
  }
  function applyStatusBar(bar, counts, total) {
    if (!bar) return;
    const parts = partCounts(counts);
    for (const seg of $$(".seg", bar)) {
      const n = parts[seg.dataset.seg] || 0;
      seg.style.width = `${total ? Math.round((n / total) * 10000) / 100 : 0}%`;
    }
    const legend = statusLegend(counts);
    bar.setAttribute("aria-valuenow", String((counts.succeeded || 0) + (counts.failed || 0) + (counts.cancelled || 0)));
    bar.setAttribute("aria-valuetext", `${legend} of ${total}`);
    bar.title = legend;
    const text = bar.id && document.getElementById(`${bar.id}-legend`);
    if (text) text.textContent = legend;
  }

  // Mirrors the `age` filter in web/views/__init__.py.
  function relativeText(iso) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return null;
    const s = Math.floor((Date.now() - at) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }
  const RELATIVE_EVERY_MS = 15000;
  function renderRelativeTimes() {
    for (const el of $$("time[data-relative]")) {
      const text = relativeText(el.getAttribute("datetime"));
      if (text && el.textContent !== text) el.textContent = text;
    }
  }

  // A job's time left (#job-eta): its own throughput (finished items over the time since it
  // started); before the first finishes, the history's seconds per item from the page (data-per-item).
  function showRemaining(job) {
    const eta = $("#job-eta");
    const fact = $("#job-eta-fact");
    if (!eta || !fact) return;
    const held = $("#job-held");
    // Finished; or held back (paused, a paused queue): no time left to tell.
    if (FINAL.includes(job.status) || job.status === "paused" || (held && !held.hidden)) {
      fact.hidden = true;
      return;
    }
    const c = job.counts;
    const left = c.pending + c.queued + c.running;
    const done = c.succeeded + c.failed;
    const started = job.started_at ? Date.parse(job.started_at) : NaN;
    const perItem = eta.dataset.perItem === "" ? null : Number(eta.dataset.perItem);
    let text;
    if (left === 0) text = "finishing";
    else if (done > 0 && !Number.isNaN(started) && Date.now() > started) {
      text = `${formatSeconds((left * (Date.now() - started)) / 1000 / done)} left`;
    } else if (perItem !== null) {
      text = `${formatSeconds(Math.ceil(left / Math.max(1, c.running)) * perItem)} left (from past runs)`;
    } else text = "time left: no measurements yet";
    eta.textContent = text;
    fact.hidden = false;
  }
  // The job page's counts as shown (for a job already finished when the page was rendered).
  const countsShown = () =>
    Object.fromEntries($$("[data-count]").map((li) => [li.dataset.count, Number($("span", li).textContent)]));

  // The "Job started" banner (flash category job-start) says the job finished once it has.
  function finishBanners(job) {
    for (const banner of $$(".flash.job-start")) {
      banner.textContent = `Job finished: ${statusLegend(job.counts)}.`;
      banner.className = `flash ${job.counts.failed ? "flash-warning" : "flash-success"} job-finished`;
    }
    for (const note of [$("#job-held"), $("#job-waiting")]) if (note) note.hidden = true;
  }

  // --- selection across pages, kept for this browser tab ------------------------------------

  const SELECTION_KEY = "bulkgen.selection";
  const Selection = {
    load() {
      try {
        const value = JSON.parse(sessionStorage.getItem(SELECTION_KEY) || "[]");
        return Array.isArray(value) ? value.filter((x) => x && typeof x.key === "string") : [];
      } catch {
        return [];
      }
    },
    save(list) {
      sessionStorage.setItem(SELECTION_KEY, JSON.stringify(list));
      document.dispatchEvent(new CustomEvent("selection-changed"));
    },
    has(key) {
      return this.load().some((x) => x.key === key);
    },
    add(items) {
      const list = this.load();
      const known = new Set(list.map((x) => x.key));
      for (const item of items) {
        if (!known.has(item.key)) {
          list.push(item);
          known.add(item.key);
        }
      }
      this.save(list);
    },
    remove(key) {
      this.save(this.load().filter((x) => x.key !== key));
    },
    clear() {
      this.save([]);
    },
  };
  // The Images page's uploader (uploads.js) selects what it uploads through the same store.
  window.bulkgenSelection = Selection;

  // --- everywhere ---------------------------------------------------------------------------

  function setupCommon() {
    document.addEventListener("submit", (event) => {
      const form = event.target;
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
    });
    for (const select of $$("select[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.submit());
    }
    // A thumbnail that cannot be made (not an image, object gone) shows as an empty tile.
    document.addEventListener(
      "error",
      (event) => {
        if (event.target.tagName === "IMG") event.target.classList.add("broken");
      },
      true,
    );
    for (const region of $$("[data-refresh]")) liveRegion(region, Number(region.dataset.refresh) * 1000);
    renderRelativeTimes();
    setInterval(renderRelativeTimes, RELATIVE_EVERY_MS);
  }

  // Re-render a server-rendered region in place: fetch this page again and swap the region's content.
  // With data-stream, re-render when the server says a job changed (Server-Sent Events), plus every
  // data-idle-refresh seconds for what changes without a job (workers joining); without it, or when the
  // stream cannot be opened, every `every` ms.
  function liveRegion(region, every) {
    const render = async () => {
      try {
        const res = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
        if (res.redirected && new URL(res.url).pathname === "/login") {
          location.reload();
          return;
        }
        if (res.ok) {
          const doc = new DOMParser().parseFromString(await res.text(), "text/html");
          const fresh = doc.getElementById(region.id);
          if (fresh && fresh.innerHTML !== region.innerHTML) region.innerHTML = fresh.innerHTML;
        }
      } catch {
        // Offline for a moment: the next change or tick tries again.
      }
    };
    const poll = () => {
      const tick = async () => {
        if (!document.hidden) await render();
        setTimeout(tick, every);
      };
      setTimeout(tick, every);
    };
    const url = region.dataset.stream;
    if (!url || !window.EventSource) {
      poll();
      return;
    }
    let missed = false;
    let polling = false;
    const source = new EventSource(url);
    source.addEventListener("changed", () => {
      if (document.hidden) missed = true;
      else render();
    });
    source.addEventListener("error", () => {
      // A stream that ended is reopened by the browser; one refused (or never opened) is closed for good.
      if (source.readyState === EventSource.CLOSED && !polling) {
        polling = true;
        poll();
      }
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && missed) {
        missed = false;
        render();
      }
    });
    const idle = Number(region.dataset.idleRefresh || 0) * 1000;
    if (idle) {
      const slow = async () => {
        if (!document.hidden && !polling) await render();
        setTimeout(slow, idle);
      };
      setTimeout(slow, idle);
    }
  }

  // --- images: browse, select, upload -------------------------------------------------------

  function setupImages() {
    const bar = $("#selection-bar");
    const count = $("#selection-count");
    const boxes = $$(".pick-box");

    const render = () => {
      const list = Selection.load();
      const keys = new Set(list.map((x) => x.key));
      count.textContent = String(list.length);
      bar.hidden = list.length === 0;
      for (const box of boxes) {
        box.checked = keys.has(box.value);
        box.closest(".image-card").classList.toggle("selected", box.checked);
      }
    };
    for (const box of boxes) {
      box.addEventListener("change", () => {
        const card = box.closest(".image-card");
        if (box.checked) Selection.add([{ key: box.value, name: card.dataset.name }]);
        else Selection.remove(box.value);
      });
    }
    $("#select-page")?.addEventListener("click", () => {
      Selection.add(boxes.map((b) => ({ key: b.value, name: b.closest(".image-card").dataset.name })));
    });
    $("#selection-clear").addEventListener("click", () => Selection.clear());
    document.addEventListener("selection-changed", render);
    window.addEventListener("pageshow", render);
    render();
    // Uploading is web/static/uploads.js (direct to storage), loaded by the Images page.
  }

  // --- new job ------------------------------------------------------------------------------

  function setupNewJob() {
    const form = $("#job-form");
    const engines = JSON.parse($("#engines-data").textContent);
    const holder = $("#selected-inputs");
    const preview = $("#selection-preview");
    const runButton = $("#run");

    if (!holder.dataset.server) {
      const selected = Selection.load();
      holder.innerHTML = selected.map((x) => `<input type="hidden" name="inputs" value="${esc(x.key)}">`).join("");
      const shown = selected.slice(0, 12);
      preview.innerHTML =
        shown.map((x) => `<li><img src="${esc(thumbUrl(x.key))}" alt="${esc(x.name || "")}" title="${esc(x.name || x.key)}" width="56" height="56"></li>`).join("") +
        (selected.length > shown.length ? `<li class="more">+${selected.length - shown.length}</li>` : "");
    }
    // A folder job has no selected images: the page counts the folder's (data-count).
    const inputCount = () => Number(holder.dataset.count || 0) || $$('input[name="inputs"]', holder).length;
    const n = inputCount();
    $("#input-count").textContent = String(n);
    $("#no-selection").hidden = n > 0;
    runButton.disabled = n === 0;

    const current = () => {
      const checked = $('input[name="engine"]:checked', form);
      return checked ? checked.value : null;
    };

    const perItemCost = (value) => {
      const engine = engines[value];
      const c = engine.constraints || {};
      if (c.credits_per_second && c.usd_per_credit) {
        const field = $(`[data-engine-params="${CSS.escape(value)}"] [data-param="duration"]`, form);
        const seconds = field ? Number(field.value) : NaN;
        const audio = $(`[data-engine-params="${CSS.escape(value)}"] [data-param="audio"]`, form);
        // Veo without its audio track is billed at a lower rate.
        const perSecond = audio && !audio.checked && c.credits_per_second_without_audio
          ? c.credits_per_second_without_audio : c.credits_per_second;
        if (seconds > 0) return seconds * perSecond * c.usd_per_credit;
      }
      return engine.cost_per_item_usd;
    };

    const update = () => {
      const value = current();
      if (!value) return;
      const engine = engines[value];
      for (const block of $$("[data-engine-params]", form)) block.hidden = block.dataset.engineParams !== value;
      for (const block of $$("[data-prompt-field]", form)) {
        block.hidden = block.dataset.promptField !== (engine.prompt_field || "none");
      }
      const count = inputCount();
      const cost = perItemCost(value);
      const images = `${count} image${count === 1 ? "" : "s"}`;
      let text;
      if (cost === null || cost === undefined) text = `Estimated cost: <strong>free</strong> (runs on our own GPUs) for ${images}`;
      else if (cost === 0) text = `Estimated cost: <strong>free</strong> for ${images}`;
      else text = `Estimated cost: <strong>${formatUsd(cost * count)}</strong> for ${images} at ${formatUsd(cost)} each`;
      if (engine.simulated && cost) text += ` <span class="simulated-note">(simulated: no money is spent)</span>`;
      $("#estimate").innerHTML = text;
      estimateTime(value, count);
    };

    // Time from measurement (GET /jobs/new/estimate): the engine's recent runs, scaled to the chosen
    // parameters, over the queue's workers. Only the latest answer is shown.
    const timeLine = $("#estimate-time");
    let asked = 0;
    let timer = null;
    const estimateTime = (value, count) => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const mine = ++asked;
        const params = new URLSearchParams({ engine: value, count: String(count) });
        for (const field of $$(`[data-engine-params="${CSS.escape(value)}"] [data-param]`, form)) {
          if (field.type === "checkbox") params.set(field.name, field.checked ? "1" : "0");
          else params.set(field.name, field.value);
        }
        try {
          const res = await fetch(`${timeLine.dataset.url}?${params}`, { headers: { Accept: "application/json" } });
          const found = await res.json();
          if (mine === asked) {
            timeLine.textContent = found.text || found.error?.message || "";
            timeLine.dataset.samples = String(found.samples ?? 0);
            timeLine.dataset.totalS = found.total_s ?? "";
          }
        } catch {
          if (mine === asked) timeLine.textContent = "Time: the estimate could not be fetched.";
        }
      }, 200);
    };
    form.addEventListener("change", update);
    form.addEventListener("input", update);
    $(".field-error", form)?.scrollIntoView({ block: "center" });
    form.addEventListener("submit", () => {
      // One click, one job (the idempotency key makes a second submit harmless too).
      setTimeout(() => {
        runButton.disabled = true;
      }, 0);
    });
    update();
  }

  // --- one job: live progress and items ----------------------------------------------------

  // An item's row is the server's (GET /jobs/<id>/rows: item_row in web/templates/_macros.html);
  // this is only how the page tells that a row it shows is out of date (the row's data-sig).
  const signature = (item) => `${item.status}|${item.attempt}|${(item.outputs || []).length}|${item.error || ""}`;

  // --- results: a video played in its row or larger, segmentation layers, download menus -----

  function setupResults() {
    let viewer = null;
    const openViewer = (source) => {
      if (!viewer) {
        viewer = document.createElement("dialog");
        viewer.className = "viewer";
        viewer.innerHTML =
          '<form method="dialog" class="viewer-bar"><span class="viewer-title"></span>' +
          '<button type="submit" class="small">Close</button></form><video controls playsinline></video>';
        viewer.addEventListener("close", () => {
          const video = $("video", viewer);
          video.pause();
          video.removeAttribute("src");
          video.load();
        });
        // A click on the backdrop (outside the video and its bar) closes it too.
        viewer.addEventListener("click", (event) => {
          if (event.target === viewer) viewer.close();
        });
        document.body.append(viewer);
      }
      const video = $("video", viewer);
      if (source.poster) video.poster = source.poster;
      else video.removeAttribute("poster");
      video.src = source.currentSrc || source.src;
      $(".viewer-title", viewer).textContent = source.getAttribute("aria-label") || "";
      source.pause();
      viewer.showModal();
      video.play().catch(() => {});
    };
    document.addEventListener("click", (event) => {
      const play = event.target.closest("[data-play]");
      if (play) {
        // Played where it is; the browser's own controls (pause, seek, full screen) from then on.
        const video = $("video", play.closest("[data-player]"));
        video.controls = true;
        play.hidden = true;
        video.play().catch(() => {
          play.hidden = false;
        });
        return;
      }
      const enlarge = event.target.closest("[data-enlarge]");
      if (enlarge) {
        const video = $("[data-player] video", enlarge.closest("td"));
        if (video) openViewer(video);
        return;
      }
      // One download menu open at a time; a click elsewhere closes it.
      for (const menu of $$("details[data-menu][open]")) if (!menu.contains(event.target)) menu.open = false;
    });
    // Media events do not bubble: listen on the way down.
    document.addEventListener(
      "ended",
      (event) => {
        const play = event.target.closest && $("[data-play]", event.target.closest("[data-player]") || undefined);
        if (play) play.hidden = false;
      },
      true,
    );
    document.addEventListener("change", (event) => {
      const box = event.target;
      if (!box.dataset || box.dataset.layerToggle === undefined) return;
      const layer = $(`.seg-layer[data-layer="${CSS.escape(box.dataset.layerToggle)}"]`, box.closest("[data-seg]"));
      if (layer) layer.hidden = !box.checked;
    });
  }

  // Ticked item rows and "Download selected": a zip of those items (GET .../download?items=a,b).
  // Rows are swapped for the server's as items change: the ticks live in a Set the new rows are ticked from.
  function setupPicking() {
    const picked = new Set();
    const form = $("#download-selected");
    const button = $("#download-selected-button");
    const all = $("#pick-all");
    const boxes = () => $$("#items .item-pick");
    // The browser may have restored ticks (back/forward): start from what the page shows.
    for (const box of boxes()) if (box.checked) picked.add(box.value);
    const refresh = () => {
      const shown = boxes();
      const onPage = new Set(shown.map((b) => b.value));
      for (const id of picked) if (!onPage.has(id)) picked.delete(id);
      if (button) {
        button.disabled = picked.size === 0;
        button.textContent = picked.size ? `Download selected (${picked.size})` : "Download selected";
      }
      if (all) {
        all.hidden = shown.length === 0;
        all.checked = shown.length > 0 && picked.size === shown.length;
        all.indeterminate = picked.size > 0 && picked.size < shown.length;
      }
    };
    document.addEventListener("change", (event) => {
      const box = event.target;
      if (box === all) {
        for (const b of boxes()) {
          b.checked = all.checked;
          if (all.checked) picked.add(b.value);
          else picked.delete(b.value);
        }
      } else if (box.classList && box.classList.contains("item-pick")) {
        if (box.checked) picked.add(box.value);
        else picked.delete(box.value);
      } else {
        return;
      }
      refresh();
    });
    form?.addEventListener("submit", (event) => {
      event.preventDefault();
      const ids = boxes().filter((b) => picked.has(b.value)).map((b) => b.value);
      if (!ids.length) return;
      // One comma-joined parameter: a page of ids stays within the request URI limit, where the
      // form's own `items=...&items=...` would not.
      const link = document.createElement("a");
      link.href = `${form.action}?items=${ids.map(encodeURIComponent).join(",")}`;
      link.download = "";
      document.body.append(link);
      link.click();
      link.remove();
    });
    refresh();
    return { has: (id) => picked.has(id), refresh };
  }

  function setupJob() {
    const summary = $("#job-summary");
    const jobId = summary.dataset.jobId;
    const offset = Number(summary.dataset.offset || 0);
    const limit = Number(summary.dataset.limit || 100);
    const itemStatus = summary.dataset.itemStatus;
    const note = $("#live-note");
    const back = $('#job-actions input[name="back"]')?.value || location.pathname;
    const canChange = summary.dataset.canChange === "1";
    if (summary.dataset.clearSelection) Selection.clear();
    const picked = setupPicking();
    setupResults();

    // Rows that changed are fetched again from the server, a batch at a time, one request at a time
    // (changes that arrive meanwhile go in the next): the rows never go back to an older state.
    let order = $$("#items tbody tr[data-item-id]").map((row) => row.dataset.itemId);
    const stale = new Set();
    const place = (fresh) => {
      const id = fresh.dataset.itemId;
      const row = document.getElementById(`item-${id}`);
      if (row) {
        // Its cells are swapped in place, all but the tick box and the prompt: the prompt never
        // changes, and one the user opened (focused) stays open while the item runs and finishes.
        const cells = Array.from(row.children);
        Array.from(fresh.children).forEach((cell, i) => {
          if (!cell.classList.contains("prompt") && !cell.classList.contains("pick")) cells[i].replaceWith(cell);
        });
        row.dataset.sig = fresh.dataset.sig;
        return;
      }
      const at = order.indexOf(id);
      if (at < 0) return; // no longer on this page
      const box = $(".item-pick", fresh);
      if (box) box.checked = picked.has(id);
      const tbody = $("#items tbody");
      const before = order.slice(0, at).reverse().map((other) => document.getElementById(`item-${other}`)).find(Boolean);
      if (before) before.after(fresh);
      else tbody.prepend(fresh);
    };
    const drain = async () => {
      while (stale.size) {
        const ids = Array.from(stale).slice(0, 100);
        for (const id of ids) stale.delete(id);
        const params = new URLSearchParams({ ids: ids.join(","), back });
        let html = null;
        let status = 0;
        try {
          const res = await fetch(`/jobs/${encodeURIComponent(jobId)}/rows?${params}`, {
            headers: { Accept: "text/html" },
            cache: "no-store",
          });
          if (res.redirected && new URL(res.url).pathname === "/login") {
            note.textContent = "Your session has ended: reload the page to sign in again.";
            return;
          }
          status = res.status;
          if (res.ok) html = await res.text();
        } catch {
          status = 0;
        }
        if (status === 0 || status >= 500) {
          // Offline or failing for a moment: ask again shortly; the page goes on meanwhile.
          for (const id of ids) stale.add(id);
          setTimeout(fetchRows, 2000);
          return;
        }
        if (html === null) continue;
        const holder = document.createElement("tbody");
        holder.innerHTML = html;
        for (const fresh of $$("tr[data-item-id]", holder)) place(fresh);
        picked.refresh();
      }
    };
    // Resolves once the rows asked for so far are in (or could not be had this time).
    let draining = null;
    const fetchRows = () => {
      if (!draining) {
        draining = drain().finally(() => {
          draining = null;
        });
      }
      return draining;
    };
    // A row the page shows is brought up to date: its bar moves at once; anything else about it
    // (status, attempt, results, error) is fetched again.
    const updateRow = (row, item) => {
      if (row && row.dataset.sig === signature(item)) {
        const fill = item.status === "running" && $(".status-cell .bar > span", row);
        if (fill) fill.style.width = `${Math.round(item.progress * 1000) / 10}%`;
        return;
      }
      stale.add(item.id);
    };

    let failures = 0;
    // A snapshot of the job: its rows first (changed ones fetched from the server), then what the
    // page says about the whole job, so the two agree (a job shown finished shows its rows finished).
    let latest = null;
    const apply = (job) => {
      latest = job;
      const tbody = $("#items tbody");
      if (tbody && job.items) {
        order = job.items.map((item) => item.id);
        const seen = new Set(order);
        for (const item of job.items) updateRow(document.getElementById(`item-${item.id}`), item);
        for (const row of $$("tr[data-item-id]", tbody)) if (!seen.has(row.dataset.itemId)) row.remove();
        picked.refresh();
      }
      fetchRows().then(() => {
        if (latest === job) applySummary(job);
      });
    };
    const applySummary = (job) => {
      $("#job-status").innerHTML = `<span class="badge s-${esc(job.status)}">${esc(job.status)}</span>`;
      applyStatusBar($("#job-bar"), job.counts, job.total);
      $("#job-percent").textContent = `${Math.round(job.progress * 100)}%`;
      showRemaining(job);
      if (FINAL.includes(job.status)) finishBanners(job);
      for (const [status, n] of Object.entries(job.counts)) {
        const cell = $(`[data-count="${status}"] span`);
        if (cell) cell.textContent = String(n);
      }
      $("#job-finished").textContent = job.finished_at ? formatWhen(job.finished_at) : "—";
      const waiting = $("#job-waiting");
      waiting.hidden = !job.waiting_reason || FINAL.includes(job.status);
      $("span", waiting).textContent = job.waiting_reason || "";
      for (const el of $$("[data-show-when]")) {
        const when = el.dataset.showWhen;
        el.hidden = !(
          (when === "unfinished" && !FINAL.includes(job.status)) ||
          (when === "pausable" && !FINAL.includes(job.status) && job.status !== "paused") ||
          (when === "paused" && job.status === "paused") ||
          (when === "failed" && job.counts.failed > 0) ||
          (when === "succeeded" && job.counts.succeeded > 0)
        );
      }
    };

    const poll = async () => {
      let delay = 1000;
      try {
        const params = new URLSearchParams({ items_offset: offset, items_limit: limit });
        if (itemStatus) params.set("item_status", itemStatus);
        const res = await fetch(`/api/v1/jobs/${encodeURIComponent(jobId)}?${params}`, {
          headers: { Accept: "application/json" },
          cache: "no-store",
        });
        if (res.status === 401) {
          note.textContent = "Your session has ended: reload the page to sign in again.";
          return;
        }
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const job = await res.json();
        apply(job);
        failures = 0;
        note.textContent = "";
        if (FINAL.includes(job.status)) {
          note.textContent = "";
          return; // finished: actions on this page reload it, which starts polling again
        }
      } catch {
        failures += 1;
        note.textContent = "Lost contact with the server; still trying…";
        delay = Math.min(10000, 1000 * 2 ** Math.min(failures, 4));
      }
      setTimeout(poll, document.hidden ? Math.max(delay, 5000) : delay);
    };

    // Changed items from the stream: update the rows of this page (other items are not shown here).
    const updateRows = (items) => {
      for (const item of items) {
        const row = document.getElementById(`item-${item.id}`);
        if (row) updateRow(row, item);
      }
      fetchRows();
    };
    const showProgress = (progress) => {
      for (const [id, fraction] of Object.entries(progress.items)) {
        const fill = $(`#item-${CSS.escape(id)} .status-cell .bar > span`);
        if (fill) fill.style.width = `${Math.round(fraction * 1000) / 10}%`;
      }
      $("#job-percent").textContent = `${Math.round(progress.progress * 100)}%`;
    };

    // Live updates: the job's event stream (GET /api/v1/jobs/{id}/stream); polling when it breaks.
    // The server ends a stream after STREAM_MAX_S: a stream that worked is opened again from the last
    // event id; one that fails before it opens (blocked, refused, no EventSource) falls back to polling.
    let lastEventId = null;
    let reopened = 0;
    const stream = () => {
      const params = new URLSearchParams({ items_offset: offset, items_limit: limit });
      if (lastEventId !== null) params.set("last_event_id", lastEventId);
      const source = new EventSource(`/api/v1/jobs/${encodeURIComponent(jobId)}/stream?${params}`);
      let opened = false;
      const remember = (event) => {
        if (event.lastEventId) lastEventId = event.lastEventId;
      };
      source.onopen = () => {
        opened = true;
        note.textContent = "";
      };
      source.addEventListener("job", (event) => {
        remember(event);
        const job = JSON.parse(event.data);
        apply(job);
        if (FINAL.includes(job.status)) source.close(); // finished: actions on this page reload it
      });
      source.addEventListener("items", (event) => {
        remember(event);
        updateRows(JSON.parse(event.data).items);
      });
      source.addEventListener("progress", (event) => showProgress(JSON.parse(event.data)));
      source.onerror = () => {
        source.close();
        if (opened && reopened < 20) {
          reopened += 1;
          setTimeout(stream, 1000);
        } else {
          setTimeout(poll, 1000);
        }
      };
    };

    const status = $("#job-status .badge")?.textContent.trim();
    if (FINAL.includes(status)) {
      finishBanners({ status, counts: countsShown() });
      return;
    }
    // A filtered list (item_status) changes membership as items move: that view keeps polling.
    if (window.EventSource && !itemStatus) stream();
    else setTimeout(poll, 1000);
  }

  // --- event log ----------------------------------------------------------------------------

  function setupEvents() {
    const log = $("#event-log");
    if (!log.dataset.live) return;
    const words = JSON.parse($("#event-words").textContent);
    const jobId = log.dataset.jobId;
    const table = $("#events");
    const tbody = $("tbody", table);
    let after = Number(log.dataset.after || 0);
    const indexOf = new Map($$("tr[data-item-id]", tbody).map((r) => [r.dataset.itemId, r.dataset.index]));

    const itemIndex = async (itemId) => {
      if (!indexOf.has(itemId)) {
        try {
          const res = await fetch(`/api/v1/items/${encodeURIComponent(itemId)}`, { headers: { Accept: "application/json" } });
          indexOf.set(itemId, res.ok ? String((await res.json()).index) : "?");
        } catch {
          return "?";
        }
      }
      return indexOf.get(itemId);
    };

    const poll = async () => {
      let delay = 2000;
      try {
        const res = await fetch(`/api/v1/jobs/${encodeURIComponent(jobId)}/events?after=${after}&limit=200`, {
          headers: { Accept: "application/json" },
          cache: "no-store",
        });
        if (res.ok) {
          const { events } = await res.json();
          for (const e of events) {
            const what = (words[e.kind] || e.kind).replace("{to}", e.to_status || "?");
            const move = e.from_status && e.to_status && e.kind !== "job.status" ? ` <span class="muted small">${esc(e.from_status)} → ${esc(e.to_status)}</span>` : "";
            const item = e.item_id ? `#${esc(await itemIndex(e.item_id))}` : `<span class="muted">job</span>`;
            tbody.insertAdjacentHTML(
              "beforeend",
              `<tr data-event-id="${e.id}"${e.item_id ? ` data-item-id="${esc(e.item_id)}"` : ""}>` +
                `<td data-label="Time" class="small nowrap"><time datetime="${esc(e.at)}">${esc(formatWhen(e.at))}</time></td>` +
                `<td data-label="Item">${item}</td><td data-label="What">${esc(what)}${move}</td>` +
                `<td data-label="Attempt" class="num">${e.attempt ?? "—"}</td>` +
                `<td data-label="Worker" class="worker">${esc(e.worker || "—")}</td>` +
                `<td data-label="Detail" class="detail">${esc(e.detail || "")}</td></tr>`,
            );
            after = e.id;
          }
          if (events.length) {
            table.hidden = false;
            $("#no-events").hidden = true;
          }
          if (events.length === 200) delay = 200;
        }
      } catch {
        delay = 5000;
      }
      setTimeout(poll, document.hidden ? 10000 : delay);
    };
    setTimeout(poll, 2000);
  }

  const pages = { images: setupImages, "new-job": setupNewJob, job: setupJob, events: setupEvents };
  document.addEventListener("DOMContentLoaded", () => {
    setupCommon();
    const setup = pages[document.body.dataset.page];
    if (setup) setup();
  });
})();
