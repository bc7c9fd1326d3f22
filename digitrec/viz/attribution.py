"""Attribution maps as figures, and the few numbers that say how far to trust them.

An attribution (``digitrec.attribution.Attribution``) has the shape of the
input: one number per pixel. It is drawn on the diverging colour-blind-safe map
centred at zero (red: the pixel pushed the class score up; blue: down), either
alone or over the digit, which is drawn as grey ink on white paper so that the
red and blue stay readable on top of it.

Besides figures this module holds the two numbers the page reports with a map:
``completeness`` (how well the pixel scores add up to the change of the class
score, for the methods that promise it) and ``rank_correlation`` (Spearman's
rank correlation of two maps, for the sanity check of Adebayo et al. 2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from digitrec.attribution import Attribution
from digitrec.viz.digits import percent_sure
from digitrec.viz.scales import ACTIVATION_SCALE, symmetric_range

# The digit under an overlay: paper white (0) to mid-grey ink (1), so that the
# attribution's red and blue stay visible over the strokes.
OVERLAY_INK_SCALE = [[0.0, "#ffffff"], [1.0, "#8c8c8c"]]

# ColorBrewer RdBu (colour-blind safe, the same hues as ACTIVATION_SCALE) with
# an opacity that grows with |value|: zero is fully transparent, so the digit
# shows through wherever a pixel did not matter.
OVERLAY_SCALE = [
    [0.00, "rgba(5,48,97,0.95)"],
    [0.15, "rgba(33,102,172,0.85)"],
    [0.30, "rgba(67,147,195,0.60)"],
    [0.45, "rgba(146,197,222,0.20)"],
    [0.50, "rgba(247,247,247,0.0)"],
    [0.55, "rgba(244,165,130,0.20)"],
    [0.70, "rgba(214,96,77,0.60)"],
    [0.85, "rgba(178,24,43,0.85)"],
    [1.00, "rgba(103,0,31,0.95)"],
]

# Methods whose pixel scores carry a sign (red up, blue down). Saliency (the
# size of the gradient) and Grad-CAM (kept positive, as in the paper) do not.
SIGNED_METHODS = ("integrated_gradients", "gradient_shap", "deeplift", "occlusion")


def _upper_half(scale: list) -> list:
    """A diverging scale's half from its centre up, stretched over 0..1: white (no effect) to dark red."""
    return [[(position - 0.5) * 2, colour] for position, colour in scale if position >= 0.5]


ACTIVATION_UPPER = _upper_half(plotly.colors.get_colorscale(ACTIVATION_SCALE))
OVERLAY_UPPER = _upper_half(OVERLAY_SCALE)


def _domain(method: str, r: float, overlay: bool = False, prefix: str = "z") -> dict:
    """A map's colours: a signed method's on -r..r centred at 0 (blue, white, red); Saliency's and Grad-CAM's,
    never negative, on 0..r (white to red), so that their colour bar has no blue half no pixel could take.
    ``prefix``: "z" for a heatmap's own range (zmin, zmax, zmid), "c" for a shared colour axis's (cmin, ...)."""
    if method in SIGNED_METHODS:
        bounds = {f"{prefix}min": -r, f"{prefix}max": r, f"{prefix}mid": 0}
        return dict(**bounds, colorscale=OVERLAY_SCALE if overlay else ACTIVATION_SCALE)
    return {f"{prefix}min": 0, f"{prefix}max": r, "colorscale": OVERLAY_UPPER if overlay else ACTIVATION_UPPER}

# One or two sentences per method: what the colours mean and what to look for.
HOW_TO_READ: dict[str, str] = {
    "saliency": (
        "Saliency has no sign: red marks the pixels where a tiny change would move the score most, "
        "whether up or down. It is often speckled and can light up blank pixels the digit never touches."
    ),
    "integrated_gradients": (
        "Red pixels raised the score for the class, blue ones lowered it, and all of them together "
        "add up to how far the score rose from a blank canvas. Blank pixels get exactly zero: "
        "the method only credits ink."
    ),
    "gradient_shap": (
        "Read it like Integrated Gradients (red raised the score, blue lowered it); because the "
        "starting canvases are speckled, blank pixels can get small scores too."
    ),
    "deeplift": (
        "Read it like Integrated Gradients (red raised the score, blue lowered it). It needs a single "
        "backward pass instead of fifty, and its rules for ReLU and max-pooling give slightly different maps."
    ),
    "occlusion": (
        "Each pixel's colour is the average score drop over the 4 × 4 squares that covered it: red means "
        "hiding it hurt the class, blue means hiding it helped. It is blocky because the squares are."
    ),
    "grad_cam": (
        "A coarse map (14 × 14, stretched to 28 × 28) of where the last convolution found features that "
        "raise the class score. It is never negative: regions that argue against the class are cut to zero."
    ),
}


def legend_text(method: str, target: int) -> str:
    """What red and blue mean on a map of ``method`` for class ``target``, in one line."""
    if method == "saliency":
        return f"red: pixels where a small change moves the score for '{target}' most (saliency has no sign)."
    if method == "grad_cam":
        return f"red: regions whose features raised the score for '{target}' (Grad-CAM keeps only those)."
    return f"red: pixels that pushed towards '{target}'; blue: pixels that pushed away."


def _scale_words(method: str, target: int | None, short: bool = False) -> tuple[str, str]:
    """Tick labels for the two ends of the colour bar (target None: each map's own class)."""
    name = "its class" if target is None else f"'{target}'"
    if method == "saliency":
        return "", "sensitive" if short else "most sensitive"
    if method == "grad_cam":
        return "", f"raised {name}"
    return ("away", f"to {name}") if short else (f"away from {name}", f"towards {name}")


def _plane(values: torch.Tensor) -> torch.Tensor:
    """(…, H, W) -> (H, W): an attribution or a digit as one image."""
    return values.detach().reshape(values.shape[-2], values.shape[-1]).float()


def _colorbar(method: str, target: int | None, r: float, x: float = 0.5, length: float = 0.8) -> dict:
    """A horizontal colour bar under the maps whose ends say what the colours mean."""
    low, high = _scale_words(method, target, short=length < 0.5)
    ticks = dict(tickvals=[-r, 0, r], ticktext=[low, "0", high]) if method in SIGNED_METHODS else \
        dict(tickvals=[0, r], ticktext=["0", high])
    return dict(**ticks, orientation="h", y=-0.04, yanchor="top", x=x, xanchor="center", len=length, thickness=10)


def _square_axes(fig: go.Figure, n: int, side: int = 28) -> None:
    """Images: row 0 on top, square pixels, a thin frame, no ticks, for the first ``n`` subplots."""
    for i in range(1, n + 1):
        suffix = "" if i == 1 else str(i)
        frame = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False,
                     showline=True, mirror=True, linecolor="#d0d0d0", linewidth=1)
        # Fixed ranges (cell centres are 0..side-1) so the frame hugs the image.
        fig.layout[f"yaxis{suffix}"].update(range=[side - 0.5, -0.5], scaleanchor=f"x{suffix}", constrain="domain", **frame)
        fig.layout[f"xaxis{suffix}"].update(range=[-0.5, side - 0.5], constrain="domain", **frame)


def _heatmap(values: torch.Tensor, r: float, name: str, method: str, **kw) -> go.Heatmap:
    kw.setdefault("hovertemplate", "row %{y}, col %{x}<br>attribution %{z:.4f}<extra></extra>")
    return go.Heatmap(z=_plane(values).tolist(), name=name, **_domain(method, r), **kw)


def _outline(pixels: torch.Tensor, **kw) -> go.Contour:
    """The digit's outline (ink = 0.5) as a thin grey line, so a bare map still shows the digit."""
    return go.Contour(
        z=_plane(pixels).tolist(), contours=dict(start=0.5, end=0.5, size=1, coloring="none"),
        line=dict(color="rgba(60,60,60,0.55)", width=1), showscale=False, hoverinfo="skip", name="digit outline",
        **kw,
    )


def overlay_figure(pixels: torch.Tensor, attr: Attribution, title: str = "", height: int = 340) -> go.Figure:
    """The attribution alone (left) and over the digit (right), one colour scale centred at zero.

    pixels: the digit, (28, 28) or (1, 1, 28, 28), in [0, 1].
    attr: its attribution; values (1, 1, 28, 28). The trace named "attribution"
    holds exactly those values; the overlay trace holds them again on a scale
    whose centre is transparent, above a "digit" trace in grey.
    """
    r = symmetric_range(attr.values)
    ink = _plane(pixels)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("attribution", "over the digit"), horizontal_spacing=0.04)
    fig.add_trace(
        _heatmap(attr.values, r, "attribution", attr.method, colorbar=_colorbar(attr.method, attr.target, r)),
        row=1, col=1,
    )
    fig.add_trace(
        go.Heatmap(z=ink.tolist(), colorscale=OVERLAY_INK_SCALE, zmin=0, zmax=1, showscale=False, name="digit",
                   hoverinfo="skip"),
        row=1, col=2,
    )
    fig.add_trace(
        go.Heatmap(
            z=_plane(attr.values).tolist(), **_domain(attr.method, r, overlay=True), showscale=False,
            name="attribution overlay", customdata=ink.tolist(),
            hovertemplate="row %{y}, col %{x}<br>ink %{customdata:.2f}<br>attribution %{z:.4f}<extra></extra>",
        ),
        row=1, col=2,
    )
    _square_axes(fig, 2)
    fig.update_layout(
        title=title or None, height=height, margin=dict(l=4, r=4, t=50 if title else 28, b=56),
    )
    return fig


def reddest_class_sentence(attrs: list[Attribution], probs: torch.Tensor, predicted: int, network: str) -> str | None:
    """For Grad-CAM's ten maps on one scale: when the map with the most red is not the network's answer, one
    sentence on why that is no contradiction, with this digit's numbers; else None.

    probs: the network's (10,) probabilities for the digit. Grad-CAM keeps only what raised a class (the
    rest is cut to zero) and weighs each feature map by its gradient averaged over the positions, so a
    class's red area is not its score."""
    if not attrs or attrs[0].method != "grad_cam":
        return None
    red = {a.target: float(a.values.sum()) for a in attrs}
    reddest = max(red, key=red.get)
    if red[reddest] <= 0 or red[reddest] <= red.get(predicted, 0.0):  # no red at all (dead maps), or the answer's
        return None
    return (f"The most red is in the map of '{reddest}', a class {network} gives {percent_sure(probs[reddest])}, "
            f"against {percent_sure(probs[predicted])} for its answer, {predicted}. Grad-CAM draws only what raised "
            "a class and cuts what argued against it to zero, and it weighs each feature map by its gradient "
            "averaged over the whole map: how red a map is does not say how high the class scored.")


def classes_figure(
    pixels: torch.Tensor, attrs: list[Attribution], predicted: int | None = None, height: int = 440
) -> go.Figure:
    """One map per class, 2 rows of 5, on one shared scale so the classes compare.

    attrs: ``digitrec.attribution.all_classes`` output, in class order. Each
    map carries the digit's outline; the predicted class's title is marked.
    """
    r = symmetric_range([a.values for a in attrs])
    titles = [f"'{a.target}'" + (" (its answer)" if a.target == predicted else "") for a in attrs]
    fig = make_subplots(rows=2, cols=5, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.08)
    method = attrs[0].method if attrs else "saliency"
    for i, a in enumerate(attrs):
        row, col = divmod(i, 5)
        fig.add_trace(
            _heatmap(
                a.values, r, f"class {a.target}", method, showscale=i == 0,
                colorbar=_colorbar(method, None, r) if i == 0 else None,
                hovertemplate=f"class {a.target}<br>row %{{y}}, col %{{x}}<br>attribution %{{z:.4f}}<extra></extra>",
            ),
            row=row + 1, col=col + 1,
        )
        fig.add_trace(_outline(pixels), row=row + 1, col=col + 1)
    _square_axes(fig, len(attrs))
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=28, b=56), showlegend=False)
    return fig


def sanity_figure(
    pixels: torch.Tensor, trained: Attribution, randomized: Attribution, height: int = 380
) -> go.Figure:
    """The same method's map for the trained network (left) and for its randomised copy (right).

    Each map has its own colour scale (a random network's scores have another
    size); what to compare is the pattern, not the shade.
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("trained network", "same network, random weights"),
        horizontal_spacing=0.06,
    )
    for col, (a, axis, bar_x) in enumerate(((trained, "coloraxis", 0.22), (randomized, "coloraxis2", 0.78)), 1):
        fig.add_trace(
            go.Heatmap(
                z=_plane(a.values).tolist(), coloraxis=axis, name=("trained" if col == 1 else "randomized"),
                hovertemplate="row %{y}, col %{x}<br>attribution %{z:.4f}<extra></extra>",
            ),
            row=1, col=col,
        )
        fig.add_trace(_outline(pixels), row=1, col=col)
        r = symmetric_range(a.values)
        fig.layout[axis] = dict(**_domain(a.method, r, prefix="c"),
                                colorbar=_colorbar(a.method, a.target, r, x=bar_x, length=0.36))
    _square_axes(fig, 2)
    fig.update_annotations(yshift=6)  # subplot titles clear of the frames
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=34, b=56), showlegend=False)
    return fig


# ---------------------------------------------------------------- numbers shown with the maps


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array; tied values share the mean of their ranks."""
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # rank of the first element of each distinct value
    return (starts + (counts - 1) / 2.0)[inverse]


def rank_correlation(
    a: torch.Tensor, b: torch.Tensor, absolute: bool = True, where: torch.Tensor | None = None
) -> float:
    """Spearman's rank correlation of two maps of the same shape, in [-1, 1].

    absolute: compare |a| with |b| (importance, whatever the sign), as Adebayo
    et al. (2018) do. where: an optional boolean mask of the same shape; only
    those pixels are compared (e.g. the digit's ink). Ties get average ranks.
    NaN when either map is constant over the compared pixels (a flat map has
    no order to compare).
    """
    if a.shape != b.shape:
        raise ValueError(f"Maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}.")
    x = a.detach().double().flatten().numpy()
    y = b.detach().double().flatten().numpy()
    if where is not None:
        keep = where.detach().reshape(a.shape).flatten().bool().numpy()
        x, y = x[keep], y[keep]
    if absolute:
        x, y = np.abs(x), np.abs(y)
    if x.size < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum()) / denominator if denominator > 0 else float("nan")


@dataclass(frozen=True)
class Completeness:
    """How well an attribution's pixel scores add up to the change of the class score.

    All in logit units. change: F(x) - F(baseline), the target logit's rise
    from the blank canvas (for GradientSHAP: from the average baseline);
    total: the sum of the pixel scores; delta: total - change (Captum's
    convergence delta); relative: |delta| / |change|; small: relative <= the
    tolerance it was judged with.
    """

    delta: float
    total: float
    change: float
    relative: float
    small: bool


def completeness(attr: Attribution, tolerance: float = 0.01) -> Completeness | None:
    """The completeness check of ``attr``, or None for methods that promise no sum.

    Uses Captum's definition delta = sum(values) - (F(x) - F(baseline)), so
    the change of the logit is recovered as sum(values) - delta without
    running the model again.
    """
    if attr.delta is None:
        return None
    total = float(attr.values.double().sum())
    change = total - attr.delta
    relative = abs(attr.delta) / abs(change) if change != 0 else math.inf
    return Completeness(attr.delta, total, change, relative, relative <= tolerance)


def format_delta(delta: float) -> str:
    """A signed delta for display: 4 decimals, or scientific notation when it would read as 0.0000."""
    return f"{delta:+.4f}" if abs(delta) >= 5e-5 or delta == 0 else f"{delta:+.1e}"


def completeness_sentence(attr: Attribution, check: Completeness, architecture: str) -> str:
    """One or two plain sentences on what ``check`` says about ``attr`` (architecture: "fcnet"/"tinyvgg")."""
    head = (
        f"The pixel scores add up to {check.total:.3f}; the score for '{attr.target}' rose by "
        f"{check.change:.3f} from the blank canvas, a gap (delta) of {format_delta(check.delta)}, "
        f"{check.relative:.2%} of the change."
    )
    if attr.method == "gradient_shap":
        return head + (
            " For GradientSHAP the gap is the error of averaging a few random samples: "
            "a few percent is normal, and more samples shrink it."
        )
    if check.small:
        return head + (
            " That is small next to the change: the scores add up to the decision (completeness), so no part of "
            "the score change is missing from the map. That is arithmetic, not proof that the map shows what "
            "the network relies on: the sanity check (random weights) tests that."
        )
    if attr.method == "deeplift" and architecture == "tinyvgg":
        return head + (
            " DeepLIFT's scores do not add up exactly through TinyVGG's max-pooling: where the value that wins "
            "a pooling window is the same as on the blank canvas, Captum's max-pool rule has no difference to "
            "pass back and drops that window's change, so that part of the decision is missing from the map."
        )
    if attr.method == "integrated_gradients":
        return head + (
            " That gap is the error of approximating the fade-in with 50 steps: read the map's broad "
            "pattern, not single pixels."
        )
    return head + " That gap is not small next to the change: read the map's broad pattern, not single pixels."
