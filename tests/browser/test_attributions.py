"""/attributions in real Chromium: the maps render, switching the method redraws them."""

from __future__ import annotations

import pytest

from tests.browser.conftest import assert_no_exception, screenshot, wait_for_app


def _settle(page, text: str) -> None:
    """Wait until ``text`` is on the page and the script has finished its run.

    Streamlit's status widget appears only about a second into a run, so its
    absence proves nothing; the app's data-test-script-state attribute does.
    """
    page.get_by_text(text).first.wait_for(state="attached", timeout=120_000)
    page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=120_000)
    page.wait_for_timeout(500)


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the first select box labelled ``label``."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.browser
def test_attributions_page_and_method_switch(app_url, page):
    page.set_viewport_size({"width": 1400, "height": 2400})  # Streamlit scrolls inside the page: a tall window shows all
    page.goto(f"{app_url}/attributions?digit=sample:7")
    wait_for_app(page)
    _settle(page, "Integrated Gradients convergence delta")
    assert_no_exception(page)
    assert page.get_by_role("heading", name="What made it say that?").is_visible()
    # both networks' maps, each with the legend sentence and the IG delta under it
    assert page.get_by_text("red: pixels that pushed towards '7'; blue: pixels that pushed away.").count() == 2
    assert page.get_by_text("Integrated Gradients convergence delta").count() == 2
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 4  # 2 networks, the grid, the sidebar digit
    screenshot(page, "attributions", "1-integrated-gradients")

    _choose(page, "Method", "Grad-CAM")
    _settle(page, "Grad-CAM is not available for FCNet")
    assert_no_exception(page)
    assert "method=grad_cam" in page.url
    assert page.get_by_text("Integrated Gradients convergence delta").count() == 0  # the old maps are gone
    assert page.get_by_text("red: regions whose features raised the score for '7'").count() == 1  # TinyVGG only
    screenshot(page, "attributions", "2-grad-cam")

    _choose(page, "Method", "Occlusion")
    _settle(page, "Covers the digit with a small black square")
    page.get_by_role("tab", name="Sanity check: random weights").click()
    _settle(page, "Similarity of the two maps (whole image)")
    assert_no_exception(page)
    assert page.get_by_text("Similarity of the two maps (whole image)").is_visible()
    screenshot(page, "attributions", "3-occlusion-sanity")
