"""The benchmark's second part (``python -m digitrec bench --json PATH``): the app as a learner meets it.

``digitrec.bench`` times the training loop against the tutorial loop. This
module measures, in the same run and with the same threads:

- **time to accuracy**: wall-clock training seconds until the full test set
  reaches 98.5 % (TinyVGG) or 97 % (FCNet 784-128-64-10), for ``fit`` and for
  the reference loop (Adam 1e-3, batches of 64), evaluating every
  ``EVAL_EVERY_DIGITS`` digits, evaluation time excluded from both;
- **in the app**: the run the Train page starts with its defaults (``config.EPOCHS``
  epochs over every training digit; ``app_epochs`` or ``app_steps`` for another
  length) in a worker process (``digitrec.engines.local``) with recording on, its
  progress read once a second as the page reads it; its digits per wall-clock
  second (from the report of its first evaluation to its final report, so the
  process start, reported apart, is not counted) over headless ``fit`` of the
  same length; the two in turn, the best of ``IN_APP_TRIES`` each;
- **two runs at once**: each one's digits per second over one run alone;
- **fraction of peak**: the training step's FLOP/s (forward + backward counted
  from the layer shapes as 2 x 3 x forward multiply-adds per digit) over a
  large float32 matrix multiply's FLOP/s;
- **latency**: median and 95th percentile of one digit's prediction with all
  activations, and of each attribution method, per network; and (not in quick
  mode) ``digitrec.bench_units``' timings of the unit, map and fooling pieces.

Speed belongs here, never in a test. ``quick`` makes every part tiny (for the
test that checks the keys) and skips time to accuracy.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from digitrec import attribution, backprop, config, data, inspection, models, train
from digitrec.spec import RunSpec

EVAL_EVERY_DIGITS = 6_400  # evaluate the test set this often while racing to an accuracy
TARGETS = {"cnn": 0.985, "fc-wide": 0.97}
# Each loop races to its target for at most this many seconds of wall clock (training and
# evaluation); a capped loop reports the accuracy it reached, and a capped reference makes the
# ratio a lower bound. 7 minutes: the reference loop trains TinyVGG at about 1,000-2,000 digits/s here.
TIME_TO_ACCURACY_CAP_S = 420.0
MAX_REFERENCE_EPOCHS = 10
LATENCY_REPEATS = 30
PAGE_POLL_S = 1.0  # the Train page reads its run's progress once a second
SPARE_READY_S = 120.0  # a spare's imports take about 3 s here alone; far longer means something is wrong
IN_APP_TRIES = 3  # best of 3 each: two tries of the same side differed by 16 % in one run (TinyVGG, 10.6 vs 9.1 s)
RATIO_KEYS = (
    "fc_epoch_vs_reference", "fc_wide_epoch_vs_reference", "cnn_epoch_vs_reference",
    "cnn_time_to_98_5_vs_reference", "fc_wide_time_to_97_vs_reference",
    "in_app_vs_fit_fc", "in_app_vs_fit_cnn", "two_runs_vs_one",
    "cnn_fraction_of_peak", "fc_wide_fraction_of_peak",
)


# --- time to accuracy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """One loop's race to a test accuracy."""

    target: float  # 0..1 on the full test set
    seconds: float | None  # training seconds until the first evaluation at or above target; None: not reached
    trained_s: float  # training seconds in all (evaluation excluded)
    digits: int  # digits trained on in all
    best_accuracy: float  # the best test accuracy measured (what it reached when the target was not)
    capped: bool  # the wall-clock cap ended it before the target


class _UntilAccuracy:
    """A fit callback: evaluate the test set every ``every`` steps (and at the last), stop at ``target``
    or once ``cap_s`` seconds of wall clock (training and evaluation) have gone."""

    def __init__(self, model: nn.Module, test: data.DigitSet, target: float, every: int, cap_s: float,
                 control: train.TrainControl) -> None:
        self.model, self.test, self.target, self.every, self.control = model, test, target, every, control
        self.deadline = time.perf_counter() + cap_s
        self.seconds: float | None = None
        self.best = 0.0
        self.capped = False

    def on_step_end(self, state: train.TrainState) -> None:
        if state.step % self.every == 0 or state.step == state.total_steps:
            self.best = max(self.best, train.evaluate(self.model, self.test)[1])
            if self.best >= self.target:
                self.seconds = state.elapsed_s  # the training clock: evaluation excluded
                self.control.stop()
                return
        if time.perf_counter() > self.deadline:
            self.capped = True
            self.control.stop()


def fast_recipe() -> train.TrainConfig:
    """The app's training settings ``bench`` races to an accuracy with (``config.FAST_*``)."""
    return train.TrainConfig(epochs=config.FAST_EPOCHS, batch_size=config.FAST_BATCH_SIZE, lr=config.FAST_LR,
                             schedule=config.FAST_SCHEDULE, evaluate_each_epoch=False)


def time_to_accuracy_fit(model_config, mnist: data.MNIST, target: float, cap_s: float = TIME_TO_ACCURACY_CAP_S,
                         recipe: train.TrainConfig | None = None, every_digits: int = EVAL_EVERY_DIGITS,
                         device: str = "cpu") -> Reach:
    """The app's own ``fit`` with ``recipe`` (default ``fast_recipe()``) on ``device`` until ``target`` test accuracy."""
    recipe = recipe or fast_recipe()
    model = models.build(model_config, seed=0).to(device)
    control = train.TrainControl()
    until = _UntilAccuracy(model, mnist.test, target, max(1, every_digits // recipe.batch_size), cap_s, control)
    state = train.fit(model, mnist.train, recipe, callbacks=[until], control=control)
    return Reach(target, until.seconds, state.elapsed_s, state.samples_seen, until.best, until.capped)


def time_to_accuracy_reference(model_config, mnist: data.MNIST, root: Path, target: float,
                               cap_s: float = TIME_TO_ACCURACY_CAP_S, every_digits: int = EVAL_EVERY_DIGITS,
                               max_epochs: int = MAX_REFERENCE_EPOCHS, device: str = "cpu") -> Reach:
    """The tutorial loop (Adam 1e-3, batches of 64) on ``device`` until ``target`` test accuracy, or the cap."""
    from digitrec.bench import REFERENCE_LR, reference_loader, synchronize

    loader = reference_loader(root)
    model = models.build(model_config, seed=0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=REFERENCE_LR)
    every = max(1, every_digits // loader.batch_size)
    deadline = time.perf_counter() + cap_s
    trained_s, steps, digits, best = 0.0, 0, 0, 0.0
    for _ in range(max_epochs):
        start = time.perf_counter()
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            steps += 1
            digits += len(y)
            if steps % every == 0:
                synchronize(device)
                trained_s += time.perf_counter() - start
                best = max(best, reference_accuracy(model, mnist.test))
                if best >= target:
                    return Reach(target, trained_s, trained_s, digits, best, False)
                if time.perf_counter() > deadline:
                    return Reach(target, None, trained_s, digits, best, True)
                model.train()
                start = time.perf_counter()
        synchronize(device)
        trained_s += time.perf_counter() - start
    best = max(best, reference_accuracy(model, mnist.test))
    return Reach(target, trained_s if best >= target else None, trained_s, digits, best, False)


def reference_accuracy(model: nn.Module, test: data.DigitSet) -> float:
    """Test accuracy of a model the reference loop trained: on its own inputs, ``Normalize``'s.

    (digitrec's models read pixels in [0, 1]; the reference trained on (x - 0.1307) / 0.3081, so
    evaluating it on [0, 1] pixels would understate it.)
    """
    from digitrec.bench import REFERENCE_MEAN, REFERENCE_STD

    correct = 0
    device = train.device_of(model)
    with inspection.eval_mode(model), torch.inference_mode():
        for start in range(0, len(test), 2000):
            x = (data.to_input(test.images[start:start + 2000]) - REFERENCE_MEAN) / REFERENCE_STD
            correct += int((model(x.to(device)).argmax(dim=1).cpu() == test.labels[start:start + 2000]).sum())
    return correct / max(len(test), 1)


def time_to_accuracy_ratio(mine: Reach, reference: Reach) -> tuple[float | None, bool]:
    """(reference seconds over ours, whether that is only a lower bound).

    Ours never reached the target: None. The reference did not (capped, or out of epochs): its
    training seconds over ours, a lower bound (it would have needed longer).
    """
    if mine.seconds is None or mine.seconds <= 0:
        return None, False
    if reference.seconds is not None:
        return reference.seconds / mine.seconds, False
    return reference.trained_s / mine.seconds, True


# --- the app's runs ---------------------------------------------------------------------------------


def app_run(specs: list[RunSpec], mnist: data.MNIST) -> list[dict]:
    """Train ``specs`` at once in worker processes, reading their progress once a second as the page
    does; per run: digits/s from its first evaluation's report to its final one (the times the reports
    arrived, so the reading's own pace does not round them), and its start seconds."""
    from digitrec.engines.local import WorkerRun
    from digitrec.engines.queue import RunQueue

    _without_a_spare_importing()
    queue = RunQueue(len(specs))
    runs = [WorkerRun(spec, mnist, queue=queue) for spec in specs]
    started = time.perf_counter()
    for run in runs:
        run.start()
    while not all(run.status.ended for run in runs):
        for run in runs:
            run.progress()  # what the page reads each second
        time.sleep(PAGE_POLL_S)
    for run in runs:  # its process gone and its end told to the spare worker, which may start the next now
        run.join()
    out = []
    for run in runs:
        p = run.progress()
        wall = run.ended_at - run.ready_at
        out.append({"samples": p.samples_seen, "wall_s": wall, "worker_start_s": run.ready_at - started,
                    "samples_per_s": p.samples_seen / wall, "status": p.status.value, "device": p.device,
                    "training_s": p.elapsed_s})  # the training clock: recording and reporting are the rest
    return out


def fit_run(spec: RunSpec, mnist: data.MNIST, device: str = "cpu") -> dict:
    """The same training headless on ``device`` (where the app's workers train): ``fit`` with its per-epoch
    evaluation, no recording, on the digits the app's run trains on (the first ``train_size`` of those the
    validation split keeps: 55,000 an epoch with every digit, not 60,000)."""
    _without_a_spare_importing()
    model = models.build(spec.model, seed=spec.train.seed).to(device)
    digits = data.validation_split(mnist.train)[0].subset(spec.train_size)
    start = time.perf_counter()
    state = train.fit(model, digits, spec.train, test=mnist.test)
    wall = time.perf_counter() - start
    return {"samples": state.samples_seen, "wall_s": wall, "samples_per_s": state.samples_seen / wall,
            "training_s": state.elapsed_s}


def _without_a_spare_importing() -> None:
    """Wait until the server's spare worker (``engines.local.SpareWorker``), started when the last app
    run ended, has done its imports: seconds of CPU that would otherwise slow whichever side came next
    (headless fit of FCNet's three epochs took 0.44-0.49 s without them, 0.57-0.75 s beside them). A learner's Start on a quiet server finds
    the spare ready too."""
    from digitrec.engines.local import spare_worker

    spare = spare_worker()
    spare.refill()
    if spare.enabled() and spare.runs_here == 0 and not spare.wait_ready(SPARE_READY_S):
        print(f"bench: the spare worker was not ready after {SPARE_READY_S:.0f} s; measuring anyway",
              file=sys.stderr)


def at_equal_training_speed(app: dict, headless: dict) -> float:
    """The in-app ratio had both trained at the same speed: the share of the app run's wall clock spent
    training over the share of headless fit's. It leaves out how fast the machine happened to train
    each (on a shared machine that drifts by a quarter within a minute, more than the app adds) and
    keeps what the app adds around training: evaluations, snapshots, reports."""
    return (app["training_s"] / app["wall_s"]) / (headless["training_s"] / headless["wall_s"])


# --- the machine's peak -----------------------------------------------------------------------------


def matmul_flops(n: int = 1024, repeats: int = 5, device: str = "cpu") -> float:
    """FLOP/s of an n x n float32 matrix multiply (2 n^3 FLOPs each) on ``device``, the best of ``repeats``.

    On a GPU, plain float32 (PyTorch's default: no TensorFloat-32 for a matrix multiply)."""
    from digitrec.bench import synchronize

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def training_flops_per_digit(model_config) -> int:
    """FLOPs of one digit's training step: 2 per multiply-add, forward + backward = 3 x forward."""
    from digitrec.race import TRAINING_STEP_FACTOR

    return 2 * TRAINING_STEP_FACTOR * models.count_macs(models.build(model_config))


# --- latency ------------------------------------------------------------------------------------------


def _percentiles(samples_s: list[float]) -> dict:
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median": statistics.median(ordered) * 1000, "p95": p95 * 1000}


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up: oneDNN and Captum build their kernels on first use
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def latencies(mnist: data.MNIST, networks=("fc", "cnn"), repeats: int = LATENCY_REPEATS) -> dict:
    """{network: {what: {"median": ms, "p95": ms}}} for prediction with activations, each attribution
    and the backward step-through."""
    x = data.to_input(mnist.test.images[:1])  # (1, 1, 28, 28)
    out = {}
    for key in networks:
        model = models.build(models.PRESETS[key], seed=0)
        model.eval()
        entry = {"predict_with_activations": _time(lambda: inspection.capture_activations(model, x), repeats)}
        for method in attribution.methods_for(model):
            entry[f"attribution_{method}"] = _time(lambda m=method: attribution.attribute(model, x, 0, m),
                                                   max(3, repeats // 3))
        # One backward step-through (digitrec.backprop: forward, autograd backward, the hand chain rule).
        entry["backward_step_through"] = _time(lambda: backprop.backward(model, x, int(mnist.test.labels[0])),
                                               repeats)
        out[key] = entry
    return out


# --- the whole report ----------------------------------------------------------------------------------


def measure(mnist: data.MNIST, root: Path, timings: list, threads: int, device: str = "cpu", quick: bool = False,
            names: tuple[str, ...] = tuple(config.PRESETS), max_steps: int | None = None,
            app_steps: int | None = None, app_epochs: int = config.EPOCHS, time_to_accuracy: bool = True) -> dict:
    """Every number of the JSON report, measured now (``timings``: digitrec.bench's loop timings).

    ``device``: where the loops trained and the app's workers train (the caller sets that for them);
    the latencies are the explorers', always on the CPU. ``names``: the presets to measure (a ratio of
    a preset left out is None). ``app_epochs``: the app's runs' length, the Train page's default unless
    told (a shorter run gives its fixed end, the red diamond and the test set's one use, a larger share);
    ``app_steps`` cuts them shorter still.
    """
    from digitrec.bench import cpu_name
    from digitrec.engines.local import device_name

    ratios: dict[str, float | None] = {k: None for k in RATIO_KEYS}
    by = {(t.model, t.loop): t for t in timings}
    for key, name in (("fc", "fc_epoch_vs_reference"), ("fc-wide", "fc_wide_epoch_vs_reference"),
                      ("cnn", "cnn_epoch_vs_reference")):
        label = models.display_name(models.PRESETS[key])
        if (label, "digitrec") in by and (label, "reference") in by:
            ratios[name] = by[label, "reference"].seconds_per_epoch / by[label, "digitrec"].seconds_per_epoch
    report: dict = {"threads": threads, "cpu": cpu_name(), "device": device_name(device), "torch": torch.__version__,
                    "quick": quick,
                    "loops": [dict(model=t.model, loop=t.loop, batch_size=t.batch_size, steps=t.steps,
                                   seconds_per_epoch=t.seconds_per_epoch, samples_per_s=t.samples_per_s)
                              for t in timings]}

    # 1024 is large for 2 CPU cores; a GPU needs 8192 to keep its multiprocessors busy.
    peak = matmul_flops((512 if quick else 1024) * (8 if device == "cuda" else 1), device=device)
    report["matmul_gflops"] = peak / 1e9
    for key, name in (("cnn", "cnn_fraction_of_peak"), ("fc-wide", "fc_wide_fraction_of_peak")):
        label = models.display_name(models.PRESETS[key])
        if (label, "digitrec") in by:
            achieved = training_flops_per_digit(models.PRESETS[key]) * by[label, "digitrec"].samples_per_s
            report[f"{key}_training_gflops"] = achieved / 1e9
            ratios[name] = achieved / peak

    # In the app: one run at a time, then two at once (each on its own worker, with its own threads).
    steps = (max_steps or 40) if quick else app_steps
    train_size = 2_000 if quick else config.TRAIN_DIGITS
    recipe = train.TrainConfig(epochs=app_epochs, max_steps=steps)
    app = {}
    for key in [k for k in ("fc", "cnn") if k in names]:
        spec = RunSpec(models.PRESETS[key], recipe, train_size=train_size)
        # App and headless in turn, IN_APP_TRIES times, the best of each: other processes' load comes and
        # goes within seconds here, and one try of each compared two different moments.
        tries = [(app_run([spec], mnist)[0], fit_run(spec, mnist, device)) for _ in range(1 if quick else IN_APP_TRIES)]
        alone = max((a for a, _ in tries), key=lambda r: r["samples_per_s"])
        headless = max((f for _, f in tries), key=lambda r: r["samples_per_s"])
        app[key] = {"app": alone, "fit": headless, "tries": [{"app": a, "fit": f} for a, f in tries],
                    "at_equal_training_speed": statistics.median(at_equal_training_speed(a, f) for a, f in tries)}
        ratios[f"in_app_vs_fit_{key}"] = alone["samples_per_s"] / headless["samples_per_s"]
    pair_key = "cnn" if "cnn" in app else next(iter(app), None)
    if pair_key is not None:
        pair_spec = RunSpec(models.PRESETS[pair_key], recipe, train_size=train_size)
        pair = app_run([pair_spec, pair_spec], mnist)
        app["two_runs"] = {"network": pair_key, "runs": pair}
        ratios["two_runs_vs_one"] = min(r["samples_per_s"] for r in pair) / app[pair_key]["app"]["samples_per_s"]
    report["app"] = app

    report["app_epochs"], report["app_steps"] = app_epochs, steps  # steps None: every step of those epochs
    if time_to_accuracy and not quick:
        tta = {}
        for key, name in (("cnn", "cnn_time_to_98_5_vs_reference"), ("fc-wide", "fc_wide_time_to_97_vs_reference")):
            if key not in names:
                continue
            mine = time_to_accuracy_fit(models.PRESETS[key], mnist, TARGETS[key], device=device)
            ref = time_to_accuracy_reference(models.PRESETS[key], mnist, root, TARGETS[key], device=device)
            ratios[name], lower_bound = time_to_accuracy_ratio(mine, ref)
            tta[key] = {"target": TARGETS[key], "recipe": asdict(fast_recipe()), "digitrec": asdict(mine),
                        "reference": asdict(ref), "ratio_is_lower_bound": lower_bound}
        report["time_to_accuracy"] = tta
    if not quick:  # the unit, map and fooling pieces: digitrec.bench_units measures them (no UMAP: minutes)
        from digitrec import bench_units

        report["units_s"] = dict(bench_units.measure(mnist, umap=False))
    report["latency_ms"] = latencies(mnist, [k for k in ("fc", "cnn") if k in names], 3 if quick else LATENCY_REPEATS)
    report["ratios"] = ratios
    return report


def _reach_text(reach: dict) -> str:
    if reach["seconds"] is not None:
        return f"{reach['seconds']:.1f} s ({reach['digits']:,} digits)"
    why = "capped" if reach["capped"] else "every epoch trained"
    return f"not reached in {reach['trained_s']:.1f} s ({why}; best {reach['best_accuracy']:.2%})"


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def format_report(report: dict) -> str:
    lines = [f"ratios (measured in this run, training on the {report['device']}, {report['threads']} thread(s); "
             "None: not measured in this mode)"]
    for key, value in report["ratios"].items():
        lines.append(f"  {key:<34} {'–' if value is None else f'{value:.2f}'}")
    lines.append(f"  matrix multiply: {report['matmul_gflops']:.1f} GFLOP/s")
    steps = report["app_steps"]
    length = f"{report['app_epochs']} epoch(s)" + (f", at most {steps} steps" if steps else "")
    lines.append(f"  the app's runs: {length} each, against headless fit of the same length")
    for key, entry in report["app"].items():
        if key == "two_runs":
            lines.append(f"  two {entry['network']} runs at once: "
                         + ", ".join(f"{r['samples_per_s']:,.0f}" for r in entry["runs"]) + " digits/s")
        else:
            starts = ", ".join(f"{t['app']['worker_start_s']:.1f}" for t in entry["tries"])
            lines.append(f"  {key}: app {entry['app']['samples_per_s']:,.0f} digits/s, fit "
                         f"{entry['fit']['samples_per_s']:,.0f} digits/s (best of {len(entry['tries'])}; "
                         f"first evaluation {starts} s after Start); at equal training speed "
                         f"{entry['at_equal_training_speed']:.2f}")
    lines.append("latency (ms, median / p95):")
    for net, entry in report["latency_ms"].items():
        for what, t in entry.items():
            lines.append(f"  {net:<4} {what:<36} {t['median']:7.1f} / {t['p95']:7.1f}")
    for key, entry in report.get("time_to_accuracy", {}).items():
        lines.append(f"time to {entry['target']:.1%} test accuracy ({key}): "
                     + "; ".join(f"{loop} {_reach_text(entry[loop])}" for loop in ("digitrec", "reference"))
                     + (" (ratio: a lower bound)" if entry["ratio_is_lower_bound"] else ""))
    return "\n".join(lines)
