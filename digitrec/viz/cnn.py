"""TinyVGG from the inside: feature maps, the arithmetic of one convolution,
ReLU, max pooling, the filters, and which features decided the answer.

Colours follow ``digitrec.viz.scales``: activations on the blue-white-red
diverging map centred at zero, weights on the purple-white-orange one, the
raw digit in grey ink. Every heatmap hovers with row, column and value.
Figures with many small maps place their subplots by hand (``_Grid``):
plotly's ``make_subplots`` is slow for the 100+ cells of an overview.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import nn

from digitrec.conv_maths import ConvGeometry
from digitrec.inspection import ConvStep, LinearStep, PoolStep, capture_activations, softmax_step
from digitrec.viz.digits import percent_sure
from digitrec.viz.scales import ACTIVATION_SCALE, INK_SCALE, SCOPES, WEIGHT_SCALE, scoped_ranges, symmetric_range

PADDING_COLOR = "#c8c8c8"  # zero padding: a neutral grey that no value colour uses
HIGHLIGHT = "#2ca02c"  # the window / cell being explained: green stands out on red-white-blue
PREDICTED_COLOR = "#E45756"
OTHER_COLOR = "#9ecae1"
_FONT = 10

SCOPE_LABELS = {
    "map": "each map its own range",
    "layer": "one range per layer",
    "network": "one range for the whole network",
}


# ---------------------------------------------------------------- data behind the overview


@dataclass(frozen=True)
class CnnForward:
    """One digit's pass through a TinyVGG, as maps to draw.

    maps: "input" -> (1, 28, 28), then each conv/ReLU/pool layer -> (C, H, W), in forward order.
    flat: (C*H*W,) the flattened last maps; flat_shape: (C, H, W) they came from.
    logits, probs: (10,).
    """

    maps: dict[str, torch.Tensor]
    flat: torch.Tensor
    flat_shape: tuple[int, int, int]
    logits: torch.Tensor
    probs: torch.Tensor

    @property
    def predicted(self) -> int:
        return int(self.probs.argmax())

    @property
    def layers(self) -> list[str]:
        """The feature-map layers (without the input)."""
        return [name for name in self.maps if name != "input"]


def cnn_forward(model: nn.Module, x: torch.Tensor) -> CnnForward:
    """Run one digit x (1, 1, 28, 28) through ``model`` and keep every feature map."""
    acts = capture_activations(model, x)
    maps: dict[str, torch.Tensor] = {"input": x[0].detach().float()}
    last_maps = None
    for name, out in acts.items():
        if out.dim() == 4:  # (1, C, H, W): a feature-map layer
            maps[name] = out[0]
            last_maps = out[0]
    logits = list(acts.values())[-1][0]
    flat = last_maps.flatten()
    return CnnForward(maps, flat, tuple(last_maps.shape), logits, softmax_step(logits).probs.float())


def overview_ranges(forward: CnnForward, scope: str) -> dict[str, list[float]]:
    """Colour half-widths per layer and map for ``scope``; the input keeps its ink range [0, 1]."""
    ranges = scoped_ranges({k: v for k, v in forward.maps.items() if k != "input"}, scope)
    return {"input": [1.0], **ranges}


# ---------------------------------------------------------------- a grid of small plots placed by hand


class _Grid:
    """Cells of a figure laid out in rows and weighted columns, row 0 at the top.

    ``cell`` returns the (xaxis, yaxis) ids to give a trace; ``finish`` writes
    the axes into the layout in one go.
    """

    def __init__(self, fig: go.Figure, col_widths: list[float], n_rows: int, hgap: float = 0.008,
                 vgap: float = 0.012, top: float = 1.0, bottom: float = 0.0) -> None:
        self.fig = fig
        usable = 1 - hgap * (len(col_widths) - 1)
        self.cols = []
        x = 0.0
        for w in col_widths:
            width = usable * w / sum(col_widths)
            self.cols.append((x, x + width))
            x += width + hgap
        height = (top - bottom - vgap * (n_rows - 1)) / n_rows
        self.rows = [(top - (r + 1) * height - r * vgap, top - r * height - r * vgap) for r in range(n_rows)]
        self.axes: dict[str, dict] = {}
        self.count = 0

    def cell(self, row: int, col: int, rowspan: int = 1, colspan: int = 1, square: bool = True,
             image: bool = True, extent: tuple[int, int] | None = None, pad: int = 0) -> tuple[str, str]:
        """Axes for one cell. ``extent`` (H, W) fixes the ranges to an image of that size
        (plus ``pad`` cells of padding all round), so markers drawn on it cannot stretch it."""
        self.count += 1
        n = "" if self.count == 1 else str(self.count)
        x0, x1 = self.cols[col][0], self.cols[col + colspan - 1][1]
        y0, y1 = self.rows[row + rowspan - 1][0], self.rows[row][1]
        hidden = dict(showticklabels=False, showgrid=False, zeroline=False, ticks="", showline=False)
        xaxis = dict(domain=_domain(x0, x1), anchor=f"y{n}", **(hidden if image else {}))
        yaxis = dict(domain=_domain(y0, y1), anchor=f"x{n}", **(hidden if image else {}))
        if image:
            yaxis["autorange"] = "reversed"  # row 0 at the top, as in the picture
        if extent is not None:
            h, w = extent
            xaxis["range"] = [-pad - 0.5, w + pad - 0.5]
            yaxis.pop("autorange", None)
            yaxis["range"] = [h + pad - 0.5, -pad - 0.5]  # reversed: row 0 at the top
        if square:
            xaxis["constrain"] = "domain"
            yaxis.update(scaleanchor=f"x{n}", scaleratio=1, constrain="domain")
        self.axes[f"xaxis{n}"] = xaxis
        self.axes[f"yaxis{n}"] = yaxis
        return f"x{n}", f"y{n}"

    def centre_x(self, col: int, colspan: int = 1) -> float:
        return (self.cols[col][0] + self.cols[col + colspan - 1][1]) / 2

    def centre_y(self, row: int) -> float:
        return sum(self.rows[row]) / 2

    def finish(self, **layout) -> None:
        """Write the axes, and ``layout``'s other settings, into the figure's layout in one assignment
        (``update_layout`` walked every key path: 0.45 s of TinyVGG's overview of 100 maps, a new
        Layout 0.03 s, on every rerun of the CNN page)."""
        self.fig.layout = go.Layout({**self.fig.layout.to_plotly_json(), **self.axes, **layout})


def _domain(lo: float, hi: float) -> list[float]:
    """An axis domain inside [0, 1] (sums of float widths overshoot 1 by 1e-16)."""
    return [round(min(max(lo, 0.0), 1.0), 6), round(min(max(hi, 0.0), 1.0), 6)]


def _z(t: torch.Tensor, digits: int = 4) -> list:
    """A tensor as nested lists, rounded (keeps the figure JSON small)."""
    return torch.round(t.detach().double() * 10**digits).div(10**digits).tolist()


def _heatmap(z: torch.Tensor, axes: tuple[str, str], colorscale: str, half: float | None, hover: str,
             name: str = "", zmin: float | None = None, zmax: float | None = None, showscale: bool = False,
             **kwargs) -> dict:
    """A heatmap on the given axes; ``half`` gives the symmetric range [-half, half]."""
    if half is not None:
        zmin, zmax = -half, half
    # A plain dict, not go.Heatmap: the figure checks it when it takes it, and building a Heatmap
    # object first cost as much again (a third of a second for the overview's 100 maps).
    return dict(
        type="heatmap", z=_z(z), xaxis=axes[0], yaxis=axes[1], colorscale=colorscale, zmin=zmin, zmax=zmax,
        showscale=showscale, hovertemplate=hover + "<extra></extra>", name=name, **kwargs,
    )


def _colorbar(title: str, x: float, y: float, length: float, half: float | None = None,
              relative: str | None = None) -> dict:
    """A horizontal colour bar; ``relative`` labels its ends '−max'/'+max' (for per-map/per-layer ranges)."""
    bar = dict(orientation="h", x=x, y=y, xanchor="center", yanchor="top", len=length, thickness=11,
               title=dict(text=title, side="top", font=dict(size=_FONT + 1)), tickfont=dict(size=_FONT))
    if relative and half is not None:
        bar.update(tickvals=[-half, -half / 2, 0, half / 2, half],
                   ticktext=[f"−{relative}", "", "0", "", f"+{relative}"])
    return bar


def _rect(xref: str, yref: str, x0: float, y0: float, x1: float, y1: float, color: str = HIGHLIGHT,
          width: float = 2.5, dash: str | None = None) -> dict:
    return dict(type="rect", xref=xref, yref=yref, x0=x0, y0=y0, x1=x1, y1=y1,
                line=dict(color=color, width=width, dash=dash), fillcolor="rgba(0,0,0,0)")


def _text(x: float, y: float, text: str, size: int = _FONT, **kwargs) -> dict:
    return dict(x=x, y=y, xref="paper", yref="paper", text=text, showarrow=False, font=dict(size=size), **kwargs)


def _padding_ring(h: int, w: int, p: int, axes: tuple[str, str]) -> dict:
    """The zero padding around an (h, w) map, drawn in grey over padded coordinates -p .. h+p-1.

    Its cells hold 0 (what the convolution reads there); the inside is empty (NaN)
    so the real map shows through.
    """
    z = [[0.0 if not (0 <= r < h and 0 <= c < w) else None for c in range(-p, w + p)] for r in range(-p, h + p)]
    return dict(
        type="heatmap", z=z, x=list(range(-p, w + p)), y=list(range(-p, h + p)), xaxis=axes[0], yaxis=axes[1],
        colorscale=[[0, PADDING_COLOR], [1, PADDING_COLOR]], zmin=0, zmax=1, showscale=False,
        hovertemplate="zero padding<br>row %{y}, col %{x}<br>value 0<extra></extra>", name="padding",
    )


# ---------------------------------------------------------------- overview: every feature map


def overview_figure(forward: CnnForward, scope: str = "layer", height: int | None = None,
                    dead: dict[str, tuple[int, ...]] | None = None, maps: range | None = None) -> go.Figure:
    """Every feature map of one digit: columns are layers (input -> ... -> flatten -> output),
    rows are the maps (channels). Activations share the diverging scale centred at zero,
    with symmetric ranges set by ``scope`` (see ``scales.scoped_ranges``).

    dead: ReLU layer -> maps that are zero on every digit measured (``units.relu_statistics``);
    each is labelled "dead" in its ReLU column and in a pooling column right after it
    (the annotations carry ``name="dead"``).

    Heatmap traces carry ``meta = [layer, channel]`` so a test (or a reader of the JSON) can tell them apart.
    The output column shows the ten class probabilities, the predicted class in red.
    ``maps``: the channels to draw (default all); a wide network draws a few at a time, since
    each map is a trace (256 channels x 10 layers cost ~40 s of server time and 10 MB a rerun).
    Colour ranges are always those of every map, drawn or not.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    ranges = overview_ranges(forward, scope)
    layers = forward.layers
    shown = list(maps if maps is not None else range(max(m.shape[0] for m in forward.maps.values())))
    n_rows = max(len(shown), 1)
    # columns: map labels | input | layers... | flatten | output
    label_width = 0.33 + 0.08 * len(str(max(shown, default=0)))  # "map 12" needs more room than "map 3"
    widths = [label_width, 1.0] + [1.0] * len(layers) + [0.28, 0.3, 1.4]  # the 0.3 leaves room for the class labels
    fig = go.Figure()
    grid = _Grid(fig, widths, n_rows, top=0.985, bottom=0.0, hgap=0.007, vgap=0.014)
    traces, annotations = [], []
    relative = {"map": "max |value| of each map", "layer": "max |value| of each layer", "network": None}[scope]

    for r, ch in enumerate(shown):
        annotations.append(_text(grid.cols[0][1], grid.centre_y(r), f"map {ch}", xanchor="right", size=_FONT))

    # The digit: grey ink, 0 black .. 1 white.
    axes = grid.cell(0, 1)
    traces.append(_heatmap(forward.maps["input"][0], axes, INK_SCALE, None, "input<br>row %{y}, col %{x}<br>ink %{z:.3f}",
                           name="input", zmin=0, zmax=1, meta=["input", 0]))
    annotations.append(_text(grid.centre_x(1), 1.0, "<b>input</b><br>1×28×28<br>ink 0–1", yanchor="bottom"))

    dead_cells = set()  # (layer, channel): a dead ReLU map, and its pooled copy right after it
    for j, name in enumerate(layers):
        for ch in (dead or {}).get(name, ()):
            dead_cells.add((name, ch))
            if j + 1 < len(layers) and "pool" in layers[j + 1]:
                dead_cells.add((layers[j + 1], ch))

    for j, name in enumerate(layers):
        col = 2 + j
        maps = forward.maps[name]
        c, h, w = maps.shape
        head = f"<b>{name}</b><br>{c}×{h}×{w}"
        if scope != "map":
            head += f"<br>±{ranges[name][0]:.3g}"
        annotations.append(_text(grid.centre_x(col), 1.0, head, yanchor="bottom"))
        for r, ch in enumerate(shown):
            if ch >= c:
                continue
            axes = grid.cell(r, col)
            half = ranges[name][ch]
            hm = _heatmap(
                maps[ch], axes, ACTIVATION_SCALE, half,
                f"{name} · map {ch}<br>row %{{y}}, col %{{x}}<br>value %{{z:.3f}}<br>colour range ±{half:.3g}",
                name=f"{name} map {ch}", meta=[name, ch],
            )
            if j == 0 and r == 0:  # one colour bar stands for the whole scale
                hm.update(showscale=True, colorbar=_colorbar(
                    "activation: blue < 0 (white) < red", 0.5, -0.035, 0.45, half, relative))
            traces.append(hm)
            if (name, ch) in dead_cells:
                annotations.append(_text(
                    grid.centre_x(col), grid.centre_y(r), "<b>dead</b>", size=_FONT, name="dead",
                    bgcolor="rgba(255,255,255,0.85)", bordercolor="#555", borderwidth=1,
                    hovertext=f"{name} map {ch} is 0 for every test digit: a dead ReLU",
                ))

    # flatten: the last maps read row by row, map after map, as one long column.
    col = 2 + len(layers)
    c, h, w = forward.flat_shape
    axes = grid.cell(0, col, rowspan=n_rows, square=False)
    half = max(ranges[layers[-1]])
    where = [[f"{layers[-1]} map {i // (h * w)}, row {i % (h * w) // w}, col {i % w}"] for i in range(len(forward.flat))]
    traces.append(_heatmap(forward.flat.reshape(-1, 1), axes, ACTIVATION_SCALE, half,
                           "flatten[%{y}] = %{customdata}<br>value %{z:.3f}", name="flatten",
                           customdata=where, meta=["flatten", 0]))
    annotations.append(_text(grid.centre_x(col), 1.0, f"<b>flat</b><br>{len(forward.flat)}", yanchor="bottom"))

    # output: ten probabilities, one bar per class, aligned with the map rows.
    col += 2
    xa, ya = grid.cell(0, col, rowspan=n_rows, square=False, image=False)
    probs = forward.probs.tolist()
    pred = forward.predicted
    traces.append(go.Bar(
        x=probs, y=[str(d) for d in range(len(probs))], orientation="h", xaxis=xa, yaxis=ya, name="output",
        marker_color=[PREDICTED_COLOR if d == pred else OTHER_COLOR for d in range(len(probs))],
        text=[percent_sure(p) if p >= 0.01 else "" for p in probs], textposition="outside", cliponaxis=False,
        textfont=dict(size=_FONT), customdata=_z(forward.logits, 3), meta=["output", 0],
        hovertemplate="digit %{y}<br>score z = %{customdata:.3f}<br>probability %{x:.2%}<extra></extra>",
    ))
    grid.axes[f"yaxis{'' if grid.count == 1 else grid.count}"].update(
        autorange="reversed", type="category", tickmode="array", tickvals=[str(d) for d in range(len(probs))],
        tickfont=dict(size=_FONT + 2), ticks="", showgrid=False, showline=False, zeroline=False)
    # Room beside a full bar for its label, ">99.9%" the longest.
    grid.axes[f"xaxis{'' if grid.count == 1 else grid.count}"].update(range=[0, 1.6], visible=False)
    annotations.append(_text(grid.centre_x(col), 1.0, f"<b>output</b><br>softmax<br>says <b>{pred}</b>",
                             yanchor="bottom"))
    fig.add_traces(traces)
    grid.finish(
        height=height or 120 + 74 * n_rows,  # about square maps at 1400 px wide, 10 rows: 860 px
        margin=dict(l=4, r=4, t=62, b=58), showlegend=False, annotations=annotations,
        plot_bgcolor="white", dragmode=False, hoverlabel=dict(font_size=11),
    )
    return fig


# ---------------------------------------------------------------- one convolution output, in numbers


def _num(v: float, digits: int = 2) -> str:
    """A cell label; tiny negatives print as 0.00, not -0.00."""
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def _patch_labels(step: ConvStep, ch: int, h: int, w: int, values: torch.Tensor) -> list[list[str]]:
    """Cell labels of a 3×3 block; cells in the zero padding say so."""
    k = values.shape[-1]
    r0, c0 = step.row - step.padding, step.col - step.padding  # stride 1: top-left input cell of the window
    out = []
    for i in range(k):
        row = []
        for j in range(k):
            inside = 0 <= r0 + i < h and 0 <= c0 + j < w
            v = float(values[i, j])
            row.append(_num(v) if inside else "0<br>pad")
        out.append(row)
    return out


def conv_step_figure(inputs: torch.Tensor, step: ConvStep, weight_half: float, ink: bool = False,
                     blocks: int | None = None) -> go.Figure:
    """The kernel × patch arithmetic of one output value, one row per input channel.

    inputs: (C_in, H, W) the layer's input maps. Each row: the input map with the
    zero padding in grey and the 3×3 window outlined, the patch under the window,
    the kernel (weight scale, range ±``weight_half``), their elementwise products,
    and the sum of those products. ``ink``: the input is the raw digit (grey ink).
    Deep layers' 10 channels are laid out in ``blocks`` side-by-side groups.
    """
    c_in, h, w = inputs.shape
    k, p = step.kernel.shape[-1], step.padding
    blocks = blocks or (1 if c_in == 1 else 2)
    per_block = -(-c_in // blocks)
    block_cols = [1.35, 0.95, 0.95, 0.95, 0.8]
    widths = (block_cols + [0.15]) * blocks
    widths = widths[:-1]
    rows = per_block
    fig = go.Figure()
    bottom = 0.16 if rows > 1 else 0.3
    grid = _Grid(fig, widths, rows, top=0.93 if rows > 1 else 0.85, bottom=bottom, hgap=0.006, vgap=0.03)
    traces, shapes, annotations = [], [], []
    in_half = 1.0 if ink else symmetric_range(inputs)
    prod_half = symmetric_range(step.products)
    r0, c0 = step.row - p, step.col - p  # the window's top-left cell in input coordinates (stride 1)
    for ch in range(c_in):
        b, r = divmod(ch, per_block)
        base = b * (len(block_cols) + 1)
        # the input map, padded
        axes = grid.cell(r, base, extent=(h, w), pad=p)
        scale, zmin, zmax, half = (INK_SCALE, 0, 1, None) if ink else (ACTIVATION_SCALE, None, None, in_half)
        traces.append(_padding_ring(h, w, p, axes))
        traces.append(_heatmap(inputs[ch], axes, scale, half, f"input channel {ch}<br>row %{{y}}, col %{{x}}<br>value %{{z:.3f}}",
                               name=f"input {ch}", zmin=zmin, zmax=zmax, meta=["input", ch]))
        shapes.append(_rect(*axes, c0 - 0.5, r0 - 0.5, c0 + k - 0.5, r0 + k - 0.5))
        # patch, kernel, products
        cells = [
            (step.patches[ch], scale, half, zmin, zmax, "patch", _patch_labels(step, ch, h, w, step.patches[ch])),
            (step.kernel[ch], WEIGHT_SCALE, weight_half, None, None, "kernel", None),
            (step.products[ch], ACTIVATION_SCALE, prod_half, None, None, "product", None),
        ]
        for j, (values, cs, hf, lo, hi, what, labels) in enumerate(cells, start=1):
            axes = grid.cell(r, base + j)
            text = labels or [[_num(float(v)) for v in line] for line in values]
            traces.append(_heatmap(
                values, axes, cs, hf, f"channel {ch} {what}<br>row %{{y}}, col %{{x}}<br>{what} %{{z:.4f}}",
                name=f"{what} {ch}", zmin=lo, zmax=hi, text=text, texttemplate="%{text}",
                textfont=dict(size=_FONT - 1 if c_in > 1 else _FONT + 2), xgap=1, ygap=1, meta=[what, ch],
            ))
        sign = "=" if c_in == 1 else "Σ ="
        annotations.append(_text(grid.centre_x(base + 4), grid.centre_y(r),
                                 f"{sign}<br><b>{float(step.channel_sums[ch]):.3f}</b>", size=_FONT + (1 if c_in > 1 else 5)))
        if c_in > 1:
            annotations.append(_text(grid.cols[base][0], grid.centre_y(r), f"ch {ch}", xanchor="right", size=_FONT - 1,
                                     textangle=-90))
    top = grid.rows[0][1]
    for b in range(blocks):
        base = b * (len(block_cols) + 1)
        heads = ["input" if c_in > 1 else "input (grey = zero padding)", "patch", "× kernel", "= products", "sum"]
        for j, head in enumerate(heads):
            annotations.append(_text(grid.centre_x(base + j), top + 0.01, head, yanchor="bottom", size=_FONT + 1))
    fig.add_traces(traces)
    # colour bars: input, kernel, products
    traces_with_bars = [  # each channel adds: padding, input, patch, kernel, products
        (1, "ink 0–1" if ink else "input value: blue < 0 < red", 0.16),
        (3, "kernel weight: purple < 0 < orange", 0.5),
        (4, "product: blue < 0 < red", 0.84),
    ]
    for idx, title, x in traces_with_bars:
        fig.data[idx].update(showscale=True, colorbar=_colorbar(title, x, bottom - 0.06, 0.26))
    height = 330 if rows == 1 else 90 + 112 * rows
    grid.finish(height=height, margin=dict(l=18, r=4, t=30, b=10), showlegend=False, shapes=shapes,
                      annotations=annotations, plot_bgcolor="white", dragmode=False)
    return fig


def output_map_figure(out_map: torch.Tensor, row: int, col: int, title: str, height: int = 300) -> go.Figure:
    """A layer's output map (H, W) with one cell outlined: where the explained value lands."""
    fig = go.Figure()
    grid = _Grid(fig, [1.0], 1, top=0.9, bottom=0.12)
    axes = grid.cell(0, 0)
    half = symmetric_range(out_map)
    fig.add_trace(_heatmap(out_map, axes, ACTIVATION_SCALE, half, "row %{y}, col %{x}<br>value %{z:.4f}",
                           name="output map", showscale=True,
                           colorbar=_colorbar("value", 0.5, 0.1, 0.8)))
    fig.add_shape(_rect(*axes, col - 0.5, row - 0.5, col + 0.5, row + 0.5))
    grid.finish(height=height, margin=dict(l=4, r=4, t=26, b=4), title=dict(text=title, font=dict(size=12)),
                      plot_bgcolor="white", dragmode=False)
    return fig


# ---------------------------------------------------------------- ReLU


def relu_figure(before: torch.Tensor, after: torch.Tensor, row: int, col: int, size: int = 3,
                titles: tuple[str, str] = ("before ReLU", "after ReLU: max(0, x)"), height: int = 380) -> go.Figure:
    """One map (H, W) before and after ReLU on the same colour range; cells ReLU set to 0
    are crossed out on the right; the ``size``×``size`` region at (row, col) is outlined."""
    h, w = before.shape
    fig = go.Figure()
    grid = _Grid(fig, [1.0, 1.0], 1, top=0.92, bottom=0.14, hgap=0.06)
    half = symmetric_range(before)
    left = grid.cell(0, 0, extent=(h, w))
    right = grid.cell(0, 1, extent=(h, w))
    fig.add_trace(_heatmap(before, left, ACTIVATION_SCALE, half, "before<br>row %{y}, col %{x}<br>x = %{z:.3f}",
                           name="before", showscale=True,
                           colorbar=_colorbar("value: blue < 0 < red", 0.5, 0.1, 0.5)))
    fig.add_trace(_heatmap(after, right, ACTIVATION_SCALE, half,
                           "after<br>row %{y}, col %{x}<br>max(0, %{customdata:.3f}) = %{z:.3f}",
                           name="after", customdata=_z(before, 3)))
    zeroed = (before < 0).nonzero().tolist()
    fig.add_trace(go.Scatter(
        x=[c for _, c in zeroed], y=[r for r, _ in zeroed], mode="markers", xaxis=right[0], yaxis=right[1],
        marker=dict(symbol="x-thin", size=5, line=dict(width=1, color="#555")), name="set to 0",
        hoverinfo="skip",
    ))
    for axes in (left, right):
        fig.add_shape(_rect(*axes, col - 0.5, row - 0.5, col + size - 0.5, row + size - 0.5))
    grid.finish(
        height=height, margin=dict(l=4, r=4, t=28, b=4), showlegend=False, plot_bgcolor="white", dragmode=False,
        annotations=[_text(grid.centre_x(0), 0.93, titles[0], yanchor="bottom", size=12),
                     _text(grid.centre_x(1), 0.93, titles[1] + " (× = was negative, now 0)", yanchor="bottom", size=12)],
    )
    return fig


# ---------------------------------------------------------------- max pooling


def pool_figure(inp: torch.Tensor, out: torch.Tensor, row: int, col: int, step: PoolStep, size: int = 2,
                height: int = 360) -> go.Figure:
    """Max pooling of one map: the input (H, W) with the window outlined and its maximum
    starred, the window's numbers, and the output (H/2, W/2) with the result's cell outlined."""
    fig = go.Figure()
    grid = _Grid(fig, [1.0, 0.55, 0.6], 1, top=0.9, bottom=0.14, hgap=0.05)
    half = symmetric_range(inp)
    a = grid.cell(0, 0, extent=tuple(inp.shape))
    b = grid.cell(0, 1, extent=tuple(step.window.shape))
    c = grid.cell(0, 2, extent=tuple(out.shape))
    fig.add_trace(_heatmap(inp, a, ACTIVATION_SCALE, half, "input<br>row %{y}, col %{x}<br>value %{z:.3f}",
                           name="input", showscale=True,
                           colorbar=_colorbar("value: blue < 0 < red", 0.5, 0.1, 0.5)))
    text = [[f"{float(v):.3f}" + (" ★" if (i, j) == step.argmax else "") for j, v in enumerate(line)]
            for i, line in enumerate(step.window)]
    fig.add_trace(_heatmap(step.window, b, ACTIVATION_SCALE, half, "window<br>row %{y}, col %{x}<br>value %{z:.3f}",
                           name="window", text=text, texttemplate="%{text}", textfont=dict(size=13), xgap=2, ygap=2))
    fig.add_trace(_heatmap(out, c, ACTIVATION_SCALE, half, "output<br>row %{y}, col %{x}<br>value %{z:.3f}",
                           name="output"))
    r0, c0 = row * size, col * size
    fig.add_shape(_rect(*a, c0 - 0.5, r0 - 0.5, c0 + size - 0.5, r0 + size - 0.5))
    fig.add_shape(_rect(*c, col - 0.5, row - 0.5, col + 0.5, row + 0.5))
    ar, ac = step.argmax
    fig.add_trace(go.Scatter(x=[c0 + ac], y=[r0 + ar], mode="markers", xaxis=a[0], yaxis=a[1], hoverinfo="skip",
                             marker=dict(symbol="star", size=9, color="gold", line=dict(width=1, color="black"))))
    h, w = inp.shape
    grid.finish(
        height=height, margin=dict(l=4, r=4, t=28, b=4), showlegend=False, plot_bgcolor="white", dragmode=False,
        annotations=[
            _text(grid.centre_x(0), 0.91, f"input {h}×{w}: window at rows {r0}–{r0 + size - 1}, cols {c0}–{c0 + size - 1}",
                  yanchor="bottom", size=12),
            _text(grid.centre_x(1), 0.91, f"max of the {size}×{size} window", yanchor="bottom", size=12),
            _text(grid.centre_x(2), 0.91, f"output {out.shape[0]}×{out.shape[1]}", yanchor="bottom", size=12),
        ],
    )
    return fig


# ---------------------------------------------------------------- filters


def filters_figure(weight: torch.Tensor, bias: torch.Tensor, layer: str, height: int | None = None) -> go.Figure:
    """A conv layer's kernels (O, I, k, k) as small heatmaps on the weight scale, one range per layer.

    With one input channel the O filters sit in one row; otherwise rows are output
    maps and columns input channels (filter o looks at channel i through weight[o, i]).
    """
    o, i = weight.shape[:2]
    half = symmetric_range(weight)
    one_row = i == 1
    n_rows, n_cols = (1, o) if one_row else (o, i)
    fig = go.Figure()
    top = 0.82 if one_row else 0.95
    bottom = 0.3 if one_row else 0.07
    grid = _Grid(fig, [0.5] + [1.0] * n_cols, n_rows, top=top, bottom=bottom, hgap=0.01, vgap=0.012)
    traces, annotations = [], []
    for out_ch in range(o):
        for in_ch in range(i):
            r, c = (0, out_ch) if one_row else (out_ch, in_ch)
            axes = grid.cell(r, c + 1)
            traces.append(_heatmap(
                weight[out_ch, in_ch], axes, WEIGHT_SCALE, half,
                f"{layer}: map {out_ch} reads channel {in_ch}<br>row %{{y}}, col %{{x}}<br>weight %{{z:.4f}}"
                f"<br>bias of map {out_ch}: {float(bias[out_ch]):.4f}",
                name=f"filter {out_ch}/{in_ch}", xgap=1, ygap=1, meta=[out_ch, in_ch],
            ))
    bar_y = 0.12 if one_row else bottom - 0.03
    traces[0].update(showscale=True, colorbar=_colorbar("weight: purple < 0 < orange", 0.5, bar_y, 0.45))
    if one_row:
        for c in range(n_cols):
            annotations.append(_text(grid.centre_x(c + 1), top + 0.01, f"map {c}", yanchor="bottom"))
        annotations.append(_text(grid.cols[0][1], grid.centre_y(0), "from the<br>digit", xanchor="right"))
    else:
        for c in range(n_cols):
            annotations.append(_text(grid.centre_x(c + 1), top + 0.005, f"from ch {c}", yanchor="bottom"))
        for r in range(n_rows):
            annotations.append(_text(grid.cols[0][1], grid.centre_y(r), f"map {r}", xanchor="right"))
    fig.add_traces(traces)
    grid.finish(height=height or (200 if one_row else 760), margin=dict(l=4, r=4, t=8, b=8), showlegend=False,
                      annotations=annotations, plot_bgcolor="white", dragmode=False)
    return fig


# ---------------------------------------------------------------- the end: which features decided


@dataclass(frozen=True)
class Contribution:
    """One flattened feature's share of a class score: value × weight."""

    index: int  # position in the flattened vector
    channel: int  # which map of the last pooling layer
    row: int
    col: int
    value: float  # the feature's activation
    weight: float  # the output neuron's weight for it
    product: float  # value × weight: what it adds to the class score


def top_contributions(step: LinearStep, flat_shape: tuple[int, int, int], k: int = 10) -> list[Contribution]:
    """The ``k`` features that pushed a class score up the most (largest value × weight).

    step: the output neuron's ``linear_step``; flat_shape: (C, H, W) of the maps that were flattened.
    """
    _, h, w = flat_shape
    order = torch.argsort(step.products, descending=True)[:k]
    return [
        Contribution(int(i), int(i) // (h * w), int(i) % (h * w) // w, int(i) % w,
                     float(step.inputs[i]), float(step.weights[i]), float(step.products[i]))
        for i in order
    ]


def contributions_figure(contribs: list[Contribution], digit: int, height: int = 340) -> go.Figure:
    """Horizontal bars of value × weight for the top features of class ``digit``, largest on top."""
    labels = [f"#{c.index}: map {c.channel} ({c.row}, {c.col})" for c in contribs]
    fig = go.Figure(go.Bar(
        x=[c.product for c in contribs], y=labels, orientation="h", marker_color=PREDICTED_COLOR,
        customdata=[[c.value, c.weight] for c in contribs], text=[f"{c.product:.2f}" for c in contribs],
        textposition="outside", cliponaxis=False,
        hovertemplate="%{y}<br>value %{customdata[0]:.3f} × weight %{customdata[1]:.3f}<br>= %{x:.3f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=f"adds to the score of digit {digit} (value × weight)")
    fig.update_layout(height=height, margin=dict(l=4, r=40, t=10, b=4), showlegend=False)
    return fig


# ---------------------------------------------------------------- sandbox: padding, stride, kernel size


def sandbox_figure(image: torch.Tensor, kernel: torch.Tensor, output: torch.Tensor, g: ConvGeometry,
                   height: int = 380) -> go.Figure:
    """The sandbox: the padded input with the first window outlined (and, for a stride that
    does not fit, the rows/columns no window reaches hatched red), the kernel, and the output."""
    n = image.shape[0]
    fig = go.Figure()
    grid = _Grid(fig, [1.0, 0.45, 1.0], 1, top=0.88, bottom=0.16, hgap=0.05)
    a = grid.cell(0, 0, extent=(n, n), pad=g.p)
    b = grid.cell(0, 1, extent=(g.k, g.k))
    c = grid.cell(0, 2, extent=tuple(output.shape))
    p, k, s = g.p, g.k, g.s
    if p:
        fig.add_trace(_padding_ring(n, n, p, a))
    fig.add_trace(_heatmap(image, a, INK_SCALE, None, "input<br>row %{y}, col %{x}<br>ink %{z:.3f}", name="input",
                           zmin=0, zmax=1, x=list(range(n)), y=list(range(n))))
    khalf = symmetric_range(kernel)
    fig.add_trace(_heatmap(kernel, b, WEIGHT_SCALE, khalf, "kernel<br>row %{y}, col %{x}<br>weight %{z:.3f}",
                           name="kernel", text=[[f"{float(v):.2f}" for v in line] for line in kernel],
                           texttemplate="%{text}" if k <= 5 else None, textfont=dict(size=_FONT), xgap=1, ygap=1,
                           showscale=True, colorbar=_colorbar("weight", grid.centre_x(1), 0.12, 0.14)))
    fig.add_trace(_heatmap(output, c, ACTIVATION_SCALE, symmetric_range(output),
                           "output<br>row %{y}, col %{x}<br>value %{z:.3f}", name="output", showscale=True,
                           colorbar=_colorbar("output: blue < 0 < red", grid.centre_x(2), 0.12, 0.3)))
    shapes = [_rect(*a, -p - 0.5, -p - 0.5, -p + k - 0.5, -p + k - 0.5)]  # the first window
    if s > 1 and g.out > 1:  # the second window, one stride to the right
        shapes.append(_rect(*a, -p + s - 0.5, -p - 0.5, -p + s + k - 0.5, -p + k - 0.5, dash="dot", width=2))
    if not g.fits:  # the strip that no window reaches
        lo = g.padded - p - g.leftover - 0.5
        hi = g.padded - p - 0.5
        for x0, y0, x1, y1 in ((lo, -p - 0.5, hi, hi), (-p - 0.5, lo, hi, hi)):
            shapes.append(dict(type="rect", xref=a[0], yref=a[1], x0=x0, y0=y0, x1=x1, y1=y1,
                               line=dict(width=0), fillcolor="rgba(228,87,86,0.35)"))
    shapes.append(_rect(*c, -0.5, -0.5, 0.5, 0.5))
    grid.finish(
        height=height, margin=dict(l=4, r=4, t=30, b=4), showlegend=False, plot_bgcolor="white", dragmode=False,
        shapes=shapes,
        annotations=[
            _text(grid.centre_x(0), 0.9, f"input {n}×{n}, padded to {g.padded}×{g.padded}", yanchor="bottom", size=12),
            _text(grid.centre_x(1), 0.9, f"kernel {k}×{k}", yanchor="bottom", size=12),
            _text(grid.centre_x(2), 0.9, f"output {g.out}×{g.out}", yanchor="bottom", size=12),
        ],
    )
    return fig
