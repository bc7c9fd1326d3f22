"""A class at once: N learners in browser contexts against one server (see harness.py).

`make test` runs N=4 against one `streamlit run` (about two minutes here). `make load`
runs N=2, 4 and 8 (DIGITREC_LOAD_N="2 4 8") and the class again through `make serve`'s
nginx front (marker big_class), printing the page times and saving them under
tests/load/results/. Times are not asserted (a shared 2-core machine makes them noise);
what is asserted is that every page finished without an error box and that learners
never saw each other's digit, model or run, nor changed the shared pretrained models.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests import server
from tests.load import harness

SIZES = [int(n) for n in os.environ.get("DIGITREC_LOAD_N", "4").split()]
RESULTS = harness.REPO / "tests" / "load" / "results"


def run_and_check(url: str, n: int, timing_log, target: str) -> dict:
    start = time.monotonic()
    learners = harness.run_async(harness.run_class(url, n))
    wall = time.monotonic() - start
    entries = harness.timing_entries(timing_log)
    summary = harness.summary(learners, entries, n, target, wall)
    problems = [p for learner in learners for p in learner.problems]
    print("\n" + harness.format_summary(summary))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"load-{target}-n{n}.json").write_text(json.dumps({**summary, "problems": problems}, indent=2) + "\n")

    assert not problems, "\n".join(problems)
    for learner in learners:  # every learner finished every page
        missing = [p for p in harness.PAGES if p not in learner.page_seconds]
        assert not missing, f"learner {learner.index} never finished {missing}"
    assert entries, "the server wrote no timing log"
    expected = harness.pretrained_hashes()
    changed = [e for e in entries if e["pretrained"] != expected]
    assert not changed, f"the shared pretrained models changed: {changed[0]}"
    # The server's side of "every page finishes": each learner's session ran every page to its end.
    finished = {}
    for e in entries:
        if e["stopped"] is None:
            finished.setdefault(e["session"], set()).add(e["page"])
    complete = [sid for sid, pages in finished.items() if pages >= set(harness.PAGE_PATHS.values())]
    assert len(complete) >= n, f"only {len(complete)} of {n} sessions ran every page to its end: {finished}"
    return summary


@pytest.mark.load
@pytest.mark.parametrize("n", SIZES)
def test_a_class_of_n_learners_on_one_server(n, tmp_path):
    timing_log = tmp_path / "timing.jsonl"
    proc, url = harness.start_server(timing_log, tmp_path / "server.log")
    try:
        summary = run_and_check(url, n, timing_log, "one-server")
        assert proc.poll() is None, "the server died during the class"
        # Only the server runs pages: a worker spawned from a page once re-ran the app as its main script.
        assert summary["replicas_used"] == 1, f"{summary['replicas_used']} processes ran the app's pages"
    finally:
        server.stop(proc)
