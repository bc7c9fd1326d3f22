"""The training loop: plain, readable, fast, and controllable from another thread.

``fit`` is a ``for`` loop over epochs and batches (pytorch/examples' mnist,
minGPT's trainer). Callbacks receive named events with a small ``TrainState``;
a ``TrainControl`` lets the app pause, resume, single-step and stop a run
that is going on in a background thread.

Speed comes from the data path, not from tricks in the loop: the digits sit in
memory as one uint8 tensor and each batch is a slice of a seeded permutation,
scaled on the whole batch (see ``digitrec.data.batches``).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import torch
from torch import nn

from digitrec import config as settings  # not `config`: fit's TrainConfig argument is called that
from digitrec import fusion, fused_adam
from digitrec.data import MNIST, DigitSet, augment, batches, permute_pixels, pixel_permutation, to_input
from digitrec.errors import InvalidConfig, TrainingDiverged
from digitrec.hand_backward import hand_backward
from digitrec.history import EvalRow, StepRow
from digitrec.inspection import as_model_reads, channels_last, convolves, eval_mode

@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are the lessons' defaults (``digitrec.config`` says why)."""

    epochs: int = settings.EPOCHS
    batch_size: int = settings.BATCH_SIZE
    lr: float = settings.LR
    optimizer: str = settings.OPTIMIZER  # one of settings.OPTIMIZERS
    momentum: float = settings.MOMENTUM  # SGD only
    schedule: str = settings.SCHEDULE  # one of settings.SCHEDULES; cosine reaches 0 at the last step trained
    seed: int = settings.SEED  # fixes the batch order (the model's init is seeded by models.build)
    evaluate_each_epoch: bool = True  # test accuracy after every epoch (about 0.1-1 s)
    # End after this many steps, even mid-epoch (a lesson's few hundred, a benchmark's sample);
    # None trains every epoch. Reaching it is finishing, not stopping.
    max_steps: int | None = None
    # Data augmentation: each training batch is moved by up to this many pixels
    # and turned by up to this many degrees (data.augment); 0 and 0: the digits as they are.
    augment_shift: int = 0
    augment_rotation: float = 0.0
    # Read every digit's pixels in one fixed shuffled order (data.pixel_permutation),
    # training and evaluation alike: a fully connected network cannot tell; a CNN can.
    shuffle_pixels: bool = False
    # A network with convolutions computes its forward pass in bfloat16 where the processor (or GPU)
    # has bfloat16 arithmetic; weights, gradients, the optimizer and the loss stay float32
    # (settings.MIXED_PRECISION says what it measured). False: float32 throughout.
    mixed_precision: bool = settings.MIXED_PRECISION

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool):
            raise InvalidConfig(f"Cannot train: the learning rate must be a number (got {self.lr!r}).")
        if not (isinstance(self.epochs, int) and 1 <= self.epochs <= settings.MAX_EPOCHS):
            problems.append(f"epochs must be a whole number from 1 to {settings.MAX_EPOCHS} (got {self.epochs})")
        low, high = settings.BATCH_RANGE
        if not (isinstance(self.batch_size, int) and low <= self.batch_size <= high):
            problems.append(f"batch size must be from {low} to {high} (got {self.batch_size})")
        if not (math.isfinite(self.lr) and 0 < self.lr <= settings.LR_MAX):
            problems.append(f"learning rate must be above 0 and at most {settings.LR_MAX:g} (got {self.lr})")
        if self.optimizer not in settings.OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(settings.OPTIMIZERS)} (got {self.optimizer!r})")
        if self.schedule not in settings.SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(settings.SCHEDULES)} (got {self.schedule!r})")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be from 0 up to (not including) 1 (got {self.momentum})")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            problems.append(f"max steps must be a whole number from 1 up (got {self.max_steps!r})")
        if not (isinstance(self.augment_shift, int) and 0 <= self.augment_shift <= settings.MAX_AUGMENT_SHIFT):
            problems.append(f"the augmentation shift must be a whole number of pixels from 0 to {settings.MAX_AUGMENT_SHIFT} "
                            f"(got {self.augment_shift!r})")
        if not (isinstance(self.augment_rotation, (int, float)) and 0 <= self.augment_rotation <= settings.MAX_AUGMENT_ROTATION):
            problems.append(f"the augmentation rotation must be from 0 to {settings.MAX_AUGMENT_ROTATION:g} degrees "
                            f"(got {self.augment_rotation!r})")
        if problems:
            raise InvalidConfig("Cannot train: " + "; ".join(problems) + ".")


@dataclass
class TrainState:
    """What a callback sees. Updated in place by ``fit``; copy what you keep."""

    epochs: int
    steps_per_epoch: int
    max_steps: int | None = None  # TrainConfig.max_steps: the run ends there if it comes first
    epoch: int = 0  # 1-based once training starts
    step: int = 0  # global step, 1-based after the first batch
    samples_seen: int = 0
    loss: float = math.nan  # this batch's mean cross-entropy
    accuracy: float = math.nan  # this batch's accuracy, 0..1
    # The training clock counts forward, backward and optimizer steps (and batching);
    # pauses, evaluation and the callbacks' own work are off the clock, so a callback
    # that evaluates or snapshots does not make training look slower.
    samples_per_s: float = 0.0  # training throughput since the start, on the training clock
    elapsed_s: float = 0.0  # training seconds since the start, on the training clock
    test_loss: float | None = None  # after each epoch, if evaluated
    test_accuracy: float | None = None
    stopped: bool = False  # True if stop() ended the run early
    mixed_precision: bool = False  # the forward pass ran in bfloat16 (TrainConfig.mixed_precision, where it pays)
    hand_backward: bool = False  # the gradients came from digitrec.hand_backward, not autograd (same bits, faster)

    def copy(self) -> TrainState:
        """A copy to keep. Every field is a number, a bool or None, so copying the attributes copies it
        all, in under 1 us; ``dataclasses.replace`` took 5.7 us of a recorder's 24 us a step (an FCNet
        step takes about 600 us)."""
        kept = object.__new__(type(self))
        kept.__dict__.update(self.__dict__)
        return kept

    @property
    def total_steps(self) -> int:
        total = self.epochs * self.steps_per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    @property
    def progress(self) -> float:
        """Fraction of all steps done, 0..1."""
        return self.step / self.total_steps if self.total_steps else 1.0

    @property
    def eta_s(self) -> float:
        """Seconds left at the current pace."""
        if self.step == 0:
            return math.nan
        return self.elapsed_s / self.step * (self.total_steps - self.step)


class Callback(Protocol):
    """Any object with some of these methods; each receives the live TrainState.

    A callback reads the model; it does not change a weight's ``.grad`` in place: a network trained
    by ``digitrec.hand_backward`` holds its gradients as inference tensors, which PyTorch refuses to change."""

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...


class TrainControl:
    """Pause, resume, single-step and stop a run from another thread.

    The loop calls ``wait_for_turn()`` before each batch; it returns False when
    the run should stop. While paused, ``step(n)`` lets exactly n more batches
    run, then the run is paused again.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._paused = False
        self._stopped = False
        self._budget = 0  # batches allowed while paused

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            self._budget = 0

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._budget = 0  # steps granted before resuming must not carry into the next pause
            self._lock.notify_all()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()

    def step(self, n: int = 1) -> None:
        """While paused: run ``n`` more batches, then pause again."""
        with self._lock:
            self._paused = True
            self._budget += n
            self._lock.notify_all()

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused and self._budget == 0 and not self._stopped

    @property
    def stopped(self) -> bool:
        with self._lock:
            return self._stopped

    def wait_for_turn(self) -> bool:
        """Block while paused; True to run the next batch, False to stop."""
        if not self._paused and not self._stopped:
            # Running: nothing to wait for or count down, so no lock (reading two bools is atomic; a pause
            # or stop set at this moment takes effect at the next batch, as it would after the lock).
            return True
        with self._lock:
            while self._paused and self._budget == 0 and not self._stopped:
                self._lock.wait(timeout=0.5)
            if self._stopped:
                return False
            if self._paused:
                self._budget -= 1
            return True


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        # fused: one kernel updates every weight (about 3x cheaper a step than the per-tensor loop:
        # 0.92 -> 0.31 ms for 784-128-64-10, 0.55 -> 0.12 ms for TinyVGG, 1 thread), same arithmetic.
        return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    if config.optimizer == "momentum":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    return torch.optim.SGD(model.parameters(), lr=config.lr)  # plain: w <- w - lr * grad


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule, stepped once per batch over ``total_steps``; None for a constant rate."""
    if config.schedule == "cosine":  # config.lr at the start, down to 0 at the last step
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "onecycle":
        # Up from lr/25 to config.lr over the first 30 % of the steps, then down to about 0 by the last
        # (Smith's one-cycle): the high middle learns fast, the low end settles the weights. Adam's
        # beta1 cycles the other way (0.95 -> 0.85 -> 0.95), as OneCycleLR does by default.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total_steps, 2))
    return None


def bfloat16_supported(device: torch.device) -> bool:
    """Does ``device`` do bfloat16 arithmetic natively (not emulated, which would be slower than float32)?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def uses_mixed_precision(model: nn.Module, config: TrainConfig) -> bool:
    """Will ``fit`` train ``model`` with bfloat16 forward passes? Only a network with convolutions pays."""
    return (config.mixed_precision and convolves(model)
            and bfloat16_supported(device_of(model)))


def device_of(model: nn.Module) -> torch.device:
    """Where the model's weights are (the CPU, or a GPU a worker moved it to)."""
    return next(model.parameters()).device


def pixel_order(config: TrainConfig) -> torch.Tensor | None:
    """The fixed pixel permutation a run reads its digits in, or None for the digits as they are."""
    return pixel_permutation() if config.shuffle_pixels else None


# Digits in one forward pass of evaluate/predictions: batches of 2,000 spilled the cache (TinyVGG on the
# 10,000 test digits, channels-last, 1 thread: 0.94 s at 1,000, 0.65 s at 500 and 250).
EVAL_BATCH = 500


def evaluate(
    model: nn.Module, digits: DigitSet, batch_size: int = EVAL_BATCH, order: torch.Tensor | None = None
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy 0..1) of ``model`` on ``digits``; the model's mode is restored.

    ``order``: read every digit's pixels in this permutation (a shuffled-pixel run's own order).
    The digits stay on the CPU; each batch goes to the model's device. Float32 always: a number
    the page shows must be the one the explorers recompute from the same weights.
    """
    return subset_scores(*evaluate_each(model, digits, batch_size, order))


def evaluate_each(
    model: nn.Module, digits: DigitSet, batch_size: int = EVAL_BATCH, order: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per digit, what ``evaluate`` averages: (cross-entropy (N,) float, right (N,) bool), on the CPU.

    One pass gives the numbers of any subset of ``digits`` too (``subset_scores``): a run measures its
    validation digits after an epoch and takes its curve's subset point from the same pass.
    """
    losses, right = [torch.empty(0)], [torch.empty(0, dtype=torch.bool)]
    device = device_of(model)
    model = channels_last(model)
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(digits), batch_size):
            images = digits.images[start : start + batch_size]
            x = as_model_reads(to_input(images if order is None else permute_pixels(images, order)).to(device), model)
            y = digits.labels[start : start + batch_size].to(device)
            logits = fusion.forward(model, x)  # (B, 10); model(x) with each conv+ReLU as one call
            losses.append(nn.functional.cross_entropy(logits, y, reduction="none").cpu())
            right.append((logits.argmax(dim=1) == y).cpu())
    return torch.cat(losses), torch.cat(right)


def subset_scores(losses: torch.Tensor, right: torch.Tensor, index: torch.Tensor | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy 0..1) of ``evaluate_each``'s digits at ``index`` (None: all of them)."""
    if index is not None:
        losses, right = losses[index], right[index]
    n = max(len(losses), 1)
    return float(losses.double().sum()) / n, int(right.sum()) / n


def predictions(model: nn.Module, digits: DigitSet, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Class probabilities (N, 10) for every digit, softmax over the class dimension."""
    out = []
    model = channels_last(model)
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(digits), batch_size):
            logits = fusion.forward(model, as_model_reads(to_input(digits.images[start : start + batch_size]), model))
            out.append(torch.softmax(logits, dim=1))  # dim=1: classes, never the batch
    return torch.cat(out) if out else torch.empty(0, 10)


def fit(
    model: nn.Module,
    data: MNIST | DigitSet,
    config: TrainConfig = TrainConfig(),
    callbacks: Iterable[Callback] = (),
    control: TrainControl | None = None,
    test: DigitSet | None = None,
) -> TrainState:
    """Train ``model`` in place and return the final state.

    ``data`` is MNIST (trains on ``.train``, evaluates on ``.test``) or a DigitSet
    (pass ``test`` to evaluate on another set). ``config.max_steps`` ends the run
    after that many steps, mid-epoch if need be (an unfinished epoch is not
    evaluated); the state is then finished, not ``stopped``. Raises TrainingDiverged if the
    loss stops being finite; the model then holds the last weights that gave a
    finite loss.
    """
    if isinstance(data, MNIST):
        train_set, test = data.train, test if test is not None else data.test
    else:
        train_set = data
    callbacks = list(callbacks)
    control = control or TrainControl()
    # The digits stay in CPU memory; each batch moves to the model's device (a no-op on the CPU).
    device = device_of(model)
    on_gpu = device.type != "cpu"
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    # Augmentation draws from its own generator, so switching it on keeps the batch order.
    augment_generator = torch.Generator().manual_seed(config.seed + 1)
    augmenting = config.augment_shift > 0 or config.augment_rotation > 0
    order = pixel_order(config)
    # Channels-last memory made oneDNN's convolutions about 2x faster here (21.9 -> 10.0 ms
    # a batch of 128, 2 threads; less with 1 thread);
    # the model is put back in the default layout when training ends.
    in_channels_last = convolves(model)
    if in_channels_last:
        model.to(memory_format=torch.channels_last)
    mixed = uses_mixed_precision(model, config)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mixed else contextlib.nullcontext()
    # A stack of Linear and ReLU layers skips autograd's bookkeeping: its chain rule is written out
    # (bit-identical gradients): FCNet 784-16-16-10's step 1.23x faster (605 vs 746 us, 1 thread).
    by_hand = None if mixed else hand_backward(model)
    params = [p for p in model.parameters() if p.requires_grad]
    last_good = [p.detach().clone() for p in params]

    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    state = TrainState(epochs=config.epochs, steps_per_epoch=steps_per_epoch, max_steps=config.max_steps,
                       mixed_precision=mixed, hand_backward=by_hand is not None)
    scheduler = make_scheduler(optimizer, config, state.total_steps)
    optimizer_step = fused_adam.step_function(optimizer)  # optimizer.step, the same bits with less Python
    _emit(callbacks, "on_fit_start", state)
    # off_clock_s: seconds spent paused, evaluating or in callbacks (not training).
    clock, off_clock_s = time.perf_counter(), 0.0

    model.train()
    try:
        for epoch in range(1, config.epochs + 1):
            if state.step >= state.total_steps:  # max_steps was reached at the end of the last epoch
                break
            state.epoch = epoch
            for x, y in batches(train_set, config.batch_size, generator=generator):
                wait_start = time.perf_counter()
                if not control.wait_for_turn():
                    state.stopped = True
                    break
                off_clock_s += time.perf_counter() - wait_start
                if augmenting:  # on the whole batch, before any shuffling of pixels
                    x = augment(x, config.augment_shift, config.augment_rotation, generator=augment_generator)
                if order is not None:
                    x = permute_pixels(x, order)
                if on_gpu:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if in_channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)  # as as_model_reads, decided once

                if by_hand is not None:
                    logits, loss, forward = by_hand.forward(x, y)  # (B, 10), the mean loss, kept for backward
                else:
                    with autocast:  # bfloat16 convolutions where it pays (mixed_precision); else nothing
                        logits = model(x)  # (B, 10)
                    loss = nn.functional.cross_entropy(logits.float(), y)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    with torch.no_grad():
                        for p, good in zip(params, last_good):
                            p.copy_(good)
                    raise TrainingDiverged(
                        f"Training diverged at step {state.step + 1} (epoch {epoch}): the loss became "
                        f"{loss_value}. The learning rate {config.lr:g} is too high for this network; "
                        "lower it (try 10 times smaller) and train again. The model kept its last good weights."
                    )
                with torch.no_grad():  # these weights gave a finite loss: remember them
                    torch._foreach_copy_(last_good, params)
                if by_hand is not None:
                    by_hand.backward(forward)  # sets every .grad
                else:
                    for p in params:  # what optimizer.zero_grad(set_to_none=True) does, without its 15 us of machinery
                        p.grad = None
                    loss.backward()
                optimizer_step()
                if scheduler is not None:
                    scheduler.step()

                digits = y.shape[0]  # len(y) goes through Python (Tensor.__len__)
                state.step += 1
                state.samples_seen += digits
                state.loss = loss_value
                # The count of right guesses over the batch: two operations fewer than .float().mean() a step.
                state.accuracy = int((logits.argmax(dim=1) == y).sum()) / digits
                state.elapsed_s = time.perf_counter() - clock - off_clock_s
                state.samples_per_s = state.samples_seen / max(state.elapsed_s, 1e-9)
                if callbacks:
                    off_clock_s += _emit_timed(callbacks, "on_step_end", state)
                if state.step >= state.total_steps:  # max_steps reached (maybe mid-epoch)
                    break
            if state.stopped or state.step < epoch * steps_per_epoch:  # an unfinished epoch is not evaluated
                break
            eval_start = time.perf_counter()
            if test is not None and config.evaluate_each_epoch:
                state.test_loss, state.test_accuracy = evaluate(model, test, order=order)
                model.train()
            off_clock_s += time.perf_counter() - eval_start
            off_clock_s += _emit_timed(callbacks, "on_epoch_end", state)
    finally:
        # Leave no gradients behind: the model may be shared by the app's explorers.
        optimizer.zero_grad(set_to_none=True)
        model.eval()
        if in_channels_last:
            model.to(memory_format=torch.contiguous_format)
    _emit(callbacks, "on_fit_end", state)
    return state


def _emit(callbacks: list, event: str, state: TrainState) -> None:
    for cb in callbacks:
        handler = getattr(cb, event, None)
        if handler is not None:
            handler(state)


def _emit_timed(callbacks: list, event: str, state: TrainState) -> float:
    """``_emit``, returning the seconds the callbacks took (kept off the training clock)."""
    start = time.perf_counter()
    _emit(callbacks, event, state)
    return time.perf_counter() - start


@dataclass
class History:
    """A callback that keeps every step's and epoch's numbers (for curves and tables)."""

    steps: list[StepRow] = field(default_factory=list)
    epochs: list[EvalRow] = field(default_factory=list)  # the test set after each epoch
    every: int = 1  # keep one step in ``every`` (1 keeps all)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.steps.append(step_row(state))

    def on_epoch_end(self, state: TrainState) -> None:
        self.epochs.append(EvalRow(state.step, state.epoch, state.elapsed_s, state.test_accuracy, state.test_loss))


def step_row(state: TrainState) -> StepRow:
    """The history row of the step ``state`` has just trained."""
    return StepRow(state.step, state.epoch, state.elapsed_s, state.loss, state.accuracy, state.samples_per_s)
