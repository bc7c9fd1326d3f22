"""The convolutional explorer (/cnn) run by Streamlit's AppTest with the pretrained TinyVGG.

The numbers the page shows are checked against an independent forward pass
(``capture_activations``), not against the code that drew them.
"""

from __future__ import annotations


import pytest
import torch
from streamlit.testing.v1 import AppTest

from digitrec import checkpoints, samples
from digitrec.inspection import capture_activations
from streamlit_app import state
from tests import pages
from tests.pages import figures
FEATURE_LAYERS = ["conv_1_1", "relu_1_1", "conv_1_2", "relu_1_2", "max_pool_1",
                  "conv_2_1", "relu_2_1", "conv_2_2", "relu_2_2", "max_pool_2"]


@pytest.fixture(scope="module")
def activations() -> dict[str, torch.Tensor]:
    """TinyVGG's own activations for sample 7, computed apart from the page."""
    model = checkpoints.load_pretrained("cnn").model
    return capture_activations(model, samples.sample_digit(7).reshape(1, 1, 28, 28))


def open_cnn(query: dict[str, str] | None = None, net: str | None = None) -> AppTest:
    return pages.open_page("views/cnn_explorer.py", query=query, session={"net": net} if net else None, timeout=90)


def overview(at: AppTest) -> dict:
    return next(f for f in figures(at) if any((t.get("meta") or [None])[0] == "max_pool_2" for t in f["data"]))


def feature_maps(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t["type"] == "heatmap" and (t.get("meta") or [None])[0] in ["input", *FEATURE_LAYERS]]


def metric_numbers(at: AppTest) -> tuple[float, float, str]:
    hand, layer = at.metric[0], at.metric[1]
    return float(hand.value), float(layer.value), layer.label


@pytest.fixture(scope="module")
def page() -> AppTest:
    return open_cnn()


def test_overview_has_one_heatmap_per_feature_map(page, activations):
    fig = overview(page)
    maps = feature_maps(fig)
    assert len(maps) == 1 + 10 * len(FEATURE_LAYERS)  # the digit, then 10 maps per conv/ReLU/pool layer
    for layer in FEATURE_LAYERS:
        traces = [t for t in maps if t["meta"][0] == layer]
        assert sorted(t["meta"][1] for t in traces) == list(range(10))
        t = traces[3]
        z = torch.tensor(t["z"], dtype=torch.float64)
        torch.testing.assert_close(z, activations[layer][0, t["meta"][1]].double(), atol=1e-4, rtol=0)
    # the output: ten bars, the predicted class marked
    bars = next(t for t in fig["data"] if t["type"] == "bar")
    predicted = int(activations["output"][0].argmax())
    assert predicted == 7
    assert bars["marker"]["color"][predicted] != bars["marker"]["color"][(predicted + 1) % 10]
    assert len(set(bars["marker"]["color"])) == 2
    # a legend (colour bar) says what the colours mean
    assert sum(1 for t in fig["data"] if t.get("showscale")) == 1
    assert any("(rows: map 0 to 9)" in c.value for c in page.caption)  # TinyVGG's ten maps a layer


def test_scope_switch_sets_the_colour_ranges(activations):
    at = open_cnn()
    layer_max = {n: float(activations[n][0].abs().max()) for n in FEATURE_LAYERS}
    whole = max(layer_max.values())
    for scope in ("layer", "network", "map"):
        at.radio(key="cnn_overview_scope").set_value(scope).run()
        assert not at.exception
        assert at.query_params["scope"] in (scope, [scope])
        maps = [t for t in feature_maps(overview(at)) if t["meta"][0] != "input"]
        for t in maps:
            layer, ch = t["meta"]
            expected = {
                "layer": layer_max[layer],
                "network": whole,
                "map": float(activations[layer][0, ch].abs().max()) or 1.0,
            }[scope]
            assert t["zmax"] == pytest.approx(expected, rel=1e-6) and t["zmin"] == pytest.approx(-expected, rel=1e-6)
        if scope == "layer":  # all maps of a layer share one range, layers differ
            assert all(len({t["zmax"] for t in maps if t["meta"][0] == n}) == 1 for n in FEATURE_LAYERS)
            assert len({t["zmax"] for t in maps}) > 1
        if scope == "network":  # every map shares one range
            assert len({t["zmax"] for t in maps}) == 1
        if scope == "map":
            assert len({t["zmax"] for t in maps if t["meta"][0] == "conv_1_1"}) > 1


@pytest.mark.parametrize(
    "layer,channel,row,col",
    [("conv_1_1", 4, 0, 0), ("conv_1_1", 2, 12, 15), ("conv_2_1", 3, 0, 13), ("conv_2_1", 6, 7, 5)],
)
def test_arithmetic_result_equals_the_layers_activation(activations, layer, channel, row, col):
    at = open_cnn()
    at.selectbox(key="cnn_conv_layer").set_value(layer).run()
    at.selectbox(key="cnn_conv_map").set_value(channel).run()
    at.slider(key="cnn_conv_row").set_value(row)
    at.slider(key="cnn_conv_col").set_value(col).run()
    assert not at.exception, [e.value for e in at.exception]
    hand, shown, label = metric_numbers(at)
    truth = float(activations[layer][0, channel, row, col])
    assert label == f"{layer}, map {channel}, row {row}, col {col}"
    assert hand == pytest.approx(truth, abs=1e-4)
    assert shown == pytest.approx(truth, abs=1e-4)
    assert at.success and "exactly what the layer computed" in at.success[0].value
    # The view is in the URL, so a link reproduces it.
    url = {k: at.query_params[k] for k in ("layer", "map", "row", "col")}
    assert {k: v if isinstance(v, str) else v[0] for k, v in url.items()} == {
        "layer": layer, "map": str(channel), "row": str(row), "col": str(col)}
    # Border positions show the zero padding; inner ones do not.
    step_fig = next(f for f in figures(at) if any((t.get("meta") or [None])[0] == "patch" for t in f["data"]))
    patch_text = [c for t in step_fig["data"] if (t.get("meta") or [None])[0] == "patch" for r in t["text"] for c in r]
    on_border = row == 0 or col == 0 or row == 27 or col == 27 or (layer == "conv_2_1" and (row == 13 or col == 13))
    assert any("pad" in c for c in patch_text) == on_border
    n_in = 1 if layer == "conv_1_1" else 10
    assert sum(1 for t in step_fig["data"] if (t.get("meta") or [None])[0] == "kernel") == n_in


def test_a_shared_link_opens_the_same_view(activations):
    at = open_cnn({"layer": "conv_2_1", "map": "3", "row": "13", "col": "0", "scope": "network"})
    assert at.selectbox(key="cnn_conv_layer").value == "conv_2_1"
    assert at.radio(key="cnn_overview_scope").value == "network"
    hand, shown, _ = metric_numbers(at)
    assert hand == pytest.approx(float(activations["conv_2_1"][0, 3, 13, 0]), abs=1e-4) and shown == hand


def test_default_position_is_the_most_active(page, activations):
    at = page
    _, shown, label = metric_numbers(at)
    out = activations["conv_1_1"][0, 0]
    assert shown == pytest.approx(float(out.max()), abs=1e-4)
    assert label.startswith("conv_1_1, map 0,")


def test_play_steps_to_the_next_position():
    at = open_cnn({"row": "5", "col": "26"})
    at.button(key="cnn_conv_play_button").click().run()
    assert not at.exception
    # The run that starts playing moves the window one step; the timer's runs (the browser test's part) go on.
    assert at.button(key="cnn_conv_stop_button").label == "Stop"
    assert (at.slider(key="cnn_conv_row").value, at.slider(key="cnn_conv_col").value) == (5, 27)
    at.button(key="cnn_conv_stop_button").click().run()
    assert at.button(key="cnn_conv_play_button").label == "Play"
    assert (at.slider(key="cnn_conv_row").value, at.slider(key="cnn_conv_col").value) == (5, 27)
    at.run()
    assert (at.slider(key="cnn_conv_row").value, at.slider(key="cnn_conv_col").value) == (5, 27)  # stopped
    # Past the end of a row the window wraps to the next row.
    at.slider(key="cnn_conv_col").set_value(27)
    at.button(key="cnn_conv_play_button").click().run()
    assert (at.slider(key="cnn_conv_row").value, at.slider(key="cnn_conv_col").value) == (6, 0)


def test_relu_pool_end_filters_and_sandbox_sections(activations):
    at = open_cnn()
    at.button_group(key="cnn_section").set_value("ReLU").run()
    assert not at.exception
    table = at.dataframe[0].value
    for cell in table.to_numpy().flatten():  # "max(0, x) = y"
        x, y = cell.removeprefix("max(0, ").split(") = ")
        assert float(y) == pytest.approx(max(0.0, float(x)), abs=1e-3)

    at.button_group(key="cnn_section").set_value("Max pooling").run()
    assert not at.exception
    row, col = at.slider(key="cnn_pool_row").value, at.slider(key="cnn_pool_col").value
    pooled = float(activations["max_pool_1"][0, 0, row, col])
    assert pooled == pytest.approx(float(activations["max_pool_1"][0, 0].max()), abs=1e-6)  # default: the largest
    assert f"{pooled:.3f}" in at.latex[0].value
    window = activations["relu_1_2"][0, 0, 2 * row:2 * row + 2, 2 * col:2 * col + 2]
    assert float(window.max()) == pytest.approx(pooled)

    at.button_group(key="cnn_section").set_value("The end: softmax").run()
    assert not at.exception
    contrib = next(f for f in figures(at) if f["data"][0].get("orientation") == "h" and "map" in str(f["data"][0]["y"][0]))
    assert len(contrib["data"][0]["x"]) == 10

    at.button_group(key="cnn_section").set_value("Filters").run()
    assert not at.exception
    at.selectbox(key="cnn_filters_layer").set_value("conv_2_2").run()
    filters = [f for f in figures(at) if sum(t["type"] == "heatmap" for t in f["data"]) == 100]
    assert len(filters) == 1

    at.button_group(key="cnn_section").set_value("Sandbox").run()
    assert not at.exception and not at.warning
    at.slider(key="cnn_sandbox_stride").set_value(2).run()  # (28 - 3) / 2 is not whole
    assert at.warning and "does not fit" in at.warning[0].value
    sandbox = next(f for f in figures(at) if any(t.get("name") == "kernel" for t in f["data"]))
    out = next(t for t in sandbox["data"] if t.get("name") == "output")
    assert (len(out["z"]), len(out["z"][0])) == (13, 13)
    at.slider(key="cnn_sandbox_padding").set_value(1).run()  # (28 + 2 - 3) / 2 still is not
    at.slider(key="cnn_sandbox_size").set_value(4).run()  # (28 + 2 - 4) / 2 = 13: fits, 14 x 14
    assert not at.warning


def test_an_fc_choice_still_shows_the_cnn():
    at = open_cnn(net="fc")
    assert at.sidebar.selectbox[0].value == "cnn"
    assert len(feature_maps(overview(at))) == 101


def test_visiting_the_fc_page_does_not_forget_the_chosen_cnn():
    """A learner's own CNN ("my-2", say) chosen here must still be chosen after a look at the FC explorer."""
    at = open_cnn(net="cnn")
    at.switch_page("views/fc_explorer.py").run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "fc"  # the FC page shows an FC network…
    assert at.session_state["net"] == "cnn"  # …without overwriting the choice


def test_a_linked_network_choice_survives_a_page_switch():
    at = AppTest.from_file(pages.APP, default_timeout=90)
    at.query_params["net"] = "fc"
    at.run()
    at.switch_page("views/cnn_explorer.py").run()
    assert not at.exception
    assert at.session_state["net"] == "fc"


def test_a_wide_network_draws_a_page_of_maps_at_a_time_and_offers_the_rest():
    # A 256-channel TinyVGG (an allowed checkpoint) used to draw 2,560 maps, ~40 s of server CPU a rerun.
    from digitrec import models
    from digitrec import config
    from streamlit_app.widgets import cnn

    wide = models.build(models.TinyVGGConfig(channels=256), seed=0).eval()
    at = AppTest.from_file(pages.APP, default_timeout=120)
    at.run()
    at.switch_page("views/cnn_explorer.py")
    at.session_state["digit"] = state.sample_digit(7)
    at.session_state["my_models"] = {"my-1": state.Network("my-1", "My wide TinyVGG", wide, wide.config, None)}
    at.session_state["net"] = "my-1"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    maps = feature_maps(overview(at))
    per_layer = {layer: sorted(t["meta"][1] for t in maps if t["meta"][0] == layer) for layer in FEATURE_LAYERS}
    assert all(chs == list(range(cnn.MAX_OVERVIEW_MAPS)) for chs in per_layer.values())
    picker = next(s for s in at.selectbox if s.label.startswith("Maps shown"))
    assert "256 per layer" in picker.label and len(picker.options) == 256 // cnn.MAX_OVERVIEW_MAPS
    picker.select_index(len(picker.options) - 1).run()
    assert not at.exception
    maps = feature_maps(overview(at))
    assert sorted({t["meta"][1] for t in maps if t["meta"][0] == "conv_2_2"}) == list(range(240, 256))
    # The caption under the grid names the maps on show, not TinyVGG's ten.
    assert any("(rows: map 240 to 255)" in c.value for c in at.caption)
    # and the Train page offers far fewer channels than the library allows
    assert config.APP_CHANNELS_RANGE[1] <= 64
