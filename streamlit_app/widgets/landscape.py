"""Gradient descent on something visible: the real loss along one weight of the pretrained FCNet."""

from __future__ import annotations

import streamlit as st

from digitrec import landscape
from digitrec.inspection import predict_proba
from digitrec.viz.landscape import loss_slice_figure
from streamlit_app import state

LEARNING_RATES = [0.03, 0.1, 0.3, 1.0, 3.0]


def loss_slice(*, key: str, layer: str = "output", row: int = -1, col: int = -1, start: float = 2.0,
               lr: float = 0.3) -> None:
    """One weight of the pretrained FCNet moved away from its trained value, then walked back by gradient descent.

    row: the neuron (-1: for the output layer, the current digit's class, or for a drawing the
    class FCNet reads it as); col: its input (-1: the one of the neuron's weights whose valley is
    narrowest, ``landscape.narrowest_weight``); start: how far from the trained value the walk
    begins; lr: the learning rate the learner starts with.
    """
    net = state.pretrained("fc").model
    modules = dict(net.named_children())
    if layer not in modules or not hasattr(modules[layer], "weight") or modules[layer].weight.dim() != 2:
        st.warning(f"loss_slice: FCNet has no Linear layer {layer!r}.")
        return
    digit = state.current_digit()
    out_features = modules[layer].weight.shape[0]
    if row < 0:
        row = 0
        if layer == "output":  # the digit's class; a drawing has none: the class FCNet reads it as
            row = digit.label if digit.label is not None else int(predict_proba(net, digit.x)[0].argmax())
    row = min(int(row), out_features - 1)
    ref = state.pretrained_narrowest_weight(layer, row) if col < 0 else landscape.WeightRef(layer, row, int(col))
    try:
        curve = state.pretrained_loss_slice(ref.layer, ref.row, ref.col)
    except ValueError as e:
        st.warning(f"loss_slice: {e}")
        return
    x, y = state.loss_slice_digits()

    path_key = f"{key}_path"  # this widget's walk: [landscape.Step, ...], for this weight only
    if st.session_state.get(f"{path_key}_ref") != ref:
        st.session_state[path_key], st.session_state[f"{path_key}_ref"] = [], ref
    c1, c2, c3, c4 = st.columns([1.2, 1.2, 1, 1])
    offset = c1.slider("Start this far from the trained value", -3.0, 3.0, float(start), 0.25, key=f"{key}_start")
    rate = c2.select_slider("Learning rate", LEARNING_RATES, value=lr if lr in LEARNING_RATES else 0.3,
                            key=f"{key}_lr")
    path = st.session_state[path_key]
    if not path or abs(path[0].value - (curve.trained + offset)) > 1e-9:
        path = [landscape.loss_and_slope(net, ref, curve.trained + offset, x, y)]
    if c3.button("Take a step", key=f"{key}_step", type="primary", width="stretch"):
        last = path[-1]
        path = path + [landscape.loss_and_slope(net, ref, last.value - rate * last.slope, x, y)]
    if c4.button("Start again", key=f"{key}_reset", width="stretch"):
        path = path[:1]
    st.session_state[path_key] = path

    st.plotly_chart(loss_slice_figure(curve, path), key=f"{key}_fig")
    last = path[-1]
    if len(path) > 1:
        before = path[-2]
        st.markdown(
            f"Step {len(path) - 1}: new weight = old weight − learning rate × slope = "
            f"{before.value:.3f} − {rate:g} × ({before.slope:.4f}) = **{last.value:.3f}**; "
            f"the loss went from {before.loss:.4f} to **{last.loss:.4f}**."
        )
    else:
        st.markdown(
            f"At {last.value:.3f} the loss is {last.loss:.4f} and its slope is **{last.slope:.4f}**: "
            + ("uphill to the right, so a step goes left." if last.slope > 0 else "uphill to the left, so a step goes right.")
        )
    st.caption(
        f"The curve is the real mean loss of the pretrained FCNet on {len(y):,} training digits as this one weight "
        f"(`{ref.layer}.weight[{ref.row}, {ref.col}]`, from neuron {ref.col} of the layer before into "
        f"{'class ' if ref.layer == 'output' else 'neuron '}{ref.row}) moves; all other "
        f"{sum(p.numel() for p in net.parameters()) - 1:,} weights stay at their trained values. The slope is the one "
        "backpropagation computes for this weight."
    )
