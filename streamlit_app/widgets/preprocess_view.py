"""How a drawing becomes the 28 x 28 digit the networks read, step by step, with its numbers."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from digitrec import preprocess
from digitrec.errors import DigitrecError
from digitrec.samples import SAMPLE_STROKES, SAMPLE_WIDTH, render_strokes
from digitrec.viz.digits import digit_figure
from streamlit_app import state

MARK_COLOR = "#F58518"  # the bounding box and centre-of-mass marks
# A larger image is shown subsampled to this many pixels a side: each picture is 190 px tall on the
# page, so the canvas's 280 x 280 cells only weighed it (328 kB of JSON and 80 ms each rerun; 140: 82 kB).
MAX_SHOWN = 140


def source_of(digit: state.Digit, sample: int = -1) -> np.ndarray | None:
    """The image a digit was made from: sample ``sample`` (0..9) if given, else the digit's own
    drawing/upload from this session, else its sample's strokes; None for MNIST digits and links."""
    if 0 <= sample <= 9:
        return render_strokes(SAMPLE_STROKES[sample], width=SAMPLE_WIDTH)
    image = state.source_image(digit)
    if image is not None:
        return image
    if digit.ref.startswith("sample:"):
        return render_strokes(SAMPLE_STROKES[int(digit.ref.split(":")[1])], width=SAMPLE_WIDTH)
    return None


def preprocess_view(*, key: str = "preprocess", digit: state.Digit | None = None, sample: int = -1) -> None:
    """Five small pictures, ink -> crop -> 20 x 20 -> centred, each with the numbers of its step.

    ``sample`` (0..9) shows the steps for that hand-made sample instead of the current digit.
    """
    digit = digit or state.current_digit()
    image = source_of(digit, sample)
    if image is None:
        if digit.ref.startswith("test:"):
            st.info("This is an MNIST test digit: its makers already cropped it, fitted it into 20 x 20 and "
                    "centred it by its centre of mass. Draw a digit to watch those steps happen.")
        else:
            st.info("Only the 28 x 28 version of this digit is here (it came from a link). "
                    "Draw or upload a digit to watch the steps.")
        return
    try:
        steps = preprocess.preprocess_steps(image)
    except DigitrecError as e:
        st.warning(str(e))
        return

    top, left, bottom, right = steps.bbox
    h0, w0 = steps.cropped.shape
    h, w = steps.fitted.shape
    com_r, com_c = steps.centre_of_mass
    dr, dc = steps.shift
    st.markdown(
        "MNIST's digits were made in these steps (LeCun et al., 1998), so a drawing must go through the "
        "same ones before a network trained on MNIST can read it."
    )
    cols = st.columns(5)
    height = 190

    shown, factor = _subsample(steps.ink)
    fig = digit_figure(torch.from_numpy(shown), height=height, step=factor)  # rows and columns the image's own
    _add_box(fig, top, left, bottom, right)
    cols[0].plotly_chart(fig, key=f"{key}_ink")
    cols[0].caption(f"**1. Ink found.** {steps.ink.shape[1]} x {steps.ink.shape[0]} px; the ink spans "
                    f"rows {top}–{bottom - 1} and columns {left}–{right - 1} (orange box).")

    shown, factor = _subsample(steps.cropped)
    cols[1].plotly_chart(digit_figure(torch.from_numpy(shown), height=height, step=factor), key=f"{key}_crop")
    cols[1].caption(f"**2. Cropped** to the box: {w0} x {h0} px.")

    cols[2].plotly_chart(digit_figure(torch.from_numpy(steps.fitted), height=height), key=f"{key}_fit")
    cols[2].caption(f"**3. Fitted into 20 x 20**: scaled by {max(h, w) / max(h0, w0):.3f} to {w} x {h} px, "
                    "keeping its shape; averaging neighbours gives the grey edges.")

    fig = digit_figure(torch.from_numpy(steps.boxed), height=height)
    _add_point(fig, com_r, com_c, "centre of mass")
    cols[3].plotly_chart(fig, key=f"{key}_boxed")
    cols[3].caption(f"**4. Put in 28 x 28.** Its centre of mass (orange) is at row {com_r:.2f}, "
                    f"column {com_c:.2f}.")

    fig = digit_figure(steps.final, height=height)
    _add_point(fig, *preprocess.CENTRE, "centre")
    cols[4].plotly_chart(fig, key=f"{key}_final")
    cols[4].caption(f"**5. Centred**: moved {_moved(dr, 'down', 'up')} and {_moved(dc, 'right', 'left')} "
                    f"so the centre of mass sits at ({preprocess.CENTRE[0]:.0f}, {preprocess.CENTRE[1]:.0f}).")


def _subsample(image: np.ndarray) -> tuple[np.ndarray, int]:
    """A large image shown with every ``factor``-th pixel (a heatmap of a 4000-px photo is too heavy)."""
    factor = max(1, int(np.ceil(max(image.shape) / MAX_SHOWN)))
    return np.ascontiguousarray(image[::factor, ::factor], dtype=np.float32), factor


def _moved(pixels: int, positive: str, negative: str) -> str:
    if pixels == 0:
        return f"0 px {positive}"
    return f"{abs(pixels)} px {positive if pixels > 0 else negative}"


def _add_box(fig: go.Figure, top: float, left: float, bottom: float, right: float) -> None:
    fig.add_shape(type="rect", x0=left - 0.5, x1=right - 0.5, y0=top - 0.5, y1=bottom - 0.5,
                  line=dict(color=MARK_COLOR, width=2))


def _add_point(fig: go.Figure, row: float, col: float, name: str) -> None:
    fig.add_trace(go.Scatter(x=[col], y=[row], mode="markers", name=name, showlegend=False,
                             marker=dict(color=MARK_COLOR, size=9, symbol="x"),
                             hovertemplate=f"{name}: row {row:.2f}, col {col:.2f}<extra></extra>"))
