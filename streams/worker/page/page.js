// The worker's live page: polls ./live every few seconds and draws it with uPlot (vendored,
// MIT: page/uPlot.LICENSE). Each chart's <figure> carries data-points, the number of values
// it draws (the page's tests read it), and a table of the same values for screen readers.
"use strict";

const COLORS = ["#0969da", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#57606a"];
const charts = {};
const fmt = (v, d = 2) => (v == null || Number.isNaN(v) ? "–" : Number(v).toLocaleString("en", { maximumFractionDigits: d }));
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function table(headers, rows, caption) {
  if (!rows.length) return el("p", { class: "empty" }, "None yet.");
  const t = el("table");
  if (caption) t.append(el("caption", { class: "skip" }, caption));
  t.append(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))));
  const body = el("tbody");
  for (const r of rows) body.append(el("tr", {}, ...r.map((c) => el("td", typeof c === "number" ? { class: "n" } : {}, typeof c === "number" ? fmt(c, 4) : c))));
  t.append(body);
  return t;
}

function put(id, node) {
  const host = document.getElementById(id);
  host.replaceChildren(node);
}

// A figure (created under `parent` if missing) holding one uPlot chart.
function figure(id, caption, parent) {
  let f = document.getElementById(id);
  if (!f) {
    f = el("figure", { class: "chart", id, "data-points": "0" });
    f.append(el("figcaption", {}, caption), el("div", { class: "plot" }),
      el("details", {}, el("summary", {}, "Values as a table"), el("div", { class: "table" })));
    parent.append(f);
  }
  return f;
}

// Draw `data` ([xs, ...ys]) in the figure `id`; `opts` names the series; `marks` are x
// positions drawn as vertical lines (drift events).
function draw(id, names, data, { bars = false, xTime = true, marks = [], xLabel = "", dots = !xTime } = {}) {
  const f = document.getElementById(id);
  const points = data.slice(1).reduce((n, ys) => n + ys.filter((v) => v != null).length, 0);
  f.dataset.points = String(points);
  f.dataset.nonzero = String(data.slice(1).reduce((n, ys) => n + ys.filter((v) => v).length, 0));
  const plot = f.querySelector(".plot");
  const label = f.querySelector("figcaption").textContent;
  plot.setAttribute("role", "img");
  plot.setAttribute("aria-label", `${label}: ${points} values; the table below lists them.`);
  const rows = data[0].map((x, i) => [xTime ? clock(x) : fmt(x, 3), ...data.slice(1).map((ys) => ys[i])]);
  f.querySelector(".table").replaceChildren(table([xTime ? "time" : xLabel, ...names], rows.slice(-20), label));
  const key = id + "|" + names.join(",");
  if (charts[key]) {
    charts[key].marks = marks;
    charts[key].plot.setData(data);
    return;
  }
  plot.replaceChildren();
  const holder = { marks };
  const series = [{ label: xTime ? "time" : xLabel }, ...names.map((n, i) => ({
    label: n, stroke: COLORS[i % COLORS.length], width: 2,
    fill: bars ? COLORS[i % COLORS.length] + "66" : undefined,
    paths: bars ? uPlot.paths.bars({ size: [0.8 / names.length, 60] }) : undefined,
    points: { show: dots },
  }))];
  const opts = {
    width: Math.max(360, Math.min(720, plot.clientWidth || 560)), height: 220, series,
    scales: { x: { time: xTime } },
    axes: [{ label: xTime ? "" : xLabel }, { size: 70 }],
    hooks: { draw: [(u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#cf222e";
      ctx.setLineDash([6, 4]);
      for (const x of holder.marks) {
        const px = u.valToPos(x, "x", true);
        ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
      }
      ctx.restore();
    }] },
  };
  holder.plot = new uPlot(opts, data, plot);
  charts[key] = holder;
}

function render(s) {
  document.getElementById("updated").textContent =
    `Updated ${clock(s.now)}; sampled every ${s.every_s} s, ${s.times.length} samples.`;
  const stages = Object.keys(s.rates);
  draw("throughput", stages, [s.times, ...stages.map((k) => s.rates[k])]);
  draw("lag", ["messages behind"], [s.times, s.lag]);
  put("deadletters", table(["reason", "events"], Object.entries(s.deadletters).map(([r, n]) => [r, n])));
  put("suppressed", table(["reason", "rows"], Object.entries(s.suppressed).map(([r, n]) => [r, n])));
  put("tables", table(["table", "Delta version", "rows written by this worker"], s.tables.map((t) => [t.table, t.version, t.rows])));
  put("drift", table(["time", "model", "signal", "feature", "before", "after", "severity"],
    s.drift.slice(-20).reverse().map((d) => [clock(d.t), `${d.model} v${d.version}`, d.signal, d.feature || "", d.before, d.after, d.severity])));
  put("registry", table(["time", "model", "change", "alias", "version", "previous", "reason"],
    s.registry.slice(-20).reverse().map((r) => [clock(r.t), r.model, r.kind, r.alias || "", r.version, r.previous ?? "", r.reason || ""])));

  const host = document.getElementById("models");
  for (const [name, m] of Object.entries(s.models)) {
    let box = document.getElementById("model-" + name);
    if (!box) {
      box = el("div", { id: "model-" + name });
      box.append(el("h3", {}, `${name}`), el("p", { class: "about" }), el("div", { class: "grid" }));
      host.append(box);
    }
    const aliases = Object.entries(m.aliases).map(([a, v]) => `${a} v${v.version} (live loss ${fmt(v.live_loss, 4)})`);
    box.querySelector(".about").textContent = `online v${m.version} on ${m.stream}, ${fmt(m.seen, 0)} events learned; ` +
      (aliases.length ? `registry: ${aliases.join(", ")}` : "no registered champion yet");
    const grid = box.querySelector(".grid");
    const hist = m.history;
    const metrics = ["error_rate", "log_loss", "brier"].filter((k) => hist.some((h) => h[k] != null));
    figure("metrics-" + name, `${name}: rolling metrics per checkpoint; drift events dashed`, grid);
    draw("metrics-" + name, metrics, [hist.map((h) => h.t), ...metrics.map((k) => hist.map((h) => h[k] ?? null))],
      { marks: s.drift.filter((d) => d.model === name).map((d) => d.t), dots: true });
    const bins = m.calibration.map((b, i) => [(i + 0.5) / m.calibration.length, ...b]);
    const filled = bins.filter((b) => b[1] > 0);
    figure("calibration-" + name, `${name}: reliability (observed positive rate against mean predicted probability, per bin)`, grid);
    draw("calibration-" + name, ["mean predicted", "observed rate"],
      [filled.map((b) => b[0]), filled.map((b) => b[2]), filled.map((b) => b[3])], { xTime: false, xLabel: "probability bin" });
    figure("distribution-" + name, `${name}: distribution of predicted probabilities (last window)`, grid);
    draw("distribution-" + name, ["predictions"], [bins.map((b) => b[0]), bins.map((b) => b[1])],
      { bars: true, xTime: false, xLabel: "probability bin" });
  }

  const kinds = Object.keys(s.budget.spent);
  const tenths = kinds.length ? s.budget.spent[kinds[0]].map((_, i) => (i + 0.5) / s.budget.spent[kinds[0]].length) : [];
  draw("budget", kinds, [tenths, ...kinds.map((k) => s.budget.spent[k])], { bars: true, xTime: false, xLabel: "share of allowance spent" });

  const c = s.cost;
  const stageRows = Object.keys(c.per_million_events).map((st) => [st, c.cpu_s_per_1000[st] ?? null, c.per_million_events[st]]);
  const wrap = el("div");
  wrap.append(table(["stage", "CPU s per 1,000 rows (predictions)", "$ per million"], stageRows),
    el("p", {}, `At $${fmt(c.price_per_core_hour, 4)} per core-hour: $${fmt(c.per_active_user, 8)} per active user ` +
      `(${fmt(c.active_users, 0)} users charged in the current budget window).`));
  put("cost", wrap);
}

async function tick() {
  try {
    const r = await fetch("live", { cache: "no-store" });
    if (r.ok) render(await r.json());
    else document.getElementById("updated").textContent = `The worker answered ${r.status}.`;
  } catch (e) {
    document.getElementById("updated").textContent = `The worker does not answer (${e}); retrying.`;
  }
}

tick();
setInterval(tick, 3000);
