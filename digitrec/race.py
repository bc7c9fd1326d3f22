"""The FC-vs-CNN race: two runs on the same digits, the table of their numbers, the explanation under it.

A ``Race`` trains several ``digitrec.runs.TrainingRun`` one after the other or
together; ``race_specs`` makes the two runs of a fair race (same digits, seed,
batch size, optimizer and evaluation steps).

Every number in the table comes from a run's own history (``digitrec.runs.RunProgress``),
never from text: parameters and multiply-adds are counted on the model,
speeds are read off the training clock, and "seconds to 97 %" is the training
time of the first test evaluation at or above 97 %.

How the cost per digit is estimated (said on the page too): a forward pass's
multiply-adds are counted from each layer's shapes (``models.describe``): a
Linear layer does in x out, a convolution does, per output value,
in_channels x 3 x 3. A training step costs about three forward passes: the
forward itself, then the backward pass, which for every layer computes the
gradient with respect to its input and the gradient with respect to its
weights, each about as many multiply-adds as the forward.
"""

from __future__ import annotations

import enum
import math
import threading
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from digitrec import config, models
from digitrec.data import MNIST, split_sizes
from digitrec.errors import InvalidConfig
from digitrec.history import EvalRow
from digitrec.runs import RunProgress, RunStatus, TrainingRun, device_words
from digitrec.spec import RunSpec
from digitrec.train import TrainConfig

# Accuracies the explanation compares the networks at: finer and lower than the
# table's, so a short run can still show where one network overtakes the other.
MILESTONES = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99)
TRAINING_STEP_FACTOR = 3  # multiply-adds of a training step per digit ~ 3 x forward


# --- running the race ----------------------------------------------------------------------------


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

    def close(self) -> None:
        """Stop the race and end every run's worker process now (a session that ends)."""
        self.stop()
        for run in self.runs:
            close = getattr(run, "close", None)
            if close is not None:
                close()

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
    train: TrainConfig = TrainConfig(epochs=config.RACE_EPOCHS),
    train_size: int = config.TRAIN_DIGITS,
) -> tuple[RunSpec, RunSpec]:
    """The FCNet and TinyVGG runs of a race: same digits, seed, batch size, optimizer and evaluation steps."""
    return RunSpec(model=fc, train=train, train_size=train_size), RunSpec(model=cnn, train=train, train_size=train_size)


def own_model_specs(own: models.ModelConfig, against: RunSpec) -> tuple[RunSpec, RunSpec]:
    """A learner's own model (``own``: its layer spec) raced against a preset's run.

    The own model trains **from scratch**: fresh weights drawn from the race's seed,
    on the same digits, batch size, optimizer and evaluation steps as ``against``.
    Fine-tuning its trained weights would start it near its final accuracy at second
    zero, and the race asks which architecture learns faster from the same digits,
    so both start from nothing. InvalidConfig if a training step would not fit in memory.
    """
    from digitrec.spec import training_memory_bytes

    need = training_memory_bytes(own, against.train.batch_size, against.train.optimizer)
    if need > config.MEMORY_BUDGET_BYTES:
        raise InvalidConfig(
            f"Cannot race {models.display_name(own)}: a batch of {against.train.batch_size:,} digits needs about "
            f"{need / 2**30:.1f} GiB to train (the limit is {config.MEMORY_BUDGET_BYTES / 2**30:.0f} GiB); "
            "use a smaller batch size."
        )
    return replace(against, model=own), against


def make_race(
    data: MNIST,
    specs: Sequence[RunSpec],
    mode: RaceMode | str = RaceMode.SEQUENTIAL,
    probe: torch.Tensor | None = None,
    make_run: Callable[..., TrainingRun] = TrainingRun,
) -> Race:
    """A Race of one run per spec (not started); ``make_run(spec, data, probe)`` makes each run
    (the app passes ``digitrec.engines.make_run``: each network trains in a worker process).
    Each spec gets the race's fixed evaluation cadence (``race_cadence``)."""
    available = split_sizes(len(data.train))[0]  # the counts only: each run splits the digits itself
    return Race([make_run(race_cadence(spec, available), data, probe) for spec in specs], mode)


def race_cadence(spec: RunSpec, available: int) -> RunSpec:
    """``spec`` evaluated on the race's fixed cadence: about ``config.RACE_EVAL_POINTS`` points on
    ``config.RACE_EVAL_SIZE`` validation digits (a cadence the spec chose itself is kept).

    An automatic cadence keeps recording within a tenth of the wall clock, which left a TinyVGG
    run only its first and last point (one evaluation costs it many steps), too few to read "seconds
    to 95 %" off. A race reads its curves, so it evaluates on a fixed cadence instead, on fewer
    digits so the points stay cheap; ``available``: the training digits the run can have.
    """
    if spec.eval_every:
        return spec
    total = spec.plan(available).total_steps
    return replace(spec, eval_every=max(1, round(total / config.RACE_EVAL_POINTS)),
                   eval_size=min(spec.eval_size, config.RACE_EVAL_SIZE))


# --- the table and the explanation ---------------------------------------------------------------


@dataclass(frozen=True)
class RaceRow:
    """One network's line of the race table."""

    name: str
    params: int
    macs_forward: int  # multiply-adds per digit, forward pass
    samples_per_s: float | None  # digits trained per second (training clock); None before a step
    seconds_per_epoch: float | None  # training seconds for one pass over the training digits
    seconds_to: tuple[tuple[float, float | None], ...]  # (target accuracy, seconds or None if not reached)
    final_accuracy: float | None  # 0..1 on the full test set once the run ended, else None
    best_accuracy: float | None  # the best validation-subset accuracy seen so far
    status: str = ""
    milestones: tuple[tuple[float, float | None], ...] = ()  # like seconds_to, at MILESTONES (for explain)
    device: str = ""  # where it trained: "cpu" or "cuda" ("" before the race)
    mixed_precision: bool = False  # forward passes in bfloat16 (convolutions, where the processor has it)
    hand_backward: bool = False  # gradients from the chain rule written out, not autograd (digitrec.hand_backward)

    @property
    def macs_training(self) -> int:
        """Multiply-adds per digit of one training step (forward + backward), estimated as 3 x forward."""
        return TRAINING_STEP_FACTOR * self.macs_forward

    def seconds_to_reach(self, target: float) -> float | None:
        for t, seconds in self.seconds_to:
            if math.isclose(t, target):
                return seconds
        raise KeyError(f"{target} is not one of this row's targets {[t for t, _ in self.seconds_to]}")


def seconds_to_reach(evals: Sequence[EvalRow], target: float) -> float | None:
    """Training seconds of the first evaluation with validation accuracy >= ``target``; None if none.

    ``evals``: in the order measured.
    """
    for e in evals:
        if e.val_accuracy is not None and e.val_accuracy >= target:
            return float(e.seconds)
    return None


def race_row(
    *,
    name: str,
    params: int,
    macs_forward: int,
    train_size: int,
    samples_seen: int,
    elapsed_s: float,
    evals: Sequence[EvalRow],
    final_accuracy: float | None = None,
    targets: Sequence[float] = config.RACE_TARGETS,
    status: str = "",
    device: str = "",
    mixed_precision: bool = False,
    hand_backward: bool = False,
) -> RaceRow:
    """A table row from a run's numbers (see ``row_of`` for a RunProgress).

    Speed is what the training clock measured: digits trained / training
    seconds; one epoch is ``train_size`` digits at that speed.
    """
    speed = samples_seen / elapsed_s if samples_seen > 0 and elapsed_s > 0 else None
    accuracies = [e.val_accuracy for e in evals if e.val_accuracy is not None]
    return RaceRow(
        name=name,
        params=params,
        macs_forward=macs_forward,
        samples_per_s=speed,
        seconds_per_epoch=train_size / speed if speed else None,
        seconds_to=tuple((t, seconds_to_reach(evals, t)) for t in targets),
        final_accuracy=final_accuracy,
        best_accuracy=max(accuracies) if accuracies else None,
        status=status,
        milestones=tuple((t, seconds_to_reach(evals, t)) for t in sorted({*MILESTONES, *targets})),
        device=device,
        mixed_precision=mixed_precision,
        hand_backward=hand_backward,
    )


def row_of(progress: RunProgress, targets: Sequence[float] = config.RACE_TARGETS) -> RaceRow:
    """The table row of a run's progress."""
    return race_row(
        name=progress.name, params=progress.params, macs_forward=progress.macs,
        train_size=progress.plan.train_size, samples_seen=progress.samples_seen, elapsed_s=progress.elapsed_s,
        evals=progress.evals, final_accuracy=progress.final_test_accuracy, targets=targets,
        status=progress.status.value, device=progress.device, mixed_precision=progress.mixed_precision,
        hand_backward=progress.hand_backward,
    )


def table(rows: Sequence[RaceRow]) -> dict[str, list[str]]:
    """The rows as text columns for display: {column header: one cell per network}."""

    def num(value, fmt: str, missing: str = "–") -> str:
        return missing if value is None else format(value, fmt)

    out: dict[str, list[str]] = {
        "network": [r.name for r in rows],
        "parameters": [f"{r.params:,}" for r in rows],
        "multiply-adds per digit (forward)": [f"{r.macs_forward:,}" for r in rows],
        "multiply-adds per digit (training step ≈ 3×)": [f"{r.macs_training:,}" for r in rows],
        "digits per second": [num(r.samples_per_s, ",.0f") for r in rows],
        "seconds per epoch": [num(r.seconds_per_epoch, ",.1f") for r in rows],
    }
    for i, target in enumerate(rows[0].seconds_to if rows else ()):
        t = target[0]
        # Before a run's first point (a race not yet run) "–"; while it trains "not yet"; once it has ended
        # short of the target, "not reached".
        out[f"seconds to {t:.0%}"] = [num(r.seconds_to[i][1], ",.1f", _missing(r)) for r in rows]
    out["final test accuracy"] = [num(r.final_accuracy, ".2%") for r in rows]
    if any(r.device for r in rows):
        # A bfloat16 forward pass is about twice as fast for convolutions, a backward pass written out
        # about 1.2x faster a step for a small FCNet: a race should say which network ran how.
        out["trained on"] = [(device_words(r.device) if r.device else "–")
                             + ((", bfloat16 forward" if r.mixed_precision else ", float32")
                                + (", backward by hand" if r.hand_backward else "")) * bool(r.device)
                             for r in rows]
    return out


def _missing(row: RaceRow) -> str:
    """The table's word for a target a network has no time for."""
    if row.best_accuracy is None:
        return "–"
    return "not yet" if row.status in _TRAINING else "not reached"


_TRAINING = {s.value for s in RunStatus if s.active}  # a RaceRow's status while its run may still get there


@dataclass(frozen=True)
class Lead:
    """Who reached one validation accuracy first."""

    target: float
    fc_seconds: float | None
    cnn_seconds: float | None

    @property
    def winner(self) -> str | None:
        """'fc', 'cnn', or None if neither got there."""
        if self.fc_seconds is None and self.cnn_seconds is None:
            return None
        if self.cnn_seconds is None:
            return "fc"
        if self.fc_seconds is None:
            return "cnn"
        return "fc" if self.fc_seconds <= self.cnn_seconds else "cnn"


def leads(fc: RaceRow, cnn: RaceRow) -> list[Lead]:
    """Who got to each milestone accuracy first, lowest first."""
    cnn_at = dict(cnn.milestones)
    return [Lead(t, s_fc, cnn_at[t]) for t, s_fc in fc.milestones if t in cnn_at]


@dataclass(frozen=True)
class Explanation:
    """The numbers the explanation under the table uses, and its text."""

    macs_ratio: float  # TinyVGG's forward multiply-adds / FCNet's
    params_ratio: float  # FCNet's parameters / TinyVGG's
    speed_ratio: float | None  # FCNet's digits per second / TinyVGG's
    reversal: Lead | None  # the lowest target TinyVGG reached first, if FCNet had led before it or never got there
    text: str  # Markdown


def _s(seconds: float | None) -> str:
    return "never, in this run" if seconds is None else f"{seconds:,.1f} s"


def explain(fc: RaceRow, cnn: RaceRow) -> Explanation:
    """Why the CNN costs more per digit here, and when that trade reverses, with this run's numbers."""
    macs_ratio = cnn.macs_forward / fc.macs_forward
    params_ratio = fc.params / cnn.params
    speed_ratio = fc.samples_per_s / cnn.samples_per_s if fc.samples_per_s and cnn.samples_per_s else None

    fewer = "fewer" if cnn.params < fc.params else "more"
    cost = (
        f"**Why the CNN costs more per digit.** {cnn.name} has {cnn.params:,} weights, {fewer} than "
        f"{fc.name}'s {fc.params:,}, yet it does {cnn.macs_forward:,} multiply-adds per digit against "
        f"{fc.macs_forward:,}: **{macs_ratio:,.0f}× more**. A fully connected layer uses each weight once per "
        "digit; a convolution slides each 3×3 filter over every position of its input, so every filter weight "
        "is used 784 times (28×28) in the first block and 196 times (14×14) in the second."
    )
    if speed_ratio is not None:
        cost += (
            f" In this run {fc.name} trained {fc.samples_per_s:,.0f} digits per second and {cnn.name} "
            f"{cnn.samples_per_s:,.0f}: the CNN was **{speed_ratio:,.1f}× slower**"
        )
        if fc.seconds_per_epoch and cnn.seconds_per_epoch:
            cost += f" ({cnn.seconds_per_epoch:,.1f} s per epoch against {fc.seconds_per_epoch:,.1f} s)"
        cost += "."
        if speed_ratio < macs_ratio / 2:
            cost += (
                f" That is less than the {macs_ratio:,.0f}× of the arithmetic because a network as small as "
                f"{fc.name} spends most of each step on fixed work (Python, moving batches through memory, "
                "the optimizer), not on multiplying."
            )

    lead_list = leads(fc, cnn)
    reversal = next((lead for lead in lead_list if lead.winner == "cnn"), None)
    fc_first = [lead for lead in lead_list if lead.winner == "fc"]
    fc_before = [lead for lead in fc_first if reversal is not None and lead.target < reversal.target]
    if reversal is not None and fc_before:
        before = fc_before[-1]  # the highest target FCNet reached first, below the reversal
        trade = (
            f"**When the trade reverses.** {fc.name} reached {before.target:.0%} first ({_s(before.fc_seconds)} "
            f"against {_s(before.cnn_seconds)}), but {cnn.name} reached {reversal.target:.0%} first "
            f"({_s(reversal.cnn_seconds)}; {fc.name}: {_s(reversal.fc_seconds)}). Each digit costs the CNN more, "
            "but it learns more from each one: its filters look for the same stroke everywhere in the image, so "
            "past some accuracy the cheap network cannot keep up however long it trains."
        )
    elif reversal is not None:
        trade = (
            f"**When the trade reverses.** In this run it already has: {cnn.name} reached {reversal.target:.0%} "
            f"first ({_s(reversal.cnn_seconds)}; {fc.name}: {_s(reversal.fc_seconds)}). It learns so much more "
            "from each digit that it wins despite costing more per digit."
        )
    elif fc_first:
        trade = (
            f"**When the trade reverses.** In this run {fc.name} reached every target first "
            f"({fc_first[-1].target:.0%} after {_s(fc_first[-1].fc_seconds)}; {cnn.name}: "
            f"{_s(fc_first[-1].cnn_seconds)}). The CNN pays off at higher accuracies, which take more training: "
            "train more digits or more epochs and watch which one reaches 98 % first."
        )
    else:
        trade = (
            "**When the trade reverses.** Neither network reached "
            f"{lead_list[0].target:.0%} yet, so this run cannot say; train more digits or more epochs."
            if lead_list else "**When the trade reverses.** No accuracy targets were measured."
        )
    trade += (
        " The trade also turns with the task: a fully connected layer's weights grow with the number of pixels "
        "while a 3×3 filter stays 9 weights however large the image, and on a GPU, which does many "
        "multiply-adds at once, the CNN's extra arithmetic costs far less time than on this processor."
    )
    return Explanation(macs_ratio, params_ratio, speed_ratio, reversal, cost + "\n\n" + trade)


def explanation(rows: Sequence[RaceRow], configs: Sequence[models.ModelConfig]) -> str:
    """The text under the race table: ``explain`` for FCNet against TinyVGG (the course's race),
    ``compare`` for any other pair (a learner's own model against a preset)."""
    kinds = [type(c) for c in configs]
    if kinds == [models.FCConfig, models.TinyVGGConfig]:
        return explain(rows[0], rows[1]).text
    if kinds == [models.TinyVGGConfig, models.FCConfig]:
        return explain(rows[1], rows[0]).text
    return compare(rows[0], rows[1])


def compare(a: RaceRow, b: RaceRow) -> str:
    """Any two networks' race in words, every number from this run's rows: what a digit costs each
    (weights, multiply-adds), how fast each trained, and who reached the milestone accuracies first."""
    ratio = a.macs_forward / b.macs_forward if b.macs_forward else None
    cost = (
        f"**What a digit costs.** {a.name} has {a.params:,} weights and does {a.macs_forward:,} multiply-adds per "
        f"digit; {b.name} has {b.params:,} and does {b.macs_forward:,}"
    )
    if ratio:
        cost += f": {a.name} does **{ratio:,.1f}×** {b.name}'s arithmetic per digit" if ratio >= 1 else (
            f": {a.name} does **{1 / ratio:,.1f}× less** arithmetic per digit than {b.name}")
    cost += "."
    if a.samples_per_s and b.samples_per_s:
        cost += (f" In this run {a.name} trained {a.samples_per_s:,.0f} digits per second and {b.name} "
                 f"{b.samples_per_s:,.0f}.")
    # leads() names its sides after the course's race: "fc" is ``a`` here, "cnn" is ``b``.
    lead_list = [lead for lead in leads(a, b) if lead.winner is not None]
    if not lead_list:
        first = "**Who got there first.** Neither network reached " + (
            f"{MILESTONES[0]:.0%} yet; train more digits or more epochs." if MILESTONES else "any target.")
        return cost + "\n\n" + first
    top = lead_list[-1]  # the highest accuracy either reached
    winner, loser = (a, b) if top.winner == "fc" else (b, a)
    won_s, lost_s = (top.fc_seconds, top.cnn_seconds) if top.winner == "fc" else (top.cnn_seconds, top.fc_seconds)
    first = (
        f"**Who got there first.** The highest accuracy either reached in this run is {top.target:.0%}: "
        f"{winner.name} got there first ({_s(won_s)}; {loser.name}: {_s(lost_s)})."
    )
    switched = [lead for lead in lead_list if lead.winner != top.winner]
    if switched:
        early = switched[-1]
        other = loser
        first += f" Earlier, at {early.target:.0%}, {other.name} had led."
    return cost + "\n\n" + first
