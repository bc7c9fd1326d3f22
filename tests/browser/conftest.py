"""Real-browser fixtures: `streamlit run` on a free loopback port, Debian's
Chromium driven by Playwright, and a helper that opens a page, waits for the
app to finish running, fails on any Streamlit exception box and saves a
screenshot under tests/screenshots/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
