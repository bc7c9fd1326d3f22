"""A training run in the background: start, pause, resume, step, stop, and watch.

A ``TrainingRun`` trains one model with ``digitrec.train.fit`` in a thread of
its own. Any other thread (the app's page, a test) controls it through
``train.TrainControl`` and reads ``progress()``: a frozen copy of everything so
far, taken under a lock, so a reader never sees a half-written list.

While it trains, the run's ``Recorder`` keeps, off the training clock (``fit``
does not count callbacks or evaluation as training time):

- every step's loss and batch accuracy (every k-th step for very long runs);
- every ``eval_every`` steps (about 30 points a run), the loss and accuracy on
  a fixed 2,000-digit subset of the validation digits (held out of the 60,000
  training digits by ``data.validation_split``, never trained on) and on a
  fixed 2,000-digit subset of the digits it trains on, so the two curves
  compare on equal terms; on all validation digits after each epoch (a point due
  at an epoch's end takes its validation half from that pass: the subset is among them);
- the test set once, at the end: a run never watches it while it trains, so
  nothing about the run is chosen by looking at the test digits;
- a snapshot every ``snapshot_every`` steps: the first layer's weights and the
  probe digit's ten probabilities at that moment (for replaying the run), and
  the whole network's weights within ``config.SNAPSHOT_WEIGHTS_BUDGET`` (for a
  unit's biography across training, ``model_at``);
- the latest first-layer weights and probe probabilities, a few times a second.

What it records is plain data (``digitrec.history`` rows, CPU tensors, a
``TrainState`` copy) and the recorder holds no reference to the run, so the
recording can be made wherever the training happens and sent to the reader.
What to train is a ``digitrec.spec.RunSpec``; two runs raced against each other
are a ``digitrec.race.Race``. The library never imports streamlit: the app
keeps each run in the browser session that started it.
"""

from __future__ import annotations

import copy
import enum
import itertools
import math
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import nn

from digitrec import checkpoints, config, models
from digitrec.data import IMAGE_SIZE, MNIST, DigitSet, permute_pixels, validation_split
from digitrec.errors import TrainingDiverged
from digitrec.history import EvalRow, StepRow
from digitrec.inspection import eval_mode
from digitrec.spec import RunPlan, RunSpec
from digitrec.train import (Callback, TrainConfig, TrainControl, TrainState, evaluate, evaluate_each, fit, pixel_order,
                            step_row, subset_scores)


class RunStatus(str, enum.Enum):
    IDLE = "idle"  # made, not started
    QUEUED = "queued"  # started, waiting for a free slot on the server (digitrec.engines.queue)
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
        return self in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.STOPPING)

    @property
    def ended(self) -> bool:
        return self in (RunStatus.STOPPED, RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.FAILED)


# --- what a reader sees ------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The network at one moment of a run.

    first_layer: (U, 28, 28) FCNet neurons' weights or (U, 3, 3) TinyVGG filters, a copy on the CPU.
    probe_probs: (10,) the probe digit's class probabilities.
    weights: the whole network's state dict at that moment (CPU copies), or None where the
    run's budget (config.SNAPSHOT_WEIGHTS_BUDGET) skipped it; ``model_at`` rebuilds the network.
    """

    step: int
    epoch: int
    seconds: float  # training clock
    first_layer: torch.Tensor
    probe_probs: torch.Tensor
    val_accuracy: float | None  # the latest validation-subset accuracy at this moment, 0..1
    weights: dict[str, torch.Tensor] | None = None


def model_at(model: nn.Module, snapshot: Snapshot) -> nn.Module:
    """A copy of ``model`` (the run's trained network) with the weights it had at ``snapshot``, in eval mode."""
    if snapshot.weights is None:
        raise ValueError(f"The snapshot at step {snapshot.step} kept no weights (the run's budget skipped it).")
    rebuilt = copy.deepcopy(model)
    rebuilt.load_state_dict(snapshot.weights)
    return rebuilt.eval()


def weights_stride(model: nn.Module, plan: RunPlan) -> int:
    """Keep the whole network's weights on every k-th snapshot, so a run stays within SNAPSHOT_WEIGHTS_BUDGET."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    snapshots = plan.total_steps // max(plan.snapshot_every, 1) + 2  # step 0 and the end besides
    return max(1, math.ceil(size * snapshots / config.SNAPSHOT_WEIGHTS_BUDGET))


@dataclass(frozen=True)
class RunProgress:
    """A consistent copy of a run's state; the histories are tuples of frozen rows."""

    status: RunStatus
    name: str  # e.g. "FCNet 784-16-16-10"
    architecture: str  # "fcnet" or "tinyvgg"
    params: int
    macs: int  # multiply-adds of one digit's forward pass
    plan: RunPlan
    epochs: int
    test_size: int  # digits in the full test set (evaluated once, when the run ends)
    eval_size: int  # digits in the validation subset the curves watch
    step: int
    epoch: int
    samples_seen: int
    elapsed_s: float  # training clock: pauses, evaluation and recording excluded
    samples_per_s: float
    loss: float
    accuracy: float
    steps: tuple[StepRow, ...]  # per recorded step
    evals: tuple[EvalRow, ...]  # on the validation subset (and the training subset), from step 0
    epoch_results: tuple[EvalRow, ...]  # on all validation digits after each epoch
    snapshots: tuple[Snapshot, ...]
    probe_probs: torch.Tensor | None  # (10,) now
    first_layer: torch.Tensor | None  # (U, k, k) now
    total_units: int  # neurons or filters in the first layer (U may show fewer)
    message: str  # why a run diverged or failed; empty otherwise
    final_test_accuracy: float | None  # on the full test set, once the run has ended
    device: str = "cpu"  # where it trained: "cpu" or "cuda" (device_words says it)
    mixed_precision: bool = False  # its forward passes ran in bfloat16 (train.TrainConfig.mixed_precision)
    hand_backward: bool = False  # its gradients came from the chain rule written out (digitrec.hand_backward)
    validation_size: int = config.VALIDATION_SIZE  # digits held out of the training set
    train_eval_size: int = config.EVAL_SIZE  # digits of the training set measured like the validation subset
    shuffled_pixels: bool = False  # the run reads every digit in the fixed shuffled pixel order
    notice: str = ""  # one sentence when the run trains elsewhere than the server meant (Ray unreachable)

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
    def val_accuracy(self) -> float | None:
        """The latest validation-subset accuracy (None before the first evaluation)."""
        return self.evals[-1].val_accuracy if self.evals else None


def first_layer(model: nn.Module, max_units: int | None = None) -> torch.Tensor:
    """A copy of the first layer's weights as small images.

    FCNet: fc_1.weight (H, 784) -> (H, 28, 28), one image per hidden neuron.
    TinyVGG: conv_1_1.weight (C, 1, 3, 3) -> (C, 3, 3), one 3 x 3 filter per channel.
    Keeps the first ``max_units`` (default: config.MAX_UNITS for the architecture).
    """
    limit = max_units or config.MAX_UNITS.get(model.config.architecture, 64)
    with torch.no_grad():  # the first Linear or convolution, whatever its name (fc_1, conv_1_1, a learner's own)
        w = _first_weighted(model).weight[:limit].detach().cpu()  # (U, 784) or (U, 1, k, k), maybe channels-last
        if w.dim() == 2:
            return w.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).clone()  # (U, 28, 28)
        return w[:, 0].contiguous().clone()  # (U, k, k)


# A first-layer unit at least this alike its start (``likeness_to_start``) has been tuned, not redrawn:
# TinyVGG's 3 x 3 filters stayed 0.85-0.96 alike over an epoch at Adam's 1e-3 (2026-12-05).
TUNED_NOT_REDRAWN = 0.7


def likeness_to_start(start: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
    """(U,) how alike each first-layer unit's weights are now and at the start (``first_layer`` images,
    (U, ...) each): the cosine similarity of the two, 1 for the same pattern, about 0 for unrelated ones."""
    return nn.functional.cosine_similarity(start.flatten(1).double(), now.flatten(1).double(), dim=1)


def _first_weighted(model: nn.Module) -> nn.Module:
    return next(m for m in model.children() if isinstance(m, (nn.Linear, nn.Conv2d)))


def _units(model: nn.Module) -> int:
    first = _first_weighted(model)
    return first.out_features if isinstance(first, nn.Linear) else first.out_channels


def _probe_probs(model: nn.Module, probe: torch.Tensor) -> torch.Tensor:
    """(10,) class probabilities of the probe digit; the model's mode is restored."""
    with eval_mode(model), torch.inference_mode():
        probe = probe.to(next(model.parameters()).device)
        return torch.softmax(model(probe), dim=1)[0].cpu().clone()  # dim=1: classes; a CPU copy


def eval_subset_index(n: int, size: int = config.EVAL_SIZE) -> torch.Tensor | None:
    """Sorted positions of a fixed, seeded random ``size`` of ``n`` digits (the same for every run and
    seed); None when ``size`` covers them all.

    Random rather than the first ``size`` digits: MNIST's first 5,000 test digits
    are cleaner and easier than the last 5,000 (as its authors note), and the
    validation digits keep their original order.
    """
    if size >= n:
        return None
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(config.SUBSET_SEED))[:size]
    return idx.sort().values


def eval_subset(test: DigitSet, size: int = config.EVAL_SIZE) -> DigitSet:
    """The digits of ``test`` at ``eval_subset_index``: the fixed subset a run's curves watch."""
    idx = eval_subset_index(len(test), size)
    return test if idx is None else DigitSet(test.images[idx], test.labels[idx])


# --- the run -------------------------------------------------------------------------------------

_RUN_IDS = itertools.count(1)


class TrainingRun:
    """One model trained in a background thread; control it and read ``progress()`` from any thread.

    ``data``: MNIST. The training digits are split (``data.validation_split``)
    into the digits it may train on (the first ``spec.train_size`` of them) and
    the validation digits its curves watch; the test set is evaluated once, at the end. ``probe``: a (28, 28) digit in [0, 1] whose
    probabilities are followed during training (default: the first test digit).
    The model is built from ``spec.model`` with ``spec.train.seed``.
    ``callbacks``: more ``train.Callback`` objects, called in the training
    thread after the run's own recording. ``on_end``: called in the training
    thread once the run has ended and its status is final (a worker process
    waits on it instead of looking every few milliseconds).

    ``threads``: PyTorch intra-op threads to set when the thread starts (None,
    the default, leaves the setting alone). ``torch.set_num_threads`` is not
    thread-local: it changes the whole process, so only a process of its own
    should set it. The app trains each run in a worker process
    (``digitrec.engines.local.WorkerRun``) that sets its own thread count and
    runs this class inside it.
    """

    def __init__(
        self,
        spec: RunSpec,
        data: MNIST,
        probe: torch.Tensor | None = None,
        callbacks: Sequence[Callback] = (),
        threads: int | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self._on_end = on_end
        self.id = next(_RUN_IDS)  # unique in this process, unlike id(), which a later object may reuse
        self._callbacks = tuple(callbacks)
        self.threads = threads
        training, self._validation = validation_split(data.train)
        self.plan = spec.plan(len(training))
        self._train = training.subset(self.plan.train_size)
        self._test = data.test
        self._train_subset = eval_subset(self._train, spec.eval_size)
        if probe is None:
            probe = data.test.images[0].float() / 255.0
        self.probe = probe.detach().float().reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).clone()  # (1, 1, 28, 28)
        # A shuffled-pixel run reads everything in its fixed order: training, evaluation and the probe.
        self.pixel_order = pixel_order(spec.train)
        self.model = models.build(spec.model, seed=spec.train.seed)
        self.model.eval()
        self.params = models.count_params(self.model)
        self.macs = models.count_macs(self.model)  # before the thread starts: it runs a forward pass
        self._total_units = _units(self.model)

        self.control = TrainControl()
        self._lock = threading.Lock()  # guards the status and message below
        self._thread: threading.Thread | None = None
        self._status = RunStatus.IDLE  # for the thread's outcome; live states come from the control
        self._message = ""
        probe_input = self.probe if self.pixel_order is None else permute_pixels(self.probe, self.pixel_order)
        self._recorder = Recorder(self.model, self.plan, spec.train, probe_input, self._validation, self._test,
                                  subset_index=eval_subset_index(len(self._validation), spec.eval_size),
                                  train_subset=self._train_subset,
                                  order=self.pixel_order)

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
        done = self._recorder.steps_done()
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
            message = self._message
        r = self._recorder.read()
        s = r.state
        return RunProgress(
            status=status, name=self.spec.name, architecture=self.spec.model.architecture,
            params=self.params, macs=self.macs, plan=self.plan, epochs=self.spec.train.epochs,
            test_size=len(self._test), eval_size=len(self._recorder.subset), validation_size=len(self._validation),
            shuffled_pixels=self.pixel_order is not None, train_eval_size=len(self._train_subset),
            step=s.step, epoch=s.epoch, samples_seen=s.samples_seen, elapsed_s=s.elapsed_s,
            samples_per_s=s.samples_per_s, loss=s.loss, accuracy=s.accuracy,
            steps=r.steps, evals=r.evals, epoch_results=r.epoch_results,
            snapshots=r.snapshots, probe_probs=r.probe_probs, first_layer=r.first_layer,
            total_units=self._total_units, message=message, final_test_accuracy=r.final_test_accuracy,
            device=next(self.model.parameters()).device.type, mixed_precision=s.mixed_precision,
            hand_backward=s.hand_backward,
        )

    def trained_model(self) -> nn.Module:
        """A copy of the model once the run has ended (the run keeps its own)."""
        if self.thread_alive or self._thread is None:
            raise RuntimeError("The run has not ended yet: stop it or wait for it to finish.")
        return copy.deepcopy(self.model)

    def checkpoint_bytes(self) -> bytes:
        """The ended run's model as a digitrec safetensors checkpoint (for a download)."""
        return checkpoint_bytes_of(self)

    # -- the training thread --

    def _main(self) -> None:
        outcome, message = RunStatus.FINISHED, ""
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            # No test set for fit: the recorder measures all validation digits after each epoch (and
            # takes the curve's point at that step from the same pass); the test set is used once, at the end.
            state = fit(self.model, self._train, self.spec.train, callbacks=[self._recorder, *self._callbacks],
                        control=self.control)
            if state.stopped:  # stop() came before the last step (reaching max_steps is finishing)
                outcome = RunStatus.STOPPED
        except TrainingDiverged as e:
            outcome, message = RunStatus.DIVERGED, str(e)
        except Exception as e:  # a bug: say so on the page instead of dying silently
            traceback.print_exc(file=sys.stderr)
            outcome, message = RunStatus.FAILED, f"Training failed unexpectedly ({type(e).__name__}: {e})."
        try:
            self._recorder.finish()  # the last points, so every curve ends where the model ended
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            if outcome is not RunStatus.FAILED:
                outcome, message = RunStatus.FAILED, f"The last evaluation failed unexpectedly ({type(e).__name__}: {e})."
        with self._lock:
            self._message = message
            self._status = outcome
        if self._on_end is not None:
            self._on_end()


# --- the recording -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """What a Recorder has kept so far: plain rows and CPU tensors, never changed after it is read."""

    state: TrainState  # a copy of fit's latest state
    steps: tuple[StepRow, ...]
    evals: tuple[EvalRow, ...]
    epoch_results: tuple[EvalRow, ...]
    snapshots: tuple[Snapshot, ...]
    probe_probs: torch.Tensor | None  # (10,) now
    first_layer: torch.Tensor | None  # (U, k, k) now
    final_test_accuracy: float | None


class Recorder:
    """A run's training callback: keeps the history, evaluations and snapshots of one model.

    Runs in the training thread and writes under its own lock; ``read()`` from
    any thread gives a frozen ``Recording``. It knows the model, the plan and
    the digits it evaluates on, not the run, so it can record wherever the model
    trains.
    """

    def __init__(self, model: nn.Module, plan: RunPlan, train_config: TrainConfig, probe: torch.Tensor,
                 validation: DigitSet, test: DigitSet, subset_index: torch.Tensor | None = None,
                 train_subset: DigitSet | None = None, order: torch.Tensor | None = None) -> None:
        # validation: all held-out digits, measured after each epoch (unless the config says not);
        # subset_index: the positions among them the curves watch (None: all of them); train_subset:
        # digits it trains on, measured the same way; test: evaluated once, in finish(); order: a
        # shuffled-pixel run's pixel permutation.
        self.model, self.plan, self.probe, self.validation, self.test = model, plan, probe, validation, test
        self.subset_index = subset_index
        self.subset = validation if subset_index is None else DigitSet(validation.images[subset_index],
                                                                       validation.labels[subset_index])
        self.train_subset, self.order = train_subset, order
        self._each_epoch = train_config.evaluate_each_epoch
        # A curve point due at an epoch's last step waits for that epoch's validation pass, which
        # gives its validation half for nothing (the subset is among the digits measured).
        self._point_at_epoch_end = False
        self._lock = threading.Lock()
        self._state = TrainState(epochs=train_config.epochs, steps_per_epoch=plan.steps_per_epoch,
                                 max_steps=train_config.max_steps)
        self._steps: list[StepRow] = []
        self._evals: list[EvalRow] = []
        self._epoch_results: list[EvalRow] = []
        self._snapshots: list[Snapshot] = []
        self._live_probs: torch.Tensor | None = None
        self._live_weights: torch.Tensor | None = None
        self._final_accuracy: float | None = None
        self._live_at = 0.0
        # The recording budget (config.RECORDING_BUDGET): seconds spent recording since the
        # start, and what each kind of recording cost the last time (perf_counter seconds).
        self._started = time.perf_counter()
        self._spent_s = 0.0
        self._cost_s = {"eval": 0.0, "snapshot": 0.0, "live": 0.0}
        self._owed = {"eval": False, "snapshot": False}  # due, but postponed to keep within the budget
        self.last_eval_step = -1
        self.last_snapshot_step = -1
        self._weights_every = weights_stride(model, plan)

    def read(self) -> Recording:
        with self._lock:
            return Recording(
                self._state.copy(), tuple(self._steps), tuple(self._evals), tuple(self._epoch_results),
                tuple(self._snapshots), self._live_probs, self._live_weights, self._final_accuracy,
            )

    def steps_done(self) -> int:
        with self._lock:
            return self._state.step

    # -- train.Callback events (the training thread) --

    def on_fit_start(self, state: TrainState) -> None:
        self._started = time.perf_counter()
        self._publish(state)
        self._timed("eval", self._evaluate, state)  # step 0: the untrained network, about 10 %
        self._timed("snapshot", self._snapshot, state)

    def on_step_end(self, state: TrainState) -> None:
        plan = self.plan
        self._publish(state, step_row(state) if state.step % plan.history_every == 0 else None)
        self._owed["eval"] |= state.step % plan.eval_every == 0
        self._owed["snapshot"] |= state.step % plan.snapshot_every == 0
        # A curve has at least a start, a middle and an end: halfway through, a run the budget has left
        # without a point since step 0 gets one, whatever it costs (a one-epoch run, a loaded machine).
        # A cadence the learner chose is kept exactly.
        middle = plan.adapt_eval and state.step == max(1, plan.total_steps // 2) and self.last_eval_step <= 0
        if middle or (self._owed["eval"] and (not plan.adapt_eval or self._affordable("eval"))):
            self._owed["eval"] = False
            if self._each_epoch and state.step % plan.steps_per_epoch == 0:
                self._point_at_epoch_end = True  # on_epoch_end, next, measures all validation digits
            else:
                self._timed("eval", self._evaluate, state)
        if self._owed["snapshot"] and (not plan.adapt_snapshots or self._affordable("snapshot")):
            self._owed["snapshot"] = False
            self._timed("snapshot", self._snapshot, state)
        elif time.monotonic() - self._live_at > config.LIVE_EVERY_S and self._affordable("live"):
            self._timed("live", self._live)

    def recording_share(self) -> float:
        """Seconds spent recording over the run's wall clock so far (0..1)."""
        return self._spent_s / max(time.perf_counter() - self._started, 1e-9)

    def _affordable(self, kind: str) -> bool:
        """Would recording ``kind`` now (at its last cost) keep within the budget of the wall clock so far?"""
        wall = time.perf_counter() - self._started
        return self._spent_s + self._cost_s[kind] <= config.RECORDING_BUDGET * wall

    def _timed(self, kind: str, record, *args) -> None:
        start = time.perf_counter()
        record(*args)
        self._cost_s[kind] = time.perf_counter() - start
        self._spent_s += self._cost_s[kind]

    def on_epoch_end(self, state: TrainState) -> None:
        """All validation digits (the red diamonds); a curve point due now, or the run's last one, comes
        from the same pass for its validation half."""
        if not self._each_epoch:
            return
        losses, right = evaluate_each(self.model, self.validation, order=self.order)
        loss, accuracy = subset_scores(losses, right)
        with self._lock:
            self._epoch_results.append(EvalRow(state.step, state.epoch, state.elapsed_s, accuracy, loss))
        due = self._point_at_epoch_end or state.step >= state.total_steps  # finish() would measure the last
        if due and self.last_eval_step != state.step:
            self._point_at_epoch_end = False
            start = time.perf_counter()
            self._evaluate(state, subset_scores(losses, right, self.subset_index))
            # Counted against the budget, but not as the cost of a point: most points measure both halves.
            self._spent_s += time.perf_counter() - start

    def finish(self) -> None:
        """After fit: a last subset point and snapshot, and the full test accuracy of the final model."""
        with self._lock:
            state = self._state.copy()
        if state.step == 0:
            return  # nothing was trained: the step-0 points already describe this model
        if self.last_eval_step != state.step:
            self._evaluate(state)
        if self.last_snapshot_step != state.step:
            self._snapshot(state, final=True)
        elif self._snapshots and self._snapshots[-1].weights is None:  # the last moment always keeps its weights
            with self._lock:
                self._snapshots[-1] = replace(self._snapshots[-1], weights=_weights(self.model))
        accuracy = evaluate(self.model, self.test, order=self.order)[1]  # the test set's one use
        with self._lock:
            self._final_accuracy = accuracy

    def _publish(self, state: TrainState, row: StepRow | None = None) -> None:
        with self._lock:
            self._state = state.copy()  # fit keeps changing its own
            if row is not None:
                self._steps.append(row)

    def _evaluate(self, state: TrainState, validation: tuple[float, float] | None = None) -> None:
        """A curve point: the validation subset (``validation``: its (loss, accuracy), already measured)
        and the training subset."""
        loss, accuracy = validation or evaluate(self.model, self.subset, order=self.order)  # restores the mode
        train_loss = train_accuracy = None
        if self.train_subset is not None:
            train_loss, train_accuracy = evaluate(self.model, self.train_subset, order=self.order)
        with self._lock:
            self._evals.append(EvalRow(state.step, state.epoch, state.elapsed_s, accuracy, loss,
                                       train_accuracy, train_loss))
        self.last_eval_step = state.step

    def _live(self) -> tuple[torch.Tensor, torch.Tensor]:
        probs, weights = _probe_probs(self.model, self.probe), first_layer(self.model)
        with self._lock:
            self._live_probs, self._live_weights = probs, weights
        self._live_at = time.monotonic()
        return probs, weights

    def _snapshot(self, state: TrainState, final: bool = False) -> None:
        probs, first = self._live()
        keep = final or len(self._snapshots) % self._weights_every == 0
        whole = _weights(self.model) if keep else None
        with self._lock:
            accuracy = self._evals[-1].val_accuracy if self._evals else None
            self._snapshots.append(Snapshot(state.step, state.epoch, state.elapsed_s, first, probs, accuracy, whole))
        self.last_snapshot_step = state.step


def device_words(device: str) -> str:
    """Where a run trained (``RunProgress.device``), as the pages say it: "GPU (CUDA)" or "CPU".

    No CUDA call, unlike ``engines.local.device_name`` (the GPU's own name, for the bench and the CLI,
    which train in their own process): a page process never opens a context on the server's GPU."""
    return {"cuda": "GPU (CUDA)", "cpu": "CPU"}.get(device, device)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s state dict (contiguous: training may keep convolutions channels-last)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


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


def checkpoint_bytes_of(run) -> bytes:
    """An ended run's model as a digitrec safetensors checkpoint, with how it was trained as metadata.

    ``run``: any run handle (a TrainingRun here, or an engine's handle) with ``trained_model()``,
    ``progress()``, ``spec`` and ``plan``: one recipe, so every engine's downloads say the same things."""
    model = run.trained_model()
    p = run.progress()
    t = run.spec.train
    extra = {
        "steps": str(p.step), "train_size": str(run.plan.train_size), "batch_size": str(t.batch_size),
        "optimizer": t.optimizer, "lr": repr(t.lr), "schedule": t.schedule, "run_status": p.status.value,
        "augment_shift": str(t.augment_shift), "augment_rotation": repr(t.augment_rotation),
        "shuffle_pixels": "yes" if t.shuffle_pixels else "no",
    }
    return checkpoints.to_bytes(
        model, test_accuracy=p.final_test_accuracy, epochs=len(p.epoch_results), seed=t.seed, extra=extra
    )
