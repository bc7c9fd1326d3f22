"""What every network says about one digit: ten probabilities each, side by side."""

from __future__ import annotations

import streamlit as st
import torch

from digitrec.inspection import predict_proba
from digitrec.mistakes import top_guess
from digitrec.viz.digits import percent_sure, probabilities_figure
from streamlit_app import state


def short_name(net: state.Network) -> str:
    """'FCNet' for 'FCNet (pretrained)': the name used in sentences."""
    return net.label.removesuffix(" (pretrained)")


def network_probabilities(digit: state.Digit, nets: dict[str, state.Network]) -> dict[str, torch.Tensor]:
    """{network key: (10,) probabilities of ``digit``}, softmax over the classes."""
    return {k: predict_proba(net.model, digit.x)[0] for k, net in nets.items()}


def disagreement_sentence(guesses: dict[str, tuple[int, float]]) -> str | None:
    """'The networks disagree: FCNet says 4 (61 %), TinyVGG says 9 (88 %).', or None if they agree.

    guesses: network name -> (top digit, its probability 0..1).
    """
    if len({d for d, _ in guesses.values()}) <= 1:
        return None
    said = ", ".join(f"{name} says {d} ({percent_sure(p)})".replace("%", " %") for name, (d, p) in guesses.items())
    return f"The networks disagree: {said}."


def predictions(*, key: str = "predictions", digit: state.Digit | None = None, my_models: bool = True,
                height: int = 300) -> None:
    """Both pretrained networks' (and this session's own networks') probabilities for the digit,
    each network's top guess, a flag when they disagree, and who is right when the label is known."""
    digit = digit or state.current_digit()
    nets = state.networks()
    if not my_models:
        nets = {k: n for k, n in nets.items() if k in state.PRETRAINED_LABELS}
    if not nets:
        st.warning("No network is loaded. Run `make weights` to rebuild the pretrained weights.")
        return
    probs = network_probabilities(digit, nets)
    st.plotly_chart(probabilities_figure({nets[k].label: p for k, p in probs.items()}, height=height),
                    key=f"{key}_probs")
    st.caption("Each bar is how sure a network is that the digit is that class; each network's ten bars add up to 100 %.")

    guesses = {short_name(nets[k]): top_guess(p) for k, p in probs.items()}
    for col, (name, (d, p)) in zip(st.columns(len(guesses)), guesses.items()):
        verdict = ""
        if digit.label is not None:
            verdict = "right" if d == digit.label else f"wrong (labelled {digit.label})"
        col.metric(f"{name} says", str(d), f"{percent_sure(p, 1)} sure", delta_color="off", delta_arrow="off", border=True)
        if verdict:
            col.markdown(verdict)
    sentence = disagreement_sentence(guesses)
    if sentence:
        st.warning(sentence, icon=":material/warning:")
    elif len(guesses) > 1:
        # What they read, not what it is: two networks can agree on a digit and both be wrong.
        st.success(f"The networks agree: each reads it as a {next(iter(guesses.values()))[0]}.")
