"""Figures of a training run: learning curves, first-layer weights, and the FC-vs-CNN race.

They read the plain history a run records (``digitrec.runs.RunProgress``):
``digitrec.history`` rows, ``StepRow`` per training step and ``EvalRow`` per evaluation.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from digitrec import config
from digitrec.history import EvalRow, StepRow
from digitrec.viz.scales import PROBABILITY_COLOR, SECOND_COLOR, WEIGHT_SCALE, symmetric_range

TRAIN_COLOR = "#9D9DA0"  # raw per-batch numbers: grey, behind the rest
TEST_COLOR = "#E45756"  # validation accuracy per epoch (all validation digits)
TRAIN_EVAL_COLOR = "#4C78A8"  # the fixed subset of training digits, measured like the validation digits
RACE_COLORS = (PROBABILITY_COLOR, SECOND_COLOR, "#54A24B", "#B279A2")
X_TITLES = {"step": "training step (batches)", "seconds": "training seconds (pauses and evaluation excluded)"}


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each position (fewer at the start); NaNs are skipped."""
    out, total, count, kept = [], 0.0, 0, []
    for v in values:
        kept.append(v)
        if not math.isnan(v):
            total, count = total + v, count + 1
        if len(kept) > window:
            old = kept.pop(0)
            if not math.isnan(old):
                total, count = total - old, count - 1
        out.append(total / count if count else math.nan)
    return out


def curves_figure(
    steps: Sequence[StepRow],
    evals: Sequence[EvalRow],
    epoch_results: Sequence[EvalRow] = (),
    *,
    x: str = "step",
    upto_step: int | None = None,
    x_max: float | None = None,
    eval_size: int = config.EVAL_SIZE,
    validation_size: int = config.VALIDATION_SIZE,
    train_eval_size: int | None = None,
    height: int = 500,
) -> go.Figure:
    """Training and validation loss (top) and accuracy (bottom) against steps or training seconds.

    steps: per-step rows; evals: evaluations on the validation subset (with the
    training subset's numbers beside them, when recorded); epoch_results: all
    validation digits per epoch. The test set appears nowhere: it is used once, at the end. ``x`` names the rows' field on the x axis: "step" or "seconds".
    ``upto_step`` draws only what was known at that step, with a line marking
    it, on an x axis that still spans the whole run (``x_max``), for replaying.
    """
    if x not in X_TITLES:
        raise ValueError(f"x must be one of {list(X_TITLES)}, got {x!r}")
    if upto_step is not None:
        steps = [s for s in steps if s.step <= upto_step]
        evals = [e for e in evals if e.step <= upto_step]
        epoch_results = [e for e in epoch_results if e.step <= upto_step]
    window = min(max(5, len(steps) // 30), max(len(steps), 1))  # a mean over ~3 % of the run
    xs = [getattr(s, x) for s in steps]
    losses = [s.loss for s in steps]
    accs = [s.accuracy for s in steps]

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14,
        subplot_titles=("loss (cross-entropy)", "accuracy"),
    )
    fig.add_trace(go.Scatter(
        x=xs, y=losses, mode="lines", name="loss of each batch", line=dict(color=TRAIN_COLOR, width=1),
        opacity=0.6, legendgroup="loss", hovertemplate=f"{x} %{{x:.4g}}<br>batch loss %{{y:.3f}}<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=xs, y=running_mean(losses, window), mode="lines", name=f"loss, mean of {window} batches",
        line=dict(color=PROBABILITY_COLOR, width=2.5), legendgroup="loss",
        hovertemplate=f"{x} %{{x:.4g}}<br>mean loss %{{y:.3f}}<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=xs, y=accs, mode="lines", name="accuracy on each batch", line=dict(color=TRAIN_COLOR, width=1),
        opacity=0.6, showlegend=False, hovertemplate=f"{x} %{{x:.4g}}<br>batch accuracy %{{y:.1%}}<extra></extra>",
    ), row=2, col=1)
    fig.add_trace(go.Scatter(
        x=xs, y=running_mean(accs, window), mode="lines", name=f"training accuracy, mean of {window} batches",
        line=dict(color=PROBABILITY_COLOR, width=2.5),
        hovertemplate=f"{x} %{{x:.4g}}<br>training accuracy %{{y:.1%}}<extra></extra>",
    ), row=2, col=1)
    measured = [e for e in evals if e.train_accuracy is not None]
    if measured:  # the training subset, measured exactly like the validation digits
        for row, field, what in ((1, "train_loss", "loss"), (2, "train_accuracy", "accuracy")):
            fig.add_trace(go.Scatter(
                x=[getattr(e, x) for e in measured], y=[getattr(e, field) for e in measured], mode="lines+markers",
                name=f"training {what} ({train_eval_size or eval_size:,} training digits)", legendgroup="train-eval",
                showlegend=row == 2, line=dict(color=TRAIN_EVAL_COLOR, width=2.5, dash="dot"), marker=dict(size=5),
                hovertemplate=f"{x} %{{x:.4g}}<br>training {what} %{{y:{'.3f' if row == 1 else '.2%'}}}<extra></extra>",
            ), row=row, col=1)
    fig.add_trace(go.Scatter(
        x=[getattr(e, x) for e in evals], y=[e.val_loss for e in evals], mode="lines+markers",
        name="validation loss", legendgroup="validation", showlegend=False,
        line=dict(color=SECOND_COLOR, width=2.5), marker=dict(size=5),
        hovertemplate=f"{x} %{{x:.4g}}<br>validation loss %{{y:.3f}}<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=[getattr(e, x) for e in evals], y=[e.val_accuracy for e in evals], mode="lines+markers",
        name=f"validation accuracy ({eval_size:,} held-out digits)", line=dict(color=SECOND_COLOR, width=2.5),
        legendgroup="validation",
        marker=dict(size=6), hovertemplate=f"{x} %{{x:.4g}}<br>validation accuracy %{{y:.2%}}<extra></extra>",
    ), row=2, col=1)
    fig.add_trace(go.Scatter(
        x=[getattr(e, x) for e in epoch_results], y=[e.val_accuracy for e in epoch_results], mode="markers",
        name=f"validation accuracy after each epoch (all {validation_size:,})",
        marker=dict(color=TEST_COLOR, size=12, symbol="diamond", line=dict(color="white", width=1)),
        customdata=[e.epoch for e in epoch_results],
        hovertemplate="epoch %{customdata}<br>" + f"{x} %{{x:.4g}}<br>validation accuracy %{{y:.2%}}<extra></extra>",
    ), row=2, col=1)
    if upto_step is not None and steps:
        here = steps[-1].seconds if x == "seconds" else upto_step
        for row in (1, 2):
            fig.add_vline(x=here, line=dict(color="#555", dash="dot", width=1), row=row, col=1)
    if x_max:
        fig.update_xaxes(range=[0, x_max * 1.02])
    fig.update_xaxes(title_text=X_TITLES[x], row=2, col=1)
    fig.update_yaxes(title_text="loss", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], row=2, col=1)
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=30, b=10), hovermode="closest",
        legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
    )
    return fig


def first_layer_figure(
    weights: torch.Tensor,
    *,
    architecture: str,
    total_units: int | None = None,
    zmax: float | None = None,
    columns: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """The first layer's weights as a grid of small images on one diverging scale.

    weights: (U, 28, 28) for FCNet (what each hidden neuron multiplies each pixel
    by) or (U, 3, 3) for TinyVGG (each first-layer filter). Orange is a positive
    weight (ink there raises the neuron), purple negative; white is 0.
    """
    units, side = weights.shape[0], weights.shape[-1]
    fc = architecture == "fcnet"
    cols = columns or min(units, max(1, math.ceil(math.sqrt(units))), 8)  # about square: 16 -> 4 x 4
    rows = math.ceil(units / cols)
    zmax = zmax or symmetric_range(weights)
    cell = side + (2 if fc else 1)  # one tile plus its gap, in grid cells
    width_cells = cols * cell - (cell - side)
    height_cells = rows * cell - (cell - side)
    # numpy arrays (not lists) go to the browser as compact typed arrays: this figure is redrawn every second.
    z = np.full((height_cells, width_cells), np.nan, dtype=np.float32)  # NaN: the gaps between tiles
    custom = np.zeros((height_cells, width_cells, 3), dtype=np.uint8)  # (unit number, row, col) for hover
    rr, cc = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    w = weights.detach().float().cpu().numpy()
    for u in range(units):
        top, left = (u // cols) * cell, (u % cols) * cell
        z[top : top + side, left : left + side] = w[u]
        custom[top : top + side, left : left + side] = np.stack([np.full_like(rr, u + 1), rr, cc], axis=-1)
    what = "neuron" if fc else "filter"
    fig = go.Figure(go.Heatmap(
        z=z, customdata=custom, colorscale=WEIGHT_SCALE, zmin=-zmax, zmax=zmax, zmid=0, hoverongaps=False,
        colorbar=dict(title=dict(text="weight", side="right"), thickness=12, len=0.9),
        hovertemplate=f"{what} %{{customdata[0]}}<br>row %{{customdata[1]}}, col %{{customdata[2]}}"
                      "<br>weight %{z:.4f}<extra></extra>",
        xgap=0, ygap=0,
    ))
    shown = f"first {units} of {total_units}" if total_units and total_units > units else f"all {units}"
    title = f"first layer: {shown} neurons' weights (28×28 each)" if fc else f"first layer: {shown} 3×3 filters"
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(
        title=dict(text=title, font=dict(size=13)), height=height or (60 + rows * (95 if fc else 60)),
        margin=dict(l=4, r=4, t=40, b=4), plot_bgcolor="white",
    )
    return fig


def race_figure(
    series: Sequence[tuple[str, Sequence[EvalRow]]],
    *,
    targets: Sequence[float] = config.RACE_TARGETS,
    zoom: bool = False,
    eval_size: int = config.EVAL_SIZE,
    height: int = 440,
) -> go.Figure:
    """Validation accuracy against training seconds, one line per network, with the targets marked.

    series: (network name, its validation-subset evaluations).
    ``zoom`` shows only 80-100 %, where the networks differ.
    """
    fig = go.Figure()
    for i, (name, evals) in enumerate(series):
        fig.add_trace(go.Scatter(
            x=[e.seconds for e in evals], y=[e.val_accuracy for e in evals], mode="lines+markers",
            name=name, line=dict(color=RACE_COLORS[i % len(RACE_COLORS)], width=2.5), marker=dict(size=5),
            customdata=[e.step for e in evals],
            hovertemplate=name + "<br>%{x:.1f} s (step %{customdata})<br>validation accuracy %{y:.2%}<extra></extra>",
        ))
    for t in targets:
        # On the full 0-100 % axis the targets' lines lie a few pixels apart: one label for them all, under
        # the lowest (labels of their own piled up on the 100 % tick); zoomed in, each line has room for its own.
        label = dict(annotation=dict(text=f"{t:.0%}", font=dict(size=10, color="#666")), annotation_position="left")
        fig.add_hline(y=t, line=dict(color="#888", dash="dot", width=1), **(label if zoom else {}))
    if targets and not zoom:
        fig.add_annotation(x=1, xref="paper", xanchor="right", y=min(targets), yanchor="top", showarrow=False,
                           text="targets " + " / ".join(f"{t * 100:.0f}" for t in sorted(targets)) + " %",
                           font=dict(size=10, color="#666"))
    fig.update_xaxes(title_text="training seconds (pauses and evaluation excluded)", rangemode="tozero")
    fig.update_yaxes(title_text=f"validation accuracy ({eval_size:,} held-out digits)", tickformat=".0%",
                     range=[0.8, 1.0] if zoom else [0, 1.02])
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=10, b=10), hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.01, x=0),
    )
    return fig
