"""Training a stack of Linear and ReLU layers with the backward pass written out by hand.

Autograd records a graph on every forward pass and walks it back on every backward pass. For a
network as small as FCNet 784-16-16-10 that bookkeeping costs more than the arithmetic: a
training step spent about as long in autograd's machinery as in its matrix multiplies. A plain
stack of Linear and ReLU layers needs none of it. Its chain rule is the one ``digitrec.backprop``
walks through for one digit, here for a batch of B digits:

- the loss is the mean of −log p(label); its gradient with respect to the scores is
  (softmax − onehot(label)) / B;
- a Linear layer with inputs a and blame δ on its outputs: ∂W = δᵀ a, ∂b = Σ δ over the batch,
  and the blame it passes down is δ W;
- ReLU passes blame through where its output was above 0 and stops it elsewhere.

Each of these is the very ATen operation autograd runs for that layer, with the same operands in
the same layout, so the gradients are bit-identical to ``loss.backward()``'s (``tests/test_hand_backward.py``
checks it) and a seeded run trains to the same weights either way. Anything else (convolutions,
other activations, batch norm, dropout, hooks on a layer or a weight, a frozen layer, another precision than
float32) trains through autograd.

Inference mode: both passes run under ``torch.inference_mode()``, not ``torch.no_grad()``. Under
no_grad every operation still passes through autograd's layer of the dispatcher, which then does
nothing; inference mode skips that layer: forward and backward of a batch of 128 took 147 instead of
160 us (FCNet, 1 thread), the same operations on the same numbers. What they make (the scores, the
gradients set as ``.grad``) are inference tensors: anything may read them, nothing may change them in
place outside inference mode. The optimizers (Adam, SGD, momentum) only read the gradients, and
``fit`` sets them to None when it ends; a caller that goes on with ``loss.backward()`` sets them to
None first, as ``fit`` does. (A callback that clipped or scaled ``.grad`` in place during such a
run would be refused with PyTorch's error; none of digitrec's does.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from digitrec.layers import SpecNet

_MEAN = 1  # torch's Reduction::Mean, as cross_entropy's default reduction="mean" passes it
_IGNORE_INDEX = -100  # cross_entropy's default: no label is ignored


@dataclass
class Forward:
    """What the backward pass needs from one forward pass of a batch."""

    inputs: list[torch.Tensor]  # each Linear layer's input: the flat digits, then each hidden layer's output
    log_probs: torch.Tensor  # (B, 10) log softmax of the scores
    labels: torch.Tensor  # (B,)
    total_weight: torch.Tensor  # the number of digits the mean loss divides by, as nll_loss counted it


class HandBackward:
    """The training step of ``model`` with its gradients from the chain rule above."""

    def __init__(self, model: SpecNet, linears: list[nn.Linear], relu_after: list[bool]) -> None:
        self.model = model
        self.linears = linears
        self.relu_after = relu_after  # is the Linear layer at this index followed by a ReLU?
        weight = linears[0].weight
        # d loss / d loss, made once: a new one a step took about 1 % of FCNet's step.
        self.one = torch.ones((), dtype=weight.dtype, device=weight.device)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Forward]:
        """(scores (B, 10), mean cross-entropy, what ``backward`` needs) for digits ``x`` (B, 1, 28, 28)."""
        spec = self.model.spec
        with torch.inference_mode():  # see "Inference mode" above: no_grad, with less dispatching
            if spec.normalised:
                x = (x - spec.mean) / spec.std
            a = x.flatten(1)  # (B, 784), as nn.Flatten
            inputs = []
            for linear, relu in zip(self.linears, self.relu_after):
                inputs.append(a)
                a = nn.functional.linear(a, linear.weight, linear.bias)
                if relu:
                    a = torch.relu(a)
            logits = a
            log_probs = torch.log_softmax(logits, dim=1)
            loss, total_weight = torch.ops.aten.nll_loss_forward(log_probs, y, None, _MEAN, _IGNORE_INDEX)
        return logits, loss, Forward(inputs, log_probs, y, total_weight)

    def backward(self, f: Forward) -> None:
        """Set every weight's ``.grad`` from the forward pass ``f``, as ``loss.backward()`` would."""
        with torch.inference_mode():  # see "Inference mode" above: no_grad, with less dispatching
            blame = torch.ops.aten.nll_loss_backward(
                self.one, f.log_probs, f.labels, None, _MEAN, _IGNORE_INDEX, f.total_weight)  # −1/B at each label
            blame = torch._log_softmax_backward_data(blame, f.log_probs, 1, f.log_probs.dtype)  # (p − onehot) / B
            for i in range(len(self.linears) - 1, -1, -1):
                linear, a = self.linears[i], f.inputs[i]
                linear.weight.grad = blame.t().mm(a)  # δᵀ a: (out, in)
                if linear.bias is not None:
                    linear.bias.grad = blame.sum(0)
                if i == 0:
                    break  # the digits need no blame
                blame = blame.mm(linear.weight)  # δ W: the blame of the layer below's outputs
                if self.relu_after[i - 1]:
                    blame = torch.ops.aten.threshold_backward(blame, a, 0)  # through where the ReLU was on


def hand_backward(model: nn.Module) -> HandBackward | None:
    """A HandBackward for ``model`` if it is a SpecNet of Flatten, then Linear layers each followed by
    a ReLU or by nothing, with no hooks; else None (train it through autograd)."""
    if not isinstance(model, SpecNet) or any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        or parametrize.is_parametrized(m) for m in model.modules()
    ):
        return None
    if any(not p.requires_grad or p.dtype != torch.float32 or p._backward_hooks
           or getattr(p, "_post_accumulate_grad_hooks", None) for p in model.parameters()):
        return None  # a frozen layer, another precision, a hook on a weight's gradient: autograd's business
    kinds = [layer.kind for layer in model.spec.layers]
    if not kinds or kinds[0] != "Flatten" or kinds[-1] != "Linear":
        return None
    modules = [getattr(model, name) for name in model.names]
    linears, relu_after = [], []
    for kind, module in zip(kinds[1:], modules[1:]):
        if kind == "Linear":
            linears.append(module)
            relu_after.append(False)
        elif kind == "ReLU" and relu_after and not relu_after[-1]:
            relu_after[-1] = True
        else:
            return None
    return HandBackward(model, linears, relu_after)
