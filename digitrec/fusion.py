"""Evaluation's forward pass with each convolution and the ReLU after it as one oneDNN call.

A run measures its validation digits after every epoch, its curve's subsets at
every point and the test set at its end; the Mistakes and statistics passes read
thousands of digits more. In TinyVGG's evaluation (batches of 500, channels-last,
1 thread) the four ReLUs took a sixth of the time: each reads and writes the whole
map its convolution has just written. oneDNN, which computes PyTorch's CPU
convolutions, applies a ReLU to each output while it is still in the registers
(a "post-op"); PyTorch exposes that as ``mkldnn::_convolution_pointwise``, the call
its own compiler emits for a convolution followed by a ReLU. A pair is fused
only where PyTorch would itself have computed that convolution with oneDNN
(``torch._C._select_conv_backend``, the choice ``conv2d`` makes): a batch of one
digit, or a 1 x 1 kernel on a small batch and one thread, goes to another
kernel whose sums differ in the last bits, and oneDNN may be switched off.
Where it is fused the values were ``relu(conv2d(x))``'s bit for bit on every
network and digit tested (TinyVGG trained and untrained on real digits, a
learner's stack with strided, bias-free and unpadded convolutions, batches of
2 to 2,000: ``tests/test_fusion.py``). TinyVGG's 500 digits took 43.5-44.2 ms
instead of 51.6-56.3 (three runs alternating, same process).

Only the bulk passes use it (``digitrec.train.evaluate_each`` and ``predictions``):
they need no gradient and no hook. A pass that does (activation capture, Captum,
training) calls the model itself, and so does this module when a gradient is
wanted, the batch is not a 4-D float32 CPU tensor, a module has a hook, or the
model is not a ``layers.SpecNet`` with SpecNet's own forward.
"""

from __future__ import annotations

import torch
from torch import nn

from digitrec.inspection import watched
from digitrec.layers import SpecNet


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, with each Conv2d that a ReLU follows computed as one fused call where that is safe."""
    if not _can_fuse(model, x):
        return model(x)
    if model.spec.normalised:  # as SpecNet.forward: what the learner's notebook fed it
        x = (x - model.spec.mean) / model.spec.std
    layers = [getattr(model, name) for name in model.names]
    i = 0
    while i < len(layers):
        layer = layers[i]
        if i + 1 < len(layers) and _fusable(layer, layers[i + 1], x):
            x = torch.ops.mkldnn._convolution_pointwise(
                x, layer.weight, layer.bias, list(layer.padding), list(layer.stride), list(layer.dilation),
                layer.groups, "relu", [], "",
            )
            i += 2
        else:
            x = layer(x)
            i += 1
    return x


def available() -> bool:
    """Has this PyTorch oneDNN's fused convolution, and the way to ask which kernel conv2d would pick?"""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C, "_select_conv_backend"))


def _can_fuse(model: nn.Module, x: torch.Tensor) -> bool:
    return (isinstance(model, SpecNet) and type(model).forward is SpecNet.forward and not torch.is_grad_enabled()
            and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and available()
            and not _hooked(model))


def _fusable(layer: nn.Module, after: nn.Module, x: torch.Tensor) -> bool:
    """A plain convolution with PyTorch's own ReLU right after it, which conv2d would compute with oneDNN
    on ``x`` (its input): only then are the fused call's sums the ones conv2d makes."""
    if not (type(layer) is nn.Conv2d and type(after) is nn.ReLU and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str) and layer.weight.dtype == torch.float32):
        return False
    backend = torch._C._select_conv_backend(x, layer.weight, layer.bias, list(layer.stride), list(layer.padding),
                                            list(layer.dilation), False, [0, 0], layer.groups)
    return backend == torch._C._ConvBackend.Mkldnn


def _hooked(model: nn.Module) -> bool:
    """Would skipping a ReLU module's call skip something that watches it (a page's hook)?"""
    return watched(model.modules())
