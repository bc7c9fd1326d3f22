"""Figures of the training lab: each variant's validation curve, and the shift curve of trained networks."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from digitrec.history import EvalRow
from digitrec.viz.training import RACE_COLORS


def lab_curves_figure(series: Sequence[tuple[str, Sequence[EvalRow]]], *, height: int = 360) -> go.Figure:
    """Validation accuracy (solid) and training accuracy (dotted) against steps, one colour per variant.

    series: (variant label, its evaluations), each row with ``test_accuracy`` on the
    validation subset and ``train_accuracy`` on the training subset.
    """
    fig = go.Figure()
    for i, (label, evals) in enumerate(series):
        color = RACE_COLORS[i % len(RACE_COLORS)]
        fig.add_trace(go.Scatter(
            x=[e.step for e in evals], y=[e.val_accuracy for e in evals], mode="lines+markers", name=f"{label}: validation",
            line=dict(color=color, width=2.5), marker=dict(size=5), legendgroup=label,
            hovertemplate=label + "<br>step %{x}<br>validation accuracy %{y:.1%}<extra></extra>",
        ))
        trained = [e for e in evals if e.train_accuracy is not None]
        fig.add_trace(go.Scatter(
            x=[e.step for e in trained], y=[e.train_accuracy for e in trained], mode="lines", name=f"{label}: training",
            line=dict(color=color, width=1.5, dash="dot"), legendgroup=label,
            hovertemplate=label + "<br>step %{x}<br>training accuracy %{y:.1%}<extra></extra>",
        ))
    fig.update_xaxes(title_text="training step (batches)", rangemode="tozero")
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02])
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig


def shift_accuracy_figure(shifts: Sequence[int], curves: dict[str, Sequence[float]], *, digits: int,
                          height: int = 320) -> go.Figure:
    """Accuracy on test digits slid sideways by each shift, one line per network."""
    fig = go.Figure()
    for i, (label, accuracy) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(
            x=list(shifts), y=list(accuracy), mode="lines+markers", name=label,
            line=dict(color=RACE_COLORS[i % len(RACE_COLORS)], width=2.5), marker=dict(size=6),
            hovertemplate=label + "<br>moved %{x} px<br>accuracy %{y:.1%}<extra></extra>",
        ))
    fig.update_xaxes(title_text=f"pixels moved sideways ({digits:,} test digits)", dtick=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02])
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), hovermode="closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.01, x=0))
    return fig


def digits_row_figure(images, titles: Sequence[str], *, height: int = 170) -> go.Figure:
    """Several (28, 28) digits in [0, 1] side by side, greyscale, each with its title."""
    from plotly.subplots import make_subplots

    from digitrec.viz.scales import INK_SCALE

    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=list(titles), horizontal_spacing=0.01)
    for i, image in enumerate(images, start=1):
        fig.add_trace(go.Heatmap(z=image.detach().tolist(), colorscale=INK_SCALE, zmin=0, zmax=1, showscale=False,
                                 hovertemplate="row %{y}, col %{x}<br>ink %{z:.3f}<extra></extra>"), row=1, col=i)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", showticklabels=False,
                         showgrid=False, row=1, col=i)
        fig.update_xaxes(showticklabels=False, showgrid=False, constrain="domain", row=1, col=i)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=28, b=4))
    return fig
