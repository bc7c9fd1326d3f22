"""/lessons in real Chromium: open a step from a link, step on with Next, the URL follows; make a
prediction and see it revealed; answer a question; change the digit from the Lessons sidebar."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from digitrec import lessons
from tests.browser.conftest import assert_no_exception, screenshot, wait_for_app

TALL = {"width": 1400, "height": 2400}  # the main area scrolls: a tall window shows a whole step
COURSE = {lesson.name: lesson for lesson in lessons.load_lessons(lessons.LESSONS_DIR)}
CONVOLUTION = COURSE["convolution"]


def _heading(page, text: str):
    return page.get_by_role("heading", name=text, exact=True)


@pytest.mark.browser
def test_step_through_the_convolution_lesson(app_url, page):
    page.set_viewport_size(TALL)
    page.goto(f"{app_url}/lessons?lesson=convolution&step=1&digit=sample:3")
    wait_for_app(page)
    assert_no_exception(page)
    expect(_heading(page, f"{CONVOLUTION.number}. {CONVOLUTION.title}")).to_be_visible(timeout=30_000)
    expect(_heading(page, CONVOLUTION.steps[0].title)).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"Step 1 of {len(CONVOLUTION.steps)}")).to_be_visible(timeout=30_000)
    assert re.search(r"[?&]lesson=convolution(&|$)", page.url) and re.search(r"[?&]step=1(&|$)", page.url)
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
    page.goto(f"{app_url}/lessons?lesson=convolution&step={last}")
    wait_for_app(page)
    assert_no_exception(page)
    # The first question of the step names the learner's numbers; the second is plain text: answer that one.
    question = CONVOLUTION.steps[-1].questions[1]
    right = next(a for a in question.answers if a.correct)
    page.get_by_text(right.text, exact=True).first.click()
    wait_for_app(page)
    expect(page.get_by_text("Right. " + right.feedback.split(".")[0]).first).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Next lesson →")).to_be_visible()
    # The score is kept and listed in the sidebar.
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text("your score: 1 of", exact=False)).to_be_visible(timeout=30_000)
    screenshot(page, "lessons", "3-convolution-check-yourself")


@pytest.mark.browser
def test_predict_then_reveal_and_change_the_digit_from_the_sidebar(app_url, page):
    page.set_viewport_size(TALL)
    lesson = COURSE["relu-and-pooling"]
    page.goto(f"{app_url}/lessons?lesson=relu-and-pooling&step=1&digit=sample:7")
    wait_for_app(page)
    assert_no_exception(page)
    expect(_heading(page, lesson.steps[0].title)).to_be_visible(timeout=30_000)
    commit = page.get_by_role("button", name="Commit my prediction")
    expect(commit).to_be_disabled()
    expect(page.get_by_role("link", name=re.compile("^Open "))).to_have_count(0)  # the widget waits
    screenshot(page, "lessons", "4-prediction-asked")

    box = page.get_by_label("Your prediction")
    box.fill("50")
    box.press("Enter")
    wait_for_app(page)
    expect(commit).to_be_enabled(timeout=30_000)
    commit.click()
    wait_for_app(page)
    assert_no_exception(page)
    expect(page.get_by_text("You predicted 50.", exact=False)).to_be_visible(timeout=30_000)
    expect(page.get_by_role("link", name=re.compile("^Open "))).to_have_count(1, timeout=60_000)
    expect(page.locator(".js-plotly-plot").nth(1)).to_be_visible(timeout=30_000)  # sidebar digit + the widget
    wait_for_app(page)
    screenshot(page, "lessons", "5-prediction-revealed")

    # Another digit, picked in the Lessons sidebar: the lesson stays, the digit changes everywhere.
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text("sample 7 (labelled 7)", exact=True)).to_be_visible(timeout=30_000)
    sidebar.get_by_role("button", name="4", exact=True).click()
    wait_for_app(page)
    assert_no_exception(page)
    expect(sidebar.get_by_text("sample 4 (labelled 4)", exact=True)).to_be_visible(timeout=30_000)
    expect(page).to_have_url(re.compile(r"digit=sample(%3A|:)4"))
    expect(page).to_have_url(re.compile(r"[?&]lesson=relu-and-pooling(&|$)"))
    expect(_heading(page, lesson.steps[0].title)).to_be_visible(timeout=30_000)
    expect(page.get_by_text("You predicted 50.", exact=False)).to_be_visible()  # the commitment is kept
    wait_for_app(page)
    screenshot(page, "lessons", "6-digit-changed-from-the-sidebar")


@pytest.mark.browser
def test_gradient_descent_on_a_slice_of_the_loss_and_the_dead_maps(app_url, page):
    page.set_viewport_size(TALL)
    learning = COURSE["learning"]
    index = next(i for i, s in enumerate(learning.steps) if "loss_slice" in [w.name for w in s.widgets])
    page.goto(f"{app_url}/lessons?lesson=learning&step={index + 1}&digit=sample:3")
    wait_for_app(page)
    assert_no_exception(page)
    prediction = learning.steps[index].predictions[0]
    right = next(a for a in prediction.answers if a.correct)
    page.get_by_text(right.text, exact=True).first.click()
    wait_for_app(page)
    page.get_by_role("button", name="Commit my prediction").click()
    wait_for_app(page)
    expect(page.get_by_text("That is what happens.", exact=False)).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Take a step").first.click()
    wait_for_app(page)
    assert_no_exception(page)
    expect(page.get_by_text("Step 1: new weight = old weight − learning rate × slope", exact=False)).to_be_visible(
        timeout=30_000)
    page.get_by_role("button", name="Take a step").first.click()
    wait_for_app(page)
    expect(page.get_by_text("Step 2: new weight", exact=False)).to_be_visible(timeout=30_000)
    screenshot(page, "lessons", "7-loss-slice-two-steps")

    # The overview of lesson 11 marks the maps that never fire.
    page.goto(f"{app_url}/lessons?lesson=tinyvgg-end-to-end&step=1&digit=sample:3")
    wait_for_app(page, timeout_ms=120_000)
    assert_no_exception(page)
    expect(page.get_by_text("ReLU maps are dead", exact=False)).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot").nth(1)).to_be_visible(timeout=30_000)
    wait_for_app(page)
    screenshot(page, "lessons", "8-overview-dead-maps")


def _biography_step(page, app_url: str, name: str, says: str) -> re.Match:
    """Open lesson ``name`` at its step with a unit biography; the text (the sentence holding ``says``, matched as
    a regular expression ending in the map's number) names a map: the biography's picker shows that map."""
    lesson = COURSE[name]
    step = next(i for i, s in enumerate(lesson.steps) if "unit_biography" in [w.name for w in s.widgets])
    page.goto(f"{app_url}/lessons?lesson={name}&step={step + 1}&digit=sample:3")
    wait_for_app(page, timeout_ms=180_000)
    assert_no_exception(page)
    sentence = page.get_by_text(re.compile(says.split("(")[0].strip())).first
    expect(sentence).to_be_visible(timeout=120_000)
    named = re.search(says, " ".join(sentence.inner_text().split()))
    assert named, sentence.inner_text()
    # The biography's picker reads "map 2" or "map 6 (dead)" (other widgets of the step have pickers of their own).
    shown = re.compile(rf"map {named.group(named.lastindex)}( \(dead\))?")
    pickers = page.get_by_role("combobox", name="Feature map")
    for _ in range(240):
        if any(shown.fullmatch(pickers.nth(i).input_value()) for i in range(pickers.count())):
            break
        page.wait_for_timeout(500)
    else:
        pytest.fail(f"no picker shows {shown.pattern}: {[pickers.nth(i).input_value() for i in range(pickers.count())]}")
    return named


@pytest.mark.browser
def test_lessons_show_the_unit_their_text_names(app_url, page):
    """Lesson 11 names the clearest map of conv_2_2 and shows its biography; lesson 10 shows the quietest map's."""
    page.set_viewport_size(TALL)
    _biography_step(page, app_url, "tinyvgg-end-to-end", r"patches agree most, map (\d+)")
    expect(page.get_by_text("What its strongest cell saw", exact=False).first).to_be_visible(timeout=60_000)
    wait_for_app(page)
    screenshot(page, "lessons", "9-block-2-map-named-from-its-patches")

    _biography_step(page, app_url, "relu-and-pooling", r"The map that fires least is (conv_\d_\d) map (\d+)")
    expect(page.get_by_text("is dead", exact=False).first).to_be_visible(timeout=60_000)
    wait_for_app(page)
    screenshot(page, "lessons", "10-dead-map-biography")


@pytest.mark.browser
def test_the_map_step_says_the_separation_its_map_measures(app_url, page):
    """Lesson 15's map step names FCNet's separation at the pixels; the map beside it, at the pixels too,
    measures the same share in its caption."""
    page.set_viewport_size(TALL)
    lesson = COURSE["breaking-it"]
    step = next(i for i, s in enumerate(lesson.steps) if "digit_map" in [w.name for w in s.widgets])
    page.goto(f"{app_url}/lessons?lesson=breaking-it&step={step + 1}&digit=sample:3")
    wait_for_app(page, timeout_ms=180_000)
    assert_no_exception(page)
    sentence = page.get_by_text(re.compile(r"On FCNet.s\s+map\s+it\s+is")).first  # the lesson's line breaks stay in the text
    expect(sentence).to_be_visible(timeout=120_000)
    said = re.search(r"On FCNet.s map it is (\d+)% at the input pixels \((mixed|partly separated|clear islands)\)",
                     " ".join(sentence.inner_text().split()))
    assert said, sentence.inner_text()
    caption = page.get_by_text(re.compile(r"most of their 10 nearest\s+dots on this map")).first
    expect(caption).to_be_visible(timeout=120_000)
    assert f"For {said.group(1)}% of the first 2,000 dots" in caption.inner_text()
    assert f"({said.group(2)};" in caption.inner_text()
    wait_for_app(page)
    screenshot(page, "lessons", "11-map-step-separation")
