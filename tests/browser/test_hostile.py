"""Odd input in real Chromium (issue 12): an image of pure noise is read but said not to look
like a digit; a wide network's CNN overview shows a page of maps with a picker for the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from .conftest import assert_no_exception, open_from_sidebar, screenshot, wait_for_app

TALL = {"width": 1400, "height": 2600}


@pytest.mark.browser
def test_an_upload_of_noise_is_read_with_a_warning(app_url, page):
    noise = np.random.default_rng(0).integers(0, 256, (280, 280), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    open_from_sidebar(page, app_url, "Draw & predict", "?digit=sample:3")
    page.locator('[data-testid="stFileUploader"] input[type=file]').first.set_input_files(
        files=[{"name": "noise.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    # Said beside the picture the networks read, which shows whichever tab the rerun opens.
    page.locator("[data-testid=stAlert]", has_text="does not look like a digit").first.wait_for(timeout=60_000)
    wait_for_app(page)
    assert_no_exception(page)
    assert "digit=px" in page.url  # it became the current digit: the networks read it anyway
    page.set_viewport_size(TALL)
    screenshot(page, "hostile", "draw-noise")


@pytest.mark.browser
def test_a_wide_network_shows_a_page_of_maps_and_a_picker(app_url, page):
    from digitrec import checkpoints, models

    wide = models.build(models.TinyVGGConfig(channels=40), seed=0)
    data = checkpoints.to_bytes(wide, test_accuracy=None, epochs=0, seed=0)
    open_from_sidebar(page, app_url, "Train a network", "?digit=sample:3")
    page.locator(".st-key-train_upload_file input[type=file]").set_input_files(
        files=[{"name": "wide.safetensors", "mimeType": "application/octet-stream", "buffer": data}])
    page.locator('[data-testid="stAlertContentSuccess"]:has-text("Loaded")').first.wait_for(state="attached", timeout=60_000)
    wait_for_app(page)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Convolutional network", exact=True).click()
    page.wait_for_timeout(500)
    wait_for_app(page)
    page.locator('.st-key-net_picker [data-testid="stSelectbox"]').click()
    page.keyboard.type("My TinyVGG (40")
    page.get_by_role("option", name="My TinyVGG (40 channels) (uploaded)").click()
    page.wait_for_timeout(500)
    wait_for_app(page)
    page.get_by_text("Maps shown (this network has 40 per layer)").wait_for(timeout=60_000)
    assert_no_exception(page)
    page.set_viewport_size(TALL)
    screenshot(page, "hostile", "cnn-wide-picker")
