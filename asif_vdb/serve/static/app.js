// The asif-vdb page: search, image queries, "why?" explanations and live anchor updates.
// Everything from the service is put into the page with textContent (never as HTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { galleries: [], labelSets: [], last: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function apiKey() { return sessionStorage.getItem("asif-key") || ""; }

async function call(method, path, body, isJson) {
  const headers = {};
  if (apiKey()) headers["X-API-Key"] = apiKey();
  let payload = body;
  if (isJson) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(path, { method, headers, body: payload });
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error((data && data.detail) || `${res.status} ${res.statusText}`);
  return data;
}

function plural(n, one, many) { return `${n} ${n === 1 ? one : (many || one + "s")}`; }

function say(target, text, isError = false) {
  target.textContent = text;
  target.classList.toggle("error", isError);
}

function thumbUrl(gallery, id, size = 320) {
  return `/items/${encodeURIComponent(gallery)}/${id}/thumbnail?size=${size}`;
}

// -- store info ------------------------------------------------------------------------------------
async function loadStore() {
  const [health, galleries, labelSets] = await Promise.all([call("GET", "/health"), call("GET", "/galleries"),
                                                           call("GET", "/labels")]);
  state.galleries = galleries.filter((g) => !g.name.startsWith("anchors:"));
  state.labelSets = labelSets;
  $("#store-line").textContent = `${plural(health.anchors, "anchor")} · ${plural(labelSets.length, "label set")} · ` +
    plural(state.galleries.length, "gallery", "galleries") + (health.read_only ? " · read-only" : "");
  $("#anchor-count").textContent = String(health.anchors);
  fill($("#gallery"), [["anchors", "anchors (their images)"], ...state.galleries.map((g) => [g.name, `${g.name} (${g.modality}s)`])]);
  fill($("#labels"), [["", "(none)"], ...labelSets.map((l) => [l.name, `${l.name} (${l.classes.length} classes)`])]);
  const images = state.galleries.filter((g) => g.modality === "image");
  fill($("#image-gallery"), [["", "(none)"], ...images.map((g) => [g.name, g.name])]);
}

function fill(select, options) {
  // Keep the user's choice; the first time, pick the first real choice ("(none)" comes first).
  const keep = select.dataset.filled ? select.value : null;
  select.replaceChildren(...options.map(([value, label]) => el("option", { value, text: label })));
  if (keep !== null && options.some(([v]) => v === keep)) select.value = keep;
  else if (options.length > 1 && options[0][0] === "") select.value = options[1][0];
  select.dataset.filled = "1";
}

// -- text search -------------------------------------------------------------------------------------
async function textSearch(event) {
  if (event) event.preventDefault();
  const text = $("#q").value.trim();
  if (!text) { say($("#status"), "Type a query first.", true); return; }
  state.last = { kind: "text", text };
  $("#query-preview").replaceChildren();
  $("#classes-section").hidden = true;
  $("#captions-section").hidden = true;
  await runSearch();
}

async function runSearch() {
  const q = state.last;
  if (!q) return;
  const gallery = q.kind === "text" ? $("#gallery").value : $("#image-gallery").value;
  const top = $("#top").value || "12";
  say($("#status"), "Searching…");
  try {
    if (q.kind === "text") {
      const form = new FormData();
      form.append("text", q.text); form.append("gallery", gallery); form.append("top", top);
      const out = await call("POST", "/search", form);
      showHits(out.results[0], gallery, "text");
      say($("#status"), `${out.results[0].length} results for “${q.text}” in ${gallery}.`);
    } else {
      await imageQuery(q.file);
    }
  } catch (err) { say($("#status"), err.message, true); }
}

function hitImage(gallery, hit, queryKind) {
  // For a text query the anchors gallery holds the anchor images; an image gallery holds images.
  if (gallery === "anchors" && queryKind === "text") return thumbUrl("anchors", hit.id);
  const info = state.galleries.find((g) => g.name === gallery);
  if (info && info.modality === "image") return thumbUrl(gallery, hit.id);
  return null;
}

function showHits(hits, gallery, queryKind) {
  const list = $("#results");
  list.replaceChildren();
  hits.forEach((hit, i) => {
    const src = hitImage(gallery, hit, queryKind);
    const label = hit.payload.caption || hit.payload.ref || `#${hit.id}`;
    const item = el("li", { class: "hit" });
    if (src) item.append(el("img", { src, alt: String(label), loading: "lazy" }));
    else item.append(el("p", { class: "text", text: String(label) }));
    if (src && hit.payload.caption) item.append(el("span", { text: String(hit.payload.caption) }));
    item.append(el("span", { class: "score", text: `#${i + 1} · score ${hit.score.toFixed(4)} · id ${hit.id}` }));
    item.append(el("button", { type: "button", class: "why-link", text: "why?",
                               "aria-label": `why result ${i + 1}?`, onclick: () => why({ gallery, rank: i + 1 }) }));
    list.append(item);
  });
  $("#results-section").hidden = false;
  $("#results-title").textContent = `Results in ${gallery}`;
}

// -- image queries -------------------------------------------------------------------------------------
async function useFile(file) {
  if (!file) return;
  state.last = { kind: "image", file };
  const url = URL.createObjectURL(file);
  $("#query-preview").replaceChildren(el("img", { src: url, alt: `query image ${file.name}` }));
  await runSearch();
}

async function imageQuery(file) {
  say($("#status"), `Reading ${file.name}…`);
  const top = $("#top").value || "12";
  const jobs = [];
  const labels = $("#labels").value;
  if (labels) {
    const form = new FormData();
    form.append("images", file); form.append("labels", labels); form.append("top", "5");
    jobs.push(call("POST", "/classify", form).then((out) => showClasses(out.results[0], labels)));
  } else { $("#classes-section").hidden = true; }
  const capForm = new FormData();
  capForm.append("image", file); capForm.append("gallery", "anchors"); capForm.append("top", "5");
  jobs.push(call("POST", "/search", capForm).then((out) => showCaptions(out.results[0])));
  const gallery = $("#image-gallery").value;
  if (gallery) {
    const form = new FormData();
    form.append("image", file); form.append("gallery", gallery); form.append("top", top);
    jobs.push(call("POST", "/search", form).then((out) => showHits(out.results[0], gallery, "image")));
  } else { $("#results-section").hidden = true; }
  await Promise.all(jobs);
  say($("#status"), `Answers for ${file.name}.`);
}

function showClasses(result, labels) {
  const list = $("#classes");
  list.replaceChildren();
  if (result.unknown) list.append(el("li", { class: "unknown", text: "unknown (no class is confident enough)" }));
  result.predictions.forEach((p, i) => {
    list.append(el("li", {}, `${p.label} `, el("span", { class: "score", text: p.score.toFixed(4) }), " ",
      el("button", { type: "button", class: "why-link", text: "why?", "aria-label": `why ${p.label}?`,
                     onclick: () => why({ labels, rank: i + 1 }) })));
  });
  $("#classes-section").hidden = false;
  $("#classes-title").textContent = `Classes (${labels})`;
}

function showCaptions(hits) {
  const list = $("#captions");
  list.replaceChildren();
  hits.forEach((h, i) => list.append(el("li", {}, String(h.payload.caption || `#${h.id}`), " ",
    el("span", { class: "score", text: h.score.toFixed(4) }), " ",
    el("button", { type: "button", class: "why-link", text: "why?", "aria-label": `why caption ${i + 1}?`,
                   onclick: () => why({ gallery: "anchors", rank: i + 1 }) }))));
  $("#captions-section").hidden = false;
}

// -- why? ------------------------------------------------------------------------------------------------
let opener = null;

async function why(target) {
  opener = document.activeElement;
  const q = state.last;
  const form = new FormData();
  if (q.kind === "text") form.append("text", q.text); else form.append("image", q.file);
  if (target.labels) form.append("labels", target.labels); else form.append("gallery", target.gallery);
  form.append("top", String(target.rank)); form.append("anchors", "8"); form.append("neighbours", "4");
  say($("#status"), "Explaining…");
  try {
    const out = await call("POST", "/explain", form);
    const index = Math.min(target.rank, out.explanation.answers.length) - 1;
    if (index < 0) throw new Error("nothing to explain: the query shares no anchor with any answer");
    showWhy(out, index);
    say($("#status"), "");
  } catch (err) { say($("#status"), err.message, true); }
}

function showWhy(out, index) {
  const answer = out.explanation.answers[index];
  const name = answer.label.includes("/") ? answer.label.split("/").pop() : answer.label;  // an image path: its file
  $("#why-title").textContent = `Why “${name}”?`;
  $("#why-summary").textContent = `score ${answer.score.toFixed(4)} from ${answer.shared} shared anchor pairs; ` +
    `the pairs below carry most of it (the rest adds ${answer.rest.toFixed(4)}).`;
  const top = Math.max(...out.groups[index].map((g) => g.share), 1e-12);
  $("#why-groups").replaceChildren(...out.groups[index].map((g) => group(g, top)));
  $("#why-neighbours").replaceChildren(...out.neighbour_groups.map((g) => group(g, 0)));
  $("#why").hidden = false;
  $("#why-close").focus();
}

function group(g, top) {
  const first = g.anchors[0];
  const box = el("div", { class: "group" });
  if (g.image) box.append(el("img", { src: thumbUrl("anchors", first.anchor_id), alt: g.anchors.map((a) => a.caption).join("; "),
                                      loading: "lazy" }));
  if (top > 0) {
    box.append(el("div", { class: "bar", style: `width:${Math.round(100 * g.share / top)}%` }));
    box.append(el("p", { text: `share ${g.share.toFixed(4)} (${(100 * g.fraction).toFixed(1)}%)` +
                               (g.anchors.length > 1 ? ` from ${g.anchors.length} captions` : "") }));
  }
  const list = el("ul");
  for (const a of g.anchors) {
    const detail = a.share !== undefined ? `${a.share.toFixed(4)} · ` : `cos ${a.similarity.toFixed(3)} · `;
    list.append(el("li", {}, el("span", { class: "score", text: detail }), `${a.caption} `,
                   el("span", { class: "score", text: `#${a.anchor_id}` })));
  }
  box.append(list);
  return box;
}

function closeWhy() {
  $("#why").hidden = true;
  if (opener) opener.focus();
}

// -- anchors ---------------------------------------------------------------------------------------------
async function loadAnchors() {
  const out = await call("GET", "/anchors/ids");
  const latest = out.slice(-20).reverse();
  $("#anchor-count").textContent = String(out.length);
  const payloads = latest.length ? await call("POST", "/anchors/payloads", { ids: latest }, true) : {};
  const body = $("#anchor-table-view tbody");
  body.replaceChildren(...latest.map((id) => {
    const p = payloads[id] || {};
    return el("tr", {}, el("td", { text: String(id) }),
      el("td", {}, el("img", { src: thumbUrl("anchors", id, 96), alt: "", loading: "lazy" })),
      el("td", { text: String(p.caption || "") }), el("td", { text: String(p.source || "") }));
  }));
}

function captionInputs() {
  const files = [...$("#anchor-images").files];
  const list = $("#caption-inputs");
  list.replaceChildren();
  if ($("#anchor-table").files.length) return;
  files.forEach((f, i) => {
    const id = `caption-${i}`;
    list.append(el("li", {}, el("label", { for: id, text: `Caption of ${f.name}` }),
                   el("input", { id, type: "text", required: "required" })));
  });
}

function send(form, onProgress) {
  // XMLHttpRequest, not fetch: it reports upload progress.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/anchors");
    if (apiKey()) xhr.setRequestHeader("X-API-Key", apiKey());
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let data = {};
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = { detail: xhr.responseText }; }
      if (xhr.status >= 400) reject(new Error(data.detail || `${xhr.status}`)); else resolve(data);
    };
    xhr.onerror = () => reject(new Error("the service did not answer"));
    xhr.send(form);
  });
}

async function addAnchors(event) {
  event.preventDefault();
  const files = [...$("#anchor-images").files];
  const table = $("#anchor-table").files[0];
  const status = $("#add-status");
  const bar = $("#add-progress");
  if (!files.length) { say(status, "Choose the pairs' images first.", true); return; }
  const source = $("#anchor-source").value.trim() || "upload";
  const captions = files.map((_, i) => ($(`#caption-${i}`) || {}).value);
  if (!table && captions.some((c) => !c || !c.trim())) { say(status, "Give every image a caption, or a table.", true); return; }
  bar.hidden = false; bar.value = 0;
  let before = null, after = null, added = 0, skipped = [];
  try {
    // A table goes with all its images in one request; images with captions go 8 at a time, each
    // batch one update, so the bar shows real progress and queries between batches see each one.
    const batches = table ? [files.map((f, i) => i)] : chunk(files.map((f, i) => i), 8);
    let done = 0;
    for (const batch of batches) {
      const form = new FormData();
      for (const i of batch) form.append("images", files[i]);
      if (table) form.append("table", table); else for (const i of batch) form.append("captions", captions[i]);
      form.append("source", source);
      const out = await send(form, (f) => { bar.value = (done + f * batch.length * 0.5) / files.length; });
      done += batch.length;
      bar.value = done / files.length;
      if (before === null) before = out.anchors_before;
      after = out.anchors_after; added += out.added; skipped = skipped.concat(out.skipped);
      say(status, `Adding… ${done} of ${files.length} images sent; anchors: ${after}`);
    }
    say(status, `Anchors: ${before} → ${after} (+${added})` + (skipped.length ? `; skipped: ${skipped.join("; ")}` : ""));
    $("#add-form").reset(); $("#caption-inputs").replaceChildren();
    await refreshAll();
  } catch (err) { say(status, err.message, true); }
}

function chunk(items, n) {
  const out = [];
  for (let i = 0; i < items.length; i += n) out.push(items.slice(i, i + n));
  return out;
}

async function deleteAnchors(event) {
  event.preventDefault();
  const status = $("#delete-status");
  const text = $("#delete-ids").value.trim();
  const source = $("#delete-source").value.trim();
  if (!text === !source) { say(status, "Give anchor ids or a source (one of the two).", true); return; }
  let body;
  if (text) {
    const ids = text.split(/[\s,]+/).filter(Boolean).map(Number);
    if (ids.some((i) => !Number.isInteger(i) || i < 0)) { say(status, "Anchor ids are whole numbers.", true); return; }
    body = { ids };
  } else body = { where: { source } };
  try {
    const out = await call("DELETE", "/anchors", body, true);
    say(status, `Anchors: ${out.anchors_before} → ${out.anchors_after} (−${out.deleted})`);
    $("#delete-form").reset();
    await refreshAll();
  } catch (err) { say(status, err.message, true); }
}

async function refreshAll() {
  await loadStore();
  await loadAnchors();
  await runSearch();  // the last query again: its results change at once
}

// -- views and wiring ----------------------------------------------------------------------------------
function showView(name) {
  for (const v of ["search", "anchors"]) {
    $(`#view-${v}`).hidden = v !== name;
    $(`#tab-${v}`).setAttribute("aria-selected", String(v === name));
  }
  if (name === "anchors") loadAnchors().catch((e) => say($("#add-status"), e.message, true));
}

function wire() {
  $("#search-form").addEventListener("submit", textSearch);
  $("#file").addEventListener("change", (e) => useFile(e.target.files[0]));
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) useFile(e.dataTransfer.files[0]);
  });
  $("#tab-search").addEventListener("click", () => showView("search"));
  $("#tab-anchors").addEventListener("click", () => showView("anchors"));
  $("#why-close").addEventListener("click", closeWhy);
  $("#why").addEventListener("click", (e) => { if (e.target.id === "why") closeWhy(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("#why").hidden) closeWhy(); });
  $("#anchor-images").addEventListener("change", captionInputs);
  $("#anchor-table").addEventListener("change", captionInputs);
  $("#add-form").addEventListener("submit", addAnchors);
  $("#delete-form").addEventListener("submit", deleteAnchors);
  const key = $("#api-key");
  key.value = apiKey();
  key.addEventListener("input", () => sessionStorage.setItem("asif-key", key.value));
  loadStore().catch((e) => say($("#status"), e.message, true));
}

wire();
