"""The race page's "scale the task" panel in real Chromium: the measurement runs in a process of
its own, so while it times the networks the learner can still use the page (here: open another
expander); then the chart, table and explanation appear without a reload."""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import assert_no_exception, screenshot, wait_for_app


@pytest.mark.browser
def test_scale_the_task_measures_in_the_background_and_fills_in(app_url, page):
    page.goto(f"{app_url}/race?digit=sample:3")
    wait_for_app(page)
    page.get_by_text("And on a bigger task?").click()
    page.locator(".st-key-race_scale_measure button").first.click()
    page.get_by_text("in a process of its own").wait_for(timeout=60_000)
    # While it measures, the page answers: another expander opens and draws its content.
    page.get_by_text("Beyond speed: move the digit").click()
    wait_for_app(page)
    assert_no_exception(page)
    start = time.monotonic()
    # The explanation's bold headings (plain "weights." also occurs in the race page's own text).
    weights = page.locator('strong:text-is("Weights.")')
    weights.first.wait_for(timeout=300_000)
    page.locator('strong:text-is("Speed.")').first.wait_for(timeout=30_000)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
    assert_no_exception(page)
    weights.first.scroll_into_view_if_needed()
    screenshot(page, "race", "scale-the-task")
    sized = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(
        el => (el.data || []).filter(t => JSON.stringify(Array.from(t.x || [])) === '[28,32,64,128]')).length""")
    assert sized == 8, f"the scale chart should have 2 networks x 4 panels of sizes, found {sized}"
    print(f"results appeared {time.monotonic() - start:.1f} s after the page was used meanwhile")
