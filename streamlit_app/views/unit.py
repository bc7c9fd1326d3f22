"""Inside a unit: one neuron of FCNet or one feature map of TinyVGG, its biography, and changing it to watch.

The unit lives in the URL (``?layer=conv_2_1&unit=3&net=cnn``) so the explorers can link to it.
"""

import streamlit as st

from streamlit_app.widgets.context import current_digit_sidebar, network_picker
from streamlit_app.widgets.units import unit_biography, unit_intervention


def draw() -> None:
    digit = current_digit_sidebar()
    net = network_picker()
    st.title("Inside a unit")
    st.caption(
        f"{net.label}, with {digit.source} as the current digit. A unit is one neuron of a fully connected layer or "
        "one feature map of a convolution. What does it respond to? The test digits that excite it most, the "
        "picture it likes best, how often it fires, and what the scores lose without it."
    )
    unit_biography(key="unit_bio", net=net, url=True)
    st.divider()
    st.subheader("Change a unit and watch")
    st.caption("Switch a unit off, hold it at a value, or type a new weight: the current digit's scores recompute "
               "at once. Your changes live on your own copy; Reset brings the trained network back.")
    unit_intervention(key="unit_change", net=net)


draw()
