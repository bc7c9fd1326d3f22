"""digitrec.viz.fc: the figures hold the numbers they claim to show, on the right colour scales."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from digitrec import fc_maths, models
from digitrec.inspection import capture_activations
from digitrec.viz import fc as fc_viz
from digitrec.viz.scales import ACTIVATION_SCALE, WEIGHT_SCALE


def _traces(fig: go.Figure, kind: str) -> list:
    return [t for t in fig.data if t.type == kind]


def _scale_name(trace) -> str:
    """The colour scale a trace was built with (plotly stores the expanded list; compare with a fresh one)."""
    for name in (ACTIVATION_SCALE, WEIGHT_SCALE, "gray"):
        if trace.colorscale == go.Heatmap(colorscale=name).colorscale:
            return name
    return "?"


@pytest.fixture
def digit() -> torch.Tensor:
    pixels = torch.zeros(28, 28)
    pixels[5, 3], pixels[10, 20], pixels[27, 27] = 0.5, 1.0, 0.004
    return pixels


@pytest.fixture
def fcnet():
    return models.build(models.FCConfig(), seed=0)


def test_digit_numbers_prints_each_inked_value(digit):
    fig = fc_viz.digit_numbers_figure(digit)
    (heat,) = _traces(fig, "heatmap")
    assert torch.equal(torch.tensor(heat.z), digit)
    assert heat.text[5][3] == ".50" and heat.text[10][20] == "1"
    assert heat.text[0][0] == "" and heat.text[27][27] == ""  # paper (and ink below 0.005) stays blank
    assert (heat.zmin, heat.zmax) == (0, 1)
    assert "row %{y}, col %{x}" in heat.hovertemplate


def test_flatten_strip_is_the_image_row_by_row(digit):
    fig = fc_viz.flatten_figure(digit, row=10, col=20)
    image, strip, close = _traces(fig, "heatmap")
    assert torch.equal(torch.tensor(image.z), digit)
    flat = strip.z[0]
    assert len(flat) == 784
    assert flat[28 * 5 + 3] == 0.5 and flat[28 * 10 + 20] == 1.0  # pixel (r, c) -> position 28 r + c
    # The close-up shows rows 9 to 11: positions 252 .. 335, with the framed pixel at 300.
    assert list(close.x) == list(range(252, 336)) and close.z[0][300 - 252] == 1.0
    marks = {tuple(t.x) for t in _traces(fig, "scatter") if t.xaxis == "x3"}
    assert (300,) in marks
    assert tuple(sorted([300 - 28, 300 + 28, 299, 301])) in {tuple(sorted(m)) for m in marks}


def test_vector_figure_labels_narrow_layers_and_not_wide_ones():
    values = torch.tensor([1.5, -0.25, 0.0])
    (bar,) = _traces(fc_viz.vector_figure(values), "bar")
    assert list(bar.y) == [1.5, -0.25, 0.0] and list(bar.text) == ["1.50", "-0.25", "0.00"]
    wide = _traces(fc_viz.vector_figure(torch.randn(128)), "bar")[0]
    assert len(wide.y) == 128 and wide.text is None
    before = torch.tensor([1.5, -0.25, -3.0])
    hollow, after = _traces(fc_viz.vector_figure(torch.relu(before), before=before), "bar")
    assert list(hollow.y) == [1.5, -0.25, -3.0] and list(after.y) == [1.5, 0.0, 0.0]


def test_neuron_figure_first_layer_images(fcnet):
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ns = fc_maths.neuron_sum(fcnet, x, "fc_1", 4)
    weights, ink, products = _traces(fc_viz.neuron_figure(ns), "heatmap")
    assert torch.allclose(torch.tensor(weights.z), fcnet.fc_1.weight[4].detach().reshape(28, 28))
    assert torch.allclose(torch.tensor(products.z), (fcnet.fc_1.weight[4].detach() * x.flatten()).reshape(28, 28))
    assert _scale_name(weights) == WEIGHT_SCALE and _scale_name(products) == ACTIVATION_SCALE
    for t in (weights, products):
        assert t.zmin == -t.zmax and t.zmax == pytest.approx(float(torch.tensor(t.z).abs().max()))


def test_neuron_figure_later_layer_bars(fcnet):
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ns = fc_maths.neuron_sum(fcnet, x, "fc_2", 1)
    inputs, weights, products = _traces(fc_viz.neuron_figure(ns), "bar")
    relu_1 = capture_activations(fcnet, x)["relu_1"][0]
    assert torch.allclose(torch.tensor(inputs.y), relu_1)
    assert torch.allclose(torch.tensor(weights.y), fcnet.fc_2.weight[1].detach())
    assert torch.allclose(torch.tensor(products.y), relu_1 * fcnet.fc_2.weight[1].detach())


def test_weight_grid_one_image_per_neuron_on_one_symmetric_range(fcnet):
    values = torch.arange(16.0) - 4
    fig = fc_viz.weight_grid_figure(fcnet.fc_1.weight, values, highlight=15)
    heat = _traces(fig, "heatmap")
    assert len(heat) == 16
    limit = float(fcnet.fc_1.weight.detach().abs().max())
    assert len({(t.zmin, t.zmax) for t in heat}) == 1  # one shared range ...
    assert heat[0].zmin == -heat[0].zmax == pytest.approx(-limit)  # ... symmetric, the layer's largest |w|
    assert all(_scale_name(t) == WEIGHT_SCALE for t in heat)
    assert [t.showscale for t in heat] == [True] + [False] * 15  # one legend for all
    assert torch.allclose(torch.tensor(heat[7].z), fcnet.fc_1.weight[7].detach().reshape(28, 28))
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == "#0: -4.00" and titles[15] == "<b>#15: 11.00</b>"  # the highlighted one in bold
    assert len([s for s in fig.layout.shapes if s.type == "rect"]) == 1  # and framed


def test_weight_grid_page_of_a_wide_layer_keeps_the_whole_layer_range():
    weights = torch.randn(128, 784, generator=torch.Generator().manual_seed(0))
    fig = fc_viz.weight_grid_figure(weights, torch.zeros(128), neurons=range(32, 64), limit=5.0)
    heat = _traces(fig, "heatmap")
    assert len(heat) == 32 and all((t.zmin, t.zmax) == (-5.0, 5.0) for t in heat)
    assert heat[0].name == "neuron 32"


def test_linear_layer_figure_is_w_x_plus_b(fcnet):
    x = torch.rand(784)
    z = fcnet.fc_1(x).detach()
    strip, w, b, out = _traces(fc_viz.linear_layer_figure(fcnet.fc_1.weight, x, fcnet.fc_1.bias, z), "heatmap")
    assert len(strip.z[0]) == 784 and len(w.z) == 16 and len(w.z[0]) == 784
    assert torch.allclose(torch.tensor(out.z).flatten(), z)
    assert _scale_name(w) == WEIGHT_SCALE and _scale_name(out) == ACTIVATION_SCALE


def test_network_diagram_colours_dots_by_value_and_rings_the_answer(fcnet):
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    acts = capture_activations(fcnet, x)
    columns = [("relu_1", acts["relu_1"][0]), ("relu_2", acts["relu_2"][0]), ("output", acts["output"][0])]
    predicted = int(acts["output"][0].argmax())
    fig = fc_viz.network_diagram_figure(x[0, 0], columns, [fcnet.fc_2.weight, fcnet.output.weight],
                                        predicted=predicted)
    dots = [t for t in _traces(fig, "scatter") if t.mode and "markers" in t.mode]
    assert [len(t.y) for t in dots] == [16, 16, 10]
    assert torch.allclose(torch.tensor(dots[2].marker.color), acts["output"][0])
    assert dots[2].marker.line.width[predicted] == 3 and dots[2].text[predicted].startswith(f"<b>{predicted}")
    lines = [t for t in _traces(fig, "scatter") if t.mode == "lines"]
    # 3 strongest incoming weights per neuron: 16 * 3 + 10 * 3 segments, 3 points (start, end, gap) each.
    assert sum(len(t.x) for t in lines) == (16 * 3 + 10 * 3) * 3
