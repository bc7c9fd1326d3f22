"""Figures of the backward pass: the loss's blame on the ten scores, the network
diagram with every neuron's δ, one neuron's blame as a weighted sum, the
first-layer gradient pictures, one SGD step, and one kernel weight's gradient.

Blame and gradients are drawn on GRADIENT_SCALE (green < 0 < pink), a third
diverging map, so a gradient is never mistaken for an activation (red/blue) or
a weight (purple/orange). Ranges are symmetric around zero.
"""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from digitrec.backprop import KernelGradient, NeuronBlame, SGDStep
from digitrec.data import IMAGE_SIZE
from digitrec.viz.fc import HIGHLIGHT_COLOR, MAX_LABELLED, _image_axes, _square, diagram_frame, dot_heights, finish_diagram
from digitrec.viz.scales import ACTIVATION_SCALE, INK_SCALE, PROBABILITY_COLOR, READABLE_BAR_LABELS, symmetric_range

GRADIENT_SCALE = "PiYG_r"  # green < 0 < pink: ColorBrewer's colour-blind-safe PiYG
POSITIVE_GRADIENT = "#C51B7D"  # the pink end: blame > 0, the step lowers this value
NEGATIVE_GRADIENT = "#4D9221"  # the green end: blame < 0, the step raises it
AFTER_COLOR = "#F58518"


def _signed(v: float, places: int = 3) -> str:
    """+0.123 / −0.123; exactly 0 (a neuron ReLU switched off) as "0", and a value that rounds
    to zero as "≈0", so the two are never confused."""
    if v == 0:
        return "0"
    if abs(v) < 0.5 * 10**-places:
        return "≈0"
    return f"{v:+.{places}f}".replace("-", "\u2212")


def _bar_colors(values: Sequence[float]) -> list[str]:
    return [POSITIVE_GRADIENT if v > 0 else NEGATIVE_GRADIENT if v < 0 else "#999999" for v in values]


# ---------------------------------------------------------------- the loss and the ten scores


def output_blame_figure(probs: torch.Tensor, target: int, height: int = 320) -> go.Figure:
    """Left: the ten probabilities p, the target's bar ringed, with onehot(target) as markers.
    Right: ∂loss/∂score = p − onehot, one bar per digit, its number printed."""
    p = probs.detach().double().flatten().tolist()
    onehot = [1.0 if d == target else 0.0 for d in range(len(p))]
    delta = [a - b for a, b in zip(p, onehot)]
    digits = [str(d) for d in range(len(p))]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        f"probabilities p, and the target {target} as onehot", "∂loss/∂score = p − onehot"))
    fig.add_trace(go.Bar(
        x=digits, y=p, name="p", marker_color=[HIGHLIGHT_COLOR if d == target else PROBABILITY_COLOR
                                               for d in range(len(p))],
        text=[f"{v:.1%}" if v >= 0.0005 else "" for v in p], textposition="outside", cliponaxis=False,
        hovertemplate="digit %{x}: p = %{y:.6f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=digits, y=onehot, mode="markers", name="onehot", marker=dict(symbol="line-ew-open", size=26,
                                                                      line=dict(width=3, color="#333333")),
        hovertemplate="digit %{x}: onehot %{y:.0f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(
        x=digits, y=delta, name="p − onehot", marker_color=_bar_colors(delta),
        text=[_signed(v, 4) for v in delta], textposition="outside", cliponaxis=False,
        hovertemplate="digit %{x}: ∂loss/∂score = %{y:.6f}<extra></extra>"), row=1, col=2)
    # Room above a bar of 1 for its label; the ticks stop at 100 %, as a probability does.
    fig.update_yaxes(range=[0, 1.2], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1], row=1, col=1)
    fig.update_yaxes(range=[-1.25, 1.25], zeroline=True, zerolinecolor="#444444", row=1, col=2)
    fig.update_xaxes(type="category", title_text="digit")
    fig.update_layout(height=height, showlegend=False, margin=dict(l=4, r=4, t=30, b=4))
    return fig


# ---------------------------------------------------------------- the network with its blame


def blame_diagram_figure(
    pixels: torch.Tensor, deltas: Sequence[tuple[str, torch.Tensor]], weights: Sequence[torch.Tensor],
    target: int, chosen: tuple[str, int] | None = None, height: int = 460,
) -> go.Figure:
    """FCNet as columns of dots (the forward diagram's layout) coloured by each neuron's blame δ = ∂loss/∂z.

    deltas: (layer name, δ (width,)) per Linear layer in forward order, the last
    being the ten scores. weights: the (width_next, width_prev) matrices between
    consecutive columns. Numbers are printed beside up to 32 dots per column.
    ``chosen`` (layer, neuron): that dot is ringed and the weights its blame
    came back along (from every neuron of the layer above) are drawn as lines,
    orange for a positive weight and purple for a negative one.
    """
    fig = diagram_frame(pixels, "the digit", image_width=0.13)
    ys = dot_heights
    columns = [(name, d.detach().flatten()) for name, d in deltas]
    names = [name for name, _ in columns]
    if chosen is not None and chosen[0] in names[:-1]:
        k = names.index(chosen[0])
        j = chosen[1]
        w = weights[k].detach()[:, j]  # (width_above,)
        y_from, y_to = ys(columns[k][1].numel()), ys(columns[k + 1][1].numel())
        top = max(float(w.abs().max()), 1e-12)
        for i, wi in enumerate(w.tolist()):
            fig.add_trace(go.Scatter(
                x=[k, k + 1], y=[y_from[j], y_to[i]], mode="lines", showlegend=False, hoverinfo="skip",
                line=dict(width=0.5 + 3.5 * abs(wi) / top,
                          color="rgba(224,130,20,0.7)" if wi > 0 else "rgba(128,115,172,0.7)")), row=1, col=2)
    limit = symmetric_range([d for _, d in columns[:-1]]) if len(columns) > 1 else 1.0
    for k, (name, d) in enumerate(columns):
        n = d.numel()
        is_output = k == len(columns) - 1
        r = symmetric_range(d) if is_output else limit  # hidden columns share one range; scores have their own
        size = max(5, min(16, int(320 / n)))
        labelled = n <= MAX_LABELLED
        text = None
        if labelled:
            text = [(f"{i}: " if is_output else "") + _signed(float(v), 3) for i, v in enumerate(d.tolist())]
            if is_output:
                text[target] = f"<b>{text[target]} (target)</b>"
        ring = [3 if (chosen == (name, i) or (is_output and i == target)) else 0.5 for i in range(n)]
        ring_c = [HIGHLIGHT_COLOR if chosen == (name, i) else ("#333333" if is_output and i == target else "#777777")
                  for i in range(n)]
        fig.add_trace(go.Scatter(
            x=[k] * n, y=ys(n), mode="markers+text" if labelled else "markers", text=text,
            textposition="middle right", textfont=dict(size=10 if n > 16 else 11, color="#333333"),
            marker=dict(size=size * (1.3 if is_output else 1), color=d.tolist(), colorscale=GRADIENT_SCALE,
                        cmin=-r, cmax=r, line=dict(width=ring, color=ring_c),
                        showscale=k == 0, colorbar=dict(title="δ", thickness=10, len=0.8, x=1.0) if k == 0 else None),
            customdata=list(range(n)), showlegend=False,
            hovertemplate=f"{name} neuron %{{customdata}}<br>δ = %{{marker.color:.6f}}<extra></extra>",
        ), row=1, col=2)
    return finish_diagram(fig, [f"δ of {name}<br>({d.numel()})" for name, d in columns], right_margin=0.35,
                          pad=0.05, height=height)


def blame_sum_figure(nb: NeuronBlame, height: int = 420) -> go.Figure:
    """A hidden neuron's blame as a weighted sum over the layer above: w[k, j], δ_above[k] and their products."""
    n = nb.weights.numel()
    labels = [str(i) for i in range(n)]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.09, subplot_titles=(
        f"weights w from {nb.layer} neuron {nb.neuron} to each neuron of {nb.above}",
        f"× the blame δ of each {nb.above} neuron", "= products w·δ (they are summed)"))
    rows = ((nb.weights, "w", ["#E08214" if v > 0 else "#8073AC" for v in nb.weights.tolist()]),
            (nb.blame_above, "δ above", _bar_colors(nb.blame_above.tolist())),
            (nb.products, "w·δ", _bar_colors(nb.products.tolist())))
    for r, (vals, name, colors) in enumerate(rows, start=1):
        vals = vals.tolist()
        fig.add_trace(go.Bar(
            x=labels, y=vals, marker_color=colors, showlegend=False,
            text=[_signed(v, 3) for v in vals] if n <= MAX_LABELLED else None, textposition="outside",
            cliponaxis=False, hovertemplate=f"{nb.above} neuron %{{x}}<br>{name} = %{{y:.6f}}<extra></extra>"),
            row=r, col=1)
        fig.update_yaxes(title=name, zeroline=True, zerolinecolor="#444444", row=r, col=1)
    fig.update_xaxes(type="category", title=f"neuron of {nb.above}", row=3, col=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10))
    return fig


# ---------------------------------------------------------------- first-layer gradient pictures


def gradient_grid_figure(
    gradients: torch.Tensor, deltas: torch.Tensor, neurons: Sequence[int] | None = None,
    highlight: int | None = None, cols: int = 8, cell: int = 130,
) -> go.Figure:
    """Each first-layer neuron's weight gradient (n, 28, 28) as a picture, titled with its δ.

    All pictures share one colour range, so a neuron with little blame looks faint.
    """
    gradients = gradients.detach()
    neurons = list(range(gradients.shape[0])) if neurons is None else list(neurons)
    limit = symmetric_range(gradients)
    cols = max(1, min(cols, len(neurons)))
    rows = max(1, math.ceil(len(neurons) / cols))
    titles = [(f"<b>#{j}: δ {_signed(float(deltas[j]))}</b>" if j == highlight else f"#{j}: δ {_signed(float(deltas[j]))}")
              for j in neurons]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.012,
                        vertical_spacing=min(0.3 / rows, 0.06))
    for k, j in enumerate(neurons):
        r, c = divmod(k, cols)
        fig.add_trace(go.Heatmap(
            z=gradients[j].tolist(), colorscale=GRADIENT_SCALE, zmin=-limit, zmax=limit, showscale=k == 0,
            colorbar=dict(title="∂loss/∂w", thickness=10, len=min(1.0, 300 / (rows * cell + 60))) if k == 0 else None,
            name=f"neuron {j}",
            hovertemplate=f"neuron {j} (δ {float(deltas[j]):.5f})<br>row %{{y}}, col %{{x}}<br>"
                          "∂loss/∂w %{z:.6f}<extra></extra>",
        ), row=r + 1, col=c + 1)
        _image_axes(fig, r + 1, c + 1)
        _square(fig, k + 1)
        if j == highlight:
            fig.add_shape(type="rect", x0=-1, x1=IMAGE_SIZE, y0=-1, y1=IMAGE_SIZE,
                          line=dict(color=HIGHLIGHT_COLOR, width=4), row=r + 1, col=c + 1)
    for ann in fig.layout.annotations:
        ann.font = dict(size=11)
    fig.update_layout(height=rows * cell + 60, margin=dict(l=4, r=4, t=30, b=4))
    return fig


# ---------------------------------------------------------------- one SGD step


def sgd_probabilities_figure(step: SGDStep, height: int = 320) -> go.Figure:
    """This digit's ten probabilities before the step (hollow) and after it (filled), the target in red."""
    digits = [str(d) for d in range(len(step.probs_before))]
    before, after = step.probs_before.tolist(), step.probs_after.tolist()
    fig = go.Figure()
    fig.add_trace(go.Bar(x=digits, y=before, name="before the step",
                         marker=dict(color="rgba(0,0,0,0)", line=dict(color="#555555", width=2)),
                         hovertemplate="digit %{x}: before %{y:.6f}<extra></extra>"))
    fig.add_trace(go.Bar(x=digits, y=after, name="after the step",
                         marker_color=[HIGHLIGHT_COLOR if d == step.target else AFTER_COLOR for d in range(len(after))],
                         text=[f"{v:.1%}" if v >= 0.0005 else "" for v in after], textposition="outside",
                         cliponaxis=False, hovertemplate="digit %{x}: after %{y:.6f}<extra></extra>"))
    fig.update_layout(barmode="overlay", height=height, legend=dict(orientation="h", y=1.12),
                      yaxis=dict(range=[0, 1.15], tickformat=".0%", title="probability"),
                      xaxis=dict(title="digit", type="category"), margin=dict(l=4, r=4, t=30, b=4))
    return fig


def learning_rate_curve_figure(lrs: Sequence[float], this_digit: Sequence[float], others: Sequence[float] | None,
                               lr: float, others_label: str = "other digits", height: int = 340) -> go.Figure:
    """Loss after one step against the learning rate (both axes logarithmic), the chosen rate marked.

    this_digit: the loss of the digit the step was computed on; others: the
    average loss of a fixed set of other digits after the same step. A step
    that is too big overshoots: this digit's loss keeps falling while the
    others' loss shoots up.
    """
    floor = 1e-6  # a log axis cannot show 0: losses below this are drawn at it
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(lrs), y=[max(v, floor) for v in this_digit], mode="lines+markers",
                             name="this digit", line=dict(color=HIGHLIGHT_COLOR, width=2.5),
                             hovertemplate="lr %{x:.3g}: this digit's loss %{y:.4g}<extra></extra>"))
    if others is not None:
        fig.add_trace(go.Scatter(x=list(lrs), y=[max(v, floor) for v in others], mode="lines+markers",
                                 name=others_label, line=dict(color=PROBABILITY_COLOR, width=2.5),
                                 hovertemplate="lr %{x:.3g}: average loss %{y:.4g}<extra></extra>"))
    fig.add_vline(x=lr, line=dict(color="#333333", dash="dash"), annotation_text=f"lr = {lr:g}",
                  annotation_position="top")
    # Powers of ten (10⁻⁴), not SI prefixes (100µ, 1M), which read as units.
    fig.update_xaxes(type="log", title="learning rate", exponentformat="power")
    fig.update_yaxes(type="log", title="loss after one step", exponentformat="power")
    # The legend under the chart: above it, it sat under the lr label and the toolbar.
    fig.update_layout(height=height, legend=dict(orientation="h", yanchor="top", y=-0.3, x=0),
                      margin=dict(l=4, r=4, t=30, b=4))
    return fig


# ---------------------------------------------------------------- one kernel weight (TinyVGG)


def kernel_gradient_figure(kg: KernelGradient, kernel_grad: torch.Tensor, ink: bool = False,
                           height: int = 360) -> go.Figure:
    """One kernel weight's gradient as a sum over positions, in four panels.

    1. the (k, k) gradient of the kernel w[out, in], the chosen cell framed;
    2. (H', W') the input value this kernel cell touched at each output position;
    3. (H', W') the output map's gradient ∂loss/∂(conv output) there;
    4. their product, cell by cell: the sum of this map is the chosen cell of panel 1.
    """
    fig = make_subplots(rows=1, cols=4, column_widths=[0.16, 0.28, 0.28, 0.28], horizontal_spacing=0.05,
                        subplot_titles=(
                            f"kernel gradient<br>map {kg.out_channel} ← channel {kg.in_channel}",
                            f"input under cell ({kg.row}, {kg.col})<br>at each position",
                            "× output map's gradient", f"= products, summed: {_signed(kg.hand, 6)}"))
    k = kernel_grad.detach()
    kr = symmetric_range(k)
    fig.add_trace(go.Heatmap(
        z=k.tolist(), colorscale=GRADIENT_SCALE, zmin=-kr, zmax=kr, showscale=False,
        text=[[_signed(v, 4) for v in row] for row in k.tolist()], texttemplate="%{text}", textfont=dict(size=10),
        hovertemplate="kernel cell (%{y}, %{x})<br>∂loss/∂w %{z:.6f}<extra></extra>"), row=1, col=1)
    fig.add_shape(type="rect", x0=kg.col - 0.5, x1=kg.col + 0.5, y0=kg.row - 0.5, y1=kg.row + 0.5,
                  line=dict(color=HIGHLIGHT_COLOR, width=3), row=1, col=1)
    ir = 1.0 if ink else symmetric_range(kg.inputs)
    fig.add_trace(go.Heatmap(
        z=kg.inputs.tolist(), colorscale=INK_SCALE if ink else ACTIVATION_SCALE, zmin=0 if ink else -ir, zmax=ir,
        showscale=False, hovertemplate="position (%{y}, %{x})<br>input %{z:.4f}<extra></extra>"), row=1, col=2)
    gr = symmetric_range(kg.grad_output)
    fig.add_trace(go.Heatmap(
        z=kg.grad_output.tolist(), colorscale=GRADIENT_SCALE, zmin=-gr, zmax=gr, showscale=False,
        hovertemplate="position (%{y}, %{x})<br>∂loss/∂output %{z:.6f}<extra></extra>"), row=1, col=3)
    pr = symmetric_range(kg.products)
    fig.add_trace(go.Heatmap(
        z=kg.products.tolist(), colorscale=GRADIENT_SCALE, zmin=-pr, zmax=pr,
        colorbar=dict(title="gradient", thickness=10, len=0.9),
        hovertemplate="position (%{y}, %{x})<br>input × gradient %{z:.6f}<extra></extra>"), row=1, col=4)
    for c in (1, 2, 3, 4):
        _image_axes(fig, 1, c)
        _square(fig, c)
    for ann in fig.layout.annotations:
        ann.font = dict(size=12)
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=50, b=4))
    return fig


def weight_matrix_gradient_figure(grad: torch.Tensor, layer: str, height: int = 300) -> go.Figure:
    """A later Linear layer's weight gradient as one out × in matrix (row j: δ[j] times the layer's input)."""
    grad = grad.detach()
    r = symmetric_range(grad)
    fig = go.Figure(go.Heatmap(
        z=grad.tolist(), colorscale=GRADIENT_SCALE, zmin=-r, zmax=r, colorbar=dict(title="∂loss/∂w", thickness=10),
        hovertemplate=f"{layer} neuron %{{y}} ← input %{{x}}<br>∂loss/∂w %{{z:.6f}}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title=f"{layer} neuron")
    fig.update_xaxes(title="input")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10))
    return fig



def weight_gradient_figure(inputs: torch.Tensor, delta: float, source: int, neuron: int, layer: str,
                           height: int = 300) -> go.Figure:
    """All the weights into one neuron at once: left the layer's input a, right their gradients δ × a,
    the chosen weight's input marked in both. inputs: (784,) pixels, drawn as 28 × 28, or (n,) values."""
    a = inputs.detach().double().flatten()
    grads = delta * a
    gr = symmetric_range(grads) if float(grads.abs().max()) > 0 else 1.0
    titles = ("the input a each weight multiplied", f"their gradients δ × a (δ of {layer} neuron {neuron} = "
              f"{_signed(delta, 4)})")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=titles)
    if a.numel() == IMAGE_SIZE * IMAGE_SIZE:
        r, c = divmod(source, IMAGE_SIZE)
        fig.add_trace(go.Heatmap(z=a.reshape(IMAGE_SIZE, IMAGE_SIZE).tolist(), colorscale=INK_SCALE, zmin=0, zmax=1,
                                 showscale=False, hovertemplate="pixel (%{y}, %{x})<br>ink %{z:.3f}<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Heatmap(z=grads.reshape(IMAGE_SIZE, IMAGE_SIZE).tolist(), colorscale=GRADIENT_SCALE,
                                 zmin=-gr, zmax=gr, colorbar=dict(title="∂loss/∂w", thickness=10),
                                 hovertemplate="pixel (%{y}, %{x})<br>∂loss/∂w %{z:.6f}<extra></extra>"),
                      row=1, col=2)
        for col in (1, 2):
            _image_axes(fig, 1, col)
            _square(fig, col)
            fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                          line=dict(color=HIGHLIGHT_COLOR, width=2.5), row=1, col=col)
    else:
        labels = [str(i) for i in range(a.numel())]
        small = a.numel() <= MAX_LABELLED
        fig.add_trace(go.Bar(x=labels, y=a.tolist(), showlegend=False,
                             marker_color=[HIGHLIGHT_COLOR if i == source else PROBABILITY_COLOR for i in range(a.numel())],
                             hovertemplate="input %{x}: a = %{y:.4f}<extra></extra>"), row=1, col=1)
        colors = _bar_colors(grads.tolist())
        colors[source] = HIGHLIGHT_COLOR
        fig.add_trace(go.Bar(x=labels, y=grads.tolist(), showlegend=False, marker_color=colors,
                             text=[_signed(v, 3) for v in grads.tolist()] if small else None, textposition="outside",
                             cliponaxis=False, hovertemplate="input %{x}: δ × a = %{y:.6f}<extra></extra>"),
                      row=1, col=2)
        fig.update_xaxes(type="category", title="input (a neuron of the layer below)")
    for ann in fig.layout.annotations:
        ann.font = dict(size=12)
    # 16 bars: plotly would shrink their labels to 6 px.
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=40, b=4), uniformtext=READABLE_BAR_LABELS)
    return fig
