"""The /fc page in a real browser: step through with Next, open the neuron panel and the weight grid."""

from __future__ import annotations

import pytest

from tests.browser.conftest import assert_no_exception, screenshot, wait_for_app, wait_for_linked_page

pytestmark = pytest.mark.browser


def _open(page, url: str) -> None:
    """Open a link and wait for this page's own content (on a cold server the frontend shows / first)."""
    page.set_viewport_size({"width": 1400, "height": 2600})  # Streamlit scrolls inside: a tall window shows it all
    page.goto(url)
    wait_for_linked_page(page)
    page.wait_for_selector("text=Fully connected network, step by step")
    page.wait_for_selector("text=of 8:")
    page.wait_for_selector(".js-plotly-plot")
    wait_for_app(page)


def _click_next(page, times: int) -> None:
    for _ in range(times):
        page.get_by_role("button", name="Next ▶").click()
        wait_for_app(page)


def test_fc_page_steps_neuron_and_grid(page, app_url):
    _open(page, f"{app_url}/fc?digit=sample:3")
    assert_no_exception(page)
    assert page.get_by_text("Step 1 of 8: The digit as 28 × 28 numbers").is_visible()
    screenshot(page, "fc", "step1_digit_numbers")

    _click_next(page, 1)
    assert page.get_by_text("Step 2 of 8").is_visible()
    assert "step=2" in page.url
    screenshot(page, "fc", "step2_flatten")

    _click_next(page, 1)
    assert page.get_by_text("Step 3 of 8: fc_1: 16 weighted sums").is_visible()
    assert "step=3" in page.url
    assert_no_exception(page)
    screenshot(page, "fc", "step3_fc_1")

    _click_next(page, 1)
    assert page.get_by_text("Step 4 of 8: relu_1").is_visible()
    screenshot(page, "fc", "step4_relu_1")

    page.get_by_role("tab", name="Pick a neuron").click()
    wait_for_app(page)
    assert_no_exception(page)
    panel = page.get_by_role("tabpanel", name="Pick a neuron")
    assert panel.get_by_text("Σ wᵢxᵢ + b", exact=True).is_visible()
    assert panel.get_by_text("(the most active)").is_visible()
    screenshot(page, "fc", "neuron_panel")

    page.get_by_role("tab", name="All first-layer neurons").click()
    wait_for_app(page)
    assert_no_exception(page)
    screenshot(page, "fc", "weight_grid")


def test_fc_link_opens_at_step(page, app_url):
    _open(page, f"{app_url}/fc?digit=sample:3&step=8")
    assert_no_exception(page)
    assert page.get_by_text("Step 8 of 8: Softmax").is_visible()
    screenshot(page, "fc", "step8_softmax")
