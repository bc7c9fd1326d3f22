"""Issue 13 in real Chromium: open a biography from the CNN overview, place a drawn digit on the map, fool a network."""

import re

import pytest

from .conftest import assert_no_exception, draw_stroke, open_from_sidebar, screenshot, wait_for_app

TALL = {"width": 1400, "height": 2600}
SLOW = 180_000  # ms: the first visit computes the test-set statistics and maps once per server


@pytest.mark.browser
def test_biography_opens_from_the_cnn_overview(app_url, page):
    open_from_sidebar(page, app_url, "Convolutional network", "?net=cnn")
    page.wait_for_selector("text=Dead units", timeout=SLOW)
    assert_no_exception(page)
    assert "Dead units (never positive" in page.inner_text("body")  # the pretrained TinyVGG's dead maps are named
    page.get_by_text(re.compile(r"See the biography of conv_1_1 unit 0")).click()
    page.wait_for_selector("text=The test digits that excite it most", timeout=SLOW)
    wait_for_app(page, timeout_ms=SLOW)
    assert "/unit" in page.url and "layer=conv_1_1" in page.url
    assert_no_exception(page)
    body = page.inner_text("body")
    assert "Receptive field" in body and "3 × 3 px" in body
    assert "The picture it likes best" in body
    page.set_viewport_size(TALL)
    wait_for_app(page, timeout_ms=SLOW)
    screenshot(page, "units", "biography")
    # A link straight to a map of the second block: its cells see 14 x 14 pixels.
    page.goto(f"{app_url}/unit?layer=conv_2_2&unit=2&net=cnn")
    page.wait_for_selector("text=The test digits that excite it most", timeout=SLOW)
    wait_for_app(page, timeout_ms=SLOW)
    assert_no_exception(page)
    assert "14 × 14 px" in page.inner_text("body")
    screenshot(page, "units", "biography_conv_2_2")


@pytest.mark.browser
def test_a_drawn_digit_lands_on_the_map(app_url, page):
    open_from_sidebar(page, app_url, "Where a digit lands", "?net=fc")
    page.wait_for_selector("text=training digits closest to", timeout=SLOW)
    page.wait_for_selector("canvas")
    assert_no_exception(page)
    canvas = page.locator("canvas").last
    # A 1: one stroke down the middle.
    draw_stroke(page, canvas, [(140, 40), (138, 120), (136, 200), (135, 245)])
    page.wait_for_function("() => window.location.search.includes('digit=px')", timeout=60_000)
    wait_for_app(page, timeout_ms=SLOW)
    assert_no_exception(page)
    body = page.inner_text("body")
    assert "the star is your drawing" in body
    placed = re.search(r"your digit placed in (\d+) ms", body)
    assert placed, body[:2000]
    page.set_viewport_size(TALL)
    wait_for_app(page, timeout_ms=SLOW)
    screenshot(page, "units", "map")


@pytest.mark.browser
def test_fooling_fcnet_into_a_nine(app_url, page):
    open_from_sidebar(page, app_url, "Break it", "?digit=sample:7&net=fc")
    page.wait_for_selector("text=on the edited digit", timeout=SLOW)
    wait_for_app(page, timeout_ms=SLOW)
    assert_no_exception(page)
    body = page.inner_text("body")
    said = re.search(r"FCNet \(pretrained\) on the edited digit\s+(\d)", body)
    assert said and said.group(1) == "9", body[:3000]
    assert re.search(r"smallest budget that flips FCNet \(pretrained\) to 9: every pixel may move by at most 0\.\d+", body)
    page.set_viewport_size(TALL)
    wait_for_app(page, timeout_ms=SLOW)
    screenshot(page, "units", "break_it")
