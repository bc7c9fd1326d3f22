"""/lessons in real Chromium: open a step from a link, step on with Next, the URL follows."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from digitrec import lessons
from tests.browser.conftest import assert_no_exception, screenshot, wait_for_app

TALL = {"width": 1400, "height": 2400}  # the main area scrolls: a tall window shows a whole step
CONVOLUTION = lessons.load_lessons(lessons.LESSONS_DIR)[6]


def _heading(page, text: str):
    return page.get_by_role("heading", name=text, exact=True)


@pytest.mark.browser
def test_step_through_the_convolution_lesson(app_url, page):
    page.set_viewport_size(TALL)
    page.goto(f"{app_url}/lessons?lesson=7&step=1&digit=sample:3")
    wait_for_app(page)
    assert_no_exception(page)
    expect(_heading(page, f"7. {CONVOLUTION.title}")).to_be_visible(timeout=30_000)
    expect(_heading(page, CONVOLUTION.steps[0].title)).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"Step 1 of {len(CONVOLUTION.steps)}")).to_be_visible(timeout=30_000)
    assert re.search(r"[?&]lesson=7(&|$)", page.url) and re.search(r"[?&]step=1(&|$)", page.url)
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)  # the widget drew its figures
    wait_for_app(page)
    screenshot(page, "lessons", "1-convolution-step-1")

    page.get_by_role("button", name="Next →").click()
    wait_for_app(page)
    assert_no_exception(page)
    expect(_heading(page, CONVOLUTION.steps[1].title)).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"Step 2 of {len(CONVOLUTION.steps)}")).to_be_visible(timeout=30_000)
    expect(page).to_have_url(re.compile(r"[?&]step=2(&|$)"))
    assert "digit=sample%3A3" in page.url or "digit=sample:3" in page.url  # the digit stays in the link

    page.get_by_role("button", name="Next →").click()
    wait_for_app(page)
    assert_no_exception(page)
    expect(page).to_have_url(re.compile(r"[?&]step=3(&|$)"))
    expect(_heading(page, CONVOLUTION.steps[2].title)).to_be_visible(timeout=30_000)
    screenshot(page, "lessons", "2-convolution-step-3")

    page.get_by_role("button", name="← Previous").click()
    wait_for_app(page)
    expect(page).to_have_url(re.compile(r"[?&]step=2(&|$)"))
    expect(_heading(page, CONVOLUTION.steps[1].title)).to_be_visible(timeout=30_000)

    # A reload keeps the learner's place: the step is in the URL.
    page.reload()
    wait_for_app(page)
    assert_no_exception(page)
    expect(_heading(page, CONVOLUTION.steps[1].title)).to_be_visible(timeout=30_000)


@pytest.mark.browser
def test_check_yourself_gives_feedback(app_url, page):
    page.set_viewport_size(TALL)
    last = len(CONVOLUTION.steps)
    question = CONVOLUTION.steps[-1].questions[0]
    right = next(a for a in question.answers if a.correct)
    page.goto(f"{app_url}/lessons?lesson=7&step={last}")
    wait_for_app(page)
    assert_no_exception(page)
    page.get_by_text(right.text, exact=True).first.click()
    wait_for_app(page)
    expect(page.get_by_text("Right. " + right.feedback.split(".")[0]).first).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Next lesson →")).to_be_visible()
    screenshot(page, "lessons", "3-convolution-check-yourself")
