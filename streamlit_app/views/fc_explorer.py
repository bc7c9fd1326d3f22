"""Fully connected network, step by step: 3Blue1Brown's picture with the real numbers.

The page is built from the widgets in ``streamlit_app.widgets.fc`` (the lessons
embed the same ones): the network at a glance, the forward pass one step at a
time, one neuron's weighted sum, and every first-layer neuron's weights.
"""

import streamlit as st

from digitrec import models
from streamlit_app.widgets.context import current_digit_sidebar, network_picker
from streamlit_app.widgets.units import unit_link
from streamlit_app.widgets.fc import fc_forward_steps, fc_network_diagram, fc_neuron, fc_weight_grid


def draw() -> None:
    st.title("Fully connected network, step by step")
    digit = current_digit_sidebar()
    net = network_picker(cnn=False)
    st.markdown(
        f"Follow **{digit.source}** through **{models.display_name(net.config)}**, the kind of network in "
        "3Blue1Brown's *But what is a neural network?*: every pixel is connected to every neuron of the first "
        "layer, every neuron of one layer to every neuron of the next. Each number below is the one the network "
        "really computed."
    )
    fc_network_diagram(key="fc_diagram", net=net, digit=digit)
    unit_link(key="fc_unit_link", net=net)  # any neuron's biography, and the dead neurons named

    steps_tab, neuron_tab, grid_tab = st.tabs(["Step by step", "Pick a neuron", "All first-layer neurons"])
    with steps_tab:
        st.caption("Walk through the forward pass with Previous / Next or the slider. The link keeps the step.")
        fc_forward_steps(key="fc_steps", net=net, digit=digit, url=True)
    with neuron_tab:
        st.caption(
            "One neuron's weighted sum written out: its weights, what each weight times its input gave, and the "
            "total. It starts at the first layer's most active neuron for this digit."
        )
        fc_neuron(key="fc_neuron", net=net, digit=digit, url=True)
    with grid_tab:
        st.caption(
            "What every first-layer neuron looks for, side by side: the TensorFlow Playground / 3Blue1Brown view."
        )
        fc_weight_grid(key="fc_grid", net=net, digit=digit, layer="fc_1")


draw()
