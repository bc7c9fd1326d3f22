"""What made it say that? Captum's attribution maps for every network on the current digit."""

import streamlit as st

from digitrec.attribution import METHODS
from streamlit_app.widgets.attribution import attribution_classes, attribution_compare, attribution_sanity
from streamlit_app.widgets.context import current_digit_sidebar

DEFAULT_METHOD = "integrated_gradients"
_LAST_METHOD_KEY = "_attr_page_method"  # the top method the tabs were last set to follow


def draw() -> None:
    digit = current_digit_sidebar()
    st.title("What made it say that?")
    st.markdown(
        "An **attribution** gives every pixel of the digit a score: how much it pushed the network "
        "towards (red) or away from (blue) one class. Different methods ask the question differently, "
        "so their maps differ; below you can compare the networks, ask about every class, and check "
        "whether a method explains the network at all."
    )
    method = st.query_params.get("method", DEFAULT_METHOD)
    method = method if method in METHODS else DEFAULT_METHOD
    method = attribution_compare(key="attr_compare", digit=digit, method=method)
    if st.query_params.get("method") != method:
        st.query_params["method"] = method  # so a shared link opens on the same method
    if st.session_state.get(_LAST_METHOD_KEY) != method:
        # The tabs follow the method chosen at the top (each can still be changed on its own).
        st.session_state[_LAST_METHOD_KEY] = method
        st.session_state["attr_classes_method"] = method
        st.session_state["attr_sanity_method"] = method

    classes_tab, sanity_tab = st.tabs(["What would make it a 0, 1, … 9? (all ten classes)", "Sanity check: random weights"])
    with classes_tab:
        attribution_classes(key="attr_classes", digit=digit, method=method, network="cnn")
    with sanity_tab:
        attribution_sanity(key="attr_sanity", digit=digit, method=method, network="cnn")


draw()
