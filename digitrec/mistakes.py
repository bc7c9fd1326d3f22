"""Where a network goes wrong: the confusion matrix, its mistakes, and two networks compared.

Everything here starts from class probabilities, (N, 10) rows that each sum
to 1 (``digitrec.train.predictions``), and the true labels (N,). Some demos
apply softmax over the *batch* dimension, so each column sums to 1 instead
and the "confidences" depend on which other digits were in the batch; every
function here checks the rows first (``check_probabilities``) so that bug
fails loudly instead of drawing a plausible-looking matrix.

Conventions: in a confusion matrix, rows are the true class and columns the
predicted class, so ``cm[3, 5]`` counts the 3s the network called 5; the
diagonal holds the digits it got right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from digitrec.data import NUM_CLASSES

# How far a row of probabilities may sum from 1 (float32 softmax rounding is ~1e-6).
ROW_SUM_TOLERANCE = 1e-3


def check_probabilities(probs: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Raise ValueError unless ``probs`` is (N, 10) with rows that sum to 1 (and labels is (N,))."""
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise ValueError(f"probabilities must have shape (N, {NUM_CLASSES}), got {tuple(probs.shape)}")
    if len(probs) and not torch.allclose(
        probs.detach().double().sum(dim=1), torch.ones(len(probs), dtype=torch.float64), atol=ROW_SUM_TOLERANCE
    ):
        raise ValueError(
            "each row of probabilities must sum to 1 (softmax over the class dimension, dim=1); "
            "these do not: was softmax taken over the batch dimension?"
        )
    if labels is not None and labels.shape != (len(probs),):
        raise ValueError(f"labels must have shape ({len(probs)},), got {tuple(labels.shape)}")


def top_guess(probs: torch.Tensor) -> tuple[int, float]:
    """(predicted digit, its probability) for one digit's (10,) probabilities."""
    p = probs.detach().flatten()
    digit = int(p.argmax())
    return digit, float(p[digit])


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(10, 10) int64 counts: ``cm[t, p]`` = digits labelled t that the network called p."""
    check_probabilities(probs, labels)
    predicted = probs.argmax(dim=1)  # (N,)
    flat = labels.long() * NUM_CLASSES + predicted  # (N,) cell index t*10 + p
    return torch.bincount(flat, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def accuracy(cm: torch.Tensor) -> float:
    """The fraction of digits on the diagonal (0..1); 0 for an empty matrix."""
    total = int(cm.sum())
    return int(cm.diagonal().sum()) / total if total else 0.0


def most_confused(cm: torch.Tensor) -> tuple[int, int]:
    """(true, predicted) of the largest off-diagonal cell: the network's most common mistake."""
    off = cm.clone()
    off.fill_diagonal_(-1)
    cell = int(off.argmax())
    return cell // NUM_CLASSES, cell % NUM_CLASSES


@dataclass(frozen=True)
class Mistake:
    """One digit of a confusion-matrix cell (a mistake unless label == predicted)."""

    index: int  # position in the test set
    label: int  # the true class
    predicted: int  # the network's top guess
    confidence: float  # the probability of ``predicted``, 0..1
    true_probability: float  # the probability the network gave the true class, 0..1


def cell_digits(
    probs: torch.Tensor, labels: torch.Tensor, true: int | None = None, predicted: int | None = None
) -> list[Mistake]:
    """The digits labelled ``true`` and predicted ``predicted``, most confident first.

    ``None`` means any class; ``true=None, predicted=None`` gives every mistake
    (digits where the guess is wrong). When ``true == predicted`` the cell is on
    the diagonal and holds the correctly read digits of that class. Ties in
    confidence keep test-set order, so the walk through a cell is reproducible.
    """
    check_probabilities(probs, labels)
    confidence, guess = probs.max(dim=1)  # (N,), (N,)
    keep = torch.ones(len(labels), dtype=torch.bool)
    if true is not None:
        keep &= labels == true
    if predicted is not None:
        keep &= guess == predicted
    if true is None or predicted is None or true != predicted:
        keep &= guess != labels  # off the diagonal, or "any": mistakes only
    idx = torch.nonzero(keep).flatten()  # (K,)
    order = torch.sort(confidence[idx], descending=True, stable=True).indices
    idx = idx[order]
    true_p = probs[idx, labels[idx]]
    return [
        Mistake(int(i), int(labels[i]), int(guess[i]), float(confidence[i]), float(tp))
        for i, tp in zip(idx.tolist(), true_p.tolist())
    ]


def step(position: int, count: int, delta: int = 1) -> int:
    """The position ``delta`` steps from ``position`` in a list of ``count``, wrapping around.

    The "next mistake" button: after the last comes the first again.
    """
    if count <= 0:
        return 0
    return (position + delta) % count


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Agreement:
    """How two networks' answers on the same digits relate.

    Each field is a (K,) int64 tensor of test-set positions; together the four
    groups ``both_right``, ``only_a_right``, ``only_b_right`` and ``both_wrong``
    cover every digit exactly once. ``same_wrong`` is the part of ``both_wrong``
    where the two networks gave the same wrong answer.
    """

    both_right: torch.Tensor
    only_a_right: torch.Tensor  # a right, b wrong
    only_b_right: torch.Tensor  # a wrong, b right
    both_wrong: torch.Tensor
    same_wrong: torch.Tensor

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in
                ("both_right", "only_a_right", "only_b_right", "both_wrong", "same_wrong")}


def compare(probs_a: torch.Tensor, probs_b: torch.Tensor, labels: torch.Tensor) -> Agreement:
    """Sort every digit by which of two networks (a and b) read it right."""
    check_probabilities(probs_a, labels)
    check_probabilities(probs_b, labels)
    guess_a, guess_b = probs_a.argmax(dim=1), probs_b.argmax(dim=1)  # (N,) each
    right_a, right_b = guess_a == labels, guess_b == labels

    def where(mask: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(mask).flatten()

    both_wrong = ~right_a & ~right_b
    return Agreement(
        both_right=where(right_a & right_b),
        only_a_right=where(right_a & ~right_b),
        only_b_right=where(~right_a & right_b),
        both_wrong=where(both_wrong),
        same_wrong=where(both_wrong & (guess_a == guess_b)),
    )
