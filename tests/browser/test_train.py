"""/train in real Chromium: start a training run, watch the curves gain points while the page
stays responsive (pause answers within a few seconds), stop it, and look at the result;
then /race: a full race fills its chart, table and explanation."""

from __future__ import annotations

import pytest

from tests.browser.conftest import (
    assert_no_exception, button, full_page_screenshot, go_to_page, open_from_sidebar, settled, trace_points,
    wait_for,
)

@pytest.mark.browser
def test_start_watch_the_curves_grow_and_stop(app_url, page):
    open_from_sidebar(page, app_url, "Train a network", "?digit=sample:3", heading="Train a network")
    assert_no_exception(page)
    # Twenty epochs of batches of 4 (275,000 steps): long enough to pause, resume and stop it by hand while
    # it runs. Batches of 128 no longer are: FCNet trained all twenty epochs of them in 4.6 s here.
    epochs = page.locator(".st-key-train_epochs input").first
    epochs.fill("20")
    epochs.press("Enter")
    batch = page.locator(".st-key-train_batch input").first
    batch.fill("4")
    batch.press("Enter")
    page.wait_for_timeout(1500)
    assert epochs.input_value() == "20" and batch.input_value() == "4"
    full_page_screenshot(page, "train", "1-before")

    button(page, "train_start").click()
    wait_for(lambda: trace_points(page, "loss of each batch") > 0, 180, "the first points of the loss curve")  # a worker process starts first
    first = trace_points(page, "loss of each batch")
    wait_for(lambda: trace_points(page, "loss of each batch") > first + 10, 60, "the loss curve to gain points")
    wait_for(lambda: trace_points(page, "validation accuracy (2,000") >= 3, 120, "three validation-accuracy points")
    assert_no_exception(page)
    full_page_screenshot(page, "train", "2-running")

    # The page answers while training goes on: Pause takes effect and is shown within seconds.
    button(page, "train_pause").click()
    paused_in = wait_for(lambda: page.get_by_text("Paused after step").count() > 0, 30, "the paused note")
    print(f"\npause shown {paused_in:.1f} s after the click")
    page.wait_for_timeout(1500)  # the batch in flight at the click ends, and the chart redraws once more
    at_pause = trace_points(page, "loss of each batch")
    page.wait_for_timeout(2500)
    assert trace_points(page, "loss of each batch") == at_pause  # a paused run gains no points
    button(page, "train_resume").click()
    wait_for(lambda: trace_points(page, "loss of each batch") > at_pause, 60, "training to resume")

    button(page, "train_stop").click()
    stopped_in = wait_for(lambda: page.get_by_text("Stopped after step").count() > 0, 60, "the stopped note")
    print(f"stop shown {stopped_in:.1f} s after the click")
    # The ended run offers its replay and its model (drawn by the page's rerun after the run ends).
    page.get_by_role("button", name="Download the weights (.safetensors)").wait_for(timeout=30_000)
    page.get_by_role("button", name="Use it in the explorers").wait_for(timeout=30_000)
    assert page.get_by_text("Replay the run").count() == 1
    settled(page)
    assert_no_exception(page)
    full_page_screenshot(page, "train", "3-stopped")

    # The kept network's units, at any snapshot of the run: Inside a unit opens with a slider over them.
    page.get_by_role("button", name="Use it in the explorers").click()
    go_to_page(page, "Watch one unit form across the run", "Inside a unit", "train")
    page.get_by_text("snapshots while it trained", exact=False).first.wait_for(timeout=120_000)
    page.get_by_text("The test digits that excite it most", exact=False).first.wait_for(timeout=120_000)
    settled(page)
    assert_no_exception(page)
    full_page_screenshot(page, "train", "4-a-unit-across-the-run")


@pytest.mark.browser
def test_race_on_all_training_digits_fills_the_chart_table_and_explanation(app_url, page):
    open_from_sidebar(page, app_url, "FC vs CNN race", "?digit=sample:3", heading="FC vs CNN: the race")
    assert_no_exception(page)

    button(page, "race_start").click()  # the defaults: 60,000 digits, one epoch, one network after the other
    wait_for(lambda: page.get_by_text("The race is over.").count() > 0, 420, "the end of the race")
    page.get_by_text("When the trade reverses.").wait_for(timeout=30_000)
    settled(page)
    assert_no_exception(page)
    # A race evaluates on a fixed cadence (race.race_cadence: about config.RACE_EVAL_POINTS points a run,
    # whatever an evaluation costs), so each curve has the points to read "seconds to 95 %" off.
    assert trace_points(page, "FCNet 784-16-16-10") >= 20 and trace_points(page, "TinyVGG (10 channels)") >= 20
    full_page_screenshot(page, "race", "race-finished")
