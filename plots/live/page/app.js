// gvdb live page: runs, their core figures (redrawn as snapshots land),
// and a query box. Everything comes from this server; text is set with
// textContent, never parsed as HTML; figures are SVG parsed as XML and
// put in the page, so that each point is an element (class gvdb-point).
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
function api(path, params) {
  const u = new URLSearchParams(params || {});
  if (token) u.set("token", token);
  return path + "?" + u.toString();
}
// cell shows a value: numbers to 6 significant digits.
function cell(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number" && !Number.isInteger(v)) return String(Number(v.toPrecision(6)));
  return String(v);
}
function fillTable(el, cols, rows) {
  el.replaceChildren();
  const head = el.insertRow();
  for (const c of cols) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  for (const r of rows) {
    const tr = el.insertRow();
    for (const c of cols) { tr.insertCell().textContent = cell(r[c]); }
  }
}
// errorOf reads a failed answer's message.
async function errorOf(r) {
  const text = await r.text();
  try { return JSON.parse(text).error; } catch (e) { return r.status + " " + r.statusText; }
}
// svgFigure fetches a figure and returns its <svg> element for the page.
async function svgFigure(params) {
  const r = await fetch(api("/api/figure", params));
  if (!r.ok) { const e = new Error(await errorOf(r)); e.status = r.status; throw e; }
  const doc = new DOMParser().parseFromString(await r.text(), "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") throw new Error("the figure is not SVG");
  for (const s of svg.querySelectorAll("script, foreignObject")) s.remove();
  return document.importNode(svg, true);
}
// once runs fn at most once at a time: a call while it runs makes it run
// again after, once.
function once(fn) {
  let busy = false, again = false;
  const run = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try { await fn(); } finally {
      busy = false;
      if (again) { again = false; run(); }
    }
  };
  return run;
}
const figs = {}; // run -> {redraw}
function figure(run) {
  if (figs[run]) { figs[run].redraw(); return; }
  const div = document.createElement("div");
  div.className = "fig";
  div.dataset.run = run;
  const cap = document.createElement("div");
  cap.className = "cap";
  cap.textContent = run + ": loading…";
  const holder = document.createElement("div");
  div.append(cap, holder);
  document.getElementById("figures").appendChild(div);
  const redraw = once(async () => {
    try {
      const svg = await svgFigure({ run: run });
      holder.replaceChildren(svg);
      const pts = [...svg.querySelectorAll(".gvdb-point")].filter((p) => p.dataset.series.startsWith("variance("));
      const n = new Set(pts.map((p) => p.dataset.step)).size;
      cap.textContent = run + ": " + n + " snapshots";
      cap.classList.remove("err");
    } catch (e) {
      if (e.status === 429) { setTimeout(() => redraw(), 1000); return; } // the server is busy: keep this one
      cap.textContent = run + ": " + e.message;
      cap.classList.add("err");
    }
  });
  figs[run] = { redraw: redraw };
  redraw();
}
const runs = once(async () => {
  const r = await fetch(api("/api/runs"));
  if (!r.ok) { document.getElementById("status").textContent = await errorOf(r); return; }
  const body = await r.json();
  fillTable(document.getElementById("runs"), body.columns, body.rows);
  for (const row of body.rows) if (!figs[row.run]) figure(row.run);
});
async function runQuery(ev) {
  ev.preventDefault();
  const err = document.getElementById("qerr");
  const table = document.getElementById("result");
  const fig = document.getElementById("qfig");
  err.textContent = "";
  table.replaceChildren();
  fig.replaceChildren();
  const q = document.getElementById("q").value;
  let plot = /^\s*PLOT\b/i.test(q);
  if (!plot) {
    const r = await fetch(api("/api/query", { q: q }));
    if (!r.ok) { err.textContent = await errorOf(r); return; }
    const body = await r.json();
    fillTable(table, body.columns, body.rows);
    if (body.warnings.length) err.textContent = body.warnings.join("\n");
    plot = body.columns.includes("step") && !body.columns.includes("example_id") && body.rows.length > 0;
  }
  if (plot) {
    try { fig.replaceChildren(await svgFigure({ q: q })); } catch (e) { err.textContent += (err.textContent ? "\n" : "") + "figure: " + e.message; }
  }
}
document.getElementById("qform").addEventListener("submit", runQuery);
runs().then(() => {
  const es = new EventSource(api("/api/events"));
  const st = document.getElementById("status");
  es.onopen = () => { st.textContent = "live: figures update as snapshots land"; };
  es.addEventListener("snapshot", (e) => {
    const s = JSON.parse(e.data);
    st.textContent = "live: last snapshot " + s.run + " step " + s.step;
    runs();
    if (figs[s.run]) figure(s.run);
  });
  es.addEventListener("failure", (e) => { st.textContent = "the server failed: " + JSON.parse(e.data); });
  es.onerror = () => { st.textContent = "disconnected (the server stopped?); retrying"; };
});
