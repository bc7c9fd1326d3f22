"""Attribution figures and the numbers shown with them: rank correlation and completeness."""

from __future__ import annotations

import math

import pytest
import torch

from digitrec import attribution
from digitrec.attribution import Attribution
from digitrec.viz.attribution import (
    HOW_TO_READ,
    classes_figure,
    completeness,
    completeness_sentence,
    legend_text,
    overlay_figure,
    rank_correlation,
    reddest_class_sentence,
    sanity_figure,
)


def _attr(values: torch.Tensor, method: str = "integrated_gradients", target: int = 7, delta: float | None = None):
    return Attribution(method, target, values.reshape(1, 1, 28, 28), delta, attribution.METHODS[method].label)


def _digit() -> torch.Tensor:
    pixels = torch.zeros(28, 28)
    pixels[5:23, 12:16] = 1.0  # a "1"
    return pixels


# ---------------------------------------------------------------- rank correlation


def test_rank_correlation_of_same_and_reversed_order():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(a, a * 10 + 5) == pytest.approx(1.0)
    assert rank_correlation(a, -a, absolute=False) == pytest.approx(-1.0)
    # absolute: -a has the same magnitudes as a, so the same order
    assert rank_correlation(a, -a) == pytest.approx(1.0)


def test_rank_correlation_with_ties_worked_by_hand():
    # ranks of a = [0.5, 0.5, 2] (the tie shares 0 and 1), of b = [0, 1, 2]
    # centred: [-0.5, -0.5, 1] and [-1, 0, 1]; sum of products 1.5;
    # norms sqrt(1.5) and sqrt(2): rho = 1.5 / sqrt(3)
    a = torch.tensor([1.0, 1.0, 2.0])
    b = torch.tensor([1.0, 2.0, 3.0])
    assert rank_correlation(a, b) == pytest.approx(1.5 / math.sqrt(3))


def test_rank_correlation_is_rank_based_not_linear():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert rank_correlation(a, a**3) == pytest.approx(1.0)  # monotone, far from linear


def test_rank_correlation_mask_and_flat_maps():
    a = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0])
    b = torch.tensor([0.0, 0.0, 3.0, 2.0, 1.0])
    keep = torch.tensor([False, False, True, True, True])
    assert rank_correlation(a, b, where=keep) == pytest.approx(-1.0)
    # the shared zeros alone make the whole maps look alike: ranks [0.5,0.5,2,3,4] vs [0.5,0.5,4,3,2],
    # centred [-1.5,-1.5,0,1,2] and [-1.5,-1.5,2,1,0]: products 5.5, squared norms 9.5 each
    assert rank_correlation(a, b) == pytest.approx(5.5 / 9.5)
    assert math.isnan(rank_correlation(torch.ones(5), b))
    with pytest.raises(ValueError):
        rank_correlation(torch.ones(3), torch.ones(4))


# ---------------------------------------------------------------- completeness


def test_completeness_recovers_the_logit_change_from_captums_delta():
    values = torch.zeros(784)
    values[:4] = torch.tensor([1.0, 2.0, 3.0, -0.5])  # sum 5.5
    check = completeness(_attr(values, delta=0.5))
    assert check.total == pytest.approx(5.5)
    assert check.change == pytest.approx(5.0)  # delta = total - change
    assert check.relative == pytest.approx(0.1)
    assert not check.small
    assert completeness(_attr(values, delta=0.01)).small  # 0.01 / 5.49 < 1 %
    assert completeness(_attr(values, method="saliency")) is None


def test_completeness_matches_integrated_gradients_on_a_real_model(fcnet):
    x = _digit().reshape(1, 1, 28, 28)
    attr = attribution.attribute(fcnet, x, 3, "integrated_gradients")
    with torch.no_grad():
        change = float(fcnet(x)[0, 3] - fcnet(torch.zeros_like(x))[0, 3])
    check = completeness(attr)
    assert check.change == pytest.approx(change, abs=1e-4)
    assert check.delta == attr.delta


def test_completeness_sentence_explains_deeplift_through_max_pooling():
    values = torch.zeros(784)
    values[0] = 2.0
    attr = _attr(values, method="deeplift", delta=1.0)  # change 1.0, gap 100 %
    check = completeness(attr)
    text = completeness_sentence(attr, check, "tinyvgg")
    assert "max-pooling" in text and "+1.0000" in text
    assert "max-pooling" not in completeness_sentence(attr, check, "fcnet")
    small = _attr(values, method="integrated_gradients", delta=0.001)
    sentence = completeness_sentence(small, completeness(small), "tinyvgg")
    assert "trust it" not in sentence  # completeness is arithmetic, not faithfulness (issue 9, item 4)
    assert "not proof" in sentence and "sanity check" in sentence


# ---------------------------------------------------------------- figures


def test_overlay_figure_holds_the_attribution_values_and_the_digit():
    values = torch.linspace(-2, 3, 784)
    attr = _attr(values, target=7)
    fig = overlay_figure(_digit(), attr)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"attribution", "digit", "attribution overlay"}
    expected = values.reshape(28, 28)
    assert torch.equal(torch.tensor(by_name["attribution"].z), expected)
    assert torch.equal(torch.tensor(by_name["attribution overlay"].z), expected)
    assert torch.equal(torch.tensor(by_name["digit"].z), _digit())
    # centred at zero, symmetric: white (or transparent) means "no effect"
    heat = by_name["attribution"]
    assert (heat.zmin, heat.zmax, heat.zmid) == (-3.0, 3.0, 0)
    assert list(heat.colorbar.ticktext) == ["away from '7'", "0", "towards '7'"]
    # the overlay's centre is fully transparent so the digit shows through
    assert by_name["attribution overlay"].colorscale[4][1].endswith(",0.0)")
    assert "row %{y}, col %{x}" in heat.hovertemplate


def test_classes_figure_has_ten_maps_on_one_scale():
    attrs = [_attr(torch.full((784,), float(t - 4)), target=t) for t in range(10)]
    fig = classes_figure(_digit(), attrs, predicted=1)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 10
    assert {(h.zmin, h.zmax) for h in heatmaps} == {(-5.0, 5.0)}  # the largest |value| is 5 (class 9)
    assert heatmaps[3].z[0][0] == -1.0
    assert "(its answer)" in fig.layout.annotations[1].text


def test_grad_cams_reddest_map_is_explained_when_it_is_not_the_answer():
    # Class 0's map holds the most red (a sum of 784 x 0.5), the answer 7's less (784 x 0.1).
    red = {0: 0.5, 7: 0.1}
    attrs = [_attr(torch.full((784,), red.get(t, 0.0)), method="grad_cam", target=t) for t in range(10)]
    probs = torch.zeros(10)
    probs[7], probs[0] = 0.995, 0.004
    note = reddest_class_sentence(attrs, probs, predicted=7, network="TinyVGG")
    assert note.startswith("The most red is in the map of '0', a class TinyVGG gives 0%, against 99.5% for its answer, 7.")
    assert reddest_class_sentence(attrs, probs, predicted=0, network="TinyVGG") is None  # the answer is the reddest
    blank = [_attr(torch.zeros(784), method="grad_cam", target=t) for t in range(10)]  # dead maps: no red anywhere
    assert reddest_class_sentence(blank, probs, predicted=7, network="TinyVGG") is None
    tied = [_attr(torch.full((784,), 0.5 if t in (0, 7) else 0.0), method="grad_cam", target=t) for t in range(10)]
    assert reddest_class_sentence(tied, probs, predicted=7, network="TinyVGG") is None  # as red as the answer's
    signed = [_attr(a.values.flatten(), method="integrated_gradients", target=a.target) for a in attrs]
    assert reddest_class_sentence(signed, probs, predicted=7, network="TinyVGG") is None  # blue shows the rest there


def test_sanity_figure_has_its_own_scale_per_map():
    trained = _attr(torch.linspace(-1, 1, 784), method="saliency")
    randomized = _attr(torch.linspace(0, 20, 784), method="saliency")
    fig = sanity_figure(_digit(), trained, randomized)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert [h.name for h in heatmaps] == ["trained", "randomized"]
    assert fig.layout.coloraxis.cmax == pytest.approx(1.0)
    assert fig.layout.coloraxis2.cmax == pytest.approx(20.0)


def test_every_method_has_reading_text_and_a_legend():
    assert set(HOW_TO_READ) == set(attribution.METHODS)
    assert legend_text("integrated_gradients", 7) == "red: pixels that pushed towards '7'; blue: pixels that pushed away."
    assert "no sign" in legend_text("saliency", 3)


def test_format_delta_never_shows_a_misleading_zero():
    from digitrec.viz.attribution import format_delta

    assert format_delta(0.01234) == "+0.0123"
    assert format_delta(-0.18734) == "-0.1873"
    assert format_delta(-1.9e-6) == "-1.9e-06"  # not "-0.0000"
    assert format_delta(0.0) == "+0.0000"


@pytest.mark.parametrize("method", ["grad_cam", "saliency"])
def test_a_map_that_is_never_negative_has_a_colour_bar_without_a_blue_half(method):
    values = torch.linspace(0, 2, 784)
    fig = overlay_figure(_digit(), _attr(values, method=method, target=3))
    by_name = {t.name: t for t in fig.data}
    heat, overlay = by_name["attribution"], by_name["attribution overlay"]
    assert (heat.zmin, heat.zmax, heat.zmid) == (0, 2.0, None)  # white at 0, red at the top, nothing below
    assert list(heat.colorbar.tickvals) == [0, 2.0] and heat.colorbar.ticktext[0] == "0"
    # the scale starts at the diverging scale's white centre (0: no effect), so no blue is left in it
    assert tuple(heat.colorscale[0]) == (0, "rgb(247,247,247)") and heat.colorscale[-1][0] == 1
    assert overlay.zmin == 0 and overlay.colorscale[0][1].endswith(",0.0)")  # 0 stays transparent over the digit
    # the same for every class at once, and in the sanity check
    classes = classes_figure(_digit(), [_attr(values * (t + 1), method=method, target=t) for t in range(10)])
    assert {(h.zmin, h.zmax) for h in classes.data if h.type == "heatmap"} == {(0, 20.0)}
    sanity = sanity_figure(_digit(), _attr(values, method=method), _attr(values * 3, method=method))
    assert (sanity.layout.coloraxis.cmin, sanity.layout.coloraxis2.cmax) == (0, 6.0)
