"""A digit as an image, and what the networks think it is."""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from digitrec.viz.scales import INK_SCALE, PROBABILITY_COLOR, READABLE_BAR_LABELS, SECOND_COLOR


def percent_sure(p: float, decimals: int = 0) -> str:
    """A network's confidence, a probability in [0, 1], as a percent with ``decimals`` decimals ("93%",
    or "92.9%" with 1) that never rounds up to certainty: one more decimal where the rounding would say
    100 (0.995 is "99.5%", not "100%", beside a card that says 99.5 %), then ">99.9%" (">99.99%" with 1),
    and 100 only for exactly 1."""
    p = float(p)
    if p >= 1.0:
        return f"{100:.{decimals}f}%"
    for places in (decimals, decimals + 1):
        text = f"{p:.{places}%}"
        if float(text[:-1]) < 100:
            return text
    return f">{100 - 10 ** -(decimals + 1):.{decimals + 1}f}%"


def digit_figure(pixels: torch.Tensor, title: str = "", height: int = 280, show_values: bool = False,
                 step: int = 1) -> go.Figure:
    """A (28, 28) digit in [0, 1] as a greyscale heatmap; hover shows row, column and value.

    ``step``: the pixels are every ``step``-th of a larger image's, in each direction; rows and
    columns (the hover, and anything drawn over it) are then that image's."""
    h, w = pixels.shape[-2], pixels.shape[-1]
    z = pixels.detach().reshape(h, w).tolist()
    at = {} if step == 1 else dict(x=list(range(0, w * step, step)), y=list(range(0, h * step, step)))
    fig = go.Figure(
        go.Heatmap(
            z=z, **at, colorscale=INK_SCALE, zmin=0, zmax=1, showscale=False,
            hovertemplate="row %{y}, col %{x}<br>ink %{z:.3f}<extra></extra>",
            texttemplate="%{z:.1f}" if show_values else None,
            textfont={"size": 7},
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False, showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False, constrain="domain")
    fig.update_layout(title=title or None, height=height, margin=dict(l=4, r=4, t=30 if title else 4, b=4))
    return fig


def probabilities_figure(probs: dict[str, torch.Tensor], height: int = 300) -> go.Figure:
    """Ten class probabilities per network, grouped bars side by side.

    probs: network label -> (10,) probabilities.
    """
    colors = [PROBABILITY_COLOR, SECOND_COLOR, "#54A24B", "#B279A2"]
    fig = go.Figure()
    for i, (label, p) in enumerate(probs.items()):
        p = p.detach().flatten()
        fig.add_trace(
            go.Bar(
                name=label, x=[str(d) for d in range(10)], y=p.tolist(),
                marker_color=colors[i % len(colors)],
                text=[percent_sure(v) if v >= 0.01 else "" for v in p.tolist()], textposition="outside",
                hovertemplate=label + "<br>digit %{x}: %{y:.2%}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group", height=height, yaxis=dict(range=[0, 1.15], tickformat=".0%", title="probability"),
        xaxis=dict(title="digit", dtick=1), margin=dict(l=4, r=4, t=10, b=4), legend=dict(orientation="h", y=1.12),
    )
    if len(probs) > 1:
        # Two networks' bars side by side are too narrow for "99.5%" across: plotly shrank it to a speck, and
        # at a readable size two such labels ran into each other. Upright, inside the bar's top (above a
        # bar too short to hold it), each label keeps to its own bar.
        fig.update_traces(textposition="auto", textangle=-90, insidetextanchor="end", insidetextfont=dict(color="white"))
        fig.update_layout(uniformtext=READABLE_BAR_LABELS)
    return fig
