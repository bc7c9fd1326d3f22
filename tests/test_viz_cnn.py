"""digitrec.viz.cnn and the colour-range scopes: the figures hold the real numbers, ranges follow the scope."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from digitrec import conv_maths
from digitrec.inspection import LinearStep, capture_activations, conv_step, layer_io, linear_step, pool_step
from digitrec.viz import cnn as viz
from digitrec.viz.scales import ACTIVATION_SCALE, SCOPES, WEIGHT_SCALE, scoped_ranges

FEATURE_LAYERS = ["conv_1_1", "relu_1_1", "conv_1_2", "relu_1_2", "max_pool_1",
                  "conv_2_1", "relu_2_1", "conv_2_2", "relu_2_2", "max_pool_2"]


@pytest.fixture
def digit() -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5:23, 12:16] = torch.rand(18, 4)  # a vertical stroke touching nothing at the border
    return x


@pytest.fixture
def forward(tinyvgg, digit) -> viz.CnnForward:
    return viz.cnn_forward(tinyvgg, digit)


def _t(z) -> torch.Tensor:
    """A figure's z (nested tuples) as a float64 tensor."""
    return torch.tensor([list(row) for row in z], dtype=torch.float64)


def _heatmaps(fig, layer: str | None = None):
    return [t for t in fig.data if t.type == "heatmap" and t.meta is not None and (layer is None or t.meta[0] == layer)]


def test_scoped_ranges_by_hand():
    maps = {
        "a": torch.tensor([[[1.0, -3.0]], [[2.0, 0.5]]]),  # (2, 1, 2): map maxima 3 and 2
        "b": torch.tensor([[[-5.0]]]),  # (1, 1, 1)
    }
    assert scoped_ranges(maps, "map") == {"a": [3.0, 2.0], "b": [5.0]}
    assert scoped_ranges(maps, "layer") == {"a": [3.0, 3.0], "b": [5.0]}
    assert scoped_ranges(maps, "network") == {"a": [5.0, 5.0], "b": [5.0]}
    assert scoped_ranges({"z": torch.zeros(2, 3, 3)}, "map") == {"z": [1.0, 1.0]}  # never a zero-width scale
    with pytest.raises(ValueError):
        scoped_ranges(maps, "global")


def test_cnn_forward_keeps_every_map(tinyvgg, digit, forward):
    acts = capture_activations(tinyvgg, digit)
    assert list(forward.maps) == ["input"] + FEATURE_LAYERS
    for name in FEATURE_LAYERS:
        assert torch.equal(forward.maps[name], acts[name][0])
    assert torch.equal(forward.flat, acts["max_pool_2"][0].flatten())
    assert forward.flat_shape == (10, 7, 7)
    assert float(forward.probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert forward.predicted == int(acts["output"][0].argmax())


def test_overview_has_one_heatmap_per_feature_map_with_its_numbers(forward):
    fig = viz.overview_figure(forward, "layer")
    assert len(_heatmaps(fig, "input")) == 1
    for name in FEATURE_LAYERS:
        traces = _heatmaps(fig, name)
        assert [t.meta[1] for t in traces] == list(range(10))
        for t in traces:
            assert t.colorscale == go.Heatmap(colorscale=ACTIVATION_SCALE).colorscale
            torch.testing.assert_close(_t(t.z), forward.maps[name][t.meta[1]].double(), atol=1e-4, rtol=0)
            assert "row %{y}, col %{x}" in t.hovertemplate
    assert len(_heatmaps(fig)) == 1 + 10 * len(FEATURE_LAYERS) + 1  # + the flatten strip
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 1 and len(bars[0].x) == 10
    colors = list(bars[0].marker.color)
    assert colors[forward.predicted] == viz.PREDICTED_COLOR and colors.count(viz.PREDICTED_COLOR) == 1
    # exactly one colour bar, the activation legend
    assert [list(t.meta) for t in fig.data if getattr(t, "showscale", False)] == [["conv_1_1", 0]]


@pytest.mark.parametrize("scope", SCOPES)
def test_overview_ranges_follow_the_scope(forward, scope):
    fig = viz.overview_figure(forward, scope)
    everything = max(float(forward.maps[n].abs().max()) for n in FEATURE_LAYERS)
    for name in FEATURE_LAYERS:
        for t in _heatmaps(fig, name):
            m = forward.maps[name]
            expected = {
                "map": float(m[t.meta[1]].abs().max()) or 1.0,
                "layer": float(m.abs().max()),
                "network": everything,
            }[scope]
            assert t.zmax == pytest.approx(expected) and t.zmin == pytest.approx(-expected)
    if scope == "network":
        assert len({t.zmax for name in FEATURE_LAYERS for t in _heatmaps(fig, name)}) == 1
    if scope == "layer":
        assert {len({t.zmax for t in _heatmaps(fig, name)}) for name in FEATURE_LAYERS} == {1}


def test_conv_step_figure_first_layer_at_the_border(tinyvgg, digit):
    step = conv_step(tinyvgg, digit, "conv_1_1", 2, 0, 5)  # top row: the window's first row is padding
    inp, _ = layer_io(tinyvgg, digit, "conv_1_1")
    fig = viz.conv_step_figure(inp[0], step, 0.5, ink=True)
    patch = next(t for t in fig.data if list(t.meta or []) == ["patch", 0])
    assert [row.count("0<br>pad") for row in patch.text] == [3, 0, 0]
    kernel = next(t for t in fig.data if list(t.meta or []) == ["kernel", 0])
    torch.testing.assert_close(_t(kernel.z), tinyvgg.conv_1_1.weight[2, 0].detach().double(), atol=1e-4, rtol=0)
    assert kernel.colorscale == go.Heatmap(colorscale=WEIGHT_SCALE).colorscale
    assert kernel.zmax == 0.5 and kernel.zmin == -0.5
    products = next(t for t in fig.data if list(t.meta or []) == ["product", 0])
    torch.testing.assert_close(_t(products.z), step.products[0].double(), atol=1e-4, rtol=0)
    # the green window on the padded input: rows -1..1, cols 4..6
    rect = fig.layout.shapes[0]
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (3.5, 6.5, -1.5, 1.5)
    # the sum shown is the channel sum
    assert any(f"{float(step.channel_sums[0]):.3f}" in a.text for a in fig.layout.annotations)


def test_conv_step_figure_deep_layer_has_a_row_per_input_channel(tinyvgg, digit):
    step = conv_step(tinyvgg, digit, "conv_2_1", 0, 6, 6)
    inp, _ = layer_io(tinyvgg, digit, "conv_2_1")
    fig = viz.conv_step_figure(inp[0], step, 0.5)
    for what in ("input", "patch", "kernel", "product"):
        assert sorted(t.meta[1] for t in fig.data if t.meta is not None and t.meta[0] == what) == list(range(10))
    weight_scale = go.Heatmap(colorscale=WEIGHT_SCALE).colorscale
    activation_scale = go.Heatmap(colorscale=ACTIVATION_SCALE).colorscale
    for t in fig.data:
        if t.meta is not None:
            assert t.colorscale == (weight_scale if t.meta[0] == "kernel" else activation_scale)
    for ch in range(10):
        patch = next(t for t in fig.data if t.meta is not None and list(t.meta) == ["patch", ch])
        assert not any("pad" in cell for row in patch.text for cell in row)  # inner position: no padding


def test_relu_figure_crosses_out_the_negative_cells():
    before = torch.tensor([[1.0, -2.0, 0.5], [-0.1, 0.0, 3.0], [-4.0, 2.0, -1.0]])
    after = before.clamp(min=0)
    fig = viz.relu_figure(before, after, 0, 0)
    crosses = next(t for t in fig.data if t.type == "scatter")
    assert sorted(zip(crosses.y, crosses.x)) == [(0, 1), (1, 0), (2, 0), (2, 2)]
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert heat[0].zmax == heat[1].zmax == 4.0  # same range before and after
    assert _t(heat[1].z).tolist() == after.double().tolist()


def test_pool_figure_shows_the_window_and_its_maximum():
    m = torch.arange(16.0).reshape(4, 4)
    m[2, 3] = 100.0
    step = pool_step(m, 1, 1)  # window rows 2-3, cols 2-3
    fig = viz.pool_figure(m, torch.nn.functional.max_pool2d(m[None], 2)[0], 1, 1, step)
    window = next(t for t in fig.data if t.name == "window")
    assert _t(window.z).tolist() == [[10.0, 100.0], [14.0, 15.0]]
    assert "★" in window.text[0][1] and sum("★" in c for row in window.text for c in row) == 1
    star = next(t for t in fig.data if t.type == "scatter")
    assert (star.x[0], star.y[0]) == (3, 2)
    assert fig.layout.shapes[0].x0 == 1.5 and fig.layout.shapes[0].y1 == 3.5


def test_filters_figure_one_heatmap_per_kernel(tinyvgg):
    w, b = tinyvgg.conv_1_2.weight.detach(), tinyvgg.conv_1_2.bias.detach()
    fig = viz.filters_figure(w, b, "conv_1_2")
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 100
    half = float(w.abs().max())
    assert all(t.zmax == pytest.approx(half) and t.zmin == pytest.approx(-half) for t in heat)
    t = next(t for t in heat if list(t.meta) == [4, 7])
    torch.testing.assert_close(_t(t.z), w[4, 7].double(), atol=1e-4, rtol=0)
    assert sum(bool(t.showscale) for t in heat) == 1  # one legend
    assert len([t for t in viz.filters_figure(tinyvgg.conv_1_1.weight.detach(), tinyvgg.conv_1_1.bias.detach(),
                                              "conv_1_1").data if t.type == "heatmap"]) == 10


def test_top_contributions_by_hand(tinyvgg, digit):
    # A fake output neuron over 2 maps of 2 x 2: products 1, 5, -2, 3, 0, 4, 0, 0.
    inputs = torch.tensor([1.0, 5.0, 2.0, 3.0, 0.0, 2.0, 1.0, 0.0])
    weights = torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0, 2.0, 0.0, 1.0])
    step = LinearStep("output", 0, inputs, weights, inputs * weights, 0.0, float((inputs * weights).sum()))
    top = viz.top_contributions(step, (2, 2, 2), k=3)
    assert [(c.index, c.channel, c.row, c.col, c.product) for c in top] == [
        (1, 0, 0, 1, 5.0), (5, 1, 0, 1, 4.0), (3, 0, 1, 1, 3.0)]
    # and on the real network: the bars are the largest products of the predicted class
    forward = viz.cnn_forward(tinyvgg, digit)
    real = linear_step(tinyvgg, digit, "output", forward.predicted)
    bars = viz.contributions_figure(viz.top_contributions(real, forward.flat_shape), forward.predicted).data[0]
    assert list(bars.x) == pytest.approx(sorted(real.products.tolist(), reverse=True)[:10])


def test_sandbox_figure_marks_an_invalid_stride():
    image = torch.rand(28, 28)
    kernel = conv_maths.make_kernel("blur", 3)
    good = conv_maths.geometry(28, 3, 1, 1)
    bad = conv_maths.geometry(28, 3, 0, 2)  # 25 / 2 does not fit
    fig_good = viz.sandbox_figure(image, kernel, conv_maths.convolve(image, kernel, 1, 1), good)
    fig_bad = viz.sandbox_figure(image, kernel, conv_maths.convolve(image, kernel, 0, 2), bad)
    out = next(t for t in fig_bad.data if t.name == "output")
    assert (len(out.z), len(out.z[0])) == (13, 13)
    shaded = [s for s in fig_bad.layout.shapes if s.fillcolor and s.fillcolor != "rgba(0,0,0,0)"]
    assert len(shaded) == 2 and not [s for s in fig_good.layout.shapes if s.fillcolor != "rgba(0,0,0,0)"]
    assert any(t.name == "padding" for t in fig_good.data) and not any(t.name == "padding" for t in fig_bad.data)
    k = next(t for t in fig_good.data if t.name == "kernel")
    assert k.colorscale == go.Heatmap(colorscale=WEIGHT_SCALE).colorscale
