"""Shift a digit a few pixels and measure how each network copes.

A convolution applies the same kernel everywhere, and pooling forgives small
moves, so TinyVGG's answer barely changes when the digit slides a little; a
fully connected network has a separate weight for every pixel and sees a
shifted digit as a different pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from digitrec.inspection import predict_proba

# How far a digit's reach is looked for, each way: 14 pixels takes a centred digit's centre to the frame's
# edge. TinyVGG kept reading sample 4 at 12 pixels and a few test digits at 14 (at 6, the limit before,
# it still read 9 of the 10 sample digits, so their failure never showed).
REACH_LIMIT = 14


def shift_digit(pixels: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move a (28, 28) digit ``dx`` pixels right and ``dy`` down; what leaves the frame is lost, new pixels are 0."""
    h, w = pixels.shape[-2:]
    out = torch.zeros_like(pixels)
    src_r = slice(max(0, -dy), min(h, h - dy))
    dst_r = slice(max(0, dy), min(h, h + dy))
    src_c = slice(max(0, -dx), min(w, w - dx))
    dst_c = slice(max(0, dx), min(w, w + dx))
    out[..., dst_r, dst_c] = pixels[..., src_r, src_c]
    return out


@dataclass(frozen=True)
class ShiftCurve:
    shifts: list[int]  # horizontal shifts in pixels, e.g. -6..6
    probability: dict[str, list[float]]  # network -> probability of ``target`` at each shift
    prediction: dict[str, list[int]]  # network -> predicted class at each shift
    target: int

    def robust_range(self, key: str) -> int:
        """How many pixels either way the network still predicts ``target`` (contiguous from 0)."""
        ok = dict(zip(self.shifts, (p == self.target for p in self.prediction[key])))
        reach = 0
        while ok.get(reach + 1) and ok.get(-(reach + 1)):
            reach += 1
        return reach if ok.get(0) else -1


def shift_curve(
    nets: dict[str, nn.Module], pixels: torch.Tensor, target: int, max_shift: int = REACH_LIMIT, axis: str = "x"
) -> ShiftCurve:
    """Each network's probability of ``target`` as the digit slides from -max_shift to +max_shift pixels."""
    shifts = list(range(-max_shift, max_shift + 1))
    batch = torch.stack(
        [shift_digit(pixels, s, 0) if axis == "x" else shift_digit(pixels, 0, s) for s in shifts]
    ).unsqueeze(1)  # (S, 1, 28, 28)
    probability, prediction = {}, {}
    for key, model in nets.items():
        p = predict_proba(model, batch)  # (S, 10)
        probability[key] = p[:, target].tolist()
        prediction[key] = p.argmax(dim=1).tolist()
    return ShiftCurve(shifts, probability, prediction, target)
