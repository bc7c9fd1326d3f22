"""Softmax: from ten scores (logits) to ten probabilities, in numbers."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from digitrec.inspection import SoftmaxStep
from digitrec.viz.scales import PROBABILITY_COLOR


def softmax_figure(step: SoftmaxStep, highlight: int | None = None, height: int = 320) -> go.Figure:
    """Logits z_i on the left, probabilities exp(z_i)/sum_j exp(z_j) on the right.

    The highlighted class (default: the winner) is drawn in a stronger colour.
    """
    highlight = int(step.probs.argmax()) if highlight is None else highlight
    classes = [str(d) for d in range(len(step.logits))]
    colors = ["#E45756" if d == highlight else PROBABILITY_COLOR for d in range(len(classes))]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("scores (logits) z", "probabilities exp(z)/Σexp(z)"))
    fig.add_trace(
        go.Bar(x=classes, y=step.logits.tolist(), marker_color=colors, name="logit",
               hovertemplate="digit %{x}: z = %{y:.3f}<extra></extra>"),
        row=1, col=1,
    )
    fig.add_trace(
        go.Bar(x=classes, y=step.probs.tolist(), marker_color=colors, name="probability",
               text=[f"{p:.1%}" if p >= 0.005 else "" for p in step.probs.tolist()], textposition="outside",
               hovertemplate="digit %{x}: %{y:.4f}<extra></extra>"),
        row=1, col=2,
    )
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(dtick=1, title_text="digit")
    fig.update_layout(height=height, showlegend=False, margin=dict(l=4, r=4, t=30, b=4))
    return fig
