"""Figures of a fooling edit and of what the networks say about noise."""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from digitrec.viz.scales import ACTIVATION_SCALE, INK_SCALE, PROBABILITY_COLOR, SECOND_COLOR


def edit_figure(original: torch.Tensor, edited: torch.Tensor, budget: float, titles: tuple[str, str, str],
                height: int = 300) -> go.Figure:
    """Original (28, 28), the change (edited - original, red = ink added, blue = removed, range ±budget), the edit."""
    change = (edited - original).detach()
    half = max(float(budget), 1e-6)
    # The gap after the change is wide enough for its colour bar and tick labels ("−0.05" ran into the edit).
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.09)
    bar_x = fig.layout.xaxis2.domain[1] + 0.005  # just right of the change
    for col, (z, scale, lo, hi) in enumerate(
        [(original, INK_SCALE, 0, 1), (change, ACTIVATION_SCALE, -half, half), (edited, INK_SCALE, 0, 1)], start=1
    ):
        fig.add_trace(go.Heatmap(
            z=z.detach().float().numpy(), colorscale=scale, zmin=lo, zmax=hi, showscale=col == 2,
            colorbar=dict(len=0.8, thickness=10, x=bar_x, xanchor="left") if col == 2 else None,
            hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>",
        ), row=1, col=col)
        fig.update_yaxes(scaleanchor=f"x{'' if col == 1 else col}", row=1, col=col)
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=30, b=4))
    return fig


def noise_answers_figure(counts: dict[str, torch.Tensor], height: int = 280) -> go.Figure:
    """How many noise images each network called each digit: network name -> (10,) counts."""
    fig = go.Figure()
    for i, (name, c) in enumerate(counts.items()):
        fig.add_trace(go.Bar(x=[str(d) for d in range(10)], y=c.tolist(), name=name,
                             marker_color=[PROBABILITY_COLOR, SECOND_COLOR][i % 2],
                             hovertemplate=name + ": %{y} images called %{x}<extra></extra>"))
    fig.update_layout(barmode="group", height=height, margin=dict(l=4, r=4, t=10, b=4),
                      xaxis=dict(title="answer", dtick=1), yaxis=dict(title="noise images"),
                      legend=dict(orientation="h", y=1.12))
    return fig
