"""Figures of the fully connected network: the digit as numbers, flattening,
weighted sums, one neuron's weights and products, every first-layer neuron's
weight image, and the network as columns of coloured dots.

Signed data is drawn on the diverging scales of ``digitrec.viz.scales``,
symmetric around zero: weights on WEIGHT_SCALE (purple < 0 < orange),
activations and products on ACTIVATION_SCALE (blue < 0 < red).
"""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from digitrec.data import IMAGE_SIZE
from digitrec.fc_maths import NeuronSum
from digitrec.viz.scales import ACTIVATION_SCALE, INK_SCALE, WEIGHT_SCALE, symmetric_range

POSITIVE_COLOR = "#D6604D"  # the red end of RdBu: a positive activation
NEGATIVE_COLOR = "#4393C3"  # the blue end: a negative one
HIGHLIGHT_COLOR = "#E45756"
MAX_LABELLED = 32  # wider layers get bars without printed numbers (hover still shows them)


def _image_axes(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    """Square pixels, row 0 at the top, no tick labels."""
    kw = {} if row is None else {"row": row, "col": col}
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, constrain="domain", **kw)
    fig.update_yaxes(autorange="reversed", showticklabels=False, ticks="", showgrid=False, zeroline=False, **kw)


def _square(fig: go.Figure, axis_number: int) -> None:
    """Make subplot ``axis_number``'s pixels square (y follows x)."""
    suffix = "" if axis_number == 1 else str(axis_number)
    fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"


# ---------------------------------------------------------------- the input


def digit_numbers_figure(pixels: torch.Tensor, height: int = 640) -> go.Figure:
    """The (28, 28) digit as grey cells with each non-zero ink value printed in it (one decimal)."""
    values = pixels.detach().reshape(IMAGE_SIZE, IMAGE_SIZE)
    # Two decimals without the leading zero (".93", "1") so three characters fit a cell; 0 stays blank.
    text = [[("1" if v >= 0.995 else f"{v:.2f}"[1:]) if v >= 0.005 else "" for v in row] for row in values.tolist()]
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(), text=text, texttemplate="%{text}",
            textfont={"size": max(6, height // 70)},
            colorscale=INK_SCALE, zmin=0, zmax=1,
            colorbar=dict(title="ink", len=0.6, thickness=12),
            hovertemplate="row %{y}, col %{x}<br>ink %{z:.3f}<extra></extra>",
        )
    )
    _image_axes(fig)
    _square(fig, 1)
    fig.update_xaxes(showticklabels=True, dtick=4, side="top")
    fig.update_yaxes(showticklabels=True, dtick=4)
    fig.update_layout(height=height, margin=dict(l=30, r=10, t=30, b=10))
    return fig


def flatten_figure(pixels: torch.Tensor, row: int = 14, col: int = 14, height: int = 680) -> go.Figure:
    """The 28 x 28 grid becoming one strip of 784 numbers, row after row.

    Top: the image with image row ``row`` framed and the pixel (row, col) and its
    four neighbours marked. Middle: all 784 values; the framed row is positions
    28*row .. 28*row + 27. Bottom: a close-up of rows row-1, row, row+1 in the
    strip, where the pixels just above and below the marked one lie 28 places away.
    """
    side = IMAGE_SIZE
    img = pixels.detach().reshape(side, side)
    flat = img.reshape(-1)  # (784,) row by row, as nn.Flatten does
    row = min(max(row, 0), side - 1)
    col = min(max(col, 0), side - 1)
    first, last = max(row - 1, 0), min(row + 1, side - 1)  # the close-up's rows
    lo, hi = first * side, (last + 1) * side  # its strip positions [lo, hi)
    fig = make_subplots(
        rows=3, cols=1, row_heights=[0.58, 0.12, 0.3], vertical_spacing=0.11,
        subplot_titles=(
            "the digit: 28 rows of 28 pixels",
            "flattened: 784 numbers in one line (row 0, then row 1, …)",
            f"close-up of positions {lo}–{hi - 1}: rows {first} to {last} laid end to end",
        ),
    )
    hover_img = "row %{y}, col %{x}<br>ink %{z:.3f}<extra></extra>"
    fig.add_trace(
        go.Heatmap(z=img.tolist(), colorscale=INK_SCALE, zmin=0, zmax=1, showscale=False, hovertemplate=hover_img),
        row=1, col=1,
    )
    index_text = [[f"position {r * side + c}" for c in range(side)] for r in range(side)]
    fig.data[0].text = index_text
    fig.data[0].hovertemplate = "row %{y}, col %{x} → %{text}<br>ink %{z:.3f}<extra></extra>"
    fig.add_trace(
        go.Heatmap(z=[flat.tolist()], colorscale=INK_SCALE, zmin=0, zmax=1, showscale=False,
                   hovertemplate="position %{x}<br>ink %{z:.3f}<extra></extra>"),
        row=2, col=1,
    )
    close = flat[lo:hi]
    fig.add_trace(
        go.Heatmap(z=[close.tolist()], x=list(range(lo, hi)), colorscale=INK_SCALE, zmin=0, zmax=1, showscale=False,
                   hovertemplate="position %{x}<br>ink %{z:.3f}<extra></extra>"),
        row=3, col=1,
    )
    _image_axes(fig, 1, 1)
    _square(fig, 1)
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, row=2, col=1)
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False, row=3, col=1)
    fig.update_xaxes(range=[-0.5, side * side - 0.5], tickvals=[r * side for r in range(0, side, 4)],
                     showgrid=False, zeroline=False, row=2, col=1)
    fig.update_xaxes(range=[lo - 0.5, hi - 0.5], tickvals=[r * side for r in range(first, last + 1)] + [hi - 1],
                     showgrid=False, zeroline=False, row=3, col=1)

    frame = dict(type="rect", line=dict(color="#F58518", width=2), fillcolor="rgba(0,0,0,0)")
    # The framed row: in the image, and where it went in the full strip and in the close-up.
    fig.add_shape(**frame, x0=-0.5, x1=side - 0.5, y0=row - 0.5, y1=row + 0.5, row=1, col=1)
    fig.add_shape(**frame, x0=row * side - 0.5, x1=(row + 1) * side - 0.5, y0=-0.5, y1=0.5, row=2, col=1)
    fig.add_shape(**frame, x0=row * side - 0.5, x1=(row + 1) * side - 0.5, y0=-0.5, y1=0.5, row=3, col=1)
    # Row boundaries in the close-up.
    for r in range(first + 1, last + 1):
        fig.add_shape(type="line", x0=r * side - 0.5, x1=r * side - 0.5, y0=-0.5, y1=0.5,
                      line=dict(color="#cccccc", width=1, dash="dot"), row=3, col=1)

    # The marked pixel (green) and its neighbours (cyan): side by side in the image, far apart in the strip.
    neighbours = [(r, c) for r, c in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1))
                  if 0 <= r < side and 0 <= c < side]
    marker = dict(symbol="square-open", size=11, line=dict(width=2.5))
    fig.add_trace(go.Scatter(x=[c for _, c in neighbours], y=[r for r, _ in neighbours], mode="markers",
                             marker=dict(color="#17BECF", **marker), name="its neighbours", hoverinfo="skip"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=[col], y=[row], mode="markers", marker=dict(color="#54A24B", **marker),
                             name=f"pixel ({row}, {col})", hoverinfo="skip"), row=1, col=1)
    here = row * side + col
    near = [r * side + c for r, c in neighbours]
    # Only the far neighbours (above, below) get a number: the left and right ones are plainly adjacent.
    near_text = [str(i) if abs(i - here) > 1 else "" for i in near]
    fig.add_trace(go.Scatter(x=near, y=[0] * len(near), mode="markers+text", text=near_text,
                             textposition="bottom center", textfont=dict(size=13),
                             marker=dict(color="#17BECF", **marker), showlegend=False, hoverinfo="skip"),
                  row=3, col=1)
    fig.add_trace(go.Scatter(x=[here], y=[0], mode="markers+text", text=[str(here)], textposition="top center",
                             textfont=dict(size=13), marker=dict(color="#54A24B", **marker), showlegend=False,
                             hoverinfo="skip"),
                  row=3, col=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.04, x=0))
    return fig


# ---------------------------------------------------------------- a layer's values


def vector_figure(
    values: torch.Tensor, before: torch.Tensor | None = None, labels: Sequence[str] | None = None,
    axis_title: str = "neuron", value_title: str = "value", highlight: int | None = None, height: int = 320,
) -> go.Figure:
    """A layer's values as bars, red above zero and blue below.

    ``before``: the values before this step (for ReLU), drawn as hollow bars
    behind, so the zeroed ones show. Up to 32 values get their numbers printed;
    a wider layer is drawn the same way without them (hover shows each).
    """
    values = values.detach().flatten()
    n = values.numel()
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    colors = [POSITIVE_COLOR if v > 0 else NEGATIVE_COLOR if v < 0 else "#999999" for v in values.tolist()]
    if highlight is not None:
        colors[highlight] = HIGHLIGHT_COLOR
    fig = go.Figure()
    if before is not None:
        before = before.detach().flatten()
        fig.add_trace(go.Bar(
            x=labels, y=before.tolist(), name="before", marker=dict(color="rgba(0,0,0,0)",
            line=dict(color="#888888", width=1.5)), hovertemplate=axis_title + " %{x}: before %{y:.4f}<extra></extra>",
        ))
    fig.add_trace(go.Bar(
        x=labels, y=values.tolist(), name="after" if before is not None else value_title, marker_color=colors,
        text=[f"{v:.2f}" for v in values.tolist()] if n <= MAX_LABELLED else None,
        textposition="outside", cliponaxis=False,
        hovertemplate=axis_title + " %{x}: %{y:.4f}<extra></extra>",
    ))
    fig.update_layout(
        height=height, barmode="overlay", bargap=0.15 if n <= MAX_LABELLED else 0.05,
        showlegend=before is not None, legend=dict(orientation="h", y=1.1),
        xaxis=dict(title=axis_title, type="category", tickangle=0,
                   tickmode="array" if n > MAX_LABELLED else None,
                   tickvals=labels[:: max(1, n // 16)] if n > MAX_LABELLED else None),
        yaxis=dict(title=value_title, zeroline=True, zerolinecolor="#444444"),
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return fig


def linear_layer_figure(weight: torch.Tensor, inputs: torch.Tensor, bias: torch.Tensor,
                        outputs: torch.Tensor, height: int = 420) -> go.Figure:
    """A Linear layer as a matrix times a vector: z = W x + b.

    Top: the input x as a strip, aligned with W's columns. Below: W (out x in)
    on the weight scale, the bias b and the result z on the activation scale.
    Each z_j is row j of W times x, summed, plus b_j.
    """
    weight = weight.detach()
    out_f, in_f = weight.shape
    fig = make_subplots(
        rows=2, cols=3, column_widths=[0.8, 0.07, 0.13], row_heights=[0.12, 0.88],
        horizontal_spacing=0.04, vertical_spacing=0.05,
        subplot_titles=(f"input x ({in_f} numbers)", "", "", f"weights W ({out_f} × {in_f})", "+ b", "= z"),
    )
    w_range = symmetric_range(weight)
    a_range = symmetric_range([bias, outputs])
    x_range = symmetric_range(inputs)  # its own range: pixels (0..1) would vanish on the scale of z
    fig.add_trace(go.Heatmap(
        z=[inputs.detach().flatten().tolist()], colorscale=ACTIVATION_SCALE, zmin=-x_range, zmax=x_range,
        showscale=False, texttemplate="%{z:.2f}" if in_f <= MAX_LABELLED else None,
        hovertemplate="x[%{x}] = %{z:.4f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(
        z=weight.tolist(), colorscale=WEIGHT_SCALE, zmin=-w_range, zmax=w_range,
        colorbar=dict(title="weight", x=1.09, len=0.8, y=0.42, thickness=10),
        hovertemplate="W[%{y}, %{x}] = %{z:.4f}<extra></extra>"), row=2, col=1)
    column = lambda t: [[v] for v in t.detach().flatten().tolist()]  # noqa: E731  (out,) -> (out, 1)
    fig.add_trace(go.Heatmap(
        z=column(bias), colorscale=ACTIVATION_SCALE, zmin=-a_range, zmax=a_range, showscale=False,
        texttemplate="%{z:.2f}" if out_f <= MAX_LABELLED else None,
        hovertemplate="b[%{y}] = %{z:.4f}<extra></extra>"), row=2, col=2)
    fig.add_trace(go.Heatmap(
        z=column(outputs), colorscale=ACTIVATION_SCALE, zmin=-a_range, zmax=a_range,
        colorbar=dict(title="b, z", x=1.0, len=0.8, y=0.42, thickness=10),
        texttemplate="%{z:.2f}" if out_f <= MAX_LABELLED else None,
        hovertemplate="z[%{y}] = %{z:.4f}<extra></extra>"), row=2, col=3)
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False)
    fig.update_yaxes(autorange="reversed", row=2)
    fig.update_yaxes(showticklabels=True, title="neuron j", row=2, col=1)
    fig.update_layout(height=height, margin=dict(l=50, r=20, t=30, b=10))
    return fig


# ---------------------------------------------------------------- one neuron


def neuron_figure(ns: NeuronSum, height: int = 330) -> go.Figure:
    """One neuron's incoming weights, the input, and their elementwise products.

    First layer: three 28 x 28 images (weights on the weight scale, the digit,
    the products on the activation scale). Later layers: the same three rows
    as bars over the previous layer's neurons.
    """
    if ns.from_pixels:
        side = IMAGE_SIZE
        w = ns.weights.reshape(side, side)
        x = ns.inputs.reshape(side, side)
        p = ns.products.reshape(side, side)
        fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=(
            f"weights w of {ns.layer} neuron {ns.neuron}", "× the digit x", "= products w·x (they are summed)"))
        wr, pr = symmetric_range(w), symmetric_range(p)
        fig.add_trace(go.Heatmap(
            z=w.tolist(), colorscale=WEIGHT_SCALE, zmin=-wr, zmax=wr,
            colorbar=dict(title="weight", x=0.265, len=0.9, thickness=10),
            hovertemplate="row %{y}, col %{x}<br>weight %{z:.4f}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Heatmap(
            z=x.tolist(), colorscale=INK_SCALE, zmin=0, zmax=1,
            colorbar=dict(title="ink", x=0.633, len=0.9, thickness=10),
            hovertemplate="row %{y}, col %{x}<br>ink %{z:.4f}<extra></extra>"), row=1, col=2)
        fig.add_trace(go.Heatmap(
            z=p.tolist(), colorscale=ACTIVATION_SCALE, zmin=-pr, zmax=pr,
            colorbar=dict(title="w·x", x=1.0, len=0.9, thickness=10),
            hovertemplate="row %{y}, col %{x}<br>w·x %{z:.4f}<extra></extra>"), row=1, col=3)
        for c in (1, 2, 3):
            _image_axes(fig, 1, c)
            _square(fig, c)
        fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10))
        return fig

    n = ns.inputs.numel()
    labels = [str(i) for i in range(n)]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=(
        "input x: the previous layer's values (after ReLU)", f"weights w of {ns.layer} neuron {ns.neuron}",
        "products w·x (they are summed)"))
    rows = ((ns.inputs, "x"), (ns.weights, "w"), (ns.products, "w·x"))
    for r, (vals, name) in enumerate(rows, start=1):
        vals = vals.tolist()
        if name == "w":
            colors = ["#E08214" if v > 0 else "#8073AC" for v in vals]  # PuOr's ends: weights, not activations
        else:
            colors = [POSITIVE_COLOR if v > 0 else NEGATIVE_COLOR for v in vals]
        fig.add_trace(go.Bar(
            x=labels, y=vals, marker_color=colors, name=name, showlegend=False,
            text=[f"{v:.2f}" for v in vals] if n <= MAX_LABELLED else None, textposition="outside", cliponaxis=False,
            hovertemplate=f"previous neuron %{{x}}<br>{name} = %{{y:.4f}}<extra></extra>"), row=r, col=1)
        fig.update_yaxes(title=name, zeroline=True, zerolinecolor="#444444", row=r, col=1)
    fig.update_xaxes(type="category", title="neuron of the previous layer", row=3, col=1)
    fig.update_layout(height=max(height, 480), margin=dict(l=10, r=10, t=30, b=10))
    return fig


# ---------------------------------------------------------------- every first-layer neuron


def weight_grid_figure(
    weights: torch.Tensor, activations: torch.Tensor, neurons: Sequence[int] | None = None,
    highlight: int | None = None, limit: float | None = None, cols: int = 8, cell: int = 130,
) -> go.Figure:
    """Each first-layer neuron's 784 incoming weights as a small 28 x 28 image.

    weights: (n, 784); activations: (n,) the layer's values for the current
    digit, printed over each image. ``neurons`` picks which to draw (a page of a
    wide layer); ``highlight`` frames one (the most active). Every image shares
    one colour range, symmetric around 0 (``limit``, default the largest |w|
    of the whole layer), so colours compare across neurons and pages.
    """
    weights = weights.detach()
    neurons = list(range(weights.shape[0])) if neurons is None else list(neurons)
    limit = symmetric_range(weights) if limit is None else limit
    cols = max(1, min(cols, len(neurons)))
    rows = max(1, math.ceil(len(neurons) / cols))
    titles = []
    for j in neurons:
        a = float(activations[j])
        titles.append(f"<b>#{j}: {a:.2f}</b>" if j == highlight else f"#{j}: {a:.2f}")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.012,
                        vertical_spacing=min(0.3 / rows, 0.06))
    # Every trace in one call and every image's axes set at once: one call per subplot for each
    # took 55 of the FC explorer's 200 ms a rerun (plotly checks the whole layout each time). The
    # empty cells of a short last row get the same bare axes (before, a stray grid showed there).
    traces = [dict(
        type="heatmap", z=weights[j].reshape(IMAGE_SIZE, IMAGE_SIZE).tolist(), colorscale=WEIGHT_SCALE,
        zmin=-limit, zmax=limit, showscale=k == 0,
        colorbar=dict(title="weight", thickness=10, len=min(1.0, 300 / (rows * cell + 60))) if k == 0 else None,
        name=f"neuron {j}",
        hovertemplate=f"neuron {j} (value {float(activations[j]):.3f})<br>"
                      "row %{y}, col %{x}<br>weight %{z:.4f}<extra></extra>",
    ) for k, j in enumerate(neurons)]
    fig.add_traces(traces, rows=[k // cols + 1 for k in range(len(neurons))],
                   cols=[k % cols + 1 for k in range(len(neurons))])
    _image_axes(fig)
    for k, j in enumerate(neurons):
        _square(fig, k + 1)
        if j == highlight:  # a frame around the most active neuron's image
            r, c = divmod(k, cols)
            fig.add_shape(type="rect", x0=-1, x1=IMAGE_SIZE, y0=-1, y1=IMAGE_SIZE,
                          line=dict(color=HIGHLIGHT_COLOR, width=4), row=r + 1, col=c + 1)
    for ann in fig.layout.annotations:
        ann.font = dict(size=11)
    fig.update_layout(height=rows * cell + 60, margin=dict(l=4, r=4, t=30, b=4))
    return fig


def weight_matrix_figure(weight: torch.Tensor, layer: str, height: int = 360) -> go.Figure:
    """A later layer's weights as one out x in matrix: row j is neuron j's incoming weights."""
    weight = weight.detach()
    r = symmetric_range(weight)
    fig = go.Figure(go.Heatmap(
        z=weight.tolist(), colorscale=WEIGHT_SCALE, zmin=-r, zmax=r, colorbar=dict(title="weight", thickness=10),
        hovertemplate=f"{layer} neuron %{{y}} ← previous neuron %{{x}}<br>weight %{{z:.4f}}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title=f"{layer} neuron")
    fig.update_xaxes(title="neuron of the previous layer")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10))
    return fig


# ---------------------------------------------------------------- the whole network


def dot_heights(n: int) -> list[float]:
    """Where a column of n dots sits on the diagram's [0, 1] height: spread, centred."""
    return [0.5] if n == 1 else [1 - i / (n - 1) for i in range(n)]


def diagram_frame(pixels: torch.Tensor, title: str, image_width: float) -> go.Figure:
    """The two panels every network diagram has: the digit as an image (784 dots would be a
    smear) and, beside it, an empty panel for the columns of dots."""
    fig = make_subplots(rows=1, cols=2, column_widths=[image_width, 1 - image_width],
                        horizontal_spacing=0.02 if image_width < 0.15 else 0.03, subplot_titles=(title, ""))
    fig.add_trace(go.Heatmap(z=pixels.detach().reshape(IMAGE_SIZE, IMAGE_SIZE).tolist(), colorscale=INK_SCALE,
                             zmin=0, zmax=1, showscale=False,
                             hovertemplate="row %{y}, col %{x}<br>ink %{z:.3f}<extra></extra>"), row=1, col=1)
    _image_axes(fig, 1, 1)
    _square(fig, 1)
    return fig


def finish_diagram(fig: go.Figure, column_labels: Sequence[str], right_margin: float, pad: float,
                   height: int) -> go.Figure:
    """Label the columns of dots along the bottom and hide the height axis."""
    fig.update_xaxes(tickvals=list(range(len(column_labels))), ticktext=list(column_labels),
                     range=[-pad * 5, len(column_labels) - right_margin], showgrid=False, zeroline=False,
                     row=1, col=2)
    fig.update_yaxes(visible=False, range=[-pad, 1 + pad], row=1, col=2)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), plot_bgcolor="white")
    return fig


def network_diagram_figure(
    pixels: torch.Tensor, layers: Sequence[tuple[str, torch.Tensor]], weights: Sequence[torch.Tensor] = (),
    predicted: int | None = None, height: int = 380, strongest: int | None = None,
) -> go.Figure:
    """The network as columns of dots, 3Blue1Brown's picture, with this digit's real values.

    pixels: the (28, 28) input, drawn as an image in the first column (784 dots
    would be a smear). layers: (name, values (width,)) per column, the hidden
    layers after ReLU and the ten output scores. Each column's dots are coloured
    on its own range (hover shows the value). weights: the (width_next,
    width_prev) matrices between consecutive columns; for each dot its
    ``strongest`` incoming weights are drawn as lines (orange > 0, purple < 0),
    by default 3, or 1 into a layer wider than 32 (more would be a blur).
    The predicted class's dot is ringed.
    """
    fig = diagram_frame(pixels, "784 pixels", image_width=0.16)
    ys = dot_heights
    columns = [(name, v.detach().flatten()) for name, v in layers]
    # Lines first, so dots are drawn over them.
    for k, w in enumerate(weights[: len(columns) - 1]):
        w = w.detach()
        y_prev, y_next = ys(w.shape[1]), ys(w.shape[0])
        segs = {True: ([], []), False: ([], [])}
        per_dot = strongest if strongest is not None else (3 if w.shape[0] <= MAX_LABELLED else 1)
        for j in range(w.shape[0]):
            for i in w[j].abs().argsort(descending=True)[:per_dot].tolist():
                xs, yv = segs[bool(w[j, i] > 0)]
                xs += [k, k + 1, None]
                yv += [y_prev[i], y_next[j], None]
        for positive, (xs, yv) in segs.items():
            fig.add_trace(go.Scatter(x=xs, y=yv, mode="lines", hoverinfo="skip", showlegend=False,
                                     line=dict(width=0.8, color="rgba(224,130,20,0.45)" if positive
                                               else "rgba(128,115,172,0.45)")), row=1, col=2)
    for k, (name, v) in enumerate(columns):
        n = v.numel()
        r = symmetric_range(v)
        size = max(4, min(16, int(300 / n)))
        is_output = name == "output"
        text = ([f"<b>{i}: the answer</b>" if i == predicted else str(i) for i in range(n)] if is_output else None)
        text_colors = [HIGHLIGHT_COLOR if is_output and i == predicted else "#555555" for i in range(n)]
        line_w = [3 if is_output and i == predicted else 0.5 for i in range(n)]
        line_c = [HIGHLIGHT_COLOR if is_output and i == predicted else "#555555" for i in range(n)]
        fig.add_trace(go.Scatter(
            x=[k] * n, y=ys(n), mode="markers+text" if is_output else "markers", text=text,
            textposition="middle right", textfont=dict(color=text_colors, size=12),
            marker=dict(size=size * (1.4 if is_output else 1), color=v.tolist(), colorscale=ACTIVATION_SCALE,
                        cmin=-r, cmax=r, line=dict(width=line_w, color=line_c)),
            customdata=list(range(n)), showlegend=False,
            hovertemplate=f"{name} neuron %{{customdata}}<br>value %{{marker.color:.3f}}<extra></extra>",
        ), row=1, col=2)
    return finish_diagram(fig, [f"{name}<br>({v.numel()})" for name, v in columns], right_margin=0.45,
                          pad=0.06, height=height)

