"""Where a network goes wrong on the 10,000 test digits: its confusion matrix and its most confident mistakes.

The Mistakes page and the lessons use these same functions.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st
import torch

from digitrec import mistakes
from digitrec.viz.confusion import confusion_figure, digit_grid_figure
from digitrec.viz.digits import percent_sure
from streamlit_app import state
from streamlit_app.widgets.predictions import short_name

GRID_SIZE = 36  # thumbnails shown per grid (six rows of six)


def _chosen(network: str, net: state.Network | None) -> state.Network | None:
    """``net`` if given; else the pretrained network named by ``network`` ("fc", "cnn"); "" the chosen one."""
    if net is not None:
        return net
    if network:
        found = state.networks().get(network)
        if found is None:
            st.warning(f"There is no network {network!r}; use fc or cnn.")
        return found
    return state.network()


def tiny_name(net: state.Network) -> str:
    """'FC' or 'CNN' (prefixed 'my' for this session's own): fits under a thumbnail."""
    kind = "CNN" if net.is_cnn else "FC"
    return kind if net.key in state.PRETRAINED_LABELS else f"my {kind}"


def caption_networks(chosen: state.Network) -> dict[str, state.Network]:
    """The networks whose confidence each thumbnail shows: both pretrained ones and the chosen one."""
    nets = {k: n for k, n in state.networks().items() if k in state.PRETRAINED_LABELS}
    nets[chosen.key] = chosen
    return nets


def thumbnails(indices: list[int], nets: dict[str, state.Network], labels: torch.Tensor,
               key: str, highlight: int | None = None, tile_px: int = 90) -> None:
    """A grid of test digits, each with every network's guess and confidence."""
    images = state.require_mnist().test.images[indices].float() / 255.0  # (K, 28, 28)
    probs = {k: state.test_probabilities(n) for k, n in nets.items()}
    captions, hovers = [], []
    for i in indices:
        guesses = {k: mistakes.top_guess(probs[k][i]) for k in nets}
        captions.append(f"#{i}<br>" + "<br>".join(f"{tiny_name(nets[k])} {d} · {percent_sure(p)}"
                                               for k, (d, p) in guesses.items()))
        hovers.append(f"test digit #{i}, labelled {int(labels[i])}<br>"
                      + "<br>".join(f"{nets[k].label} says {d} ({percent_sure(p, 1)})" for k, (d, p) in guesses.items()))
    st.plotly_chart(digit_grid_figure(images, captions, hovers, columns=6, highlight=highlight, tile_px=tile_px),
                    key=key)


def confusion_matrix(
    *, key: str, network: str = "", net: state.Network | None = None,
    highlight: tuple[int, int] | None = None, on_select: Callable[[], None] | None = None,
) -> torch.Tensor | None:
    """The network's confusion matrix on the test digits (rows: true class, columns: its answer); returns it (10, 10).

    network: "fc" or "cnn" (empty: the one chosen in the sidebar). A page may pass
    ``on_select`` to let a click on a cell choose it (the chart's key is ``key``).
    """
    net = _chosen(network, net)
    if net is None:
        return None
    labels = state.require_mnist().test.labels  # (10000,)
    cm = mistakes.confusion_matrix(state.test_probabilities(net), labels)
    acc = mistakes.accuracy(cm)
    fig = confusion_figure(cm, title=f"{short_name(net)}: {acc:.2%} right", highlight=highlight)
    if on_select is None:
        st.plotly_chart(fig, key=key)
    else:
        st.plotly_chart(fig, key=key, on_select=on_select, selection_mode="points")
    t, p = mistakes.most_confused(cm)
    st.caption(f"{int(cm.trace()):,} of {int(cm.sum()):,} right. Darker = more digits. The colour scale stops at "
               "the largest mistake, so the diagonal (the right answers, far more) is all the darkest blue; "
               f"hover a cell for its share of that true digit. The most common mistake: a true {t} read as "
               f"{p} ({int(cm[t, p])} times).")
    return cm


def confident_mistakes(*, key: str, network: str = "", count: int = 12) -> None:
    """The network's ``count`` most confident wrong answers on the test digits, most confident first."""
    net = _chosen(network, None)
    if net is None:
        return
    labels = state.require_mnist().test.labels
    wrong = mistakes.cell_digits(state.test_probabilities(net), labels)  # every mistake, most confident first
    count = max(1, min(int(count), GRID_SIZE))
    st.markdown(f"**{short_name(net)} is wrong on {len(wrong):,} of {len(labels):,} test digits.** "
                f"Its {min(count, len(wrong))} most confident mistakes (true label first, then each network's "
                "answer and how sure it is):")
    if not wrong:
        st.info("It gets every test digit right.")
        return
    thumbnails([m.index for m in wrong[:count]], caption_networks(net), labels, key=f"{key}_grid")
    worst = wrong[0]
    st.caption(f"The worst: test digit #{worst.index}, labelled {worst.label}, read as {worst.predicted} with "
               f"{worst.confidence:.1%}. Some of these are hard to read even for a person, and a few labels "
               "are arguably wrong.")
