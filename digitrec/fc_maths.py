"""The fully connected network's arithmetic, one step at a time.

``forward_steps`` lays an FCNet's forward pass out as the steps a learner
walks through (the digit, flattened, each Linear layer's weighted sums, each
ReLU, the output scores, softmax). The steps are read from the model's own
named layers, so a 128-64 network gets the same walk as the 16-16 one.
``neuron_sum`` explains one neuron's weighted sum with its largest
contributions, and ``collapse_linear`` shows why a network needs ReLU: two
Linear layers with nothing between them are one Linear layer.

All values come from ``digitrec.inspection``, the same tensors the layers
computed, so every number explained here equals the activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from digitrec.data import IMAGE_SIZE
from digitrec.errors import DigitrecError
from digitrec.inspection import ACTIVATION_KINDS, activation, capture_activations, linear_step, relu, softmax_step
from digitrec.layers import SpecNet


class NotFullyConnected(DigitrecError):
    """A page for the fully connected network was given another kind of network."""


# ---------------------------------------------------------------- the forward pass as steps


@dataclass(frozen=True)
class FCStep:
    """One step of the forward pass for one digit.

    values: what this step produced, (28, 28) for the input, (784,) after
    flattening, (width,) after a Linear or ReLU layer, (10,) for the scores and
    the probabilities. inputs: what the step received (None for the input).
    """

    index: int  # 0-based position in the walk
    name: str  # "input", a layer name of the model ("flatten", "fc_1", "relu_1", "output"), or "softmax"
    kind: str  # "Input", "Flatten", "Linear", "ReLU", "Softmax"
    title: str  # a short heading for a learner
    values: torch.Tensor
    inputs: torch.Tensor | None

    @property
    def width(self) -> int:
        return int(self.values.numel())


_TITLES = {
    "Input": "The digit as 28 × 28 numbers",
    "Flatten": "Flattened into one list of 784 numbers",
    "Softmax": "Softmax: scores become probabilities",
}


def _require_fc(model: nn.Module) -> None:
    if not isinstance(model, SpecNet) or model.spec.has_conv:  # FCNet, or a learner's fully connected model
        raise NotFullyConnected(
            f"This view explains fully connected networks, and this one is a {type(model).__name__}. "
            "Pick an FCNet in the sidebar."
        )


def forward_steps(model: nn.Module, x: torch.Tensor) -> list[FCStep]:
    """The forward pass of an FCNet for one digit x (1, 1, 28, 28), step by step.

    The steps follow the model's named layers in forward order, between the
    input image and the final softmax. With the 16-16 network that is 8 steps:
    input, flatten, fc_1, relu_1, fc_2, relu_2, output, softmax.
    """
    _require_fc(model)
    acts = capture_activations(model, x)  # name -> (1, ...) in forward order
    modules = dict(model.named_children())
    steps = [FCStep(0, "input", "Input", _TITLES["Input"], x[0, 0].detach().clone(), None)]
    previous = steps[0].values
    for name, out in acts.items():
        kind = type(modules[name]).__name__
        values = out[0]  # (width,)
        if kind == "Linear":
            title = (
                "Output layer: ten scores (logits), one per digit" if name == "output"
                else f"{name}: {values.numel()} weighted sums"
            )
        elif kind == "ReLU":
            title = f"{name}: negative sums become 0"
        else:
            title = _TITLES.get(kind, name)
        steps.append(FCStep(len(steps), name, kind, title, values, previous))
        previous = values
    probs = softmax_step(previous).probs.float()  # (10,)
    steps.append(FCStep(len(steps), "softmax", "Softmax", _TITLES["Softmax"], probs, previous))
    return steps


def linear_layers(model: nn.Module) -> list[str]:
    """Names of the model's Linear layers in forward order: ["fc_1", "fc_2", "output"]."""
    _require_fc(model)
    return [name for name, m in model.named_children() if isinstance(m, nn.Linear)]


def hidden_layers(model: nn.Module) -> list[str]:
    """The Linear layers followed by a ReLU: every one but the output layer."""
    return [name for name in linear_layers(model) if name != "output"]


def hidden_outputs(model: nn.Module) -> list[str]:
    """For each hidden Linear layer, the last layer before the next Linear: what the next layer reads
    (``relu_1`` in FCNet; ``sigmoid_1``, ``dropout_1`` or the Linear itself in a learner's model)."""
    names = [name for name, _ in model.named_children()]
    linears = linear_layers(model)
    return [names[names.index(nxt) - 1] for nxt in linears[1:]]


def most_active_neuron(model: nn.Module, x: torch.Tensor, layer: str) -> int:
    """Index of the neuron of Linear ``layer`` with the largest weighted sum for digit x."""
    return int(capture_activations(model, x)[layer][0].argmax())


def zeroed_by_relu(before: torch.Tensor) -> list[int]:
    """Indices of the values that ReLU turns into 0 (the negative ones; 0 stays 0 too)."""
    return [i for i, v in enumerate(before.tolist()) if v < 0]


# ---------------------------------------------------------------- one neuron's weighted sum


@dataclass(frozen=True)
class Contribution:
    """One term w_i * x_i of a neuron's weighted sum."""

    index: int  # position in the layer's input: a pixel 0..783 or a neuron of the previous layer
    weight: float
    input: float
    product: float

    @property
    def pixel(self) -> tuple[int, int]:
        """(row, col) of the pixel, when the input is the flattened 28 x 28 digit."""
        return divmod(self.index, IMAGE_SIZE)


@dataclass(frozen=True)
class NeuronSum:
    """sum_i w_i x_i + b for one neuron, and what made it large or small.

    weights, inputs, products: (in_features,). ``result`` is the neuron's
    value before ReLU; ``activated`` is after ReLU (None for the output layer,
    which has none).
    """

    layer: str
    neuron: int
    weights: torch.Tensor
    inputs: torch.Tensor
    products: torch.Tensor
    weighted_sum: float  # sum_i w_i x_i
    bias: float
    result: float  # weighted_sum + bias
    activated: float | None
    positive_total: float  # sum of the products > 0: what pushed the neuron up
    negative_total: float  # sum of the products < 0: what held it down
    top_positive: tuple[Contribution, ...]  # largest products first
    top_negative: tuple[Contribution, ...]  # most negative products first
    activation_kind: str | None = "ReLU"  # the layer after (a learner's model may use Sigmoid, Tanh, ...; None: none)

    @property
    def from_pixels(self) -> bool:
        return self.inputs.numel() == IMAGE_SIZE * IMAGE_SIZE


def neuron_sum(model: nn.Module, x: torch.Tensor, layer: str, neuron: int, top: int = 5) -> NeuronSum:
    """Explain neuron ``neuron`` of Linear ``layer`` for one digit x (1, 1, 28, 28).

    The numbers come from ``inspection.linear_step``: the same input tensor and
    weights the layer used, so ``result`` equals the layer's activation.
    """
    if layer not in linear_layers(model):
        raise KeyError(f"{layer!r} is not a Linear layer of this network")
    width = dict(model.named_children())[layer].out_features
    if not 0 <= neuron < width:
        raise IndexError(f"{layer} has neurons 0 to {width - 1}, not {neuron}")
    step = linear_step(model, x, layer, neuron)
    products = step.products  # (in_features,)
    weighted_sum = float(products.sum())

    def contribution(i: int) -> Contribution:
        return Contribution(i, float(step.weights[i]), float(step.inputs[i]), float(products[i]))

    order = torch.argsort(products, descending=True).tolist()
    top_positive = tuple(contribution(i) for i in order[:top] if products[i] > 0)
    top_negative = tuple(contribution(i) for i in reversed(order[-top:]) if products[i] < 0)
    children = list(model.named_children())
    after = next((m for (n, _), (_, m) in zip(children, children[1:]) if n == layer), None)
    kind = type(after).__name__ if after is not None else None
    if layer == "output" or kind not in ACTIVATION_KINDS:  # the scores, or a Linear with no activation after it
        activated, kind = None, None
    else:
        activated = float(activation(after, torch.tensor(step.result, dtype=torch.float64)))
    return NeuronSum(
        layer, neuron, step.weights, step.inputs, products, weighted_sum, step.bias, step.result, activated,
        float(products.clamp(min=0).sum()), float(products.clamp(max=0).sum()), top_positive, top_negative, kind,
    )


# ---------------------------------------------------------------- why ReLU: linear layers collapse


@dataclass(frozen=True)
class LinearCollapse:
    """Two Linear layers with no ReLU between them, and the one layer they equal.

    y = W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2) = W x + b.
    w1: (h, n), b1: (h,), w2: (m, h), b2: (m,)  ->  w: (m, n), b: (m,).
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    w: torch.Tensor  # W2 @ W1
    b: torch.Tensor  # W2 @ b1 + b2

    def two_layers(self, x: torch.Tensor) -> torch.Tensor:
        """W2 (W1 x + b1) + b2 for x (n,) or a batch (B, n)."""
        return (x @ self.w1.T + self.b1) @ self.w2.T + self.b2

    def one_layer(self, x: torch.Tensor) -> torch.Tensor:
        """W x + b, the collapsed layer, for x (n,) or a batch (B, n)."""
        return x @ self.w.T + self.b

    def with_relu(self, x: torch.Tensor) -> torch.Tensor:
        """W2 relu(W1 x + b1) + b2: the same weights with ReLU between, which does not collapse."""
        return relu(x @ self.w1.T + self.b1) @ self.w2.T + self.b2


def collapse_linear(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> LinearCollapse:
    """The single layer equal to Linear(w1, b1) followed by Linear(w2, b2)."""
    if w1.dim() != 2 or w2.dim() != 2 or w2.shape[1] != w1.shape[0]:
        raise ValueError(f"W2 {tuple(w2.shape)} cannot follow W1 {tuple(w1.shape)}: W2 needs one column per row of W1")
    if b1.shape != (w1.shape[0],) or b2.shape != (w2.shape[0],):
        raise ValueError("Each bias needs one value per row of its weight matrix")
    w1, b1, w2, b2 = (t.detach().double() for t in (w1, b1, w2, b2))  # double: the equality is exact to print
    return LinearCollapse(w1, b1, w2, b2, w2 @ w1, w2 @ b1 + b2)


def collapse_layers(first: nn.Linear, second: nn.Linear) -> LinearCollapse:
    """Collapse two of a model's Linear layers, as if the ReLU between them were removed."""
    return collapse_linear(first.weight, first.bias, second.weight, second.bias)


def small_example(seed: int = 0, n: int = 3, h: int = 2, m: int = 2) -> tuple[LinearCollapse, torch.Tensor]:
    """Small whole-number matrices (entries -3..3) to work the collapse out by hand, and an input x (n,)."""
    g = torch.Generator().manual_seed(seed)

    def ints(*shape: int) -> torch.Tensor:
        return torch.randint(-3, 4, shape, generator=g).double()

    collapse = collapse_linear(ints(h, n), ints(h), ints(m, h), ints(m))
    return collapse, ints(n)
