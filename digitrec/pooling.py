"""Max pooling that reads channels-last maps faster when no gradient is wanted.

Every evaluation, prediction and explorer pass of a network with a 2 x 2 max
pool goes through PyTorch's ``max_pool2d``, which on the CPU always computes the
winners' indices as well, one window at a time: in TinyVGG's evaluation (batches
of 500, channels-last, 1 thread) it took a quarter of the time, more than
its two ReLUs together. Without a gradient no index is needed, and a 2 x 2
window's maximum is two elementwise maxima over the channels-last memory: first
of each pair of rows (contiguous runs of width x channels values), then of each
pair of neighbouring pixels. The result holds ``max_pool2d``'s values exactly (a
maximum is exact, and both pass a NaN on; only where a window ties 0 with -0 may
the sign of that zero differ); TinyVGG's evaluation of the 10,000
test digits took 1.12-1.22 s instead of 1.29-1.41 s (alternating, same process).

Training needs the winners for its backward pass. There PyTorch's kernel is slower
still: it keeps an int64 index per output and walks the windows one at a time, and
with TinyVGG's 10 channels (fewer than one vector register holds) both pools took
about a quarter of a training step. So a network in training mode, with a gradient
wanted, pools a channels-last bfloat16 or float32 CPU map with digitrec's C kernel
(``pooling.c``, compiled once per machine by digitrec.native): a pair of rows is
scanned as one contiguous run and each window's winner is kept as one byte. Values,
winners and gradients are PyTorch's bit for bit (ties go to the first maximum, NaN
to the last NaN, as in aten's kernel; only a NaN may carry other payload bits, as
PyTorch's own paths differ there; ``tests/test_pooling.py``). Measured on
TinyVGG's first pool (128 digits, 10 x 28 x 28, bfloat16, 1 thread): forward 0.36 ms
instead of 2.3-4.1, backward 0.55 instead of 0.64-1.2 (plus zero-filling), and a
whole training step 13-36 % shorter (six alternating rounds, the fastest of 30 steps
each, on a busy machine). Where a ReLU comes right before the pool (twice
in TinyVGG), ``relu_then_pool`` pools relu(x) in the same pass and its backward pass
stops the gradient where the output is <= 0, as the ReLU's would: SpecNet.forward
takes it in training unless a hook watches either module; on TinyVGG's first pool
the two passes took 1.6-1.8 ms instead of 2.7-3.0 (with autograd, forward and
backward). Without a compiler (or with DIGITREC_NATIVE=0)
training keeps ``max_pool2d``, as does any other window, stride, padding, layout,
type or device, and every pass in evaluation mode (Captum's gradients among them).
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



class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with faster paths for 2 x 2 windows on channels-last maps: two maxima in
    inference, pooling.c in training.

    The class keeps the name MaxPool2d: the explorers, the backward step-through and
    ``layers.layer_from_module`` read a layer's kind from its class name, and it is
    an ``nn.MaxPool2d`` for every ``isinstance`` check. Captum's DeepLift finds its
    max-pool rule by the exact class, so ``digitrec.attribution`` hands Captum
    a copy with ``use_torch_pools``.
    """

    def as_torch(self) -> nn.MaxPool2d:
        """PyTorch's own MaxPool2d with the same window, stride, padding, dilation and modes."""
        return nn.MaxPool2d(self.kernel_size, self.stride, self.padding, self.dilation,
                            return_indices=self.return_indices, ceil_mode=self.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            if self.training and self._pairs_of_pairs(x) and kernel_pools(x):
                return _KernelPool.apply(x, False)
            return super().forward(x)
        if not self._pairs_of_pairs(x):
            return super().forward(x)
        batch, channels, height, width = x.shape
        # (B, C, H, W) channels-last is (B, H, W, C) in memory: a pair of rows is two runs of W*C values.
        rows = x.permute(0, 2, 3, 1).reshape(batch * height // 2, 2, width * channels)
        row_max = torch.maximum(rows[:, 0], rows[:, 1])
        pixels = row_max.view(batch * height // 2 * width // 2, 2, channels)
        pooled = torch.maximum(pixels[:, 0], pixels[:, 1])
        return pooled.view(batch, height // 2, width // 2, channels).permute(0, 3, 1, 2)  # channels-last again

    def _pairs_of_pairs(self, x: torch.Tensor) -> bool:
        """Is this a 2 x 2, stride 2 pool without padding, dilation or ceil mode over even-sized
        channels-last maps of a batch (the case the two maxima and pooling.c compute)?"""
        window = (_pair(self.kernel_size), _pair(self.stride), _pair(self.padding), _pair(self.dilation))
        return (window == ((2, 2), (2, 2), (0, 0), (1, 1)) and not self.ceil_mode and not self.return_indices
                and x.dim() == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
                and x.is_contiguous(memory_format=torch.channels_last))


def kernel_pools(x: torch.Tensor) -> bool:
    """Can pooling.c pool ``x`` (a CPU tensor of a type it has kernels for, and the kernels built)?"""
    return (x.device.type == "cpu" and x.dtype in native.KERNEL_TYPES and x.numel() > 0
            and _kernels() is not None)


def relu_then_pool(relu: nn.Module, pool: nn.Module | None, x: torch.Tensor) -> torch.Tensor | None:
    """``pool(relu(x))`` in one pass of pooling.c, in training, where ``relu`` is PyTorch's ReLU and
    ``pool`` (None: nothing follows) would pool its output with the kernel, and no hook watches
    either (a hook would miss the ReLU's output, never made); else None, and the caller runs them.

    TinyVGG pools right after a ReLU twice: the fused pass saves the ReLU's pass over the whole
    map and its backward pass, with the same numbers (tested against the two modules)."""
    if not (type(relu) is nn.ReLU and not relu.inplace and isinstance(pool, MaxPool2d) and pool.training
            and torch.is_grad_enabled()
            and pool._pairs_of_pairs(x) and kernel_pools(x) and not watched([relu, pool])):
        return None
    return _KernelPool.apply(x, True)


def _kernels() -> ctypes.CDLL | None:
    return native.load("pooling")


def _run_kernel(direction: str, dtype: torch.dtype, *args) -> None:
    if getattr(_kernels(), f"pool_{direction}_{native.KERNEL_TYPES[dtype]}")(*args) != 0:
        raise MemoryError(f"max pooling ({direction}): out of memory for one row of the map")



def _sizes(shape: torch.Size) -> tuple[ctypes.c_int64, ...]:
    """(n, c, h, w) as pooling.c takes them: n, h, w, c."""
    batch, channels, height, width = shape
    return tuple(ctypes.c_int64(size) for size in (batch, height, width, channels))


class _KernelPool(torch.autograd.Function):
    """2 x 2, stride-2 max pooling of an even-sized channels-last map by pooling.c, forward and backward
    (of ``relu(x)`` when ``relu_first``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, relu_first: bool) -> torch.Tensor:
        batch, channels, height, width = x.shape
        # On x's device (the CPU), whatever torch.set_default_device says: the kernel writes through these.
        pooled = torch.empty((batch, channels, height // 2, width // 2), dtype=x.dtype, device=x.device,
                             memory_format=torch.channels_last)
        winners = torch.empty((batch, height // 2, width // 2, channels), dtype=torch.uint8,
                              device=x.device)  # 0-3 per window
        _run_kernel("forward", x.dtype, address(x), address(pooled), address(winners), *_sizes(x.shape),
                    ctypes.c_int(relu_first))
        # After a ReLU the backward pass reads the output (the ReLU passes no gradient where it is <= 0).
        ctx.save_for_backward(winners, pooled if relu_first else None)
        ctx.input_shape = x.shape
        return pooled

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        winners, pooled = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_input = torch.empty(ctx.input_shape, dtype=grad.dtype, device=grad.device,
                                 memory_format=torch.channels_last)
        # every input's gradient is written: its window's gradient where it won, else 0
        _run_kernel("backward", grad.dtype, address(grad), address(winners), address(pooled),
                    address(grad_input), *_sizes(ctx.input_shape))
        return grad_input, None


def use_torch_pools(model: nn.Module) -> nn.Module:
    """Put PyTorch's own MaxPool2d in place of each of ``model``'s (in place; returns ``model``)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MaxPool2d):
                setattr(parent, name, child.as_torch())
    return model
