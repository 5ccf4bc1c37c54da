// gvdb live page: runs, their core figures (redrawn as snapshots land),
// and a query box. Everything comes from this server; text is set with
// textContent, never parsed as HTML.
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
function api(path, params) {
  const u = new URLSearchParams(params || {});
  if (token) u.set("token", token);
  return path + "?" + u.toString();
}
function quote(s) { return "'" + s.replace(/'/g, "''") + "'"; }
function fillTable(el, cols, rows) {
  el.replaceChildren();
  const head = el.insertRow();
  for (const c of cols) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  for (const r of rows) {
    const tr = el.insertRow();
    for (const c of cols) { tr.insertCell().textContent = r[c] === null ? "" : String(r[c]); }
  }
}
const figs = {};
// coreQuery is the figure of a run with batch size b: SG-B and SG-2B
// variance, nvar, gns and the loss (TestPageQuery runs it).
function coreQuery(run, b) {
  return "PLOT variance(" + b + "), variance(" + 2 * b + "), nvar(" + b + "), gns, loss FROM " + quote(run) + " TO 'live.svg'";
}
const batches = {};
function figure(run, batch) {
  if (batch > 0) batches[run] = batch;
  const q = coreQuery(run, batches[run] || 128);
  let img = figs[run];
  if (!img) {
    const div = document.createElement("div");
    div.className = "fig";
    const cap = document.createElement("div");
    cap.textContent = run;
    img = document.createElement("img");
    img.alt = "figure of " + run;
    img.dataset.run = run;
    div.append(cap, img);
    document.getElementById("figures").appendChild(div);
    figs[run] = img;
  }
  img.src = api("/api/figure", { q: q, format: "svg", t: Date.now() });
}
async function runs() {
  const r = await fetch(api("/api/runs"));
  const body = await r.json();
  if (!r.ok) { document.getElementById("status").textContent = body.error; return; }
  fillTable(document.getElementById("runs"), body.columns, body.rows);
  for (const row of body.rows) figure(row.run !== undefined ? row.run : row.name, row.batch);
}
async function runQuery(ev) {
  ev.preventDefault();
  const err = document.getElementById("qerr");
  err.textContent = "";
  const r = await fetch(api("/api/query", { q: document.getElementById("q").value }));
  const body = await r.json();
  if (!r.ok) { err.textContent = body.error; return; }
  fillTable(document.getElementById("result"), body.columns, body.rows);
  if (body.warnings.length) err.textContent = body.warnings.join("\n");
}
function plotQuery() {
  const q = document.getElementById("q").value.replace(/^\s*SELECT\b/i, "PLOT");
  const img = document.createElement("img");
  img.src = api("/api/figure", { q: q.match(/\bTO\s+'/i) ? q : q + " TO 'query.svg'", format: "svg" });
  img.onerror = () => { document.getElementById("qerr").textContent = "no figure for this query (run it for the error)"; };
  document.getElementById("qfig").replaceChildren(img);
}
document.getElementById("qform").addEventListener("submit", runQuery);
document.getElementById("plot").addEventListener("click", plotQuery);
runs().then(() => {
  const es = new EventSource(api("/api/events"));
  const st = document.getElementById("status");
  es.onopen = () => { st.textContent = "live: figures update as snapshots land"; };
  es.addEventListener("snapshot", (e) => {
    const s = JSON.parse(e.data);
    st.textContent = "last snapshot: " + s.run + " step " + s.step;
    if (figs[s.run]) figure(s.run); else runs();
  });
  es.onerror = () => { st.textContent = "disconnected (the server stopped?)"; };
});
