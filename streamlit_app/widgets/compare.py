"""The two networks side by side: their size and cost, and how they cope with a shifted digit."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from digitrec import models
from digitrec.shift import REACH_LIMIT, shift_curve, shift_digit
from digitrec.viz.compare import shift_figure
from digitrec.viz.digits import digit_figure
from streamlit_app import state


def network_rows(nets: dict[str, state.Network]) -> pd.DataFrame:
    """Layers, parameters, multiply-adds and accuracy per network, counted from the models."""
    rows = {}
    for net in nets.values():
        layers = models.describe(net.model)
        rows[net.label] = {
            "architecture": models.display_name(net.config),
            "layers with weights": str(sum(1 for layer in layers if layer.params)),
            "parameters": f"{sum(layer.params for layer in layers):,}",
            "multiply-adds per digit": f"{sum(layer.macs for layer in layers):,}",
            "test accuracy": "–" if net.test_accuracy is None else f"{net.test_accuracy:.2%}",
        }
    return pd.DataFrame(rows)


def network_table(*, key: str) -> None:
    """The pretrained networks' size and cost in one table."""
    nets = {k: n for k, n in state.networks().items() if k in state.PRETRAINED_LABELS}
    st.table(network_rows(nets))
    st.caption(
        "Counted from the models themselves: the convolutional network has fewer weights, but it reuses "
        "each one at every position of the image, so it does far more arithmetic per digit."
    )


def shift_test(*, key: str, digit: state.Digit | None = None, max_shift: int = REACH_LIMIT, axis: str = "x") -> None:
    """Slide the current digit left/right (or up/down) and plot both networks' confidence."""
    digit = digit or state.current_digit()
    nets = {k: n for k, n in state.networks().items() if k in state.PRETRAINED_LABELS}
    if not nets:
        st.info("The pretrained networks are not available.")
        return
    first = next(iter(nets.values()))
    from digitrec.inspection import predict_proba

    default_target = digit.label if digit.label is not None else int(predict_proba(first.model, digit.x)[0].argmax())
    c1, c2 = st.columns(2)
    axis = c1.radio("Direction", ["x", "y"], index=0 if axis == "x" else 1, horizontal=True, key=f"{key}_axis",
                    format_func=lambda a: "left / right" if a == "x" else "up / down")
    target = c2.selectbox("Digit to track", list(range(10)), index=default_target, key=f"{key}_target")
    curve = shift_curve({k: n.model for k, n in nets.items()}, digit.pixels, target, int(max_shift), axis)
    left, right = st.columns([3, 1])
    with left:
        st.plotly_chart(shift_figure(curve, {k: n.label for k, n in nets.items()}, axis), key=f"{key}_fig")
    with right:
        preview = st.slider("Preview a shift", -int(max_shift), int(max_shift), 3, key=f"{key}_preview")
        shifted = shift_digit(digit.pixels, preview, 0) if axis == "x" else shift_digit(digit.pixels, 0, preview)
        st.plotly_chart(digit_figure(shifted, height=180), key=f"{key}_preview_fig")
    summary = []
    for k, net in nets.items():
        reach = curve.robust_range(k)
        if reach < 0:
            summary.append(f"**{net.label}** does not read it as {target} even unshifted.")
        else:
            farthest = "at least " if reach >= int(max_shift) else ""  # it was not slid any further
            summary.append(f"**{net.label}** still says {target} up to {farthest}{reach} px either way.")
    st.markdown(" ".join(summary))
