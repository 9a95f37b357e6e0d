// The console's reports page (#/reports): first-pass yield and counts per hour, shift or product, and the Pareto of
// the rejects by rule or by grid cell, from GET /reports/yield and /reports/pareto. The charts are inline SVG built
// here: no library, no inline script or style (the page's CSP).

import { addPage, api, el, fmt, percent, reportError, showView } from "./app.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 960; // the charts' drawing size (viewBox units); CSS scales them to the page
const HEIGHT = 280;
const MARGIN = { top: 16, right: 56, bottom: 56, left: 56 };
const MAX_LABELS = 16; // x-axis labels at most: with more buckets, every nth is named (each bar has its tooltip)
const $ = (id) => document.getElementById(id);

let loads = 0; // loads started, numbered: only the newest one's answers fill the page

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

function text(x, y, content, anchor = "middle") {
  return svg("text", { x, y, "text-anchor": anchor }, content);
}

function title(content) {
  return svg("title", {}, content);
}

/** The query of the chosen range and product: the last N hours, from the start of the hour N - 1 hours ago (N
 * hourly buckets, as the service's own default). */
function rangeParams() {
  const hours = Number($("reports-range").value);
  const until = new Date();
  const since = new Date(until);
  since.setUTCMinutes(0, 0, 0);
  since.setUTCHours(since.getUTCHours() - (hours - 1));
  const params = new URLSearchParams({ since: since.toISOString(), until: until.toISOString() });
  if ($("reports-product").value) params.set("product_id", $("reports-product").value);
  return params;
}

function withParams(params, extra) {
  const all = new URLSearchParams(params);
  for (const [name, value] of Object.entries(extra)) all.set(name, value);
  return all.toString();
}

/** A bucket's short name under its bar: the local hour, the shift's day and name, or the product. */
function bucketLabel(bucket, by) {
  if (by === "hour") return bucket.key.slice(11, 16);
  if (by === "shift") return bucket.key.slice(5);
  return bucket.key.length > 14 ? `${bucket.key.slice(0, 13)}…` : bucket.key;
}

function plotArea() {
  return { x0: MARGIN.left, x1: WIDTH - MARGIN.right, y0: HEIGHT - MARGIN.bottom, y1: MARGIN.top };
}

/** Left (counts) and right (percent) scales, and the x axis. */
function axes(area, maxCount) {
  const y = (fraction) => area.y0 - fraction * (area.y0 - area.y1);
  return [
    svg("line", { class: "axis", x1: area.x0, y1: area.y0, x2: area.x1, y2: area.y0 }),
    svg("line", { class: "axis", x1: area.x0, y1: area.y0, x2: area.x0, y2: area.y1 }),
    svg("line", { class: "axis", x1: area.x1, y1: area.y0, x2: area.x1, y2: area.y1 }),
    text(area.x0 - 6, y(0) + 4, "0", "end"),
    text(area.x0 - 6, y(1) + 4, String(maxCount), "end"),
    text(area.x1 + 6, y(0) + 4, "0 %", "start"),
    text(area.x1 + 6, y(0.5) + 4, "50 %", "start"),
    text(area.x1 + 6, y(1) + 4, "100 %", "start"),
  ];
}

function xLabels(area, names, slot) {
  const every = Math.ceil(names.length / MAX_LABELS);
  return names
    .map((name, i) => (i % every === 0 ? text(area.x0 + (i + 0.5) * slot, area.y0 + 18, name) : null))
    .filter(Boolean);
}

/** Stacked OK/NG bars per bucket and the first-pass yield line through the buckets that had inspections. */
function yieldChart(report) {
  const area = plotArea();
  const buckets = report.buckets;
  const maxCount = Math.max(1, ...buckets.map((b) => b.inspected));
  const slot = (area.x1 - area.x0) / Math.max(1, buckets.length);
  const barWidth = Math.max(1, Math.min(60, slot * 0.7));
  const height = (count) => (count / maxCount) * (area.y0 - area.y1);
  const points = [];
  const bars = buckets.map((bucket, i) => {
    const x = area.x0 + i * slot + (slot - barWidth) / 2;
    const ok = height(bucket.ok);
    const ng = height(bucket.ng);
    const fpy = bucket.first_pass_yield;
    const tip = `${bucket.key}: ${bucket.inspected} inspected, ${bucket.ok} OK, ${bucket.ng} NG, first-pass yield ${percent(fpy)}`;
    if (fpy !== null) points.push([area.x0 + (i + 0.5) * slot, area.y0 - fpy * (area.y0 - area.y1), tip]);
    return svg(
      "g",
      { class: "bucket", "data-key": bucket.key },
      title(tip),
      svg("rect", { class: "bar-ok", x, y: area.y0 - ok, width: barWidth, height: ok }),
      svg("rect", { class: "bar-ng", x, y: area.y0 - ok - ng, width: barWidth, height: ng }),
    );
  });
  const names = buckets.map((b) => bucketLabel(b, report.by));
  const label = `First-pass yield ${percent(report.total.first_pass_yield)} over ${buckets.length} buckets per ${report.by}`;
  return barsAndLine(label, area, maxCount, bars, points, "fpy-point", names, slot);
}

/** Bars per cause, the most frequent first, and the cumulative share as a line. */
function paretoChart(pareto) {
  const area = plotArea();
  const entries = pareto.entries;
  const maxCount = Math.max(1, ...entries.map((e) => e.count));
  const slot = (area.x1 - area.x0) / Math.max(1, entries.length);
  const barWidth = Math.max(1, Math.min(80, slot * 0.6));
  const bars = entries.map((entry, i) => {
    const h = (entry.count / maxCount) * (area.y0 - area.y1);
    const tip = `${entry.key}: ${entry.count} (${fmt(entry.percent)} %, cumulative ${fmt(entry.cumulative_percent)} %)`;
    const x = area.x0 + i * slot + (slot - barWidth) / 2;
    return svg("rect", { class: "pareto-bar", "data-key": entry.key, x, y: area.y0 - h, width: barWidth, height: h }, title(tip));
  });
  const points = entries.map((entry, i) => [
    area.x0 + (i + 0.5) * slot,
    area.y0 - (entry.cumulative_percent / 100) * (area.y0 - area.y1),
  ]);
  const names = entries.map((e) => (e.key.length > 14 ? `${e.key.slice(0, 13)}…` : e.key));
  const label = `Pareto of ${pareto.ng} NG inspections by ${pareto.by}: ${entries.map((e) => `${e.key} ${e.count}`).join(", ") || "none"}`;
  return barsAndLine(label, area, maxCount, bars, points, "cumulative-point", names, slot);
}

/** One chart: the axes, the `bars`, a line through `points` ([x, y, tooltip?]) with a dot of `pointClass` at each,
 * and the x labels `names`, one per `slot`. */
function barsAndLine(label, area, maxCount, bars, points, pointClass, names, slot) {
  const line = svg("polyline", { class: "line", points: points.map(([x, y]) => `${x},${y}`).join(" ") });
  const dots = points.map(([x, y, tip]) =>
    svg("circle", { class: pointClass, cx: x, cy: y, r: 3.5 }, ...(tip === undefined ? [] : [title(tip)])),
  );
  return svg(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label },
    ...axes(area, maxCount),
    ...bars,
    line,
    ...dots,
    ...xLabels(area, names, slot),
  );
}

function countCells(bucket) {
  return [
    el("td", { text: String(bucket.inspected) }),
    el("td", { text: String(bucket.ok) }),
    el("td", { text: String(bucket.ng) }),
    el("td", { text: percent(bucket.first_pass_yield) }),
    el("td", { text: String(bucket.reviewed) }),
    el("td", { text: String(bucket.false_rejects) }),
    el("td", { text: String(bucket.escapes) }),
  ];
}

function fillYield(report) {
  const total = report.total;
  const facts = [
    ["First-pass yield", el("span", { id: "reports-fpy", "data-value": String(total.first_pass_yield), text: percent(total.first_pass_yield) })],
    ["Inspected", String(total.inspected)],
    ["OK / NG", `${total.ok} / ${total.ng}`],
    ["Reviewed", String(total.reviewed)],
    ["False rejects", `${total.false_rejects} (NG reviewed good)`],
    ["Escapes", `${total.escapes} (OK reviewed defect)`],
  ];
  $("reports-facts").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", {}, value)]));
  $("reports-yield-chart").replaceChildren(yieldChart(report));
  const table = $("reports-table");
  table.querySelector("tbody").replaceChildren(
    ...report.buckets.map((b) => el("tr", {}, el("th", { scope: "row", text: bucketLabelLong(b, report.by) }), ...countCells(b))),
  );
  table.querySelector("tfoot").replaceChildren(el("tr", {}, el("th", { scope: "row", text: "Total" }), ...countCells(total)));
}

function bucketLabelLong(bucket, by) {
  return by === "hour" ? `${bucket.key.slice(0, 10)} ${bucket.key.slice(11, 16)}` : bucket.key;
}

function fillPareto(pareto) {
  $("reports-pareto-chart").replaceChildren(paretoChart(pareto));
  const without = pareto.without_region ? `; ${pareto.without_region} without a listed region are in no cell` : "";
  $("reports-pareto-caption").textContent =
    `Bars: the ${pareto.ng} NG inspections per cause, the most frequent first${without}. Line: the cumulative share.`;
}

async function fillProducts() {
  const select = $("reports-product");
  const chosen = select.value;
  const { products } = await api("products");
  const options = products.map((p) => el("option", { value: p.product_id, text: p.product_id }));
  select.replaceChildren(el("option", { value: "", text: "All products" }), ...options);
  select.value = products.some((p) => p.product_id === chosen) ? chosen : "";
}

/** Both reports for the chosen range, product and buckets; an answer overtaken by a newer choice is dropped. */
async function load() {
  const n = (loads += 1);
  const params = rangeParams();
  const grid = Math.min(16, Math.max(1, Math.round(Number($("reports-grid").value)) || 4));
  const by = $("reports-by").value;
  const paretoBy = $("reports-pareto-by").value;
  $("reports-status").textContent = "Loading…";
  try {
    const [report, pareto] = await Promise.all([
      api(`reports/yield?${withParams(params, { by })}`),
      api(`reports/pareto?${withParams(params, { by: paretoBy, grid: String(grid) })}`),
    ]);
    if (n !== loads) return;
    fillYield(report);
    fillPareto(pareto);
    const since = new Date(report.since).toLocaleString();
    const until = new Date(report.until).toLocaleString();
    $("reports-status").textContent = `From ${since} to ${until}; hours and shifts in ${report.timezone}.`;
  } catch (error) {
    if (n !== loads) return;
    $("reports-status").textContent = "The reports could not be loaded.";
    reportError(error);
  }
}

async function showReports() {
  showView("view-reports");
  document.title = "Reports · Inspection console";
  await fillProducts();
  await load();
}

$("reports-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
for (const id of ["reports-range", "reports-product", "reports-by", "reports-pareto-by", "reports-grid"]) {
  $(id).addEventListener("change", () => load());
}
addPage(/^#\/reports$/, showReports);
