"""Importing a learner's own model: the layer specification, inference from a state dict, the
input normalisation, and one sentence for each bad input. The models are built here the way a
learner writes them and trained a few steps on real MNIST (tests/learner_models.py)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from digitrec import checkpoints, importer, layers as L
from digitrec.errors import InvalidConfig, ModelImportError
from tests import learner_models

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the specification


def test_text_form_round_trips_and_builds_named_layers_in_forward_order():
    text = "conv5x5(16,s=2,p=2) bn2d leakyrelu(0.1) avgpool2 conv3x3(8,bias=0) gelu maxpool(2,s=1,p=1) flatten dropout(0.3) linear(32) tanh linear(10)"
    spec = L.parse(text)
    assert L.parse(spec.text()) == spec
    assert L.ModelSpec.from_dict(spec.to_dict()) == spec
    # 28 -> conv s2 p2 -> 14 -> pool -> 7 -> conv3 p0 -> 5 -> pool k2 s1 p1 -> 6; 8 * 6 * 6 = 288
    assert L.shapes(spec)[:9] == [(16, 14, 14), (16, 14, 14), (16, 14, 14), (16, 7, 7), (8, 5, 5), (8, 5, 5),
                                  (8, 6, 6), (288,), (288,)]
    net = L.SpecNet(spec)
    # Layers that read maps are named by block (a block ends at a pooling layer), as TinyVGG's are.
    assert [n for n, _ in net.named_children()] == [
        "conv_1_1", "bn_1_1", "leaky_relu_1_1", "avg_pool_1", "conv_2_1", "gelu_2_1", "max_pool_2", "flatten",
        "dropout_1", "fc_1", "tanh_1", "output"]
    assert net.conv_2_1.bias is None and net.leaky_relu_1_1.negative_slope == 0.1
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert L.count_params(spec) == sum(p.numel() for p in net.parameters())


def test_normalisation_is_applied_inside_the_model():
    spec = L.parse("linear(10)", mean=0.1307, std=0.3081)
    net = L.SpecNet(spec).eval()
    x = torch.rand(3, 1, 28, 28)
    expected = net.output(((x - 0.1307) / 0.3081).flatten(1))
    assert torch.allclose(net(x), expected)


@pytest.mark.parametrize("text, words", [
    ("conv3x3(4) linear(10)", ["Layer 2 (linear(10))", "(4, 26, 26)", "put `flatten` before it"]),
    ("linear(20) conv3x3(4) flatten linear(10)", ["Layer 3 (conv3x3(4))", "(20,)"]),
    ("conv5x5(4,s=2) conv5x5(4,s=2) conv5x5(4,s=2) flatten linear(10)", ["Layer 3 (conv5x5(4,s=2))", "(4, 4, 4)", "at least 5×5"]),
    ("flatten linear(12)", ["(12,)", "10 scores"]),
    ("flatten softmax linear(10)", ["Layer 2 (softmax)", "last layer"]),
    ("conv3x3(10 relu", ["Unbalanced brackets"]),
    ("conv3x3(10) swish flatten linear(10)", ["`swish` is not a layer"]),
    ("linear(10,bogus=3)", ["does not take", "bogus"]),
    ("linear(999999)", ["1 to 4096"]),
])
def test_a_spec_that_does_not_line_up_names_the_layer_and_the_shapes(text, words):
    with pytest.raises(InvalidConfig) as e:
        L.parse(text)
    for w in words:
        assert w in str(e.value)


def test_spec_checkpoints_keep_the_spec_and_the_normalisation(tmp_path):
    spec = L.parse("conv3x3(4,p=1) bn2d sigmoid avgpool2 flatten linear(10)", mean=0.5, std=0.5, name="mine")
    model = L.SpecNet(spec).eval()
    path = checkpoints.save(model, tmp_path / "m.safetensors", test_accuracy=None, epochs=None, seed=None)
    ck = checkpoints.load(path)
    assert ck.config == spec and ck.info.architecture == "spec" and ck.info.name == "mine"
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(ck.model(x), model(x))


def test_a_spec_checkpoint_saved_with_the_old_flat_layer_names_still_loads(tmp_path):
    """Imported models saved before conv layers were named by block (conv_2, max_pool_1 ...) keep loading."""
    spec = L.parse("conv3x3(4,p=1) relu maxpool2 conv3x3(4) relu maxpool2 flatten linear(10)", name="old")
    model = L.SpecNet(spec).eval()
    old_names = dict(zip(L.layer_names(spec), L.legacy_layer_names(spec)))
    assert old_names["conv_2_1"] == "conv_2" and old_names["max_pool_2"] == "max_pool_2"
    tensors, metadata = checkpoints._tensors_and_metadata(model, None, None, None, None)
    old = {f"{old_names[k.split('.')[0]]}.{k.split('.', 1)[1]}": t for k, t in tensors.items()}
    assert "conv_2.weight" in old and "conv_2_1.weight" not in old
    ck = checkpoints.load_bytes(safetensors.torch.save(old, metadata=metadata))
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(ck.model(x), model(x))


# ---------------------------------------------------------------- the learner's models, imported


@pytest.mark.parametrize("key", learner_models.KEYS)
def test_a_learners_model_imports_with_the_same_outputs(key, mnist, tmp_path):
    model, saved = learner_models.trained(key)
    expected_text, norm = learner_models.EXPECTED[key]
    # TinyVGG with ReLU scales almost freely with its input, so its normalisation cannot be told apart on
    # digits: the learner says it (the "asks" path). The others are detected.
    given = importer.INPUT_CHOICES[norm] if key == "tinyvgg" else None
    result = importer.import_bytes(saved, f"{key}.pth", digits=mnist.test.subset(1000), normalisation=given)
    assert result.spec.text() == expected_text
    assert result.normalisation == importer.INPUT_CHOICES[norm]

    ink = mnist.test.images[:100].float().div(255).unsqueeze(1)  # (100, 1, 28, 28) what every page feeds
    with torch.inference_mode():
        theirs = model(learner_models.notebook_input(ink, norm))
        ours = result.model(ink)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5), float((ours - theirs).abs().max())
    assert result.test_accuracy > 0.7 and not result.warnings

    # It keeps through a digitrec checkpoint, the file the CLI writes and the app reads.
    ck = checkpoints.load(importer.save(result, tmp_path / "mine.safetensors"))
    assert torch.equal(ck.model(ink), ours) and ck.info.test_accuracy == result.test_accuracy


def test_a_safetensors_state_dict_and_a_training_checkpoint_dict_import_too(mnist):
    model, _ = learner_models.trained("sequential_fc")
    as_safetensors = safetensors.torch.save(model.state_dict())
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": {}}, buffer)
    for data in (as_safetensors, buffer.getvalue()):
        result = importer.import_bytes(data, "m", digits=mnist.test.subset(300))
        assert result.spec.text() == learner_models.EXPECTED["sequential_fc"][0]


def test_arch_given_by_hand_is_used_and_checked(mnist):
    _, saved = learner_models.trained("cnn5_stride2_avg")
    text = learner_models.EXPECTED["cnn5_stride2_avg"][0]
    result = importer.import_bytes(saved, "m.pth", arch=text, digits=mnist.test.subset(300))
    assert result.spec.text() == text
    with pytest.raises(ModelImportError) as e:  # 3x3 kernels where the file has 5x5
        importer.import_bytes(saved, "m.pth", arch=text.replace("conv5x5(8", "conv3x3(8"), digits=mnist.test.subset(300))
    assert "Layer 1 (conv3x3(8,s=2,p=2))" in str(e.value) and "(8, 1, 3, 3)" in str(e.value) and "(8, 1, 5, 5)" in str(e.value)


# ---------------------------------------------------------------- bad input: one sentence each


UNPICKLED = []


class Trap(nn.Module):
    """A module whose unpickling leaves a trace: a full pickled model must be refused before that."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def __setstate__(self, state):
        UNPICKLED.append(True)
        super().__setstate__(state)


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_pickled_whole_model_is_refused_before_unpickling():
    data = _saved(Trap())
    with pytest.raises(ModelImportError) as e:
        importer.read_state_dict(data, "model.pth")
    assert "save model.state_dict() instead" in str(e.value).replace("Save", "save")
    assert not UNPICKLED  # nothing of the file was run


@pytest.mark.parametrize("make, words", [
    (lambda: b"", ["empty"]),
    (lambda: b"\x89PNG\r\n\x1a\nnot a model", ["neither a PyTorch state dict"]),
    (lambda: _saved({"w": torch.zeros(3, 3, 3)}), ["'w' is not a weight"]),
    (lambda: _saved([1, 2, 3]), ["not a state dict"]),
    (lambda: _saved({"0.weight": torch.zeros(7, 5, 2)}), ["shape (7, 5, 2)"]),
    (lambda: _saved({"0.weight": torch.zeros(16, 784), "1.weight": torch.zeros(10, 17)}), ["no stack of layers", "--arch"]),
    (lambda: _saved({"0.weight": torch.full((10, 784), float("nan"))}), ["NaN", "0.weight"]),
    (lambda: _saved({"0.weight": torch.zeros(5, 784)}), ["does not give 10 scores"]),
    (lambda: b"PK\x03\x04garbage", ["damaged"]),
])
def test_each_bad_file_gets_its_sentence(make, words, mnist):
    with pytest.raises(ModelImportError) as e:
        importer.import_bytes(make(), "f.pth", digits=mnist.test.subset(100))
    for w in words:
        assert w in str(e.value)
    assert "\n" not in str(e.value)


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    _, saved = learner_models.trained("sequential_fc")
    path = tmp_path / "big.pth"
    path.write_bytes(saved)
    monkeypatch.setattr(importer, "MAX_IMPORT_BYTES", len(saved) - 1)
    with pytest.raises(ModelImportError, match="over the 0 MB limit|over the .* limit"):
        importer.import_file(path)


def test_a_model_at_chance_is_imported_with_a_warning(mnist):
    torch.manual_seed(1)
    untrained = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    result = importer.import_bytes(_saved(untrained.state_dict()), "new.pth", digits=mnist.test.subset(500))
    assert result.test_accuracy < 0.2
    assert result.warnings and "about chance" in result.warnings[0]


# ---------------------------------------------------------------- the command line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", "import", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


def test_cli_imports_a_pth_and_refuses_bad_input_with_one_line(tmp_path):
    _, saved = learner_models.trained("sigmoid")
    (tmp_path / "sig.pth").write_bytes(saved)
    (tmp_path / "whole.pth").write_bytes(_saved(nn.Sequential(nn.Linear(784, 10))))
    ok = _cli("sig.pth", "--out", "mine.safetensors", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "Layers: flatten linear(30) sigmoid linear(10)" in ok.stdout and "Test accuracy:" in ok.stdout
    assert checkpoints.load(tmp_path / "mine.safetensors").config.text() == "flatten linear(30) sigmoid linear(10)"
    for args, words in [(("whole.pth",), "save model.state_dict() instead"), (("nothere.pth",), "not a file"),
                        (("sig.pth", "--arch", "flatten linear(31) sigmoid linear(10)"), "Layer 2 (linear(31))")]:
        bad = _cli(*args, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stdout == ""
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0].replace("Save", "save")


# ---------------------------------------------------------------- hostile bytes


_HEADS = st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"\x80\x05\x95"])


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(head=_HEADS, body=st.binary(max_size=400))
def test_any_bytes_give_a_state_dict_or_the_importers_own_error(head, body):
    start = time.monotonic()
    try:
        state = importer.read_state_dict(head + body, "fuzz.pth")
    except ModelImportError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert time.monotonic() - start < 5
