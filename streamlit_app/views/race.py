"""The FC-vs-CNN race: train both on the same digits and compare accuracy against seconds."""

from __future__ import annotations

import streamlit as st

from streamlit_app import state
from streamlit_app.widgets.training import RACE_SLOT, make_race, race_controls, race_settings, race_view, scale_panel


def draw() -> None:
    st.title("FC vs CNN: the race")
    st.markdown(
        "The convolutional network takes longer to get through an epoch than the fully connected one. Why? "
        "Train both on the **same digits, with the same seed and batch size**, and compare: the chart shows "
        "accuracy on held-out validation digits against training seconds, the table what each network costs per digit and how fast it "
        "got where."
    )
    state.require_mnist()
    race_now = state.training_run(RACE_SLOT)
    active = race_now is not None and race_now.status.active
    values = race_settings(key="race", disabled=active)
    race_controls(key="race", slot=RACE_SLOT, make=lambda: make_race(values))
    race_view(key="race", slot=RACE_SLOT, values=values)

    with st.expander("And on a bigger task? Scale the images up and measure both networks"):
        scale_panel(key="race_scale")

    with st.expander("Beyond speed: move the digit and see which network still recognises it"):
        from streamlit_app.widgets.compare import shift_test

        shift_test(key="race_shift")


draw()
