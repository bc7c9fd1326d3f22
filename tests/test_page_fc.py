"""The /fc page (Fully connected network, step by step) run through Streamlit's AppTest."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from digitrec import models
from digitrec.inspection import capture_activations
from streamlit_app import state
from tests.pages import chart as _chart, metric, number, open_page


def _open(digit: state.Digit, net: str | None = None, my_models: dict | None = None,
          query: dict | None = None) -> AppTest:
    session = {"my_models": my_models} if my_models else {}
    if net:
        session["net"] = net
    return open_page("views/fc_explorer.py", digit, query, session, timeout=60)


def _heatmaps(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t["type"] == "heatmap"]


def _metric(at: AppTest, label: str) -> float:
    return number(metric(at, label))


def _wide_network() -> state.Network:
    model = models.build(models.FCConfig(hidden=(128, 64)), seed=0)
    return state.Network("my-wide", "My 128-64 network", model, model.config, None)


@pytest.fixture
def three() -> state.Digit:
    return state.sample_digit(3)


def _step_through(at: AppTest, count: int) -> None:
    for i in range(1, count + 1):
        at.slider(key="fc_steps_step").set_value(i).run()
        assert not at.exception, (i, [e.value for e in at.exception])
        assert at.subheader[0].value.startswith(f"Step {i} of {count}:")
        assert at.query_params["step"] == str(i)


def test_every_step_renders_with_the_pretrained_network(three):
    at = _open(three)
    assert at.title[0].value == "Fully connected network, step by step"
    assert at.selectbox(key="net_picker").value == "fc"
    _step_through(at, 8)
    # The last step is the softmax explainer; its highlighted class is the network's answer.
    net = state.network("fc")
    logits = capture_activations(net.model, three.x)["output"][0]
    assert at.selectbox(key="fc_steps_softmax_class").value == int(logits.argmax()) == 3


def test_relu_step_names_the_neurons_it_zeroed(three):
    at = _open(three, query={"step": "4"})
    assert at.subheader[0].value.startswith("Step 4 of 8: relu_1")
    fc_1 = capture_activations(state.network("fc").model, three.x)["fc_1"][0]
    negative = [i for i, v in enumerate(fc_1.tolist()) if v < 0]
    text = " ".join(m.value for m in at.markdown)
    assert f"**{len(negative)} of 16** sums were negative" in text
    bars = [t for t in _chart(at, "fc_steps_values")["data"] if t["type"] == "bar"]
    assert [round(v, 5) for v in bars[0]["y"]] == [round(v, 5) for v in fc_1.tolist()]  # hollow: before
    assert [round(v, 5) for v in bars[1]["y"]] == [round(max(v, 0.0), 5) for v in fc_1.tolist()]


def test_next_and_previous_move_the_slider_and_the_link(three):
    at = _open(three)
    assert at.session_state["fc_steps_step"] == 1 and at.query_params["step"] == "1"
    assert at.button(key="fc_steps_prev").disabled
    at.button(key="fc_steps_next").click().run()
    at.button(key="fc_steps_next").click().run()
    assert at.slider(key="fc_steps_step").value == 3 and at.query_params["step"] == "3"
    assert at.subheader[0].value == "Step 3 of 8: fc_1: 16 weighted sums"
    at.toggle(key="fc_steps_matvec_on").set_value(True).run()  # z = W x + b as a matrix figure
    strip, w, b, z = _heatmaps(_chart(at, "fc_steps_matvec"))
    assert (len(w["z"]), len(w["z"][0]), len(strip["z"][0])) == (16, 784, 784)
    fc_1 = capture_activations(state.network("fc").model, three.x)["fc_1"][0]
    assert [round(r[0], 5) for r in z["z"]] == [round(v, 5) for v in fc_1.tolist()]
    at.button(key="fc_steps_prev").click().run()
    assert at.slider(key="fc_steps_step").value == 2 and at.query_params["step"] == "2"
    at.slider(key="fc_steps_step").set_value(8).run()
    assert at.button(key="fc_steps_next").disabled and not at.exception


def test_a_link_opens_at_its_step_and_a_bad_step_is_clamped(three):
    assert _open(three, query={"step": "7"}).subheader[0].value.startswith("Step 7 of 8: Output layer")
    assert _open(three, query={"step": "99"}).subheader[0].value.startswith("Step 8 of 8: Softmax")
    assert _open(three, query={"step": "abc"}).subheader[0].value.startswith("Step 1 of 8")


def test_neuron_panel_sum_equals_the_layer_activation(three):
    at = _open(three)
    net = state.network("fc")
    acts = capture_activations(net.model, three.x)
    top = int(acts["fc_1"][0].argmax())
    expected = float(acts["fc_1"][0, top])
    # Default: fc_1's most active neuron.
    assert f"Neuron **{top}** of `fc_1` (the most active)" in [m.value for m in at.markdown]
    assert _metric(at, "Σ wᵢxᵢ + b") == pytest.approx(expected, abs=5e-5)
    assert _metric(at, "→ ReLU") == pytest.approx(max(expected, 0.0), abs=5e-5)
    assert _metric(at, "Σ wᵢxᵢ") + _metric(at, "+ bias b") == pytest.approx(expected, abs=2e-4)
    assert f"= **{expected:.4f}** → ReLU → **{expected:.4f}**" in " ".join(m.value for m in at.markdown)
    fig = _chart(at, "fc_neuron_fig")
    assert len(_heatmaps(fig)) == 3  # weights, digit, products

    # Pick a neuron that ReLU switches off, then a neuron of fc_2.
    negative = int(acts["fc_1"][0].argmin())
    at.toggle(key="fc_neuron_auto").set_value(False).run()
    at.slider(key="fc_neuron_neuron_fc_1").set_value(negative).run()
    assert _metric(at, "Σ wᵢxᵢ + b") == pytest.approx(float(acts["fc_1"][0, negative]), abs=5e-5)
    assert _metric(at, "→ ReLU") == pytest.approx(max(float(acts["fc_1"][0, negative]), 0.0), abs=5e-5)
    assert at.query_params["neuron"] == str(negative)
    at.selectbox(key="fc_neuron_layer").set_value("fc_2").run()
    at.slider(key="fc_neuron_neuron_fc_2").set_value(5).run()
    assert _metric(at, "Σ wᵢxᵢ + b") == pytest.approx(float(acts["fc_2"][0, 5]), abs=5e-5)
    bars = [t for t in _chart(at, "fc_neuron_fig")["data"] if t["type"] == "bar"]
    assert [len(b["y"]) for b in bars] == [16, 16, 16]  # over the previous layer's 16 neurons
    assert at.query_params["layer"] == "fc_2"


def test_weight_grid_one_image_per_neuron_on_a_shared_symmetric_range(three):
    at = _open(three)
    fc_1 = state.network("fc").model.fc_1
    heat = _heatmaps(_chart(at, "fc_grid_grid"))
    assert len(heat) == 16
    limit = float(fc_1.weight.detach().abs().max())
    assert {(t["zmin"], t["zmax"]) for t in heat} == {(heat[0]["zmin"], heat[0]["zmax"])}
    assert heat[0]["zmin"] == pytest.approx(-limit) and heat[0]["zmax"] == pytest.approx(limit)
    values = capture_activations(state.network("fc").model, three.x)["fc_1"][0]
    titles = [a["text"] for a in _chart(at, "fc_grid_grid")["layout"]["annotations"]]
    top = int(values.argmax())
    assert titles[top] == f"<b>#{top}: {float(values[top]):.2f}</b>"


def test_a_wide_user_model_works_at_every_step(three):
    wide = _wide_network()
    at = _open(three, net="my-wide", my_models={"my-wide": wide})
    assert at.selectbox(key="net_picker").value == "my-wide"
    _step_through(at, 8)
    at.slider(key="fc_steps_step").set_value(3).run()
    bars = [t for t in _chart(at, "fc_steps_values")["data"] if t["type"] == "bar"]
    assert len(bars[0]["y"]) == 128 and "text" not in bars[0]  # 128 bars, no printed numbers
    # The neuron panel agrees with the layer, and the weight grid shows a page of 32 of the 128 neurons.
    expected = float(capture_activations(wide.model, three.x)["fc_1"][0].max())
    assert _metric(at, "Σ wᵢxᵢ + b") == pytest.approx(expected, abs=5e-5)
    heat = _heatmaps(_chart(at, "fc_grid_grid"))
    assert len(heat) == 32 and len({(t["zmin"], t["zmax"]) for t in heat}) == 1
    at.select_slider(key="fc_grid_page").set_value(4).run()
    assert not at.exception and len(_heatmaps(_chart(at, "fc_grid_grid"))) == 32


def test_a_real_test_digit_and_a_cnn_in_the_link(mnist):
    index = 0
    digit = state.Digit(mnist.test.images[index].float() / 255.0, f"test digit #{index}",
                        int(mnist.test.labels[index]), f"test:{index}")
    at = _open(digit, net="cnn")  # the CNN is chosen elsewhere: this page falls back to the FCNet
    assert at.selectbox(key="net_picker").value == "fc"
    _step_through(at, 8)
