"""Break it: make a network misread a digit with a change you can barely see, feed it noise, draw to fool it."""

import streamlit as st

from streamlit_app.widgets.context import current_digit_sidebar
from streamlit_app.widgets.fooling import draw_to_fool, make_it_a, noise_test

TABS = ["Make it say another digit", "Noise", "Draw to fool"]


def draw() -> None:
    digit = current_digit_sidebar()
    st.title("Break it")
    st.caption("A network is a function of 784 numbers. Push those numbers a little in the direction its gradient "
               "points and it reads another digit; show it noise and it still picks a digit, often very sure.")
    edit_tab, noise_tab, draw_tab = st.tabs(TABS)
    with edit_tab:
        st.markdown(f"**Make {digit.source} read as another digit**, changing each pixel as little as possible.")
        make_it_a(key="fool_edit")
    with noise_tab:
        st.markdown("**Noise**: pictures that are no digit at all, and what each network calls them.")
        noise_test(key="fool_noise")
    with draw_tab:
        st.markdown("**Draw to fool**: draw a digit a person reads easily but one network gets wrong.")
        draw_to_fool(key="fool_draw")


draw()
