"""Backpropagation in real Chromium: the FC explorer's Backward mode (a target from the link, one SGD
step with the learning-rate slider), the CNN kernel-gradient panel, and lesson 7 stepped through."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from digitrec import lessons
from tests.browser.conftest import (
    assert_no_exception, full_page_screenshot, screenshot, wait_for_app, wait_for_linked_page,
)

pytestmark = pytest.mark.browser

TALL = {"width": 1400, "height": 3000}  # the main area scrolls: a tall window shows a whole view
LESSON_FILE = Path(__file__).resolve().parents[2] / "lessons" / "07-backpropagation.md"
LESSON = lessons.parse_lesson(LESSON_FILE.read_text(encoding="utf-8"), LESSON_FILE.name)


def _open(page, url: str) -> None:
    """Open the link ``url`` in a window tall enough to show a whole view, and wait for its page."""
    page.set_viewport_size(TALL)
    page.goto(url)
    wait_for_linked_page(page)


def test_backward_mode_and_one_sgd_step(page, app_url):
    _open(page, f"{app_url}/fc?digit=sample:7&mode=backward&target=3")
    expect(page.get_by_text("1. The loss and its blame on the ten scores")).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)
    wait_for_app(page)
    assert_no_exception(page)
    expect(page.get_by_text("loss = −log p", exact=True)).to_be_visible()
    expect(page.get_by_text("autograd's ∂loss/∂z for fc_2 neuron").first).to_be_visible()
    screenshot(page, "backprop", "1-backward-mode")

    page.get_by_role("tab", name="3. One weight's gradient").click()
    wait_for_app(page)
    expect(page.get_by_text("a × δ (by hand)", exact=True)).to_be_visible()
    full_page_screenshot(page, "backprop", "2-one-weight")  # the tab's content lies below the first screen

    page.get_by_role("tab", name="4. First-layer gradient pictures").click()
    wait_for_app(page)
    screenshot(page, "backprop", "3-gradient-pictures")

    page.get_by_role("tab", name="5. One SGD step").click()
    wait_for_app(page)
    panel = page.get_by_role("tabpanel", name="5. One SGD step")
    expect(panel.get_by_text("this digit's loss after the step")).to_be_visible()
    # Move the learning rate up with the keyboard (a select slider takes arrow keys) until it overshoots.
    slider = panel.get_by_role("slider")
    slider.focus()
    for _ in range(5):  # 0.01 -> 1 (a key press can land twice while the page reruns)
        page.keyboard.press("ArrowRight")
    wait_for_app(page)
    expect(page).to_have_url(re.compile(r"[?&]lr=(1|3|10)(&|$)"), timeout=30_000)  # a step of 1 or more
    expect(panel.get_by_text("This step is too big: it overshoots.")).to_be_visible(timeout=30_000)
    assert_no_exception(page)
    screenshot(page, "backprop", "4-sgd-step-overshoots")


def test_a_bad_target_in_the_link_is_clamped(page, app_url):
    _open(page, f"{app_url}/fc?digit=sample:7&mode=backward&target=42")
    # (The toast's words are checked in tests/test_page_backprop.py: a toast fades after four seconds,
    # sooner than a loaded machine may draw the page.)
    expect(page).to_have_url(re.compile(r"[?&]target=9(&|$)"), timeout=60_000)
    box = page.get_by_role("combobox", name="Target class: the right answer the loss measures against")
    expect(box).to_have_value("9")
    assert_no_exception(page)


def test_cnn_kernel_gradient_panel(page, app_url):
    _open(page, f"{app_url}/cnn?digit=sample:7&section=Kernel+gradient&target=3")
    expect(page.get_by_text("sum over positions (by hand)")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("autograd's gradient for this kernel weight").first).to_be_visible()
    wait_for_app(page)
    assert_no_exception(page)
    screenshot(page, "backprop", "5-cnn-kernel-gradient")


def test_step_through_the_backpropagation_lesson(page, app_url):
    _open(page, f"{app_url}/lessons?lesson=7&step=1&digit=sample:7")
    expect(page.get_by_role("heading", name=f"7. {LESSON.title}", exact=True)).to_be_visible(timeout=60_000)
    for index, step in enumerate(LESSON.steps):
        if index:
            page.get_by_role("button", name="Next →").click()
            wait_for_app(page)
        expect(page.get_by_role("heading", name=step.title, exact=True)).to_be_visible(timeout=60_000)
        expect(page.get_by_text(f"Step {index + 1} of {len(LESSON.steps)}")).to_be_visible()
        expect(page).to_have_url(re.compile(rf"[?&]step={index + 1}(&|$)"))
        if step.predictions:  # commit a prediction, as the learner must, to see what follows it
            wait_for_app(page)
            box = page.get_by_label("Your prediction")
            box.fill("1")
            box.press("Enter")
            wait_for_app(page)
            page.get_by_role("button", name="Commit my prediction").click()
            wait_for_app(page)
        if step.widgets:  # the widget ran to its end: the link to its explorer page is drawn after it
            expect(page.get_by_role("link", name=re.compile(r"^Open .* for more$")).first).to_be_visible(timeout=60_000)
        wait_for_app(page)
        assert_no_exception(page)
        assert "{{" not in page.locator('[data-testid="stMain"]').inner_text()
        if index == 0:  # do what the step asks: take FCNet's runner-up, 3 for sample 7, as the target
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Target class").click()
            page.get_by_role("option", name="3", exact=True).click()
            wait_for_app(page)
            expect(page.get_by_text("∂loss/∂score 3 = p − 1")).to_be_visible(timeout=30_000)
        elif step.widgets:  # the later steps keep the target picked in step 1
            box = page.get_by_role("combobox", name="Target class: the right answer the loss measures against")
            expect(box.first).to_have_value("3")
        screenshot(page, "backprop", f"lesson-step-{index + 1}")
    question = LESSON.steps[-1].questions[0]
    right = next(a for a in question.answers if a.correct)
    page.get_by_text(right.text, exact=True).first.click()
    wait_for_app(page)
    expect(page.get_by_text("Right. " + right.feedback.split(":")[0]).first).to_be_visible(timeout=30_000)
    screenshot(page, "backprop", "lesson-check-yourself")
