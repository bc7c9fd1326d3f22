"""Drawn digits to judge a network on: the sample strokes, drawn thin, thick, slanted, turned and off-centre.

MNIST's test digits are written like its training digits (scanned pens, then
centred by the same recipe); a learner's mouse drawing is not. To measure how
well a network reads drawings, this module makes its own: the ten hand-made
stroke sets of ``digitrec.samples``, each varied the way people vary when they
draw with a mouse, rendered like the app's canvas and put through
``preprocess.to_mnist``, the path a real drawing takes. None of them is an
MNIST digit, so a network cannot have seen them.

The variations (each digit gets every combination of the first three):
- pen: thin (10 px on the 280 px canvas), the canvas's default (20), thick (32);
- slant: leaning left, as drawn, leaning far right;
- turn: the whole digit turned 15 degrees either way, or not;
- shape: squeezed narrow or stretched wide (default pen, as drawn);
- off-centre: the preprocessed digit 2 pixels off in each direction, as when the
  centre of mass lands away from where a network expects the digit.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from digitrec.preprocess import to_mnist
from digitrec.samples import CANVAS_SIZE, SAMPLE_STROKES, Stroke, render_strokes
from digitrec.shift import shift_digit

PENS = {"thin pen": 10, "default pen": 20, "thick pen": 32}
SLANTS = {"leaning left": -0.25, "as drawn": 0.0, "leaning right": 0.35}
TURNS = {"turned left": -15.0, "upright": 0.0, "turned right": 15.0}
SHAPES = {"narrow": (0.55, 1.0), "wide": (1.0, 0.6)}  # (x scale, y scale) about the canvas centre
OFF_CENTRE = {"2 px left": (-2, 0), "2 px right": (2, 0), "2 px up": (0, -2), "2 px down": (0, 2)}


@dataclass(frozen=True)
class DrawnDigits:
    """images: (N, 28, 28) float32 in [0, 1]; labels: (N,) int64; kinds: N names of the variation."""

    images: torch.Tensor
    labels: torch.Tensor
    kinds: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _transform(stroke: Stroke, *, slant: float = 0.0, turn: float = 0.0, scale=(1.0, 1.0)) -> Stroke:
    """A stroke leaned by ``slant`` (x grows towards the top), turned by ``turn`` degrees
    clockwise on screen and scaled, all about the canvas centre."""
    c = CANVAS_SIZE / 2
    a = math.radians(turn)
    out = []
    for x, y in stroke:
        x, y = x - c, y - c
        x = x - slant * y  # y grows downwards: leaning right moves the top (y < 0) right
        x, y = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
        out.append((c + x * scale[0], c + y * scale[1]))
    return out


RENDER_SIZE = 140  # half the canvas: 4x faster to draw, and to_mnist shrinks it to 20 px anyway


def _draw(digit: int, pen: int, **change) -> torch.Tensor:
    strokes = [_transform(s, **change) for s in SAMPLE_STROKES[digit]]
    pen_px = round(pen * RENDER_SIZE / CANVAS_SIZE)
    return to_mnist(render_strokes(strokes, size=RENDER_SIZE, width=pen_px))  # (28, 28) float32


@functools.lru_cache(maxsize=1)
def drawn_digits() -> DrawnDigits:
    """Every variation of every digit (330 drawings; a few seconds the first time, then cached)."""
    images, labels, kinds = [], [], []

    def add(image: torch.Tensor, digit: int, kind: str) -> None:
        images.append(image)
        labels.append(digit)
        kinds.append(kind)

    for d in range(10):
        for pen_name, pen in PENS.items():
            for slant_name, slant in SLANTS.items():
                for turn_name, turn in TURNS.items():
                    add(_draw(d, pen, slant=slant, turn=turn), d, f"{pen_name}, {slant_name}, {turn_name}")
        for shape_name, scale in SHAPES.items():
            add(_draw(d, PENS["default pen"], scale=scale), d, shape_name)
        plain = _draw(d, PENS["default pen"])
        for off_name, (dx, dy) in OFF_CENTRE.items():
            add(shift_digit(plain, dx, dy), d, off_name)
    return DrawnDigits(torch.stack(images), torch.tensor(labels), tuple(kinds))


def accuracy(model: nn.Module, drawn: DrawnDigits | None = None) -> float:
    """The fraction (0..1) of the drawn digits ``model`` reads right."""
    from digitrec.inspection import predict_proba

    drawn = drawn or drawn_digits()
    probs = predict_proba(model, drawn.images.unsqueeze(1))  # (N, 10)
    return float((probs.argmax(dim=1) == drawn.labels).float().mean())


def accuracy_by_variation(model: nn.Module, drawn: DrawnDigits | None = None) -> dict[str, float]:
    """Accuracy per kind of variation: each pen, slant and turn (over the others), each shape, off-centre."""
    from digitrec.inspection import predict_proba

    drawn = drawn or drawn_digits()
    right = (predict_proba(model, drawn.images.unsqueeze(1)).argmax(dim=1) == drawn.labels).tolist()
    groups: dict[str, list[bool]] = {}
    for ok, kind in zip(right, drawn.kinds):
        names = kind.split(", ") if ", " in kind else ["off-centre" if kind in OFF_CENTRE else kind]
        for name in names:
            groups.setdefault(name, []).append(ok)
    return {name: sum(oks) / len(oks) for name, oks in groups.items()}
