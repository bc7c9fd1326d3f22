"""Home: what digitrec is, the two networks side by side, and where to go next."""

import streamlit as st

from digitrec.inspection import predict_proba
from digitrec.viz.digits import digit_figure, percent_sure, probabilities_figure
from streamlit_app import state
from streamlit_app.widgets.compare import network_table


def draw() -> None:
    st.title("How does a neural network read a handwritten digit?")
    st.markdown(
        "digitrec follows one digit through two real PyTorch networks trained on MNIST, "
        "60,000 handwritten digits, and shows **every number they compute**: "
        "the **fully connected network** of 3Blue1Brown's video (784 → 16 → 16 → 10) and "
        "**TinyVGG**, the small convolutional network of CNN Explainer. "
        "Draw a digit, step through each layer, ask which pixels made the network decide, "
        "and train both networks yourself to see why one is faster and the other more accurate."
    )
    nets = {k: n for k, n in state.networks().items() if k in state.PRETRAINED_LABELS}
    digit = state.current_digit()

    left, right = st.columns([1, 2])
    with left:
        st.subheader("The current digit")
        st.plotly_chart(digit_figure(digit.pixels, height=240), key="home_digit")
        st.caption(f"{digit.source}: the 28 × 28 grey values both networks receive.")
    with right:
        st.subheader("What each network says")
        probs = {net.label: predict_proba(net.model, digit.x)[0] for net in nets.values()}
        st.plotly_chart(probabilities_figure(probs), key="home_probs")
        guesses = {label: int(p.argmax()) for label, p in probs.items()}
        st.markdown(
            " · ".join(f"**{label}**: {g} ({percent_sure(probs[label][g], 1)})" for label, g in guesses.items())
        )

    st.subheader("The two networks side by side")
    network_table(key="home_networks")

    st.subheader("Where next")
    c1, c2, c3, c4 = st.columns(4)
    c1.page_link("views/draw.py", label="Draw a digit and see both predictions", icon=":material/draw:")
    c2.page_link("views/cnn_explorer.py", label="Step through the convolutional network", icon=":material/grid_view:")
    c3.page_link("views/train.py", label="Train a network live", icon=":material/model_training:")
    c4.page_link("views/lessons.py", label="Start the lessons", icon=":material/school:")


draw()
