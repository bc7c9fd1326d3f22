"""The Mistakes page in AppTest: the confusion matrix against digitrec.train.evaluate, a cell's
digits and the walk through them, the two networks compared, and the page without MNIST."""

from __future__ import annotations

import re

import pytest
import torch
from streamlit.testing.v1 import AppTest

from digitrec import checkpoints, mistakes
from digitrec.train import evaluate, predictions
from streamlit_app import state
from tests.pages import APP, figures


@pytest.fixture(scope="module")
def probs(mnist) -> dict[str, torch.Tensor]:
    """Each pretrained network's (10000, 10) test probabilities, computed here, not by the app."""
    return {key: predictions(checkpoints.load_pretrained(key).model, mnist.test) for key in state.PRETRAINED_LABELS}


def open_mistakes(net: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("views/mistakes.py")
    if net:
        at.session_state["net"] = net
    at.run()
    assert not at.exception, at.exception
    return at


def grids(at: AppTest) -> list[dict]:
    """The thumbnail grids, in page order: each tile is captioned '#<test-set number>'."""
    return [f for f in figures(at)
            if f["layout"].get("annotations") and f["layout"]["annotations"][0]["text"].startswith("#")]


def matrix(at: AppTest) -> dict:
    (fig,) = [f for f in figures(at) if f["layout"].get("xaxis", {}).get("title", {}).get("text") == "the network's answer"]
    return fig


@pytest.mark.parametrize("key", ["fc", "cnn"])
def test_confusion_matrix_counts_every_test_digit_and_matches_evaluate(key, mnist):
    at = open_mistakes(key)
    fig = matrix(at)
    z = torch.tensor(fig["data"][0]["z"])  # (10, 10), rows = true digit
    assert fig["data"][0]["type"] == "heatmap" and z.shape == (10, 10)
    assert int(z.sum()) == 10_000
    _, accuracy = evaluate(checkpoints.load_pretrained(key).model, mnist.test)
    assert int(z.diagonal().sum()) / 10_000 == pytest.approx(accuracy, abs=1e-12)
    # Rows are the true class: each row adds up to how many test digits have that label.
    assert z.sum(dim=1).tolist() == torch.bincount(mnist.test.labels, minlength=10).tolist()
    assert f"{accuracy:.2%} right" in fig["layout"]["title"]["text"]


def test_a_cell_lists_its_digits_most_confident_first_and_walks_through_them(probs, mnist):
    at = open_mistakes("cnn")
    at.selectbox(key="mistakes_true").select(4)
    at.selectbox(key="mistakes_pred").select(9).run()
    assert not at.exception
    cell = mistakes.cell_digits(probs["cnn"], mnist.test.labels, 4, 9)
    assert len(cell) >= 2
    assert any(m.value.startswith(f"**{len(cell)} digits** (true 4, answered 9") for m in at.markdown)
    # The grid shows the cell's digits in order, each captioned with its test-set number.
    captions = [a["text"].split("<br>")[0] for a in grids(at)[0]["layout"]["annotations"]]
    assert captions == [f"#{m.index}" for m in cell[:36]]
    # The matrix frames the chosen cell.
    (frame,) = matrix(at)["layout"]["shapes"]
    assert (frame["x0"], frame["y0"]) == (8.5, 3.5)

    def shown() -> str:
        return next(m.value for m in at.markdown if re.match(r"\*\*Mistake \d+ of \d+\*\*", m.value))

    assert shown() == f"**Mistake 1 of {len(cell)}**"
    at.button(key="mistakes_next").click().run()
    assert shown() == f"**Mistake 2 of {len(cell)}**"
    assert f"Test digit #{cell[1].index}, labelled 4." in " ".join(c.value for c in at.caption)
    at.button(key="mistakes_prev").click().run()
    at.button(key="mistakes_prev").click().run()  # before the first comes the last
    assert shown() == f"**Mistake {len(cell)} of {len(cell)}**"

    at.button(key="mistakes_open").click().run()
    assert at.session_state["digit"].ref == f"test:{cell[-1].index}"
    assert len(at.get("page_link")) >= 3  # links to the explorers appear


def test_the_two_networks_are_compared_digit_by_digit(probs, mnist):
    at = open_mistakes()
    agree = mistakes.compare(probs["fc"], probs["cnn"], mnist.test.labels)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Both right"] == f"{len(agree.both_right):,}"
    assert shown["FCNet wrong, TinyVGG right"] == f"{len(agree.only_b_right):,}"
    assert shown["FCNet right, TinyVGG wrong"] == f"{len(agree.only_a_right):,}"
    assert shown["Both wrong"] == f"{len(agree.both_wrong):,}"
    at.radio(key="mistakes_group").set_value("Both wrong").run()
    assert not at.exception
    grid = grids(at)[-1]  # the cell's grid comes first, the comparison's last
    assert len(grid["layout"]["annotations"]) == min(36, len(agree.both_wrong))
    first = int(grid["layout"]["annotations"][0]["text"].split("<br>")[0][1:])
    assert first in agree.both_wrong.tolist()


def test_without_mnist_the_page_says_how_to_get_it(no_mnist):
    at = open_mistakes()
    assert any("needs the MNIST dataset" in i.value and "DIGITREC_MNIST_MIRROR" in i.value for i in at.info)
    assert not at.get("plotly_chart")


@pytest.mark.parametrize("value", ["²", "abc", "-3", "12", ""])
def test_a_malformed_cell_in_the_link_falls_back_instead_of_crashing(value):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/mistakes.py")
    at.query_params["true"] = value
    at.query_params["pred"] = value
    at.run()
    assert not at.exception
