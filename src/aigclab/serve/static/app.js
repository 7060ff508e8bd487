// The detect page: upload images to /v1/detect, show verdicts; explain one with /v1/explain.
"use strict";

const drop = document.getElementById("drop");
const picker = document.getElementById("files");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const explanations = document.getElementById("explanations");
apiKeyInput();

drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  detect([...e.dataTransfer.files]);
});
picker.addEventListener("change", () => detect([...picker.files]));

async function detect(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("images", f, f.name);
  statusLine.textContent = `scoring ${files.length} image(s) ...`;
  try {
    const body = await api("/v1/detect", { method: "POST", body: form });
    statusLine.textContent = `detector ${body.detector.name} (${body.detector.class}); ` +
      `threshold ${body.detector.threshold.toFixed(3)}` + (body.detector.band
        ? `, real below ${body.detector.band[0].toFixed(3)}, fake from ${body.detector.band[1].toFixed(3)}`
        : "");
    showRows(body.results, files);
  } catch (err) {
    statusLine.textContent = "";
    showRows(files.map((f) => ({ file: f.name, error: { message: err.message } })), files);
  }
}

function showRows(rows, files) {
  const tbody = results.querySelector("tbody");
  rows.forEach((row, i) => {
    const file = files[i];
    const explainButton = row.error ? null : el("button", { onclick: () => explain(file) }, "explain");
    const verdict = row.error
      ? el("td", { class: "error verdict", "data-verdict": "error" }, row.error.message)
      : el("td", { class: `verdict verdict-${row.verdict}`, "data-verdict": row.verdict }, row.verdict);
    tbody.append(el("tr", {},
      el("td", {}, row.file),
      verdict,
      el("td", { class: "probability" }, row.error ? "" : row.probability.toFixed(3)),
      el("td", {}, row.error ? "" : `${row.width}×${row.height}` + (row.note ? ` (${row.note})` : "")),
      el("td", {}, explainButton)));
  });
  results.hidden = false;
}

async function explain(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  const box = el("section", { class: "explanation" }, el("p", { class: "muted" }, `explaining ${file.name} ...`));
  explanations.prepend(box);
  try {
    const r = await api("/v1/explain", { method: "POST", body: form });
    box.replaceChildren(...explanationView(r));
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, `${file.name}: ${err.message}`));
  }
}

function explanationView(r) {
  const e = r.explanation;
  const evidence = table(["attribute", "finding", "region", "strength"],
    e.evidence.map((ev) => [ev.attribute, ev.finding, ev.region ? ev.region.join(", ") : "", ev.strength.toFixed(2)]));
  const text = el("div", { class: "text" },
    el("h3", {}, r.file, ": ",
      el("span", { class: `explain-verdict verdict-${r.verdict}`, "data-verdict": r.verdict }, r.verdict),
      ` (P = ${r.probability.toFixed(3)})`),
    el("h4", {}, "evidence"), evidence,
    el("h4", {}, "explanation"), el("p", { class: "summary" }, e.summary),
    r.note ? el("p", { class: "muted" }, r.note) : null);
  if (r.anomalies) {
    text.append(el("h4", {}, "semantic anomalies (quadruples)"),
      r.anomalies.length
        ? table(["name", "phenomenon", "reasoning", "severity", "confidence"],
            r.anomalies.map((q) => [q.name, q.phenomenon, q.reasoning, q.severity,
              q.confidence === undefined ? "" : q.confidence.toFixed(2)]))
        : el("p", {}, "none found"));
  }
  const heat = r.heatmap_png
    ? el("figure", {}, el("img", { src: `data:image/png;base64,${r.heatmap_png}`, alt: "heat map" }),
        el("figcaption", { class: "muted" }, "detector attribution heat map"))
    : null;
  return [heat, text];
}
