"""Your own model in the app (AppTest): a state dict uploaded on the Train page joins every picker as
"mine: NAME", and every explorer page, section and attribution renders for it; a bad upload gets
its sentence and loses nothing. Models from tests/learner_models.py (built as a learner writes them)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests import learner_models
from tests.pages import figures, open_page

CNN_SECTIONS = ["Convolution", "ReLU", "Max pooling", "The end: softmax", "Filters"]


def _open_train():
    return open_page("views/train.py", timeout=300)


def _upload(at, key: str, data: bytes | None = None):
    data = data if data is not None else learner_models.trained(key)[1]
    at.file_uploader(key="train_import_file").set_value((f"{key}.pth", data, "application/octet-stream")).run()
    return at


def _mine(at) -> dict:
    return {k: n for k, n in at.session_state["my_models"].items() if n.label.startswith("mine: ")}


def _no_errors(at, where: str) -> None:
    assert not at.exception, (where, [e.value for e in at.exception])
    assert not at.error, (where, [e.value for e in at.error])
    bad = [w.value for w in at.warning if "does not match the layer" in w.value or "differ" in w.value]
    assert not bad, (where, bad)


@pytest.mark.parametrize("key", ["cnn5_stride2_avg", "batchnorm_dropout"])
def test_an_uploaded_cnn_renders_on_every_page(key):
    at = _upload(_open_train(), key)
    assert any("Imported **mine: " + key in s.value for s in at.success), [s.value for s in at.success]
    (net_key, net), = _mine(at).items()
    assert net.is_cnn and net.config.text() == learner_models.EXPECTED[key][0]

    # The CNN explorer on it: the overview has a column per layer of the model, every section renders.
    at.session_state["net"] = net_key
    at.switch_page("views/cnn_explorer.py").run()
    _no_errors(at, "cnn overview")
    assert at.sidebar.selectbox(key="net_picker").value == net_key
    charts = json.dumps(figures(at))
    for layer in (("conv_1_1", "conv_2_1", "avg_pool_1") if "avg" in key else ("conv_1_1", "bn_1_1", "max_pool_1")):
        assert layer in charts
    for section in CNN_SECTIONS:
        at.session_state["cnn_section"] = section
        at.run()
        _no_errors(at, section)
    # Average pooling is worked out as a mean, and it equals the layer's output.
    if "avg" in key:
        at.session_state["cnn_section"] = "Max pooling"
        at.run()
        assert any(r"\tfrac{1}{4}" in l.value for l in at.latex)
    # Batch norm (its own section when the model has a BatchNorm2d): one cell of one map in numbers,
    # equal to the layer's real output there.
    if key == "batchnorm_dropout":
        from digitrec.inspection import batchnorm_step, layer_io

        at.session_state["cnn_section"] = "Batch norm"
        at.run()
        _no_errors(at, "batch norm")
        at.selectbox(key="cnn_bn_map").set_value(3).run()
        at.slider(key="cnn_bn_row").set_value(9).run()
        at.slider(key="cnn_bn_col").set_value(12).run()
        _no_errors(at, "batch norm cell")
        before, after = layer_io(net.model, at.session_state["digit"].x, "bn_1_1")  # (1, 8, 28, 28) each
        x, y = float(before[0, 3, 9, 12]), float(after[0, 3, 9, 12])
        bn = batchnorm_step(net.model.bn_1_1, 3)
        formula = next(l.value for l in at.latex if r"\gamma" in l.value)
        assert f"{bn.gamma:.3f}" in formula and f"{x:.3f} - ({bn.mean:.3f})" in formula and f"{bn.var:.3f}" in formula
        shown = float(re.findall(r"\\mathbf\{(-?[0-9.]+)\}", formula)[-1])
        assert shown == pytest.approx(y, abs=1e-4)  # the formula's result is the layer's output
        assert any(f"**{y:.4f}**" in m.value for m in at.markdown)
    at.session_state["cnn_section"] = "Convolution"
    at.run()
    assert any("exactly what the layer computed" in s.value for s in at.success)

    for page in ("views/attributions.py", "views/home.py", "views/draw.py"):
        at.switch_page(page).run()
        _no_errors(at, page)
    assert any(net.label in json.dumps(f) for f in figures(at)) or any(net.label in m.value for m in at.markdown)


def test_an_uploaded_sigmoid_fc_net_walks_through_the_fc_explorer():
    at = _upload(_open_train(), "sigmoid")
    (net_key, net), = _mine(at).items()
    assert not net.is_cnn and "sigmoid" in net.config.text()
    at.session_state["net"] = net_key
    at.switch_page("views/fc_explorer.py").run()
    _no_errors(at, "fc explorer")
    # Step through every layer of the forward pass, the sigmoid with its formula.
    last = int(at.slider(key="fc_steps_step").max)  # input, flatten, fc_1, sigmoid_1, output, softmax
    assert last == 6
    seen_formula = False
    for i in range(1, last + 1):
        at.slider(key="fc_steps_step").set_value(i).run()
        _no_errors(at, f"step {i}")
        seen_formula |= any(r"\sigma(z)" in l.value for l in at.latex)
    assert seen_formula
    neuron_text = " ".join(m.value for m in at.markdown)
    assert "→ Sigmoid →" in neuron_text


def test_a_bad_upload_gets_its_sentence_and_keeps_what_was_loaded():
    at = _upload(_open_train(), "sequential_fc")
    before = dict(_mine(at))
    digit = at.session_state["digit"]
    whole = torch.nn.Sequential(torch.nn.Linear(784, 10))
    import io

    buffer = io.BytesIO()
    torch.save(whole, buffer)
    _upload(at, "whole", buffer.getvalue())
    assert any("save model.state_dict() instead" in w.value.replace("Save", "save") for w in at.warning)
    assert _mine(at).keys() == before.keys() and at.session_state["digit"] is digit
    _upload(at, "junk", b"not a model at all")
    assert any("neither a PyTorch state dict" in w.value for w in at.warning)
    assert not at.exception and _mine(at).keys() == before.keys()
