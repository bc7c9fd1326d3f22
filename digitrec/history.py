"""A training run's history, one small frozen row per moment (no torch).

``digitrec.train.History`` and a run's recorder (``digitrec.runs``) write them;
the curves (``digitrec.viz.training``), the race table (``digitrec.race``) and
the pages read them. Plain numbers only, so a history can cross a process
boundary as it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepRow:
    """One training step: the batch's loss and accuracy."""

    step: int  # global step, 1-based
    epoch: int  # 1-based
    seconds: float  # training clock: pauses, evaluation and recording excluded
    loss: float  # this batch's mean cross-entropy
    accuracy: float  # this batch's accuracy, 0..1
    samples_per_s: float  # training throughput since the start, on the training clock


@dataclass(frozen=True)
class EvalRow:
    """One evaluation on held-out digits (a run's validation subset, or all validation digits after an epoch)."""

    step: int  # steps trained when it was measured (0: the untrained network)
    epoch: int
    seconds: float  # training clock
    # On the held-out validation digits: during a run, the validation subset (or all validation
    # digits after an epoch). Runs never watch the test set (it is measured once, at the end).
    val_accuracy: float | None  # 0..1; None if it was not measured
    val_loss: float | None  # mean cross-entropy
    # The same measure on a fixed subset of the digits trained on (a run's recorder fills
    # these), so training and validation are compared on equal terms: overfitting is the gap.
    train_accuracy: float | None = None
    train_loss: float | None = None

    # The names these had when runs watched the test set, for code written before the rename.
    @property
    def test_accuracy(self) -> float | None:
        return self.val_accuracy

    @property
    def test_loss(self) -> float | None:
        return self.val_loss
