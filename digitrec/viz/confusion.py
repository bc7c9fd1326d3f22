"""The confusion matrix, and a grid of the digits in one of its cells."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch

from digitrec.viz.scales import INK_SCALE

# Sequential (counts are never negative), colour-blind safe, light = few.
COUNT_SCALE = "Blues"
HIGHLIGHT_COLOR = "#F58518"


def confusion_figure(
    cm: torch.Tensor, title: str = "", highlight: tuple[int, int] | None = None, height: int = 470
) -> go.Figure:
    """(10, 10) counts as a heatmap: true class on rows (top to bottom), predicted on columns.

    The colour scale stops at the largest *mistake* count, so the few hundred
    correct digits on the diagonal all show as the darkest colour and the
    off-diagonal mistakes stay visible; every cell also prints its count.
    ``highlight`` = (true, predicted) draws a frame around that cell.
    """
    counts = cm.detach().long()
    n = counts.shape[0]
    off = counts.clone()
    off.fill_diagonal_(0)
    top_mistake = max(int(off.max()), 1)
    row_totals = counts.sum(dim=1).clamp(min=1)  # (10,)
    share = (counts.double() / row_totals[:, None]).tolist()  # share of each true class
    labels = [str(d) for d in range(n)]
    fig = go.Figure(
        go.Heatmap(
            z=counts.tolist(), x=labels, y=labels, customdata=share,
            colorscale=COUNT_SCALE, zmin=0, zmax=top_mistake,
            texttemplate="%{z}", textfont={"size": 12},
            colorbar=dict(title=dict(text="digits", side="top"), thickness=12, len=0.8),
            hovertemplate=(
                "true %{y}, predicted %{x}<br>%{z} digits"
                "<br>%{customdata:.2%} of the true %{y}s<extra></extra>"
            ),
            hoverinfo="skip", xgap=1, ygap=1,
        )
    )
    # Heatmaps cannot be selected in plotly, so an invisible marker on each cell
    # takes the click (an app can read which cell was picked) and shows the hover.
    cells = [(t, p) for t in range(n) for p in range(n)]
    fig.add_trace(
        go.Scatter(
            x=[labels[p] for _, p in cells], y=[labels[t] for t, _ in cells], mode="markers",
            marker=dict(symbol="square", size=28, opacity=0), showlegend=False, name="cells",
            customdata=[[int(counts[t, p]), share[t][p]] for t, p in cells],
            hovertemplate=(
                "true %{y}, predicted %{x}<br>%{customdata[0]} digits"
                "<br>%{customdata[1]:.2%} of the true %{y}s<extra></extra>"
            ),
        )
    )
    if highlight is not None:
        t, p = highlight
        fig.add_shape(
            type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5,
            line=dict(color=HIGHLIGHT_COLOR, width=4), xref="x", yref="y",
        )
    fig.update_xaxes(title="the network's answer", side="top", tickmode="array", tickvals=labels, constrain="domain")
    fig.update_yaxes(title="true digit", autorange="reversed", tickmode="array", tickvals=labels,
                     scaleanchor="x", constrain="domain")
    fig.update_layout(
        title=dict(text=title, y=0.99, yanchor="top") if title else None,
        height=height, margin=dict(l=10, r=10, t=80 if title else 40, b=10),
        clickmode="event+select",
    )
    return fig


def digit_grid_figure(
    images: torch.Tensor,
    captions: list[str],
    hovers: list[str] | None = None,
    columns: int = 6,
    highlight: int | None = None,
    tile_px: int = 90,
) -> go.Figure:
    """K digits (K, 28, 28) in [0, 1] as a mosaic of thumbnails, a caption above each.

    Each tile is a small heatmap of its own, placed on one shared pair of axes, whose hover
    shows its ``hovers`` text. (One heatmap of the whole mosaic needed that text once per
    pixel: 4 MB of JSON for 40 digits on every rerun, now 0.2 MB.) Captions may have
    several lines ("<br>"); ``tile_px`` is the height of a digit on screen. ``highlight``
    frames the tile with that position.
    """
    k = int(images.shape[0])
    caption_lines = max((c.count("<br>") + 1 for c in captions), default=1)
    size = int(images.shape[-1])
    gap = 2  # empty pixels between tiles
    caption_rows = 3 + 6 * caption_lines  # room above each tile for its caption, in image pixels
    cols = max(1, min(columns, k))
    rows = max(1, math.ceil(k / cols))
    cell_w, cell_h = size + gap, size + caption_rows
    hovers = hovers or captions
    traces, annotations = [], []
    for i in range(k):
        r, c = divmod(i, cols)
        top, left = r * cell_h + caption_rows, c * cell_w
        # Plain dicts: the figure checks them once (a go.Heatmap each would check them twice).
        traces.append(dict(
            type="heatmap", z=np.round(images[i].detach().reshape(size, size).numpy().astype(np.float64), 3).tolist(),
            x0=left, dx=1, y0=top, dy=1, colorscale=INK_SCALE, zmin=0, zmax=1, showscale=False,
            # The text as data, not as the template: a network's name may come from a file name ("%{x}").
            meta=[hovers[i]], hovertemplate="%{meta[0]}<extra></extra>", name=f"digit {i}",
        ))
        annotations.append(dict(
            x=left + (size - 1) / 2, y=top - 1, text=captions[i], showarrow=False,
            xref="x", yref="y", yanchor="bottom", font=dict(size=10), align="center",
        ))
    shapes = []
    if highlight is not None and 0 <= highlight < k:
        r, c = divmod(highlight, cols)
        top, left = r * cell_h + caption_rows, c * cell_w
        shapes.append(dict(type="rect", x0=left - 0.5, x1=left + size - 0.5, y0=top - 0.5, y1=top + size - 0.5,
                           line=dict(color=HIGHLIGHT_COLOR, width=3), xref="x", yref="y"))
    return go.Figure(data=traces, layout=dict(
        annotations=annotations, shapes=shapes, height=int(rows * tile_px * cell_h / size) + 10,
        margin=dict(l=4, r=4, t=4, b=4), plot_bgcolor="rgba(0,0,0,0)",
        # The whole mosaic in view, square pixels; spare height goes below the grid, not above it.
        xaxis=dict(visible=False, constrain="domain", range=[-0.5, cols * cell_w - gap - 0.5]),
        yaxis=dict(range=[rows * cell_h - 0.5, -0.5], scaleanchor="x", visible=False, constrain="domain",
                   constraintoward="top"),
    ))
