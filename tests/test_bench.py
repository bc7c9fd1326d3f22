"""bench --json: every key the issue asks for is there, each a number measured in this run
(quick mode: tiny loops and runs; speed itself is never asserted in a test)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import pytest
import torch

from digitrec import bench, bench_app, config, data, models
from digitrec.engines.local import device_name, training_device
from digitrec.spec import RunSpec
from digitrec.train import TrainConfig


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
    # Both trained on the training clock for less than their wall clock; the app's extras are the rest.
    assert 0 < app["training_s"] < app["wall_s"] and 0 < fit["training_s"] < fit["wall_s"]
    assert report["app"]["fc"]["at_equal_training_speed"] == bench_app.at_equal_training_speed(app, fit)
    assert report["matmul_gflops"] > 0
    # By default everything trains where the app's workers train (the GPU when there is one).
    assert report["device"] == device_name(training_device()) and app["device"] == training_device()
    latency = report["latency_ms"]["fc"]
    assert {"predict_with_activations", "attribution_saliency", "attribution_occlusion", "backward_step_through"} <= set(latency)
    assert all(0 < t["median"] <= t["p95"] for t in latency.values())
    out = capsys.readouterr().out
    assert "in_app_vs_fit_fc" in out and "latency" in out


def test_bench_trains_where_it_is_told_and_says_so_when_there_is_no_gpu(tmp_path, mnist, capsys, monkeypatch):
    monkeypatch.delenv(config.DEVICE_ENV, raising=False)
    path = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--quick", "--models", "fc", "--max-steps", "40", "--no-reference",
                       "--app-epochs", "1", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    # The app's runs and headless fit trained the epochs asked for: one pass over the quick mode's 2,000
    # digits (16 steps of 128), not the Train page's default 3 nor the 40 steps allowed.
    assert report["app_epochs"] == 1
    assert report["app"]["fc"]["app"]["samples"] == report["app"]["fc"]["fit"]["samples"] == 2_000
    assert [r["samples"] for r in report["app"]["two_runs"]["runs"]] == [2_000, 2_000]
    # The app's worker processes trained on the CPU too, even where a GPU is present.
    assert report["device"] == "CPU" and {r["device"] for r in report["app"]["two_runs"]["runs"]} == {"cpu"}
    assert report["app"]["fc"]["app"]["device"] == "cpu"
    assert config.DEVICE_ENV not in os.environ  # the setting for its workers was the bench's alone
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as refused:
            bench.main(["--device", "cuda", "--quick", "--models", "fc"])
        assert refused.value.code == 2 and "torch sees no GPU here" in capsys.readouterr().err


def test_headless_fit_trains_the_digits_the_apps_run_trains(mnist):
    # Every digit: the app's run holds the 5,000 validation digits out, so headless fit must too.
    spec = RunSpec(models.PRESETS["fc"], TrainConfig(epochs=1), train_size=config.TRAIN_DIGITS)
    assert bench_app.fit_run(spec, mnist)["samples"] == config.TRAIN_DIGITS - config.VALIDATION_SIZE == 55_000


def test_time_to_accuracy_reports_what_it_reached_when_the_target_is_out_of_reach(mnist):
    # A target above 100 % is never met: both loops train until their limit (here: one short epoch
    # of the app's own recipe, and the reference's epochs), then say the accuracy they reached.
    small = data.MNIST(mnist.train.subset(640), mnist.test.subset(200))
    recipe = replace(bench_app.fast_recipe(), epochs=1)
    mine = bench_app.time_to_accuracy_fit(models.PRESETS["fc"], small, 1.01, recipe=recipe, every_digits=128)
    assert mine.seconds is None and not mine.capped and mine.digits == 640
    assert 0 < mine.best_accuracy <= 1
    # A cap of 0 s ends the reference at its first evaluation: not reached, capped, the ratio a lower bound.
    ref = bench_app.time_to_accuracy_reference(models.PRESETS["fc"], small, data.ensure_mnist(), 1.01, cap_s=0,
                                               every_digits=64)
    assert ref.seconds is None and ref.capped and ref.digits == 64 and 0 < ref.best_accuracy <= 1
    reached = replace(mine, seconds=2.0)
    assert bench_app.time_to_accuracy_ratio(reached, ref) == (ref.trained_s / 2.0, True)
    assert bench_app.time_to_accuracy_ratio(mine, ref) == (None, False)
    out_of_epochs = replace(ref, capped=False)  # the reference trained every epoch without reaching it
    assert bench_app.time_to_accuracy_ratio(reached, out_of_epochs) == (ref.trained_s / 2.0, True)
    assert bench_app.time_to_accuracy_ratio(reached, replace(ref, seconds=6.0, capped=False)) == (3.0, False)


def test_the_fast_recipe_is_the_apps_own_training_settings():
    recipe = bench_app.fast_recipe()
    assert (recipe.lr, recipe.schedule, recipe.batch_size, recipe.epochs) == (
        config.FAST_LR, config.FAST_SCHEDULE, config.FAST_BATCH_SIZE, config.FAST_EPOCHS)
    assert recipe.schedule in config.SCHEDULES
