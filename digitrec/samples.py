"""Ten hand-made digits, 0 to 9, so the app has a digit to show with no dataset.

Each digit is written as code: strokes of points on a 280x280 canvas, the way
someone draws with the mouse on the app's canvas. They are rendered like the
canvas renders them (white lines about 20 px wide with round ends on black)
and then go through ``preprocess.to_mnist``, the same path a real drawing takes,
so a sample is exactly what a learner's own drawing of that digit would become.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from digitrec.preprocess import to_mnist

CANVAS_SIZE = 280  # the app's drawing canvas, and the strokes' coordinate system
STROKE_WIDTH = 20  # the canvas's default pen, in canvas pixels
# The samples use a slightly broader pen: MNIST's strokes are about 3 of its 20
# px tall digits wide, so a thin pen makes digits fainter than the model knows.
SAMPLE_WIDTH = 22
_SUPERSAMPLE = 4  # draw 4x larger, then shrink: smooth edges like a browser canvas

Point = tuple[float, float]
Stroke = list[Point]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """Points along an ellipse arc; angles in degrees, 0 = right, 90 = down (screen y),
    so an increasing angle turns clockwise on screen. About one point per 8 degrees."""
    n = max(2, int(abs(end - start) / 8) + 1)
    angles = np.radians(np.linspace(start, end, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _slant(stroke: Stroke, lean: float = 0.12, pivot_y: float = 140.0) -> Stroke:
    """Lean a stroke to the right as handwriting does: x grows towards the top."""
    return [(round(x + lean * (pivot_y - y), 1), round(y, 1)) for x, y in stroke]


def _strokes() -> dict[int, list[Stroke]]:
    raw: dict[int, list[Stroke]] = {
        # An oval started at the top, drawn anticlockwise, the end overlapping the start.
        0: [_arc(140, 140, 58, 92, -80, -80 - 370)],
        # A short lead-in flick, then the long down stroke.
        1: [[(112, 82), (132, 64), (152, 44), (150, 110), (147, 175), (145, 236)]],
        # The top hook, a diagonal down to the left, the base line.
        2: [
            _arc(138, 98, 54, 52, 195, 370)
            + [(170, 140), (130, 180), (88, 232), (140, 230), (206, 232)]
        ],
        # Two bumps, the lower one larger, joined in the middle.
        3: [_arc(134, 90, 48, 46, 205, 445) + _arc(136, 187, 56, 50, 265, 505)],
        # The open 4: down-left, across; then the upright.
        4: [
            [(148, 44), (118, 100), (84, 166), (140, 166), (208, 164)],
            [(176, 96), (172, 170), (168, 240)],
        ],
        # The upright and the bowl in one go; then the flag on top.
        5: [
            [(110, 50), (104, 90), (98, 130)] + _arc(140, 176, 58, 56, 225, 505),
            [(110, 48), (160, 47), (200, 46)],
        ],
        # A long curve down from the top right into a closed loop at the bottom.
        6: [_arc(200, 188, 110, 140, 262, 180) + _arc(138, 188, 48, 48, 180, 180 - 360)],
        # The bar, then a long diagonal down to the left.
        7: [[(82, 58), (140, 55), (204, 52), (170, 115), (140, 180), (120, 240)]],
        # The top loop, then the larger bottom loop.
        8: [_arc(140, 92, 42, 46, 0, 360), _arc(140, 184, 54, 50, -90, 270)],
        # The head drawn anticlockwise from its right side, then the stem.
        9: [_arc(134, 94, 48, 46, 0, -360) + [(182, 140), (178, 190), (174, 240)]],
    }
    return {d: [_slant(s) for s in strokes] for d, strokes in raw.items()}


SAMPLE_STROKES: dict[int, list[list[tuple[float, float]]]] = _strokes()


def render_strokes(
    strokes: list[list[tuple[float, float]]], size: int = CANVAS_SIZE, width: int = STROKE_WIDTH
) -> np.ndarray:
    """Draw strokes like the app's canvas: (size, size, 4) uint8 RGBA, white on opaque black.

    Points are in the 280x280 canvas's coordinates and are scaled to ``size``;
    ``width`` is the pen's width in output pixels. Lines have round ends and
    joints, and smooth (anti-aliased) edges.
    """
    big = size * _SUPERSAMPLE
    scale = big / CANVAS_SIZE
    pen = width * _SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    r = pen / 2
    for stroke in strokes:
        pts = [(x * scale, y * scale) for x, y in stroke]
        if len(pts) > 1:
            draw.line(pts, fill=255, width=pen, joint="curve")
        # PIL's lines end square (its "curve" joints are round): a disc on each end
        # gives the round pen of a canvas, and a lone point becomes a dot.
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    grey = np.asarray(img.resize((size, size), Image.Resampling.BOX))  # (size, size)
    rgba = np.empty((size, size, 4), np.uint8)
    rgba[..., :3] = grey[..., None]
    rgba[..., 3] = 255
    return rgba


@functools.lru_cache(maxsize=1)
def _sample_digits() -> dict[int, torch.Tensor]:
    return {
        d: to_mnist(render_strokes(strokes, width=SAMPLE_WIDTH))
        for d, strokes in SAMPLE_STROKES.items()
    }


def sample_digit(d: int) -> torch.Tensor:
    """The hand-made sample of digit ``d`` (0..9): (28, 28) float32 in [0, 1]."""
    if not isinstance(d, (int, np.integer)) or not 0 <= int(d) <= 9:
        raise ValueError(f"Sample digits are 0 to 9, got {d!r}.")
    return _sample_digits()[int(d)].clone()  # a clone: callers cannot change the cache


def sample_digits() -> dict[int, torch.Tensor]:
    """All ten samples, {digit: (28, 28) float32 in [0, 1]}; fresh copies each call."""
    return {d: t.clone() for d, t in _sample_digits().items()}
