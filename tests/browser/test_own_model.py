"""Your own model in real Chromium: upload a learner's .pth on the Train page, then open the
convolutional explorer on it (screenshots under tests/screenshots/own_model/)."""

from __future__ import annotations

import pytest

from tests import learner_models
from tests.browser.conftest import assert_no_exception, screenshot, wait_for_app

KEY = "cnn5_stride2_avg"


@pytest.mark.browser
def test_upload_a_pth_and_open_the_cnn_explorer_on_it(app_url, page, tmp_path):
    path = tmp_path / f"{KEY}.pth"
    path.write_bytes(learner_models.trained(KEY)[1])

    page.goto(f"{app_url}/train?digit=sample:3")
    wait_for_app(page)
    page.get_by_text("Bring your own model from a notebook").click()
    page.locator(".st-key-train_import_file input[type=file]").set_input_files(str(path))
    page.get_by_text(f"mine: {KEY}").first.wait_for(timeout=300_000)
    wait_for_app(page, timeout_ms=300_000)
    assert_no_exception(page)
    body = page.locator('[data-testid="stMain"]').inner_text()
    assert "Layers: conv5x5(8,s=2,p=2) relu avgpool2 conv5x5(16,p=2) relu avgpool2 flatten linear(10)" in body
    assert "Test accuracy:" in body
    screenshot(page, "own_model", "train_upload")

    # Same session: follow the sidebar link (a new URL would be a new session without the upload).
    page.locator('[data-testid="stSidebarNav"] a[href$="/cnn"]').click()
    wait_for_app(page, timeout_ms=120_000)
    assert_no_exception(page)
    main = page.locator('[data-testid="stMain"]').inner_text()
    assert f"mine: {KEY}" in main  # the page names the network it reads the digit with
    assert "conv_1_1" in main and "exactly what the layer computed" in main
    screenshot(page, "own_model", "cnn_explorer")

    # The race page offers it as a contender; picked, the table shows it beside TinyVGG before any race.
    page.locator('[data-testid="stSidebarNav"] a[href$="/race"]').click()
    wait_for_app(page, timeout_ms=120_000)
    page.locator(".st-key-race_contenders").click()
    page.get_by_role("option", name=f"mine: {KEY}").filter(has_text="against TinyVGG").click()
    wait_for_app(page, timeout_ms=120_000)
    assert_no_exception(page)
    table = page.locator('[data-testid="stTable"]').first.inner_text()
    assert f"mine: {KEY}" in table and "TinyVGG (10 channels)" in table
    screenshot(page, "own_model", "race_contenders")
