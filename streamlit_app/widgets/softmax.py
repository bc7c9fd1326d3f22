"""The softmax step, explained with the current digit's real scores."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from digitrec.inspection import capture_activations, softmax_step
from digitrec.viz.softmax import softmax_figure
from streamlit_app import state


def softmax_explainer(net: state.Network, digit: state.Digit, key: str = "softmax") -> None:
    """Logits -> exp -> divide by the sum, as a chart and a table, with one class highlighted."""
    logits = list(capture_activations(net.model, digit.x).values())[-1][0]  # (10,)
    step = softmax_step(logits)
    winner = int(step.probs.argmax())
    chosen = st.selectbox(
        "Highlight the digit", list(range(10)), index=winner, key=f"{key}_class",
        help="Shows this digit's term of the softmax in the formula below.",
    )
    st.plotly_chart(softmax_figure(step, highlight=chosen), key=f"{key}_fig")
    z, m = float(step.logits[chosen]), float(step.logits.max())
    st.latex(
        rf"p_{{{chosen}}} = \frac{{e^{{z_{{{chosen}}}}}}}{{\sum_j e^{{z_j}}}}"
        rf" = \frac{{e^{{{z:.2f} - {m:.2f}}}}}{{{step.total:.4f}}}"
        rf" = \frac{{{float(step.exps[chosen]):.4f}}}{{{step.total:.4f}}} = {float(step.probs[chosen]):.4f}"
    )
    st.caption(
        "Subtracting the largest score before exp() changes nothing in the result (it cancels in the fraction) "
        "but keeps exp() from overflowing."
    )
    table = pd.DataFrame(
        {
            "score z": step.logits.numpy(),
            "z − max(z)": step.shifted.numpy(),
            "exp(z − max)": step.exps.numpy(),
            "probability": step.probs.numpy(),
        },
        index=pd.Index(range(10), name="digit"),
    )
    with st.expander("Every number of the softmax"):
        st.dataframe(table.style.format("{:.4f}"))


def softmax_widget(*, key: str, net: str = "", digit: state.Digit | None = None) -> None:
    """Keyword-only form for lessons: ``net`` is "fc", "cnn" or empty for the chosen network."""
    softmax_explainer(state.network(net or None), digit or state.current_digit(), key=key)


def loss_widget(*, key: str, net: str = "", digit: state.Digit | None = None) -> None:
    """Cross-entropy for the current digit: -log of the probability given to the right answer."""
    network = state.network(net or None)
    digit = digit or state.current_digit()
    logits = list(capture_activations(network.model, digit.x).values())[-1][0]
    step = softmax_step(logits)
    probs = step.probs
    default = digit.label if digit.label is not None else int(probs.argmax())
    target = st.selectbox(
        "The right answer is", list(range(10)), index=default, key=f"{key}_target",
        help="For a drawing we don't know the truth: pick what you meant to draw.",
    )
    p = float(probs[target])
    # -log p computed as log(sum exp) - z: exact even when p is too small to write down
    loss = math.log(step.total) - float(step.shifted[target])
    shown = f"{p:.2%}" if p >= 1e-4 else f"{p:.2e}"
    c1, c2 = st.columns(2)
    c1.metric(f"{network.label}: probability of {target}", shown)
    c2.metric("cross-entropy loss  −log p", f"{loss:.3f}")
    p_tex = f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}".replace("e-", r"\times 10^{-") + "}"
    st.latex(rf"\mathrm{{loss}} = -\log p_{{{target}}} = -\log {p_tex} = {loss:.3f}")
    st.caption(
        "The loss is 0 when the network gives the right answer probability 1, and grows without limit as that "
        "probability falls towards 0. Training nudges every weight to make this number smaller on average."
    )
