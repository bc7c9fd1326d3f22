"""What a model computes inside, in real numbers.

``capture_activations`` records every named layer's output through forward
hooks that are removed even if the forward pass raises (miniai's ``Hooks``).
The ``*_step`` functions give the arithmetic of one output value of one
operation (a convolution, a linear neuron, ReLU, max pooling, softmax), taken
from the same tensors the layer used, so the explanation equals the activation.

None of these leave hooks, gradients or a changed train/eval mode behind.
(This module is not called ``inspect`` so that it never shadows the standard
library's module of that name.)
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules import module as _module


def convolves(model: nn.Module) -> bool:
    """Has ``model`` a 2-D convolution (what channels-last memory and bfloat16 speed up here)?"""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def channels_last(model: nn.Module) -> nn.Module:
    """``model`` in channels-last memory if it convolves: oneDNN's convolutions on these few-channel maps
    ran 1.5-3x as fast so (TinyVGG on the 10,000 test digits: 1.0 -> 0.65 s, 1 thread). A private copy
    unless it is channels-last already (``fit``'s model is while it trains): the caller's model may be
    shared with other pages, whose threads must not see its weights change layout."""
    if not convolves(model):
        return model
    if all(p.dim() != 4 or p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters()):
        return model
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def as_model_reads(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A batch of images (B, C, H, W) in the memory layout ``model``'s convolutions run fastest on.

    A one-channel batch counts as both layouts, but oneDNN picks its kernels from the strides:
    with the default ones a channels-last TinyVGG evaluated 10,000 digits in 1.06 s, 0.69 s
    with channels-last strides (1 thread)."""
    if x.dim() == 4 and convolves(model):
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def watched(modules) -> bool:
    """Does a hook watch any of ``modules`` (its own, or one on every module), so that a pass that
    skips calling one of them (a fused computation) would go unseen?"""
    if (_module._global_forward_hooks or _module._global_forward_pre_hooks
            or _module._global_backward_hooks or _module._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in modules)


@contextmanager
def forward_hooks(model: nn.Module, names: list[str] | None = None) -> Iterator[dict]:
    """Record (input, output) of the named children during forward passes.

    Yields a dict filled as the model runs: name -> (input tensor, output tensor),
    in the order the layers ran. The hooks are removed on exit, also when the
    forward pass raised.
    """
    records: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    try:
        for name, module in model.named_children():
            if names is not None and name not in names:
                continue

            def hook(mod, inputs, output, name=name):
                records[name] = (inputs[0].detach(), output.detach())

            handles.append(module.register_forward_hook(hook))
        yield records
    finally:
        for h in handles:
            h.remove()


def _private_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to hook and run.

    The app shares one cached model between browser sessions, each in its own
    thread: a hook put on the shared model would also record another session's
    forward pass (its digit in our activations), and switching the shared
    model to eval mode would reach into a run training it. These networks are
    tiny (at most ~110k weights), so a copy costs well under a millisecond.
    """
    return copy.deepcopy(model)


def capture_activations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named layer's output for input ``x``, in forward order.

    x: (B, 1, 28, 28). Returns name -> (B, ...) tensor; the last entry is the logits.
    Runs on a private copy, so ``model`` itself never carries a hook.
    """
    model = _private_copy(model)
    with eval_mode(model), torch.inference_mode(), forward_hooks(model) as records:
        model(x)
    return {name: out for name, (_, out) in records.items()}


def layer_io(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of one named layer for ``x``."""
    if layer not in dict(model.named_children()):
        raise KeyError(f"{type(model).__name__} has no layer {layer!r}")
    model = _private_copy(model)
    with eval_mode(model), torch.inference_mode(), forward_hooks(model, [layer]) as records:
        model(x)
    return records[layer]


@dataclass(frozen=True)
class ConvStep:
    """The arithmetic of one convolution output value.

    patches, kernel, products: (C_in, k, k). The patch is the input window
    under the kernel, zeros where it hangs over the padded border.
    """

    layer: str
    channel: int  # output channel (feature map) index
    row: int  # output position
    col: int
    patches: torch.Tensor
    kernel: torch.Tensor
    products: torch.Tensor
    channel_sums: torch.Tensor  # (C_in,) sum of each input channel's products
    bias: float
    result: float  # sum(channel_sums) + bias: the value before ReLU
    padding: int


def conv_step(
    model: nn.Module, x: torch.Tensor, layer: str, channel: int, row: int, col: int
) -> ConvStep:
    """The kernel x patch sum behind output ``[channel, row, col]`` of ``layer`` for one digit x (1, 1, 28, 28)."""
    conv = dict(model.named_children())[layer]
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{layer} is a {type(conv).__name__}, not a convolution")
    inp, _ = layer_io(model, x, layer)
    k = conv.kernel_size[0]
    pad = conv.padding[0]
    stride = conv.stride[0]
    padded = nn.functional.pad(inp[0], (pad, pad, pad, pad))  # (C_in, H + 2p, W + 2p)
    r, c = row * stride, col * stride
    patches = padded[:, r : r + k, c : c + k]
    kernel = conv.weight.detach()[channel]  # (C_in, k, k)
    products = patches * kernel
    channel_sums = products.sum(dim=(1, 2))
    bias = float(conv.bias.detach()[channel]) if conv.bias is not None else 0.0
    return ConvStep(
        layer, channel, row, col, patches, kernel, products, channel_sums, bias,
        float(channel_sums.sum()) + bias, pad,
    )


@dataclass(frozen=True)
class LinearStep:
    """The weighted sum behind one neuron of a Linear layer: sum(w * x) + b."""

    layer: str
    neuron: int
    inputs: torch.Tensor  # (in_features,)
    weights: torch.Tensor  # (in_features,)
    products: torch.Tensor  # (in_features,)
    bias: float
    result: float


def linear_step(model: nn.Module, x: torch.Tensor, layer: str, neuron: int) -> LinearStep:
    """The arithmetic of neuron ``neuron`` of Linear ``layer`` for one digit x (1, 1, 28, 28)."""
    lin = dict(model.named_children())[layer]
    if not isinstance(lin, nn.Linear):
        raise TypeError(f"{layer} is a {type(lin).__name__}, not a Linear layer")
    inp, _ = layer_io(model, x, layer)
    inputs = inp[0]
    weights = lin.weight.detach()[neuron]
    products = inputs * weights
    bias = float(lin.bias.detach()[neuron])
    return LinearStep(layer, neuron, inputs, weights, products, bias, float(products.sum()) + bias)


@dataclass(frozen=True)
class PoolStep:
    """One max-pooling output: the window it looked at and the largest value in it."""

    window: torch.Tensor  # (k, k)
    argmax: tuple[int, int]  # position of the maximum inside the window
    result: float


def pool_step(feature_map: torch.Tensor, row: int, col: int, size: int = 2) -> PoolStep:
    """max over the ``size`` x ``size`` window of a (H, W) map behind output (row, col)."""
    window = feature_map[row * size : (row + 1) * size, col * size : (col + 1) * size]
    flat = int(window.argmax())
    return PoolStep(window, (flat // size, flat % size), float(window.max()))


def relu(values: torch.Tensor) -> torch.Tensor:
    """max(0, x), cell by cell."""
    return values.clamp(min=0)


@dataclass(frozen=True)
class SoftmaxStep:
    """exp(z_i) / sum_j exp(z_j), with the max subtracted first for numerical safety."""

    logits: torch.Tensor  # (10,)
    shifted: torch.Tensor  # logits - max(logits): the same softmax, no overflow
    exps: torch.Tensor  # exp(shifted)
    total: float  # sum of exps
    probs: torch.Tensor  # exps / total


def softmax_step(logits: torch.Tensor) -> SoftmaxStep:
    logits = logits.detach().flatten().double()
    shifted = logits - logits.max()
    exps = shifted.exp()
    total = float(exps.sum())
    return SoftmaxStep(logits, shifted, exps, total, exps / total)


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, 10) for x (B, 1, 28, 28), without touching the model's mode."""
    with eval_mode(model), torch.inference_mode():
        return torch.softmax(model(x), dim=1)


# ---------------------------------------------------------------- any activation, average pooling, batch norm
# A learner's own model (digitrec.layers) may use other layers than ReLU and max pooling;
# each gets its formula and its arithmetic in the same real numbers.

ACTIVATION_FORMULAS = {  # LaTeX, for the explorers
    "ReLU": r"\mathrm{ReLU}(z) = \max(0, z)",
    "LeakyReLU": r"\mathrm{LeakyReLU}(z) = \max(0, z) + a \cdot \min(0, z)",
    "Sigmoid": r"\sigma(z) = \frac{1}{1 + e^{-z}}",
    "Tanh": r"\tanh(z) = \frac{e^{z} - e^{-z}}{e^{z} + e^{-z}}",
    "GELU": r"\mathrm{GELU}(z) = z \cdot \Phi(z) = \tfrac{z}{2}\left(1 + \mathrm{erf}(z/\sqrt{2})\right)",
}
ACTIVATION_KINDS = tuple(ACTIVATION_FORMULAS)


def activation(module: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """The activation ``module`` computes, written out from its formula (not by calling the module),
    so an explorer can check the layer's own output against it."""
    kind = type(module).__name__
    v = values.double()
    if kind == "ReLU":
        out = v.clamp(min=0)
    elif kind == "LeakyReLU":
        out = v.clamp(min=0) + module.negative_slope * v.clamp(max=0)
    elif kind == "Sigmoid":
        out = 1 / (1 + torch.exp(-v))
    elif kind == "Tanh":
        out = (torch.exp(v) - torch.exp(-v)) / (torch.exp(v) + torch.exp(-v))
    elif kind == "GELU":
        out = v / 2 * (1 + torch.erf(v / 2**0.5))
    else:
        raise TypeError(f"{kind} is not an activation function")
    return out.to(values.dtype)


def pool_step_of(module: nn.Module, feature_map: torch.Tensor, row: int, col: int) -> PoolStep:
    """The window behind output (row, col) of a max or average pooling layer over a (H, W) map:
    its maximum, or its mean (zero padding counts, as PyTorch's default count_include_pad)."""
    k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
    s = module.stride if isinstance(module.stride, int) else module.stride[0]
    p = module.padding if isinstance(module.padding, int) else module.padding[0]
    fill = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0
    padded = nn.functional.pad(feature_map, (p, p, p, p), value=fill) if p else feature_map
    window = padded[row * s : row * s + k, col * s : col * s + k]
    flat = int(window.argmax())
    result = float(window.max()) if isinstance(module, nn.MaxPool2d) else float(window.double().sum() / (k * k))
    return PoolStep(window, (flat // k, flat % k), result)


@dataclass(frozen=True)
class BatchNormStep:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta for one channel (or neuron), with its running statistics."""

    channel: int
    mean: float  # running mean learned in training (eval mode uses it, not the batch's)
    var: float
    eps: float
    gamma: float  # learned scale
    beta: float  # learned shift
    scale: float  # gamma / sqrt(var + eps): what x is multiplied by
    shift: float  # beta - mean * scale: what is added after

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def latex(self, x: float) -> str:
        """The formula with this channel's numbers for one input value x, ending in its output."""
        y = float(self.apply(torch.tensor(x, dtype=torch.float64)))
        return (rf"y = \gamma\,\frac{{x - \mu}}{{\sqrt{{\sigma^2 + \epsilon}}}} + \beta"
                rf" = {self.gamma:.3f}\cdot\frac{{{x:.3f} - ({self.mean:.3f})}}{{\sqrt{{{self.var:.3f} + {self.eps:g}}}}}"
                rf" + ({self.beta:.3f}) = \mathbf{{{y:.4f}}}")


def batchnorm_step(module: nn.Module, channel: int) -> BatchNormStep:
    mean = float(module.running_mean[channel])
    var = float(module.running_var[channel])
    gamma = float(module.weight[channel]) if module.weight is not None else 1.0
    beta = float(module.bias[channel]) if module.bias is not None else 0.0
    scale = gamma / (var + module.eps) ** 0.5
    return BatchNormStep(channel, mean, var, module.eps, gamma, beta, scale, beta - mean * scale)
