"""`make serve`: replicas behind Debian's nginx (scripts/serve), started and stopped as one.

In `make test`: through nginx a page loads, its websocket drives the app (a page switch
reruns the script and draws), and an upload reaches the replica that holds the session
(the sticky cookie). In `make load` (marker big_class, left out of `make test` for its
minutes): the whole class runs through it.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests import server
from tests.load import harness
from tests.load.test_load import SIZES, run_and_check


@pytest.fixture
def served(tmp_path):
    """scripts/serve with two replicas on a free loopback port: (url, timing log, process)."""
    port = server.free_port()
    timing_log = tmp_path / "timing.jsonl"
    env = {**os.environ, "DIGITREC_TIMING_LOG": str(timing_log)}
    proc = subprocess.Popen(
        [str(harness.REPO / "scripts" / "serve"), "--address", "127.0.0.1", "--port", str(port),
         "--replicas", os.environ.get("DIGITREC_LOAD_REPLICAS", "2"), "--log-dir", str(tmp_path / "logs")],
        cwd=harness.REPO, env=env, stdout=open(tmp_path / "serve.out", "w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_healthy(url, proc, timeout=240)
        yield url, timing_log, proc
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("scripts/serve did not stop on Ctrl-C")
        children = subprocess.run(["pgrep", "-f", f"nginx -c {tmp_path}|--log-dir {tmp_path}"],
                                  capture_output=True, text=True).stdout.split()
        assert not children


async def _through_nginx(url: str) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=harness.CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        page.set_default_timeout(180_000)
        learner = harness.Learner(0, digit="test:42")
        await page.goto(url + "/?digit=test:42")
        await harness._wait_for_app(page)
        cookies = {c["name"]: c["value"] for c in await context.cookies()}
        await harness._visit(page, learner, "Draw & predict")  # a rerun over the websocket
        said = await page.get_by_text("What each network says").count()
        await harness._visit(page, learner, "Train a network")
        await page.locator(".st-key-train_upload_file input[type=file]").set_input_files(
            files=[{"name": "mine.safetensors", "mimeType": "application/octet-stream",
                    "buffer": harness.small_checkpoint()}])
        await page.locator(harness.LOADED).first.wait_for(state="attached")
        await harness._wait_for_app(page)
        await harness._check_page(page, learner, "train")
        await browser.close()
        return {"cookies": cookies, "said": said, "problems": learner.problems}


@pytest.mark.load
def test_a_page_its_websocket_and_an_upload_work_through_nginx(served):
    url, timing_log, _ = served
    result = harness.run_async(_through_nginx(url))
    assert "digitrec_replica" in result["cookies"]  # the sticky cookie nginx set
    assert result["said"] >= 1, "the Draw page did not draw through the websocket"
    assert not result["problems"], result["problems"]
    entries = harness.timing_entries(timing_log)
    assert {e["page"] for e in entries} >= {"home", "draw", "train"}
    assert len({e["pid"] for e in entries}) == 1  # one learner, one replica: the session stayed put


@pytest.mark.big_class
def test_a_class_through_nginx(served):
    url, timing_log, proc = served
    summary = run_and_check(url, max(SIZES), timing_log, "nginx")
    assert summary["replicas_used"] >= 2, "nginx sent every learner to one replica"
    assert proc.poll() is None
