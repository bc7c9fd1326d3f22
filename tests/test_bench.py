"""bench --json: every key the issue asks for is there, each a number measured in this run
(quick mode: tiny loops and runs; speed itself is never asserted in a test)."""

from __future__ import annotations

import json
import math

from digitrec import bench, bench_app


def test_bench_quick_json_has_every_ratio_and_latency(tmp_path, mnist, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--models", "fc", "--max-steps", "5", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert set(report["ratios"]) == set(bench_app.RATIO_KEYS)
    measured = {k: v for k, v in report["ratios"].items() if v is not None}
    # FCNet 16-16 was measured: its epoch ratio, its app run against fit, two runs against one.
    assert {"fc_epoch_vs_reference", "in_app_vs_fit_fc", "two_runs_vs_one"} <= set(measured)
    assert all(math.isfinite(v) and v > 0 for v in measured.values())
    fit = report["app"]["fc"]["fit"]
    app = report["app"]["fc"]["app"]
    assert app["status"] == "finished" and app["samples"] == fit["samples"] == 5 * 128  # the same training
    assert report["ratios"]["in_app_vs_fit_fc"] == app["samples_per_s"] / fit["samples_per_s"]
    assert report["matmul_gflops"] > 0
    latency = report["latency_ms"]["fc"]
    assert {"predict_with_activations", "attribution_saliency", "attribution_occlusion", "backward_step_through"} <= set(latency)
    assert all(0 < t["median"] <= t["p95"] for t in latency.values())
    out = capsys.readouterr().out
    assert "in_app_vs_fit_fc" in out and "latency" in out
