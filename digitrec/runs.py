"""Training runs in the background: start, pause, resume, step, stop, and watch.

A ``TrainingRun`` trains one model with ``digitrec.train.fit`` in a thread of
its own. Any other thread (the app's page, a test) controls it through
``train.TrainControl`` and reads ``progress()``: a frozen copy of everything so
far, taken under a lock, so a reader never sees a half-written list.

While it trains, a run records, off the training clock (``fit`` does not count
callbacks or evaluation as training time):

- every step's loss and batch accuracy (every k-th step for very long runs);
- the test accuracy on a fixed 2,000-digit test subset every ``eval_every``
  steps (about 30 points a run), and on all 10,000 test digits after each epoch;
- a snapshot every ``snapshot_every`` steps: the first layer's weights and the
  probe digit's ten probabilities at that moment (for replaying the run);
- the latest first-layer weights and probe probabilities, a few times a second.

A ``Race`` runs two of them on the same digits, one after the other or
together. The library never imports streamlit: the app keeps each run in the
browser session that started it.
"""

from __future__ import annotations

import copy
import enum
import itertools
import math
import operator
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import nn

from digitrec import checkpoints, models
from digitrec.data import IMAGE_SIZE, MNIST, DigitSet
from digitrec.errors import InvalidConfig, TrainingDiverged
from digitrec.inspection import eval_mode
from digitrec.train import Callback, TrainConfig, TrainControl, TrainState, evaluate, fit

EVAL_SIZE = 2000  # digits in the test subset evaluated during a run
EVAL_POINTS = 30  # about this many test-subset points per run when eval_every is automatic
SNAPSHOTS = 30  # about this many weight snapshots per run when snapshot_every is automatic
MAX_SNAPSHOTS = 300  # a chosen snapshot_every may not make more (memory: ~50 KB each)
MAX_STEP_POINTS = 3000  # per-step history is thinned to about this many points
MAX_UNITS = {"fcnet": 16, "tinyvgg": 64}  # first-layer units kept per snapshot
LIVE_EVERY_S = 0.2  # refresh the live probe and weights at most this often
SUBSET_SEED = 1234  # fixes which test digits form the subset (the same for every run)
TRAIN_DIGITS = 60_000  # MNIST's training set
MAX_APP_EPOCHS = 20  # the app trains at most this many epochs (the command line has no such limit)


class RunStatus(str, enum.Enum):
    IDLE = "idle"  # made, not started
    RUNNING = "running"
    PAUSED = "paused"  # waiting for resume() or step(n)
    STOPPING = "stopping"  # stop() was called; the thread is finishing its last evaluation
    STOPPED = "stopped"  # ended early by stop()
    FINISHED = "finished"  # trained every step it was asked to
    DIVERGED = "diverged"  # the loss stopped being finite; the model kept its last good weights
    FAILED = "failed"  # an unexpected error (a bug); the message says which

    @property
    def active(self) -> bool:
        """The thread is alive (or about to be): someone should keep watching."""
        return self in (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.STOPPING)

    @property
    def ended(self) -> bool:
        return self in (RunStatus.STOPPED, RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.FAILED)


# --- what to train -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """The step counts a spec gives on a training set of ``train_size`` digits."""

    train_size: int
    steps_per_epoch: int
    total_steps: int  # epochs x steps_per_epoch, or max_steps if smaller
    eval_every: int  # steps between test-subset evaluations
    snapshot_every: int  # steps between weight snapshots
    history_every: int  # keep one step in this many in the per-step history


@dataclass(frozen=True)
class RunSpec:
    """One training run: the network, how to train it, and on how many digits."""

    model: models.ModelConfig
    train: TrainConfig = TrainConfig()
    # "Quick mode": train on the first N training digits (test accuracy is always
    # measured on the real test set). 60,000 is all of MNIST.
    train_size: int = TRAIN_DIGITS
    snapshot_every: int = 0  # steps between weight snapshots; 0: about SNAPSHOTS per run
    eval_every: int = 0  # steps between test-subset evaluations; 0: about EVAL_POINTS per run
    eval_size: int = EVAL_SIZE
    max_steps: int | None = None  # end the run after this many steps (a lesson's few hundred)

    def __post_init__(self) -> None:
        problems = []
        for name, low in (("train_size", 1), ("snapshot_every", 0), ("eval_every", 0), ("eval_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name.replace('_', ' ')} must be a whole number from {low} up (got {value!r})")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            problems.append(f"max steps must be a whole number from 1 up (got {self.max_steps!r})")
        if problems:
            raise InvalidConfig("Cannot train: " + "; ".join(problems) + ".")

    @property
    def name(self) -> str:
        return models.display_name(self.model)

    def plan(self, available: int) -> RunPlan:
        """Step counts on ``min(train_size, available)`` digits; InvalidConfig if snapshots would be too many."""
        n = min(self.train_size, available)
        if n < 1:
            raise InvalidConfig("Cannot train: there are no training digits.")
        steps_per_epoch = math.ceil(n / self.train.batch_size)
        total = self.train.epochs * steps_per_epoch
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        snapshot_every = self.snapshot_every or max(1, round(total / SNAPSHOTS))
        if total // snapshot_every > MAX_SNAPSHOTS:
            least = math.ceil(total / MAX_SNAPSHOTS)
            raise InvalidConfig(
                f"Cannot train: a snapshot every {snapshot_every} steps makes {total // snapshot_every} snapshots "
                f"of this {total}-step run; keep at most {MAX_SNAPSHOTS} (a snapshot every {least} steps or more, "
                "or 0 to choose automatically)."
            )
        return RunPlan(
            train_size=n,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            eval_every=self.eval_every or max(1, round(total / EVAL_POINTS)),
            snapshot_every=snapshot_every,
            history_every=max(1, math.ceil(total / MAX_STEP_POINTS)),
        )


def parse_widths(text: str | Sequence[int]) -> tuple[int, ...]:
    """'16, 16' -> (16, 16). InvalidConfig with a sentence for anything else."""
    if not isinstance(text, str):
        try:
            return tuple(operator.index(w) for w in text)
        except TypeError:
            raise InvalidConfig(f"Cannot train: hidden widths must be whole numbers (got {text!r}).") from None
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        widths = tuple(int(p) for p in parts)
    except ValueError:
        widths = ()
    if not widths:
        raise InvalidConfig(
            f"Cannot train: hidden widths must be whole numbers separated by commas, like 16, 16 (got {text!r})."
        )
    return widths


def make_spec(
    *,
    architecture: str = "fcnet",
    widths: str | Sequence[int] = "16, 16",
    channels: int | str = 10,
    optimizer: str = "adam",
    lr: float | str = 1e-3,
    batch_size: int | str = 128,
    epochs: int | str = 3,
    seed: int | str = 0,
    schedule: str = "constant",
    train_size: int | str = TRAIN_DIGITS,
    snapshot_every: int | str = 0,
    max_steps: int | None = None,
    max_epochs: int = MAX_APP_EPOCHS,
) -> RunSpec:
    """A RunSpec from the values a person typed (strings or numbers).

    Every problem is collected into one InvalidConfig sentence that starts
    "Cannot train:", so a form can say all that is wrong at once, before any
    training starts.
    """
    problems: list[str] = []

    def whole(name: str, value, low: int, high: int) -> int | None:
        try:
            number = float(value)
            if not number.is_integer():
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"{name} must be a whole number (got {value!r})")
            return None
        number = int(number)
        if not low <= number <= high:
            problems.append(f"{name} must be from {low:,} to {high:,} (got {number:,})")
            return None
        return number

    def collect(error: InvalidConfig) -> None:
        text = str(error).removeprefix("Cannot train: ").rstrip(".")
        problems.append(text[:1].lower() + text[1:])

    model: models.ModelConfig | None = None
    if architecture == "fcnet":
        try:
            model = models.FCConfig(hidden=parse_widths(widths))
        except InvalidConfig as e:
            collect(e)
    elif architecture == "tinyvgg":
        c = whole("channels", channels, 1, 256)
        model = models.TinyVGGConfig(channels=c) if c is not None else None
    else:
        problems.append(f"the network must be fcnet or tinyvgg (got {architecture!r})")

    try:
        rate = float(str(lr).strip()) if isinstance(lr, str) else lr
    except ValueError:
        problems.append(f"the learning rate must be a number like 0.001 or 1e-3 (got {lr!r})")
        rate = None
    values = {
        "batch size": whole("batch size", batch_size, 1, TRAIN_DIGITS),
        "epochs": whole("epochs", epochs, 1, max_epochs),
        "seed": whole("seed", seed, 0, 2**31 - 1),
        "training digits": whole("training digits", train_size, 10, TRAIN_DIGITS),
        "snapshot every": whole("snapshot every", snapshot_every, 0, 10**6),
    }
    config = None
    if rate is not None and values["batch size"] and values["epochs"] and values["seed"] is not None:
        try:
            config = TrainConfig(
                epochs=values["epochs"], batch_size=values["batch size"], lr=rate, optimizer=optimizer,
                schedule=schedule, seed=values["seed"],
            )
        except InvalidConfig as e:
            collect(e)
    if model is not None and values["batch size"]:
        need = training_memory_bytes(model, values["batch size"])
        if need > MEMORY_BUDGET_BYTES:
            problems.append(
                f"a batch of {values['batch size']:,} digits for this network needs about {need / 2**30:.1f} GiB "
                f"of memory to train (the limit is {MEMORY_BUDGET_BYTES / 2**30:.0f} GiB); use a smaller batch size"
            )
    if problems or model is None or config is None or None in values.values():
        raise InvalidConfig("Cannot train: " + "; ".join(problems or ["the settings are incomplete"]) + ".")
    spec = RunSpec(
        model=model, train=config, train_size=values["training digits"],
        snapshot_every=values["snapshot every"], max_steps=max_steps,
    )
    spec.plan(spec.train_size)  # refuses too many snapshots now, not after the start
    return spec


# A training run shares the server's memory with every other session: refuse
# settings that would need more than this before a thread starts.
MEMORY_BUDGET_BYTES = 2 * 2**30


def training_memory_bytes(config: models.ModelConfig, batch_size: int) -> int:
    """A rough upper estimate of one training step's memory: every layer's output for
    each digit of the batch, kept for the backward pass and matched by its gradient
    (x 3 for the temporaries around them), in float32."""
    from digitrec.inspection import forward_hooks

    with torch.device("meta"):  # shapes only: no memory used, no random numbers drawn
        model = models.build(config)
        x = torch.zeros(1, 1, 28, 28)
        with forward_hooks(model) as records:
            model(x)
    floats_per_digit = sum(out.numel() for _, out in records.values())
    return int(batch_size) * floats_per_digit * 4 * 3


# --- what a reader sees ------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The network at one moment of a run.

    first_layer: (U, 28, 28) FCNet neurons' weights or (U, 3, 3) TinyVGG filters, a copy on the CPU.
    probe_probs: (10,) the probe digit's class probabilities.
    """

    step: int
    epoch: int
    seconds: float  # training clock
    first_layer: torch.Tensor
    probe_probs: torch.Tensor
    test_accuracy: float | None  # the latest test-subset accuracy at this moment, 0..1


@dataclass(frozen=True)
class RunProgress:
    """A consistent copy of a run's state; the lists are tuples of dicts that are never changed."""

    status: RunStatus
    name: str  # e.g. "FCNet 784-16-16-10"
    architecture: str  # "fcnet" or "tinyvgg"
    params: int
    macs: int  # multiply-adds of one digit's forward pass
    plan: RunPlan
    epochs: int
    test_size: int  # digits in the full test set
    eval_size: int  # digits in the test subset
    step: int
    epoch: int
    samples_seen: int
    elapsed_s: float  # training clock: pauses, evaluation and recording excluded
    samples_per_s: float
    loss: float
    accuracy: float
    # {"step", "epoch", "seconds", "loss", "accuracy"} per recorded step
    steps: tuple[dict, ...]
    # {"step", "epoch", "seconds", "test_accuracy", "test_loss"} on the test subset, from step 0
    evals: tuple[dict, ...]
    # {"epoch", "step", "seconds", "test_accuracy", "test_loss"} on the full test set after each epoch
    epoch_results: tuple[dict, ...]
    snapshots: tuple[Snapshot, ...]
    probe_probs: torch.Tensor | None  # (10,) now
    first_layer: torch.Tensor | None  # (U, k, k) now
    total_units: int  # neurons or filters in the first layer (U may show fewer)
    message: str  # why a run diverged or failed; empty otherwise
    final_test_accuracy: float | None  # on the full test set, once the run has ended

    @property
    def total_steps(self) -> int:
        return self.plan.total_steps

    @property
    def progress(self) -> float:
        """Fraction of the steps done, 0..1."""
        return min(self.step / self.total_steps, 1.0) if self.total_steps else 1.0

    @property
    def eta_s(self) -> float:
        """Training seconds left at the current pace (nan before the first step)."""
        if self.step == 0:
            return math.nan
        return self.elapsed_s / self.step * max(self.total_steps - self.step, 0)

    @property
    def test_accuracy(self) -> float | None:
        """The latest test-subset accuracy (None before the first evaluation)."""
        return self.evals[-1]["test_accuracy"] if self.evals else None


def first_layer(model: nn.Module, max_units: int | None = None) -> torch.Tensor:
    """A copy of the first layer's weights as small images.

    FCNet: fc_1.weight (H, 784) -> (H, 28, 28), one image per hidden neuron.
    TinyVGG: conv_1_1.weight (C, 1, 3, 3) -> (C, 3, 3), one 3 x 3 filter per channel.
    Keeps the first ``max_units`` (default: MAX_UNITS for the architecture).
    """
    arch = model.config.architecture
    limit = max_units or MAX_UNITS[arch]
    with torch.no_grad():
        if arch == "fcnet":
            w = model.fc_1.weight[:limit]  # (U, 784)
            return w.detach().reshape(-1, IMAGE_SIZE, IMAGE_SIZE).clone()  # (U, 28, 28)
        w = model.conv_1_1.weight[:limit]  # (U, 1, 3, 3), maybe channels-last while training
        return w.detach()[:, 0].contiguous().clone()  # (U, 3, 3)


def _units(model: nn.Module) -> int:
    return model.fc_1.out_features if model.config.architecture == "fcnet" else model.conv_1_1.out_channels


def _probe_probs(model: nn.Module, probe: torch.Tensor) -> torch.Tensor:
    """(10,) class probabilities of the probe digit; the model's mode is restored."""
    with eval_mode(model), torch.inference_mode():
        return torch.softmax(model(probe), dim=1)[0].clone()  # dim=1: classes


def eval_subset(test: DigitSet, size: int = EVAL_SIZE) -> DigitSet:
    """A fixed, seeded random subset of the test set (the same for every run and seed).

    Random rather than the first ``size`` digits: MNIST's first 5,000 test digits
    are cleaner and easier than the last 5,000 (as its authors note).
    """
    if size >= len(test):
        return test
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(SUBSET_SEED))[:size]
    idx, _ = idx.sort()
    return DigitSet(test.images[idx], test.labels[idx])


# --- the run -------------------------------------------------------------------------------------

_RUN_IDS = itertools.count(1)


class TrainingRun:
    """One model trained in a background thread; control it and read ``progress()`` from any thread.

    ``data``: MNIST (trains on the first ``spec.train_size`` training digits,
    tests on the test set). ``probe``: a (28, 28) digit in [0, 1] whose
    probabilities are followed during training (default: the first test digit).
    The model is built from ``spec.model`` with ``spec.train.seed``.
    ``callbacks``: more ``train.Callback`` objects, called in the training
    thread after the run's own recording.

    ``threads``: PyTorch intra-op threads for the training thread (None leaves
    the setting alone). One is the default because on a small, shared machine
    two OpenMP threads that wait for each other while other work holds the
    cores train several times slower than one (measured on a 2-core machine
    under load: FCNet 7,800 vs 26,000 digits/s, TinyVGG 870 vs 5,600), and one
    leaves a core for the app. Note that ``torch.set_num_threads`` is not
    thread-local: threads started afterwards inherit the value.
    """

    def __init__(
        self,
        spec: RunSpec,
        data: MNIST,
        probe: torch.Tensor | None = None,
        callbacks: Sequence[Callback] = (),
        threads: int | None = 1,
    ) -> None:
        self.spec = spec
        self.id = next(_RUN_IDS)  # unique in this process, unlike id(), which a later object may reuse
        self._callbacks = tuple(callbacks)
        self.threads = threads
        self.plan = spec.plan(len(data.train))
        self._train = data.train.subset(self.plan.train_size)
        self._test = data.test
        self._subset = eval_subset(data.test, spec.eval_size)
        if probe is None:
            probe = data.test.images[0].float() / 255.0
        self.probe = probe.detach().float().reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).clone()  # (1, 1, 28, 28)
        self.model = models.build(spec.model, seed=spec.train.seed)
        self.model.eval()
        self.params = models.count_params(self.model)
        self.macs = models.count_macs(self.model)  # before the thread starts: it runs a forward pass
        self._total_units = _units(self.model)

        self.control = TrainControl()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status = RunStatus.IDLE  # for the thread's outcome; live states come from the control
        self._reached_max = False
        self._state = TrainState(epochs=spec.train.epochs, steps_per_epoch=self.plan.steps_per_epoch)
        self._steps: list[dict] = []
        self._evals: list[dict] = []
        self._epoch_results: list[dict] = []
        self._snapshots: list[Snapshot] = []
        self._live_probs: torch.Tensor | None = None
        self._live_weights: torch.Tensor | None = None
        self._live_at = 0.0
        self._message = ""
        self._final_accuracy: float | None = None

    # -- control (any thread) --

    def start(self, paused: bool = False) -> None:
        """Start training in a new thread (paused: wait for resume() or step(n) first)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("This run has already been started; make a new TrainingRun to train again.")
            if paused:
                self.control.pause()
            self._thread = threading.Thread(target=self._main, name=f"digitrec-run-{self.spec.name}", daemon=True)
            self._status = RunStatus.RUNNING
            self._thread.start()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self, n: int = 1) -> None:
        """Run ``n`` more batches, then pause (starts a paused run first if it was idle)."""
        if self._thread is None:
            self.start(paused=True)
        self.control.step(n)

    def step_epoch(self) -> None:
        """Run to the end of the current epoch (a whole epoch if paused at an epoch's end), then pause."""
        with self._lock:
            done = self._state.step
        left = self.plan.steps_per_epoch - done % self.plan.steps_per_epoch
        self.step(min(left, max(self.plan.total_steps - done, 1)))

    def stop(self) -> None:
        """Ask the run to end; the thread finishes its current batch and a last evaluation, then ends."""
        self.control.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it has (or never started)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def status(self) -> RunStatus:
        with self._lock:
            status = self._status
        if status is not RunStatus.RUNNING:
            return status
        if self.control.stopped:
            return RunStatus.STOPPING
        return RunStatus.PAUSED if self.control.paused else RunStatus.RUNNING

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- reading (any thread) --

    def progress(self) -> RunProgress:
        """A consistent copy of everything recorded so far."""
        status = self.status
        with self._lock:
            s = self._state
            return RunProgress(
                status=status, name=self.spec.name, architecture=self.spec.model.architecture,
                params=self.params, macs=self.macs, plan=self.plan, epochs=self.spec.train.epochs,
                test_size=len(self._test), eval_size=len(self._subset),
                step=s.step, epoch=s.epoch, samples_seen=s.samples_seen, elapsed_s=s.elapsed_s,
                samples_per_s=s.samples_per_s, loss=s.loss, accuracy=s.accuracy,
                steps=tuple(self._steps), evals=tuple(self._evals), epoch_results=tuple(self._epoch_results),
                snapshots=tuple(self._snapshots), probe_probs=self._live_probs, first_layer=self._live_weights,
                total_units=self._total_units, message=self._message, final_test_accuracy=self._final_accuracy,
            )

    def trained_model(self) -> nn.Module:
        """A copy of the model once the run has ended (the run keeps its own)."""
        if self.thread_alive or self._thread is None:
            raise RuntimeError("The run has not ended yet: stop it or wait for it to finish.")
        return copy.deepcopy(self.model)

    def checkpoint_bytes(self) -> bytes:
        """The ended run's model as a digitrec safetensors checkpoint (for a download)."""
        model = self.trained_model()
        p = self.progress()
        t = self.spec.train
        extra = {
            "steps": str(p.step), "train_size": str(self.plan.train_size), "batch_size": str(t.batch_size),
            "optimizer": t.optimizer, "lr": repr(t.lr), "schedule": t.schedule, "run_status": p.status.value,
        }
        return checkpoints.to_bytes(
            model, test_accuracy=p.final_test_accuracy, epochs=len(p.epoch_results), seed=t.seed, extra=extra
        )

    # -- the training thread --

    def _main(self) -> None:
        outcome, message = RunStatus.FINISHED, ""
        recorder = _Recorder(self)
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            fit(self.model, self._train, self.spec.train, callbacks=[recorder, *self._callbacks],
                control=self.control, test=self._test)
        except TrainingDiverged as e:
            outcome, message = RunStatus.DIVERGED, str(e)
        except Exception as e:  # a bug: say so on the page instead of dying silently
            traceback.print_exc(file=sys.stderr)
            outcome, message = RunStatus.FAILED, f"Training failed unexpectedly ({type(e).__name__}: {e})."
        if outcome is RunStatus.FINISHED and self.control.stopped and not self._reached_max:
            outcome = RunStatus.STOPPED
        try:
            recorder.finish()  # the last points, so every curve ends where the model ended
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            if outcome is not RunStatus.FAILED:
                outcome, message = RunStatus.FAILED, f"The last evaluation failed unexpectedly ({type(e).__name__}: {e})."
        with self._lock:
            self._message = message
            self._status = outcome


class _Recorder:
    """The run's callback: runs in the training thread, writes under the run's lock."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.last_eval_step = -1
        self.last_snapshot_step = -1

    def on_fit_start(self, state: TrainState) -> None:
        self._publish(state)
        self._evaluate(state)  # step 0: the untrained network, about 10 %
        self._snapshot(state)

    def on_step_end(self, state: TrainState) -> None:
        run, plan = self.run, self.run.plan
        row = None
        if state.step % plan.history_every == 0:
            row = {"step": state.step, "epoch": state.epoch, "seconds": state.elapsed_s,
                   "loss": state.loss, "accuracy": state.accuracy}
        self._publish(state, row)
        if state.step % plan.eval_every == 0:
            self._evaluate(state)
        if state.step % plan.snapshot_every == 0:
            self._snapshot(state)
        elif time.monotonic() - run._live_at > LIVE_EVERY_S:
            self._live()
        if run.spec.max_steps is not None and state.step >= run.spec.max_steps:
            run._reached_max = True
            run.control.stop()

    def on_epoch_end(self, state: TrainState) -> None:
        if state.test_accuracy is None:
            return
        row = {"epoch": state.epoch, "step": state.step, "seconds": state.elapsed_s,
               "test_accuracy": state.test_accuracy, "test_loss": state.test_loss}
        with self.run._lock:
            self.run._epoch_results.append(row)

    def finish(self) -> None:
        """After fit: a last subset point and snapshot, and the full test accuracy of the final model."""
        run = self.run
        with run._lock:
            state = replace(run._state)
            last_epoch = run._epoch_results[-1] if run._epoch_results else None
        if state.step == 0:
            return  # nothing was trained: the step-0 points already describe this model
        if self.last_eval_step != state.step:
            self._evaluate(state)
        if self.last_snapshot_step != state.step:
            self._snapshot(state)
        if last_epoch is not None and last_epoch["step"] == state.step:
            accuracy = last_epoch["test_accuracy"]
        else:
            accuracy = evaluate(run.model, run._test)[1]
        with run._lock:
            run._final_accuracy = accuracy

    def _publish(self, state: TrainState, row: dict | None = None) -> None:
        with self.run._lock:
            self.run._state = replace(state)  # a copy: fit keeps changing its own
            if row is not None:
                self.run._steps.append(row)

    def _evaluate(self, state: TrainState) -> None:
        loss, accuracy = evaluate(self.run.model, self.run._subset)  # restores the model's mode
        row = {"step": state.step, "epoch": state.epoch, "seconds": state.elapsed_s,
               "test_accuracy": accuracy, "test_loss": loss}
        with self.run._lock:
            self.run._evals.append(row)
        self.last_eval_step = state.step

    def _live(self) -> tuple[torch.Tensor, torch.Tensor]:
        run = self.run
        probs, weights = _probe_probs(run.model, run.probe), first_layer(run.model)
        with run._lock:
            run._live_probs, run._live_weights = probs, weights
        run._live_at = time.monotonic()
        return probs, weights

    def _snapshot(self, state: TrainState) -> None:
        probs, weights = self._live()
        run = self.run
        with run._lock:
            accuracy = run._evals[-1]["test_accuracy"] if run._evals else None
            run._snapshots.append(Snapshot(state.step, state.epoch, state.elapsed_s, weights, probs, accuracy))
        self.last_snapshot_step = state.step


class Pace:
    """A callback that makes each step last at least ``seconds``, so a person can watch it learn.

    It sleeps in the training thread after a step; ``fit`` keeps callbacks off the
    training clock, so the run still reports its real speed.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.slept_s = 0.0  # seconds spent waiting so far
        self._last: float | None = None

    def on_step_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        if self._last is not None and self.seconds > 0:
            wait = self.seconds - (now - self._last)
            if wait > 0:
                time.sleep(wait)
                self.slept_s += wait
        self._last = time.perf_counter()


# --- the race ---------------------------------------------------------------------------------


class RaceMode(str, enum.Enum):
    SEQUENTIAL = "one after the other"  # fair: each network has the whole machine
    TOGETHER = "together"  # both at once: they share the processor, each is slower


class Race:
    """Several runs on the same digits, one after the other or together.

    Sequential mode starts the next run when the previous one has ended; a
    stop() ends the current run and starts no other.
    """

    def __init__(self, runs: Sequence[TrainingRun], mode: RaceMode | str = RaceMode.SEQUENTIAL) -> None:
        self.runs = tuple(runs)
        self.mode = RaceMode(mode)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("This race has already been started; make a new Race to race again.")
        self._thread = threading.Thread(target=self._main, name="digitrec-race", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        if self.mode is RaceMode.TOGETHER:
            for run in self.runs:
                run.start()
            for run in self.runs:
                run.join()
            return
        for run in self.runs:
            if self._stopped.is_set():
                break
            run.start()
            run.join()

    def stop(self) -> None:
        self._stopped.set()
        for run in self.runs:
            run.stop()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def status(self) -> RunStatus:
        """RUNNING while any run trains or waits its turn; then STOPPED if stopped, else FINISHED."""
        if self._thread is None:
            return RunStatus.IDLE
        if self._thread.is_alive() or any(r.status.active for r in self.runs):
            return RunStatus.STOPPING if self._stopped.is_set() else RunStatus.RUNNING
        return RunStatus.STOPPED if self._stopped.is_set() else RunStatus.FINISHED

    def progress(self) -> tuple[RunProgress, ...]:
        return tuple(run.progress() for run in self.runs)


def race_specs(
    *,
    fc: models.FCConfig = models.FCConfig(),
    cnn: models.TinyVGGConfig = models.TinyVGGConfig(),
    train: TrainConfig = TrainConfig(epochs=1),
    train_size: int = TRAIN_DIGITS,
) -> tuple[RunSpec, RunSpec]:
    """The FCNet and TinyVGG runs of a race: same digits, seed, batch size, optimizer and evaluation steps."""
    return RunSpec(model=fc, train=train, train_size=train_size), RunSpec(model=cnn, train=train, train_size=train_size)


def make_race(
    data: MNIST,
    specs: Sequence[RunSpec],
    mode: RaceMode | str = RaceMode.SEQUENTIAL,
    probe: torch.Tensor | None = None,
) -> Race:
    """A Race of one run per spec (not started)."""
    return Race([TrainingRun(spec, data, probe) for spec in specs], mode)
