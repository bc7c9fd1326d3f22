"""Figures of a unit's biography: its top digits and patches, its receptive field, its pull on the scores.

``image_grid`` is the one picture-grid builder here; the Map and Break-it
figures use it too (thumbnails of neighbours, noise images).
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from digitrec.data import IMAGE_SIZE
from digitrec.viz.scales import (
    ACTIVATION_SCALE,
    INK_SCALE,
    PROBABILITY_COLOR,
    SECOND_COLOR,
    WEIGHT_SCALE,
    symmetric_range,
)

HIGHLIGHT = "#F58518"  # the receptive-field box: orange reads on grey ink and on red-blue maps


def image_grid(images: torch.Tensor, titles: list[str], cols: int = 3, height: int | None = None,
               colorscale: str = INK_SCALE, zrange: tuple[float, float] = (0.0, 1.0),
               boxes: list[tuple[int, int, int, int]] | None = None, cell_px: int = 110) -> go.Figure:
    """Images (N, H, W) side by side, ``cols`` per row, each with a title; boxes: (top, left, bottom, right) per image.

    One heatmap of all the images tiled with blank (NaN) gaps, titles as
    annotations, z as a numpy array (plotly checks a list element by element):
    it builds in milliseconds, where one subplot per image
    (``make_subplots``) takes a second or more for nine.
    """
    n, h, w = images.shape
    rows = max(1, -(-n // cols))
    gap_x = max(1, w // 8)
    gap_y = max(3, h // 3)  # room for a title above each row
    canvas = torch.full((rows * (h + gap_y), cols * (w + gap_x) - gap_x), float("nan"))
    fig = go.Figure()
    shapes, notes = [], []
    for i, image in enumerate(images):
        top, left = (i // cols) * (h + gap_y) + gap_y, (i % cols) * (w + gap_x)
        canvas[top : top + h, left : left + w] = image.detach().float()
        notes.append(dict(x=left + (w - 1) / 2, y=top - 0.6, text=titles[i], showarrow=False, yanchor="bottom",
                          font=dict(size=11)))
        if boxes is not None:
            # A window that hangs over the edge (a cell near the border reads the zero padding there) is drawn
            # up to the edge: the padding is not part of the picture, and a box past it would cover the title.
            b_top, b_left, b_bottom, b_right = boxes[i]
            b_top, b_left, b_bottom, b_right = max(b_top, 0), max(b_left, 0), min(b_bottom, h - 1), min(b_right, w - 1)
            shapes.append(dict(type="rect", x0=left + b_left - 0.5, x1=left + b_right + 0.5, y0=top + b_top - 0.5,
                               y1=top + b_bottom + 0.5, line=dict(color=HIGHLIGHT, width=2)))
    fig.add_trace(go.Heatmap(z=canvas.numpy(), colorscale=colorscale, zmin=zrange[0], zmax=zrange[1],
                             showscale=False, hoverongaps=False, hovertemplate="%{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False, showgrid=False, zeroline=False)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_layout(height=height or rows * cell_px + 10, margin=dict(l=4, r=4, t=4, b=4), shapes=shapes,
                      annotations=notes, plot_bgcolor="rgba(0,0,0,0)")
    return fig


def top_digits_figure(images: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                      boxes: list[tuple[int, int, int, int]] | None = None) -> go.Figure:
    """The k test digits (k, 28, 28) in [0, 1] that excite a unit most, titled with their index and value;
    for a map, the receptive field of its strongest cell drawn on each."""
    titles = [f"#{int(i)}: {float(v):.2f}" for i, v in zip(indices, values)]
    return image_grid(images, titles, cols=3, boxes=boxes)


def patches_figure(patches: torch.Tensor, values: torch.Tensor) -> go.Figure:
    """The input patches (k, r, r) the strongest cells saw, cut at the receptive field."""
    return image_grid(patches, [f"{float(v):.2f}" for v in values], cols=3, cell_px=90)


def weights_figure(weights: torch.Tensor, height: int = 230) -> go.Figure:
    """A unit's incoming weights on the weight scale (purple < 0 < orange, symmetric range).

    weights: (784,) a first-layer neuron's, drawn as the 28 x 28 picture it is matched against;
    (in,) a deeper neuron's, as one strip; (I, k, k) a map's kernels, one per input channel.
    """
    if weights.dim() == 1:
        shaped = (weights.reshape(1, IMAGE_SIZE, IMAGE_SIZE) if weights.numel() == IMAGE_SIZE**2
                  else weights.reshape(1, 1, -1))
        titles = ["one weight per pixel" if shaped.shape[1] == IMAGE_SIZE else "one weight per neuron before it"]
        cols = 1
    else:
        # Titled by the input map each kernel reads; short, so ten of them fit a narrow column.
        shaped, titles, cols = weights, [str(i) for i in range(weights.shape[0])], min(5, weights.shape[0])
    half = symmetric_range(shaped)
    return image_grid(shaped, titles, cols=cols, colorscale=WEIGHT_SCALE, zrange=(-half, half), height=height)


def pull_figure(pull: torch.Tensor, height: int = 260) -> go.Figure:
    """(10,) how much each score drops when the unit is switched off: bars up = the unit pushes that digit."""
    values = pull.detach().tolist()
    fig = go.Figure(go.Bar(
        x=[str(d) for d in range(10)], y=values,
        marker_color=[PROBABILITY_COLOR if v >= 0 else SECOND_COLOR for v in values],
        hovertemplate="digit %{x}: score drops by %{y:.3f} without this unit<extra></extra>",
    ))
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=10, b=4),
                      xaxis=dict(title="digit", dtick=1), yaxis=dict(title="score drop without it", zeroline=True))
    return fig


def receptive_field_figure(pixels: torch.Tensor, box: tuple[int, int, int, int], title: str = "",
                           height: int = 280) -> go.Figure:
    """The digit (28, 28) with the input pixels one cell sees outlined."""
    return image_grid(pixels.unsqueeze(0), [title], cols=1, boxes=[box], height=height)


def unit_map_figure(values: torch.Tensor, cell: tuple[int, int] | None, title: str, height: int = 280) -> go.Figure:
    """A unit's (H, W) map for one digit on the activation scale, the chosen cell outlined."""
    half = float(values.abs().max()) or 1.0
    boxes = [(cell[0], cell[1], cell[0], cell[1])] if cell is not None else None
    return image_grid(values.unsqueeze(0), [title], cols=1, colorscale=ACTIVATION_SCALE, zrange=(-half, half),
                      boxes=boxes, height=height)
