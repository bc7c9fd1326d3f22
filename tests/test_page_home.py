"""Home page: both pretrained networks' predictions for the current digit, and their cost."""

import pytest
from streamlit.testing.v1 import AppTest

from digitrec import checkpoints
from digitrec.inspection import predict_proba
from streamlit_app import state
from tests.pages import APP, figures as _figures


def _arrive_by_link(digit: str) -> AppTest:
    """The home page opened from a link whose digit parameter is ``digit`` (the app reads it on its first run)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["digit"] = digit
    at.run()
    assert not at.exception
    return at


@pytest.mark.parametrize("d", [0, 4, 7])
def test_home_shows_both_networks_predictions_for_the_current_digit(d):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["digit"] = state.sample_digit(d)
    at.run()
    assert not at.exception
    bars = [t for fig in _figures(at) for t in fig["data"] if t["type"] == "bar"]
    assert [t["name"] for t in bars] == ["FCNet (pretrained)", "TinyVGG (pretrained)"]
    x = state.sample_digit(d).x
    for trace, key in zip(bars, ["fc", "cnn"]):
        expected = predict_proba(checkpoints.load_pretrained(key).model, x)[0].tolist()
        assert trace["y"] == pytest.approx(expected, abs=1e-6)


def test_home_table_counts_parameters_from_the_models():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    table = at.table[0].value
    assert table.loc["parameters", "FCNet (pretrained)"] == "13,002"
    assert table.loc["parameters", "TinyVGG (pretrained)"] == "7,740"
    assert table.loc["multiply-adds per digit", "TinyVGG (pretrained)"] == "1,133,860"


def test_a_link_names_the_digit_and_the_page_keeps_it_in_the_url():
    at = _arrive_by_link("sample:2")
    assert at.session_state["digit"].ref == "sample:2"
    assert at.query_params["digit"] == ["sample:2"] or at.query_params["digit"] == "sample:2"


def test_a_malformed_digit_link_falls_back_to_a_sample():
    at = _arrive_by_link("px:not-base64!!")
    assert at.session_state["digit"].ref == "sample:7"


@pytest.mark.parametrize("ref", ["sample:11", "test:99999", "garbage"])
def test_a_link_to_a_digit_that_does_not_exist_says_so(ref, mnist):
    at = _arrive_by_link(ref)
    assert at.session_state["digit"].ref == "sample:7"
    assert any("could not be read" in t.value for t in at.toast)


@pytest.mark.parametrize("ref", ["[Log in](//evil.example)", "![](//evil.example/x.png)", ":red[gotcha] $x$"])
def test_a_crafted_digit_link_is_shown_as_text_never_as_markdown(ref):
    # The toast renders Markdown: the link's text must reach it with every markup character escaped.
    import re

    at = _arrive_by_link(ref)
    (toast,) = [t.value for t in at.toast if "could not be read" in t.value]
    assert not re.search(r"(?<!\\)[\[\]!:$]", toast.split("could not be read")[0].removeprefix("The link's digit"))
    assert state.plain("[a](b)") == r"\[a\]\(b\)"
