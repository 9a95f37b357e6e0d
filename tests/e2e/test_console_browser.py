"""The operator console in a real browser: Debian's headless chromium driven by Playwright against a real
`python -m service` process (tiny config, API keys on), on the real bottle images.

The main flow runs on the keyboard alone (Tab to each control, Enter/Space/arrows to use it): enter the key,
create a product, inspect a broken bottle, move and save the threshold, label a frame (when the service has
the feedback route), delete the product. Each page state is checked for accessibility (every control named in
chromium's own accessibility tree; text contrast >= 4.5:1 from computed styles) and saved as a screenshot
under the test's tmp dir.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import struct
import zlib
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers.images import encoded, image_bytes
from tests.helpers.processes import running_service

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
API_KEY = "console-test-key"
TIMEOUT_MS = 120_000  # generous: the machine may be busy; nothing here is a timing assert
# roles of controls that must have an accessible name
CONTROL_ROLES = {"button", "textbox", "slider", "checkbox", "spinbutton", "combobox", "link", "radio", "switch", "img"}
MIN_CONTRAST = 4.5

# every element with its own visible text: (text colour, effective background) -> contrast ratio (WCAG 2.x)
CONTRAST_JS = """
(minRatio) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
  });
  const background = (node) => {
    const layers = [];
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0) layers.push(c);
      if (c && c.a >= 1) break;
      if (n.tagName === 'DIALOG') break;
    }
    return layers.reduceRight((acc, layer) => over(layer, acc), {r: 255, g: 255, b: 255, a: 1});
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const failures = [];
  let checked = 0;
  for (const node of document.querySelectorAll('body *')) {
    const own = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
    const isField = node.matches('input:not([type=range]):not([type=checkbox]):not([type=file])');
    if (!own && !isField) continue;
    if (!node.checkVisibility({visibilityProperty: true, opacityProperty: true})) continue;
    const r = node.getBoundingClientRect();
    if (r.width < 2 || r.height < 2) continue;  // visually hidden text (sr-only)
    const style = getComputedStyle(node);
    const fg = parse(style.color);
    const bg = background(node);
    const text = over(fg, bg);
    const [hi, lo] = [lum(text), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    checked += 1;
    const what = `${node.tagName.toLowerCase()}.${node.className} "${(node.textContent || node.value).trim()}"`;
    if (ratio < minRatio) failures.push(`${what.slice(0, 80)}: ${ratio.toFixed(2)}`);
  }
  return {checked, failures};
}
"""


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (Debian package `chromium`; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    return CHROMIUM


class Console:
    """The page plus the checks and screenshots every state of it gets."""

    def __init__(self, page, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.cdp = page.context.new_cdp_session(page)
        self.n_shots = 0
        self.messages: list[str] = []  # the page's console, for the failure message
        page.on("console", lambda message: self.messages.append(f"{message.type}: {message.text}"))
        # Playwright turns the browser's file-chooser interception on when a page gets its first listener, without
        # waiting for the browser: a Space pressed right after expect_file_chooser() could open an unintercepted
        # chooser that never reports. A listener held for the whole page keeps the interception on.
        page.on("filechooser", lambda chooser: None)

    def tab_to(self, selector: str, max_tabs: int = 150) -> None:
        """Press Tab until `selector` has the focus: proves it is reachable by keyboard alone."""
        for _ in range(max_tabs):
            self.page.keyboard.press("Tab")
            if self.page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector):
                return
        pytest.fail(f"{selector} was not reached with {max_tabs} Tab presses")

    def check(self, name: str, full_page: bool = True) -> None:
        """Screenshot, every control named, text contrast."""
        self.n_shots += 1
        self.page.screenshot(path=self.shots / f"{self.n_shots:02d}-{name}.png", full_page=full_page)
        unnamed = []
        for node in self.cdp.send("Accessibility.getFullAXTree")["nodes"]:
            role = node.get("role", {}).get("value")
            if node.get("ignored") or role not in CONTROL_ROLES:
                continue
            if not str(node.get("name", {}).get("value", "")).strip():
                unnamed.append(f"{role} (backend node {node.get('backendDOMNodeId')})")
        assert not unnamed, f"{name}: controls without an accessible name: {unnamed}"
        contrast = self.page.evaluate(CONTRAST_JS, MIN_CONTRAST)
        assert contrast["checked"] > 5, f"{name}: the contrast check saw almost no text"
        assert not contrast["failures"], f"{name}: text below {MIN_CONTRAST}:1 contrast: {contrast['failures']}"

    def choose_files(self, selector: str, paths: list[Path]) -> None:
        """Tab to a file input and open its chooser with the keyboard (Space), then pick `paths`."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        self.tab_to(selector)
        try:
            with self.page.expect_file_chooser() as chooser:
                self.page.keyboard.press("Space")
        except PlaywrightTimeout:
            focused = self.page.evaluate("document.activeElement && document.activeElement.id")
            pytest.fail(f"Space on {selector} opened no file chooser (focus: {focused}): {self.messages[-20:]}")
        chooser.value.set_files([str(p) for p in paths])

    def canvas_pixels(self, selector: str, opacity: int, outline: bool) -> np.ndarray:
        """The result canvas repainted with the given overlay settings (the heat map on good parts too), as
        (H, W, 4) uint8."""
        data = self.page.evaluate(
            """([selector, opacity, outline]) => {
                document.getElementById('overlay-opacity').value = String(opacity);
                document.getElementById('overlay-outline').checked = outline;
                document.getElementById('overlay-good').checked = true;
                document.getElementById('overlay-opacity').dispatchEvent(new Event('input'));
                const canvas = document.querySelector(selector);
                return canvas.toDataURL('image/png');
            }""",
            [selector, opacity, outline],
        )
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGBA"))


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def drop_file(page, selector: str, path: Path) -> None:
    """A real DataTransfer with the file, dropped on `selector` (what a drag from the desktop delivers)."""
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'image/png'}));
            return transfer;
        }""",
        [path.name, payload],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


class NotFound:
    """Every 404 the page meets, as answers and as messages in the browser's console; and the answers for the
    page's icon (headless chromium never asks for /favicon.ico, so an icon the page does not link goes unseen)."""

    def __init__(self, page) -> None:
        self.misses: list[str] = []
        self.icons: list[int] = []
        page.on("response", self.answered)
        page.on("console", lambda message: self.misses.append(message.text) if "404" in message.text else None)

    def answered(self, response) -> None:
        if response.status == 404:
            self.misses.append(f"404 {response.url}")
        if response.url.endswith("/ui/favicon.svg"):
            self.icons.append(response.status)

    def check(self) -> None:
        assert not self.misses, f"the page met 404s: {self.misses}"
        assert self.icons and set(self.icons) == {200}, f"the page's icon: {self.icons}"  # (fetched per view)


def test_console_main_flow_in_chromium(tmp_path, bottle_dir):
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # expect's own default is 5 s, not the page's

    shots = tmp_path / "screenshots"
    shots.mkdir()
    good = sorted((bottle_dir / "train" / "good").glob("*.png"))
    broken = bottle_dir / "test" / "broken_large" / "000.png"
    env = {"DCPSFR_DATA_DIR": str(tmp_path / "data"), "DCPSFR_API_KEYS": API_KEY}
    with running_service(tmp_path, **env) as service, sync_playwright() as playwright:
        client = service.client
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        spec_paths = client.get("/openapi.json").json()["paths"]
        has_feedback = "/products/{product_id}/feedback" in spec_paths
        has_history = "/products/{product_id}/inspections" in spec_paths
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            not_found = NotFound(page)
            console = Console(page, shots)

            # the page itself is public; the API asks for the key, which the page asks for once
            page.goto(str(client.base_url))
            expect(page.locator("#key-dialog")).to_be_visible()
            console.check("api-key", full_page=False)
            # cancelled at first: the key button opens the dialog again, and the key loads what was missed (the
            # routes, which show the history and feedback below)
            page.keyboard.press("Escape")
            expect(page.locator("#notice")).to_contain_text("an API key is needed")
            console.tab_to("#key-button")
            page.keyboard.press("Enter")
            expect(page.locator("#key-dialog")).to_be_visible()
            page.keyboard.type("a-wrong-key")  # the dialog focuses its key field
            page.keyboard.press("Enter")
            expect(page.locator("#key-dialog-text")).to_contain_text("refused this key")
            page.keyboard.type(API_KEY)
            page.keyboard.press("Enter")
            expect(page.locator("#products-empty")).to_be_visible()
            assert page.evaluate("sessionStorage.getItem('dcpsfr.apiKey')") == API_KEY

            # new product, on the keyboard: id, the file chooser, create
            console.tab_to("#new-product-id")
            page.keyboard.type("-bottle")  # not an id: the service's pattern, read from /openapi.json, says so at once
            page.keyboard.press("Enter")
            expect(page.locator("#new-product-error")).to_contain_text("Enter a product id")
            assert page.evaluate("document.activeElement.id") == "new-product-id"
            page.keyboard.press("Control+A")
            page.keyboard.type("bottle")
            console.choose_files("#new-product-files", good)
            expect(page.locator("#references-thumbs img")).to_have_count(len(good))
            console.check("new-product-photos")
            console.tab_to("#create-product")
            with page.expect_response(lambda r: r.url.endswith("/products/bottle/references")) as created:
                page.keyboard.press("Enter")
            product = created.value.json()
            expect(page.locator("#new-product-result")).to_be_visible()
            result_text = page.locator("#new-product-result").inner_text()
            assert "Calibrated bottle" in result_text
            assert f"References (K)\n{len(good)}" in result_text or f"References (K)\t{len(good)}" in result_text
            row = page.locator('tr[data-product="bottle"]')
            expect(row).to_contain_text(product["mode"])
            console.check("products")
            # random weights put the broken frame's map anywhere; a hand-set pixel threshold puts ~2 % of it in the
            # mask, so the overlay check below always has a heat map and an outline to find
            pixel_threshold = pixel_threshold_for_a_mask(client, broken)
            threshold = {"threshold": product["threshold"], "pixel_threshold": pixel_threshold}
            assert client.put("/products/bottle/threshold", json=threshold).status_code == 200

            # the product page, from the result's link; its data arrives after the operator has started tabbing
            console.tab_to("#new-product-result a.open-product")
            first_data = "/inspections?" if has_history else "/products/bottle"
            hold_next_answer(page, first_data)
            page.keyboard.press("Enter")
            expect(page.locator("#product-title")).to_have_text("bottle")
            page.wait_for_function("() => window.heldAnswer === true")
            console.tab_to("#inspect-files")
            release_held_answer(page)
            assert page.evaluate("document.activeElement.id") == "inspect-files", "the page took the focus back"
            recent = expect(page.locator("#recent-section"))
            recent.to_be_visible() if has_history else recent.to_be_hidden()

            # inspect a broken bottle: verdict, score bar, heat map and mask outline drawn on the frame
            with page.expect_response(lambda r: r.url.endswith("/inspect")) as answered:
                console.choose_files("#inspect-files", [broken])
            inspected = answered.value.json()["results"][0]
            card = page.locator("#inspect-results li").first
            expect(card.locator("canvas[data-drawn]")).to_have_count(1)
            verdict = "Defect" if inspected["anomalous"] else "Good"
            expect(card.locator(".verdict")).to_have_text(verdict)
            expect(card.locator(".scorebar-threshold")).to_have_count(1)
            expect(card.locator(".score-text")).to_contain_text("Score")
            assert_overlay_drawn(console, inspected)
            page.evaluate("document.getElementById('overlay-opacity').value = '60'")
            page.evaluate("document.getElementById('overlay-opacity').dispatchEvent(new Event('input'))")
            if has_feedback:
                expect(card.locator(".feedback button")).to_have_count(2)
            else:
                expect(card.locator(".feedback")).to_have_count(0)
            console.check("inspect")

            # the threshold: Home moves the slider below every known score; the preview counts the flip
            console.tab_to("#threshold-slider")
            page.keyboard.press("Home")
            preview = page.locator("#threshold-preview")
            recent = recent_scores(client, has_history, [inspected["score"]])
            flips = sum(score <= inspected["threshold"] for score in recent)
            expect(preview).to_contain_text(
                f"{flips} of {len(recent)} recent frames would change verdict ({flips} good → defect, 0 defect → good)"
            )
            lowest = float(page.locator("#threshold-number").input_value())
            assert lowest < min(recent)
            console.check("threshold-preview")
            console.tab_to("#threshold-save")
            with page.expect_response(lambda r: r.url.endswith("/products/bottle/threshold")) as saved:
                page.keyboard.press("Enter")
            assert saved.value.ok
            expect(preview).to_contain_text("Saved")
            stored = client.get("/products/bottle").json()
            assert stored["threshold_source"] == "manual"
            assert stored["threshold"] == pytest.approx(lowest, rel=1e-4)
            assert stored["pixel_threshold"] == pytest.approx(pixel_threshold)  # a hand-set one is kept

            # the same frame, dropped this time: now above the lowered threshold, so a defect
            with page.expect_response(lambda r: r.url.endswith("/inspect")) as answered:
                drop_file(page, "#frames-dropzone", broken)
            again = answered.value.json()["results"][0]
            assert again["anomalous"] and again["threshold"] == pytest.approx(lowest, rel=1e-4)
            expect(page.locator("#inspect-results li")).to_have_count(2)
            expect(page.locator("#inspect-results li").first.locator(".verdict")).to_have_text("Defect")

            if has_feedback:  # the operator confirms the defect on the newest result, pressing Enter twice
                labels_sent: list[str] = []
                page.on("request", lambda r: labels_sent.append(r.url) if r.url.endswith("/feedback") else None)
                console.tab_to("#inspect-results li:first-child .feedback button[data-label=defect]")
                hold_next_answer(page, "/products/bottle/feedback")
                with page.expect_response(lambda r: r.url.endswith("/products/bottle/feedback")) as labelled:
                    page.keyboard.press("Enter")
                assert labelled.value.ok, labelled.value.text()
                page.wait_for_function("() => window.heldAnswer === true")
                buttons = page.locator("#inspect-results li:first-child .feedback button")
                expect(buttons.first).to_have_attribute("aria-disabled", "true")
                expect(buttons.last).to_have_attribute("aria-disabled", "true")
                page.keyboard.press("Enter")  # the focus stays on the button: this would be a second label
                release_held_answer(page)
                expect(page.locator("#inspect-results li").first.locator(".feedback-status")).to_contain_text(
                    "Labelled defect"
                )
                assert len(labels_sent) == 1, labels_sent
                expect(buttons.first).not_to_have_attribute("aria-disabled", "true")
                assert client.get("/products/bottle/evaluation").json()["n_defect"] >= 1
            if "/products/{product_id}/calibration" in spec_paths:  # more good frames behind the thresholds
                before = client.get("/products/bottle").json()["n_calibration"]
                extra = sorted((bottle_dir / "test" / "good").glob("*.png"))[:2]
                with page.expect_response(lambda r: r.url.endswith("/products/bottle/calibration")) as calibrated:
                    console.choose_files("#calibration-files", extra)
                assert calibrated.value.ok, calibrated.value.text()
                expect(page.locator("#calibration-status")).to_contain_text("Added 2 good frames")
                assert client.get("/products/bottle").json()["n_calibration"] == before + 2
            if has_history:  # the inspections come back from the service's history, with thumbnails
                strip = page.locator("#recent-strip li")
                expect(strip).to_have_count(3)  # the probe and the two above
                expect(strip.locator("img").first).to_be_visible()
                console.tab_to("#recent-strip li:last-child button")  # the oldest: the probe, sent by another client
                page.keyboard.press("Enter")
                expect(page.locator("#recent-detail")).to_be_visible()
                if has_feedback:  # the focus is on the detail's first button: "This part is good"
                    hold_next_answer(page, "/inspections?")  # a poll that reads the history before the label
                    page.wait_for_function("() => window.heldAnswer === true")
                    with page.expect_response(lambda r: r.url.endswith("/products/bottle/feedback")) as labelled:
                        page.keyboard.press("Enter")
                    assert labelled.value.ok, labelled.value.text()
                    expect(strip.last.locator(".badge")).to_have_text("good")  # from the poll the label starts
                    release_held_answer(page)  # the older answer arrives last
                    taken_back = strip.last.locator(".badge").count() == 0
                    assert not taken_back, "an older poll, answered last, took the label back"
            console.check("product")

            # back to the list: inspections and anomaly rate from the history (or "—" without it)
            console.tab_to('#view-product a[href="#/"]')
            page.keyboard.press("Enter")
            row = page.locator('tr[data-product="bottle"]')
            if has_history:
                history = client.get("/products/bottle/inspections").json()["inspections"]
                rate = 100 * sum(i["anomalous"] for i in history) / len(history)
                expect(row.locator(".inspections")).to_have_text(f"{len(history)} recent")
                expect(row.locator(".anomaly-rate")).to_have_text(f"{rate:.1f} %")
            else:
                expect(row.locator(".inspections")).to_have_text("—")
            console.check("products-after")
            console.tab_to('tr[data-product="bottle"] a')
            page.keyboard.press("Enter")
            expect(page.locator("#product-title")).to_have_text("bottle")

            # delete, confirmed in the dialog (Cancel has the focus first: the safe default)
            console.tab_to("#delete-product")
            page.keyboard.press("Enter")
            expect(page.locator("#delete-dialog")).to_be_visible()
            assert page.evaluate("document.activeElement.value") == "cancel"
            console.check("delete-dialog", full_page=False)  # a modal's backdrop covers the viewport only
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "delete-confirm"
            page.keyboard.press("Enter")
            expect(page.locator("#notice")).to_contain_text("Deleted bottle")
            expect(page.locator("#products-empty")).to_be_visible()
            expect(page.locator("#new-product-result")).to_be_hidden()  # no link left to the deleted product
            console.check("deleted")
            assert client.get("/products/bottle").status_code == 404
            assert not errors, f"JavaScript errors: {errors}"
            not_found.check()
            checks_can_fail(console)
        finally:
            browser.close()
    print(f"screenshots: {shots}")


def test_an_answer_for_a_product_left_is_dropped(tmp_path, bottle_dir):
    """A → B, A's summary answered last: the page shows B and acts on B."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    good = sorted((bottle_dir / "train" / "good").glob("*.png"))
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service, sync_playwright() as playwright:
        client = service.client
        for product_id, k in [("alpha", 1), ("beta", 2)]:
            created = client.post(f"/products/{product_id}/references", files=image_files(good[:k]))
            assert created.status_code == 201, created.text
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            not_found = NotFound(page)
            page.goto(str(client.base_url))
            expect(page.locator("#products-table tbody tr")).to_have_count(2)
            page.wait_for_load_state("networkidle")  # the list's own calls (history counts) are done
            hold_next_answer(page, "/products/alpha")
            page.evaluate("location.hash = '#/products/alpha'")
            page.wait_for_function("() => window.heldAnswer === true")
            page.evaluate("location.hash = '#/products/beta'")
            references = page.locator("#product-facts dt:text-is('References (K)') + dd")
            expect(references).to_have_text("2")
            release_held_answer(page)  # alpha's summary, answered after beta's
            expect(page.locator("#product-title")).to_have_text("beta")
            assert references.inner_text() == "2", "the page took alpha's summary under beta's title"
            with page.expect_response(lambda r: r.url.endswith("/inspect")) as inspected:
                drop_file(page, "#frames-dropzone", good[0])  # a frame dropped now is inspected against beta
            assert inspected.value.json()["product_id"] == "beta"
            not_found.check()
        finally:
            browser.close()


def test_the_console_works_while_the_model_cannot_load(tmp_path, bottle_dir):
    """Missing weights: the products page shows, with the reason in the status line; creating a product says why
    it cannot."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    env = {
        "DCPSFR_MODEL_CONFIG": "edge",
        "DCPSFR_WEIGHTS_DIR": str(tmp_path / "empty"),
        "DCPSFR_DATA_DIR": str(tmp_path),
    }
    with running_service(tmp_path, **env) as service, sync_playwright() as playwright:
        client = service.client
        reason = client.get("/readyz").json()["detail"]
        assert "python -m model.weights fetch edge" in reason
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            not_found = NotFound(page)
            page.goto(str(client.base_url))
            expect(page.locator("#products-empty")).to_be_visible()
            expect(page.locator("#service-status")).to_have_text(f"Model not ready: {reason}")
            page.fill("#new-product-id", "bottle")
            page.set_input_files("#new-product-files", str(bottle_dir / "train" / "good" / "000.png"))
            page.click("#create-product")
            expect(page.locator("#new-product-error")).to_have_text(
                f"Could not create bottle: model not ready: {reason}"
            )
            Console(page, tmp_path).check("model-not-ready")
            not_found.check()
        finally:
            browser.close()


def test_the_reports_page_draws_the_services_reports(tmp_path, bottle_dir):
    """After some inspections, the reports page draws one bar group per bucket of GET /reports/yield, a yield
    point per bucket with inspections, one Pareto bar per cause, and shows the API's first-pass yield."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    good = sorted((bottle_dir / "train" / "good").glob("*.png"))
    broken = sorted((bottle_dir / "test" / "broken_large").glob("*.png"))[:2]
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service, sync_playwright() as playwright:
        client = service.client
        assert client.post("/products/bottle/references", files=image_files(good[:2])).status_code == 201
        frames = image_files([*good[2:4], *broken])
        results = client.post("/inspect", data={"product_id": "bottle"}, files=frames).json()["results"]
        scores = sorted(r["score"] for r in results)
        product = client.get("/products/bottle").json()
        # a threshold between the second and the third score: the next pass rejects two frames, with regions
        lower = {"threshold": (scores[1] + scores[2]) / 2, "pixel_threshold": product["pixel_threshold"] / 2}
        assert client.put("/products/bottle/threshold", json=lower).status_code == 200
        results += client.post("/inspect", data={"product_id": "bottle"}, files=frames).json()["results"]
        assert sum(r["anomalous"] for r in results) >= 2
        browser, page = open_browser(playwright, executable)
        try:
            not_found = NotFound(page)
            with page.expect_response(lambda r: "/reports/yield?" in r.url) as answered:
                page.goto(f"{client.base_url}#/reports")
            asked = dict(parse_qsl(urlparse(answered.value.url).query))  # the page's range: the last 24 hours
            report = client.get("/reports/yield", params=asked).json()
            assert len(report["buckets"]) == 24
            assert report["total"]["inspected"] == 8
            assert report["total"]["ng"] == sum(r["anomalous"] for r in results)
            buckets = page.locator("#reports-yield-chart g.bucket")
            expect(buckets).to_have_count(24)
            expect(page.locator("#reports-yield-chart circle.fpy-point")).to_have_count(
                sum(1 for b in report["buckets"] if b["inspected"])
            )
            fpy = report["total"]["first_pass_yield"]
            expect(page.locator("#reports-fpy")).to_have_text(f"{100 * fpy:.1f} %")
            assert float(page.locator("#reports-fpy").get_attribute("data-value")) == fpy
            expect(page.locator("#reports-table tbody tr")).to_have_count(24)
            rules = client.get("/reports/pareto", params={**asked, "by": "rule"}).json()
            expect(page.locator("#reports-pareto-chart rect.pareto-bar")).to_have_count(len(rules["entries"]))
            expect(page.locator("#reports-pareto-chart circle.cumulative-point")).to_have_count(len(rules["entries"]))
            Console(page, tmp_path).check("reports")

            with page.expect_response(lambda r: "/reports/yield?" in r.url and "by=product" in r.url):
                page.select_option("#reports-by", "product")
            expect(buckets).to_have_count(1)
            expect(page.locator("#reports-table tbody th")).to_have_text("bottle")
            with page.expect_response(lambda r: "/reports/yield?" in r.url) as answered:
                page.select_option("#reports-range", "8")
            expect(buckets).to_have_count(1)  # still per product
            page.select_option("#reports-by", "hour")
            expect(buckets).to_have_count(8)
            with page.expect_response(lambda r: "/reports/pareto?" in r.url and "by=region" in r.url) as answered:
                page.select_option("#reports-pareto-by", "region")
            cells = answered.value.json()
            assert cells["ng"] == report["total"]["ng"] and cells["grid"] == 4
            expect(page.locator("#reports-pareto-chart rect.pareto-bar")).to_have_count(len(cells["entries"]))
            not_found.check()
            assert not page.errors, page.errors
        finally:
            browser.close()


def image_files(paths: list[Path]) -> list:
    return [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]


def pixel_threshold_for_a_mask(client, frame: Path) -> float:
    """A pixel threshold with ~2 % of `frame`'s anomaly map above it (from one inspection through the API)."""
    files = [("images", (frame.name, frame.read_bytes(), "image/png"))]
    result = client.post("/inspect", data={"product_id": "bottle"}, files=files).json()["results"][0]
    grey = decode_png(result["anomaly_map_png"]).astype(float)  # round(255 * clip(map / (2 * pt), 0, 1))
    anomaly_map = grey / 255.0 * 2.0 * result["pixel_threshold"]
    return float(np.percentile(anomaly_map, 98))


def hold_next_answer(page, url_part: str) -> None:
    """From now on, the next answer to a request whose URL contains `url_part` is held until
    `window.releaseHeldAnswer()`; `window.heldAnswer` turns true once it has arrived (held), and
    `window.heldAnswerUsed` once the page has had it (after its handlers of it ran)."""
    page.evaluate(
        """(part) => {
            Object.assign(window, {holdPart: part, heldAnswer: false, heldAnswerUsed: false});
            if (window.fetchBeforeHold) return;
            window.fetchBeforeHold = window.fetch;
            window.fetch = async (input, init) => {
                const response = await window.fetchBeforeHold(input, init);
                if (!window.holdPart || !String(input).includes(window.holdPart)) return response;
                window.holdPart = null;
                window.heldAnswer = true;
                await new Promise((resolve) => { window.releaseHeldAnswer = resolve; });
                const json = response.json.bind(response);
                response.json = async () => {
                    const answer = await json();
                    setTimeout(() => { window.heldAnswerUsed = true; });  // after the page's handlers of it
                    return answer;
                };
                return response;
            };
        }""",
        url_part,
    )


def release_held_answer(page) -> None:
    """Let the held answer through and return once the page has used it."""
    page.evaluate("window.releaseHeldAnswer()")
    page.wait_for_function("() => window.heldAnswerUsed === true")


def recent_scores(client, has_history: bool, this_page: list[float]) -> list[float]:
    """The scores the threshold preview counts: the service's recent inspections, else this page's results."""
    if not has_history:
        return this_page
    return [i["score"] for i in client.get("/products/bottle/inspections").json()["inspections"]]


def assert_overlay_drawn(console: Console, result: dict) -> None:
    """The canvas is the frame, plus the heat map where the map is > 0, plus the mask outline when there is one."""
    selector = "#inspect-results li:first-child canvas"
    frame = console.canvas_pixels(selector, opacity=0, outline=False).astype(int)
    heat = console.canvas_pixels(selector, opacity=100, outline=False).astype(int)
    outlined = console.canvas_pixels(selector, opacity=100, outline=True).astype(int)
    height, width = frame.shape[:2]
    heat_map = np.asarray(Image.fromarray(decode_png(result["anomaly_map_png"])).resize((width, height), Image.NEAREST))
    mask = decode_png(result["mask_png"]) > 127
    changed = np.abs(heat - frame).sum(axis=-1) > 30  # (H, W)
    hot = heat_map > 64  # from half the pixel threshold up
    assert mask.mean() > 0.005, "the hand-set pixel threshold should put some of the frame in the mask"
    assert changed[hot].mean() > 0.9, "the heat map is not drawn where the map is high"
    assert changed[heat_map == 0].mean() < 0.05, "the heat map tints pixels where the map is zero"
    yellow = (outlined[..., 0] > 230) & (outlined[..., 1] > 200) & (outlined[..., 2] < 60)
    assert yellow.any() == mask.any(), "the mask outline is missing (or drawn for an empty mask)"


def checks_can_fail(console: Console) -> None:
    """The accessibility checks above catch what they claim to: a grey-on-white text and an unnamed button."""
    console.page.evaluate(
        """() => {
            const main = document.getElementById('main');
            main.append(Object.assign(document.createElement('p'), {textContent: 'faint', style: 'color: #aaaaaa'}));
            main.append(document.createElement('button'));
        }"""
    )
    with pytest.raises(AssertionError) as failed:
        console.check("checks-can-fail")
    assert "controls without an accessible name: ['button" in str(failed.value)
    console.page.evaluate("document.querySelector('#main > button:last-child').remove()")
    with pytest.raises(AssertionError) as failed:
        console.check("checks-can-fail")
    assert 'p. "faint": 2.17' in str(failed.value)  # #aaaaaa on the page background #f6f7f9


def open_browser(playwright, executable: str):
    """A headless chromium page with the test's timeout; JavaScript errors land in `page.errors`."""
    browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return browser, page


def open_product(page, base_url, product_id: str) -> None:
    """The product's page, freshly loaded, once its summary is shown (frames chosen before that are not inspected)."""
    page.goto(f"{base_url}#/products/{product_id}")
    page.reload()  # a page already at this address would otherwise keep its state
    page.locator("#product-facts dt").first.wait_for()


def written(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_a_bad_frame_costs_only_itself_its_result(tmp_path):
    """Three frames dropped, one undecodable: all three were lost with the chunk's 400 ("Inspected 0 of 3"). Now
    each frame gets its own result or its own error, in a chunk of 3 and in the first of two chunks (8 + 1)."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    folder = tmp_path / "frames"
    folder.mkdir()
    good = [written(folder, f"good{i}.png", image_bytes(96, 80, seed=i)) for i in range(9)]
    cut = written(folder, "cut.png", image_bytes(96, 80, seed=20)[:200])  # a PNG cut short: 400
    notes = written(folder, "notes.png", b"these are notes, not an image")  # 415
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service, sync_playwright() as playwright:
        client = service.client
        assert client.post("/products/p/references", files=image_files(good[:1])).status_code == 201
        browser, page = open_browser(playwright, executable)
        try:
            open_product(page, client.base_url, "p")
            cards, status = page.locator("#inspect-results li"), page.locator("#inspect-status")
            page.set_input_files("#inspect-files", [str(good[1]), str(cut), str(good[2])])
            expect(status).to_have_text("Inspected 2 of 3 frames; 1 could not be inspected (see its card).")
            expect(cards).to_have_count(3)
            expect(cards.locator("canvas[data-drawn]")).to_have_count(2)
            failed = page.locator("#inspect-results li.failed")
            expect(failed).to_have_count(1)
            expect(failed).to_contain_text("cut.png")
            expect(failed).to_contain_text("does not decode")
            expect(failed).to_contain_text("(HTTP 400)")
            assert cards.nth(1).get_attribute("class") == "result-card failed", "the cards keep the frames' order"
            Console(page, tmp_path).check("a-frame-not-inspected")

            open_product(page, client.base_url, "p")  # a fresh page: 9 frames, the bad one in the first chunk of 8
            page.set_input_files("#inspect-files", [str(p) for p in [*good[1:5], notes, *good[5:9]]])
            expect(status).to_have_text("Inspected 8 of 9 frames; 1 could not be inspected (see its card).")
            expect(cards).to_have_count(9)
            expect(cards.locator("canvas[data-drawn]")).to_have_count(8)
            expect(failed).to_have_count(1)
            expect(failed).to_contain_text("notes.png")
            expect(failed).to_contain_text("(HTTP 415)")
            inspections = client.get("/products/p/inspections", params={"limit": 100}).json()["inspections"]
            assert len(inspections) == 2 + 8, "every good frame was inspected once"
            assert not page.errors, page.errors
        finally:
            browser.close()


def grey16_png(values: np.ndarray, significant_bits: int | None = None) -> bytes:
    """(H, W) uint16 values as a 16-bit greyscale PNG, with an sBIT chunk when `significant_bits` is given."""
    png = encoded(Image.fromarray(values.astype(np.uint16)))
    if significant_bits is None:
        return png
    body = b"sBIT" + bytes([significant_bits])
    chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body))
    after_header = 8 + 8 + 13 + 4  # the signature, then IHDR: length, type, 13 bytes, CRC
    return png[:after_header] + chunk + png[after_header:]


def texture(bits: int, seed: int, width: int = 96, height: int = 64) -> np.ndarray:
    """(H, W) values spanning 0 .. 2**bits - 1: a gradient with some noise."""
    top = 2**bits - 1
    ramp = np.linspace(0, top, width)[None, :] * np.linspace(0.3, 1.0, height)[:, None]
    noise = np.random.default_rng(seed).normal(0, top * 0.02, (height, width))
    return np.clip(ramp + noise, 0, top).astype(np.uint16)


def as_the_model_reads(values: np.ndarray, bits: int) -> np.ndarray:
    """model.pixels: value x 255 / (2**bits - 1), rounded, in float32."""
    scaled = values.astype(np.float32) * np.float32(255.0 / (2**bits - 1)) + np.float32(0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def first_canvas(page) -> tuple[np.ndarray, str]:
    """The newest result's canvas as it is painted now (RGB), and where its frame came from."""
    data, source = page.evaluate(
        """() => {
            const canvas = document.querySelector('#inspect-results li:first-child canvas');
            return [canvas.toDataURL('image/png'), canvas.dataset.source];
        }"""
    )
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB"))
    return pixels.astype(int), source


def test_each_frame_is_drawn_as_the_model_saw_it(tmp_path):
    """A frame's picture follows the model's decoding: 16-bit grey scaled by its sBIT or the product's bit depth
    (the browser alone shows them at 16 bits, far darker), EXIF orientation applied, a TIFF from the service's own
    thumbnail; and a good part keeps its real colours: its heat map shows only when asked for."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    folder = tmp_path / "frames"
    folder.mkdir()
    twelve, ten = texture(12, seed=1), texture(10, seed=2)
    reference = written(folder, "reference.png", grey16_png(texture(12, seed=0)))
    product_bits = written(folder, "twelve-bit.png", grey16_png(twelve))  # no sBIT: the product's 12 bits
    own_bits = written(folder, "ten-bit.png", grey16_png(ten, significant_bits=10))  # its own sBIT
    tiff = written(folder, "twelve-bit.tif", encoded(Image.fromarray(twelve), "TIFF"))
    upright = np.asarray(Image.open(io.BytesIO(image_bytes(96, 64, seed=3))).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: 64 x 96
    buffer = io.BytesIO()
    Image.fromarray(upright).save(buffer, format="JPEG", quality=95, exif=exif)
    turned = written(folder, "turned.jpg", buffer.getvalue())
    expected_turned = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB"))
    cases = [
        (product_bits, as_the_model_reads(twelve, 12), "high-bit", 1),
        (own_bits, as_the_model_reads(ten, 10), "high-bit", 1),
        (turned, expected_turned, "browser", 4),
        (tiff, as_the_model_reads(twelve, 12), "thumbnail", 6),  # a JPEG thumbnail of the decoded frame
    ]
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service, sync_playwright() as playwright:
        client = service.client
        created = client.post("/products/grey/references", files=image_files([reference]), data={"bit_depth": "12"})
        assert created.status_code == 201, created.text
        assert created.json()["bit_depth"] == 12
        # every frame judged good: the heat map stays off by default
        assert client.put("/products/grey/threshold", json={"threshold": 1.99}).status_code == 200
        browser, page = open_browser(playwright, executable)
        try:
            open_product(page, client.base_url, "grey")
            page.uncheck("#overlay-outline")  # the frame alone (the mask's outline is drawn on any verdict)
            for n, (path, expected, source, tolerance) in enumerate(cases, start=1):
                page.set_input_files("#inspect-files", [str(path)])
                card = page.locator("#inspect-results li").first
                expect(page.locator("#inspect-results li")).to_have_count(n)
                expect(card.locator("canvas[data-drawn]")).to_have_count(1)
                expect(card.locator(".verdict")).to_have_text("Good")
                pixels, drawn_from = first_canvas(page)
                assert drawn_from == source, path.name
                expected = np.repeat(expected[..., None], 3, axis=2) if expected.ndim == 2 else expected
                assert pixels.shape == expected.shape, path.name
                difference = np.abs(pixels - expected.astype(int))
                assert difference.mean() < tolerance, f"{path.name}: {difference.mean():.2f} levels off"
            at_sixteen_bits = np.round(twelve / 65535 * 255)  # how the browser alone would show the 12-bit frame
            assert np.abs(as_the_model_reads(twelve, 12) - at_sixteen_bits).mean() > 50, "the case can fail"

            # a good part's heat map, only when asked for
            plain, _ = first_canvas(page)
            page.check("#overlay-good")
            tinted, _ = first_canvas(page)
            assert np.abs(tinted - plain).sum(axis=-1).max() > 30, "the toggle shows the heat map"
            page.uncheck("#overlay-good")
            assert (first_canvas(page)[0] == plain).all()
            assert not page.errors, page.errors
        finally:
            browser.close()


def test_unusable_thresholds_show_and_large_changes_are_confirmed(tmp_path):
    """An unusable threshold is flagged in the list and on the product page; a threshold at the scale's end is
    previewed as such and its refusal shown; a 409 that asks first offers "Apply anyway", which sends force=true
    (the 409 is played by the browser here: the service's own are in tests/service/api/test_threshold_rules.py)."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    folder = tmp_path / "frames"
    folder.mkdir()
    frame = written(folder, "frame.png", image_bytes(96, 80, seed=1))
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service, sync_playwright() as playwright:
        client = service.client
        assert client.post("/products/p/references", files=image_files([frame])).status_code == 201
        assert client.put("/products/p/threshold", json={"threshold": -0.5}).json()["threshold_usable"] is False
        browser, page = open_browser(playwright, executable)
        try:
            page.goto(str(client.base_url))
            expect(page.locator('tr[data-product="p"] .badge.danger')).to_have_text("unusable")
            open_product(page, client.base_url, "p")
            expect(page.locator("#product-warnings li.unusable")).to_contain_text("every good part is rejected")
            expect(page.locator("#product-facts .badge.danger")).to_have_text("unusable")
            Console(page, tmp_path).check("unusable-threshold")

            page.fill("#threshold-number", "2.5")
            expect(page.locator("#threshold-preview")).to_contain_text("no part can be rejected")
            page.click("#threshold-save")
            expect(page.locator("#threshold-error")).to_contain_text("threshold 2.5 is at or above 2")
            page.fill("#threshold-number", "0.5")
            page.click("#threshold-save")
            expect(page.locator("#product-facts .badge.danger")).to_have_count(0)
            expect(page.locator("#product-warnings li.unusable")).to_have_count(0)

            sent: list[str] = []
            confirmation = {
                "detail": "this would move the threshold",
                "confirmation": {"field": "force", "threshold": 0.5, "proposed_threshold": 1.9, "factor": 3.8},
            }

            def ask_first(route):
                sent.append(route.request.post_data or "")
                if len(sent) == 1:
                    route.fulfill(status=409, json=confirmation)
                else:
                    route.continue_()

            page.route("**/products/p/feedback", ask_first)
            page.set_input_files("#inspect-files", [str(frame)])
            card = page.locator("#inspect-results li").first
            card.locator(".feedback button[data-label=good]").click()
            status = card.locator(".feedback-status")
            expect(status).to_contain_text("This would move the threshold from 0.5 to 1.9")
            assert page.evaluate("document.activeElement.dataset.confirm") == "apply"
            Console(page, tmp_path).check("confirm-a-label")
            page.keyboard.press("Enter")
            expect(status).to_contain_text("Labelled good")
            assert len(sent) == 2 and 'name="force"' not in sent[0]
            assert 'name="force"\r\n\r\ntrue' in sent[1]
            assert client.get("/products/p/evaluation").json()["n_good"] == 1
            assert not page.errors, page.errors
        finally:
            browser.close()


def test_the_review_queue_takes_a_verdict_and_the_item_leaves(tmp_path):
    """A borderline inspection waits in the review queue; Good sends the verdict as feedback (recorded with the
    reviewer's key name, the frame in the calibration set) and the item leaves; Defect empties the queue."""
    executable = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from service.keys import key_hash

    expect.set_options(timeout=TIMEOUT_MS)
    folder = tmp_path / "frames"
    folder.mkdir()
    reference = written(folder, "reference.png", image_bytes(96, 80, seed=1))
    frame = image_bytes(96, 80, seed=2)
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"- {{name: rita, role: operator, sha256: '{key_hash('rita-key')}'}}\n"
        f"- {{name: eng, role: engineer, sha256: '{key_hash('eng-key')}'}}\n"
    )
    env = {"DCPSFR_DATA_DIR": str(tmp_path / "data"), "DCPSFR_KEYS_FILE": str(keys)}
    with running_service(tmp_path, **env) as service, sync_playwright() as playwright:
        client = service.client
        client.headers["X-API-Key"] = "eng-key"
        assert client.post("/products/p/references", files=image_files([reference])).status_code == 201
        inspect = {"files": [("images", ("frame.png", frame, "image/png"))]}
        score = client.post("/inspect", data={"product_id": "p"}, **inspect).json()["results"][0]["score"]
        # a manual threshold 5 % above the frame's score: inside the default ±10 % band (and no recalibration
        # question when the frame is labelled good)
        assert client.put("/products/p/threshold", json={"threshold": score * 1.05}).status_code == 200
        ids = [
            client.post("/inspect", data={"product_id": "p", "part_id": part}, **inspect).json()["results"][0][
                "inspection_id"
            ]
            for part in ("SN-1", "SN-2")
        ]
        assert client.get("/inspections/review-queue").json()["pending"] == 2
        browser, page = open_browser(playwright, executable)
        try:
            page.goto(f"{client.base_url}#/review")
            expect(page.locator("#key-dialog")).to_be_visible()
            page.fill("#key-input", "rita-key")
            page.keyboard.press("Enter")
            items = page.locator("#review-list li")
            expect(items).to_have_count(2)
            expect(items.nth(0)).to_contain_text("SN-1")  # oldest first
            expect(items.nth(0).locator("img")).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
            expect(items.nth(0)).to_contain_text("against threshold")
            expect(page.locator("#review-status")).to_have_text("2 inspections wait for review.")
            Console(page, tmp_path).check("review-queue")

            items.nth(0).locator("button[data-label=good]").click()
            expect(items).to_have_count(1)
            expect(page.locator("#review-status")).to_have_text(
                "Labelled part SN-1 good. 1 inspection waits for review."
            )
            record = client.get(f"/inspections/{ids[0]}").json()
            assert (record["review"], record["label"], record["reviewed_by"]) == ("reviewed", "good", "rita")
            assert client.get("/products/p/evaluation").json()["n_good"] == 1, "the frame joined the calibration set"
            assert [i["inspection_id"] for i in client.get("/inspections/review-queue").json()["items"]] == ids[1:]

            items.nth(0).locator("button[data-label=defect]").click()
            expect(page.locator("#review-empty")).to_be_visible()
            expect(page.locator("#review-empty")).to_have_text("Nothing waits for review.")
            assert client.get(f"/inspections/{ids[1]}").json()["label"] == "defect"
            Console(page, tmp_path).check("review-queue-empty")
            page.reload()  # from the service again: still empty
            expect(page.locator("#review-empty")).to_be_visible()
            assert not page.errors, page.errors
        finally:
            browser.close()
