"""Draw a digit with the mouse on the real canvas and see both networks read it; then the Mistakes page.

Each test enters the app at its home page and follows the sidebar link, as a
visitor does (a first visit straight to a deep link on a fresh server is a
separate routing question, see the lead's notes).
"""

import re

import pytest

from .conftest import assert_no_exception, draw_stroke, open_from_sidebar, screenshot, wait_for_app

TALL = {"width": 1400, "height": 2600}  # screenshots of the whole page: its main area scrolls


@pytest.mark.browser
def test_drawing_a_seven_is_read_by_both_networks(app_url, page):
    open_from_sidebar(page, app_url, "Draw & predict", "?digit=sample:3")
    page.wait_for_selector("text=What each network says")
    page.wait_for_selector("canvas")
    assert "/draw" in page.url
    assert_no_exception(page)
    assert "Draw a digit in the black box" in page.inner_text("body")  # empty canvas: a friendly hint

    canvas = page.locator("canvas").last  # fabric.js's top canvas takes the mouse
    # A 7: the bar, then the long diagonal down to the left.
    draw_stroke(page, canvas, [(70, 60), (140, 58), (205, 56), (170, 130), (140, 190), (120, 240)])
    # The drawing becomes the current digit, whose 784 pixels travel in the URL.
    page.wait_for_function("() => window.location.search.includes('digit=px')", timeout=60_000)
    wait_for_app(page)
    assert_no_exception(page)
    body = page.inner_text("body")
    assert "Draw a digit in the black box" not in body
    assert "your drawing, shrunk to 28 x 28" in body
    assert "FCNet (pretrained)" in body and "TinyVGG (pretrained)" in body  # the bar chart's legend
    # Both networks' top guess is shown; a clean 7 is read as 7 by both.
    said = dict(re.findall(r"(FCNet|TinyVGG) says\s+(\d)", body))
    assert said == {"FCNet": "7", "TinyVGG": "7"}, body[:3000]
    assert "The networks agree: each reads it as a 7" in body

    page.get_by_text("How your drawing became 28 x 28").click()
    page.wait_for_selector("text=Ink found")
    page.set_viewport_size(TALL)
    wait_for_app(page)
    assert_no_exception(page)
    assert "Centred" in page.inner_text("body")
    screenshot(page, "draw", "drawn_seven")


@pytest.mark.browser
def test_mistakes_page_shows_the_confusion_matrix_and_a_cell(app_url, page):
    open_from_sidebar(page, app_url, "Mistakes")
    page.wait_for_selector("text=Step through them", timeout=90_000)
    wait_for_app(page)
    assert_no_exception(page)
    body = page.inner_text("body")
    assert re.search(r"FCNet: \d\d\.\d\d% right", body)
    assert "Mistake 1 of" in body
    page.set_viewport_size(TALL)
    wait_for_app(page)
    screenshot(page, "mistakes", "mistakes")

    # Clicking a cell of the matrix picks it: true 4 (row), answered 9 (column).
    matrix = page.locator(".js-plotly-plot", has_text="the network's answer").first
    area = matrix.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 0.95, area["y"] + area["height"] * 0.45)
    page.wait_for_function("() => window.location.search.includes('true=4')", timeout=30_000)
    wait_for_app(page)
    assert "pred=9" in page.url
    assert "(true 4, answered 9: mistakes only)" in page.inner_text("body")

    page.get_by_role("button", name="Next mistake →").click()
    page.wait_for_selector("text=Mistake 2 of")
    wait_for_app(page)
    assert_no_exception(page)
    screenshot(page, "mistakes", "cell_4_as_9")
