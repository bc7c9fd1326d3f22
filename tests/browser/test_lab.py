"""The lab in real Chromium: on the Train page, switch to plain SGD with shuffled pixels and
augmentation, run one short experiment to the end, and check that the curves show training and
validation side by side and the test accuracy appears once, at the end."""

from __future__ import annotations

import pytest

from tests.browser.conftest import (
    assert_no_exception, button, full_page_screenshot, open_from_sidebar, settled, trace_points, wait_for,
)


@pytest.mark.browser
def test_run_one_lab_experiment_shuffled_pixels_with_plain_sgd(app_url, page):
    open_from_sidebar(page, app_url, "Train a network", "?digit=sample:3", heading="Train a network")
    assert_no_exception(page)

    # MNIST loads first on a fresh, busy server: wait for the real widget, not its placeholder.
    page.locator(".st-key-train_optimizer [data-testid='stSelectbox']").wait_for(timeout=240_000)
    settled(page)
    # Plain SGD: its one-sentence explanation appears where it is chosen.
    page.locator(".st-key-train_optimizer [data-testid='stSelectbox'] input").first.click()
    page.locator("[role='option']").filter(has_text="plain SGD").first.click()
    page.get_by_text("Plain SGD: every weight moves by").wait_for()
    lr = page.locator(".st-key-train_lr input").first
    lr.fill("0.1")
    lr.press("Enter")
    epochs = page.locator(".st-key-train_epochs input").first
    epochs.fill("1")
    epochs.press("Enter")
    page.locator(".st-key-train_shuffle label").first.click()  # shuffle the pixels
    page.wait_for_timeout(1500)
    full_page_screenshot(page, "lab", "1-lab-settings")

    button(page, "train_start").click()
    wait_for(lambda: page.get_by_text("measured once, now that training has ended").count() > 0, 240,
              "the run to finish and report its test accuracy")
    page.wait_for_timeout(1500)
    assert_no_exception(page)
    # Both curves are measured at the same steps; the recording budget (config.RECORDING_BUDGET of the
    # run's time) decides how many, so a loaded machine gets fewer points, never fewer than a start,
    # a middle and an end (runs.Recorder forces the middle one).
    validation = trace_points(page, "validation accuracy (2,000")
    assert validation >= 3 and trace_points(page, "training accuracy (2,000 training digits)") == validation
    # The note under "Use your network" comes at the foot of the same page run, which a loaded
    # machine may not have drawn yet when the finished message shows.
    note = page.get_by_text("A network trained on shuffled pixels or without ReLU")
    wait_for(lambda: note.count() > 0, 60, "the note that this network stays on the Train page")
    assert note.count() == 1
    full_page_screenshot(page, "lab", "2-lab-finished")
