"""The first convolution of a network that reads a one-channel image, in training, by a C kernel.

oneDNN (PyTorch's CPU convolution) blocks channels into vector-wide groups; with
a single input channel most of each block is padding. In TinyVGG's training step
(128 digits, bfloat16, 1 thread, glibc's malloc keeping freed memory as
training processes do) its first convolution took 0.61 ms forward and 1.01 ms
for the weights' gradient, and its ReLU two more passes over the map, for about
4 % of the step's arithmetic. ``image_conv.c`` (its header says how) takes
0.69 ms forward with the ReLU and 0.60 backward; the images need no gradient,
so none is computed. One epoch of ``fit``, alternating kernel and PyTorch four
times in one process: 5.64-6.56 s against 6.03-6.70 s, faster in every pair
(by 1.5-9 %).

It is taken by SpecNet.forward in training, with a gradient wanted, on the CPU,
for a ``Conv2d`` with one input channel, stride 1, no dilation or groups, zero
padding the same on every side, an input that needs no gradient, in bfloat16
(under autocast, as ``fit`` trains a CNN where the processor has it) or float32,
and no hook on the convolution or its ReLU (a hook would miss what the fused
pass never makes). Everything else keeps PyTorch's convolution, as do
evaluation and every explorer, attribution and step-through pass, so what a
learner inspects is PyTorch's arithmetic. The sums are the same products added
in another order than oneDNN's: results agree to rounding (tests/test_image_conv.py),
and training's loss curve stays within 1 % of PyTorch's.
Without a compiler, or with DIGITREC_NATIVE=0, training convolves as before.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from digitrec import native
from digitrec.inspection import watched
from digitrec.native import address



def conv_then_relu(conv: nn.Module, relu: nn.Module | None, x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """``relu(conv(x))`` (or ``conv(x)`` where ``relu`` is not PyTorch's ReLU) by image_conv.c, and how
    many of the two modules it ran (2 or 1); None where the kernel does not apply (the caller runs
    ``conv`` itself)."""
    dtype = _kernel_type(conv, x)
    if dtype is None:
        return None
    fuse = type(relu) is nn.ReLU and not relu.inplace and not watched([relu])
    weight = conv.weight.to(dtype)  # as autocast casts them (autograd carries the gradient back)
    bias = conv.bias.to(dtype) if conv.bias is not None else None
    y = _KernelConv.apply(x.to(dtype), weight, bias, _pair(conv.padding)[0], fuse)
    return y, 2 if fuse else 1


def _kernel_type(conv: nn.Module, x: torch.Tensor) -> torch.dtype | None:
    """The type image_conv.c would convolve ``x`` in with ``conv`` (autocast's where it is on, as
    PyTorch's convolution would), or None where the kernel does not apply."""
    if not (type(conv) is nn.Conv2d and conv.training and torch.is_grad_enabled()
            and conv.in_channels == 1 and conv.groups == 1 and conv.padding_mode == "zeros"
            and _pair(conv.stride) == (1, 1) and _pair(conv.dilation) == (1, 1)
            and not isinstance(conv.padding, str)
            and len(set(_pair(conv.kernel_size))) == 1 and len(set(_pair(conv.padding))) == 1
            and x.dim() == 4 and x.shape[1] == 1 and x.numel() > 0 and not x.requires_grad
            and x.device.type == "cpu" and conv.weight.device.type == "cpu"):
        return None
    kernel, padding = conv.kernel_size[0], _pair(conv.padding)[0]
    if padding < 0 or x.shape[2] + 2 * padding < kernel or x.shape[3] + 2 * padding < kernel:
        return None  # no output, or padding PyTorch refuses (its convolution says why)
    if torch.is_autocast_enabled("cpu"):
        # autocast casts float32 (and bfloat16) only: a float64 network stays float64
        if not {x.dtype, conv.weight.dtype} <= {torch.float32, torch.bfloat16}:
            return None
        dtype = torch.get_autocast_dtype("cpu")
    elif x.dtype == conv.weight.dtype:
        dtype = x.dtype
    else:
        return None  # PyTorch's convolution says what does not match
    if dtype not in native.KERNEL_TYPES or watched([conv]) or _kernels() is None:
        return None
    return dtype


def _kernels() -> ctypes.CDLL | None:
    return native.load("image_conv")


def _run_kernel(direction: str, dtype: torch.dtype, *args) -> None:
    status = getattr(_kernels(), f"conv_{direction}_{native.KERNEL_TYPES[dtype]}")(*args)
    if status == -2:  # _kernel_type lets no such sizes through
        raise ValueError(f"the first convolution ({direction}): sizes the kernel cannot take")
    if status != 0:
        raise MemoryError(f"the first convolution ({direction}): out of memory for its buffers")



def _sizes(x: torch.Tensor, weight: torch.Tensor, padding: int) -> tuple[ctypes.c_int64, ...]:
    """(n, h, w, channels, k, pad) as image_conv.c takes them."""
    batch, _, height, width = x.shape
    channels, _, kernel, _ = weight.shape
    return tuple(ctypes.c_int64(v) for v in (batch, height, width, channels, kernel, padding))


class _KernelConv(torch.autograd.Function):
    """A stride-1, zero-padded convolution of one-channel images by image_conv.c, forward and backward
    (of ``relu(conv(x))`` when ``relu``); the images get no gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                relu: bool) -> torch.Tensor:
        x, weight = x.contiguous(), weight.contiguous()  # (n, 1, h, w) is (n, h, w) in either layout
        bias = bias.contiguous() if bias is not None else None
        batch, _, height, width = x.shape
        channels, _, kernel, _ = weight.shape
        y = torch.empty((batch, channels, height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1),
                        dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        _run_kernel("forward", x.dtype, address(x), address(weight), address(bias), address(y),
                    *_sizes(x, weight, padding), ctypes.c_int(relu))
        # After a ReLU the backward pass reads the output (the ReLU passes no gradient where it is <= 0).
        ctx.save_for_backward(x, y if relu else None)
        ctx.weight_shape, ctx.padding, ctx.has_bias = weight.shape, padding, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor | None, None, None]:
        x, y = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_weight = torch.empty(ctx.weight_shape, dtype=grad.dtype, device=grad.device)
        grad_bias = torch.empty(ctx.weight_shape[0], dtype=grad.dtype, device=grad.device) if ctx.has_bias else None
        _run_kernel("backward", grad.dtype, address(x), address(grad), address(y), address(grad_weight),
                    address(grad_bias), *_sizes(x, grad_weight, ctx.padding))
        return None, grad_weight, grad_bias, None, None
