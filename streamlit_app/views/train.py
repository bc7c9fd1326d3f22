"""Train a network: choose it, train it live in the background, replay it, keep it."""

from __future__ import annotations

import streamlit as st

from streamlit_app import state
from streamlit_app.widgets.context import current_digit_sidebar
from streamlit_app.widgets.own_model import model_import
from streamlit_app.widgets.training import (
    TRAIN_SLOT,
    checkpoint_upload,
    make_run,
    run_controls,
    run_view,
    training_settings,
)


def draw() -> None:
    st.title("Train a network")
    st.markdown(
        "Pick a network and how to train it, press **Start**, and watch it learn: the loss falls, the accuracy "
        "climbs, the probe digit's prediction firms up and the first layer's weights turn from noise into "
        "strokes. Training runs in the background: you can pause it, step it one batch at a time, or visit "
        "other pages and come back. Too fast to follow? **More settings → Slow motion**."
    )
    dataset = state.require_mnist()
    digit = current_digit_sidebar()
    run = state.training_run(TRAIN_SLOT)
    active = run is not None and run.status.active

    values = training_settings(key="train", disabled=active)

    if active:
        st.caption(f"Training **{run.spec.name}**: the settings are locked until the run ends.")
    run_controls(key="train", slot=TRAIN_SLOT, make_run=lambda: make_run(values, dataset, digit.pixels))
    run_view(key="train", slot=TRAIN_SLOT)

    with st.expander("Load a network you trained and downloaded before"):
        checkpoint_upload(key="train_upload")
    with st.expander("Bring your own model from a notebook (a saved state dict)", expanded=False):
        model_import(key="train_import")


draw()
