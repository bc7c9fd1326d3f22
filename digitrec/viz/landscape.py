"""The loss along one weight (``digitrec.landscape``), with the steps gradient descent took on it."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from digitrec.landscape import Slice, Step
from digitrec.viz.scales import PROBABILITY_COLOR, SECOND_COLOR

PATH_COLOR = "#E45756"


def loss_slice_figure(curve: Slice, path: Sequence[Step] = (), height: int = 380) -> go.Figure:
    """The loss curve over one weight; the trained value marked; the descent path as numbered points.

    Traces: "loss" (the curve), "trained weight" (one point), and, when ``path`` is
    given, "steps" (markers joined in order, numbered from 0).
    """
    ref = curve.ref
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=curve.values, y=curve.losses, mode="lines", name="loss", line=dict(color=PROBABILITY_COLOR, width=3),
        hovertemplate="weight %{x:.3f}<br>loss %{y:.4f}<extra></extra>",
    ))
    # The curve's point nearest the trained value (the slice is centred on it).
    nearest = min(range(len(curve.values)), key=lambda i: abs(curve.values[i] - curve.trained))
    trained_loss = curve.losses[nearest]
    fig.add_trace(go.Scatter(
        x=[curve.trained], y=[trained_loss], mode="markers", name="trained weight",
        marker=dict(color=SECOND_COLOR, size=12, symbol="diamond"),
        hovertemplate="the trained value %{x:.3f}<extra></extra>",
    ))
    if path:
        fig.add_trace(go.Scatter(
            x=[p.value for p in path], y=[p.loss for p in path], mode="lines+markers+text", name="steps",
            text=[str(i) for i in range(len(path))], textposition="top center",
            line=dict(color=PATH_COLOR, width=1.5, dash="dot"), marker=dict(color=PATH_COLOR, size=9),
            customdata=[p.slope for p in path],
            hovertemplate="weight %{x:.3f}<br>loss %{y:.4f}<br>slope %{customdata:.4f}<extra>step %{text}</extra>",
        ))
    top = max(curve.losses)
    if path:
        top = max(top, max(p.loss for p in path))
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=40, b=10),
        title=f"Loss as one weight moves: {ref.layer}.weight[{ref.row}, {ref.col}], all others fixed",
        xaxis_title="value of this one weight", yaxis_title="mean loss on the training digits",
        yaxis_range=[0, top * 1.08], legend=dict(orientation="h", y=-0.2),
    )
    return fig
