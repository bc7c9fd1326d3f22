"""Sessions that end free what they held: a learner uploads a large checkpoint and starts a
long training run, then closes the tab; once the reconnect window has passed, the run's
thread is gone, the model and upload are dropped, and the server's memory falls back.

Counted from outside the server process (/proc): its threads, its child processes and its
resident memory, before, during and after.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from digitrec.engines.local import SPARE_NAME
from tests import processes, server
from tests.load import harness

GRACE_S = 2  # server.disconnectedSessionTTL for this test (Streamlit's default, 120 s, is for real classes)


def _status(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    # Processes under the server, not counting multiprocessing's resource tracker (started once per
    # server, stays by design) nor the spare worker waiting for the next run (engines.local.SpareWorker,
    # one per server from its first run on). A training worker left behind would count.
    children = sum(1 for p in processes.children(pid) if b"resource_tracker" not in p.cmdline and p.name != SPARE_NAME)
    return {"threads": int(fields["Threads"]), "rss_mb": int(fields["VmRSS"].split()[0]) // 1024, "children": children}


def _big_checkpoint() -> bytes:
    from digitrec import checkpoints, models

    model = models.build(models.FCConfig(hidden=(2048, 2048)), seed=0)  # 5.8 M parameters: 23 MB
    return checkpoints.to_bytes(model, test_accuracy=None, epochs=0, seed=0)


async def _learner(url: str, checkpoint: bytes, hold: bool, server_pid: int | None = None) -> dict | None:
    """Open the Train page; with ``hold``, upload the checkpoint and start a long run; then close the tab.
    Returns the server's ``_status`` while the run trains (with ``hold`` and ``server_pid``)."""
    training = None
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=harness.CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        page.set_default_timeout(180_000)
        await page.goto(url + "/train")
        await harness._wait_for_app(page)
        if hold:
            await page.locator(".st-key-train_upload_file input[type=file]").set_input_files(
                files=[{"name": "big.safetensors", "mimeType": "application/octet-stream", "buffer": checkpoint}])
            await page.locator(harness.LOADED).first.wait_for(state="attached")
            epochs = page.locator(".st-key-train_epochs input").first
            await epochs.fill("50")
            await epochs.press("Enter")
            await harness._wait_for_app(page)
            await page.locator(".st-key-train_start button").first.click()
            await page.locator(".st-key-train_pause button").first.wait_for()  # the run is going
            await page.wait_for_timeout(3000)
            if server_pid is not None:
                training = _status(server_pid)  # before the tab closes: after it, the release may come first
        await context.close()  # the tab is closed: its websocket goes
        await browser.close()
    return training


def _released(log: Path, count: int, timeout: float) -> dict:
    """The sweeper's ``count``-th "released" line in the server's timing log (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
        released = [e for e in lines if "released" in e]
        if len(released) >= count:
            return released[count - 1]
        time.sleep(0.5)
    pytest.fail(f"the server released fewer than {count} ended sessions within {timeout:.0f} s")


def _settle(pid: int, predicate, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    status = _status(pid)
    while not predicate(status) and time.monotonic() < deadline:
        time.sleep(1)
        status = _status(pid)
    return status


@pytest.mark.load
def test_a_closed_tab_frees_its_run_models_and_uploads(tmp_path):
    log = tmp_path / "timing.jsonl"
    proc, url = harness.start_server(log, tmp_path / "server.log", f"--server.disconnectedSessionTTL={GRACE_S}")
    try:
        checkpoint = _big_checkpoint()
        harness.run_async(_learner(url, checkpoint, hold=False))  # warm up: data, weights, torch's threads, the sweeper
        first = _released(log, 1, timeout=60)
        assert first["tracked_sessions"] == 0 and not first["run_threads"]
        before = _status(proc.pid)

        training = harness.run_async(_learner(url, checkpoint, hold=True, server_pid=proc.pid))
        during = _status(proc.pid)  # the tab is closed; for GRACE_S its session could still reconnect
        released = _released(log, 2, timeout=60)
        after = _settle(proc.pid, lambda s: s["rss_mb"] < during["rss_mb"] - 30, timeout=30)
        print(f"\nserver before {before}, training {training}, as the tab closed {during}, after the release {after}; "
              f"{released}")

        assert during["rss_mb"] > before["rss_mb"] + 30, "the upload and the run did not show in memory"
        assert released["tracked_sessions"] == 0
        assert released["run_threads"] == [], "the ended session's run still has a thread"
        assert training["children"] > before["children"], "the run's worker was not found under the server"
        assert after["children"] <= before["children"]
        # The 23 MB model, its 23 MB upload and the run's state are gone: memory falls back, to about where it
        # was (the page process gives large freed blocks back: digitrec.allocator.return_large_blocks).
        assert after["rss_mb"] < during["rss_mb"] - 30, (before, during, after)
        assert after["rss_mb"] < before["rss_mb"] + 20, (before, during, after)
        assert proc.poll() is None
    finally:
        server.stop(proc)
