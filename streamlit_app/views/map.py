"""Where a digit lands: every test digit as a dot, layer by layer, and the current digit placed among them."""

import streamlit as st

from streamlit_app import state
from streamlit_app.widgets.context import current_digit_sidebar, network_picker
from streamlit_app.widgets.digit_input import drawing_canvas
from streamlit_app.widgets.embedding import digit_map


def draw() -> None:
    current_digit_sidebar()
    net = network_picker()
    st.title("Where a digit lands")
    intro, canvas = st.columns([2, 1])
    with canvas:
        before = state.current_digit().ref
        drawing_canvas(key="map_canvas")
        if state.current_digit().ref != before:
            st.rerun()  # a new drawing: draw the page again so the sidebar shows it too
    with intro:
        st.markdown(
            "Each layer turns a digit into a list of numbers: 784 pixels, then a few hidden activations, then ten "
            "scores. Put the lists of all the test digits on a flat map, nearby dots for similar lists, and see how "
            "far the ten classes have come apart at each layer: the caption under the map measures it.\n\n"
            f"The black star is the current digit, **{state.current_digit().source}**. Draw another one here and "
            "see where it lands, and which training digits it lands next to."
        )
    digit_map(key="map", net=net)


draw()
