// bulkgen Images page: direct-to-storage uploads. Each file is presigned (POST /api/v1/uploads/presign,
// in batches), PUT straight to storage with its progress shown, then checked and kept
// (POST /api/v1/uploads/complete); kept images join the grid and the selection at once.
// A drop of thousands of files only queues plain objects: a row is built when its upload starts
// (at most PARALLEL at a time) or when it is refused, a few dozen per task, so the tab never freezes.
"use strict";

(() => {
  const zone = document.getElementById("dropzone");
  if (!zone) return;
  const input = document.getElementById("file-input");
  const list = document.getElementById("uploads");
  const summary = document.getElementById("upload-summary");
  const maxBytes = Number(zone.dataset.maxBytes || 0);
  const prefix = zone.dataset.prefix || "inputs/";

  const PARALLEL = 5;
  const PRESIGN_BATCH = 50;
  // Rows built (or refusals shown) per task before the queue yields to the page.
  const ROWS_PER_TICK = 40;
  // Finished rows kept on screen; failed ones stay until the page is left.
  const KEEP_DONE_ROWS = 60;
  // A presigned URL that expires sooner than this is signed again before use.
  const URL_MARGIN_MS = 30_000;
  const TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp" };
  const ALLOWED = new Set(Object.values(TYPES));

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
  const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;
  const thumbUrl = (key) => "/images/thumb/" + key.split("/").map(encodeURIComponent).join("/");
  const selection = () => window.bulkgenSelection;

  function formatBytes(n) {
    if (n < 1024) return `${n} bytes`;
    if (n < 1048576) return `${(n / 1024).toFixed(1).replace(/\.0$/, "")} KB`;
    return `${(n / 1048576).toFixed(1).replace(/\.0$/, "")} MB`;
  }

  const queue = [];
  const counts = { total: 0, done: 0, rejected: 0, failed: 0 };
  let active = 0;
  let scheduled = false;
  const doneRows = [];

  function typeOf(file) {
    if (ALLOWED.has(file.type)) return file.type;
    if (file.type) return null;
    // Some systems give no type for a file: judge by its extension (the server checks the bytes).
    const ext = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
    return TYPES[ext] || null;
  }

  function enqueue(files) {
    for (const file of files) {
      const type = typeOf(file);
      let problem = null;
      if (!type) problem = `${file.name} is not an image (PNG, JPEG or WEBP expected)`;
      else if (file.size === 0) problem = `${file.name} is empty`;
      else if (maxBytes && file.size > maxBytes)
        problem = `${file.name} is too large (${formatBytes(file.size)}; the limit is ${formatBytes(maxBytes)})`;
      queue.push({ file, type, problem, upload: null, presigning: null, stored: false, row: null });
      counts.total += 1;
    }
    schedule();
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    setTimeout(pump, 0);
  }

  function pump() {
    scheduled = false;
    let budget = ROWS_PER_TICK;
    while (queue.length && budget > 0) {
      const entry = queue[0];
      if (entry.problem) {
        queue.shift();
        budget -= 1;
        reject(entry, entry.problem);
        continue;
      }
      if (active >= PARALLEL) break;
      queue.shift();
      budget -= 1;
      start(entry);
    }
    if (queue.length && (queue[0].problem || active < PARALLEL)) schedule();
    showSummary();
  }

  function showSummary() {
    if (!summary) return;
    const waiting = queue.length;
    const parts = [`${counts.done} of ${counts.total} uploaded`];
    if (counts.rejected) parts.push(`${counts.rejected} rejected`);
    if (counts.failed) parts.push(`${counts.failed} failed`);
    if (active) parts.push(`${active} uploading`);
    if (waiting) parts.push(`${waiting} waiting`);
    summary.textContent = parts.join(" · ");
    summary.hidden = counts.total === 0;
    summary.dataset.done = String(counts.done);
    summary.dataset.rejected = String(counts.rejected);
    summary.dataset.pending = String(active + waiting);
  }

  function makeRow(entry) {
    if (entry.row) return entry.row;
    const row = document.createElement("li");
    row.className = "upload";
    row.dataset.name = entry.file.name;
    row.innerHTML =
      `<span class="preview"></span>` +
      `<span class="name" title="${esc(entry.file.name)}">${esc(entry.file.name)}</span>` +
      `<span class="upload-status"><span class="bar" role="progressbar" aria-label="${esc(entry.file.name)}" ` +
      `aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"><span style="width: 0%"></span></span>` +
      `<span class="state">waiting…</span></span>`;
    list.prepend(row);
    entry.row = row;
    return row;
  }

  function setProgress(entry, pct, text) {
    const bar = entry.row.querySelector(".bar");
    if (bar) {
      bar.setAttribute("aria-valuenow", String(pct));
      bar.firstElementChild.style.width = `${pct}%`;
    }
    entry.row.querySelector(".state").textContent = text;
  }

  function finishRow(entry, ok, message) {
    const row = makeRow(entry);
    row.classList.remove("done", "failed");
    row.classList.add(ok ? "done" : "failed");
    row.dataset.result = ok ? "done" : "failed";
    row.querySelector(".bar")?.remove();
    row.querySelector(".retry")?.remove();
    row.querySelector(".state").textContent = message;
    if (ok) {
      doneRows.push(row);
      while (doneRows.length > KEEP_DONE_ROWS) doneRows.shift().remove();
    }
  }

  // Refused for what the file is (not an image, too large): retrying cannot help, so no button.
  function reject(entry, message) {
    counts.rejected += 1;
    finishRow(entry, false, message);
    entry.row.dataset.reason = "rejected";
  }

  // Failed on the way (network, expired URL, server error): offer a retry.
  function fail(entry, message) {
    counts.failed += 1;
    finishRow(entry, false, message);
    entry.row.dataset.reason = "failed";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry link";
    button.textContent = "Retry";
    button.addEventListener("click", () => {
      counts.failed -= 1;
      // A file already in storage is only checked again; otherwise it is signed again (the old URL
      // may have expired) and sent again.
      if (!entry.stored) entry.upload = null;
      entry.row.classList.remove("failed");
      entry.row.dataset.result = "";
      button.remove();
      entry.row.querySelector(".upload-status").insertAdjacentHTML(
        "afterbegin",
        `<span class="bar" role="progressbar" aria-label="${esc(entry.file.name)}" aria-valuemin="0" ` +
          `aria-valuemax="100" aria-valuenow="0"><span style="width: 0%"></span></span>`,
      );
      setProgress(entry, 0, "waiting…");
      queue.unshift(entry);
      schedule();
    });
    entry.row.querySelector(".upload-status").append(button);
  }

  async function api(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401) throw new Error("Your session has ended: reload the page and sign in again.");
    if (!response.ok) {
      const error = new Error(data && data.error ? data.error.message : `HTTP ${response.status}`);
      error.field = data && data.error ? data.error.field : null;
      throw error;
    }
    return data;
  }

  // Signs `entry` and the next few waiting files in one request.
  const signed = (entry) => entry.upload && Date.parse(entry.upload.expires_at) - Date.now() > URL_MARGIN_MS;

  function presign(entry) {
    if (signed(entry)) return Promise.resolve();
    if (entry.presigning) return entry.presigning;
    const batch = [entry];
    for (const other of queue) {
      if (batch.length >= PRESIGN_BATCH) break;
      if (!other.problem && !other.presigning && !signed(other)) batch.push(other);
    }
    const body = { files: batch.map((e) => ({ name: e.file.name, size: e.file.size, content_type: e.type })) };
    const pending = api("/api/v1/uploads/presign", body)
      .then((data) => {
        data.uploads.forEach((upload, i) => {
          batch[i].upload = upload;
        });
      })
      .catch((error) => {
        // One refused file refuses the batch: mark it, and let the others sign again on their own.
        const match = /^files\[(\d+)\]/.exec(error.field || "");
        if (match && batch[Number(match[1])]) batch[Number(match[1])].problem = error.message;
        throw error;
      })
      .finally(() => {
        for (const e of batch) e.presigning = null;
      });
    for (const e of batch) e.presigning = pending;
    return pending;
  }

  function put(entry) {
    return new Promise((resolve, refuse) => {
      const { upload } = entry;
      const xhr = new XMLHttpRequest();
      xhr.open(upload.method, upload.url);
      for (const [name, value] of Object.entries(upload.headers)) xhr.setRequestHeader(name, value);
      xhr.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable) return;
        const pct = Math.round((event.loaded / event.total) * 100);
        setProgress(entry, pct, `uploading… ${pct}%`);
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) resolve();
        else if (xhr.status === 403 && Date.parse(upload.expires_at) <= Date.now())
          refuse(new Error("the upload link expired before the file was sent"));
        else refuse(new Error(`storage refused the upload (HTTP ${xhr.status})`));
      });
      xhr.addEventListener("error", () => refuse(new Error("the connection was lost during the upload")));
      xhr.addEventListener("abort", () => refuse(new Error("the upload was interrupted")));
      xhr.send(entry.file);
    });
  }

  async function start(entry) {
    active += 1;
    makeRow(entry);
    setProgress(entry, 0, "preparing…");
    try {
      if (!entry.stored) {
        try {
          await presign(entry);
        } catch (error) {
          if (entry.problem) {
            reject(entry, entry.problem);
            return;
          }
          // The batch failed for another file (now marked): this one signs again.
          if (!signed(entry)) await presign(entry);
        }
        setProgress(entry, 0, "uploading… 0%");
        await put(entry);
        entry.stored = true;
      }
      setProgress(entry, 100, "checking…");
      const result = await api("/api/v1/uploads/complete", { keys: [entry.upload.key] });
      if (result.assets.length) {
        const asset = result.assets[0];
        counts.done += 1;
        entry.row.dataset.key = asset.key;
        finishRow(entry, true, `uploaded · ${asset.width}×${asset.height} · selected`);
        addToGrid(asset);
      } else {
        const refused = result.rejected[0];
        reject(entry, refused ? refused.error : `${entry.file.name} was not accepted`);
      }
    } catch (error) {
      fail(entry, error.message || String(error));
    } finally {
      active -= 1;
      schedule();
      showSummary();
    }
  }

  // --- the grid -------------------------------------------------------------------------------

  function grid() {
    let ul = document.getElementById("image-grid");
    if (ul) return ul;
    // The page showed "nothing stored" before this upload: the grid takes the place of that note.
    ul = document.createElement("ul");
    ul.className = "image-grid";
    ul.id = "image-grid";
    const empty = document.querySelector(".image-browser .empty");
    if (empty) empty.replaceWith(ul);
    else document.querySelector(".image-browser")?.append(ul);
    return ul;
  }

  function addToGrid(asset) {
    selection()?.add([{ key: asset.key, name: asset.filename }]);
    if (!asset.key.startsWith(prefix)) return;
    const ul = grid();
    const existing = ul.querySelector(`[data-key="${CSS.escape(asset.key)}"]`);
    if (existing) {
      existing.classList.add("selected");
      const box = existing.querySelector(".pick-box");
      if (box) box.checked = true;
      return;
    }
    const card = document.createElement("li");
    card.className = "image-card selected uploaded";
    card.dataset.key = asset.key;
    card.dataset.name = asset.filename;
    card.innerHTML =
      `<label class="pick"><input type="checkbox" class="pick-box" value="${esc(asset.key)}" ` +
      `aria-label="select ${esc(asset.filename)}" checked>` +
      `<img src="${esc(thumbUrl(asset.key))}" alt="${esc(asset.filename)}" loading="lazy" width="160" height="160"></label>` +
      `<div class="caption"><span class="name" title="${esc(asset.key)}">${esc(asset.filename)}</span>` +
      `<span class="muted small">${asset.width}×${asset.height} · ${formatBytes(asset.size)}</span></div>`;
    const box = card.querySelector(".pick-box");
    box.addEventListener("change", () => {
      if (box.checked) selection()?.add([{ key: asset.key, name: asset.filename }]);
      else selection()?.remove(asset.key);
    });
    ul.prepend(card);
  }

  // Cards added here are not among those the page's selection code found at load: keep them in step.
  // The selection is read once per change: sel.has() parses the whole stored list on every call, and
  // each upload changes the selection, so asking it per card made a 1,000-file drop cost k² per file.
  document.addEventListener("selection-changed", () => {
    const sel = selection();
    if (!sel) return;
    const keys = new Set(sel.load().map((x) => x.key));
    for (const card of document.querySelectorAll(".image-card.uploaded")) {
      const box = card.querySelector(".pick-box");
      box.checked = keys.has(card.dataset.key);
      card.classList.toggle("selected", box.checked);
    }
  });

  // --- input ----------------------------------------------------------------------------------

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
})();
