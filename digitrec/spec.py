"""A training run's specification, and parsing what a person typed into one.

``RunSpec`` says what to train (the network, ``train.TrainConfig``, how many
training digits, how often to evaluate and snapshot); ``RunSpec.plan`` turns it
into step counts. ``make_spec`` builds one from a form's or a lesson's raw
values (strings or numbers) and refuses anything invalid with one sentence
that names every problem, before any training starts. Defaults and ranges come
from ``digitrec.config``.

The memory estimate lives here, not with the run, because refusing a batch
too large for the server is part of checking what a person typed: it needs
only the network and the batch size, and it must happen before a run (or,
later, a worker process) exists.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Sequence

import torch

from digitrec import config, models
from digitrec.errors import InvalidConfig
from digitrec.train import TrainConfig


@dataclass(frozen=True)
class RunPlan:
    """The step counts a spec gives on a training set of ``train_size`` digits."""

    train_size: int
    steps_per_epoch: int
    total_steps: int  # epochs x steps_per_epoch, or the TrainConfig's max_steps if smaller
    eval_every: int  # steps between test-subset evaluations
    snapshot_every: int  # steps between weight snapshots
    history_every: int  # keep one step in this many in the per-step history
    # An automatic cadence (the spec's 0) stretches to keep recording within
    # config.RECORDING_BUDGET of the run's wall clock; a chosen one is kept exactly.
    adapt_eval: bool = False
    adapt_snapshots: bool = False


@dataclass(frozen=True)
class RunSpec:
    """One training run: the network, how to train it, and on how many digits."""

    model: models.ModelConfig
    train: TrainConfig = TrainConfig()
    # "Quick mode": train on the first N training digits (test accuracy is always
    # measured on the real test set). 60,000 is all of MNIST.
    train_size: int = config.TRAIN_DIGITS
    snapshot_every: int = 0  # steps between weight snapshots; 0: about config.SNAPSHOTS per run
    eval_every: int = 0  # steps between test-subset evaluations; 0: about config.EVAL_POINTS per run
    eval_size: int = config.EVAL_SIZE

    def __post_init__(self) -> None:
        problems = []
        for name, low in (("train_size", 1), ("snapshot_every", 0), ("eval_every", 0), ("eval_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name.replace('_', ' ')} must be a whole number from {low} up (got {value!r})")
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
        if self.train.max_steps is not None:
            total = min(total, self.train.max_steps)
        snapshot_every = self.snapshot_every or max(1, round(total / config.SNAPSHOTS))
        if total // snapshot_every > config.MAX_SNAPSHOTS:
            least = math.ceil(total / config.MAX_SNAPSHOTS)
            raise InvalidConfig(
                f"Cannot train: a snapshot every {snapshot_every} steps makes {total // snapshot_every} snapshots "
                f"of this {total}-step run; keep at most {config.MAX_SNAPSHOTS} (a snapshot every {least} steps or more, "
                "or 0 to choose automatically)."
            )
        return RunPlan(
            train_size=n,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            eval_every=self.eval_every or max(1, round(total / config.EVAL_POINTS)),
            snapshot_every=snapshot_every,
            history_every=max(1, math.ceil(total / config.MAX_STEP_POINTS)),
            adapt_eval=self.eval_every == 0,
            adapt_snapshots=self.snapshot_every == 0,
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
    widths: str | Sequence[int] = config.FC_HIDDEN,
    channels: int | str = config.CNN_CHANNELS,
    optimizer: str = config.OPTIMIZER,
    lr: float | str = config.LR,
    batch_size: int | str = config.BATCH_SIZE,
    epochs: int | str = config.EPOCHS,
    seed: int | str = config.SEED,
    schedule: str = config.SCHEDULE,
    train_size: int | str = config.TRAIN_DIGITS,
    snapshot_every: int | str = 0,
    max_steps: int | str | None = None,
    max_epochs: int = config.MAX_APP_EPOCHS,
    activation: str = config.FC_ACTIVATION,
    augment_shift: int | str = 0,
    augment_rotation: float | str = 0.0,
    shuffle_pixels: bool = False,
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

    def number(name: str, value, low: float, high: float) -> float | None:
        try:
            result = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            problems.append(f"{name} must be a number (got {value!r})")
            return None
        if not (math.isfinite(result) and low <= result <= high):
            problems.append(f"{name} must be from {low:g} to {high:g} (got {result:g})")
            return None
        return result

    model: models.ModelConfig | None = None
    if architecture == "fcnet":
        if activation not in config.ACTIVATIONS:
            problems.append(f"the activation must be one of {', '.join(config.ACTIVATIONS)} (got {activation!r})")
        else:
            try:
                model = models.FCConfig(hidden=parse_widths(widths), activation=activation)
            except InvalidConfig as e:
                collect(e)
    elif architecture == "tinyvgg":
        c = whole("channels", channels, *config.CHANNELS_RANGE)
        model = models.TinyVGGConfig(channels=c) if c is not None else None
    else:
        problems.append(f"the network must be fcnet or tinyvgg (got {architecture!r})")

    try:
        rate = float(str(lr).strip()) if isinstance(lr, str) else lr
    except ValueError:
        problems.append(f"the learning rate must be a number like 0.001 or 1e-3 (got {lr!r})")
        rate = None
    values = {
        "batch size": whole("batch size", batch_size, *config.BATCH_RANGE),
        "epochs": whole("epochs", epochs, 1, max_epochs),
        "seed": whole("seed", seed, *config.SEED_RANGE),
        "training digits": whole("training digits", train_size, *config.TRAIN_DIGITS_RANGE),
        "snapshot every": whole("snapshot every", snapshot_every, *config.SNAPSHOT_EVERY_RANGE),
        "augmentation shift": whole("the augmentation shift (pixels)", augment_shift, 0, config.MAX_AUGMENT_SHIFT),
        "augmentation rotation": number("the augmentation rotation (degrees)", augment_rotation, 0,
                                        config.MAX_AUGMENT_ROTATION),
    }
    if max_steps is not None:
        max_steps = whole("the number of steps", max_steps, *config.MAX_STEPS_RANGE)
        if max_steps is None:
            values["steps"] = None  # refused above: its sentence is in problems
    if not isinstance(shuffle_pixels, bool):
        problems.append(f"shuffle the pixels must be on or off (got {shuffle_pixels!r})")
    train_config = None
    if rate is not None and values["batch size"] and values["epochs"] and values["seed"] is not None:
        try:
            train_config = TrainConfig(
                epochs=values["epochs"], batch_size=values["batch size"], lr=rate, optimizer=optimizer,
                schedule=schedule, seed=values["seed"], max_steps=max_steps,
                augment_shift=values["augmentation shift"] or 0,
                augment_rotation=values["augmentation rotation"] or 0.0,
                shuffle_pixels=bool(shuffle_pixels),
            )
        except InvalidConfig as e:
            collect(e)
    if model is not None and values["batch size"]:
        need = training_memory_bytes(model, values["batch size"], optimizer)
        if need > config.MEMORY_BUDGET_BYTES:
            problems.append(
                f"a batch of {values['batch size']:,} digits for this network needs about {need / 2**30:.1f} GiB "
                f"of memory to train (the limit is {config.MEMORY_BUDGET_BYTES / 2**30:.0f} GiB); use a smaller batch size"
            )
    if problems or model is None or train_config is None or None in values.values():
        raise InvalidConfig("Cannot train: " + "; ".join(problems or ["the settings are incomplete"]) + ".")
    spec = RunSpec(
        model=model, train=train_config, train_size=values["training digits"],
        snapshot_every=values["snapshot every"],
    )
    spec.plan(spec.train_size)  # refuses too many snapshots now, not after the start
    return spec


# Bytes each parameter costs while training: its weight, its gradient, the optimizer's
# state (Adam: two moments; SGD: one momentum buffer) and the temporaries of the update;
# plus what the first training steps cost whatever the size (autograd's and the math
# libraries' buffers). Measured here as the peak resident memory of two steps of FCNets
# of 2.9 M and 14.2 M parameters in a fresh process: Adam 22.6 bytes a parameter + 155 MB,
# SGD about 15 + 155 MB; rounded up for a margin (the fixed part varies most).
TRAINING_BYTES_PER_PARAM = {"adam": 28, "sgd": 20}
TRAINING_FIXED_BYTES = 256 * 2**20


def training_memory_bytes(model_config: models.ModelConfig, batch_size: int, optimizer: str = "adam") -> int:
    """A rough upper estimate of one training step's memory: a fixed part and the parameters
    with their gradients and optimizer state (TRAINING_*_BYTES*), plus every layer's output
    for each digit of the batch, kept for the backward pass and matched by its gradient
    (x 3 for the temporaries around them), in float32. ``optimizer`` unknown: Adam, the larger."""
    from digitrec.inspection import forward_hooks

    with torch.device("meta"):  # shapes only: no memory used, no random numbers drawn
        model = models.build(model_config)
        x = torch.zeros(1, 1, 28, 28)
        with forward_hooks(model) as records:
            model(x)
    floats_per_digit = sum(out.numel() for _, out in records.values())
    params = sum(p.numel() for p in model.parameters())
    per_param = TRAINING_BYTES_PER_PARAM.get(optimizer, TRAINING_BYTES_PER_PARAM["adam"])
    return TRAINING_FIXED_BYTES + params * per_param + int(batch_size) * floats_per_digit * 4 * 3
