"""Many learners at once: N Playwright browser contexts against one digitrec server
(or `make serve`'s nginx front), each a learner with their own digit.

Every learner visits every page through the sidebar; learner 0 draws their digit on
the canvas, the others pick one by link; two learners train (short runs, different
batch sizes), one uploads a checkpoint. Checked: no exception box anywhere, nobody's
digit, model or run changes because of another learner, the shared pretrained models
hash the same before and after (the server logs their hash on every run), every
page finishes. Measured: each page's time in the browser (click to the end of the
script run) and on the server alone (script run time from the timing log).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tests.server import start_streamlit

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "tests" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]
# The sidebar's pages, in the order a learner visits them, and the name the timing log gives each.
PAGE_PATHS = {"Home": "home", "Draw & predict": "draw", "Fully connected network": "fc",
              "Convolutional network": "cnn", "What made it say that?": "attributions", "Mistakes": "mistakes",
              "Train a network": "train", "FC vs CNN race": "race", "Lessons": "lessons"}
PAGES = list(PAGE_PATHS)
TRAINERS = {1: 128, 2: 64}  # learner -> batch size of their short run (one epoch of 60,000 digits)
UPLOADER = 3
DRAWER = 0
PAGE_TIMEOUT_MS = 240_000  # one page under the heaviest load here; a page that takes longer fails
# The success boxes an upload and a run end with ("Loaded" alone also matches "downloaded").
# The upload's box sits in a collapsed expander: wait for it to be there, not to be visible.
LOADED = '[data-testid="stAlertContentSuccess"]:has-text("Loaded")'
FINISHED = '[data-testid="stAlertContentSuccess"]:has-text("Finished:")'


def start_server(timing_log: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`streamlit run` on a free loopback port with the timing log on; (process, url)."""
    env = {**os.environ, "DIGITREC_TIMING_LOG": str(timing_log), "PYTHONPATH": str(REPO)}
    return start_streamlit(log, *extra, env=env)


def pretrained_hashes() -> dict[str, str]:
    """The hashes the server must log: the committed weights' parameters, hashed as state.pretrained_hashes does."""
    from digitrec import checkpoints

    out = {}
    for key in ("fc", "cnn"):
        h = hashlib.sha256()
        for name, tensor in sorted(checkpoints.load_pretrained(key).model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        out[key] = h.hexdigest()[:16]
    return out


def small_checkpoint() -> bytes:
    from digitrec import checkpoints, models

    model = models.build(models.FCConfig(hidden=(8,)), seed=3)
    return checkpoints.to_bytes(model, test_accuracy=None, epochs=0, seed=3)


# ---------------------------------------------------------------- one learner


@dataclass
class Learner:
    index: int
    digit: str = ""  # the ?digit= reference this learner chose
    page_seconds: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    run_note: str = ""


async def _wait_for_app(page, timeout_ms: int = PAGE_TIMEOUT_MS) -> None:
    await page.wait_for_selector('[data-testid="stMainBlockContainer"]', timeout=timeout_ms)
    await page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=timeout_ms)
    await page.wait_for_timeout(300)
    await page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=timeout_ms)


async def _check_page(page, learner: Learner, where: str) -> None:
    boxes = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    if await boxes.count():
        text = (await boxes.first.inner_text())[:300]
        learner.problems.append(f"learner {learner.index} on {where}: an error box: {text}")
    digit = parse_qs(urlparse(page.url).query).get("digit", [""])[0]
    if learner.digit and digit != learner.digit:
        learner.problems.append(f"learner {learner.index} on {where}: digit {digit[:20]!r}, not their {learner.digit[:20]!r}")


async def _visit(page, learner: Learner, name: str) -> None:
    start = time.monotonic()
    await page.locator('[data-testid="stSidebarNav"]').get_by_text(name, exact=True).click()
    try:  # the click asks for a rerun at once ("rerunRequested"), unless the run was already done
        await page.wait_for_selector('[data-test-script-state="notRunning"]', state="detached", timeout=5000)
    except Exception:  # noqa: BLE001 - a run faster than the poll: nothing to wait for
        pass
    await _wait_for_app(page)
    learner.page_seconds.setdefault(name, []).append(time.monotonic() - start)
    await _check_page(page, learner, name)


async def _network_options(page) -> list[str]:
    """The sidebar network picker's options on an explorer page."""
    box = page.locator('.st-key-net_picker [data-testid="stSelectbox"]')
    # On a busy server the list can open late, or a rerun that lands just after the click
    # redraws the sidebar and closes it (CI once read [], once waited 4 minutes): click again.
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while True:
        await _wait_for_app(page)
        await box.click()
        try:
            await page.get_by_role("option").first.wait_for(timeout=10_000)
            break
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: the list did not open this time
            if time.monotonic() > deadline:
                raise
            await page.keyboard.press("Escape")
    options = await page.get_by_role("option").all_inner_texts()
    await page.keyboard.press("Escape")
    return options


async def _draw_digit(page, learner: Learner) -> None:
    await page.wait_for_selector("canvas", timeout=PAGE_TIMEOUT_MS)
    canvas = page.locator("canvas").last
    box = await canvas.bounding_box()
    x0, y0 = box["x"], box["y"]
    points = [(140, 40), (142, 120), (140, 200), (138, 250)]  # a 1
    await page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    await page.mouse.down()
    for x, y in points[1:]:
        await page.mouse.move(x0 + x, y0 + y, steps=10)
    await page.mouse.up()
    await page.wait_for_function("() => window.location.search.includes('digit=px')", timeout=PAGE_TIMEOUT_MS)
    await _wait_for_app(page)
    learner.digit = parse_qs(urlparse(page.url).query)["digit"][0]


async def _train(page, learner: Learner, batch: int) -> None:
    """One epoch on all 60,000 digits at this batch size; the run must end with this learner's own step count."""
    epochs = page.locator(".st-key-train_epochs input").first
    await epochs.fill("1")
    await epochs.press("Enter")
    size = page.locator(".st-key-train_batch input").first
    await size.fill(str(batch))
    await size.press("Enter")
    await _wait_for_app(page)
    await page.locator(".st-key-train_start button").first.click()
    await page.locator(FINISHED).first.wait_for(timeout=PAGE_TIMEOUT_MS * 2)
    await _wait_for_app(page)
    text = await page.locator(FINISHED).first.inner_text()
    learner.run_note = text
    from digitrec import config

    expected = -(-(config.TRAIN_DIGITS - config.VALIDATION_SIZE) // batch)  # validation digits are held out
    if f"Finished: {expected:,} steps" not in text:
        learner.problems.append(f"learner {learner.index}: their run says {text!r}, expected {expected:,} steps")


async def _upload(page, learner: Learner, checkpoint: bytes) -> None:
    await page.locator(".st-key-train_upload_file input[type=file]").set_input_files(
        files=[{"name": "mine.safetensors", "mimeType": "application/octet-stream", "buffer": checkpoint}])
    await page.locator(LOADED).first.wait_for(state="attached", timeout=PAGE_TIMEOUT_MS)
    await _wait_for_app(page)


async def learner_session(browser, base: str, index: int, checkpoint: bytes, uploaded: asyncio.Event,
                          trained: asyncio.Event) -> Learner:
    learner = Learner(index)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        learner.digit = "" if index == DRAWER else f"test:{100 + 37 * index}"
        start = time.monotonic()
        await page.goto(f"{base}/" + (f"?digit={learner.digit}" if learner.digit else ""))
        await _wait_for_app(page)
        learner.page_seconds.setdefault("(first load)", []).append(time.monotonic() - start)
        if index == DRAWER:
            await _visit(page, learner, "Draw & predict")
            await _draw_digit(page, learner)
        await _check_page(page, learner, "start")

        if index == UPLOADER:
            await _visit(page, learner, "Train a network")
            await _upload(page, learner, checkpoint)
            uploaded.set()
        if index in TRAINERS:
            await _visit(page, learner, "Train a network")
            await _train(page, learner, TRAINERS[index])

        for name in PAGES:
            await _visit(page, learner, name)

        # Nobody sees another learner's model: only the uploader has the uploaded network.
        await asyncio.wait_for(uploaded.wait(), timeout=PAGE_TIMEOUT_MS / 1000)
        await _visit(page, learner, "Fully connected network")
        options = await _network_options(page)
        mine = [o for o in options if "uploaded" in o or o.startswith("My ")]
        if index == UPLOADER and not any("uploaded" in o for o in mine):
            learner.problems.append(f"learner {index}: their uploaded network is not in their picker: {options}")
        if index != UPLOADER and mine:
            learner.problems.append(f"learner {index}: sees networks that are not theirs: {mine}")
        await _check_page(page, learner, "the end")
        if index in TRAINERS:  # their run is still theirs after everyone else's work
            await _visit(page, learner, "Train a network")
            text = await page.locator(FINISHED).first.inner_text()
            if text != learner.run_note:
                learner.problems.append(f"learner {index}: their run changed from {learner.run_note!r} to {text!r}")
    except Exception as e:  # noqa: BLE001 - a learner that cannot go on is a finding, not a crash
        learner.problems.append(f"learner {index}: {type(e).__name__}: {str(e)[:300]}")
        try:  # what the learner saw when they got stuck, to look at
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOTS / f"load-stuck-learner-{index}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - a closed page has nothing to show
            pass
    finally:
        await context.close()
    return learner


async def run_class(base: str, n: int) -> list[Learner]:
    from playwright.async_api import async_playwright

    checkpoint = small_checkpoint()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        uploaded, trained = asyncio.Event(), asyncio.Event()
        if n <= UPLOADER:
            uploaded.set()  # no uploader in so small a class
        try:
            return list(await asyncio.gather(*[
                learner_session(browser, base, i, checkpoint, uploaded, trained) for i in range(n)]))
        finally:
            await browser.close()


# ---------------------------------------------------------------- what the run measured


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timing_entries(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if "page" in e]  # (the sweeper's "released" lines are for test_session_end)


def summary(learners: list[Learner], entries: list[dict], n: int, target: str, wall_s: float) -> dict:
    browser = [s for learner in learners for name, times in learner.page_seconds.items() if name != "(first load)"
               for s in times]
    server = [e["seconds"] for e in entries]
    per_page = {}
    for e in entries:
        per_page.setdefault(e["page"], []).append(e["seconds"])
    return {
        "learners": n, "target": target, "wall_s": round(wall_s, 1),
        "browser_page_s": {"median": round(statistics.median(browser), 2), "p95": round(percentile(browser, 0.95), 2),
                           "count": len(browser)} if browser else {},
        "server_run_s": {"median": round(statistics.median(server), 3), "p95": round(percentile(server, 0.95), 3),
                         "count": len(server)} if server else {},
        "server_run_s_per_page": {p: {"median": round(statistics.median(v), 3), "p95": round(percentile(v, 0.95), 3),
                                      "runs": len(v)} for p, v in sorted(per_page.items())},
        "replicas_used": len({e["pid"] for e in entries}),
        "sessions": len({e["session"] for e in entries}),
    }


def format_summary(s: dict) -> str:
    b, v = s["browser_page_s"], s["server_run_s"]
    lines = [f"N={s['learners']} via {s['target']}: browser page time median {b.get('median')} s, p95 {b.get('p95')} s "
             f"({b.get('count')} page visits); server script run median {v.get('median')} s, p95 {v.get('p95')} s "
             f"({v.get('count')} runs, {s['replicas_used']} replica(s), {s['sessions']} sessions); whole class "
             f"{s['wall_s']} s"]
    for page, t in s["server_run_s_per_page"].items():
        lines.append(f"    server {page:<14} median {t['median']:.3f} s  p95 {t['p95']:.3f} s  ({t['runs']} runs)")
    return "\n".join(lines)


def run_async(coro):
    """``asyncio.run(coro)`` in a thread of its own: the browser tests' Playwright (sync API) keeps an
    event loop running in the main thread for the whole session, and asyncio.run refuses to start
    inside a running loop."""
    import asyncio
    import threading

    result: dict = {}

    def main() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=main, name="load-test-loop")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
