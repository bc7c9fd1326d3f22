"""The sidebar every explorer page shares: the current digit and the network picker."""

from __future__ import annotations

import streamlit as st

from digitrec.viz.digits import digit_figure
from streamlit_app import state


def current_digit_sidebar() -> state.Digit:
    """Show the current digit in the sidebar with a link to change it; return it."""
    digit = state.current_digit()
    with st.sidebar:
        st.markdown("**Current digit**")
        st.plotly_chart(digit_figure(digit.pixels, height=150), key="sidebar_digit")
        label = f" (labelled {digit.label})" if digit.label is not None else ""
        st.caption(f"{digit.source}{label}")
        st.page_link("views/draw.py", label="Draw or pick another digit", icon=":material/draw:")
    return digit


def network_picker(cnn: bool | None = None, key: str = "net_picker") -> state.Network:
    """A sidebar select box over the networks (of one kind if ``cnn`` is given); remembers the choice."""
    nets = state.networks() if cnn is None else state.networks_of_kind(cnn)
    if not nets:
        st.error("No network of this kind is loaded. Run `make weights` to rebuild the pretrained weights.")
        st.stop()
    keys = list(nets)
    shown = state.network() if cnn is None else state.network_of_kind(cnn)
    chosen = shown.key if shown is not None else keys[0]
    index = keys.index(chosen) if chosen in keys else 0
    with st.sidebar:
        key_chosen = st.selectbox("Network", keys, index=index, format_func=lambda k: nets[k].label, key=key)
    if key_chosen != chosen:  # only a real choice changes it: a page of the other kind must not
        state.set_network(key_chosen)
    return nets[key_chosen]


def network_of_kind(net: state.Network | None, *, cnn: bool) -> state.Network | None:
    """The network a widget of one kind (convolutional or fully connected) shows: ``net`` if it is of that
    kind, else the session's choice of that kind, else the first; None after one sentence if none is loaded."""
    if net is not None and net.is_cnn == cnn:
        return net
    chosen = state.network_of_kind(cnn=cnn)
    if chosen is None:
        st.info(f"No {'convolutional' if cnn else 'fully connected'} network is loaded. "
                "Run `make weights` to rebuild the pretrained weights.")
    return chosen
