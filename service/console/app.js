// Operator console of the DCP-SFR inspection service. Plain JavaScript (an ES module), no dependency, no build.
// It talks only to the service that served it; routes added later (history, feedback, evaluation) are
// feature-detected once from /openapi.json, so the page works against older and newer services alike.

const KEY_STORAGE = "dcpsfr.apiKey"; // sessionStorage: the key lives as long as this tab
const POLL_MS = 3000; // recent inspections and evaluation, while a product page is open
const STATUS_POLL_MS = 10000;
const STATUS_POLL_NOT_READY_MS = 2000; // while the model loads, the status line follows it closely
const MAX_CANVAS_SIDE = 1200; // frames are drawn at most this large; the maps are scaled to match
const INSPECT_CHUNK = 8; // frames per POST /inspect (the service allows 16 by default)
const RECENT_LIMIT = 40;
const MAX_RESULT_CARDS = 12; // the page keeps the newest results drawn; the service's history keeps more
const MAX_SESSION_RESULTS = 200; // scores the threshold preview counts when the service keeps no history
const MAX_REFERENCES = 16;

const apiBase = new URL(".", location.href); // the page is served at the service's root (or a proxy's prefix)
const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_STORAGE),
  keyPrompt: null, // the pending key dialog, shared by concurrent requests that got 401/403
  routes: new Set(), // "METHOD /path/{}" from /openapi.json
  routesLoaded: null, // the promise of loading them; null until asked, and again after a failure (e.g. no key)
  productId: null, // the product-id pattern (a RegExp) from /openapi.json; null until loaded: the service checks
  shownProductId: null, // the product whose page is shown; null on the products list
  referenceFiles: [],
  product: null, // the product page's current summary
  sessionResults: [], // results inspected on this page (used when the service keeps no history)
  recent: [], // GET /products/{id}/inspections, newest first
  evaluation: null,
  selectedInspection: null,
  pollTimer: null,
  pollsStarted: 0, // product polls started, numbered; pollShown: the newest one whose answer is on the page
  pollShown: 0,
  proposedThreshold: Number.NaN, // the slider's (or typed) value, exact; the number field shows it rounded
  routed: false, // whether a route was shown: pages added later (addPage) route again when they are the address
};

// ---- HTTP --------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body; // the JSON error body, when there is one (e.g. a 409's `confirmation`)
  }

  /** The service asks to confirm the change: the same request again with this form field set to true applies it. */
  get confirmField() {
    return this.status === 409 ? this.body?.confirmation?.field ?? null : null;
  }
}

/** One API call; asks for a key on 401/403 and retries. `path` is relative ("products", not "/products"). */
async function api(path, { method = "GET", json, form } = {}) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    const headers = {};
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form;
    }
    const response = await fetch(new URL(path, apiBase), { method, headers, body });
    if (response.status === 401 || response.status === 403) {
      const why = response.status === 403 ? "The service refused this key." : "This service needs an API key.";
      await askForKey(why);
      continue;
    }
    if (!response.ok) throw await apiError(response);
    return response.status === 204 ? null : response.json();
  }
  throw new ApiError(401, "no accepted API key");
}

async function apiError(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`);
  }
  const detail = body?.detail;
  let message = JSON.stringify(body);
  if (typeof detail === "string") message = detail;
  else if (Array.isArray(detail)) message = detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return new ApiError(response.status, message, body);
}

function productPath(id, suffix = "") {
  return `products/${encodeURIComponent(id)}${suffix}`;
}

function hasRoute(method, path) {
  return state.routes.has(`${method} ${path}`);
}

const features = {
  get history() {
    return hasRoute("GET", "/products/{}/inspections");
  },
  get feedback() {
    return hasRoute("POST", "/products/{}/feedback");
  },
  get evaluation() {
    return hasRoute("GET", "/products/{}/evaluation");
  },
  get calibration() {
    return hasRoute("POST", "/products/{}/calibration");
  },
};

/** The routes from /openapi.json, loaded once; a failure (no key yet, service away) is retried on the next call. */
function loadRoutes() {
  state.routesLoaded ||= fetchRoutes().catch((error) => {
    state.routesLoaded = null;
    throw error;
  });
  return state.routesLoaded;
}

async function fetchRoutes() {
  const spec = await api("openapi.json");
  state.routes = new Set();
  for (const [path, operations] of Object.entries(spec.paths || {})) {
    for (const method of Object.keys(operations)) {
      state.routes.add(`${method.toUpperCase()} ${path.replace(/\{[^}]+\}/g, "{}")}`);
    }
  }
  state.productId = productIdPattern(spec);
}

/** The pattern of the path parameter `product_id` in the schema (the service's one pattern), or null. */
function productIdPattern(spec) {
  for (const operations of Object.values(spec.paths || {})) {
    for (const operation of Object.values(operations)) {
      const parameter = (operation.parameters || []).find((p) => p.in === "path" && p.name === "product_id");
      if (!parameter?.schema?.pattern) continue;
      try {
        return new RegExp(parameter.schema.pattern, "u"); // JSON Schema patterns are ECMA-262 (unicode)
      } catch {
        return null; // a pattern this browser cannot read: the service still checks every id
      }
    }
  }
  return null;
}

// ---- the API key ----------------------------------------------------------------------------------------

function askForKey(message) {
  if (!state.keyPrompt) {
    state.keyPrompt = new Promise((resolve, reject) => {
      const dialog = $("key-dialog");
      $("key-dialog-text").textContent = `${message} It is kept only in this browser tab.`;
      $("key-input").value = "";
      dialog.addEventListener(
        "close",
        () => {
          state.keyPrompt = null;
          const key = $("key-input").value.trim();
          if (dialog.returnValue === "use" && key) {
            setKey(key);
            resolve();
          } else {
            if (dialog.returnValue === "forget") setKey(null);
            reject(new ApiError(401, "an API key is needed: use the “API key” button to enter one"));
          }
        },
        { once: true },
      );
      dialog.returnValue = "";
      $("key-button").hidden = false; // the way back to this dialog when it is cancelled
      dialog.showModal();
    });
  }
  return state.keyPrompt;
}

function setKey(key) {
  state.key = key;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("key-button").hidden = false;
  $("key-button").textContent = key ? "API key: set" : "API key";
  refreshStatus(); // with a key, /readyz tells config, mode and device too
}

// ---- small helpers --------------------------------------------------------------------------------------

const numberFormat = new Intl.NumberFormat("en", { maximumSignificantDigits: 4 });
function fmt(value) {
  return typeof value === "number" && Number.isFinite(value) ? numberFormat.format(value) : "—";
}
function percent(fraction) {
  return typeof fraction === "number" && Number.isFinite(fraction) ? `${(100 * fraction).toFixed(1)} %` : "—";
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function fillFacts(dl, facts) {
  dl.replaceChildren(
    ...facts.filter(([, value]) => value !== undefined).flatMap(([term, value]) => [el("dt", { text: term }), el("dd", {}, value)]),
  );
}

function fillWarnings(ul, warnings) {
  const item = (w) => el("li", { class: w.startsWith("unusable") ? "unusable" : null, text: `Warning: ${w}` });
  ul.replaceChildren(...(warnings || []).map(item));
  ul.hidden = !ul.children.length;
}

function showNotice(message, kind = "error") {
  const notice = $("notice");
  notice.className = `notice ${kind}`;
  notice.replaceChildren(
    el("span", { text: message }),
    el("button", { type: "button", class: "secondary small", text: "Dismiss", onclick: () => (notice.hidden = true) }),
  );
  notice.hidden = false;
}

/** A 409 that asks first: says what would change in `status`, with "Apply anyway" (calls `confirm`, which sends the
 * request again with the field the service named) and "Cancel". Returns false for any other error. */
function offerConfirmation(status, error, confirm) {
  if (!(error instanceof ApiError) || !error.confirmField) return false;
  const change = error.body.confirmation;
  const what = Number.isFinite(change.proposed_threshold)
    ? `This would move the threshold from ${fmt(change.threshold)} to ${fmt(change.proposed_threshold)}, more than the service changes without asking.`
    : error.message;
  const apply = el("button", { type: "button", class: "secondary small", "data-confirm": "apply", text: "Apply anyway", onclick: () => confirm() });
  const cancel = el("button", {
    type: "button",
    class: "secondary small",
    text: "Cancel",
    onclick: () => (status.textContent = "Not applied: nothing changed."),
  });
  status.replaceChildren(el("span", { class: "confirm-text", text: `${what} ` }), apply, " ", cancel);
  apply.focus(); // the operator just asked for the change: the answer to the question is the next key press
  return true;
}

/** The product's warnings that say a threshold in force rejects nothing or every good part. */
function unusableWarnings(product) {
  return (product?.warnings || []).filter((w) => w.startsWith("unusable"));
}

function reportError(error) {
  console.error(error);
  showNotice(error instanceof ApiError ? `${error.message} (HTTP ${error.status})` : String(error.message || error));
}

function verdictText(anomalous) {
  return anomalous ? "Defect" : "Good";
}

function isImageFile(file) {
  return file.type.startsWith("image/") || /\.(png|jpe?g|bmp|tiff?)$/i.test(file.name);
}

/** Drag-and-drop onto `zone` delivers image files to `onFiles` (the file input next to it is the keyboard way). */
function makeDropZone(zone, onFiles) {
  const leave = () => zone.classList.remove("dragging");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", leave);
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    leave();
    onFiles([...event.dataTransfer.files].filter(isImageFile));
  });
}

// ---- service status --------------------------------------------------------------------------------------

async function refreshStatus() {
  const line = $("service-status");
  try {
    const headers = state.key ? { Authorization: `Bearer ${state.key}` } : {};
    const response = await fetch(new URL("readyz", apiBase), { headers });
    const body = await response.json().catch(() => ({}));
    const ready = response.ok && (body.status === "ready" || body.ready === true);
    const details = [body.config, body.mode, body.device].filter(Boolean).join(" · ");
    // without a key (when the service has keys) /readyz tells no reason
    const why = body.detail || "the model is not loaded (yet)";
    line.textContent = ready ? `Ready${details ? ` · ${details}` : ""}` : `Model not ready: ${why}`;
    line.className = `service-status ${ready ? "ok" : "waiting"}`;
    return ready;
  } catch {
    line.textContent = "The service does not answer";
    line.className = "service-status waiting";
    return false;
  }
}

/** The status line, refreshed for as long as the page is open: often while the model is not ready, then seldom. */
async function watchStatus() {
  const ready = await refreshStatus();
  setTimeout(watchStatus, ready ? STATUS_POLL_MS : STATUS_POLL_NOT_READY_MS);
}

/** The message of a failed call that needs the model: a 503 names the service's reason (loading, weights missing). */
function modelErrorText(error) {
  if (error.status !== 503) return error.message;
  refreshStatus();
  return `model not ready: ${error.message}`;
}

/** Whether the page still shows product `id` (null: the products list); answers for a page left since are dropped. */
function showing(id) {
  return state.shownProductId === id;
}

// ---- routing ---------------------------------------------------------------------------------------------

const pages = []; // [hash pattern, show()]: pages that other modules of the console add (reports.js, review.js)

/** A page of another module: `show()` shows it (showView first) when the address matches `pattern`. */
function addPage(pattern, show) {
  pages.push([pattern, show]);
  if (state.routed && pattern.test(location.hash)) route(false); // opened at its address, routed before it was added
}

function showView(id) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
}

async function route(moveFocus = true) {
  stopPolling();
  try {
    await loadRoutes(); // at once but the first time, or after it failed (a key dialog cancelled)
  } catch (error) {
    reportError(error);
    return;
  }
  const match = location.hash.match(/^#\/products\/([^/]+)$/);
  state.routed = true;
  const page = pages.find(([pattern]) => pattern.test(location.hash));
  if (page) state.shownProductId = null;
  // each view shows itself before its first await; the focus moves to it then, not once its data has arrived,
  // which would pull the focus from a control the operator has tabbed to in the meantime
  const loading = page ? page[1]() : match ? showProduct(decodeURIComponent(match[1])) : showProducts();
  if (moveFocus) $("main").focus();
  try {
    await loading;
  } catch (error) {
    reportError(error);
  }
}

// ---- the products page -------------------------------------------------------------------------------------

async function showProducts() {
  state.shownProductId = null;
  showView("view-products");
  document.title = "Products · Inspection console";
  const { products } = await api("products");
  const tbody = $("products-table").querySelector("tbody");
  tbody.replaceChildren(...products.map(productRow));
  $("products-table").hidden = !products.length;
  $("products-empty").hidden = products.length > 0;
  if (features.history) {
    await Promise.all(products.filter((p) => inspectionCount(p) === undefined).map(fillRecentCounts));
  }
}

function inspectionCount(product) {
  const count = product.n_inspections ?? product.inspections;
  return typeof count === "number" ? count : undefined;
}

function thresholdCell(product) {
  const badges = [];
  if (product.threshold_source === "manual") badges.push(el("span", { class: "badge neutral", text: "manual" }));
  if (product.provisional === true) {
    badges.push(el("span", { class: "badge warn", text: "provisional", title: "few normal frames behind it" }));
  }
  if (product.threshold_usable === false) {
    badges.push(el("span", { class: "badge danger", text: "unusable", title: unusableWarnings(product).join(" ") }));
  }
  const scale = product.score_scale ? el("span", { class: "muted", text: ` ${product.score_scale}` }) : null;
  return el("td", {}, fmt(product.threshold), scale, ...badges);
}

function productRow(product) {
  const count = inspectionCount(product);
  return el(
    "tr",
    { "data-product": product.product_id },
    el("th", { scope: "row" }, el("a", { href: `#/products/${encodeURIComponent(product.product_id)}`, text: product.product_id })),
    el("td", { text: product.mode ?? "—" }),
    el("td", { text: String(product.n_references ?? "—") }),
    el("td", { text: String(product.version ?? "—") }),
    thresholdCell(product),
    el("td", { text: fmt(product.pixel_threshold) }),
    el("td", { class: "inspections", text: count === undefined ? "—" : String(count) }),
    el("td", { class: "anomaly-rate", text: percent(product.anomaly_rate) }),
  );
}

/** Without counts in the summary, the service's bounded history of recent inspections gives them. */
async function fillRecentCounts(product) {
  const row = document.querySelector(`tr[data-product="${CSS.escape(product.product_id)}"]`);
  try {
    const { inspections } = await api(productPath(product.product_id, "/inspections?limit=1000"));
    const anomalous = inspections.filter((i) => i.anomalous).length;
    row.querySelector(".inspections").textContent = `${inspections.length} recent`;
    row.querySelector(".anomaly-rate").textContent = inspections.length ? percent(anomalous / inspections.length) : "—";
  } catch (error) {
    console.warn("recent inspections of", product.product_id, error);
  }
}

function addReferenceFiles(files) {
  state.referenceFiles.push(...files);
  renderReferenceFiles();
}

function renderReferenceFiles() {
  const files = state.referenceFiles;
  $("references-thumbs").replaceChildren(
    ...files.map((file, index) => {
      const url = URL.createObjectURL(file);
      return el(
        "li",
        { class: "thumb" },
        el("img", { src: url, alt: file.name, onload: () => URL.revokeObjectURL(url) }),
        el("span", { class: "thumb-name", text: file.name }),
        el("button", {
          type: "button",
          class: "secondary small",
          text: "Remove",
          "aria-label": `Remove ${file.name}`,
          onclick: () => {
            state.referenceFiles.splice(index, 1);
            renderReferenceFiles();
          },
        }),
      );
    }),
  );
  const n = files.length;
  const over = n > MAX_REFERENCES ? ` That is more than ${MAX_REFERENCES}: remove ${n - MAX_REFERENCES}.` : "";
  $("references-count").textContent = n ? `${n} photo${n === 1 ? "" : "s"} chosen (1–${MAX_REFERENCES}).${over}` : "No photos chosen.";
}

function formError(id, message, focusId) {
  const node = $(id);
  node.textContent = message;
  node.hidden = !message;
  if (message && focusId) $(focusId).focus();
}

async function createProduct(event) {
  event.preventDefault();
  const id = $("new-product-id").value.trim();
  const files = state.referenceFiles;
  if (!id || (state.productId && !state.productId.test(id))) {
    return formError("new-product-error", "Enter a product id: letters, digits, . _ - (up to 64).", "new-product-id");
  }
  if (files.length < 1 || files.length > MAX_REFERENCES) {
    return formError("new-product-error", `Choose 1 to ${MAX_REFERENCES} photos of good parts.`, "new-product-files");
  }
  formError("new-product-error", "");
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  const button = $("create-product");
  button.disabled = true;
  button.textContent = "Calibrating…";
  try {
    const product = await api(productPath(id, "/references"), { method: "POST", form });
    state.referenceFiles = [];
    renderReferenceFiles();
    $("new-product-id").value = "";
    $("new-product-files").value = "";
    if (!showing(null)) return showNotice(`Created ${id}.`, "info"); // the operator went to a product page meanwhile
    showCalibration(product);
    await showProducts();
  } catch (error) {
    formError("new-product-error", `Could not create ${id}: ${modelErrorText(error)}`);
  } finally {
    button.disabled = false;
    button.textContent = "Create product";
  }
}

function calibrationFacts(product) {
  const calibration = product.calibration || {};
  const normal = calibration.normal_scores || [];
  return [
    ["Version", String(product.version)],
    ["References (K)", String(product.n_references)],
    ["Memory bank", product.bank_size !== undefined ? `${product.bank_size} patch tokens` : undefined],
    ["Mode", product.mode],
    ["Threshold", thresholdFact(product)],
    ["Pixel threshold", fmt(product.pixel_threshold)],
    ["Calibration", product.threshold_method || calibration.method],
    ["Normal frames behind it", product.n_calibration !== undefined ? String(product.n_calibration) : normal.length ? String(normal.length) : undefined],
    ["Normal scores", normal.length ? normal.map(fmt).join(", ") : undefined],
    ["Acceptance rules", rulesSummary(product.rules)],
    ["Provisional", product.provisional === undefined ? undefined : product.provisional ? "yes: add good frames to firm it up" : "no"],
    ["Created", product.created_at ? new Date(product.created_at).toLocaleString() : undefined],
    ["Took", product.timings_ms ? `${fmt(Object.values(product.timings_ms).reduce((a, b) => a + b, 0))} ms` : undefined],
  ];
}

function thresholdFact(product) {
  const scale = product.score_scale ? ` (${product.score_scale} scale${Number.isFinite(product.score_max) ? ` up to ${fmt(product.score_max)}` : ""})` : "";
  const text = `${fmt(product.threshold)}${scale}${product.threshold_source === "manual" ? ", set by hand" : ""}`;
  if (product.threshold_usable !== false) return text;
  return el("span", {}, text, el("span", { class: "badge danger", text: "unusable", title: unusableWarnings(product).join(" ") }));
}

function showCalibration(product) {
  const panel = $("new-product-result");
  $("new-product-result-title").textContent = `Calibrated ${product.product_id}`;
  fillFacts(panel.querySelector("dl"), calibrationFacts(product));
  fillWarnings(panel.querySelector(".warnings"), product.warnings);
  panel.querySelector(".open-product").href = `#/products/${encodeURIComponent(product.product_id)}`;
  panel.querySelector(".open-product").textContent = `Open ${product.product_id}: inspect frames`;
  panel.hidden = false;
  panel.focus();
}

// ---- the product page ------------------------------------------------------------------------------------

async function showProduct(id) {
  state.shownProductId = id;
  showView("view-product");
  $("new-product-result").hidden = true; // its numbers go stale once the product page changes them
  if (state.product?.product_id !== id) {
    state.product = null; // until this product's answer: nothing on the page acts on the one shown before
    $("product-facts").replaceChildren();
    fillWarnings($("product-warnings"), []);
    $("threshold-preview").textContent = "";
    state.sessionResults = [];
    state.recent = [];
    state.evaluation = null;
    state.selectedInspection = null;
    $("inspect-results").replaceChildren();
    $("recent-strip").replaceChildren();
    $("recent-detail").hidden = true;
    $("inspect-status").textContent = "";
    $("calibration-status").textContent = "";
  }
  $("product-title").textContent = id;
  document.title = `${id} · Inspection console`;
  let product;
  try {
    product = await api(productPath(id));
  } catch (error) {
    if (!showing(id)) return;
    if (error.status === 404) {
      $("product-facts").replaceChildren();
      showNotice(`No product ${id}: it was deleted or never created.`);
      return;
    }
    throw error;
  }
  if (!showing(id)) return; // the operator has moved on: a later showProduct (or the list) owns the page
  setProduct(product);
  $("recent-section").hidden = !features.history;
  $("evaluation-section").hidden = !features.evaluation;
  $("calibration-frames").hidden = !features.calibration;
  await pollProduct();
  if (showing(id)) startPolling();
}

function setProduct(product) {
  state.product = product;
  fillFacts($("product-facts"), calibrationFacts(product));
  fillWarnings($("product-warnings"), product.warnings);
  fitThresholdSlider(true);
}

function startPolling() {
  stopPolling();
  if (!features.history && !features.evaluation) return;
  state.pollTimer = setInterval(() => {
    if (!document.hidden) pollProduct().catch((error) => console.warn("poll", error));
  }, POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
}

async function pollProduct() {
  const id = state.product?.product_id;
  if (!id) return;
  const poll = ++state.pollsStarted;
  // polls overlap (a label starts one while the timer's is in flight): an answer older than one shown is dropped
  const ifNewest = (show) => (answer) => {
    if (!showing(id) || poll < state.pollShown) return;
    state.pollShown = poll;
    show(answer);
  };
  const jobs = [];
  if (features.history) jobs.push(api(productPath(id, `/inspections?limit=${RECENT_LIMIT}`)).then(ifNewest(setRecent)));
  if (features.evaluation) jobs.push(api(productPath(id, "/evaluation")).then(ifNewest(setEvaluation)));
  await Promise.all(jobs);
}

// ---- inspecting frames -------------------------------------------------------------------------------------

async function inspectFiles(files) {
  const product = state.product;
  const status = $("inspect-status");
  $("inspect-files").value = ""; // `files` is a copy: choosing the same file again must fire a change
  if (!files.length) return;
  if (!product) {
    status.textContent = "The product is still loading: add the frames again once its summary shows.";
    return;
  }
  const count = { done: 0, failed: 0 };
  status.textContent = `Inspecting ${files.length} frame${files.length === 1 ? "" : "s"}…`;
  try {
    for (let start = 0; start < files.length; start += INSPECT_CHUNK) {
      const chunk = files.slice(start, start + INSPECT_CHUNK);
      const outcomes = await inspectChunk(product, chunk);
      if (!showing(product.product_id)) return; // the rest of the frames were for a page the operator has left
      outcomes.forEach((outcome, i) => (outcome.result ? addResult(chunk[i], outcome.result) : addFailure(chunk[i], outcome.error)));
      count.done += outcomes.filter((o) => o.result).length;
      count.failed += outcomes.filter((o) => o.error).length;
    }
    status.textContent = inspectedText(count, files.length);
  } catch (error) {
    if (!showing(product.product_id)) return;
    status.textContent = `Inspected ${count.done} of ${files.length}; then: ${modelErrorText(error)}`;
    reportError(error);
  }
  if (features.history) pollProduct().catch(() => {});
  fitThresholdSlider(false);
}

// the request's own fault, which may be one frame's (undecodable, unsupported, too large): each frame is sent again
// alone, so that one bad frame never costs the others their results
const PER_FRAME_STATUSES = new Set([400, 413, 415, 422]);

/** One POST /inspect for `chunk`: [{result} | {error}] per frame, in order. A 400/413/415/422 for the chunk sends each
 * frame on its own; any other failure (queue full, model not ready, product gone) stops the run. */
async function inspectChunk(product, chunk) {
  try {
    const answer = await inspectRequest(product, chunk);
    return answer.results.map((result) => ({ result }));
  } catch (error) {
    if (!(error instanceof ApiError) || !PER_FRAME_STATUSES.has(error.status)) throw error;
    if (chunk.length === 1) return [{ error }];
  }
  const outcomes = [];
  for (const file of chunk) {
    try {
      outcomes.push({ result: (await inspectRequest(product, [file])).results[0] });
    } catch (error) {
      if (!(error instanceof ApiError) || !PER_FRAME_STATUSES.has(error.status)) throw error;
      outcomes.push({ error });
    }
  }
  return outcomes;
}

function inspectRequest(product, files) {
  const form = new FormData();
  form.append("product_id", product.product_id);
  for (const file of files) form.append("images", file, file.name);
  return api("inspect", { method: "POST", form });
}

function inspectedText({ done, failed }, total) {
  const frames = (n) => `${n} frame${n === 1 ? "" : "s"}`;
  if (!failed) return `Inspected ${frames(done)}; the last one: ${verdictText(state.sessionResults[0]?.result?.anomalous)}.`;
  return `Inspected ${done} of ${frames(total)}; ${failed} could not be inspected (see ${failed === 1 ? "its card" : "their cards"}).`;
}

/** A frame the service refused: its own card, with the service's reason. */
function addFailure(file, error) {
  const list = $("inspect-results");
  list.prepend(
    el(
      "li",
      { class: "result-card failed" },
      el("div", { class: "result-info" }, el("p", { class: "failed-name", text: file.name }), el("p", { class: "error", text: `Not inspected: ${error.message} (HTTP ${error.status})` })),
    ),
  );
  while (list.children.length > MAX_RESULT_CARDS) list.lastElementChild.remove();
}

function addResult(file, result) {
  const entry = { file, result, label: null };
  state.sessionResults.unshift(entry);
  state.sessionResults.length = Math.min(state.sessionResults.length, MAX_SESSION_RESULTS);
  const list = $("inspect-results");
  list.prepend(resultCard(entry));
  while (list.children.length > MAX_RESULT_CARDS) list.lastElementChild.remove();
}

function resultCard(entry) {
  const { file, result } = entry;
  const name = result.filename || file.name;
  const canvas = el("canvas", {
    role: "img",
    "aria-label": `${name}: the frame with its heat map and the outline of the defect mask`,
  });
  const verdict = el("p", { class: `verdict ${result.anomalous ? "defect" : "good"}`, text: verdictText(result.anomalous) });
  const scale = result.score_scale ? ` (${result.score_scale})` : "";
  const card = el(
    "li",
    { class: `result-card ${result.anomalous ? "defect" : "good"}` },
    el("figure", {}, canvas, el("figcaption", { text: name })),
    el(
      "div",
      { class: "result-info" },
      verdict,
      scoreBar(result),
      el("p", { class: "score-text", text: `Score ${fmt(result.score)} ${result.score > result.threshold ? ">" : "≤"} threshold ${fmt(result.threshold)}${scale}` }),
      ruleText(result),
      el("p", { class: "mask-text muted" }),
      el("p", { class: "muted", text: `${result.width} × ${result.height} px · ${result.mode}` }),
      timingsDetails(result.timings_ms),
      feedbackControls(entry),
    ),
  );
  drawResult(canvas, card, file, result).catch((error) => {
    console.error(error);
    card.querySelector(".mask-text").textContent = `Could not draw this frame: ${error.message}`;
  });
  return card;
}

/** With acceptance rules the regions decide the verdict: say which rule fired and how many regions there are. */
function ruleText(result) {
  const parts = [];
  if (result.rule && result.rule !== "threshold") parts.push(`Rejected by rule ${(result.rules_fired || [result.rule]).join(", ")}.`);
  if (typeof result.n_regions === "number") {
    const largest = result.regions?.[0];
    const size = largest?.length_mm !== undefined ? ` (strongest: ${fmt(largest.length_mm)} × ${fmt(largest.width_mm)} mm)` : "";
    const noun = result.n_regions === 1 ? "region" : "regions";
    parts.push(`${result.n_regions} ${noun} above the pixel threshold${result.n_regions ? size : ""}.`);
  }
  return parts.length ? el("p", { class: "rule-text", text: parts.join(" ") }) : null;
}

function rulesSummary(rules) {
  if (!rules) return undefined;
  const zones = (name, polygons) => (polygons?.length ? `${polygons.length} ${name} zone${polygons.length === 1 ? "" : "s"}` : null);
  const limits = Object.entries(rules)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => `${name} ${fmt(value)}`);
  return [...limits, zones("reject", rules.reject_in), zones("ignored", rules.ignore_in)].filter(Boolean).join(", ") || "none";
}

function scoreBar(result) {
  const { score, threshold } = result;
  let low;
  let high;
  if (threshold > 0 && score >= 0) {
    low = 0;
    high = Math.max(2 * threshold, score * 1.1);
  } else {
    const span = Math.max(Math.abs(score - threshold), Math.abs(threshold), 1e-6);
    low = Math.min(score, threshold) - span / 2;
    high = Math.max(score, threshold) + span / 2;
  }
  const position = (value) => `${(100 * Math.min(1, Math.max(0, (value - low) / (high - low)))).toFixed(1)}%`;
  return el(
    "div",
    { class: "scorebar", "aria-hidden": "true" },
    el("div", { class: `scorebar-fill ${result.anomalous ? "defect" : "good"}`, style: { width: position(score) } }),
    el("div", { class: "scorebar-threshold", style: { left: position(threshold) } }),
  );
}

function timingsDetails(timings) {
  if (!timings) return null;
  const total = ["decode", "queue", "predict", "encode"].reduce((sum, k) => sum + (timings[k] || 0), 0);
  const list = el("dl", { class: "facts compact" });
  fillFacts(list, Object.entries(timings).map(([stage, ms]) => [stage, `${fmt(ms)} ms`]));
  return el("details", {}, el("summary", { text: `Timings: ${fmt(total)} ms in the service` }), list);
}

// Heat map colours: Google's Turbo colormap (polynomial approximation by A. Mikhailov, Apache-2.0).
const TURBO = Array.from({ length: 256 }, (_, i) => {
  const x = i / 255;
  const poly = (c) => c.reduceRight((acc, coefficient) => acc * x + coefficient, 0);
  const r = poly([0.13572138, 4.6153926, -42.66032258, 132.13108234, -152.94239396, 59.28637943]);
  const g = poly([0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604]);
  const b = poly([0.1066733, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973]);
  return [r, g, b].map((v) => Math.round(255 * Math.min(1, Math.max(0, v))));
});

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot decode this image"));
    image.src = src;
  });
}

/** The PNG drawn at (width, height) without smoothing, as RGBA pixels. */
function pixelsOf(image, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(image, 0, 0, width, height);
  return context.getImageData(0, 0, width, height);
}

// the service's map PNG is 0 at "normal" and 128 at the pixel threshold: clear at 0, opaque from 128 up, and a
// square-root ramp between so that half-way values already show
const ALPHA = Array.from({ length: 256 }, (_, v) => Math.round(255 * Math.min(1, Math.sqrt(v / 128))));

/** Heat layer: grey map value v -> Turbo colour, transparent at 0 and opaque from the mask threshold (128) up. */
function heatLayer(mapImage, width, height) {
  const grey = pixelsOf(mapImage, width, height).data;
  const layer = new ImageData(width, height);
  for (let i = 0; i < grey.length; i += 4) {
    const v = grey[i];
    const [r, g, b] = TURBO[v];
    layer.data.set([r, g, b, ALPHA[v]], i);
  }
  return layer;
}

/** Outline layer: mask pixels with a 4-neighbour outside the mask, drawn dark then bright so it shows anywhere. */
function outlineLayer(maskImage, width, height) {
  const mask = pixelsOf(maskImage, width, height).data;
  const inside = (x, y) => x >= 0 && y >= 0 && x < width && y < height && mask[4 * (y * width + x)] > 127;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  const thickness = Math.max(2, Math.round(Math.max(width, height) / 250));
  const edge = [];
  let area = 0;
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      if (!inside(x, y)) continue;
      area += 1;
      if (!inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1)) edge.push(x, y);
    }
  }
  for (const [color, size] of [["#000000", thickness + 2], ["#ffe000", thickness]]) {
    context.fillStyle = color;
    for (let i = 0; i < edge.length; i += 2) context.fillRect(edge[i] - size / 2, edge[i + 1] - size / 2, size, size);
  }
  return { canvas, fraction: area / (width * height) };
}

async function drawResult(canvas, card, file, result) {
  const scale = Math.min(1, MAX_CANVAS_SIDE / Math.max(result.width, result.height));
  const width = Math.max(1, Math.round(result.width * scale));
  const height = Math.max(1, Math.round(result.height * scale));
  canvas.width = width;
  canvas.height = height;
  const [frame, mapImage, maskImage] = await Promise.all([
    frameView(file, result, state.product),
    result.anomaly_map_png ? loadImage(`data:image/png;base64,${result.anomaly_map_png}`) : null,
    loadImage(`data:image/png;base64,${result.mask_png}`),
  ]);
  const heat = new OffscreenCanvas(width, height);
  if (mapImage) heat.getContext("2d").putImageData(heatLayer(mapImage, width, height), 0, 0);
  const outline = outlineLayer(maskImage, width, height);
  const maskText = outline.fraction > 0 ? `Mask: ${percent(outline.fraction)} of the frame` : "Mask: empty (no pixel above the pixel threshold)";
  card.querySelector(".mask-text").textContent = frame.note ? `${maskText}. ${frame.note}` : maskText;
  canvas.dataset.drawn = "true";
  canvas.dataset.source = frame.source;
  const paint = () => {
    const context = canvas.getContext("2d");
    context.globalAlpha = 1;
    context.fillStyle = frame.image ? "#000000" : "#444444"; // transparent parts: black, as the model reads them
    context.fillRect(0, 0, width, height);
    if (frame.image) context.drawImage(frame.image, 0, 0, width, height);
    // a good part keeps its real colours unless the operator asks for its heat map too
    if (result.anomalous || $("overlay-good").checked) {
      context.globalAlpha = Number($("overlay-opacity").value) / 100;
      context.drawImage(heat, 0, 0);
      context.globalAlpha = 1;
    }
    if ($("overlay-outline").checked) context.drawImage(outline.canvas, 0, 0);
  };
  canvas.repaint = paint;
  paint();
}

/** The frame as the model saw it, `{image, source, note}`: a high-bit grey PNG decoded here at the bits the service
 * reads it at; any other file by the browser when it gives the size the service reported (so EXIF orientation was
 * applied the same way); else the service's own thumbnail of the inspection (TIFF, or a size that differs); else
 * no image, with a note. */
async function frameView(file, result, product) {
  const fits = (w, h) => w === result.width && h === result.height;
  const grey = await decodeHighBitGreyPng(await file.arrayBuffer(), product?.bit_depth).catch(() => null);
  if (grey && fits(grey.width, grey.height)) return { image: await createImageBitmap(grey), source: "high-bit" };
  if (!grey) {
    const url = URL.createObjectURL(file);
    const image = await loadImage(url).catch(() => null);
    URL.revokeObjectURL(url);
    if (image && fits(image.naturalWidth, image.naturalHeight)) return { image, source: "browser" };
  }
  const thumbnail = await serviceThumbnail(product, result.inspection_id);
  if (thumbnail) {
    return { image: thumbnail, source: "thumbnail", note: "The browser cannot show this frame as the model saw it: this is the service's thumbnail." };
  }
  return { image: null, source: "none", note: "The browser cannot show this frame's format." };
}

/** The service's JPEG thumbnail of an inspection (from its recent inspections), loaded; null without one. */
async function serviceThumbnail(product, inspectionId) {
  if (!product || !inspectionId || !features.history) return null;
  let found = state.recent.find((i) => i.inspection_id === inspectionId);
  if (!found) {
    try {
      const { inspections } = await api(productPath(product.product_id, `/inspections?limit=${RECENT_LIMIT}`));
      found = inspections.find((i) => i.inspection_id === inspectionId);
    } catch {
      return null;
    }
  }
  return found?.thumbnail ? loadImage(found.thumbnail).catch(() => null) : null;
}

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** A 16-bit greyscale PNG (colour type 0, not interlaced) as the service reads it: each value × 255 / (2^bits − 1),
 * rounded, where bits is the file's sBIT, else the product's bit depth, else 16 (browsers show it at the full 16-bit
 * scale: darker than the model saw it when fewer bits hold data). ImageData, or null for any other file. */
async function decodeHighBitGreyPng(buffer, productBits) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(buffer);
  let width = 0;
  let height = 0;
  let significant = 0;
  const data = [];
  for (let at = 8; at + 8 <= bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      if (body[8] !== 16 || body[9] !== 0 || body[12] !== 0) return null; // bit depth, colour type, interlace
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
    } else if (type === "sBIT") significant = body[0];
    else if (type === "IDAT") data.push(body);
    else if (type === "IEND") break;
    at += 12 + length;
  }
  if (!width || !height || !data.length) return null;
  const inflated = new Blob(data).stream().pipeThrough(new DecompressionStream("deflate")); // zlib
  const raw = new Uint8Array(await new Response(inflated).arrayBuffer());
  const samples = unfiltered(raw, height, 2 * width, 2);
  const scale = 255 / (2 ** (significant || productBits || 16) - 1);
  const image = new ImageData(width, height);
  for (let i = 0; i < width * height; i += 1) {
    const grey = Math.min(255, Math.floor(((samples[2 * i] << 8) | samples[2 * i + 1]) * scale + 0.5));
    image.data.set([grey, grey, grey, 255], 4 * i);
  }
  return image;
}

/** PNG scanlines (a filter byte, then `stride` bytes each) with their filters undone; `bpp` bytes per pixel. */
function unfiltered(raw, height, stride, bpp) {
  if (raw.length < height * (stride + 1)) throw new Error("truncated PNG data");
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y += 1) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = out.subarray(y * stride, (y + 1) * stride);
    const above = y > 0 ? out.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
    for (let x = 0; x < stride; x += 1) {
      const a = x >= bpp ? row[x - bpp] : 0;
      const b = above[x];
      const c = x >= bpp ? above[x - bpp] : 0;
      let predicted = 0;
      if (filter === 1) predicted = a;
      else if (filter === 2) predicted = b;
      else if (filter === 3) predicted = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
        predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      row[x] = line[x] + predicted; // a Uint8Array wraps modulo 256, as PNG filters do
    }
  }
  return out;
}

function repaintResults() {
  $("overlay-opacity-value").textContent = `${$("overlay-opacity").value} %`;
  for (const canvas of document.querySelectorAll("#inspect-results canvas")) canvas.repaint?.();
}

/** POST /products/{id}/calibration: more normal frames behind the thresholds (shown when the route exists). */
async function addCalibrationFrames(files, force = false) {
  const product = state.product;
  if (!product || !files.length) return;
  const status = $("calibration-status");
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  if (force) form.append("force", "true");
  status.textContent = `Adding ${files.length} frame${files.length === 1 ? "" : "s"}…`;
  try {
    const updated = await api(productPath(product.product_id, "/calibration"), { method: "POST", form });
    if (!showing(product.product_id)) return;
    setProduct(updated);
    const behind = updated.n_calibration !== undefined ? `, ${updated.n_calibration} normal frames behind it` : "";
    status.textContent = `Added ${files.length} good frame${files.length === 1 ? "" : "s"}. Threshold ${fmt(updated.threshold)}${behind}.`;
  } catch (error) {
    if (!showing(product.product_id)) return;
    if (!offerConfirmation(status, error, () => addCalibrationFrames(files, true))) {
      status.textContent = `Not added: ${modelErrorText(error)}`;
    }
  } finally {
    $("calibration-files").value = "";
  }
}

// ---- feedback ----------------------------------------------------------------------------------------------

/** "This part is good" / "Confirmed defect": shown only when the service has POST /products/{id}/feedback. */
function feedbackControls(entry) {
  if (!features.feedback) return null;
  const status = el("p", { class: "feedback-status muted", role: "status" });
  const button = (label, text) => el("button", { type: "button", class: "secondary", "data-label": label, text, onclick: () => send(label) });
  const buttons = [button("good", "This part is good"), button("defect", "Confirmed defect")];
  // one label at a time (a double click sends one). aria-disabled rather than disabled: a disabled button would
  // drop the keyboard focus while the label is on its way
  const send = async (label, force = false) => {
    if (buttons[0].getAttribute("aria-disabled") === "true") return;
    for (const b of buttons) b.setAttribute("aria-disabled", "true");
    try {
      await sendFeedback(entry, label, status, force, () => send(label, true));
    } finally {
      for (const b of buttons) b.removeAttribute("aria-disabled");
    }
  };
  const name = entry.result.filename || entry.file?.name || "this frame";
  return el("div", { class: "feedback", role: "group", "aria-label": `Label ${name}` }, ...buttons, status);
}

/** POST the label; a 409 that asks first offers `confirm` (the same label with force=true). */
async function sendFeedback(entry, label, status, force, confirm) {
  const product = state.product;
  if (!product) return;
  const form = new FormData();
  form.append("label", label);
  if (force) form.append("force", "true");
  const inspectionId = entry.result.inspection_id;
  if (inspectionId) form.append("inspection_id", inspectionId);
  else if (entry.file) form.append("images", entry.file, entry.file.name);
  else return;
  status.textContent = "Sending…";
  try {
    const answer = await api(productPath(product.product_id, "/feedback"), { method: "POST", form });
    entry.label = label;
    if (!showing(product.product_id)) return; // the label is stored; the page now shows another product
    if (answer?.product) setProduct({ ...state.product, ...answer.product });
    if (answer?.evaluation) {
      state.pollShown = ++state.pollsStarted; // newer than any poll in flight: theirs would take the label back
      setEvaluation(answer.evaluation);
    }
    const threshold = answer?.product?.threshold;
    status.textContent = `Labelled ${label === "good" ? "good" : "defect"}.${threshold !== undefined ? ` Threshold now ${fmt(threshold)}.` : ""}`;
    if (features.history) pollProduct().catch(() => {});
  } catch (error) {
    if (!offerConfirmation(status, error, confirm)) status.textContent = `Not labelled: ${modelErrorText(error)}`;
  }
}

// ---- recent inspections (the service's history) ----------------------------------------------------------------

function setRecent(answer) {
  const inspections = answer?.inspections || [];
  const signature = inspections.map((i) => `${i.inspection_id}:${i.label ?? ""}`).join(",");
  if (signature === state.recentSignature) return;
  state.recentSignature = signature;
  state.recent = inspections;
  const focusedId = document.activeElement?.closest?.("#recent-strip li")?.dataset.inspection;
  $("recent-strip").replaceChildren(...inspections.map(recentItem));
  if (focusedId) $("recent-strip").querySelector(`li[data-inspection="${CSS.escape(focusedId)}"] button`)?.focus();
  if (state.selectedInspection) {
    const selected = inspections.find((i) => i.inspection_id === state.selectedInspection);
    if (selected) showRecentDetail(selected, false);
  }
  fitThresholdSlider(false);
}

function recentItem(inspection) {
  const time = inspection.time ? new Date(inspection.time).toLocaleTimeString() : "";
  const label = inspection.label ? `, labelled ${inspection.label}` : "";
  const name = inspection.filename || "frame";
  return el(
    "li",
    { "data-inspection": inspection.inspection_id, class: inspection.anomalous ? "defect" : "good" },
    el(
      "button",
      {
        type: "button",
        class: "strip-item",
        "aria-pressed": String(state.selectedInspection === inspection.inspection_id),
        "aria-label": `${name} at ${time}: ${verdictText(inspection.anomalous)}, score ${fmt(inspection.score)}${label}`,
        onclick: () => showRecentDetail(inspection, true),
      },
      inspection.thumbnail ? el("img", { src: inspection.thumbnail, alt: "" }) : el("span", { class: "no-thumb", text: name }),
      el("span", { class: `strip-verdict ${inspection.anomalous ? "defect" : "good"}`, text: verdictText(inspection.anomalous) }),
      el("span", { class: "strip-score", text: fmt(inspection.score) }),
      inspection.label ? el("span", { class: "badge neutral", text: inspection.label }) : null,
    ),
  );
}

function showRecentDetail(inspection, moveFocus) {
  state.selectedInspection = inspection.inspection_id;
  for (const button of document.querySelectorAll("#recent-strip button")) {
    button.setAttribute("aria-pressed", String(button.closest("li").dataset.inspection === inspection.inspection_id));
  }
  const detail = $("recent-detail");
  const entry = { file: null, result: inspection, label: inspection.label };
  const name = inspection.filename || "frame";
  detail.replaceChildren(
    el("h3", { text: `${name} · ${inspection.time ? new Date(inspection.time).toLocaleString() : ""}` }),
    el("p", {}, el("span", { class: `verdict inline ${inspection.anomalous ? "defect" : "good"}`, text: verdictText(inspection.anomalous) }),
      ` score ${fmt(inspection.score)} against threshold ${fmt(inspection.threshold)}${inspection.label ? `; labelled ${inspection.label}` : ""}`),
    feedbackControls(entry),
  );
  detail.hidden = false;
  if (moveFocus) detail.querySelector("button")?.focus();
}

// ---- labelled frames (evaluation) ------------------------------------------------------------------------------

function setEvaluation(evaluation) {
  state.evaluation = evaluation;
  if (!evaluation) return;
  fillFacts($("evaluation-facts"), [
    ["Labelled good", String(evaluation.n_good)],
    ["Labelled defect", String(evaluation.n_defect)],
    ["i-AUROC", evaluation.i_auroc === null ? "needs both labels" : fmt(evaluation.i_auroc)],
    ["F1 at the threshold", evaluation.f1 === null ? "—" : fmt(evaluation.f1)],
    ["False alarms", String(evaluation.false_alarms)],
    ["Misses", String(evaluation.misses)],
  ]);
  fitThresholdSlider(false);
}

// ---- the threshold slider ------------------------------------------------------------------------------------

/** Frames with a score the preview can re-decide: recent (unlabelled or labelled) and the calibration's normal ones. */
function previewFrames() {
  const recent = features.history ? state.recent : state.sessionResults.map((e) => ({ ...e.result, label: e.label }));
  const labelled = new Map();
  for (const frame of recent) if (frame.label) labelled.set(frame.inspection_id ?? frame, frame);
  for (const sample of state.evaluation?.samples || []) labelled.set(sample.inspection_id ?? sample, sample);
  const normal = state.product?.calibration?.normal_scores || [];
  return { recent, labelled: [...labelled.values()], normal };
}

/** The slider spans every score the preview knows; `reset` moves it back to the product's threshold. */
function fitThresholdSlider(reset) {
  const product = state.product;
  if (!product) return;
  const slider = $("threshold-slider");
  const { recent, labelled, normal } = previewFrames();
  const values = [product.threshold, product.calibration?.threshold, ...recent.map((f) => f.score), ...labelled.map((f) => f.score), ...normal]
    .filter((v) => typeof v === "number" && Number.isFinite(v));
  const nonNegative = product.score_scale !== "logit" && values.every((v) => v >= 0); // distances are >= 0
  const pad = Math.max((Math.max(...values) - Math.min(...values)) * 0.1, Math.abs(product.threshold) * 0.5, 1e-3);
  let high = Math.max(...values) + pad;
  // a threshold at the scale's end rejects nothing (the service refuses one): the slider stops there, unless the
  // threshold in force is already past it (a product stored before the service checked)
  if (Number.isFinite(product.score_max) && product.threshold < product.score_max) high = Math.min(high, product.score_max);
  let low = Math.min(...values) - pad;
  if (nonNegative) low = Math.max(0, low);
  const step = (high - low) / 1000;
  low = product.threshold - Math.floor((product.threshold - low) / step) * step; // the threshold lies on a step
  slider.min = String(low);
  slider.max = String(high);
  slider.step = String(step);
  if (reset) {
    state.proposedThreshold = product.threshold;
    $("threshold-number").value = String(Number(product.threshold.toPrecision(6)));
  }
  if (Number.isFinite(state.proposedThreshold)) slider.value = String(state.proposedThreshold);
  updateThresholdPreview();
}

function flips(scores, from, to) {
  let up = 0;
  let down = 0;
  for (const score of scores) {
    const before = score > from;
    const after = score > to;
    if (!before && after) up += 1;
    if (before && !after) down += 1;
  }
  return { up, down };
}

function errorsAt(labelled, threshold) {
  let falseAlarms = 0;
  let misses = 0;
  for (const frame of labelled) {
    const flagged = frame.score > threshold;
    if (frame.label === "good" && flagged) falseAlarms += 1;
    if (frame.label === "defect" && !flagged) misses += 1;
  }
  return { falseAlarms, misses };
}

function updateThresholdPreview() {
  const product = state.product;
  if (!product) return;
  const proposed = state.proposedThreshold;
  if (!Number.isFinite(proposed)) return;
  const current = product.threshold;
  const { recent, labelled, normal } = previewFrames();
  const same = proposed === current;
  const parts = [same ? `At the current threshold ${fmt(current)}:` : `At ${fmt(proposed)} instead of ${fmt(current)}:`];
  if (Number.isFinite(product.score_max) && proposed >= product.score_max) {
    parts.push(`no part can be rejected: ${fmt(product.score_max)} is the highest ${product.score_scale} score (the service refuses such a threshold).`);
  } else if (normal.length && proposed < Math.min(...normal)) {
    parts.push("every good part is rejected: it is below every normal score.");
  }
  if (!recent.length) {
    parts.push("no recent frames yet: inspect some to preview the effect of another threshold.");
  } else if (same) {
    const defects = recent.filter((f) => f.score > current).length;
    parts.push(`${defects} of ${recent.length} recent frames are defects. Move the slider to preview another threshold.`);
  } else {
    const { up, down } = flips(recent.map((f) => f.score), current, proposed);
    parts.push(`${up + down} of ${recent.length} recent frames would change verdict (${up} good → defect, ${down} defect → good).`);
  }
  if (labelled.length) {
    const nGood = labelled.filter((f) => f.label === "good").length;
    const before = errorsAt(labelled, current);
    const after = errorsAt(labelled, proposed);
    parts.push(
      `Labelled frames (${nGood} good, ${labelled.length - nGood} defect): false alarms ${before.falseAlarms} → ${after.falseAlarms}, misses ${before.misses} → ${after.misses}.`,
    );
  }
  if (normal.length) {
    const flagged = (t) => normal.filter((s) => s > t).length;
    const change = same ? `${flagged(current)}` : `${flagged(current)} → ${flagged(proposed)}`;
    parts.push(`Calibration's normal frames flagged: ${change} of ${normal.length}.`);
  }
  if (product.rules) parts.push("This product has acceptance rules, and with them its defect regions decide the verdict: the preview counts the score threshold alone.");
  $("threshold-preview").textContent = parts.join(" ");
}

async function saveThreshold(event) {
  event.preventDefault();
  const product = state.product;
  if (!product) return;
  const threshold = state.proposedThreshold;
  if (!Number.isFinite(threshold)) return formError("threshold-error", "Enter a number.", "threshold-number");
  formError("threshold-error", "");
  // PUT replaces both overrides: keep a hand-set pixel threshold as it is
  const pixel = product.pixel_threshold_source === "manual" ? product.pixel_threshold : null;
  try {
    const updated = await api(productPath(product.product_id, "/threshold"), {
      method: "PUT",
      json: { threshold, pixel_threshold: pixel },
    });
    if (!showing(product.product_id)) return;
    setProduct(updated);
    $("threshold-preview").textContent = `Saved: threshold ${fmt(updated.threshold)}. New frames are judged against it.`;
  } catch (error) {
    if (showing(product.product_id)) formError("threshold-error", `Not saved: ${error.message}`);
    else showNotice(`The threshold of ${product.product_id} was not saved: ${error.message}`);
  }
}

// ---- delete ------------------------------------------------------------------------------------------------

function confirmDelete() {
  const product = state.product;
  if (!product) return;
  const dialog = $("delete-dialog");
  $("delete-dialog-title").textContent = `Delete ${product.product_id}?`;
  $("delete-dialog-text").textContent =
    `Its ${product.n_references} reference photos and thresholds (version ${product.version}) are removed from the service. This cannot be undone.`;
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "delete") return;
      try {
        await api(productPath(product.product_id), { method: "DELETE" });
        state.product = null;
        $("new-product-result").hidden = true; // it may show this product's calibration, with a link to it
        showNotice(`Deleted ${product.product_id}.`, "info");
        location.hash = "#/";
      } catch (error) {
        reportError(error);
      }
    },
    { once: true },
  );
  dialog.showModal();
}

// ---- start -------------------------------------------------------------------------------------------------

function wire() {
  $("new-product-form").addEventListener("submit", createProduct);
  $("new-product-files").addEventListener("change", (event) => addReferenceFiles([...event.target.files]));
  makeDropZone($("references-dropzone"), addReferenceFiles);
  $("inspect-files").addEventListener("change", (event) => inspectFiles([...event.target.files]));
  makeDropZone($("frames-dropzone"), inspectFiles);
  $("calibration-files").addEventListener("change", (event) => addCalibrationFrames([...event.target.files]));
  makeDropZone($("calibration-frames"), addCalibrationFrames);
  $("overlay-opacity").addEventListener("input", repaintResults);
  $("overlay-outline").addEventListener("change", repaintResults);
  $("overlay-good").addEventListener("change", repaintResults);
  $("threshold-slider").addEventListener("input", (event) => {
    state.proposedThreshold = Number(event.target.value);
    $("threshold-number").value = String(Number(state.proposedThreshold.toPrecision(6)));
    updateThresholdPreview();
  });
  $("threshold-number").addEventListener("input", (event) => {
    const value = event.target.value === "" ? Number.NaN : Number(event.target.value);
    state.proposedThreshold = value;
    if (Number.isFinite(value)) {
      $("threshold-slider").value = String(value);
      updateThresholdPreview();
    }
  });
  $("threshold-form").addEventListener("submit", saveThreshold);
  $("delete-product").addEventListener("click", confirmDelete);
  $("key-button").addEventListener("click", () => askForKey("Enter the API key for this service.").then(() => route(false), () => {}));
  // a file dropped beside a drop zone must not make the browser navigate away from the console
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  window.addEventListener("hashchange", () => route(true));
}

async function start() {
  wire();
  if (state.key) setKey(state.key);
  // products, thresholds and history answer without the model: the page does not wait for /readyz
  watchStatus();
  await route(false);
}

start();

// for the pages in their own modules (review.js, reports.js)
export { addPage, api, el, fmt, modelErrorText, offerConfirmation, percent, productPath, reportError, showView, verdictText };
