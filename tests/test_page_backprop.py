"""The FC explorer's Backward mode and the CNN explorer's kernel-gradient panel, run by AppTest.

Every number the page shows is checked against ``digitrec.backprop`` run here
on the same pretrained model, digit and target, and the shared model is
checked to come out of an SGD step untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from digitrec import backprop, checkpoints
from streamlit_app import state
from tests.pages import chart as _chart, metric as _metric, number as _number, open_page


def _open(page: str, query: dict | None = None, digit: state.Digit | None = None) -> AppTest:
    return open_page(page, digit, query)


@pytest.fixture(scope="module")
def fc() -> torch.nn.Module:
    return checkpoints.load_pretrained("fc").model


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return state.sample_digit(7).x


def test_backward_mode_shows_the_numbers_of_digitrec_backprop(fc, x):
    at = _open("views/fc_explorer.py", {"mode": "backward"})
    assert at.button_group(key="fc_mode").value == "Backward"
    assert at.selectbox(key="fc_back_loss_target").value == 7  # the sample's label
    assert not [s for s in at.selectbox if s.key and s.key.endswith("_target") and s.key != "fc_back_loss_target"]

    # Pick another answer: the loss, p − onehot, every δ and one weight's gradient follow it.
    at.selectbox(key="fc_back_loss_target").set_value(3).run()
    assert not at.exception and at.query_params["target"] == "3"
    bw = backprop.backward(fc, x, 3)
    assert _number(_metric(at, "loss = −log p")) == pytest.approx(bw.loss, abs=6e-5)
    assert _number(_metric(at, "∂loss/∂score 3 = p − 1")) == pytest.approx(float(bw.output_delta[3]), abs=6e-5)
    blame = [t for t in _chart(at, "fc_back_loss_fig")["data"] if t.get("name") == "p − onehot"][0]
    assert blame["y"] == pytest.approx(bw.output_delta.tolist(), abs=1e-6)

    diagram = _chart(at, "fc_back_diagram_diagram")
    dots = [t for t in diagram["data"] if t["type"] == "scatter" and t.get("mode", "").startswith("markers")]
    for (name, delta), trace in zip(backprop.deltas(bw), dots):
        assert trace["marker"]["color"] == pytest.approx(delta.tolist(), abs=1e-7), name
    layer, neuron = at.selectbox(key="fc_back_diagram_layer").value, at.slider(key="fc_back_diagram_neuron").value
    assert (layer, neuron) == ("fc_2", backprop.most_blamed(bw, "fc_2"))
    nb = backprop.neuron_blame(bw, layer, neuron)
    said = " ".join(s.value for s in at.success)
    assert f"autograd's ∂loss/∂z for fc_2 neuron {neuron}: " in said
    # the comparison says in words whether the two numbers are equal, never "they differ by 0.0e+00"
    assert "differ by 0.0e+00" not in said and ("Exactly the same number." in said or "The same to rounding" in said)
    bars = [t for t in _chart(at, "fc_back_diagram_sum")["data"] if t["type"] == "bar"]
    assert bars[2]["y"] == pytest.approx(nb.products.tolist(), abs=1e-7)

    # One weight: input × δ, by hand and by autograd, as shown.
    w_layer, w_neuron = at.selectbox(key="fc_back_weight_layer").value, at.slider(key="fc_back_weight_neuron").value
    source = at.slider(key=f"fc_back_weight_source_{w_layer}").value
    wg = backprop.weight_gradient(bw, w_layer, w_neuron, source)
    assert _number(_metric(at, "input a")) == pytest.approx(wg.input_value, abs=6e-5)
    assert _number(_metric(at, "a × δ (by hand)")) == pytest.approx(wg.hand, rel=1e-5, abs=1e-6)
    assert _number(_metric(at, "autograd")) == pytest.approx(wg.autograd, rel=1e-5, abs=1e-6)
    assert at.query_params["w_layer"] == w_layer and at.query_params["w_input"] == str(source)

    # The first layer's weight in the chain panel: pick fc_1 and a pixel.
    at.selectbox(key="fc_back_weight_layer").set_value("fc_1").run()
    at.slider(key="fc_back_weight_source_fc_1").set_value(14 * 28 + 14).run()
    wg = backprop.weight_gradient(bw, "fc_1", at.slider(key="fc_back_weight_neuron").value, 14 * 28 + 14)
    assert _number(_metric(at, "autograd")) == pytest.approx(wg.autograd, rel=1e-5, abs=1e-6)
    assert "pixel (14, 14)" in " ".join(m.value for m in at.markdown)
    row = [t for t in _chart(at, "fc_back_weight_fig")["data"] if t["type"] == "heatmap"][1]
    autograd_row = bw.layer("fc_1").autograd_weight_grad[wg.neuron].reshape(28, 28)
    assert torch.tensor(row["z"]) == pytest.approx(autograd_row.double(), rel=1e-5, abs=1e-9)

    # The gradient pictures are δ × the digit.
    _, pictures, deltas = backprop.first_layer_pictures(bw)
    grid = [t for t in _chart(at, "fc_back_pictures_grid")["data"] if t["type"] == "heatmap"]
    first = int(deltas.abs().argmax())
    assert torch.tensor(grid[0]["z"]) == pytest.approx(pictures[first], abs=1e-7)


def test_one_sgd_step_shows_before_and_after_and_leaves_the_model_alone(fc, x):
    weights = {k: v.clone() for k, v in fc.state_dict().items()}
    at = _open("views/fc_explorer.py", {"mode": "backward", "target": "3", "lr": "0.001"})
    assert at.select_slider(key="fc_back_sgd_lr").value == 0.001
    at.select_slider(key="fc_back_sgd_lr").set_value(1.0).run()
    assert not at.exception and at.query_params["lr"] == "1"
    step = backprop.sgd_step(fc, x, 3, 1.0)
    assert _number(_metric(at, "this digit's loss after the step")) == pytest.approx(max(step.loss_after, 0.0), abs=6e-5)
    assert _number(_metric(at, "p(3) after the step")) == pytest.approx(float(step.probs_after[3]) * 100, abs=0.006)
    probs = [t for t in _chart(at, "fc_back_sgd_probs")["data"] if t.get("name") == "after the step"][0]
    assert probs["y"] == pytest.approx(step.probs_after.tolist(), abs=1e-7)
    images, labels, _ = state.overshoot_digits()
    others = backprop.effect_on_others(fc, backprop.backward(fc, x, 3), 1.0, images, labels)
    assert _number(_metric(at, f"accuracy on {others.count} other digits")) == pytest.approx(
        others.accuracy_after * 100, abs=0.06)
    assert "it overshoots" in " ".join(c.value for c in at.caption)  # lr 1 on a wrong target: too big
    # The shared, cached model was not stepped.
    assert all(torch.equal(weights[k], v) for k, v in fc.state_dict().items())
    assert all(torch.equal(weights[k], v) for k, v in state.pretrained("fc").model.state_dict().items())
    # A small step: a different sentence.
    at.select_slider(key="fc_back_sgd_lr").set_value(0.001).run()
    assert "it overshoots" not in " ".join(c.value for c in at.caption)


@pytest.mark.parametrize("raw, shown, toast", [
    ("12", 9, "The link asked for target class 12; classes are 0 to 9, so this shows 9."),
    ("-4", 0, "The link asked for target class -4; classes are 0 to 9, so this shows 0."),
    ("**bold**[x](http://e.vil)", 7, "The link's target class could not be read as a number, so this shows 7."),
])
def test_a_target_outside_0_to_9_in_the_link_is_clamped_with_a_toast(raw, shown, toast):
    at = _open("views/fc_explorer.py", {"mode": "backward", "target": raw})
    assert at.selectbox(key="fc_back_loss_target").value == shown
    assert [t.value for t in at.toast] == [toast]  # plain words: the link's own text is never echoed
    assert at.query_params["target"] == str(shown)


def test_forward_mode_is_the_default_and_the_switch_keeps_the_link():
    at = _open("views/fc_explorer.py")
    assert at.button_group(key="fc_mode").value == "Forward" and "mode" not in at.query_params
    assert at.slider(key="fc_steps_step").value == 1  # the forward step-through is there
    at.button_group(key="fc_mode").set_value("Backward").run()
    assert at.query_params["mode"] == "backward" and not at.exception
    assert at.selectbox(key="fc_back_loss_target").value == 7
    at.button_group(key="fc_mode").set_value("Forward").run()
    assert "mode" not in at.query_params and at.slider(key="fc_steps_step").value == 1


def test_a_drawing_without_a_label_starts_from_the_networks_own_answer(fc):
    pixels = state.sample_digit(2).pixels
    digit = state.pixels_digit(pixels, "your drawing")
    at = _open("views/fc_explorer.py", {"mode": "backward"}, digit=digit)
    predicted = backprop.backward(fc, digit.x, 0).predicted
    assert at.selectbox(key="fc_back_loss_target").value == predicted


def test_cnn_kernel_gradient_panel_matches_autograd():
    cnn = checkpoints.load_pretrained("cnn").model
    x = state.sample_digit(7).x
    at = _open("views/cnn_explorer.py", {"section": "Kernel gradient", "target": "1"})
    assert at.button_group(key="cnn_section").value == "Kernel gradient"
    assert at.selectbox(key="cnn_kgrad_target").value == 1
    bw = backprop.backward(cnn, x, 1)
    best = backprop.largest_kernel_gradient(bw, "conv_1_1")
    picked = tuple(at.selectbox(key=f"cnn_kgrad_{n}").value for n in ("out", "in", "row", "col"))
    assert picked == best
    kg = backprop.kernel_gradient(bw, "conv_1_1", *best)
    assert _number(_metric(at, "sum over positions (by hand)")) == pytest.approx(kg.hand, rel=1e-5, abs=1e-9)
    assert _number(_metric(at, "autograd")) == pytest.approx(kg.autograd, rel=1e-5, abs=1e-9)
    # Another layer, map and cell: the panel follows, and the link keeps the choice.
    at.selectbox(key="cnn_kgrad_layer").set_value("conv_2_1").run()
    at.selectbox(key="cnn_kgrad_out").set_value(4).run()
    at.selectbox(key="cnn_kgrad_in").set_value(6).run()
    at.selectbox(key="cnn_kgrad_row").set_value(0).run()
    at.selectbox(key="cnn_kgrad_col").set_value(2).run()
    assert not at.exception
    kg = backprop.kernel_gradient(bw, "conv_2_1", 4, 6, 0, 2)
    assert _number(_metric(at, "autograd")) == pytest.approx(kg.autograd, rel=1e-5, abs=1e-9)
    fig = _chart(at, "cnn_kgrad_fig")
    products = [t for t in fig["data"] if t["type"] == "heatmap"][3]
    assert torch.tensor(products["z"]) == pytest.approx(kg.products, abs=1e-9)
    assert (at.query_params["kg_layer"], at.query_params["kg_out"], at.query_params["kg_col"]) == ("conv_2_1", "4", "2")


# ---------------------------------------------------------------- lesson 7 on the Lessons page


LESSON = Path(__file__).resolve().parents[1] / "lessons" / "07-backpropagation.md"


def test_lesson_7_steps_render_with_the_models_numbers_and_share_the_target(tmp_path, monkeypatch, fc, x):
    """Lesson 7 alone in a lessons folder (the loader reads $DIGITREC_LESSONS), so this checks the lesson
    whatever the rest of the course's numbering is on this branch."""
    from digitrec import lessons

    (tmp_path / LESSON.name).write_text(LESSON.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv(lessons.LESSONS_ENV, str(tmp_path))
    lesson = lessons.load_lessons(tmp_path)[0]
    at = open_page("views/lessons.py", query={"lesson": "7", "step": "1"}, arrive_home=False)
    bw = backprop.backward(fc, x, 7)
    runner_up = int(torch.cat([bw.probs[:7], torch.tensor([-1.0]), bw.probs[8:]]).argmax())
    for index, step in enumerate(lesson.steps):
        if index:
            at.button(key="lesson_next").click().run()
        where = f"step {index + 1}"
        assert not at.exception, (where, [e.value for e in at.exception])
        assert not at.error, (where, [e.value for e in at.error])
        assert at.get("progress")[0].proto.text == f"Step {index + 1} of {len(lesson.steps)}"
        text = "\n".join(m.value for m in at.markdown)
        assert "{{" not in text, where
        for b, block in enumerate(step.blocks):  # commit each prediction, as the learner must, to see the rest
            if block.kind == "predict":
                key = f"lesson{lesson.number}_s{index}_b{b}"
                at.number_input(key=f"{key}_input").set_value(1.0).run()
                at.button(key=f"{key}_commit").click().run()
                assert not at.exception and not at.error, where
        links = [p for p in at.get("page_link") if p.proto.label.startswith("Open ")]
        assert len(links) == len(step.widgets), where  # every widget ran to its end
        if index == 0:
            assert f"so the loss is\n−log p = **{max(bw.loss, 0):.4f}**" in text or f"{bw.loss:.1e}" in text
            assert f"pick **{runner_up}** as the target class" in text
            # ... and says the blame that score then gets: p − 1 of the runner-up, as the widget will show it.
            assert f"become {lessons.backprop_facts({'fc': bw})['bp.fc.runner_up_as_target_blame']}." in " ".join(text.split())
            # Do what the step asks: the runner-up as target; the next steps keep it.
            target_box = [s for s in at.selectbox if s.key and s.key.endswith("_target")][0]
            target_box.set_value(runner_up).run()
            assert _number(_metric(at, "loss = −log p")) == pytest.approx(backprop.backward(fc, x, runner_up).loss,
                                                                          abs=6e-5)
        elif step.widgets and step.widgets[0].name != "kernel_gradient":
            boxes = [s for s in at.selectbox if s.key and s.key.endswith("_target")]
            assert [b.value for b in boxes] == [runner_up], where
    assert len([r for r in at.radio if r.key and r.key.startswith("lesson7_")]) == 3


def test_a_wide_three_layer_user_network_in_backward_mode(x):
    from digitrec import models

    model = models.build(models.FCConfig(hidden=(128, 64, 32)), seed=0)
    net = state.Network("my-deep", "My 128-64-32 network", model, model.config, None)
    at = open_page("views/fc_explorer.py", query={"mode": "backward"},
                   session={"my_models": {"my-deep": net}, "net": "my-deep"})
    bw = backprop.backward(model, x, 7)
    assert at.selectbox(key="fc_back_diagram_layer").value == "fc_3"  # the last hidden layer
    dots = [t for t in _chart(at, "fc_back_diagram_diagram")["data"]
            if t["type"] == "scatter" and t.get("mode", "").startswith("markers")]
    assert [len(t["marker"]["color"]) for t in dots] == [128, 64, 32, 10]
    assert "text" not in dots[0] or dots[0]["text"] is None  # 128 numbers would be a smear: hover only
    # The chain from the loss to a first-layer weight passes three hidden layers.
    at.selectbox(key="fc_back_weight_layer").set_value("fc_1").run()
    assert not at.exception
    neuron = at.slider(key="fc_back_weight_neuron").value
    source = at.slider(key="fc_back_weight_source_fc_1").value
    assert _number(_metric(at, "autograd")) == pytest.approx(
        backprop.weight_gradient(bw, "fc_1", neuron, source).autograd, rel=1e-5, abs=1e-9)
    assert len([t for t in _chart(at, "fc_back_pictures_grid")["data"] if t["type"] == "heatmap"]) == 16


def test_a_network_the_chain_rule_cannot_walk_gets_a_sentence_not_a_traceback():
    from digitrec import models

    class WithDropout(torch.nn.Module):  # e.g. what a learner's own imported model might hold
        def __init__(self):
            super().__init__()
            self.flatten, self.drop, self.output = torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(784, 10)

        def forward(self, x):
            return self.output(self.drop(self.flatten(x)))

    net = state.Network("my-odd", "My dropout network", WithDropout(), models.FCConfig(hidden=(4,)), None)
    at = open_page("views/fc_explorer.py", query={"mode": "backward"},
                   session={"my_models": {"my-odd": net}, "net": "my-odd"})
    notes = [i.value for i in at.info]
    assert notes and all(n.startswith("My dropout network: Layer 'drop' is a Dropout") for n in notes)


def test_lesson_7_with_a_drawing_that_has_no_label(tmp_path, monkeypatch, fc):
    from digitrec import lessons

    (tmp_path / LESSON.name).write_text(LESSON.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv(lessons.LESSONS_ENV, str(tmp_path))
    digit = state.pixels_digit(state.sample_digit(4).pixels, "your drawing")
    at = open_page("views/lessons.py", digit, {"lesson": "7", "step": "1"}, arrive_home=False)
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    predicted = backprop.backward(fc, digit.x, 0).predicted  # no label: the network's own answer is the target
    assert f"For your digit the right answer is\n**{predicted}**" in "\n".join(m.value for m in at.markdown)
    assert [s.value for s in at.selectbox if s.key and s.key.endswith("_target")] == [predicted]
