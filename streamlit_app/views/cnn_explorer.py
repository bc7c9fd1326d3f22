"""Convolutional network, step by step: every feature map of TinyVGG for the current digit,
then each operation (convolution, ReLU, max pooling, the output) explained with its real numbers.

View choices live in the URL: ``?scope=layer&section=Convolution&layer=conv_2_1&map=3&row=0&col=5``.
"""

from __future__ import annotations

import streamlit as st

from digitrec import models

from streamlit_app.widgets import backprop, cnn
from streamlit_app.widgets.context import current_digit_sidebar, network_picker
from streamlit_app.widgets.units import unit_link

SECTIONS = ["Convolution", "ReLU", "Max pooling", "The end: softmax", "Filters", "Kernel gradient", "Sandbox"]
BATCH_NORM = "Batch norm"  # a section only for networks with a BatchNorm2d layer (a learner's own)
SECTION_KEY = "cnn_section"
CONV_KEY = "cnn_conv"


def _choose_section(sections: list[str]) -> str:
    if SECTION_KEY not in st.session_state:
        wanted = st.query_params.get("section")
        st.session_state[SECTION_KEY] = wanted if wanted in sections else sections[0]
    elif st.session_state[SECTION_KEY] not in sections:  # "Batch norm", then a network without one was picked
        st.session_state[SECTION_KEY] = sections[0]
    section = st.segmented_control("Look closer at", sections, key=SECTION_KEY, required=True) or sections[0]
    if st.query_params.get("section") != section:
        st.query_params["section"] = section
    return section


def draw() -> None:
    digit = current_digit_sidebar()
    net = network_picker(cnn=True)
    st.title("Convolutional network, step by step")
    spec = models.spec_of(net.config)
    kernels = sorted({f"{layer.kernel}×{layer.kernel}" for layer in spec.layers if layer.kind == "Conv2d"})
    st.caption(
        f"{net.label} reading {digit.source}. A convolutional network slides small "
        f"{' and '.join(kernels)} filters over the image; each filter makes one *feature map* that lights up "
        f"where its pattern appears. Its layers, in order: {' → '.join(spec.text().split())}."
    )

    st.subheader("Every feature map at once")
    cnn.cnn_overview(key="cnn_overview", net=net, digit=digit, url=True)
    unit_link(key="cnn_unit_link", net=net)  # any map's biography, and the dead maps named

    st.divider()
    st.markdown("How each map was computed, one layer kind at a time:")
    has_bn = any(layer.kind == "BatchNorm2d" for layer in models.spec_of(net.config).layers)
    sections = [*SECTIONS[:2], BATCH_NORM, *SECTIONS[2:]] if has_bn else SECTIONS
    section = _choose_section(sections)
    if section == "Convolution":
        st.markdown(
            "**One number of a feature map, worked out.** Pick a layer, a map and a position: the kernel is laid "
            "over the input there, each pair of numbers is multiplied, and everything is added up with the bias."
        )
        cnn.conv_arithmetic(key=CONV_KEY, net=net, digit=digit, url=True)
    elif section == "ReLU":
        st.markdown("**ReLU: max(0, x).** The same map before and after the activation function.")
        cnn.relu_detail(key="cnn_relu", net=net, digit=digit)
    elif section == BATCH_NORM:
        st.markdown("**Batch norm: scale and shift each map.** The same map before and after, one cell in numbers.")
        cnn.batchnorm_detail(key="cnn_bn", net=net, digit=digit)
    elif section == "Max pooling":
        st.markdown("**Max pooling: the largest of each 2×2 window.** It halves the map's width and height.")
        cnn.pool_detail(key="cnn_pool", net=net, digit=digit)
    elif section == "The end: softmax":
        cnn.cnn_output(key="cnn_end", net=net, digit=digit)
    elif section == "Filters":
        st.markdown("**The filters the network learned.** Every 3×3 kernel of a convolution layer, as a tiny image.")
        cnn.cnn_filters(key="cnn_filters", net=net)
    elif section == "Kernel gradient":
        st.markdown("**How a kernel learns: one kernel weight's gradient.** Backpropagation on this digit, summed "
                    "over every position the kernel visited.")
        backprop.kernel_gradient(key="cnn_kgrad", net=net, digit=digit, url=True)
    else:
        st.markdown(
            "**Sandbox: padding, stride and kernel size.** Slide a hand-made kernel over the digit and see how the "
            "output's size follows from the formula."
        )
        cnn.conv_sandbox(key="cnn_sandbox", digit=digit)


draw()
