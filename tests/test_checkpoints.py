"""Checkpoints: round trips, and every kind of bad file refused with a clear CheckpointError."""

from __future__ import annotations

import errno
import json
import os
import pickle

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

import digitrec
from digitrec import checkpoints, models
from digitrec.errors import CheckpointError

CONFIGS = [models.FCConfig(), models.FCConfig(hidden=(128, 64)), models.TinyVGGConfig()]


def _x() -> torch.Tensor:
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # (4, 1, 28, 28)


def _saved(tmp_path, config=models.FCConfig(), name="model.safetensors"):
    model = models.build(config, seed=0)
    path = checkpoints.save(model, tmp_path / name, test_accuracy=0.9731, epochs=3, seed=0)
    return model, path


def _rewrite(path, edit_tensors=None, edit_metadata=None) -> None:
    """Re-save a checkpoint's tensors and metadata after changing them (a tampered file)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_metadata:
        edit_metadata(metadata)
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=["fc-16-16", "fc-128-64", "tinyvgg"])
def test_round_trip_gives_the_same_model(tmp_path, config):
    model = models.build(config, seed=0).eval()
    path = checkpoints.save(model, tmp_path / "m.safetensors", test_accuracy=0.9731, epochs=3, seed=7,
                            extra={"note": "hello"})

    ckpt = checkpoints.load(path)

    assert ckpt.config == config
    assert type(ckpt.model) is type(model)
    assert not ckpt.model.training
    with torch.no_grad():
        assert torch.equal(ckpt.model(_x()), model(_x()))
    info = ckpt.info
    assert info.architecture == config.architecture
    assert info.name == models.display_name(config)
    assert (info.test_accuracy, info.epochs, info.seed) == (0.9731, 3, 7)
    assert info.params == models.count_params(model)
    assert info.digitrec_version == digitrec.__version__
    assert info.date.endswith("+00:00")  # UTC
    assert info.extra == {"note": "hello"}
    assert info.source == str(path)


def test_metadata_is_plain_strings_with_the_config_as_json(tmp_path):
    _, path = _saved(tmp_path, models.FCConfig(hidden=(128, 64)))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "digitrec"
    assert meta["format_version"] == "1"
    assert meta["architecture"] == "fcnet"
    assert json.loads(meta["config"]) == {"architecture": "fcnet", "hidden": [128, 64]}
    assert (meta["test_accuracy"], meta["epochs"], meta["seed"]) == ("0.9731", "3", "0")


def test_unknown_numbers_are_saved_empty_and_read_back_as_none(tmp_path):
    model = models.build(models.FCConfig(), seed=0)
    path = checkpoints.save(model, tmp_path / "m.safetensors", test_accuracy=None, epochs=None, seed=None)
    info = checkpoints.load(path).info
    assert (info.test_accuracy, info.epochs, info.seed) == (None, None, None)


def test_bytes_round_trip_for_downloads_and_uploads(tinyvgg):
    data = checkpoints.to_bytes(tinyvgg, test_accuracy=0.5, epochs=1, seed=0)
    ckpt = checkpoints.load_bytes(data, name="my.safetensors")
    with torch.no_grad():
        assert torch.equal(ckpt.model(_x()), tinyvgg.eval()(_x()))
    assert ckpt.info.source == "my.safetensors"


def test_a_model_left_in_channels_last_saves_and_loads(tmp_path, tinyvgg):
    tinyvgg.to(memory_format=torch.channels_last)
    assert not tinyvgg.conv_1_2.weight.is_contiguous()  # the case that needs .contiguous()
    path = checkpoints.save(tinyvgg, tmp_path / "cl.safetensors", test_accuracy=None, epochs=1, seed=0)
    loaded = checkpoints.load(path).model.state_dict()
    for key, value in tinyvgg.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_loading_leaves_the_global_random_state_alone(tmp_path):
    _, path = _saved(tmp_path)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checkpoints.load(path)
    assert torch.equal(torch.rand(3), expected)


def test_saving_refuses_non_finite_weights(tmp_path, fcnet):
    with torch.no_grad():
        fcnet.fc_1.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        checkpoints.save(fcnet, tmp_path / "m.safetensors", test_accuracy=None, epochs=1, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_saving_refuses_an_accuracy_given_in_percent(tmp_path, fcnet):
    with pytest.raises(ValueError, match="fraction"):
        checkpoints.save(fcnet, tmp_path / "m.safetensors", test_accuracy=97.3, epochs=1, seed=0)


# --- tampered files ------------------------------------------------------------------------


def test_renamed_tensor(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_tensors=lambda t: t.__setitem__("fc_one.weight", t.pop("fc_1.weight")))
    with pytest.raises(CheckpointError, match=r"missing fc_1\.weight; unexpected fc_one\.weight") as e:
        checkpoints.load(path)
    assert str(path) in str(e.value)


def test_missing_tensor(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_tensors=lambda t: t.pop("output.bias"))
    with pytest.raises(CheckpointError, match=r"missing output\.bias"):
        checkpoints.load(path)


def test_extra_tensor(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_tensors=lambda t: t.__setitem__("backdoor.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected backdoor\.weight"):
        checkpoints.load(path)


def test_tensor_of_the_wrong_shape(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_tensors=lambda t: t.__setitem__("fc_2.weight", torch.zeros(16, 15)))
    with pytest.raises(CheckpointError, match=r"fc_2\.weight has shape \(16, 15\), expected \(16, 16\)"):
        checkpoints.load(path)


def test_tensor_of_the_wrong_dtype(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_tensors=lambda t: t.__setitem__("output.bias", t["output.bias"].double()))
    with pytest.raises(CheckpointError, match=r"output\.bias has dtype F64, expected F32"):
        checkpoints.load(path)


def test_nan_weight(tmp_path):
    _, path = _saved(tmp_path)

    def poison(t):
        t["fc_2.bias"][3] = float("nan")

    _rewrite(path, edit_tensors=poison)
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights \(in fc_2\.bias\)"):
        checkpoints.load(path)


def test_fcnet_file_whose_metadata_claims_tinyvgg(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_metadata=lambda m: m.update(architecture="tinyvgg"))
    with pytest.raises(CheckpointError, match="says architecture 'tinyvgg' but its configuration describes 'fcnet'"):
        checkpoints.load(path)


def test_fcnet_tensors_under_a_consistent_tinyvgg_config(tmp_path):
    _, path = _saved(tmp_path)
    config = json.dumps(models.config_to_dict(models.TinyVGGConfig()))
    _rewrite(path, edit_metadata=lambda m: m.update(architecture="tinyvgg", config=config))
    with pytest.raises(CheckpointError, match=r"does not match the TinyVGG \(10 channels\).*missing conv_1_1\.weight"):
        checkpoints.load(path)


def test_unknown_architecture(tmp_path):
    _, path = _saved(tmp_path)
    config = json.dumps({"architecture": "resnet", "depth": 50})
    _rewrite(path, edit_metadata=lambda m: m.update(architecture="resnet", config=config))
    with pytest.raises(CheckpointError, match="cannot build: Unknown architecture 'resnet'"):
        checkpoints.load(path)


def test_config_out_of_range(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_metadata=lambda m: m.update(config=json.dumps({"architecture": "fcnet", "hidden": [0]})))
    with pytest.raises(CheckpointError, match="Hidden widths must be"):
        checkpoints.load(path)


def test_bad_config_json(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_metadata=lambda m: m.update(config='{"architecture": "fcnet", "hidden": [16,'))
    with pytest.raises(CheckpointError, match="configuration is not valid JSON"):
        checkpoints.load(path)


def test_no_digitrec_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(models.build(models.FCConfig(), seed=0).state_dict(), str(path))
    with pytest.raises(CheckpointError, match="is not a digitrec checkpoint: it has no digitrec metadata") as e:
        checkpoints.load(path)
    assert "python -m digitrec train" in str(e.value)  # says what to do


def test_foreign_format_metadata(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_metadata=lambda m: m.update(format="pt"))
    with pytest.raises(CheckpointError, match="its format is 'pt', not 'digitrec'"):
        checkpoints.load(path)


def test_newer_format_version(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_metadata=lambda m: m.update(format_version="2"))
    with pytest.raises(CheckpointError, match="format version '2'.*reads version 1"):
        checkpoints.load(path)


def test_accuracy_that_is_not_a_number(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_metadata=lambda m: m.update(test_accuracy="high"))
    with pytest.raises(CheckpointError, match="test_accuracy 'high' is not a number"):
        checkpoints.load(path)


# --- files that are not checkpoints at all -----------------------------------------------


def test_truncated_file(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        checkpoints.load(path)


def test_file_cut_inside_its_header(tmp_path):
    _, path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="is truncated: it ends inside its header"):
        checkpoints.load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.safetensors is empty \(0 bytes\)"):
        checkpoints.load(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="is not a safetensors file"):
        checkpoints.load(path)


def test_png_image(tmp_path):
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(path)
    with pytest.raises(CheckpointError, match=r"is not a safetensors file \(it is a PNG image\)"):
        checkpoints.load(path)


class _Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"fc_1.weight": _Payload(marker)}))

    with pytest.raises(CheckpointError, match="is a Python pickle.*never opens it"):
        checkpoints.load(path)
    with pytest.raises(CheckpointError):
        checkpoints.load_bytes(path.read_bytes())
    assert not marker.exists()

    # Control: the payload is live, so the absence of the marker above means something.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control))).close()
    assert control.exists()


def test_a_torch_save_file_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.pt"
    torch.save({"fc_1.weight": _Payload(marker)}, path)

    with pytest.raises(CheckpointError, match="made by torch.save"):
        checkpoints.load(path)
    assert not marker.exists()

    # Control: torch.load without weights_only would run the payload.
    control = tmp_path / "control"
    torch.save({"x": _Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)["x"].close()
    assert control.exists()


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(CheckpointError, match=r"nowhere\.safetensors does not exist"):
        checkpoints.load(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoints.load(tmp_path)


# --- atomic writes -------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)
    before = path.read_bytes()
    written = []

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # half a file, then the disk is full
            f.write(before[: len(before) // 2])
        written.append(filename)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    other = models.build(models.FCConfig(), seed=1)
    with pytest.raises(CheckpointError, match="Could not save the checkpoint.*No space left on device"):
        checkpoints.save(other, path, test_accuracy=None, epochs=1, seed=1)

    assert written and os.path.dirname(written[0]) == str(tmp_path)  # it did write, beside the target
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_save_creates_missing_folders_and_replaces_an_old_file(tmp_path):
    path = tmp_path / "runs" / "deep" / "m.safetensors"
    checkpoints.save(models.build(models.FCConfig(), seed=0), path, test_accuracy=0.1, epochs=1, seed=0)
    checkpoints.save(models.build(models.FCConfig(), seed=1), path, test_accuracy=0.2, epochs=2, seed=1)
    assert checkpoints.load(path).info.seed == 1
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]


# --- pretrained ----------------------------------------------------------------------------


def test_load_pretrained_reads_the_registered_file(tmp_path, monkeypatch):
    _, path = _saved(tmp_path, models.TinyVGGConfig(), name="cnn.safetensors")
    monkeypatch.setitem(checkpoints.PRETRAINED, "cnn", path)
    assert checkpoints.load_pretrained("cnn").config == models.TinyVGGConfig()


def test_load_pretrained_explains_a_missing_file_and_an_unknown_key(tmp_path, monkeypatch):
    monkeypatch.setitem(checkpoints.PRETRAINED, "fc", tmp_path / "fc.safetensors")
    with pytest.raises(CheckpointError, match="pretrained fc weights .* are missing.*make weights"):
        checkpoints.load_pretrained("fc")
    with pytest.raises(CheckpointError, match="no pretrained model called 'rnn'"):
        checkpoints.load_pretrained("rnn")


def test_pretrained_paths_are_in_the_repository_weights_folder():
    assert checkpoints.PRETRAINED["fc"].parent.name == "weights"
    assert checkpoints.PRETRAINED["cnn"].name == "cnn.safetensors"


def test_a_deeply_nested_config_is_refused_not_crashed_on(tmp_path):
    _, path = _saved(tmp_path)
    nested = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this
    _rewrite(path, edit_metadata=lambda m: m.update(config=nested))
    with pytest.raises(CheckpointError):
        checkpoints.load(path)


def test_a_config_with_thousands_of_layers_is_refused_before_building_them(tmp_path):
    _, path = _saved(tmp_path)
    many = json.dumps({"architecture": "fcnet", "hidden": [16] * 5000})
    _rewrite(path, edit_metadata=lambda m: m.update(config=many))
    with pytest.raises(CheckpointError, match="one to 8 whole numbers"):
        checkpoints.load(path)


# --- hostile files (issue 12): each refused with a sentence, quickly -----------------------


def _raw_file(header_text: str, body: bytes = b"") -> bytes:
    """A safetensors-shaped file with this exact header text (crafted, not written by safetensors)."""
    header = header_text.encode()
    return len(header).to_bytes(8, "little") + header + body


def test_huge_but_finite_weights_are_refused_because_the_outputs_overflow(tmp_path):
    # Every weight 3e38 is finite, but the sums overflow: the model would answer NaN everywhere.
    _, path = _saved(tmp_path)
    _rewrite(path, edit_tensors=lambda t: t.update({k: torch.full_like(v, 3e38) for k, v in t.items()}))
    with pytest.raises(CheckpointError, match="overflow"):
        checkpoints.load(path)


def test_a_number_of_thousands_of_digits_in_a_shape_is_refused(tmp_path):
    # Python refuses to turn a 5000-digit number into an int: json.loads raises a plain ValueError.
    data = _raw_file('{"__metadata__": {"format": "digitrec"}, "w": {"dtype": "F32", "shape": [' + "9" * 5000
                     + '], "data_offsets": [0, 4]}}', b"\0" * 4)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        checkpoints.load_bytes(data, name="long.safetensors")


def test_a_number_of_thousands_of_digits_in_the_config_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, edit_metadata=lambda m: m.update(config='{"architecture": "fcnet", "hidden": [' + "9" * 5000 + "]}"))
    with pytest.raises(CheckpointError, match="number in it is too long"):
        checkpoints.load(path)


def test_a_header_far_larger_than_ours_is_refused_from_its_length():
    # 2 MB of header (ours are ~2 KB): refused from the 8-byte length, before any JSON is parsed.
    filler = " " * 2_000_000
    data = _raw_file('{"__metadata__": {"format": "digitrec"}' + filler + "}")
    with pytest.raises(CheckpointError, match="header of 2,000,0.. bytes"):
        checkpoints.load_bytes(data, name="big.safetensors")
    assert checkpoints.MAX_HEADER_BYTES <= 1_000_000


def test_a_header_of_many_entries_is_refused_by_their_count():
    entries = ", ".join(f'"t{i}": {{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}' for i in range(5000))
    data = _raw_file('{"__metadata__": {"format": "digitrec"}, ' + entries + "}", b"\0" * 4)
    assert len(data) < checkpoints.MAX_HEADER_BYTES  # small enough to pass the length check
    with pytest.raises(CheckpointError, match="names 5,000 tensors"):
        checkpoints.load_bytes(data, name="many.safetensors")
