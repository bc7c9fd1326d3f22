"""The Draw & predict page in AppTest: what both networks say, the pickers, uploads and the canvas handler.

AppTest runs no JavaScript, so the canvas cannot be drawn on here (tests/browser/test_draw.py
does that); the current digit in st.session_state is the seam, and the canvas's handler is
run on a rendered drawing through a small script.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from digitrec import checkpoints, preprocess, samples
from digitrec.inspection import predict_proba
from digitrec.train import predictions
from digitrec.viz.digits import percent_sure
from streamlit_app import state
from streamlit_app.widgets import preprocess_view
from tests.pages import APP, figures as charts


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {label: checkpoints.load_pretrained(key).model for key, label in state.PRETRAINED_LABELS.items()}


def open_draw(digit: state.Digit | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/draw.py")
    if digit is not None:
        at.session_state["digit"] = digit
    at.run()
    assert not at.exception, at.exception
    return at


def bar_chart(at: AppTest) -> dict:
    (fig,) = [f for f in charts(at) if f["data"] and f["data"][0]["type"] == "bar"]
    return fig


def test_each_sample_digit_shows_both_networks_probabilities(models):
    at = open_draw()
    for d in range(10):
        digit = state.sample_digit(d)
        at.session_state["digit"] = digit
        at.run()
        assert not at.exception, at.exception
        fig = bar_chart(at)
        assert [t["name"] for t in fig["data"]] == list(models)  # one bar trace per network
        for trace in fig["data"]:
            expected = predict_proba(models[trace["name"]], digit.x)[0]
            assert trace["y"] == pytest.approx(expected.tolist(), abs=1e-6)
        # The 28x28 picture the networks receive is the digit itself.
        seen = [f for f in charts(at) if f["data"][0]["type"] == "heatmap" and len(f["data"][0]["z"]) == 28]
        same = [np.allclose(f["data"][0]["z"], digit.pixels.numpy(), atol=1e-6) for f in seen]
        # The picture beside the drawing, and the last preprocessing step redone from the sample's strokes.
        assert len(same) == 3 and same[0] and same[-1]  # shown, boxed (before the shift), final
        # Each network's top guess is shown, and whether it is right (samples are labelled).
        says = {m.label: m.value for m in at.metric}
        for label, model in models.items():
            guess = int(predict_proba(model, digit.x)[0].argmax())
            assert says[label.removesuffix(" (pretrained)") + " says"] == str(guess)
        verdicts = [m.value for m in at.markdown if m.value.startswith(("right", "wrong"))]
        assert len(verdicts) == 2


def test_disagreement_is_flagged_with_both_answers(models, mnist):
    test = mnist.test.subset(2000)
    fc, cnn = (predictions(m, test) for m in models.values())  # (2000, 10) each
    disagree = torch.nonzero(fc.argmax(1) != cnn.argmax(1)).flatten()
    assert len(disagree) > 0
    i = int(disagree[0])
    digit = state.Digit(test.images[i].float() / 255.0, f"test digit #{i}", int(test.labels[i]), f"test:{i}")
    at = open_draw(digit)
    a, pa = int(fc[i].argmax()), float(fc[i].max())
    b, pb = int(cnn[i].argmax()), float(cnn[i].max())
    sentence = (f"The networks disagree: FCNet says {a} ({percent_sure(pa)}), TinyVGG says {b} ({percent_sure(pb)})"
                .replace("%", " %"))
    assert any(sentence in w.value for w in at.warning), [w.value for w in at.warning]
    right = [m.value for m in at.markdown if m.value.startswith(("right", "wrong"))]
    assert right == [("right" if g == digit.label else f"wrong (labelled {digit.label})") for g in (a, b)]


def test_agreeing_networks_say_so():
    at = open_draw(state.sample_digit(3))
    assert not at.warning
    assert "The networks agree: each reads it as a 3." in [s.value for s in at.success]


def test_sample_buttons_and_test_digit_pickers_set_the_current_digit():
    at = open_draw()
    at.button(key="draw_input_samples_4").click().run()
    assert at.session_state["digit"].ref == "sample:4"

    at.selectbox(key="draw_input_test_class").select(5).run()
    seen = set()
    for _ in range(3):
        at.button(key="draw_input_test_another").click().run()
        digit = at.session_state["digit"]
        assert digit.ref.startswith("test:") and digit.label == 5
        seen.add(digit.ref)
    assert len(seen) > 1  # "another one" gives a new digit each time

    at.number_input(key="draw_input_test_index").set_value(42).run()
    assert at.session_state["digit"].ref == "test:42"
    at.button(key="draw_input_test_random").click().run()
    assert at.session_state["digit"].ref.startswith("test:")
    assert not at.exception


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_of_a_corrupt_file_warns_and_keeps_the_digit():
    at = open_draw(state.sample_digit(2))
    at.file_uploader(key="draw_input_upload_file").set_value(("broken.png", b"\x89PNG not really", "image/png")).run()
    assert not at.exception
    assert any(w.value.startswith(r"broken\.png: That file is not an image we can read") for w in at.warning)
    assert at.session_state["digit"].ref == "sample:2"

    blank = np.full((60, 60), 255, np.uint8)  # white paper, no ink
    at.file_uploader(key="draw_input_upload_file").set_value(("blank.png", png_bytes(blank), "image/png")).run()
    assert any(w.value.startswith(r"blank\.png: The drawing is empty") for w in at.warning)
    assert at.session_state["digit"].ref == "sample:2"


def test_upload_of_pure_noise_is_used_but_said_not_to_look_like_a_digit(models):
    noise = np.random.default_rng(0).integers(0, 256, (280, 280), dtype=np.uint8)
    at = open_draw(state.sample_digit(2))
    at.file_uploader(key="draw_input_upload_file").set_value(("noise.png", png_bytes(noise), "image/png")).run()
    assert not at.exception
    # Said once, beside the picture the networks read (seen whichever tab shows), while it is the digit.
    assert [w.value for w in at.warning if "does not look like a digit" in w.value] == [
        preprocess.not_a_digit_warning(at.session_state["digit"].pixels)]
    assert not at.toast  # a toast is for a file that could not be read: it fades, and this digit stays
    digit = at.session_state["digit"]
    assert digit.ref != "sample:2"  # the networks read it anyway, and the page shows what they say
    fig = bar_chart(at)
    expected = predict_proba(models["FCNet (pretrained)"], digit.x)[0].tolist()
    assert fig["data"][0]["y"] == pytest.approx(expected, abs=1e-6)
    at.session_state["digit"] = state.sample_digit(3)  # another digit: the warning was about the noise alone
    at.run()
    assert not [w for w in at.warning if "does not look like a digit" in w.value]


def test_upload_of_a_digit_makes_it_current_like_a_drawing():
    # A 7 written dark on light paper, as a phone photo of a page would be.
    paper = 255 - samples.render_strokes(samples.SAMPLE_STROKES[7])[..., 0]
    at = open_draw(state.sample_digit(2))
    at.file_uploader(key="draw_input_upload_file").set_value(("seven.png", png_bytes(paper), "image/png")).run()
    assert not at.exception and not at.warning
    digit = at.session_state["digit"]
    assert digit.source == r"your upload seven\.png"  # the file name escaped: every page shows it as Markdown
    # The Draw tab, drawn before the upload tab, already names the upload as what the networks read.
    hints = [i.value for i in at.info if i.value.startswith("Draw a digit")]
    assert hints and all("your upload seven" in h for h in hints), hints
    assert torch.allclose(digit.pixels, preprocess.to_mnist(paper), atol=1 / 255)
    # The steps expander shows the upload's own steps: the first picture is the whole image, every
    # factor-th pixel of it (a picture 190 px tall needs no more), its rows and columns the image's own.
    factor = math.ceil(280 / preprocess_view.MAX_SHOWN)
    ink = [f["data"][0] for f in charts(at) if f["data"][0]["type"] == "heatmap" and len(f["data"][0]["z"]) == 280 // factor]
    assert ink and ink[0]["y"] == list(range(0, 280, factor)) and ink[0]["x"] == list(range(0, 280, factor))


def canvas_script():
    """Runs the canvas handler on a rendered drawing chosen by session_state['image']."""
    import numpy as np
    import streamlit as st

    from digitrec.samples import SAMPLE_STROKES, render_strokes
    from streamlit_app import state
    from streamlit_app.widgets.digit_input import handle_drawing

    kind = st.session_state.get("image", "none")
    image = {
        "none": None,
        "blank": np.zeros((280, 280, 4), np.uint8),
        "two": render_strokes(SAMPLE_STROKES[2], width=24),
    }[kind]
    st.session_state["message"] = handle_drawing(image, key="t")
    st.session_state["shown"] = state.current_digit().ref


def test_canvas_handler_sets_a_new_drawing_once_and_ignores_an_empty_canvas():
    at = AppTest.from_function(canvas_script, default_timeout=30)
    at.session_state["image"] = "blank"
    at.run()
    assert not at.exception
    assert at.session_state["message"].startswith("Draw a digit")  # a friendly hint, not an error
    assert at.session_state["shown"] == "sample:7"  # the current digit stays

    at.session_state["image"] = "two"
    at.run()
    digit = at.session_state["digit"]
    assert at.session_state["message"] is None
    assert digit.source == "your drawing" and digit.ref.startswith("px:")
    red = samples.render_strokes(samples.SAMPLE_STROKES[2], width=24)[..., 0]
    assert torch.equal(digit.pixels, preprocess.to_mnist(red))

    # A digit picked elsewhere is not overwritten by the unchanged drawing on the next rerun.
    at.session_state["digit"] = state.sample_digit(5)
    at.run()
    assert at.session_state["shown"] == "sample:5"

    at.session_state["image"] = "none"  # the canvas before its first stroke
    at.run()
    assert at.session_state["message"].startswith("Draw a digit")


def test_without_mnist_the_page_still_works(no_mnist):
    at = open_draw(state.sample_digit(8))
    assert any("needs the MNIST dataset" in i.value for i in at.info)
    assert bar_chart(at)["data"]  # the predictions still show
    at.button(key="draw_input_samples_1").click().run()
    assert not at.exception and at.session_state["digit"].ref == "sample:1"
