// New job page: prompts per image from a CSV or JSONL file, shown as an editable table before Run.
// The server reads the file (POST /jobs/new/prompts) with the same parser and matching the job uses;
// on Run the table travels in the hidden field item_prompts (a folder job sends the stored file's key
// in prompts_file instead). Deferred after app.js, whose setupNewJob runs first.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
  const csrfToken = () => $('meta[name="csrf-token"]').content;
  const thumbUrl = (key) => "/images/thumb/" + key.split("/").map(encodeURIComponent).join("/");
  const splitConcepts = (text) => text.split(/[,\n]/).map((c) => c.trim()).filter(Boolean);
  // Rows drawn for a folder's matches; the rest are counted, not drawn.
  const FOLDER_ROWS_SHOWN = 500;

  function setup() {
    const form = $("#job-form");
    const panel = $("#prompts-panel");
    if (!form || !panel) return;
    const engines = JSON.parse($("#engines-data").textContent);
    const fileInput = $("#prompts-file");
    const fileError = $("#prompts-file-error");
    const tableHolder = $("#prompts-table-holder");
    const tbody = $("#prompts-table tbody");
    const summary = $("#prompts-summary");
    const sent = $("#item-prompts");
    const storedKey = $("#prompts-file-key");
    const prefix = $('input[name="inputs_prefix"]', form)?.value || "";
    panel.hidden = false;

    // images: [{key, name, match, prompt, concepts, params}] (editable); unmatched: file rows.
    let state = null;

    const conceptsMode = () => {
      const checked = $('input[name="engine"]:checked', form);
      return Boolean(checked && engines[checked.value]?.prompt_field === "prompts");
    };
    const textOf = (row) => (conceptsMode() ? row.concepts : row.prompt) || "";
    const fileText = (row) => (conceptsMode() ? (row.prompts || []).join(", ") : row.prompt) || "";

    const imageNote = (row) => {
      if (!textOf(row).trim()) return `<span class="warn">no prompt: uses the job's</span>`;
      return row.match ? "from the file" : "typed here";
    };

    const summarize = () => {
      let text;
      if (state.folder) {
        const f = state.folder;
        const images = f.more ? `more than ${f.images.toLocaleString("en-US")}` : f.images.toLocaleString("en-US");
        text = `${state.file}: ${state.matched.length} row(s) match images of ${images} under ${f.prefix}; ` +
          `${f.without} image(s) have no row and use the job's prompt. The file goes with the job; edit it to change a prompt.`;
        if (state.matched.length > FOLDER_ROWS_SHOWN) text += ` First ${FOLDER_ROWS_SHOWN} matches shown.`;
      } else {
        const withPrompt = state.images.filter((r) => textOf(r).trim()).length;
        text = `${state.file || "Prompts"}: ${withPrompt} of ${state.images.length} image(s) have a prompt of their own`;
        if (state.unmatched.length) text += `; ${state.unmatched.length} row(s) of the file match no image`;
        text += ". Edit a prompt below before Run.";
      }
      summary.textContent = text;
    };

    const render = () => {
      if (!state) {
        tableHolder.hidden = true;
        tbody.innerHTML = "";
        return;
      }
      const field = conceptsMode() ? "Concepts" : "Prompt";
      $("#prompts-column").textContent = field;
      const rows = [];
      if (state.folder) {
        for (const row of state.matched.slice(0, FOLDER_ROWS_SHOWN)) {
          rows.push(
            `<tr data-kind="matched" data-key="${esc(row.key)}"><td data-label="Image"><code>${esc(row.key)}</code></td>` +
              `<td data-label="File row">${esc(row.name)}</td><td data-label="${field}">${esc(fileText(row))}</td>` +
              `<td data-label="Note">from the file</td></tr>`,
          );
        }
      } else {
        state.images.forEach((row, i) => {
          rows.push(
            `<tr data-kind="image" data-key="${esc(row.key)}"><td data-label="Image"><img class="thumb" src="${esc(thumbUrl(row.key))}" alt="" width="40" height="40">${esc(row.name)}</td>` +
              `<td data-label="File row">${row.match ? esc(row.match) : `<span class="muted">—</span>`}</td>` +
              `<td data-label="${field}"><input type="text" class="item-prompt" data-index="${i}" value="${esc(textOf(row))}" aria-label="${field} for ${esc(row.name)}"></td>` +
              `<td data-label="Note" class="note">${imageNote(row)}</td></tr>`,
          );
        });
      }
      for (const row of state.unmatched) {
        rows.push(
          `<tr data-kind="unmatched" class="unmatched"><td data-label="Image"><span class="muted">—</span></td>` +
            `<td data-label="File row">${esc(row.name)}</td><td data-label="${field}">${esc(fileText(row))}</td>` +
            `<td data-label="Note" class="note"><span class="warn">matches no image</span></td></tr>`,
        );
      }
      tbody.innerHTML = rows.join("");
      summarize();
      $("#prompts-table").hidden = false;
      tableHolder.hidden = false;
    };

    const showError = (message) => {
      fileError.textContent = message;
      fileError.hidden = !message;
      panel.classList.toggle("has-error", Boolean(message));
    };

    const fromImageRow = (row) => ({
      key: row.key,
      name: row.name,
      match: row.match,
      prompt: row.prompt || "",
      concepts: (row.prompts || []).join(", "),
      params: row.params || {},
    });

    fileInput.addEventListener("change", async () => {
      const file = fileInput.files[0];
      state = null;
      storedKey.value = "";
      sent.value = "";
      showError("");
      render();
      if (!file) return;
      const body = new FormData();
      body.append("file", file);
      if (prefix) body.append("inputs_prefix", prefix);
      else for (const input of $$('#selected-inputs input[name="inputs"]')) body.append("inputs", input.value);
      let response;
      let data = null;
      try {
        response = await fetch("/jobs/new/prompts", {
          method: "POST",
          body,
          headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
          credentials: "same-origin",
        });
        data = await response.json().catch(() => null);
      } catch {
        showError("Could not reach the server to read the file; try again.");
        return;
      }
      if (!response.ok || !data) {
        showError(data?.error?.message || `The file could not be read (HTTP ${response.status}); reload the page and try again.`);
        return;
      }
      if (data.folder) {
        state = { file: data.file, folder: data.folder, matched: data.matched, unmatched: data.unmatched };
        storedKey.value = data.prompts_file;
      } else {
        state = { file: data.file, images: data.images.map(fromImageRow), unmatched: data.unmatched };
      }
      render();
    });

    tbody.addEventListener("input", (event) => {
      const input = event.target.closest(".item-prompt");
      if (!input || !state || state.folder) return;
      const row = state.images[Number(input.dataset.index)];
      if (conceptsMode()) row.concepts = input.value;
      else row.prompt = input.value;
      input.closest("tr").querySelector(".note").innerHTML = imageNote(row);
      summarize();
    });
    form.addEventListener("change", (event) => {
      if (event.target.name === "engine") render();
    });

    form.addEventListener("submit", () => {
      if (!state || state.folder) return;
      const concepts = conceptsMode();
      sent.value = JSON.stringify(
        state.images.map((row) => ({
          key: row.key,
          name: row.name,
          match: row.match,
          ...(concepts ? { prompts: splitConcepts(row.concepts) } : { prompt: row.prompt.trim() }),
          params: row.params,
        })),
      );
    });

    // Back from a refused Run: the table as it was sent (the file's unmatched rows are not kept).
    if (storedKey.value && prefix) {
      summary.textContent = "The prompts file chosen before goes with the job; choose it again to see its rows.";
      $("#prompts-table").hidden = true;
      tableHolder.hidden = false;
    } else if (sent.value && !prefix) {
      try {
        const rows = JSON.parse(sent.value);
        state = {
          file: "",
          images: rows.map((r) => fromImageRow({ ...r, prompt: r.prompt || "", prompts: r.prompts || [] })),
          unmatched: [],
        };
        render();
      } catch {
        sent.value = "";
      }
    }
  }

  document.addEventListener("DOMContentLoaded", setup);
})();
