"""Mistakes: the confusion matrix of a network on the 10,000 test digits, and the digits behind it."""

from __future__ import annotations

import streamlit as st
import torch

from digitrec import mistakes
from digitrec.viz.digits import digit_figure, percent_sure
from streamlit_app import state
from streamlit_app.widgets.context import current_digit_sidebar, network_picker
from streamlit_app.widgets.mistakes import GRID_SIZE, caption_networks, confusion_matrix, thumbnails
from streamlit_app.widgets.predictions import predictions, short_name
CLASSES = [None, *range(10)]  # None: any class
TRUE_KEY, PRED_KEY, POS_KEY, CELL_KEY = "mistakes_true", "mistakes_pred", "mistakes_pos", "mistakes_cell"
CHART_KEY = "mistakes_matrix"


def _any(c: int | None) -> str:
    return "any" if c is None else str(c)


def _from_url(name: str, default: int | None) -> int | None:
    """A class from the URL ('any' is None), or ``default`` when the URL has none."""
    value = st.query_params.get(name)
    if value == "any":
        return None
    if value is None:
        return default
    number = state.query_int(name, -1)
    return number if 0 <= number <= 9 else default


def _pick_cell_from_chart() -> None:
    """Clicking a cell of the heatmap selects it (a callback: runs before the page redraws)."""
    points = st.session_state[CHART_KEY].selection.get("points", [])
    if points:
        st.session_state[TRUE_KEY] = int(points[0]["y"])
        st.session_state[PRED_KEY] = int(points[0]["x"])


def _step(delta: int, count: int) -> None:
    st.session_state[POS_KEY] = mistakes.step(st.session_state.get(POS_KEY, 0), count, delta)


def _open(index: int) -> None:
    state.set_current_digit(state.test_digit(index))


def draw() -> None:
    st.title("Where the networks go wrong")
    dataset = state.require_mnist()
    current_digit_sidebar()
    net = network_picker(key="mistakes_net")
    labels = dataset.test.labels  # (10000,)
    probs = state.test_probabilities(net)  # (10000, 10), softmax over classes
    cm = mistakes.confusion_matrix(probs, labels)

    st.markdown(
        f"**{net.label}** read all {len(labels):,} test digits, which it never saw while training. "
        "Each row of the table is a true digit and each column the network's answer, so the diagonal holds "
        "the digits it got right and every other cell a kind of mistake. Pick a cell (click it, or use the "
        "boxes) to see the digits in it."
    )

    # The cell: from the URL on first load, else the network's most common mistake.
    if TRUE_KEY not in st.session_state:
        t0, p0 = mistakes.most_confused(cm)
        st.session_state[TRUE_KEY] = _from_url("true", t0)
        st.session_state[PRED_KEY] = _from_url("pred", p0)

    matrix_col, cell_col = st.columns([1.1, 1])
    with cell_col:
        pick_t, pick_p = st.columns(2)
        true = pick_t.selectbox("True digit", CLASSES, format_func=_any, key=TRUE_KEY)
        pred = pick_p.selectbox("Network's answer", CLASSES, format_func=_any, key=PRED_KEY)
    st.query_params["true"], st.query_params["pred"] = _any(true), _any(pred)
    cell = mistakes.cell_digits(probs, labels, true, pred)
    if st.session_state.get(CELL_KEY) != (net.key, true, pred):  # a new cell starts at its first digit
        st.session_state[CELL_KEY] = (net.key, true, pred)
        st.session_state[POS_KEY] = 0
    pos = min(st.session_state.get(POS_KEY, 0), max(len(cell) - 1, 0))

    with matrix_col:
        highlight = (true, pred) if true is not None and pred is not None else None
        confusion_matrix(key=CHART_KEY, net=net, highlight=highlight, on_select=_pick_cell_from_chart)

    with cell_col:
        right = true is not None and true == pred
        what = (f"{_any(true)}s read correctly" if right else
                f"true {_any(true)}, answered {_any(pred)}: mistakes only")
        st.markdown(f"**{len(cell)} digits** ({what}), the network's most confident first.")
        if not cell:
            st.info(f"{short_name(net)} made no mistake of this kind. Pick another cell.")
        else:
            shown = [m.index for m in cell[:GRID_SIZE]]
            thumbnails(shown, caption_networks(net), labels, key="mistakes_grid",
                       highlight=pos if pos < GRID_SIZE else None, tile_px=72)  # a half-width column
            if len(cell) > GRID_SIZE:
                st.caption(f"The first {GRID_SIZE} of {len(cell)}; step through all of them below.")

    if cell:
        walk(cell, pos, net)
    compare_networks(labels)


def walk(cell: list[mistakes.Mistake], pos: int, net: state.Network) -> None:
    """One digit of the cell at a time, with what every network says about it."""
    m = cell[pos]
    st.subheader("Step through them")
    back, where, forward, _ = st.columns([1.2, 1.2, 1.5, 2.5])
    back.button("← Previous", key="mistakes_prev", on_click=_step, args=(-1, len(cell)))
    where.markdown(f"**{'Digit' if m.label == m.predicted else 'Mistake'} {pos + 1} of {len(cell)}**")
    forward.button("Next mistake →", key="mistakes_next", on_click=_step, args=(1, len(cell)))
    digit = state.Digit(state.require_mnist().test.images[m.index].float() / 255.0,
                        f"test digit #{m.index}", m.label, f"test:{m.index}")
    picture, says = st.columns([1, 2.2])
    with picture:
        st.plotly_chart(digit_figure(digit.pixels, height=260), key="mistakes_digit")
        st.caption(f"Test digit #{m.index}, labelled {m.label}. {short_name(net)} says {m.predicted} "
                   f"({percent_sure(m.confidence, 1)} sure) and gives the true {m.label} {m.true_probability:.1%}.")
        st.button("Open in the explorers", key="mistakes_open", on_click=_open, args=(m.index,), type="primary",
                  help="Makes this the current digit of every page.")
        if state.current_digit().ref == digit.ref:
            st.page_link("views/fc_explorer.py", label="Fully connected explorer", icon=":material/hub:")
            st.page_link("views/cnn_explorer.py", label="Convolutional explorer", icon=":material/grid_view:")
            st.page_link("views/attributions.py", label="What made it say that?", icon=":material/search_insights:")
    with says:
        predictions(key="mistakes_predictions", digit=digit, height=260)
        wrong = [short_name(n) for k, n in state.networks().items()
                 if mistakes.top_guess(state.test_probabilities(n)[m.index])[0] != m.label]
        if len(wrong) > 1:
            who = " and ".join(wrong) if len(wrong) == 2 else ", ".join(wrong)
            st.warning(f"{'Both' if len(wrong) == 2 else 'All of'} {who} are wrong on this digit: "
                       "a hard one, or a doubtful label?")


def compare_networks(labels: torch.Tensor) -> None:
    """Two networks on the same digits: who is right where the other is wrong."""
    nets = state.networks()
    if len(nets) < 2:
        return
    st.subheader("Two networks, the same digits")
    keys = list(nets)
    pick_a, pick_b = st.columns(2)
    a = pick_a.selectbox("First network", keys, index=0, format_func=lambda k: nets[k].label, key="mistakes_a")
    b = pick_b.selectbox("Second network", keys, index=1, format_func=lambda k: nets[k].label, key="mistakes_b")
    if a == b:
        st.info("Pick two different networks to compare them.")
        return
    name_a, name_b = short_name(nets[a]), short_name(nets[b])
    probs_a, probs_b = state.test_probabilities(nets[a]), state.test_probabilities(nets[b])
    agree = mistakes.compare(probs_a, probs_b, labels)
    counts = agree.counts()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Both right", f"{counts['both_right']:,}", border=True)
    c2.metric(f"{name_a} wrong, {name_b} right", f"{counts['only_b_right']:,}", border=True)
    c3.metric(f"{name_a} right, {name_b} wrong", f"{counts['only_a_right']:,}", border=True)
    c4.metric("Both wrong", f"{counts['both_wrong']:,}", f"{counts['same_wrong']:,} give the same answer",
              delta_color="off", delta_arrow="off", border=True)
    st.caption("Where both are wrong with the same answer, the digit itself is often ambiguous (or mislabelled); "
               "where only one is wrong, that network missed something the other one saw.")
    groups = {
        f"{name_a} wrong, {name_b} right": agree.only_b_right,
        f"{name_a} right, {name_b} wrong": agree.only_a_right,
        "Both wrong": agree.both_wrong,
    }
    group = st.radio("Show the digits where", list(groups), horizontal=True, key="mistakes_group")
    indices = groups[group]
    if len(indices) == 0:
        st.info("No digit is in this group.")
        return
    # The most confident wrong answers first: those are the most surprising.
    wrong_probs = probs_a if group.startswith(f"{name_a} wrong") or group == "Both wrong" else probs_b
    order = torch.sort(wrong_probs[indices].max(dim=1).values, descending=True, stable=True).indices
    shown = indices[order][:GRID_SIZE].tolist()
    thumbnails(shown, {a: nets[a], b: nets[b]}, labels, key="mistakes_compare_grid")
    st.caption(f"{min(len(indices), GRID_SIZE)} of {len(indices)} shown. To look inside one, pick its cell above "
               "(its true digit and the answer) and step to it.")


draw()
