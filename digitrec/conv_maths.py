"""The geometry of a convolution: padding, stride, kernel size and output size.

A k x k kernel slides over an n x n image padded with p zeros on every side,
moving s cells at a time. It fits (n + 2p - k) / s + 1 times along each side.
When (n + 2p - k) is not a multiple of s the last step would hang over the
edge, so PyTorch drops the leftover rows and columns (it rounds down);
CNN Explainer's hyperparameter view calls such a stride invalid. ``geometry``
says which case applies, ``convolve`` does the sliding sum by hand, and
``make_kernel`` gives the hand-made kernels (edge, blur, sharpen, ...) of the
lesson's sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from digitrec.errors import InvalidConfig

KERNEL_NAMES = ("edge", "blur", "sharpen", "vertical edge", "horizontal edge", "identity")
MAX_KERNEL = 7  # larger hand-made kernels only blur a 28 x 28 digit into a blob
MAX_PADDING = 3
MAX_STRIDE = 5


@dataclass(frozen=True)
class ConvGeometry:
    """Where a k x k kernel with stride s fits on an n x n image padded by p."""

    n: int  # input side
    k: int  # kernel side
    p: int  # zeros added on every side
    s: int  # stride
    padded: int  # n + 2p
    span: int  # n + 2p - k: how far the kernel's top-left corner travels
    out: int  # output side: span // s + 1
    fits: bool  # span is a multiple of s: the last window ends exactly at the edge
    leftover: int  # rows/columns at the bottom/right that no window reaches (span % s)

    @property
    def exact(self) -> float:
        """(n + 2p - k) / s + 1 before rounding down: a whole number only when the stride fits."""
        return self.span / self.s + 1


def output_size(n: int, k: int, p: int = 0, s: int = 1) -> int:
    """Output side of a k x k convolution with padding p and stride s on an n x n input:
    floor((n + 2p - k) / s) + 1, the same as torch.nn.Conv2d."""
    return geometry(n, k, p, s).out


def geometry(n: int, k: int, p: int = 0, s: int = 1) -> ConvGeometry:
    """The sizes of one convolution; InvalidConfig if the kernel cannot fit at all."""
    n, k, p, s = int(n), int(k), int(p), int(s)
    if n < 1 or k < 1 or s < 1 or p < 0:
        raise InvalidConfig(
            f"Input side and kernel size must be at least 1, stride at least 1 and padding at least 0 "
            f"(got n={n}, k={k}, p={p}, s={s})."
        )
    padded = n + 2 * p
    span = padded - k
    if span < 0:
        raise InvalidConfig(
            f"A {k} x {k} kernel does not fit on a {n} x {n} input padded to {padded} x {padded}: "
            "use a smaller kernel or more padding."
        )
    return ConvGeometry(n, k, p, s, padded, span, span // s + 1, span % s == 0, span % s)


def convolve(image: torch.Tensor, kernel: torch.Tensor, padding: int = 0, stride: int = 1, bias: float = 0.0) -> torch.Tensor:
    """Slide ``kernel`` (k, k) over ``image`` (H, W), summing kernel x patch at every stop.

    Written as the textbook loop over windows (cross-correlation, as deep
    learning libraries do, the kernel is not flipped) so a learner can read it;
    it equals torch.nn.functional.conv2d. Returns (out, out) with out from
    ``geometry``; a stride that does not fit drops the leftover border.
    """
    if image.dim() != 2 or kernel.dim() != 2 or image.shape[0] != image.shape[1] or kernel.shape[0] != kernel.shape[1]:
        raise InvalidConfig(
            f"convolve takes a square image and a square kernel, got {tuple(image.shape)} and {tuple(kernel.shape)}."
        )
    g = geometry(image.shape[0], kernel.shape[0], padding, stride)
    padded = F.pad(image, (g.p, g.p, g.p, g.p))  # (n + 2p, n + 2p), zeros around the border
    # Every k x k window the kernel stops at: (out, out, k, k).
    windows = padded.unfold(0, g.k, g.s).unfold(1, g.k, g.s)[: g.out, : g.out]
    return (windows * kernel.to(windows.dtype)).sum(dim=(-2, -1)) + bias  # (out, out)


def make_kernel(name: str, size: int = 3) -> torch.Tensor:
    """A hand-made (size, size) kernel, as image editors use them.

    edge: -1 everywhere, size² - 1 in the centre (sums to 0: flat regions give 0,
    outlines light up). blur: the average of the window (all 1/size²).
    sharpen: 2 x identity - blur (the centre stands out from its neighbours).
    vertical/horizontal edge: -1 on one side, +1 on the other (Sobel-like).
    identity: 1 in the centre (the output copies the input).
    For an even size the centre is the cell just below and right of the middle.
    """
    size = int(size)
    if not 1 <= size <= MAX_KERNEL:
        raise InvalidConfig(f"Kernel size must be from 1 to {MAX_KERNEL}, got {size}.")
    c = size // 2
    identity = torch.zeros(size, size)
    identity[c, c] = 1.0
    blur = torch.full((size, size), 1.0 / size**2)
    if name == "identity":
        return identity
    if name == "blur":
        return blur
    if name == "sharpen":
        return 2 * identity - blur
    if name == "edge":
        k = -torch.ones(size, size)
        k[c, c] = size**2 - 1
        return k
    if name in ("vertical edge", "horizontal edge"):
        k = torch.zeros(size, size)
        half = size // 2
        k[:, :half] = -1.0  # left columns
        k[:, size - half :] = 1.0  # right columns (the middle column of an odd kernel stays 0)
        return k if name == "vertical edge" else k.T.contiguous()
    raise InvalidConfig(f"Unknown kernel {name!r}; pick one of {', '.join(KERNEL_NAMES)}.")
