// rnnhpo results explorer: the small script layer over the server-rendered pages.
// Charts are Plotly figures fetched as JSON from /ui/data/...; mutating actions (submit, cancel)
// call the API's own routes with the bearer token the user typed (kept in localStorage).
"use strict";

const TOKEN_KEY = "rnnhpo.token";
const rnnhpo = (window.rnnhpo = { charts: {}, requests: 0 });

// ---- token and toasts ----------------------------------------------------------------------------
function token() { return localStorage.getItem(TOKEN_KEY) || ""; }
function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}
function toast(text, kind) {
  const box = document.getElementById("toasts");
  const el = document.createElement("div");
  el.className = "toast " + (kind || "info");
  el.textContent = text;
  box.appendChild(el);
  setTimeout(() => el.remove(), 6000);
  return el;
}
function initToken() {
  const input = document.getElementById("token-input");
  if (!input) return;
  const state = document.getElementById("token-state");
  const show = () => { state.textContent = token() ? "set" : "not set"; };
  input.value = token();
  input.addEventListener("change", () => {
    if (input.value) localStorage.setItem(TOKEN_KEY, input.value.trim());
    else localStorage.removeItem(TOKEN_KEY);
    show();
  });
  show();
}

async function apiError(resp) {
  let detail = "";
  try { detail = (await resp.json()).detail; } catch (e) { /* not JSON */ }
  if (resp.status === 401) {
    return "refused (401): this server needs its API token — type it in the “API token” box at the top";
  }
  if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
  return `refused (${resp.status}): ${detail || resp.statusText}`;
}

// ---- cancel ----------------------------------------------------------------------------------------
async function cancelExperiment(button) {
  const id = button.dataset.cancel;
  if (!window.confirm(`Cancel experiment “${button.dataset.name}”?`)) return;
  button.disabled = true;
  const resp = await fetch(`/api/v1/experiments/${id}/cancel`, { method: "POST", headers: authHeaders() });
  if (resp.ok) {
    const body = await resp.json();
    toast(`cancel requested: ${body.name} is ${body.status}${body.cancel_requested ? " (stopping)" : ""}`, "ok");
    document.body.dispatchEvent(new CustomEvent("rnnhpo:refresh"));
    document.body.dispatchEvent(new CustomEvent("rnnhpo:progress"));
    if (window.htmx && document.getElementById("summary")) {
      htmx.ajax("GET", `/ui/partials/experiments/${id}/summary?seen=-1`, { target: "#summary", swap: "outerHTML" });
    }
  } else {
    button.disabled = false;
    toast(await apiError(resp), "error");
  }
}
document.addEventListener("click", (ev) => {
  const b = ev.target.closest("[data-cancel]");
  if (b) { ev.preventDefault(); cancelExperiment(b); }
});

// ---- charts ----------------------------------------------------------------------------------------
function plotConfig(name) {
  const filename = `rnnhpo-${name}`;
  const svg = {
    name: "Download plot as SVG",
    icon: { width: 1000, height: 1000, path: "M500 50 L500 650 M250 420 L500 670 L750 420 M150 800 L850 800 L850 950 L150 950 Z", transform: "" },
    click: (gd) => Plotly.downloadImage(gd, { format: "svg", filename }),
  };
  return {
    responsive: true, displaylogo: false,
    toImageButtonOptions: { format: "png", filename, scale: 2 },
    modeBarButtonsToAdd: [svg],
  };
}

function query(form) {
  const p = new URLSearchParams();
  if (!form) return p;
  for (const [k, v] of new FormData(form).entries()) {
    if (v === "") continue;
    if (p.has(k)) p.set(k, p.get(k) + "," + v); else p.set(k, v);
  }
  return p;
}

async function drawChart(el, url, name) {
  el.dataset.state = "loading";
  const card = el.closest(".card");
  const note = card && card.querySelector(".note");
  rnnhpo.requests += 1;
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  if (!resp.ok) {
    el.dataset.state = "error";
    if (note) note.textContent = await apiError(resp);
    return;
  }
  const fig = await resp.json();
  fig.layout.autosize = true;
  await Plotly.react(el, fig.data, fig.layout, plotConfig(name));
  el.dataset.series = String(fig.data.length);
  el.dataset.state = "ready";
  if (note && fig.note) note.textContent = fig.note;
  else if (note && !note.dataset.keep) note.textContent = "";
  rnnhpo.charts[name] = { url, figure: fig };
  return fig;
}

function initChartCard(card) {
  const el = card.querySelector(".chart[data-src]");
  if (!el) return;
  const form = card.querySelector("form.controls");
  const csv = card.querySelector("a.csv");
  const name = el.dataset.chart;
  const note = card.querySelector(".note");
  if (note && note.textContent) note.dataset.keep = "1";
  const load = (el.load = () => {
    const q = query(form).toString();
    const base = el.dataset.src;
    if (csv) csv.href = `${base}.csv${q ? "?" + q : ""}`;
    return drawChart(el, `${base}.json${q ? "?" + q : ""}`, name);
  });
  if (csv) csv.href = `${el.dataset.src}.csv${query(form).toString() ? "?" + query(form).toString() : ""}`;
  if (form) form.addEventListener("change", load);
  el.reload = () => (el.dataset.state ? load() : null);  // charts not yet drawn wait for their turn
  lazy.observe(el);
}

// Charts are drawn when they come near the viewport: some (parallel coordinates) are WebGL and
// cost seconds on a machine without a GPU.
const lazy = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    lazy.unobserve(e.target);
    e.target.dataset.state = "loading";
    e.target.load();
  }
}, { rootMargin: "300px" });

function initCharts() {
  document.querySelectorAll(".chart-card").forEach(initChartCard);
  document.body.addEventListener("rnnhpo:progress", () => {
    document.querySelectorAll(".chart[data-src]").forEach((el) => el.reload && el.reload());
  });
}

// ---- trace explorer --------------------------------------------------------------------------------
function initTraceExplorer() {
  const form = document.getElementById("trace-form");
  if (!form) return;
  const el = document.getElementById("chart-trace");
  const info = document.getElementById("trace-info");
  const csv = document.getElementById("trace-csv");
  const trial = form.dataset.trial;
  let busy = false;
  const load = async () => {
    const q = query(form).toString();
    csv.href = `/ui/data/trials/${trial}/trace.csv?${q}`;
    busy = true;
    try {
      const fig = await drawChart(el, `/ui/data/trials/${trial}/trace.json?${q}`, "trace");
      if (fig && fig.window) {
        const w = fig.window;
        const range = w.start != null || w.stop != null ? ` in steps [${w.start ?? 0}, ${w.stop ?? "end"}]` : "";
        info.textContent = `showing ${w.returned} of ${w.rows_in_range} rows${range}` +
          (w.stride > 1 ? ` (every ${w.stride}th row)` : " (every row)") + ` · ${w.total_rows} rows stored`;
        el.dataset.returned = String(w.returned);
        el.dataset.stride = String(w.stride);
      }
    } finally { busy = false; }
  };
  form.addEventListener("change", load);
  document.getElementById("trace-reset").addEventListener("click", () => {
    form.elements.start.value = ""; form.elements.stop.value = ""; load();
  });
  let timer = null;
  const onRelayout = (ev) => {
    if (busy) return;
    const keys = Object.keys(ev || {});
    const lo = keys.find((k) => /^xaxis\d*\.range\[0\]$/.test(k));
    const hi = keys.find((k) => /^xaxis\d*\.range\[1\]$/.test(k));
    const pair = keys.find((k) => /^xaxis\d*\.range$/.test(k));
    const auto = keys.some((k) => /^xaxis\d*\.autorange$/.test(k));
    const range = lo && hi ? [ev[lo], ev[hi]] : pair ? ev[pair] : null;
    if (range) {
      form.elements.start.value = Math.max(0, Math.floor(range[0]));
      form.elements.stop.value = Math.max(0, Math.ceil(range[1]));
    } else if (auto) {
      form.elements.start.value = ""; form.elements.stop.value = "";
    } else return;
    clearTimeout(timer);
    timer = setTimeout(load, 150);
  };
  load().then(() => el.on("plotly_relayout", onRelayout));
}

// ---- spec editor -------------------------------------------------------------------------------------
function escapeHtml(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function initEditor() {
  const ta = document.getElementById("spec");
  if (!ta) return;
  const gutter = document.getElementById("gutter");
  const backdrop = document.getElementById("backdrop");
  const status = document.getElementById("spec-status");
  const list = document.getElementById("spec-errors");
  const examples = JSON.parse(document.getElementById("examples-data").textContent);
  let errors = [];
  let timer = null;

  const contentType = () => (ta.value.trimStart().startsWith("{") ? "application/json" : "application/yaml");
  const render = () => {
    const lines = ta.value.split("\n");
    const byLine = {};
    errors.forEach((e) => { (byLine[e.line] = byLine[e.line] || []).push(e); });
    gutter.innerHTML = lines.map((_, i) => {
      const errs = byLine[i + 1];
      return `<div class="${errs ? "err" : ""}" ${errs ? `title="${escapeHtml(errs.map((e) => e.msg).join("; "))}"` : ""}>${i + 1}</div>`;
    }).join("");
    backdrop.innerHTML = lines.map((line, i) => {
      const errs = byLine[i + 1];
      if (!errs) return `<span class="line">${escapeHtml(line) || " "}</span>`;
      const msg = errs.map((e) => `${e.path}: ${e.msg}`).join(" · ");
      return `<span class="line err" data-line="${i + 1}">${escapeHtml(line)}<span class="inline-error" data-path="${escapeHtml(errs[0].path)}">  ◀ ${escapeHtml(msg)}</span></span>`;
    }).join("\n");
    backdrop.scrollTop = ta.scrollTop; backdrop.scrollLeft = ta.scrollLeft; gutter.scrollTop = ta.scrollTop;
    list.innerHTML = errors.map((e) =>
      `<li data-line="${e.line}" data-path="${escapeHtml(e.path)}"><a href="#">line ${e.line}</a> <code>${escapeHtml(e.path)}</code> ${escapeHtml(e.msg)}</li>`).join("");
  };
  const show = (errs, text, kind) => {
    errors = errs;
    status.textContent = text;
    status.className = "spec-status " + kind;
    render();
  };
  let generation = 0;  // a later check or submit makes an earlier check's answer stale
  const check = async () => {
    const mine = ++generation;
    const resp = await fetch("/ui/data/validate", { method: "POST", body: ta.value, headers: { "Content-Type": contentType() } });
    const body = await resp.json();
    if (mine !== generation) return body;
    if (body.ok) show([], `valid: “${body.name}”, ${body.trials_planned} trials planned`, "ok");
    else show(body.errors, `${body.errors.length} problem${body.errors.length === 1 ? "" : "s"}`, "bad");
    return body;
  };
  const submit = async () => {
    clearTimeout(timer);
    generation += 1;
    const resp = await fetch("/api/v1/experiments", {
      method: "POST", body: ta.value, headers: authHeaders({ "Content-Type": contentType() }),
    });
    if (resp.status === 202) {
      const body = await resp.json();
      show([], `queued ${body.name} (${body.trials_planned} trials)`, "ok");
      window.location.href = `/ui/experiments/${body.id}`;
      return;
    }
    if (resp.status === 422) {
      const detail = (await resp.json()).detail;
      const located = await (await fetch("/ui/data/locate", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text: ta.value, detail }),
      })).json();
      show(located, `refused by the server (422): ${located.length} problem${located.length === 1 ? "" : "s"}`, "bad");
      return;
    }
    const msg = await apiError(resp);
    show([], msg, "bad");
    toast(msg, "error");
  };
  ta.addEventListener("input", () => { render(); clearTimeout(timer); timer = setTimeout(check, 900); });
  ta.addEventListener("scroll", () => { backdrop.scrollTop = ta.scrollTop; backdrop.scrollLeft = ta.scrollLeft; gutter.scrollTop = ta.scrollTop; });
  ta.addEventListener("keydown", (ev) => {
    if (ev.key === "Tab") {
      ev.preventDefault();
      const s = ta.selectionStart;
      ta.setRangeText("  ", s, ta.selectionEnd, "end");
      render();
    }
  });
  list.addEventListener("click", (ev) => {
    const li = ev.target.closest("li");
    if (!li) return;
    ev.preventDefault();
    const line = Number(li.dataset.line);
    const offset = ta.value.split("\n").slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
    ta.focus();
    ta.setSelectionRange(offset, offset);
    ta.scrollTop = Math.max(0, (line - 5) * parseFloat(getComputedStyle(ta).lineHeight));
  });
  document.getElementById("example").addEventListener("change", (ev) => {
    ta.value = examples[ev.target.value];
    show([], "not checked yet", "muted");
    check();
  });
  document.getElementById("check").addEventListener("click", check);
  document.getElementById("submit").addEventListener("click", submit);
  render();
  check();
}

// ---- clock on the live list ---------------------------------------------------------------------------
document.addEventListener("htmx:afterSwap", (ev) => {
  ev.target.querySelectorAll && ev.target.querySelectorAll(".clock").forEach((c) => {
    c.textContent = new Date().toLocaleTimeString();
  });
});

document.addEventListener("DOMContentLoaded", () => {
  initToken();
  initCharts();
  initTraceExplorer();
  initEditor();
});
