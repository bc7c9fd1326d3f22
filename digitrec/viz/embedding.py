"""The Map page's figures: 10,000 digits as points coloured by class, and the learner's digit placed among them."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

# Ten categorical colours that stay apart for colour-blind readers (Tableau 10).
CLASS_COLORS = ["#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F",
                "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC"]


def map_figure(coords: np.ndarray, labels: torch.Tensor, title: str, placed: np.ndarray | None = None,
               placed_label: str = "your digit", height: int = 560) -> go.Figure:
    """One point per digit, coloured by its true class; ``placed`` (2,) drawn as a large black star.

    Each point's customdata is its index in the test set, so a click on it
    (Streamlit's selection event) names the digit.
    """
    fig = go.Figure()
    labels = labels[: len(coords)]
    for d in range(10):
        idx = torch.nonzero(labels == d).flatten().numpy()
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=str(d), customdata=idx,
            marker=dict(size=4, color=CLASS_COLORS[d], opacity=0.7),
            hovertemplate=f"test digit #%{{customdata}}, labelled {d}<extra></extra>",
        ))
    if placed is not None:
        fig.add_trace(go.Scattergl(  # WebGL like the dots: WebGL traces are drawn above every SVG trace
            x=[float(placed[0])], y=[float(placed[1])], mode="markers+text", name=placed_label,
            text=[placed_label], textposition="top center", textfont=dict(size=14),
            marker=dict(size=20, color="black", symbol="star", line=dict(color="white", width=2)),
            hovertemplate=placed_label + "<extra></extra>",
        ))
    fig.update_layout(
        title=title, height=height, margin=dict(l=4, r=4, t=40, b=4), legend=dict(title="class", itemsizing="constant"),
        xaxis=dict(showticklabels=False, zeroline=False), yaxis=dict(showticklabels=False, zeroline=False),
        clickmode="event+select", dragmode="pan",
    )
    return fig
