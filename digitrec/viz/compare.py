"""Figures that put the two networks side by side."""

from __future__ import annotations

import plotly.graph_objects as go

from digitrec.shift import ShiftCurve
from digitrec.viz.scales import PROBABILITY_COLOR, SECOND_COLOR


def shift_figure(curve: ShiftCurve, labels: dict[str, str], axis: str = "x", height: int = 340) -> go.Figure:
    """Probability of the target class against the shift in pixels, one line per network."""
    fig = go.Figure()
    for (key, probs), color in zip(curve.probability.items(), [PROBABILITY_COLOR, SECOND_COLOR, "#54A24B"]):
        fig.add_trace(
            go.Scatter(
                x=curve.shifts, y=probs, mode="lines+markers", name=labels.get(key, key),
                line=dict(color=color, width=3),
                customdata=curve.prediction[key],
                hovertemplate="shift %{x} px<br>P(" + str(curve.target) + ") = %{y:.1%}<br>predicts %{customdata}<extra>"
                + labels.get(key, key) + "</extra>",
            )
        )
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey")
    direction = "right" if axis == "x" else "down"
    fig.update_layout(
        height=height, margin=dict(l=4, r=4, t=10, b=4), legend=dict(orientation="h", y=1.1),
        xaxis=dict(title=f"shift in pixels (positive = {direction})", dtick=1),
        yaxis=dict(title=f"probability of {curve.target}", range=[0, 1.05], tickformat=".0%"),
    )
    return fig
