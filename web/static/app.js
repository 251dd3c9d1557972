// bulkgen admin: live updates, uploads, selection and the new-job form. Plain JS, no build step.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const csrfToken = () => $('meta[name="csrf-token"]').content;
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
  const FINAL = ["succeeded", "failed", "cancelled"];

  const thumbUrl = (key) => "/images/thumb/" + key.split("/").map(encodeURIComponent).join("/");

  function formatDuration(ms) {
    if (ms === null || ms === undefined) return "—";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${(ms / 60000).toFixed(1)} min`;
  }

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
    setupUploader();
  }

  function setupUploader() {
    const zone = $("#dropzone");
    const input = $("#file-input");
    const list = $("#uploads");
    const maxBytes = Number(zone.dataset.maxBytes || 0);
    const waiting = [];
    let active = 0;
    const PARALLEL = 3;

    const enqueue = (files) => {
      for (const file of files) {
        const row = document.createElement("li");
        row.className = "upload";
        row.dataset.name = file.name;
        const preview = file.type.startsWith("image/") ? URL.createObjectURL(file) : "";
        row.innerHTML =
          (preview ? `<img class="preview" src="${esc(preview)}" alt="">` : `<span class="preview"></span>`) +
          `<span class="name" title="${esc(file.name)}">${esc(file.name)}</span>` +
          `<span class="upload-status"><span class="bar"><span style="width: 0%"></span></span>` +
          `<span class="state">waiting…</span></span>`;
        list.prepend(row);
        if (maxBytes && file.size > maxBytes) {
          finish(row, false, `${file.name} is too large (${(file.size / 1048576).toFixed(1)} MB; the limit is ${(maxBytes / 1048576).toFixed(0)} MB)`);
          continue;
        }
        waiting.push({ file, row });
      }
      pump();
    };

    const finish = (row, ok, message) => {
      row.classList.add(ok ? "done" : "failed");
      row.dataset.result = ok ? "done" : "failed";
      $(".bar", row).remove();
      $(".state", row).textContent = message;
    };

    const pump = () => {
      while (active < PARALLEL && waiting.length) {
        const { file, row } = waiting.shift();
        active += 1;
        upload(file, row).finally(() => {
          active -= 1;
          pump();
        });
      }
    };

    const upload = (file, row) =>
      new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        const fill = $(".bar > span", row);
        const state = $(".state", row);
        xhr.open("POST", "/api/v1/uploads");
        xhr.setRequestHeader("X-CSRF-Token", csrfToken());
        xhr.setRequestHeader("Accept", "application/json");
        xhr.upload.addEventListener("progress", (event) => {
          if (!event.lengthComputable) return;
          const pct = Math.round((event.loaded / event.total) * 100);
          fill.style.width = `${pct}%`;
          state.textContent = `uploading… ${pct}%`;
        });
        xhr.addEventListener("load", () => {
          let body = null;
          try {
            body = JSON.parse(xhr.responseText);
          } catch {
            body = null;
          }
          if (xhr.status === 201 && body && body.assets && body.assets.length) {
            const asset = body.assets[0];
            Selection.add([{ key: asset.key, name: asset.filename || file.name }]);
            row.dataset.key = asset.key;
            finish(row, true, `uploaded · ${asset.width}×${asset.height} · selected`);
          } else if (xhr.status === 401) {
            finish(row, false, "Your session has ended: reload the page and sign in again.");
          } else {
            const message = body && body.error ? body.error.message : `upload failed (HTTP ${xhr.status})`;
            finish(row, false, message);
          }
          resolve();
        });
        xhr.addEventListener("error", () => {
          finish(row, false, "the upload did not finish: the connection to the server was lost");
          resolve();
        });
        const form = new FormData();
        form.append("files", file, file.name);
        state.textContent = "uploading… 0%";
        xhr.send(form);
      });

    input.addEventListener("change", () => {
      enqueue(Array.from(input.files));
      input.value = "";
    });
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      });
    }
    for (const name of ["dragleave", "dragend"]) zone.addEventListener(name, () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) enqueue(Array.from(event.dataTransfer.files));
    });
    // A file dropped next to the zone must not navigate away from the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
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
    const inputCount = () => $$('input[name="inputs"]', holder).length;
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
      const time = engine.seconds_per_item === null ? null : engine.seconds_per_item * count;
      const images = `${count} image${count === 1 ? "" : "s"}`;
      let text;
      if (cost === null || cost === undefined) text = `Estimated cost: <strong>free</strong> (runs on our own GPUs) for ${images}`;
      else if (cost === 0) text = `Estimated cost: <strong>free</strong> for ${images}`;
      else text = `Estimated cost: <strong>${formatUsd(cost * count)}</strong> for ${images} at ${formatUsd(cost)} each`;
      if (time !== null && count) text += ` · ${formatSeconds(time)} of processing`;
      $("#estimate").innerHTML = text;
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

  function resultHtml(item) {
    if (item.status === "succeeded") {
      const outputs = item.outputs || [];
      const type = (o) => o.content_type || "";
      const video = outputs.find((o) => type(o).startsWith("video/"));
      const overlay = outputs.find((o) => ["overlay", "preview"].includes(o.role) && type(o).startsWith("image/"));
      const image = overlay || outputs.find((o) => type(o).startsWith("image/"));
      let media = "";
      if (video) media = `<video class="media" controls preload="metadata" src="${esc(video.url)}"></video>`;
      else if (image) media = `<img class="media" src="${esc(image.url)}" alt="result of item ${item.index}" loading="lazy">`;
      const links = outputs
        .map((o) => {
          const what = outputs.length > 1 ? ` ${esc(o.role || "result")}` : "";
          return `<a class="button small" href="${esc(o.url)}" download data-download="${esc(o.role || "")}">Download${what}</a>`;
        })
        .join("");
      return `${media}<div class="downloads">${links}</div>`;
    }
    if (item.status === "failed") return `<p class="error-text">${esc(item.error || "failed without a message")}</p>`;
    if (item.status === "cancelled") return `<p class="muted">cancelled</p>`;
    if (item.status === "pending" && item.error) return `<p class="muted">previous attempt: ${esc(item.error)}</p>`;
    return `<p class="muted">—</p>`;
  }

  const signature = (item) => `${item.status}|${item.attempt}|${(item.outputs || []).length}|${item.error || ""}`;

  function barHtml(fraction, label) {
    const pct = Math.round((fraction || 0) * 1000) / 10;
    return `<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${Math.round(pct)}" aria-label="${label}"><span style="width: ${pct}%"></span></div>`;
  }

  function rowHtml(item, back, canChange) {
    // Only the job's owner or an admin gets the retry button (the server checks it again).
    const retry = canChange && ["failed", "cancelled"].includes(item.status)
      ? `<form method="post" action="/items/${esc(item.id)}/retry"><input type="hidden" name="csrf_token" value="${esc(csrfToken())}"><input type="hidden" name="back" value="${esc(back)}"><button type="submit" class="small">Retry</button></form>`
      : "";
    return (
      `<tr id="item-${esc(item.id)}" data-item-id="${esc(item.id)}" data-sig="${esc(signature(item))}">` +
      `<td data-label="#" class="num">${item.index}</td>` +
      `<td data-label="Input"><img class="thumb" src="${esc(thumbUrl(item.input_key))}" alt="input ${item.index}" loading="lazy" width="64" height="64"></td>` +
      `<td data-label="Status" class="status-cell"><span class="badge s-${esc(item.status)}">${esc(item.status)}</span>${item.status === "running" ? barHtml(item.progress, "item progress") : ""}</td>` +
      `<td data-label="Attempt" class="num">${item.attempt} of ${item.max_attempts}</td>` +
      `<td data-label="Worker" class="worker">${esc(item.worker || "—")}</td>` +
      `<td data-label="Duration" class="num">${formatDuration(item.duration_ms)}</td>` +
      `<td data-label="Result" class="result">${resultHtml(item)}</td>` +
      `<td data-label="" class="actions">${retry}</td></tr>`
    );
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

    let failures = 0;
    const apply = (job) => {
      $("#job-status").innerHTML = `<span class="badge s-${esc(job.status)}">${esc(job.status)}</span>`;
      const pct = Math.round(job.progress * 1000) / 10;
      const bar = $("#job-bar");
      bar.className = `bar big s-${job.status}`;
      $("span", bar).style.width = `${pct}%`;
      bar.setAttribute("aria-valuenow", String(Math.round(pct)));
      $("#job-percent").textContent = `${Math.round(job.progress * 100)}%`;
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
      const tbody = $("#items tbody");
      if (!tbody || !job.items) return;
      const seen = new Set();
      let previous = null;
      for (const item of job.items) {
        seen.add(item.id);
        let row = document.getElementById(`item-${item.id}`);
        if (!row || row.dataset.sig !== signature(item)) {
          const holder = document.createElement("tbody");
          holder.innerHTML = rowHtml(item, back, canChange);
          const fresh = holder.firstElementChild;
          if (row) row.replaceWith(fresh);
          else if (previous) previous.after(fresh);
          else tbody.prepend(fresh);
          row = fresh;
        } else if (item.status === "running") {
          const fill = $(".status-cell .bar > span", row);
          if (fill) fill.style.width = `${Math.round(item.progress * 1000) / 10}%`;
        }
        previous = row;
      }
      for (const row of $$("tr[data-item-id]", tbody)) if (!seen.has(row.dataset.itemId)) row.remove();
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
        if (!row) continue;
        if (row.dataset.sig !== signature(item)) {
          const holder = document.createElement("tbody");
          holder.innerHTML = rowHtml(item, back, canChange);
          row.replaceWith(holder.firstElementChild);
        } else if (item.status === "running") {
          const fill = $(".status-cell .bar > span", row);
          if (fill) fill.style.width = `${Math.round(item.progress * 1000) / 10}%`;
        }
      }
    };
    const showProgress = (progress) => {
      for (const [id, fraction] of Object.entries(progress.items)) {
        const fill = $(`#item-${CSS.escape(id)} .status-cell .bar > span`);
        if (fill) fill.style.width = `${Math.round(fraction * 1000) / 10}%`;
      }
      const pct = Math.round(progress.progress * 1000) / 10;
      $("span", $("#job-bar")).style.width = `${pct}%`;
      $("#job-bar").setAttribute("aria-valuenow", String(Math.round(pct)));
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
    if (FINAL.includes(status)) return;
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
