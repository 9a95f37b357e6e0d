// The review queue (#/review): inspections that a product's review policy sent for a person's verdict, oldest first,
// from GET /inspections/review-queue. Good / Defect send the verdict as feedback by inspection id, which takes the
// inspection out of the queue (a good frame joins the product's calibration set).

import { addPage, api, el, fmt, modelErrorText, offerConfirmation, productPath, reportError, showView, verdictText } from "./app.js";

const PAGE = 50;
const $ = (id) => document.getElementById(id);
const queue = { cursor: null, pending: 0, loading: null };

async function showReview() {
  showView("view-review");
  queue.cursor = null;
  $("review-list").replaceChildren();
  $("review-status").textContent = "Loading…";
  await loadPage();
}

/** The next page of the queue, appended (the queue is oldest first: a page stays put while new items arrive). */
async function loadPage() {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (queue.cursor) params.set("cursor", queue.cursor);
  const answer = await api(`inspections/review-queue?${params}`);
  queue.cursor = answer.next_cursor;
  queue.pending = answer.pending;
  const shown = new Set([...$("review-list").children].map((li) => li.dataset.inspection));
  $("review-list").append(...answer.items.filter((item) => !shown.has(item.inspection_id)).map(reviewItem));
  showCount();
}

function showCount(said = "") {
  const waiting = queue.pending === 1 ? "1 inspection waits for review." : `${queue.pending} inspections wait for review.`;
  $("review-status").textContent = `${said}${queue.pending ? waiting : ""}`.trim();
  $("review-empty").hidden = queue.pending > 0 || $("review-list").children.length > 0;
  $("review-more").hidden = !queue.cursor;
}

function itemName(item) {
  return item.part_id ? `part ${item.part_id}` : item.filename || `inspection ${item.inspection_id.slice(0, 8)}`;
}

function reviewItem(item) {
  const name = itemName(item);
  const time = new Date(item.time).toLocaleString();
  const status = el("p", { class: "feedback-status muted", role: "status" });
  const li = el("li", { class: "review-item panel", "data-inspection": item.inspection_id });
  const button = (label, text) =>
    el("button", { type: "button", class: "secondary", "data-label": label, text, onclick: () => send(label) });
  const buttons = [button("good", "Good"), button("defect", "Defect")];
  // one verdict at a time (a double click sends one); aria-disabled keeps the keyboard focus on the button
  const send = async (label, force = false) => {
    if (buttons[0].getAttribute("aria-disabled") === "true") return;
    for (const b of buttons) b.setAttribute("aria-disabled", "true");
    try {
      await sendVerdict(item, li, label, status, force, () => send(label, true));
    } finally {
      for (const b of buttons) b.removeAttribute("aria-disabled");
    }
  };
  const facts = [
    ["Product", el("a", { href: `#/products/${encodeURIComponent(item.product_id)}`, text: item.product_id })],
    ["Part", item.part_id || "—"],
    ["Score", `${fmt(item.score)} against threshold ${fmt(item.threshold)} (${item.threshold_source})`],
    ["Service verdict", `${item.verdict} (${verdictText(item.anomalous).toLowerCase()})`],
    ["Time", time],
    ["Station", [item.station, item.camera].filter(Boolean).join(", ") || "—"],
  ];
  li.append(
    item.thumbnail ? el("img", { src: item.thumbnail, alt: `Frame of ${name}` }) : el("span", { class: "no-thumb", text: "No thumbnail" }),
    el("dl", { class: "facts compact" }, ...facts.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", {}, value)])),
    el("div", { class: "feedback", role: "group", "aria-label": `Verdict on ${name}` }, ...buttons, status),
  );
  return li;
}

/** POST the verdict as feedback; on success the item leaves the list and the focus moves to the next one. */
async function sendVerdict(item, li, label, status, force, confirm) {
  const form = new FormData();
  form.append("label", label);
  form.append("inspection_id", item.inspection_id);
  if (force) form.append("force", "true");
  status.textContent = "Sending…";
  try {
    await api(productPath(item.product_id, "/feedback"), { method: "POST", form });
  } catch (error) {
    if (!offerConfirmation(status, error, confirm)) status.textContent = `Not labelled: ${modelErrorText(error)}`;
    return;
  }
  const next = li.nextElementSibling || li.previousElementSibling;
  li.remove();
  queue.pending = Math.max(0, queue.pending - 1);
  showCount(`Labelled ${itemName(item)} ${label}. `);
  (next?.querySelector("button") || $("review-title")).focus?.();
  if (!$("review-list").children.length && queue.cursor) await loadPage();
}

function wire() {
  $("review-title").setAttribute("tabindex", "-1"); // the focus lands here when the last item leaves
  $("review-refresh").addEventListener("click", () => showReview().catch(reportError));
  $("review-more").addEventListener("click", () => {
    queue.loading ||= loadPage()
      .catch(reportError)
      .finally(() => (queue.loading = null));
  });
}

wire();
addPage(/^#\/review$/, showReview);
