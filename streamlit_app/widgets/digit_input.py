"""Ways to choose the current digit: draw it, pick a sample or a test digit, upload an image.

Each piece sets the app's current digit (``state.set_current_digit``) and
shows nothing else, so a page or a lesson can put the digit's views below it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
import torch

from digitrec import preprocess
from digitrec.errors import DigitrecError, EmptyDrawing
from streamlit_app import state

CANVAS_SIZE = 280  # px, ten canvas pixels per MNIST pixel
DEFAULT_PEN = 24  # px: about 2.4 MNIST pixels, close to MNIST's stroke width
UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp"]  # preprocess.UPLOAD_FORMATS
# A photo of a digit is a few MB at most; the server-wide limit (.streamlit/config.toml)
# is sized for checkpoints, hundreds of MB.
IMAGE_UPLOAD_MB = preprocess.MAX_FILE_BYTES // 2**20


def digit_input(*, key: str = "digit_input", stroke_width: int = DEFAULT_PEN) -> state.Digit:
    """Every way to choose a digit, in tabs; returns the (possibly new) current digit."""
    draw_tab, sample_tab, test_tab, upload_tab = st.tabs(
        [":material/draw: Draw", ":material/looks_one: Sample digits", ":material/casino: Test digits", ":material/upload: Upload an image"]
    )
    with draw_tab:
        drawing_canvas(key=f"{key}_draw", stroke_width=stroke_width)
    with sample_tab:
        sample_buttons(key=f"{key}_samples")
    with test_tab:
        test_digit_picker(key=f"{key}_test")
    with upload_tab:
        image_upload(key=f"{key}_upload")
    return state.current_digit()


# ---------------------------------------------------------------- drawing


def drawing_canvas(*, key: str = "canvas", stroke_width: int = DEFAULT_PEN) -> None:
    """A 280 x 280 black canvas with a white pen; a new drawing becomes the current digit."""
    pen = st.slider("Pen width (canvas pixels)", 8, 48, int(stroke_width), step=2, key=f"{key}_pen",
                    help="MNIST's strokes are about 2 to 3 of its 28 pixels wide: 20 to 30 here.")
    try:
        # Imported here: the component registers itself on import, which needs a running app.
        from streamlit_drawable_canvas import st_canvas

        result = st_canvas(
            stroke_width=pen, stroke_color="#FFFFFF", background_color="#000000",
            height=CANVAS_SIZE, width=CANVAS_SIZE, drawing_mode="freedraw",
            return_image_data=True, key=f"{key}_canvas",
        )
        image = result.image_data  # (280, 280, 4) uint8 RGBA, or None before the first stroke
    except Exception as e:  # a missing or broken component must not take the page down
        st.warning(f"The drawing canvas could not start ({type(e).__name__}: {e}). "
                   "Pick a sample or test digit, or upload an image instead.")
        return
    st.caption("Draw one digit, big, in the middle. Point at the canvas for its toolbar: the bin icon "
               "clears the drawing, the arrows undo and redo a stroke.")
    message = handle_drawing(image, key=key)
    if message:
        st.info(message)


def handle_drawing(image: np.ndarray | None, *, key: str = "canvas") -> str | None:
    """Make a changed canvas drawing the current digit; return a sentence to show, or None.

    ``image``: the canvas's (H, W, 4) uint8 RGBA; white ink on black, so the red
    channel holds the ink. The digit is only replaced when the drawing changed
    since the last call (its bytes' hash), so reruns and a digit picked
    elsewhere after drawing are left alone; an empty canvas keeps the current digit.
    """
    current = state.current_digit()
    if image is None or not np.asarray(image)[..., 0].any():
        return f"Draw a digit in the black box with the mouse. Until you do, the networks read {current.source}."
    ink = np.ascontiguousarray(np.asarray(image)[..., 0])  # (H, W) uint8, the red channel
    digest = hashlib.sha1(ink.tobytes()).hexdigest()
    hash_key = f"{key}_last_drawing"
    last = st.session_state.get(hash_key)  # (digest, message) of the last drawing handled
    if last is not None and last[0] == digest:
        return last[1]  # unchanged drawing: nothing to redo, but a refusal stays on screen
    try:
        pixels = preprocess.to_mnist(ink)  # (28, 28) float in [0, 1]
    except EmptyDrawing as e:
        message = f"{e} The networks still read {current.source}."
        st.session_state[hash_key] = (digest, message)
        return message
    st.session_state[hash_key] = (digest, None)
    digit = state.pixels_digit(pixels, "your drawing")
    state.set_current_digit(digit)
    state.remember_source_image(digit, ink)
    return None


# ---------------------------------------------------------------- samples


def sample_buttons(*, key: str = "samples") -> None:
    """Ten buttons, 0 to 9: the hand-made sample digits (no dataset needed)."""
    st.caption("Ten digits drawn in code the way you would draw them on the canvas; they need no dataset.")
    for d, col in enumerate(st.columns(10)):
        col.button(str(d), key=f"{key}_{d}", on_click=_set_sample, args=(d,), width="stretch")


def _set_sample(d: int) -> None:
    state.set_current_digit(state.sample_digit(d))


# ---------------------------------------------------------------- test digits


def test_digit_picker(*, key: str = "test_picker") -> None:
    """Pick one of MNIST's 10,000 test digits by position, by class, or at random."""
    dataset = state.mnist()
    if dataset is None:
        st.info("Picking test digits needs the MNIST dataset. " + state.mnist_missing_message())
        return
    n = len(dataset.test)
    st.caption("Digits the networks never saw while training: each has a true label to check the guesses against.")
    by_index, by_class, any_one = st.columns([1.2, 1.2, 0.8])
    with by_index:
        st.number_input("Test digit number", 0, n - 1, 0, step=1, key=f"{key}_index",
                        on_change=_set_test_from_index, args=(key,))
        st.button("Show this one", key=f"{key}_show", on_click=_set_test_from_index, args=(key,))
    with by_class:
        st.selectbox("A test digit of class", list(range(10)), key=f"{key}_class")
        st.button("Another one", key=f"{key}_another", on_click=_set_test_of_class, args=(key,),
                  help="A random test digit of this class; each click gives a new one.")
    with any_one:
        st.write("")
        st.button(":material/casino: Random", key=f"{key}_random", on_click=_set_random_test, args=(key,))


def _next_generator(key: str) -> torch.Generator:
    """A generator seeded by a click counter: reproducible, and new on every click."""
    counter = st.session_state.get(f"{key}_counter", 0) + 1
    st.session_state[f"{key}_counter"] = counter
    return torch.Generator().manual_seed(counter)


def _set_test_from_index(key: str) -> None:
    state.set_current_digit(state.test_digit(int(st.session_state[f"{key}_index"])))


def _set_test_of_class(key: str) -> None:
    cls = int(st.session_state.get(f"{key}_class", 0))
    candidates = state.require_mnist().test.indices_of(cls)  # (K,)
    pick = int(candidates[torch.randint(len(candidates), (1,), generator=_next_generator(key))])
    state.set_current_digit(state.test_digit(pick))


def _set_random_test(key: str) -> None:
    n = len(state.require_mnist().test)
    state.set_current_digit(state.test_digit(int(torch.randint(n, (1,), generator=_next_generator(key)))))


# ---------------------------------------------------------------- uploads


def image_upload(*, key: str = "upload") -> None:
    """An image file of one digit (dark on light or light on dark) becomes the current digit."""
    # Read in the uploader's callback, before the script runs: every part of the page drawn
    # before this widget (the Draw tab's "the networks read ..." line) already sees the new digit.
    file = st.file_uploader(
        "An image of one handwritten digit", type=UPLOAD_TYPES, key=f"{key}_file", max_upload_size=IMAGE_UPLOAD_MB,
        help="A photo or scan of a digit on plain paper works; it is cropped and centred like MNIST.",
        on_change=_read_upload, args=(key,),
    )
    if file is None:
        st.caption("PNG, JPEG, GIF, BMP or WebP; dark ink on light paper or light on dark both work.")
        return
    message = st.session_state.get(f"{key}_upload_message")
    if message:
        st.warning(message)
    else:
        st.caption(f"Reading {state.plain(file.name)}: its 28 x 28 version is shown beside the drawing.")


def _read_upload(key: str) -> None:
    """The uploader's callback: a new file becomes the current digit, or leaves a sentence saying why not."""
    file = st.session_state.get(f"{key}_file")
    if file is None:  # the file was removed: the digit it gave stays
        return
    message = handle_upload(file.getvalue(), state.plain(file.name))
    st.session_state[f"{key}_upload_message"] = message
    if message:  # also where it is seen: the page's rerun can show another tab
        st.toast(message, icon=":material/warning:", duration="long")


def handle_upload(data: bytes, name: str) -> str | None:
    """Make an uploaded file the current digit; return the sentence to warn with if it cannot be read
    (the digit stays as it was). One that does not look like a digit is used anyway: the page says so
    beside the picture the networks read (``warn_if_not_a_digit``), for as long as it is the current digit."""
    try:
        image = preprocess.load_image(data)  # (H, W[, C]) uint8, longer side <= preprocess.WORK_SIDE
        steps = preprocess.preprocess_steps(image)
    except DigitrecError as e:  # BadImage, EmptyDrawing
        return f"{name}: {e}"
    digit = state.pixels_digit(steps.final, f"your upload {name}")
    state.set_current_digit(digit)
    state.remember_source_image(digit, image)
    return None


def warn_if_not_a_digit(digit: state.Digit) -> None:
    """A warning when the digit does not look like one (noise, a texture), however it came: drawn, uploaded
    or from a link (MNIST's digits and the samples never do: MNIST's inkiest covers 43 % of its frame)."""
    warning = preprocess.not_a_digit_warning(digit.pixels)
    if warning:
        st.warning(warning, icon=":material/warning:")


# ---------------------------------------------------------------- a compact picker (the Lessons sidebar)


def compact_picker(*, key: str = "compact_picker") -> None:
    """Samples as two rows of buttons, a random test digit, and the canvas in an expander: fits a sidebar."""
    for row in (range(0, 5), range(5, 10)):
        for d, col in zip(row, st.columns(5)):
            col.button(str(d), key=f"{key}_{d}", on_click=_set_sample, args=(d,), width="stretch",
                       help=f"The hand-drawn sample {d}")
    if state.mnist() is not None:
        st.button(":material/casino: A random test digit", key=f"{key}_random", on_click=_set_random_test,
                  args=(key,), width="stretch")
    with st.expander(":material/draw: Draw one"):
        drawing_canvas(key=f"{key}_draw")
