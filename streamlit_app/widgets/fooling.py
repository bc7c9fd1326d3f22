"""Breaking the networks: a targeted edit of the current digit, noise they are sure about, drawing to fool them.

Numbers from ``digitrec.fooling``, figures from ``digitrec.viz.fooling``.
Results are kept per (network, digit, target) in the session so reruns are free.
"""

from __future__ import annotations

import streamlit as st

from digitrec import fooling
from digitrec.viz.digits import percent_sure
from digitrec.viz.fooling import edit_figure, noise_answers_figure
from digitrec.viz.units import image_grid
from streamlit_app import state
from streamlit_app.widgets.predictions import short_name

_EDITS_KEY = "_fooling_edits"  # session_state key: {(net key, digit ref, target): Edit}; the latest few


def _pretrained_pair() -> dict[str, state.Network]:
    """One network of each kind: the current FC and CNN choices (the pretrained ones by default)."""
    nets = {}
    for cnn in (False, True):
        net = state.network_of_kind(cnn)
        if net is not None:
            nets[net.key] = net
    return nets


def _edit(net: state.Network, digit: state.Digit, target: int) -> fooling.Edit:
    cache = st.session_state.setdefault(_EDITS_KEY, {})
    k = (net.key, id(net.model), digit.ref, target)
    if k not in cache:
        if len(cache) > 20:
            cache.clear()
        with st.spinner(f"Searching the smallest edit that makes {net.label} say {target}…"):
            cache[k] = fooling.make_it(net.model, digit.pixels, target)
    return cache[k]


def make_it_a(*, key: str, target: int = 9) -> None:
    """Make the current digit read as ``target`` by one network, with the smallest change; both networks' answers."""
    digit = state.current_digit()
    nets = _pretrained_pair()
    if not nets:
        st.info("No network is loaded. Run `make weights` to rebuild the pretrained weights.")
        return
    a, b = st.columns(2)
    victim_key = a.radio("Network to fool", list(nets), format_func=lambda k: nets[k].label, key=f"{key}_net",
                         horizontal=True)
    k_target = f"{key}_target"
    if k_target not in st.session_state:
        st.session_state[k_target] = min(max(int(target), 0), 9)
    goal = b.selectbox("Make it say", list(range(10)), key=k_target)
    victim = nets[victim_key]
    said = {k: int(fooling.predict(n.model, digit.x).argmax()) for k, n in nets.items()}
    if said[victim_key] == goal:
        st.info(f"{victim.label} already says {goal} for {digit.source}. Pick another target digit.")
        return
    edit = _edit(victim, digit, goal)
    if not bool(edit.flipped[0]):
        st.warning(f"Even changing every pixel by up to {fooling.MAX_BUDGET:g} did not make {victim.label} say {goal}.")
        return
    edited = edit.edited[0, 0]
    budget = float(edit.budget[0])
    answers = {k: fooling.predict(n.model, edit.edited)[0] for k, n in nets.items()}
    st.plotly_chart(edit_figure(digit.pixels, edited, budget, (
        f"{digit.source}: {short_name(victim)} says {said[victim_key]}",
        f"the change (no pixel more than {budget:.3f})",
        f"edited: {short_name(victim)} says {int(answers[victim_key].argmax())}")),
        key=f"{key}_fig", config={"displayModeBar": False})
    cols = st.columns(len(nets))
    for col, (k, n) in zip(cols, nets.items()):
        p = answers[k]
        col.metric(f"{n.label} on the edited digit", f"{int(p.argmax())} ({percent_sure(p.max())})",
                   delta=f"was {said[k]}", delta_color="off", delta_arrow="off")  # a note, not a rise
    others = [n for k, n in nets.items() if k != victim_key]
    st.caption(
        f"The smallest budget that flips {victim.label} to {goal}: every pixel may move by at most {budget:.3f} "
        f"(of 1 = full ink); the largest change made is {float((edited - digit.pixels).abs().max()):.3f}. "
        "It was found by stepping each pixel against the gradient of the loss for the target class (iterated FGSM), "
        "a close relative of the gradient a saliency map shows (that one is of the class's score alone), and "
        "halving the budget until the flip stops."
        + ("" if not others else
           f" {others[0].label} {'was fooled too' if int(answers[others[0].key].argmax()) != said[others[0].key] else 'still says ' + str(said[others[0].key])}.")
    )
    if st.button("Use the edited digit as the current digit", key=f"{key}_use"):
        state.set_current_digit(state.pixels_digit(edited, f"{digit.source} edited to fool {short_name(victim)}"))
        st.rerun()
    _transfer(key=key, nets=nets, victim_key=victim_key)


def _transfer(*, key: str, nets: dict[str, state.Network], victim_key: str) -> None:
    if len(nets) < 2:
        return
    victim = nets[victim_key]
    other = next(n for k, n in nets.items() if k != victim_key)
    what = ("transfer", other.key, id(other.model))
    result = None
    if st.button(f"How often does an edit made for {short_name(victim)} fool {short_name(other)}? "
                 f"(measure over {fooling.TRANSFER_DIGITS} test digits)", key=f"{key}_transfer"):
        with st.spinner("Editing 100 test digits…"):
            result = state.model_result(victim, what, lambda: fooling.transfer(
                victim.model, other.model, state.require_mnist().test))
    if result is not None:
        st.markdown(
            f"Over {result.n} test digits both read right, each edited to the next digit (0→1, …, 9→0) with the "
            f"smallest budget that fools {victim.label} (median {result.median_budget:.3f}): {victim.label} was "
            f"fooled by {result.fooled_source}; **{other.label} changed its answer on {result.changed}** and said the "
            f"target on {result.reached}."
        )


def noise_test(*, key: str, kind: str = "uniform", count: int = 1000) -> None:
    """Random pictures that are no digit, and what each network confidently calls them."""
    nets = _pretrained_pair()
    k_kind = f"{key}_kind"
    if st.session_state.get(k_kind) not in fooling.NOISE_KINDS:
        st.session_state[k_kind] = kind if kind in fooling.NOISE_KINDS else "uniform"
    chosen = st.segmented_control("Noise", fooling.NOISE_KINDS, key=k_kind, required=True,
                                  help="uniform: every pixel random in [0, 1]. gaussian: grey plus random. "
                                       "blobs: smooth random shapes of ink.") or "uniform"
    images = fooling.noise_images(chosen, count, seed=0)
    verdicts = {n.label: fooling.noise_verdict(n.model, images) for n in nets.values()}
    shown = images[:8]
    answers = {k: fooling.predict(n.model, shown.unsqueeze(1)) for k, n in nets.items()}
    titles = [" · ".join(f"{short_name(nets[k])} {int(p[i].argmax())} ({percent_sure(p[i].max())})"
                         for k, p in answers.items()) for i in range(len(shown))]
    st.plotly_chart(image_grid(shown, titles, cols=4, cell_px=150), key=f"{key}_images",
                    config={"displayModeBar": False})
    st.plotly_chart(noise_answers_figure({name: v.counts for name, v in verdicts.items()}), key=f"{key}_bars",
                    config={"displayModeBar": False})
    st.caption(" ".join(
        f"{name} calls {v.top_share:.0%} of {count:,} {chosen} noise images a {v.top_class}, with a mean confidence of "
        f"{v.mean_confidence:.0%} ({v.confident_share:.0%} of them above 90 %)." for name, v in verdicts.items())
        + " None of these is a digit: a network trained only on digits has no way to say “none of these”.")


def draw_to_fool(*, key: str) -> None:
    """A challenge: draw a digit that one network misreads while the other reads it right."""
    from streamlit_app.widgets.digit_input import drawing_canvas

    nets = _pretrained_pair()
    if len(nets) < 2:
        st.info("The challenge needs both a fully connected and a convolutional network.")
        return
    a, b = st.columns(2)
    meant = a.selectbox("I will draw a", list(range(10)), index=4, key=f"{key}_meant")
    victim_key = b.radio("…that this network gets wrong", list(nets), format_func=lambda k: nets[k].label,
                         key=f"{key}_victim", horizontal=True)
    left, right = st.columns([1, 1])
    with left:
        drawing_canvas(key=f"{key}_canvas")
    digit = state.current_digit()
    probs = {k: fooling.predict(n.model, digit.x)[0] for k, n in nets.items()}
    said = {k: int(p.argmax()) for k, p in probs.items()}
    with right:
        for k, n in nets.items():
            st.metric(n.label, f"{said[k]} ({percent_sure(probs[k].max())})")
        if fooling.fooled(said, int(meant), victim_key):
            st.success(f"You fooled {nets[victim_key].label}: it reads your {meant} as a {said[victim_key]}, while "
                       "the other network reads it right.", icon=":material/celebration:")
        elif all(s == int(meant) for s in said.values()):
            st.info(f"Both networks read a {meant}. Try a thinner, more slanted or oddly shaped {meant} (where "
                    "you draw it does not matter: every drawing is centred, as MNIST's digits are).")
        elif said[victim_key] != int(meant):
            st.info(f"{nets[victim_key].label} misreads it, but so does the other one: make it look more like a "
                    f"{meant} to a reader.")
        else:
            st.info(f"{nets[victim_key].label} reads it right. Draw another {meant}.")
        st.caption(f"The networks read {digit.source}.")

