"""/train in real Chromium: start a training run, watch the curves gain points while the page
stays responsive (pause answers within a few seconds), stop it, and look at the result;
then /race: a full race fills its chart, table and explanation."""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import assert_no_exception, screenshot

COUNT_POINTS = """(name) => {
    for (const el of document.querySelectorAll('.js-plotly-plot')) {
        for (const t of (el.data || [])) {
            if (t.name && t.name.startsWith(name)) return t.x.length;
        }
    }
    return 0;
}"""


def _button(page, key: str):
    """The button with Streamlit key ``key`` (its container carries the class st-key-<key>)."""
    return page.locator(f".st-key-{key} button").first


def _shot(page, name: str, folder: str = "train") -> None:
    """A screenshot of the whole page: the main area scrolls, so make the window as tall as the page."""
    height = page.evaluate(
        "() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
    page.set_viewport_size({"width": 1400, "height": min(max(int(height) + 40, 1000), 4000)})
    page.wait_for_timeout(600)  # plotly redraws to the new width
    screenshot(page, folder, name)
    page.set_viewport_size({"width": 1400, "height": 1000})


def _points(page, trace: str) -> int:
    return page.evaluate(COUNT_POINTS, trace)


def _wait_for(predicate, timeout: float, what: str) -> float:
    """Poll until ``predicate()``; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - start


def _settled(page) -> None:
    page.wait_for_selector('[data-testid="stMainBlockContainer"]')
    page.wait_for_timeout(1500)


@pytest.mark.browser
def test_start_watch_the_curves_grow_and_stop(app_url, page):
    page.goto(f"{app_url}/?digit=sample:3")
    page.wait_for_selector('[data-testid="stSidebarNav"]')
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Train a network", exact=True).click()
    page.get_by_role("heading", name="Train a network").wait_for()
    _settled(page)
    assert_no_exception(page)
    # Twenty epochs: long enough to pause, resume and stop it by hand while it runs.
    epochs = page.locator(".st-key-train_epochs input").first
    epochs.fill("20")
    epochs.press("Enter")
    page.wait_for_timeout(1500)
    assert epochs.input_value() == "20"
    _shot(page, "1-before")

    _button(page, "train_start").click()
    _wait_for(lambda: _points(page, "loss of each batch") > 0, 180, "the first points of the loss curve")  # a worker process starts first
    first = _points(page, "loss of each batch")
    _wait_for(lambda: _points(page, "loss of each batch") > first + 10, 60, "the loss curve to gain points")
    _wait_for(lambda: _points(page, "validation accuracy (2,000") >= 3, 120, "three validation-accuracy points")
    assert_no_exception(page)
    _shot(page, "2-running")

    # The page answers while training goes on: Pause takes effect and is shown within seconds.
    _button(page, "train_pause").click()
    paused_in = _wait_for(lambda: page.get_by_text("Paused after step").count() > 0, 30, "the paused note")
    print(f"\npause shown {paused_in:.1f} s after the click")
    page.wait_for_timeout(1500)  # the batch in flight at the click ends, and the chart redraws once more
    at_pause = _points(page, "loss of each batch")
    page.wait_for_timeout(2500)
    assert _points(page, "loss of each batch") == at_pause  # a paused run gains no points
    _button(page, "train_resume").click()
    _wait_for(lambda: _points(page, "loss of each batch") > at_pause, 60, "training to resume")

    _button(page, "train_stop").click()
    stopped_in = _wait_for(lambda: page.get_by_text("Stopped after step").count() > 0, 60, "the stopped note")
    print(f"stop shown {stopped_in:.1f} s after the click")
    # The ended run offers its replay and its model (drawn by the page's rerun after the run ends).
    page.get_by_role("button", name="Download the weights (.safetensors)").wait_for(timeout=30_000)
    page.get_by_role("button", name="Use it in the explorers").wait_for(timeout=30_000)
    assert page.get_by_text("Replay the run").count() == 1
    _settled(page)
    assert_no_exception(page)
    _shot(page, "3-stopped")

    # The kept network's units, at any snapshot of the run: Inside a unit opens with a slider over them.
    page.get_by_role("button", name="Use it in the explorers").click()
    page.get_by_role("button", name="Watch one unit form across the run").click(timeout=60_000)
    page.get_by_role("heading", name="Inside a unit").wait_for(timeout=60_000)
    page.get_by_text("snapshots while it trained", exact=False).first.wait_for(timeout=120_000)
    page.get_by_text("The test digits that excite it most", exact=False).first.wait_for(timeout=120_000)
    _settled(page)
    assert_no_exception(page)
    _shot(page, "4-a-unit-across-the-run")


@pytest.mark.browser
def test_race_on_all_training_digits_fills_the_chart_table_and_explanation(app_url, page):
    page.goto(f"{app_url}/?digit=sample:3")
    page.wait_for_selector('[data-testid="stSidebarNav"]')
    page.locator('[data-testid="stSidebarNav"]').get_by_text("FC vs CNN race", exact=True).click()
    page.get_by_role("heading", name="FC vs CNN: the race").wait_for()
    _settled(page)
    assert_no_exception(page)

    _button(page, "race_start").click()  # the defaults: 60,000 digits, one epoch, one network after the other
    _wait_for(lambda: page.get_by_text("The race is over.").count() > 0, 420, "the end of the race")
    page.get_by_text("When the trade reverses.").wait_for(timeout=30_000)
    _settled(page)
    assert_no_exception(page)
    # A race evaluates on a fixed cadence (race.race_cadence: about config.RACE_EVAL_POINTS points a run,
    # whatever an evaluation costs), so each curve has the points to read "seconds to 95 %" off.
    assert _points(page, "FCNet 784-16-16-10") >= 20 and _points(page, "TinyVGG (10 channels)") >= 20
    _shot(page, "race-finished", folder="race")
