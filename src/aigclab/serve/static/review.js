// The review page: accept, edit or reject AnomAgent proposals; decisions go to the same SQLite store
// as `aigclab explain review` (POST /v1/review/decision).
"use strict";

const statusLine = document.getElementById("status");
const list = document.getElementById("proposals");
const reviewer = document.getElementById("reviewer");
const showAll = document.getElementById("all");
apiKeyInput();
reviewer.value = localStorage.getItem("aigclab-reviewer") || "";
reviewer.addEventListener("change", () => localStorage.setItem("aigclab-reviewer", reviewer.value));
showAll.addEventListener("change", load);

async function load() {
  try {
    const body = await api(`/v1/review/proposals?pending=${!showAll.checked}`);
    statusLine.textContent = `${body.pending} proposal(s) pending in ${body.store}`;
    list.replaceChildren(...body.proposals.map((p) => card(p, body.severity_scale)));
  } catch (err) {
    statusLine.textContent = `could not load the queue: ${err.message}`;
  }
}

function card(p, scale) {
  const q = p.quadruple;
  const fields = {};
  for (const name of ["name", "phenomenon", "reasoning"]) {
    fields[name] = el("input", { type: "text", value: q[name], name });
  }
  fields.severity = el("select", { name: "severity" },
    ...Object.entries(scale).map(([k, v]) => el("option", { value: k, selected: Number(k) === q.severity }, `${k}: ${v}`)));
  const state = el("p", { class: "muted state" }, p.review ? `reviewed: ${p.review}` : "pending");
  const box = el("div", { class: "proposal", "data-image": p.image_id, "data-idx": String(p.idx) },
    el("img", { src: `/v1/review/image/${encodeURIComponent(p.image_id)}`, alt: p.path }),
    el("div", { class: "fields" },
      el("p", {}, `${p.path}, proposal ${p.idx + 1}`),
      ...Object.entries(fields).map(([k, input]) => el("label", {}, `${k} `, input)),
      q.confidence === undefined ? null : el("p", { class: "muted" }, `confidence ${q.confidence.toFixed(2)}`),
      el("div", {},
        el("button", { class: "accept", onclick: () => decide(p, "accepted", null, state) }, "accept"),
        el("button", { class: "edit", onclick: () => decide(p, "edited", edited(q, fields), state) }, "save edit"),
        el("button", { class: "reject", onclick: () => decide(p, "rejected", null, state) }, "reject")),
      state));
  return box;
}

function edited(q, fields) {
  const out = Object.assign({}, q);
  for (const name of ["name", "phenomenon", "reasoning"]) out[name] = fields[name].value;
  out.severity = Number(fields.severity.value);
  return out;
}

async function decide(p, status, quadruple, state) {
  const body = { image_id: p.image_id, idx: p.idx, status, reviewer: reviewer.value };
  if (quadruple) body.quadruple = quadruple;
  try {
    const r = await api("/v1/review/decision", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    state.textContent = `reviewed: ${r.review}`;
    statusLine.textContent = `${r.pending} proposal(s) pending`;
  } catch (err) {
    state.textContent = `not saved: ${err.message}`;
  }
}

load();
