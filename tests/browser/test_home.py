import pytest

from .conftest import assert_no_exception, screenshot, wait_for_app


@pytest.mark.browser
def test_home_page_renders_both_networks(app_url, page):
    page.goto(f"{app_url}/?digit=sample:3")
    wait_for_app(page)
    page.wait_for_selector("text=What each network says")
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    assert_no_exception(page)
    assert page.locator(".js-plotly-plot").count() >= 2
    body = page.inner_text("body")
    assert "FCNet (pretrained)" in body and "TinyVGG (pretrained)" in body
    assert "13,002" in body
    screenshot(page, "home", "home")
