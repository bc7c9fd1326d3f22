"""Which pixels made the network say that? Attribution maps, for the page and the lessons.

Three widgets, each with keyword-only arguments and a ``key`` that prefixes
every Streamlit key inside it:

- ``attribution_compare``: one method, every network, side by side, over the digit;
- ``attribution_classes``: one method, one network, a map for each of the ten classes;
- ``attribution_sanity``: one method on the trained network and on a copy with random weights.

The maps come from ``digitrec.attribution`` through the cache in
``streamlit_app.state``; the figures from ``digitrec.viz.attribution``.
"""

from __future__ import annotations

import math

import streamlit as st

from digitrec.attribution import BY_CONSTRUCTION, METHODS, methods_for, sanity_verdict
from digitrec.errors import DigitrecError
from digitrec.inspection import predict_proba
from digitrec.viz.attribution import (
    HOW_TO_READ,
    classes_figure,
    completeness,
    completeness_sentence,
    format_delta,
    legend_text,
    overlay_figure,
    rank_correlation,
    reddest_class_sentence,
    sanity_figure,
)
from digitrec.viz.digits import percent_sure
from streamlit_app import state

# Charts use plotly's own theme: Streamlit's theme stretches the axes' frame
# past square images (scaleanchor with constrain="domain").

PREDICTED = -1  # target choice: each network's own answer


def unavailable_reason(method: str, net: state.Network) -> str | None:
    """Why ``method`` cannot explain ``net``, in a sentence; None when it can."""
    if method in methods_for(net.model):
        return None
    if method == "grad_cam":
        return (
            f"Grad-CAM is not available for {net.label}: it weighs the feature maps of a convolution layer, "
            "and a fully connected network has none. Its first layer flattens the digit into 784 numbers, "
            "so no layer keeps a map of *where* things are. Pick TinyVGG, or another method."
        )
    return f"{METHODS[method].label} is not available for {net.label}."


def _method_select(label: str, method: str, key: str) -> str:
    options = list(METHODS)
    # Once the key is in session state its value wins; index 0 then avoids Streamlit's
    # "default value and Session State" warning.
    index = options.index(method) if method in options and key not in st.session_state else 0
    return st.selectbox(label, options, index=index, format_func=lambda m: METHODS[m].label, key=key)


def _network_select(network: str, key: str) -> state.Network:
    nets = state.networks()
    if not nets:
        st.error("No network could be loaded. Run `make weights` to rebuild the pretrained weights.")
        st.stop()
    keys = list(nets)
    index = keys.index(network) if network in keys else 0
    chosen = st.selectbox("Network", keys, index=index, format_func=lambda k: nets[k].label, key=key)
    return nets[chosen]


def how_to_read(method: str) -> None:
    """The method in one sentence, and how to read its colours."""
    st.markdown(f"**{METHODS[method].label}.** {METHODS[method].explanation}")
    st.caption("How to read it: " + HOW_TO_READ[method])


def _predicted(net: state.Network, digit: state.Digit) -> tuple[int, float]:
    probs = predict_proba(net.model, digit.x)[0]  # (10,)
    winner = int(probs.argmax())
    return winner, float(probs[winner])


def _classes_legend(method: str) -> str:
    if method == "saliency":
        return "red: pixels where a small change moves that class's score most (saliency has no sign)."
    if method == "grad_cam":
        return "red: regions whose features raised that class's score."
    return "red: pixels that pushed towards the map's class; blue: pixels that pushed away."


def _completeness_note(attr, net: state.Network) -> None:
    check = completeness(attr)
    if check is None:
        return
    name = "convergence delta" if attr.method == "integrated_gradients" else "completeness gap (delta)"
    st.metric(
        f"{attr.label} {name}", format_delta(check.delta),
        help="sum of the pixel scores − (score on the digit − score on the blank canvas), in logit units",
    )
    sentence = completeness_sentence(attr, check, net.config.architecture)
    if check.small or attr.method == "gradient_shap":
        st.caption(sentence)
    else:
        st.warning(sentence)


def attribution_compare(
    *, key: str, digit: state.Digit | None = None, method: str = "integrated_gradients", target: int = PREDICTED
) -> str:
    """Every network on the same digit with the same method, side by side, maps over the digit.

    method: a key of digitrec.attribution.METHODS (the select box's default).
    target: the class to explain, 0-9, or -1 for each network's own answer.
    Returns the method chosen in the select box.
    """
    digit = digit or state.current_digit()
    nets = state.networks()
    left, right = st.columns(2)
    with left:
        method = _method_select("Method", method, f"{key}_method")
    with right:
        options = [PREDICTED, *range(10)]
        target = int(target)  # a lesson may pass it as text
        target = st.selectbox(
            "Explain the score for", options, index=options.index(target) if target in options else 0,
            format_func=lambda t: "each network's own answer" if t == PREDICTED else f"'{t}'",
            key=f"{key}_target", help="Ask why a network said its answer, or what in the digit speaks for another digit.",
        )
    how_to_read(method)
    for col, net in zip(st.columns(len(nets)), nets.values()):
        with col:
            winner, p = _predicted(net, digit)
            explained = winner if target == PREDICTED else target
            st.markdown(f"**{net.label}** says **{winner}** ({percent_sure(p)}); explaining **'{explained}'**.")
            reason = unavailable_reason(method, net)
            if reason:
                st.info(reason)
                continue
            try:
                attr = state.attribution_map(net, digit, method, explained)
            except DigitrecError as e:
                st.warning(str(e))
                continue
            st.plotly_chart(overlay_figure(digit.pixels, attr), key=f"{key}_fig_{net.key}", theme=None)
            st.caption(legend_text(method, explained))
            _completeness_note(attr, net)
    return method


def _one_network_setup(key: str, digit: state.Digit | None, method: str, network: str):
    """Method and network pickers for a one-network view; None (after saying why) if the method
    does not apply to that network, else (digit, method, net, the network's (10,) probabilities)."""
    digit = digit or state.current_digit()
    left, right = st.columns(2)
    with left:
        method = _method_select("Method", method, f"{key}_method")
    with right:
        net = _network_select(network, f"{key}_network")
    reason = unavailable_reason(method, net)
    if reason:
        st.info(reason)
        return None
    return digit, method, net, predict_proba(net.model, digit.x)[0]


def attribution_classes(
    *, key: str, digit: state.Digit | None = None, method: str = "saliency", network: str = "cnn"
) -> None:
    """One network, one method, a map for each of the ten classes: "what would make it a 3?"."""
    chosen = _one_network_setup(key, digit, method, network)
    if chosen is None:
        return
    digit, method, net, probs = chosen
    winner = int(probs.argmax())
    try:
        attrs = state.attribution_all_classes(net, digit, method)
    except DigitrecError as e:
        st.warning(str(e))
        return
    st.markdown(
        f"Each map explains the score of one digit class for {net.label}, all on one colour scale. "
        f"Compare its answer, **{winner}**, with the others: another class's map shows which pixels of this "
        "digit matter for that class, and (for the signed methods) what already looks like it (red) "
        "and what speaks against it (blue)."
    )
    st.plotly_chart(classes_figure(digit.pixels, attrs, predicted=winner), key=f"{key}_fig", theme=None)
    note = reddest_class_sentence(attrs, probs, winner, net.label)
    st.caption(_classes_legend(method) + " The grey line outlines the digit." + (f" {note}" if note else ""))


def attribution_sanity(
    *, key: str, digit: state.Digit | None = None, method: str = "saliency", network: str = "cnn"
) -> None:
    """The sanity check of Adebayo et al. (2018): does the map change when the weights are random?"""
    chosen = _one_network_setup(key, digit, method, network)
    if chosen is None:
        return
    digit, method, net, probs = chosen
    winner = int(probs.argmax())
    try:
        trained = state.attribution_map(net, digit, method, winner)
        randomized = state.attribution_map(net, digit, method, winner, randomized=True)
    except DigitrecError as e:
        st.warning(str(e))
        return
    st.markdown(
        f"Left: {METHODS[method].label} for {net.label}'s answer **'{winner}'**. Right: the same method and class "
        "for a copy of the network whose weights were all re-drawn at random, as before training. "
        "A method that explains the *model* must give a different map for a model that knows nothing."
    )
    if method in BY_CONSTRUCTION:
        st.caption(
            f"What to expect: {METHODS[method].label} {BY_CONSTRUCTION[method]}. Expect them "
            "to be partly alike even for a network that knows nothing; what counts is how much they differ "
            "within the strokes."
        )
    st.plotly_chart(sanity_figure(digit.pixels, trained, randomized), key=f"{key}_fig", theme=None)
    rho = rank_correlation(trained.values, randomized.values)
    ink = digit.x > 0
    rho_ink = rank_correlation(trained.values, randomized.values, where=ink)
    if math.isnan(rho):
        if float(randomized.values.abs().max()) == 0 and float(trained.values.abs().max()) > 0:
            st.success(
                f"The random network's map is zero everywhere (nothing in it raised the score for '{winner}'), "
                "while the trained network's is not: this map depends on what the model learned. "
                "A method whose map barely changed would explain the image, not the model."
            )
        else:
            st.info("One of the two maps is flat (the same value everywhere), so there is no ranking to compare.")
        return
    whole, inside = st.columns(2)
    whole.metric(
        "Similarity of the two maps (whole image)", f"{rho:.2f}",
        help="Spearman rank correlation of |attribution| over all 784 pixels: 1 means both maps rank the pixels "
        "in the same order, 0 means unrelated orders.",
    )
    inside.metric(
        "Similarity on the ink only", "n/a" if math.isnan(rho_ink) else f"{rho_ink:.2f}",
        help=f"The same correlation over the {int(ink.sum())} pixels that hold ink.",
    )
    level, sentence = sanity_verdict(rho, rho_ink)
    show = {"depends": st.success, "partly": st.info, "image": st.warning}[level]
    show(sentence + " A method whose map barely changes when the weights are random explains the image, not the model.")
