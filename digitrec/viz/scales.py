"""Colour scales and their ranges.

Diverging data (activations, weights, attributions) is drawn on a
colour-blind-safe diverging map centred at zero, with a range symmetric
around zero: white is 0, red is positive, blue is negative. Weights use a
different diverging map (purple-orange) so a learner never confuses "a weight"
with "an activation", as CNN Explainer does. Both maps are ColorBrewer's
colour-blind-safe ones.
"""

from __future__ import annotations

from typing import Iterable

import torch

ACTIVATION_SCALE = "RdBu_r"  # blue < 0 < red
WEIGHT_SCALE = "PuOr_r"  # purple < 0 < orange
INK_SCALE = "gray"  # a digit as the network sees it: 0 black, 1 white
PROBABILITY_COLOR = "#4C78A8"
SECOND_COLOR = "#F58518"  # the other network in side-by-side charts
# A bar chart's labels: plotly shrinks a label to its bar's width (a speck on a narrow bar); at least 9 px
# stays readable, shown even where it overhangs the bar.
READABLE_BAR_LABELS = dict(minsize=9, mode="show")


def symmetric_range(values: torch.Tensor | Iterable[torch.Tensor]) -> float:
    """The largest |value| over one tensor or several (the scale's half-width, never 0)."""
    if isinstance(values, torch.Tensor):
        values = [values]
    top = max((float(v.detach().abs().max()) for v in values if v.numel()), default=0.0)
    return top if top > 0 else 1.0


# ---------------------------------------------------------------- colour-scale scope (CNN explorer)

SCOPES = ("map", "layer", "network")  # CNN Explainer's "unit", "local" and "global" colour scales


def scoped_ranges(maps: dict[str, torch.Tensor], scope: str) -> dict[str, list[float]]:
    """Half-width of the symmetric colour range of every feature map, for one scope.

    maps: layer name -> (C, H, W) feature maps. Returns layer name -> C half-widths:
    "map" gives each map its own largest |value| (every map uses its full colour
    range: good for shapes, bad for comparing strengths); "layer" gives all maps of
    a layer the layer's largest |value|; "network" gives every map the largest
    |value| anywhere, so colours compare across layers.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope == "network":
        top = symmetric_range(list(maps.values()))
        return {name: [top] * m.shape[0] for name, m in maps.items()}
    if scope == "layer":
        return {name: [symmetric_range(m)] * m.shape[0] for name, m in maps.items()}
    return {name: [symmetric_range(channel) for channel in m] for name, m in maps.items()}
