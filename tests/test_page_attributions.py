"""The "What made it say that?" page (/attributions) in Streamlit's AppTest.

The figures must hold the very numbers digitrec.attribution computes for the
same network, digit, method and class; the numbers printed next to them must
be those of the library too.
"""

from __future__ import annotations

import math

import pytest
import torch
from streamlit.testing.v1 import AppTest

from digitrec import attribution, checkpoints, models
from digitrec.inspection import predict_proba
from digitrec.viz.attribution import format_delta, rank_correlation, reddest_class_sentence
from streamlit_app import state
from tests.pages import figures as _figures, open_page

# Tolerance 1e-5: the page and the test may run torch with different thread counts (a training
# thread sets 1), which changes float32 summation order by a few ulps of the ~20-unit logits.
PAGE = "views/attributions.py"


def _open(digit: state.Digit, method: str | None = None, my_models: dict | None = None) -> AppTest:
    return open_page(PAGE, digit, {"method": method} if method else None,
                     {"my_models": my_models} if my_models else None, timeout=60, arrive_home=False)


def _traces(fig: dict, name: str) -> list[dict]:
    return [t for t in fig["data"] if t.get("name") == name]


def _overlays(at: AppTest) -> list[dict]:
    """The side-by-side maps, one per network that supports the method, in network order."""
    return [f for f in _figures(at) if _traces(f, "attribution overlay")]


def _pretrained(key: str) -> torch.nn.Module:
    return checkpoints.load_pretrained(key).model  # the same weights the page loads, outside its cache


def _winner(model: torch.nn.Module, digit: state.Digit) -> int:
    return int(predict_proba(model, digit.x).argmax())


def test_every_method_on_every_network_runs_and_grad_cam_explains_fcnet():
    digit = state.sample_digit(7)
    at = _open(digit)
    for method in attribution.METHODS:
        at.selectbox(key="attr_compare_method").select(method).run()
        assert not at.exception, (method, at.exception)
        assert not at.error, method
        overlays = _overlays(at)
        if method == "grad_cam":
            assert len(overlays) == 1  # TinyVGG only
            infos = [i.value for i in at.info]
            assert any("Grad-CAM is not available for FCNet" in v and "convolution" in v for v in infos)
        else:
            assert len(overlays) == 2, method
        # the tabs follow the chosen method
        assert at.selectbox(key="attr_classes_method").value == method
        assert at.query_params["method"] == method


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion", "deeplift"])
def test_overlay_values_equal_the_library_attribution(method):
    digit = state.sample_digit(3)
    at = _open(digit, method=method)
    for fig, key in zip(_overlays(at), ["fc", "cnn"]):
        model = _pretrained(key)
        expected = attribution.attribute(model, digit.x, _winner(model, digit), method).values[0, 0]
        (heat,) = _traces(fig, "attribution")
        assert torch.allclose(torch.tensor(heat["z"]), expected, atol=1e-5), key
        (over,) = _traces(fig, "attribution overlay")
        assert torch.allclose(torch.tensor(over["z"]), expected, atol=1e-5)
        assert torch.allclose(torch.tensor(_traces(fig, "digit")[0]["z"]), digit.pixels)


def test_a_chosen_target_class_is_explained_and_the_legend_names_it():
    digit = state.sample_digit(3)
    at = _open(digit, method="gradient_shap")
    at.selectbox(key="attr_compare_target").select(8).run()
    assert not at.exception
    cnn = _pretrained("cnn")
    expected = attribution.attribute(cnn, digit.x, 8, "gradient_shap").values[0, 0]
    (heat,) = _traces(_overlays(at)[1], "attribution")
    assert torch.allclose(torch.tensor(heat["z"]), expected, atol=1e-5)
    captions = [c.value for c in at.caption]
    assert "red: pixels that pushed towards '8'; blue: pixels that pushed away." in captions


def test_integrated_gradients_delta_shown_is_the_librarys():
    digit = state.sample_digit(7)
    at = _open(digit, method="integrated_gradients")
    shown = [m.value for m in at.metric if "convergence delta" in m.label]
    expected = []
    for key in ["fc", "cnn"]:
        model = _pretrained(key)
        expected.append(format_delta(attribution.attribute(model, digit.x, _winner(model, digit), 'integrated_gradients').delta))
    assert shown == expected
    text = " ".join(c.value for c in at.caption) + " ".join(w.value for w in at.warning)
    assert "gap (delta)" in text


def test_all_classes_grid_has_ten_heatmaps_with_the_librarys_values():
    digit = state.sample_digit(3)
    at = _open(digit, method="saliency")
    grids = [f for f in _figures(at) if _traces(f, "class 0")]
    assert len(grids) == 1
    heatmaps = [t for t in grids[0]["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 10
    maps = attribution.all_classes(_pretrained("cnn"), digit.x, "saliency")  # the grid's default network
    for t, heat in enumerate(heatmaps):
        assert heat["name"] == f"class {t}"
        assert torch.allclose(torch.tensor(heat["z"]), maps[t].values[0, 0], atol=1e-5)

    # Grad-CAM for TinyVGG: when another class's map is the reddest, the caption says why that is no contradiction
    at.selectbox(key="attr_classes_method").select("grad_cam").run()
    cnn = _pretrained("cnn")
    cams = attribution.all_classes(cnn, digit.x, "grad_cam")
    note = reddest_class_sentence(cams, predict_proba(cnn, digit.x)[0], _winner(cnn, digit), "TinyVGG (pretrained)")
    assert note is not None  # the pretrained TinyVGG's reddest map for this 3 is another class's ('6')
    assert note in " ".join(c.value for c in at.caption)

    # Grad-CAM for FCNet in the grid: a sentence, not an error
    at.selectbox(key="attr_classes_network").select("fc").run()
    assert not at.exception and not at.error
    assert not [f for f in _figures(at) if _traces(f, "class 0")]
    assert any("Grad-CAM is not available for FCNet" in i.value for i in at.info)


def test_sanity_check_compares_with_the_randomized_network():
    digit = state.sample_digit(7)
    at = _open(digit, method="saliency")
    sanity = [f for f in _figures(at) if _traces(f, "randomized")]
    assert len(sanity) == 1
    cnn = _pretrained("cnn")
    target = _winner(cnn, digit)
    trained = attribution.attribute(cnn, digit.x, target, "saliency").values
    randomized = attribution.attribute(attribution.randomized_copy(cnn, seed=0), digit.x, target, "saliency").values
    assert torch.allclose(torch.tensor(_traces(sanity[0], "randomized")[0]["z"]), randomized[0, 0], atol=1e-5)
    assert not torch.allclose(trained, randomized)
    (similarity,) = [m.value for m in at.metric if m.label.startswith("Similarity of the two maps")]
    assert similarity == f"{rank_correlation(trained, randomized):.2f}"
    sentences = " ".join(x.value for x in [*at.success, *at.warning])
    assert "explains the image, not the model" in sentences or "explain the image, not the model" in sentences


def test_my_model_joins_the_comparison():
    digit = state.sample_digit(4)
    mine = models.build(models.FCConfig(), seed=1)
    net = state.Network("my-1", "My FCNet", mine, mine.config, None)
    at = _open(digit, method="deeplift", my_models={"my-1": net})
    overlays = _overlays(at)
    assert len(overlays) == 3
    expected = attribution.attribute(mine, digit.x, _winner(mine, digit), "deeplift").values[0, 0]
    assert torch.allclose(torch.tensor(_traces(overlays[2], "attribution")[0]["z"]), expected, atol=1e-5)
    assert any("My FCNet" in m.value for m in at.markdown)
    assert math.isfinite(float([m.value for m in at.metric if "DeepLIFT" in m.label][2]))
