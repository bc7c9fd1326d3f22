"""The race's "scale the task" figure: both networks' costs against the input size (``digitrec.scale``)."""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from digitrec import config, scale
from digitrec.scale import ScaleRow
from digitrec.viz.scales import PROBABILITY_COLOR, SECOND_COLOR

NAMES = {net: scale.network_name(net) for net in ("fc", "cnn")}
COLORS = {"fc": PROBABILITY_COLOR, "cnn": SECOND_COLOR}
PANELS = (  # (ScaleRow attribute, panel title, scale of the value shown)
    ("params", "parameters", 1),
    ("macs", "multiply-adds per image", 1),
    ("memory_bytes", "training memory (MiB, batch of 128)", 1 / 2**20),
    ("seconds_per_1000", "seconds per 1,000 images (measured)", 1),
)


def scale_figure(rows: Sequence[ScaleRow], *, overtakes_at: int | None = None, height: int = 520) -> go.Figure:
    """Four panels against input size, log scales; the memory budget and the CNN's overtaking are marked."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p[1] for p in PANELS], horizontal_spacing=0.1,
                        vertical_spacing=0.16)
    for i, (attr, title, factor) in enumerate(PANELS):
        r, c = divmod(i, 2)
        for net in ("fc", "cnn"):
            mine = sorted((row for row in rows if row.network == net), key=lambda row: row.size)
            ys = [getattr(row, attr) * factor for row in mine]
            fig.add_trace(go.Scatter(
                x=[row.size for row in mine], y=[y if math.isfinite(y) else None for y in ys], mode="lines+markers",
                name=NAMES[net], legendgroup=net, showlegend=i == 0, line=dict(color=COLORS[net], width=2.5),
                hovertemplate=f"{NAMES[net]}<br>%{{x}} px<br>{title}: %{{y:,.3g}}<extra></extra>",
            ), row=r + 1, col=c + 1)
        if attr == "memory_bytes":
            fig.add_hline(y=config.MEMORY_BUDGET_BYTES * factor, line=dict(color="#888", dash="dot", width=1),
                          annotation=dict(text="memory budget", font=dict(size=10, color="#666")),
                          row=r + 1, col=c + 1)
        if overtakes_at is not None:
            fig.add_vline(x=overtakes_at, line=dict(color="#54A24B", dash="dash", width=1), row=r + 1, col=c + 1)
        fig.update_yaxes(type="log", row=r + 1, col=c + 1)
        fig.update_xaxes(title_text="input size (pixels per side)", type="log", tickvals=[28, 32, 64, 128],
                         row=r + 1, col=c + 1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0))
    return fig
