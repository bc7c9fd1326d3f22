"""Draw & predict: draw (or pick) a digit and see what both networks say about it."""

import streamlit as st

from digitrec.viz.digits import digit_figure
from streamlit_app import state
from streamlit_app.widgets.digit_input import digit_input, warn_if_not_a_digit
from streamlit_app.widgets.predictions import predictions
from streamlit_app.widgets.preprocess_view import preprocess_view


def draw() -> None:
    st.title("Draw a digit and see what the networks say")
    st.markdown(
        "Draw a digit with the mouse, or pick one. Both networks read the same 28 x 28 grey image "
        "and give each of the ten digits a probability."
    )

    source, seen = st.columns([1.15, 1])
    with source:
        digit_input(key="draw_input")  # may change the current digit, so it runs first
    digit = state.current_digit()
    with seen:
        st.subheader("What the networks receive")
        st.plotly_chart(digit_figure(digit.pixels, height=300), key="draw_seen")
        label = f", labelled {digit.label}" if digit.label is not None else ""
        st.caption(
            f"{digit.source}{label}, shrunk to 28 x 28 pixels, each a grey value from 0 (black) "
            "to 1 (white). Hover a pixel for its value. This small picture is all a network ever sees."
        )
        warn_if_not_a_digit(digit)  # here, not in a tab: the page's rerun may show the Draw tab after an upload

    with st.expander("How your drawing became 28 x 28"):
        preprocess_view(key="draw_steps", digit=digit)

    st.subheader("What each network says")
    predictions(key="draw_predictions", digit=digit)

    st.subheader("Look inside")
    fc, cnn, why = st.columns(3)
    fc.page_link("views/fc_explorer.py", label="Inside the fully connected network", icon=":material/hub:")
    cnn.page_link("views/cnn_explorer.py", label="Inside the convolutional network", icon=":material/grid_view:")
    why.page_link("views/attributions.py", label="Which pixels made them decide?", icon=":material/search_insights:")
    st.caption("Each page opens with this digit.")


draw()
