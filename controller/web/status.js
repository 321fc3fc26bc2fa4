// Shoal's status page: polls /api/status and redraws; no framework, no build step, no CDN.
"use strict";

const POLL_MS = 2000;
const ERRORS_SHOWN = 10;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const v = seconds * 1000;
  return v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`;
}

function num(v) {
  return v === null || v === undefined ? "–" : String(v);
}

function state(s) {
  return el("span", { class: `state ${s.split(" ")[0]}` }, s);
}

// A small chart of the last minutes: request rate on its own scale, p50/p99 on another.
function chart(history) {
  const W = 180, H = 36, NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  if (history.length < 2) return svg;
  const t0 = history[0].t, t1 = history[history.length - 1].t || t0 + 1;
  const x = (t) => ((t - t0) / Math.max(t1 - t0, 1e-9)) * (W - 2) + 1;
  const line = (key, scale, cls) => {
    const pts = history.filter((p) => p[key] !== null && p[key] !== undefined)
      .map((p) => `${x(p.t).toFixed(1)},${(H - 2 - (p[key] / scale) * (H - 4)).toFixed(1)}`);
    if (pts.length < 2) return;
    const pl = document.createElementNS(NS, "polyline");
    pl.setAttribute("points", pts.join(" "));
    pl.setAttribute("class", cls);
    pl.setAttribute("fill", "none");
    pl.setAttribute("stroke-width", "1.5");
    svg.append(pl);
  };
  const maxRate = Math.max(...history.map((p) => p.rate || 0), 1e-9);
  const maxLat = Math.max(...history.map((p) => p.p99 || 0), 1e-9);
  line("rate", maxRate, "rate");
  line("p50", maxLat, "p50");
  line("p99", maxLat, "p99");
  return svg;
}

function bars(buckets) {
  // cumulative (le, count) pairs -> one bar per bucket
  const wrap = el("span", { class: "bars", title: "items per batch, by bucket" });
  let prev = 0;
  const counts = buckets.map(([le, c]) => { const n = c - prev; prev = c; return [le, n]; });
  const top = Math.max(...counts.map(([, n]) => n), 1);
  for (const [le, n] of counts) {
    if (!n) continue;
    const b = el("span", { title: `≤ ${le}: ${n}` });
    b.style.height = `${Math.max(2, (n / top) * 22)}px`;
    wrap.append(b);
  }
  return wrap;
}

function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren();
  if (!rows.length) {
    tbody.append(el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText)));
  }
  for (const cells of rows) tbody.append(el("tr", {}, ...cells));
}

function td(v, attrs) {
  return el("td", attrs || {}, v);
}

function workers(w) {
  return `${w.ready} / ${w.starting} / ${w.draining}`;
}

function render(s) {
  document.getElementById("controller").textContent = `controller ${s.controller}`;
  document.getElementById("updated").textContent =
    `updated ${new Date(s.at * 1000).toLocaleTimeString()}`;

  fill(document.querySelector("#functions tbody"), s.functions.map((f) => [
    td(el("code", {}, f.name), { "data-function": f.name }),
    td(state(f.state)),
    td(workers(f.workers)),
    td(num(f.backlog), { "data-field": "backlog" }),
    td(f.in_flight, { "data-field": "in_flight" }),
    td(f.ok, { "data-field": "ok" }),
    td(f.error, { "data-field": "error", class: f.error ? "bad" : "" }),
    td(f.rate.toFixed(1), { "data-field": "rate" }),
    td(ms(f.p50)),
    td(ms(f.p99)),
    td(chart(f.history)),
    td(f.cold_starts),
    td(f.redeliveries),
    td(f.dead_letters, { class: f.dead_letters ? "bad" : "" }),
  ]), 14, "no functions deployed");

  fill(document.querySelector("#executors tbody"), s.executors.map((x) => [
    td(el("code", {}, x.name), { "data-function": x.name }),
    td(state(x.state)),
    td(workers(x.workers)),
    td(x.queue, { "data-field": "queue" }),
    td(x.in_flight),
    td(x.ok, { "data-field": "ok" }),
    td(x.error, { class: x.error ? "bad" : "" }),
    td(x.batches, { "data-field": "batches" }),
    td(num(x.mean_batch), { "data-field": "mean_batch" }),
    td(x.p50_batch === null ? "–" : x.p50_batch.toFixed(1)),
    td(bars(x.batch_sizes)),
  ]), 11, "no executors deployed");

  fill(document.querySelector("#errors tbody"), s.errors.slice(0, ERRORS_SHOWN).map((e) => [
    td(new Date(e.at * 1000).toLocaleTimeString()),
    td(el("code", {}, e.function)),
    td(el("code", {}, e.request_id || "–"), { "data-field": "request_id" }),
    td(e.code),
    td(e.message, { class: "msg" }),
  ]), 5, "no errors");

  const dead = s.dead_letters;
  document.getElementById("dlq-kept").textContent = `(${dead.kept} kept)`;
  fill(document.querySelector("#dead tbody"), dead.recent.map((d) => [
    td(d.seq),
    td(el("code", {}, d.function)),
    td(el("code", {}, d.request_id || "–")),
    td(d.code),
    td(d.reason, { class: "msg" }),
  ]), 5, "no dead letters");
}

async function poll() {
  try {
    const r = await fetch("api/status", { cache: "no-store" });
    if (!r.ok) throw new Error(`${r.status}`);
    render(await r.json());
  } catch (err) {
    document.getElementById("updated").textContent = `not reachable (${err.message}); retrying`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
