"""Change a unit and watch: knock a neuron or feature map out, clamp it, or type a new weight.

Every change is written into the weights of a *copy* of the model, so the
changed copy is an ordinary model: every explorer, the probabilities and the
arithmetic panels work on it unchanged, with no hooks to forget.

- knock out unit u: its row of weights and its bias become 0, so its value is
  0 for every input (and 0 after ReLU).
- clamp unit u to v: weights 0, bias v, so its value is v for every input (a
  map: v in every cell).
- set weight: one number of a layer's weight tensor becomes the typed value.

``apply`` never touches the model it is given; it refuses (``BadChange``) a
change that makes the output not a number on the check digit, so a learner
never ends up with a broken network.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from digitrec.errors import DigitrecError

KINDS = ("knock out", "clamp", "set weight")


class BadChange(DigitrecError):
    """A change that cannot be made, said in one sentence."""


@dataclass(frozen=True)
class Change:
    kind: str  # one of KINDS
    layer: str  # a Linear or Conv2d layer
    unit: int  # neuron / output channel; for "set weight", the row of the weight tensor
    value: float = 0.0  # the clamp value, or the new weight
    weight: tuple[int, ...] = ()  # for "set weight": the rest of the index, (input,) or (in_channel, row, col)

    def describe(self) -> str:
        if self.kind == "knock out":
            return f"{self.layer} unit {self.unit} switched off"
        if self.kind == "clamp":
            return f"{self.layer} unit {self.unit} held at {self.value:g}"
        return f"{self.layer} weight {list((self.unit, *self.weight))} set to {self.value:g}"


def _layer(model: nn.Module, name: str) -> nn.Module:
    module = dict(model.named_children()).get(name)
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise BadChange(f"{name!r} is not a layer with weights; pick one of the Linear or convolution layers.")
    return module


def _apply_one(model: nn.Module, change: Change) -> None:
    module = _layer(model, change.layer)
    rows = module.weight.shape[0]
    if not 0 <= change.unit < rows:
        raise BadChange(f"{change.layer} has units 0 to {rows - 1}; {change.unit} is not one of them.")
    if not math.isfinite(change.value):
        raise BadChange(f"{change.value} is not a finite number; type an ordinary number such as 0.5.")
    if abs(change.value) > torch.finfo(module.weight.dtype).max:
        raise BadChange(f"{change.value:g} is too large for a weight (at most about 3.4e38); type a smaller number.")
    with torch.no_grad():
        if change.kind == "knock out":
            module.weight[change.unit] = 0
            module.bias[change.unit] = 0
        elif change.kind == "clamp":
            module.weight[change.unit] = 0
            module.bias[change.unit] = change.value
        elif change.kind == "set weight":
            index = (change.unit, *change.weight)
            if len(index) != module.weight.dim() or any(
                not 0 <= i < n for i, n in zip(index, module.weight.shape)
            ):
                raise BadChange(f"{change.layer}'s weights have shape {tuple(module.weight.shape)}; "
                                f"{list(index)} is not a position in it.")
            module.weight[index] = change.value
        else:
            raise BadChange(f"Unknown change {change.kind!r}; expected one of {', '.join(KINDS)}.")


def apply(model: nn.Module, changes: list[Change], check: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` with every change made, in order. ``model`` itself is never modified.

    check: a digit (1, 1, 28, 28); if the changed copy's output on it is not
    finite (a weight of 1e38 overflows to inf, then NaN), BadChange says so and
    no model is returned.
    """
    changed = copy.deepcopy(model)
    for change in changes:
        _apply_one(changed, change)
    if check is not None:
        was_training = changed.training
        changed.eval()
        with torch.inference_mode():
            out = changed(check)
        changed.train(was_training)
        if not bool(torch.isfinite(out).all()):
            raise BadChange("With that change the network's scores are no longer numbers (NaN or infinity), "
                            "so it was not applied; try a smaller value.")
    return changed


def weight_shape(model: nn.Module, layer: str) -> tuple[int, ...]:
    return tuple(_layer(model, layer).weight.shape)


def fingerprint(model: nn.Module) -> str:
    """A SHA-256 of every parameter and buffer: equal before and after means nothing changed."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
