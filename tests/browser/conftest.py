"""Real-browser fixtures: `streamlit run` on a free loopback port, Debian's
Chromium driven by Playwright; and the helpers every browser test shares:
open a page from the sidebar, wait for the app to finish running, fail on any
Streamlit exception box, find a button by its key, draw on the canvas, count a
chart's points, poll for a condition and save screenshots under tests/screenshots/."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.server import REPO, start_streamlit, stop

SCREENSHOTS = REPO / "tests" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail("Debian's chromium is not installed: run `scripts/install-chromium` (make test does).")
    return path


@pytest.fixture(scope="session")
def app_url():
    try:
        proc, url = start_streamlit(REPO / "tests" / ".streamlit-server.log", timeout=90)
    except RuntimeError as err:
        pytest.fail(f"streamlit did not start: {err}")
    yield url
    stop(proc, timeout=10)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def warm_app(browser, app_url):
    """Load the entry page once per server, so the first run's start-up (MNIST and
    the weights into memory) is not charged to whichever test happens to run first."""
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(app_url + "/")
    wait_for_app(pg, timeout_ms=120_000)
    context.close()
    return app_url


@pytest.fixture
def page(browser, warm_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


def wait_for_app(page, timeout_ms: int = 60_000) -> None:
    """Wait until the script has run to the end.

    The app's root carries data-test-script-state: "initial" before the first
    run, "running" during one, "notRunning" after. (The status widget appears
    only about a second into a run, so its absence proves nothing.)
    """
    page.wait_for_selector('[data-testid="stMainBlockContainer"]', timeout=timeout_ms)
    page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=timeout_ms)
    page.wait_for_timeout(400)
    page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=timeout_ms)


def wait_for_linked_page(page, timeout_ms: int = 60_000) -> None:
    """wait_for_app after opening a link to a page other than home: a cold server's first session can
    flash a "Page not found" dialog over it before its pages are registered (streamlit/streamlit#9992);
    close it and wait for the page's own run."""
    wait_for_app(page, timeout_ms)
    dialog = page.get_by_role("dialog")
    if dialog.count() and "Page not found" in dialog.first.inner_text():
        page.keyboard.press("Escape")
        wait_for_app(page, timeout_ms)


def assert_no_exception(page) -> None:
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        pytest.fail("The page shows a Streamlit exception:\n" + boxes.first.inner_text()[:2000])
    errors = page.locator('[data-testid="stAlertContentError"]')
    if errors.count():
        pytest.fail("The page shows an error box:\n" + errors.first.inner_text()[:2000])


def screenshot(page, folder: str, name: str) -> Path:
    out = SCREENSHOTS / folder
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def full_page_screenshot(page, folder: str, name: str) -> Path:
    """A screenshot of the whole page: the main area scrolls, so make the window as tall as the page."""
    height = page.evaluate(
        "() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
    page.set_viewport_size({"width": 1400, "height": min(max(int(height) + 40, 1000), 4000)})
    page.wait_for_timeout(600)  # plotly redraws to the new width
    path = screenshot(page, folder, name)
    page.set_viewport_size({"width": 1400, "height": 1000})
    return path


def open_from_sidebar(page, app_url: str, link: str, query: str = "", heading: str | None = None) -> None:
    """Enter the app at its home page (with ``query``, e.g. "?digit=sample:3") and follow the sidebar
    link ``link``, as a visitor does; wait for the page's ``heading`` when given, then for its run to end."""
    page.goto(f"{app_url}/{query}")
    wait_for_app(page)
    page.locator('[data-testid="stSidebarNav"]').get_by_text(link, exact=True).click()
    page.wait_for_timeout(500)  # the click's rerun starts: until then the app still reads "notRunning"
    if heading is not None:
        page.get_by_role("heading", name=heading).wait_for()
    wait_for_app(page)


def go_to_page(page, link: str, heading: str, folder: str, timeout_ms: int = 60_000) -> None:
    """Follow the page's link ``link`` to another page, as a learner does once the page has drawn;
    wait for the new page's ``heading``. If it does not come, save what the page shows and say it."""
    wait_for_app(page)
    page.get_by_role("link", name=link).click(timeout=timeout_ms)
    try:
        page.get_by_role("heading", name=heading).wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        path = screenshot(page, folder, f"no-{heading.lower().replace(' ', '-')}")
        pytest.fail(f"After following {link!r} the page did not show {heading!r} within {timeout_ms / 1000:.0f} s; "
                    f"it shows the headings {page.locator('h1').all_inner_texts()} (script state: "
                    f"{page.locator('[data-test-script-state]').first.get_attribute('data-test-script-state')}); "
                    f"screenshot: {path}")
    wait_for_app(page)


def settled(page) -> None:
    """The main area is there and a moment has passed for the widgets a rerun redraws."""
    page.wait_for_selector('[data-testid="stMainBlockContainer"]')
    page.wait_for_timeout(1500)


def button(page, key: str):
    """The button with Streamlit key ``key`` (its container carries the class st-key-<key>)."""
    return page.locator(f".st-key-{key} button").first


def draw_stroke(page, canvas, points: list[tuple[float, float]]) -> None:
    """Press, move through ``points`` (canvas pixels) in small steps, release."""
    box = canvas.bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x0 + x, y0 + y, steps=12)  # many small moves, like a hand
    page.mouse.up()


COUNT_POINTS = """(name) => {
    for (const el of document.querySelectorAll('.js-plotly-plot')) {
        for (const t of (el.data || [])) {
            if (t.name && t.name.startsWith(name)) return t.x.length;
        }
    }
    return 0;
}"""


def trace_points(page, name_start: str) -> int:
    """How many points the first plotly trace whose name starts with ``name_start`` has (0: none yet)."""
    return page.evaluate(COUNT_POINTS, name_start)


def wait_for(predicate, timeout: float, what: str) -> float:
    """Poll until ``predicate()``; return the seconds it took (the test fails after ``timeout`` s)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - start
