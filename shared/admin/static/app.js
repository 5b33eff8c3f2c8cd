// The admin console's page: plain DOM, no framework, no build step.
// Every value shown comes from the ledger through the API: it is written with textContent (or as an
// attribute value), never parsed as HTML. The page holds no credential: `se admin` signs each /api call.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // el("td", {class: "x", "data-id": v}, child, "text", ...): children are nodes or text
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const show = (node, on) => { node.hidden = !on; };
  const fmt = (v) => (v === undefined || v === null || v === "" ? "–" : String(v));
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : 0);

  class ApiError extends Error {
    constructor(status, data) {
      const e = (data && typeof data.error === "object" && data.error) || {};
      const msg = e.message || (data && (data.message || data.Message)) || `HTTP ${status}`;
      super(String(msg));
      this.status = status;
      this.code = e.code || null;
      this.field = e.field || null;
    }
  }

  async function api(method, path, body) {
    const opts = { method, headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch("/api" + path, opts);
    } catch (err) {
      throw new ApiError(0, { error: { code: "unreachable", message: "se admin does not answer (is it running?)" } });
    }
    let data = null;
    try { data = await resp.json(); } catch (err) { data = null; }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  function showError(err, where) {
    const box = $("error");
    box.textContent = `${where}: ${err.message}` + (err.code ? ` (${err.code})` : "");
    show(box, true);
  }
  function clearError() { show($("error"), false); $("error").textContent = ""; }

  const q = (params) => "?" + new URLSearchParams(params).toString();

  // ------------------------------------------------------------------ state

  const state = {
    owner: "",
    trackedRun: null,      // the run the form started (run panel)
    trackedSince: 0,
    pending: null,         // the request the shown estimate is for
    lastRuns: "", lastOwners: "", lastItems: "", lastQuarantined: "", lastRefused: "",
    anyActive: false,
  };

  // ------------------------------------------------------------------ runs

  function runProgress(run) {
    const planned = num(run.planned) || num(run.items);
    const settled = num(run.done) + num(run.failed) + num(run.skipped);
    return { planned, settled };
  }

  function runCounts(run) {
    const { planned } = runProgress(run);
    return `${num(run.done)}/${planned} done · ${num(run.failed)} failed · ${num(run.skipped)} skipped`;
  }

  function progressBar(run) {
    const { planned, settled } = runProgress(run);
    const p = el("progress", { max: Math.max(planned, 1), value: planned ? Math.min(settled, planned) : (run.status === "finished" ? 1 : 0) });
    return p;
  }

  function scopeText(run) {
    let s = fmt(run.scope);
    if (run.owner_id) s += ` ${run.owner_id}`;
    if (run.item_id) s += `/${run.item_id}`;
    if (run.since) s += ` since ${run.since}`;
    if (run.force) s += " (force)";
    return s;
  }

  function renderRuns(runs) {
    const body = $("runs-body");
    body.replaceChildren(...runs.slice(0, 50).map((run) => el("tr", { "data-run-id": run.run_id, "data-status": run.status },
      el("td", {}, el("code", {}, fmt(run.run_id))),
      el("td", { class: "run-spec" }, fmt(run.spec_version)),
      el("td", {}, scopeText(run)),
      el("td", { class: `run-status st-${String(run.status || "").toLowerCase()}` }, fmt(run.status)),
      el("td", {}, progressBar(run), " ", el("span", { class: "run-counts" }, runCounts(run))),
      el("td", {}, fmt(run.started_at)),
      el("td", {}, fmt(run.finished_at)),
    )));
    show($("runs-empty"), runs.length === 0);
  }

  async function refreshRuns() {
    const data = await api("GET", "/runs");
    const runs = Array.isArray(data && data.runs) ? data.runs : [];
    state.anyActive = runs.some((r) => r.status !== "finished");
    const key = JSON.stringify(runs);
    if (key !== state.lastRuns) { state.lastRuns = key; renderRuns(runs); }
  }

  function renderTrackedRun(run) {
    $("run-id").textContent = fmt(run.run_id);
    $("run-spec").textContent = fmt(run.spec_version);
    $("run-scope").textContent = scopeText(run);
    $("run-status").textContent = fmt(run.status);
    $("run-status").className = `st-${String(run.status || "").toLowerCase()}`;
    const { planned, settled } = runProgress(run);
    const bar = $("run-progress");
    bar.max = Math.max(planned, 1);
    bar.value = planned ? Math.min(settled, planned) : (run.status === "finished" ? 1 : 0);
    $("run-counts").textContent = runCounts(run);
    $("run-panel").dataset.status = run.status || "";
    show($("run-panel"), true);
  }

  async function refreshTrackedRun() {
    if (!state.trackedRun) return;
    let run;
    try {
      run = await api("GET", "/runs/" + encodeURIComponent(state.trackedRun));
    } catch (err) {
      // the run row may be written just after the 202: a 404 in the first seconds is not an error
      if (err.status === 404 && Date.now() - state.trackedSince < 15000) return;
      throw err;
    }
    renderTrackedRun(run);
    if (run.status === "finished") {
      state.trackedRun = null;
      refreshOwnerData().catch((err) => showError(err, "items"));
      refreshOwners().catch((err) => showError(err, "owners"));
    }
  }

  // ------------------------------------------------------------------ owners and items

  function renderOwners(owners) {
    $("owners-body").replaceChildren(...owners.map((o) => {
      const row = el("tr", { "data-owner-id": o.owner_id, class: "clickable", title: "show this owner's items" },
        el("td", {}, el("code", {}, fmt(o.owner_id))),
        el("td", { class: "current-version" }, fmt(o.current_version)),
        el("td", { class: "next-version" }, fmt(o.next_version)),
        el("td", { class: "owner-items" }, fmt(o.items)),
        el("td", { class: "owner-settled" }, fmt(o.settled)),
      );
      row.addEventListener("click", () => selectOwner(String(o.owner_id)));
      return row;
    }));
    show($("owners-empty"), owners.length === 0);
    const sel = $("owner-select");
    const keep = state.owner;
    sel.replaceChildren(el("option", { value: "" }, "(choose an owner)"),
      ...owners.map((o) => el("option", { value: o.owner_id }, String(o.owner_id))));
    sel.value = keep;
  }

  async function refreshOwners() {
    const data = await api("GET", "/owners");
    const owners = Array.isArray(data && data.owners) ? data.owners : [];
    $("deployed-spec").textContent = data && data.spec_version ? `deployed spec version ${data.spec_version}` : "";
    const key = JSON.stringify(owners);
    if (key !== state.lastOwners) { state.lastOwners = key; renderOwners(owners); }
    if (!state.owner && owners.length === 1) selectOwner(String(owners[0].owner_id));
  }

  function errorText(err) {
    if (err && typeof err === "object") return `${fmt(err.code)}: ${fmt(err.message)}`;
    return fmt(err);
  }

  function channelList(channels) {
    const ul = el("ul", { class: "channels" });
    for (const [name, ch] of Object.entries(channels || {})) {
      const c = ch || {};
      const err = c.error && typeof c.error === "object" ? c.error : null;
      ul.append(el("li", { "data-channel": name, "data-status": c.status },
        el("span", { class: "ch-name" }, name), " ",
        el("span", { class: `ch-status st-${String(c.status || "").toLowerCase()}` }, fmt(c.status)), " · ",
        el("span", { class: "ch-attempts", title: "attempts" }, fmt(c.attempts)),
        c.dims ? el("span", { class: "muted" }, ` · ${c.dims}d`) : null,
        c.spec_version ? el("span", { class: "muted ch-spec" }, ` · ${c.spec_version}`) : null,
        err ? el("div", { class: "ch-error" }, errorText(err)) : null,
      ));
    }
    return ul;
  }

  function renderItems(items) {
    $("items-body").replaceChildren(...items.map((it) => el("tr", { "data-item-id": it.item_id, "data-status": it.status },
      el("td", {}, el("code", {}, fmt(it.item_id))),
      el("td", {}, fmt(it.kind), it.person_id ? el("div", { class: "muted" }, `person ${it.person_id}`) : null),
      el("td", { class: `item-status st-${String(it.status || "").toLowerCase()}` }, fmt(it.status)),
      el("td", { class: "item-attempts" }, fmt(it.attempts)),
      el("td", {}, fmt(it.updated_at)),
      el("td", {}, it.quarantine_reason ? el("div", { class: "ch-error item-reason" }, it.quarantine_reason) : null,
        it.last_error && it.status !== "COMPLETE" ? el("div", { class: "ch-error item-last-error" }, errorText(it.last_error)) : null,
        channelList(it.channels)),
    )));
    show($("items-empty"), items.length === 0);
  }

  function renderQuarantined(items) {
    $("quarantined-body").replaceChildren(...items.map((it) => {
      const btn = el("button", { type: "button", class: "replay", "data-item-id": it.item_id }, "Replay");
      btn.addEventListener("click", () => replay(String(it.item_id), btn));
      return el("tr", { "data-item-id": it.item_id },
        el("td", {}, el("code", {}, fmt(it.item_id))),
        el("td", {}, fmt(it.kind)),
        el("td", { class: "item-attempts" }, fmt(it.attempts)),
        el("td", { class: "item-reason" }, fmt(it.quarantine_reason)),
        el("td", {}, fmt(it.updated_at)),
        el("td", {}, btn),
      );
    }));
    show($("quarantined-empty"), items.length === 0);
  }

  async function refreshOwnerData() {
    const owner = state.owner;
    if (!owner) {
      $("items-body").replaceChildren(); $("quarantined-body").replaceChildren();
      state.lastItems = state.lastQuarantined = "";
      return;
    }
    const [items, quarantined] = await Promise.all([
      api("GET", "/items" + q({ owner_id: owner })),
      api("GET", "/quarantined" + q({ owner_id: owner })),
    ]);
    if (owner !== state.owner) return; // the operator switched owners meanwhile
    const a = Array.isArray(items && items.items) ? items.items : [];
    const b = Array.isArray(quarantined && quarantined.items) ? quarantined.items : [];
    const ka = JSON.stringify(a), kb = JSON.stringify(b);
    if (ka !== state.lastItems) { state.lastItems = ka; renderItems(a); }
    if (kb !== state.lastQuarantined) { state.lastQuarantined = kb; renderQuarantined(b); }
  }

  // refused uploads of every owner; owner_id null: the key named no valid owner
  function renderRefused(rows) {
    $("refused-body").replaceChildren(...rows.map((r) => el("tr", { "data-reason": r.reason },
      el("td", {}, fmt(r.at)),
      el("td", {}, r.owner_id ? el("code", {}, String(r.owner_id)) : el("span", { class: "muted" }, "(none)")),
      el("td", { class: "refused-reason" }, fmt(r.reason)),
      el("td", {}, el("code", { class: "refused-key" }, fmt(r.key))),
      el("td", { class: "refused-message" }, fmt(r.message)),
    )));
    show($("refused-empty"), rows.length === 0);
  }

  async function refreshRefused() {
    const data = await api("GET", "/refusals");
    const rows = Array.isArray(data && data.refusals) ? data.refusals : [];
    const key = JSON.stringify(rows);
    if (key !== state.lastRefused) { state.lastRefused = key; renderRefused(rows); }
  }

  function selectOwner(owner) {
    state.owner = owner;
    if (!$("sr-owner").value) $("sr-owner").value = owner;
    $("owner-select").value = owner;
    state.lastItems = state.lastQuarantined = "";
    refreshOwnerData().catch((err) => showError(err, "items"));
  }

  async function replay(itemId, btn) {
    btn.disabled = true;
    const msg = $("replay-message");
    try {
      const out = await api("POST", "/replay", { owner_id: state.owner, item_id: itemId });
      msg.textContent = `replay of ${itemId} queued: run ${fmt(out.run_id)} (spec ${fmt(out.spec_version)})`;
      msg.dataset.runId = out.run_id || "";
      clearError();
    } catch (err) {
      btn.disabled = false;
      showError(err, `replay ${itemId}`);
      return;
    }
    refreshRuns().catch((err) => showError(err, "runs"));
  }

  // ------------------------------------------------------------------ the reprocess form

  const FIELD_INPUT = { scope: "rp-scope", owner_id: "rp-owner", item_id: "rp-item", since: "rp-since", force: "rp-force" };

  function readForm() {
    const scope = $("rp-scope").value;
    const req = { scope };
    const owner = $("rp-owner").value.trim();
    const item = $("rp-item").value.trim();
    const since = $("rp-since").value.trim();
    if (scope !== "all" && owner) req.owner_id = owner;
    if (scope === "item" && item) req.item_id = item;
    if (since) req.since = since;
    req.force = $("rp-force").checked;
    return req;
  }

  function syncScope() {
    const scope = $("rp-scope").value;
    $("rp-owner").disabled = scope === "all";
    $("rp-item").disabled = scope !== "item";
  }

  function clearFieldErrors() {
    for (const id of Object.values(FIELD_INPUT)) $(id).removeAttribute("aria-invalid");
    $("rp-field-error").textContent = "";
  }

  function formError(err) {
    const id = err.field && FIELD_INPUT[err.field];
    if (id) $(id).setAttribute("aria-invalid", "true");
    $("rp-field-error").textContent = (err.field ? `${err.field}: ` : "") + err.message;
    $("rp-field-error").dataset.field = err.field || "";
  }

  function dropEstimate() {
    state.pending = null;
    show($("estimate"), false);
  }

  function listOf(node, obj) {
    const entries = Object.entries(obj || {});
    node.replaceChildren(...entries.map(([k, v]) => el("li", { "data-key": k }, `${k}: ${fmt(v)}`)));
    if (!entries.length) node.replaceChildren(el("li", { class: "muted" }, "none"));
  }

  function renderEstimate(est) {
    const rows = [
      ["spec version", est.spec_version, "spec_version"],
      ["scope", est.scope, "scope"],
      ["items", est.item_count, "item_count"],
      ...(est.items_in_scope !== undefined ? [["items in scope", est.items_in_scope, "items_in_scope"]] : []),
      ["channels", est.channel_count, "channel_count"],
      ["GPU seconds", typeof est.gpu_seconds === "number" ? est.gpu_seconds.toFixed(1) : est.gpu_seconds, "gpu_seconds"],
      ["cost (USD)", typeof est.cost_usd === "number" ? `$${est.cost_usd.toFixed(4)}` : est.cost_usd, "cost_usd"],
    ];
    $("estimate-summary").replaceChildren(...rows.flatMap(([k, v, f]) => [el("dt", {}, k), el("dd", { "data-field": f }, fmt(v))]));
    listOf($("estimate-channels"), est.channels);
    listOf($("estimate-reasons"), est.reasons);
    listOf($("estimate-skipped"), est.skipped);
    $("estimate-message").textContent = fmt(est.message);
    const n = num(est.item_count);
    const confirm = $("rp-confirm");
    confirm.disabled = n === 0;
    confirm.textContent = n === 0 ? "Nothing to reprocess" : `Confirm: reprocess ${n} item${n === 1 ? "" : "s"} (spec ${fmt(est.spec_version)})`;
    show($("estimate"), true);
  }

  async function estimate(ev) {
    ev.preventDefault();
    clearFieldErrors();
    dropEstimate();
    const req = readForm();
    const btn = $("rp-estimate");
    btn.disabled = true;
    try {
      const est = await api("POST", "/reprocess", { ...req, dry_run: true });
      state.pending = req;
      renderEstimate(est);
      clearError();
    } catch (err) {
      formError(err);
    } finally {
      btn.disabled = false;
    }
  }

  async function confirmRun() {
    const req = state.pending;
    if (!req) return;
    const btn = $("rp-confirm");
    btn.disabled = true;
    try {
      const out = await api("POST", "/reprocess", { ...req, dry_run: false });
      dropEstimate();
      state.trackedRun = out.run_id || null;
      state.trackedSince = Date.now();
      renderTrackedRun({ ...out, status: "planning", planned: out.item_count, done: 0, failed: 0, skipped: 0,
        owner_id: req.owner_id, item_id: req.item_id, since: req.since, force: req.force });
      $("run-message").textContent = fmt(out.message);
      clearError();
    } catch (err) {
      btn.disabled = false;
      formError(err);
      return;
    }
    refreshTrackedRun().catch((err) => showError(err, "run"));
    refreshRuns().catch((err) => showError(err, "runs"));
  }

  // ------------------------------------------------------------------ search

  const SR_FIELD = { owner_id: "sr-owner", text: "sr-text", mode: "sr-mode", k: "sr-k" };
  const safeUrl = (u) => (typeof u === "string" && /^https?:\/\//i.test(u) ? u : null);

  function clock(t) {  // 40 -> "0:40", 3725.5 -> "62:05"
    const s = Math.max(0, Math.floor(Number(t) || 0));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  // the snippet as text nodes, its matched words as <mark>s; spans count code points, as the API does
  function snippet(text, spans) {
    const chars = Array.from(text);
    const p = el("p", { class: "snippet" });
    let at = 0;
    const ok = (Array.isArray(spans) ? spans : [])
      .filter((x) => Array.isArray(x) && Number.isInteger(x[0]) && Number.isInteger(x[1]))
      .sort((x, y) => x[0] - y[0]);
    for (const [a, b] of ok) {
      if (a < at || b <= a || b > chars.length) continue;
      p.append(chars.slice(at, a).join(""), el("mark", {}, chars.slice(a, b).join("")));
      at = b;
    }
    p.append(chars.slice(at).join(""));
    return p;
  }

  function card(hit) {
    const thumbUrl = safeUrl(hit.thumbnail_url);
    const thumb = thumbUrl ? el("img", { class: "thumb", src: thumbUrl, alt: "" }) : el("div", { class: "thumb" }, "▶");
    const li = el("li", { class: "card", tabindex: "0", "data-item-id": hit.item_id, "data-start": hit.start_s },
      thumb,
      el("div", { class: "body" },
        el("div", { class: "head" },
          el("span", { class: "item" }, fmt(hit.item_id)),
          el("span", { class: "span" }, `${clock(hit.start_s)}–${clock(hit.end_s)}`),
          el("span", { class: "chans" }, Array.isArray(hit.channels) ? hit.channels.join(", ") : ""),
          el("span", { class: "score" }, `score ${num(hit.score).toFixed(4)}`)),
        hit.text ? snippet(String(hit.text), hit.highlights) : el("p", { class: "snippet muted" }, "(no text: a visual match)")));
    li.addEventListener("click", () => play(hit, li));
    li.addEventListener("keydown", (ev) => { if (ev.key === "Enter") play(hit, li); });
    return li;
  }

  function play(hit, li) {
    for (const c of $("sr-results").children) c.classList.toggle("playing", c === li);
    const video = $("sr-video");
    // an image is its own thumbnail; a video's thumbnail is its scene's keyframe: the video plays
    const media = safeUrl(hit.media_url);
    const image = (hit.modality ? hit.modality === "image" : !media) ? safeUrl(hit.thumbnail_url) : null;
    show($("sr-player"), true);
    video.pause();
    if (image || !media) {  // an image is shown, not played; an item without a source has nothing to show
      video.removeAttribute("src"); show(video, false);
      $("sr-still").replaceChildren(...(image ? [el("img", { src: image, alt: "" })] : []));
      $("sr-now").textContent = image ? `${fmt(hit.item_id)} (image)` : `${fmt(hit.item_id)}: no media to play`;
      return;
    }
    $("sr-still").replaceChildren();
    const start = num(hit.at_s != null ? hit.at_s : hit.start_s);  // inside a scene: its best frame
    video.dataset.itemId = String(hit.item_id);
    video.dataset.start = String(start);
    video.src = media;  // presigned, ending in #t=at_s: the browser starts there
    video.addEventListener("loadedmetadata", () => {  // and where a browser ignores the fragment, we seek
      if (Math.abs(video.currentTime - start) > 0.5 && start < (video.duration || Infinity)) video.currentTime = start;
    }, { once: true });
    show(video, true);
    $("sr-now").textContent = `${fmt(hit.item_id)} from ${clock(start)}`;
    const started = video.play();
    if (started && started.catch) started.catch(() => {});  // autoplay may be refused: the controls remain
  }

  function renderResults(out) {
    const hits = Array.isArray(out && out.hits) ? out.hits : [];
    const skipped = Array.isArray(out && out.skipped) && out.skipped.length ? ` · skipped: ${out.skipped.join("; ")}` : "";
    $("sr-meta").textContent = `${hits.length} moment${hits.length === 1 ? "" : "s"} · ${num(out && out.took_ms).toFixed(1)} ms · spec ${fmt(out && out.spec_version)}${skipped}`;
    $("sr-results").replaceChildren(...hits.map(card));
  }

  async function search(ev) {
    ev.preventDefault();
    for (const id of Object.values(SR_FIELD)) $(id).removeAttribute("aria-invalid");
    $("sr-field-error").textContent = "";
    const k = $("sr-k").value.trim();
    const req = { owner_id: $("sr-owner").value.trim(), text: $("sr-text").value, mode: $("sr-mode").value };
    if (k !== "") req.k = /^[0-9]+$/.test(k) ? Number(k) : k;  // anything else: the API names the field
    const btn = $("sr-go");
    btn.disabled = true;
    try {
      renderResults(await api("POST", "/search", req));
    } catch (err) {
      const id = err.field && SR_FIELD[err.field];
      if (id) $(id).setAttribute("aria-invalid", "true");
      $("sr-field-error").textContent = (err.field && !err.message.startsWith(err.field) ? `${err.field}: ` : "") + err.message;
      $("sr-field-error").dataset.field = err.field || "";
      $("sr-meta").textContent = "";
      $("sr-results").replaceChildren();
    } finally {
      btn.disabled = false;
    }
  }

  // ------------------------------------------------------------------ polling

  let tick = 0;
  let busy = false;
  async function poll() {
    if (!busy && !document.hidden) { // a background tab asks nothing of the API
      busy = true;
      const jobs = [];
      if (state.trackedRun) jobs.push(refreshTrackedRun().catch((err) => showError(err, "run")));
      if (state.anyActive || tick % 4 === 0) jobs.push(refreshRuns().catch((err) => showError(err, "runs")));
      if (tick % 3 === 0) jobs.push(refreshOwnerData().catch((err) => showError(err, "items")));
      if (tick % 10 === 0) jobs.push(refreshOwners().catch((err) => showError(err, "owners")));
      if (tick % 5 === 0) jobs.push(refreshRefused().catch((err) => showError(err, "refused uploads")));
      await Promise.all(jobs);
      busy = false;
    }
    tick += 1;
    setTimeout(poll, 1000);
  }

  async function init() {
    $("rp-form").addEventListener("submit", estimate);
    $("rp-form").addEventListener("input", () => { if (state.pending) dropEstimate(); });
    $("rp-form").addEventListener("change", () => { if (state.pending) dropEstimate(); });
    $("rp-scope").addEventListener("change", syncScope);
    $("rp-confirm").addEventListener("click", confirmRun);
    $("rp-cancel").addEventListener("click", dropEstimate);
    $("owner-select").addEventListener("change", (ev) => selectOwner(ev.target.value));
    $("sr-form").addEventListener("submit", search);
    syncScope();
    try {
      const cfg = await (await fetch("/config.json", { cache: "no-store" })).json();
      $("backend").textContent = `${cfg.api} (${cfg.region})`;
      if (!cfg.search) {
        for (const node of $("sr-form").elements) node.disabled = true;
        $("sr-meta").textContent = "search is off: run se admin on the local stack, or set SEARCH_FUNCTION_URL";
      }
    } catch (err) {
      $("backend").textContent = "unknown";
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
