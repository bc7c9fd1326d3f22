"""The convolutional explorer in real Chromium: overview, the convolution detail, and Play."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import assert_no_exception, screenshot, wait_for_app

FOLDER = "cnn"


def _open(page, url: str) -> None:
    page.set_viewport_size({"width": 1400, "height": 2400})  # Streamlit scrolls inside: a tall window shows it all
    # Streamlit shows a "Page not found" modal over the first page a fresh server is asked for
    # when it is not the default page (streamlit/streamlit#9992): load the app's root once first.
    page.goto(url.split("/cnn")[0] + "/")
    wait_for_app(page)
    page.goto(url)
    wait_for_app(page)
    page.wait_for_selector('[data-testid="stMetricLabel"]')
    wait_for_app(page)


def _position(page) -> tuple[int, int]:
    """The output position the arithmetic panel explains, read from its metric label."""
    label = page.locator('[data-testid="stMetricLabel"]').nth(1).inner_text()
    m = re.search(r"row (\d+), col (\d+)", label)
    assert m, label
    return int(m.group(1)), int(m.group(2))


def _button(page, label: str):
    """The Play or Stop button, found by its widget key (Streamlit's header shows its own "Stop" while running)."""
    return page.locator(f".st-key-cnn_conv_{label.lower()}_button button").first  # (a hidden copy follows)


def _metrics(page) -> tuple[float, float]:
    values = page.locator('[data-testid="stMetricValue"]')
    return float(values.nth(0).inner_text()), float(values.nth(1).inner_text())


@pytest.mark.browser
def test_cnn_overview_conv_detail_and_play(app_url, page):
    _open(page, f"{app_url}/cnn?digit=sample:7")
    assert_no_exception(page)
    assert page.get_by_text("Page not found").count() == 0
    main = page.locator('[data-testid="stMainBlockContainer"]')
    charts = main.locator(".js-plotly-plot")
    assert charts.count() >= 3  # overview, the arithmetic, the output map
    # The overview draws one heatmap per feature map: 1 input + 10 layers x 10 maps (+ the flatten strip).
    n_maps = page.evaluate(
        """() => document.querySelector('[data-testid="stMainBlockContainer"] .js-plotly-plot')
                 .data.filter(t => t.type === 'heatmap' && t.meta && t.meta[0] !== 'flatten').length"""
    )
    assert n_maps == 101
    screenshot(page, FOLDER, "overview")

    # The convolution detail: hand sum equals the layer's output.
    page.get_by_text("kernel × patch, summed, + bias").scroll_into_view_if_needed()
    hand, layer = _metrics(page)
    assert hand == layer
    screenshot(page, FOLDER, "conv_detail")

    # Play slides the window along; Stop stops it.
    before = _position(page)
    _button(page, "Play").click()
    _button(page, "Stop").wait_for()
    moved = before
    for _ in range(60):  # up to ~15 s on a slow machine
        page.wait_for_timeout(250)
        moved = _position(page)
        if moved[0] * 100 + moved[1] >= before[0] * 100 + before[1] + 2:
            break
    assert moved != before and moved[0] * 100 + moved[1] > before[0] * 100 + before[1], (before, moved)
    screenshot(page, FOLDER, "playing")
    _button(page, "Stop").click()
    _button(page, "Play").wait_for()
    wait_for_app(page)
    stopped = _position(page)
    page.wait_for_timeout(2000)
    assert _position(page) == stopped  # really stopped
    hand, layer = _metrics(page)
    assert hand == layer
    assert_no_exception(page)


@pytest.mark.browser
def test_cnn_deep_layer_from_a_link(app_url, page):
    _open(page, f"{app_url}/cnn?digit=sample:3&layer=conv_2_1&map=3&row=0&col=5&scope=network")
    assert_no_exception(page)
    assert _position(page) == (0, 5)
    hand, layer = _metrics(page)
    assert hand == layer
    page.get_by_text("kernel × patch, summed, + bias").scroll_into_view_if_needed()
    screenshot(page, FOLDER, "conv_2_1_border")
