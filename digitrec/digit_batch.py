"""Training batches gathered by a C kernel (``digit_batch.c``): the chosen digits scaled to [0, 1]
and their labels in one pass, the same numbers as PyTorch's four operations.

For FCNet 784-16-16-10 a batch of 128 took about 47 us in PyTorch (index_select of the images and
the labels, a cast, a division) against about 30 us here, most of the difference being memory
waits the kernel overlaps by prefetching rows ahead (``digit_batch.c`` says how); a one-epoch run
took 0.163 instead of 0.175 s, and 0.184 instead of 0.195 in a busier minute (1 thread, this
project's 2-core Xeon, alternating in one process). ``digitrec.data.batches``
uses it where it can and PyTorch's operations elsewhere (no compiler, ``DIGITREC_NATIVE=0``, digits
that are not contiguous uint8 on the CPU).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

from digitrec import native

Gather = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def gatherer(images: torch.Tensor, labels: torch.Tensor) -> Gather | None:
    """A function from row numbers (int64, each in 0..N-1) to the batch (x (B, 1, H, W) float32 in
    [0, 1], y (B,) int64) of ``images`` (N, H, W) uint8 and ``labels`` (N,) int64; None where the
    kernel cannot serve these tensors (the caller then uses PyTorch's operations)."""
    if not (images.dim() == 3 and labels.dim() == 1 and images.dtype == torch.uint8 and labels.dtype == torch.int64
            and images.device.type == "cpu" and labels.device.type == "cpu"
            and images.is_contiguous() and labels.is_contiguous() and len(images) == len(labels)):
        return None
    kernel = _kernel()
    if kernel is None:
        return None
    count, height, width = images.shape
    pixels = height * width

    def gather(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.to("cpu", torch.int64).contiguous()  # the kernel's layout (a no-op for a permutation's slice)
        x = torch.empty((len(rows), 1, height, width), dtype=torch.float32, device="cpu")
        y = torch.empty(len(rows), dtype=torch.int64, device="cpu")
        if kernel(images.data_ptr(), count, pixels, labels.data_ptr(), rows.data_ptr(), len(rows), x.data_ptr(),
                  y.data_ptr()) != 0:
            raise IndexError(f"a batch asked for a digit outside 0..{len(images) - 1}")
        return x, y

    return gather


def _kernel():
    library = native.load("digit_batch")
    return None if library is None else entry_point(library)


def entry_point(library: ctypes.CDLL):
    """``gather_digits`` of a compiled ``digit_batch.c``, its arguments declared: a call then passes plain ints
    (pointers and sizes) without wrapping each one first (a call of one row took 5.2 instead of 6.6 us)."""
    kernel = library.gather_digits
    kernel.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    kernel.restype = ctypes.c_int
    return kernel
