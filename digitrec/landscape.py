"""A slice of the real loss landscape: the loss as one weight moves, everything else held fixed.

The loss of a network is a function of all its weights at once, far too many
directions to draw. Fix every weight but one at its trained value and the loss
becomes a curve over that one weight: a slice through the real landscape that
a learner can see, with the slope at any point and the steps plain gradient
descent takes on it (``new = old - learning rate x slope``).

Every function works on a private copy of the model, so the shared pretrained
network is never changed, and returns plain numbers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


SLICE_DIGITS = 1000  # training digits a slice's loss is averaged over: smooth, and about 1 s per curve
CURVATURE_STEP = 0.05  # a weight's trained value ± this, for its valley's curvature
NARROWEST_CANDIDATES = 16  # a neuron's largest weights that narrowest_weight compares (all 16 of an FCNet output)


@dataclass(frozen=True)
class WeightRef:
    """One weight: ``{layer}.weight[row, col]`` of a Linear layer (row: the neuron, col: its input)."""

    layer: str
    row: int
    col: int

    def parameter(self, model: nn.Module) -> torch.nn.Parameter:
        module = dict(model.named_children()).get(self.layer)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{self.layer!r} is not a Linear layer of this network.")
        out_features, in_features = module.weight.shape
        if not (0 <= self.row < out_features and 0 <= self.col < in_features):
            raise ValueError(f"{self.layer} has {out_features} x {in_features} weights; "
                             f"there is no weight [{self.row}, {self.col}].")
        return module.weight


@dataclass(frozen=True)
class Slice:
    """The loss along one weight. values: (P,) weight values; losses: (P,) mean cross-entropy."""

    ref: WeightRef
    trained: float  # the weight's value in the trained network
    values: list[float]
    losses: list[float]


@dataclass(frozen=True)
class Step:
    """One gradient-descent step on the slice: at ``value`` the loss is ``loss`` and its slope ``slope``."""

    value: float
    loss: float
    slope: float


def _copy(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def loss_and_slope(model: nn.Module, ref: WeightRef, value: float, x: torch.Tensor, y: torch.Tensor) -> Step:
    """The mean loss on (x, y) with the weight set to ``value``, and its derivative with respect to that weight.

    x: (N, 1, 28, 28) in [0, 1]; y: (N,) labels. The slope is autograd's, the same
    number backpropagation gives for this weight.
    """
    model = _copy(model)
    weight = ref.parameter(model)
    with torch.no_grad():
        weight[ref.row, ref.col] = value
    weight.requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, weight)
    return Step(float(value), float(loss.detach()), float(grad[ref.row, ref.col]))


def loss_slice(
    model: nn.Module, ref: WeightRef, x: torch.Tensor, y: torch.Tensor, span: float = 3.0, points: int = 61
) -> Slice:
    """The mean loss on (x, y) at ``points`` values of the weight, from trained - span to trained + span."""
    model = _copy(model)
    weight = ref.parameter(model)
    trained = float(weight[ref.row, ref.col])
    values = torch.linspace(trained - span, trained + span, points)
    losses = []
    with torch.no_grad():
        for v in values:
            weight[ref.row, ref.col] = v
            losses.append(float(F.cross_entropy(model(x), y)))
    return Slice(ref, trained, values.tolist(), losses)


def descend(
    model: nn.Module, ref: WeightRef, start: float, lr: float, steps: int, x: torch.Tensor, y: torch.Tensor
) -> list[Step]:
    """Plain gradient descent on this one weight: ``steps`` updates from ``start``; returns every point visited.

    Each point's value is the previous one minus ``lr`` times the previous slope.
    """
    path = [loss_and_slope(model, ref, start, x, y)]
    for _ in range(steps):
        last = path[-1]
        path.append(loss_and_slope(model, ref, last.value - lr * last.slope, x, y))
    return path


def slice_digits(train) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``SLICE_DIGITS`` of the training digits ``train`` (a DigitSet) as model input (N, 1, 28, 28)
    and labels (N,): what a slice's loss is the mean over."""
    from digitrec.data import to_input

    return to_input(train.images[:SLICE_DIGITS]), train.labels[:SLICE_DIGITS].long()


def curvature(model: nn.Module, ref: WeightRef, x: torch.Tensor, y: torch.Tensor, h: float = CURVATURE_STEP) -> float:
    """How sharply the loss bends at the weight's trained value: the change of its slope per unit, measured
    from h either side (a central difference of autograd's slopes)."""
    trained = float(ref.parameter(model)[ref.row, ref.col].detach())
    return (loss_and_slope(model, ref, trained + h, x, y).slope
            - loss_and_slope(model, ref, trained - h, x, y).slope) / (2 * h)


def narrowest_weight(model: nn.Module, layer: str, row: int, x: torch.Tensor, y: torch.Tensor,
                     candidates: int = NARROWEST_CANDIDATES) -> WeightRef:
    """Of neuron ``row``'s ``candidates`` largest weights in ``layer``, the one whose valley is narrowest
    (``curvature``): a step at a large learning rate leaps over it and steps at a small one creep down
    it, so one slice shows both.

    The largest weight alone, which the slice showed before, often sits in a lopsided valley of the
    output layer, a steep wall on one side and an almost flat floor on the other: from the floor a
    step of learning rate 3 only crept (tests/test_landscape.py checks the narrowest one for every class)."""
    weight = dict(model.named_children())[layer].weight  # (out, in)
    cols = weight[row].detach().abs().topk(min(candidates, weight.shape[1])).indices.tolist()
    refs = [WeightRef(layer, int(row), int(c)) for c in cols]
    return max(refs, key=lambda ref: curvature(model, ref, x, y))
