"""Checkpoints: a model's weights plus the configuration that rebuilds it.

A checkpoint is a safetensors file (https://huggingface.co/docs/safetensors):
an 8-byte header length, a JSON header naming every tensor's dtype, shape and
byte range, then the raw numbers. Reading one runs no code, unlike a pickle
made by ``torch.save``, which can run anything while it is loaded. So this
module never calls ``torch.load`` or ``pickle`` on a file it was given: a
checkpoint from a stranger is safe to open.

The header's string-to-string metadata holds what rebuilds the model:

    format="digitrec", format_version="1", architecture="fcnet" | "tinyvgg",
    config=<JSON of models.config_to_dict>, test_accuracy (0..1), epochs, seed,
    date (UTC, ISO 8601), digitrec_version, plus any ``extra`` strings.

Loading checks everything before a tensor reaches the model: the header, the
metadata, the configuration, then every tensor's name, shape and dtype against
the model the configuration describes (built on PyTorch's "meta" device, which
allocates nothing), then that every weight is finite. Each failure raises
``CheckpointError`` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

import digitrec
from digitrec import files, models
from digitrec.config import MAX_HIDDEN_LAYERS, WIDTH_RANGE
from digitrec.data import REPO_ROOT
from digitrec.errors import CheckpointError, DigitrecError

FORMAT = "digitrec"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"

# The checkpoints the app and `predict` use by default. They are committed to the
# repository and reproduced by `make weights`.
PRETRAINED: dict[str, Path] = {
    "fc": REPO_ROOT / "weights" / "fc.safetensors",
    "cnn": REPO_ROOT / "weights" / "cnn.safetensors",
    # One Linear layer (softmax regression): the baseline of the course's accuracy ladder.
    "linear": REPO_ROOT / "weights" / "linear.safetensors",
}

# Metadata keys this module writes; ``extra`` may not overwrite them.
RESERVED_KEYS = frozenset(
    {"format", "format_version", "architecture", "config", "test_accuracy", "epochs", "seed",
     "date", "digitrec_version"}
)

# safetensors' names for the dtypes a state_dict can hold (the header's "dtype").
_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}

# A header larger than this is not one we wrote (ours are about 2 KB); safetensors
# itself allows 100 MB, which a crafted file uses to cost seconds and hundreds of MB
# of parsed JSON before it is refused.
MAX_HEADER_BYTES = 1_000_000
# Our models have at most 2 tensors per layer and at most 9 layers (18 entries);
# a header naming more tensors than this is refused before any is looked at.
MAX_HEADER_ENTRIES = 64



# The largest model a configuration allows (TinyVGG's most channels make a smaller one;
# tests/test_serving.py checks both).
LARGEST_CONFIG = models.FCConfig(hidden=(WIDTH_RANGE[1],) * MAX_HIDDEN_LAYERS)


@functools.cache
def max_checkpoint_bytes() -> int:
    """The size of the largest checkpoint a digitrec model can have (LARGEST_CONFIG's
    weights, about 460 MiB of float32) plus the longest header we read."""
    with torch.device("meta"):  # shapes only: nothing is allocated
        largest = models.build(LARGEST_CONFIG)
    return 4 * models.count_params(largest) + 8 + MAX_HEADER_BYTES


_HOW_TO_SAVE = "Save checkpoints with `python -m digitrec train` or the app's Download button."


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself (all from its metadata, except ``params``)."""

    architecture: str  # "fcnet" or "tinyvgg"
    name: str  # display name, e.g. "FCNet 784-16-16-10"
    test_accuracy: float | None  # 0..1 on the 10,000 MNIST test digits, if recorded
    epochs: int | None
    seed: int | None
    date: str | None  # UTC, ISO 8601
    params: int  # trainable parameters of the rebuilt model
    digitrec_version: str | None = None
    source: str = ""  # the file (or upload) it was read from
    extra: dict[str, str] = field(default_factory=dict)  # any other metadata


@dataclass(frozen=True, eq=False)  # eq=False: comparing modules field by field means nothing
class Checkpoint:
    model: nn.Module  # in eval mode, on the CPU
    config: models.ModelConfig
    info: CheckpointInfo


# --- saving ------------------------------------------------------------------------------


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    test_accuracy: float | None,
    epochs: int | None,
    seed: int | None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` to ``path`` as a digitrec checkpoint; return the path.

    The write is atomic: the bytes go to a temporary file in the same folder,
    which then replaces ``path`` in one step, so a crash or a full disk never
    leaves a half-written checkpoint (nor destroys the old one). Missing
    folders are created. ``test_accuracy`` is a fraction in 0..1.
    """
    path = Path(path)
    tensors, metadata = _tensors_and_metadata(model, test_accuracy, epochs, seed, extra)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        # Looked up at call time (not imported by name) so tests can make it fail midway.
        safetensors.torch.save_file(tensors, tmp_name, metadata=metadata)
        with open(tmp_name, "rb+") as f:  # reach the disk before the rename makes it visible
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it owner-only; a checkpoint is meant to be shared
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        raise CheckpointError(
            f"Could not save the checkpoint to {path}: {e.strerror or e}. "
            "Check that the folder is writable and the disk has space, or choose another path."
        ) from e
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
    return path


def to_bytes(
    model: nn.Module,
    *,
    test_accuracy: float | None,
    epochs: int | None,
    seed: int | None,
    extra: dict[str, str] | None = None,
) -> bytes:
    """The checkpoint ``save`` would write, as bytes (for a download button)."""
    tensors, metadata = _tensors_and_metadata(model, test_accuracy, epochs, seed, extra)
    return safetensors.torch.save(tensors, metadata=metadata)


def _tensors_and_metadata(
    model: nn.Module,
    test_accuracy: float | None,
    epochs: int | None,
    seed: int | None,
    extra: dict[str, str] | None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    config = getattr(model, "config", None)
    if not isinstance(config, (models.FCConfig, models.TinyVGGConfig, models.ModelSpec)):
        raise TypeError(f"Only digitrec models (built by models.build) can be saved, not {type(model).__name__}.")
    if test_accuracy is not None and not (0.0 <= test_accuracy <= 1.0):
        raise ValueError(f"test_accuracy is a fraction from 0 to 1, got {test_accuracy}.")
    extra = dict(extra or {})
    clash = RESERVED_KEYS & set(extra)
    if clash:
        raise ValueError(f"extra metadata may not overwrite {sorted(clash)}.")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise TypeError("extra metadata must map strings to strings.")

    # safetensors stores plain row-major bytes: a channels_last tensor (as fit()
    # leaves a CNN while it trains) must be laid out contiguously first.
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"Not saving: the weights {', '.join(bad)} hold NaN or infinite values, so the model "
            "cannot predict anything. Train again with a lower learning rate."
        )
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": config.architecture,
        "config": json.dumps(models.config_to_dict(config), sort_keys=True),
        "test_accuracy": "" if test_accuracy is None else repr(float(test_accuracy)),
        "epochs": "" if epochs is None else str(int(epochs)),
        "seed": "" if seed is None else str(int(seed)),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "digitrec_version": digitrec.__version__,
        **extra,
    }
    return tensors, metadata


# --- loading -----------------------------------------------------------------------------


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and check the checkpoint at ``path``; raises CheckpointError if it is not one we can use."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist. Check the path, or train a model with "
            f"`python -m digitrec train --model fc --out {path}`."
        )
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file. Give the path of a .safetensors file.")
    # Regular files only (not /dev/zero, not a named pipe), no larger than the largest model's.
    data = files.read_regular_file(path, max_checkpoint_bytes(), "a .safetensors checkpoint", CheckpointError)
    return load_bytes(data, name=str(path))


def load_bytes(data: bytes, name: str = "upload") -> Checkpoint:
    """Read and check a checkpoint held in memory (an upload); ``name`` is used in messages."""
    data = bytes(data)
    metadata, entries = _read_header(data, name)
    config = _read_config(metadata, name)
    info_fields = _read_info(metadata, name)

    # The model the metadata describes, built without allocating any weights, gives
    # the exact names, shapes and dtypes to check the file's tensors against.
    with torch.device("meta"):
        skeleton = models.build(config)
    expected = skeleton.state_dict()
    renamed = _legacy_names(entries, expected, config)
    entries = {renamed.get(k, k): e for k, e in entries.items()}
    _check_tensor_specs(entries, expected, config, name)

    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # SafetensorError, or anything else the parser refuses
        raise CheckpointError(
            f"{name} is damaged: its tensors could not be read ({e}). Save the model again. {_HOW_TO_SAVE}"
        ) from e
    tensors = {renamed.get(k, k): t for k, t in tensors.items()}
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(
                f"{name} holds NaN or infinite weights (in {key}), so its model cannot predict anything. "
                "It was probably saved from a run that diverged: train again with a lower learning rate."
            )

    # Every tensor has been checked: materialise the skeleton and copy the weights in.
    model = skeleton.to_empty(device="cpu")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    _check_forward_is_finite(model, name)
    info = CheckpointInfo(
        architecture=config.architecture,
        name=models.display_name(config),
        params=models.count_params(model),
        source=name,
        **info_fields,
    )
    return Checkpoint(model=model, config=config, info=info)


def _check_forward_is_finite(model: nn.Module, name: str) -> None:
    """Refuse weights that are finite one by one but overflow together (e.g. all 3e38):
    such a model answers NaN for every digit, which every page would show as "nan %"."""
    from digitrec.samples import sample_digits

    x = torch.stack(list(sample_digits().values())).unsqueeze(1)  # (10, 1, 28, 28)
    with torch.inference_mode():
        logits = model(x)  # (10, 10)
        finite = bool(torch.isfinite(logits).all()) and bool(torch.isfinite(torch.log_softmax(logits, 1)).all())
    if not finite:
        raise CheckpointError(
            f"{name} holds weights so large that the model's outputs overflow (not finite) on the "
            "ten sample digits, so it cannot predict anything. It was probably saved from a run that "
            "diverged or was edited by hand: train again with a lower learning rate."
        )


def load_pretrained(key: str) -> Checkpoint:
    """One of the committed pretrained models: ``"fc"`` or ``"cnn"``."""
    if key not in PRETRAINED:
        raise CheckpointError(f"There is no pretrained model called {key!r}; choose one of {', '.join(PRETRAINED)}.")
    path = PRETRAINED[key]
    if not path.exists():
        raise CheckpointError(
            f"The pretrained {key} weights ({_show(path)}) are missing. "
            "Recreate them with `make weights`, or train with "
            f"`python -m digitrec train --model {key} --out {_show(path)}`."
        )
    return load(path)


def _show(path: Path) -> str:
    """A path relative to the repository when it is inside it (shorter in messages)."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _read_header(data: bytes, name: str) -> tuple[dict[str, str], dict[str, dict]]:
    """Parse the safetensors header ourselves: (metadata, tensor name -> {dtype, shape, data_offsets}).

    safetensors' own parser would refuse a bad file too, but with a terse
    message; parsing the header here lets us say which problem the file has.
    """
    if len(data) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes), so it is not a checkpoint. {_HOW_TO_SAVE}")
    not_safetensors = (
        f"{name} is not a safetensors file{_looks_like(data)}. digitrec reads only .safetensors "
        f"checkpoints. {_HOW_TO_SAVE}"
    )
    if len(data) < 8:
        raise CheckpointError(not_safetensors)
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len == 0:
        raise CheckpointError(not_safetensors)
    if header_len > MAX_HEADER_BYTES:
        if data[8:9] == b"{":  # a safetensors header, just far larger than any we write
            raise CheckpointError(
                f"{name} has a header of {header_len:,} bytes; digitrec's checkpoints have headers of "
                f"about 2 KB and it reads at most {MAX_HEADER_BYTES:,}. {_HOW_TO_SAVE}"
            )
        raise CheckpointError(not_safetensors)
    if 8 + header_len > len(data):
        # A plausible header length but not that many bytes: the file was cut short
        # (if the length is plausible at all, a random file is very unlikely).
        if data[8:9] == b"{":
            raise CheckpointError(
                f"{name} is truncated: it ends inside its header ({len(data)} bytes). "
                f"Download or copy it again, or save it again. {_HOW_TO_SAVE}"
            )
        raise CheckpointError(not_safetensors)
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers JSONDecodeError and a number of thousands of digits (Python
        # refuses to convert those); RecursionError: absurdly nested JSON.
        raise CheckpointError(not_safetensors) from None
    if not isinstance(header, dict):
        raise CheckpointError(not_safetensors)

    metadata = header.pop("__metadata__", None)
    if metadata is None:
        raise CheckpointError(
            f"{name} is not a digitrec checkpoint: it has no digitrec metadata. {_HOW_TO_SAVE}"
        )
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{name} is damaged: its metadata is not a table of strings. {_HOW_TO_SAVE}")

    if len(header) > MAX_HEADER_ENTRIES:
        raise CheckpointError(
            f"{name} names {len(header):,} tensors; a digitrec model has at most {MAX_HEADER_ENTRIES}. "
            f"{_HOW_TO_SAVE}"
        )
    body = len(data) - 8 - header_len
    entries: dict[str, dict] = {}
    for key, entry in header.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(s, int) and s >= 0 for s in entry["shape"])
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and all(isinstance(o, int) and o >= 0 for o in entry["data_offsets"])
        )
        if not ok:
            raise CheckpointError(f"{name} is damaged: the header entry for {key!r} is malformed. {_HOW_TO_SAVE}")
        entries[key] = entry
    end = max((e["data_offsets"][1] for e in entries.values()), default=0)
    if end > body:
        raise CheckpointError(
            f"{name} is truncated: its header promises {end} bytes of weights but only {body} follow. "
            f"Download or copy it again, or save it again. {_HOW_TO_SAVE}"
        )
    return metadata, entries


def _looks_like(data: bytes) -> str:
    """A hint at what a non-safetensors file is, for the message (empty if unknown)."""
    if data.startswith(b"\x89PNG"):
        return " (it is a PNG image)"
    if data.startswith(b"\xff\xd8\xff"):
        return " (it is a JPEG image)"
    if data.startswith(b"PK\x03\x04"):
        return (
            " (it looks like a PyTorch file made by torch.save; those are pickles, which can run "
            "code when opened, so digitrec never opens them)"
        )
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return " (it is a Python pickle, which can run code when opened, so digitrec never opens it)"
    return ""


def _read_config(metadata: dict[str, str], name: str) -> models.ModelConfig:
    fmt = metadata.get("format")
    if fmt != FORMAT:
        what = "it has no digitrec metadata" if fmt is None else f"its format is {fmt!r}, not {FORMAT!r}"
        raise CheckpointError(f"{name} is not a digitrec checkpoint: {what}. {_HOW_TO_SAVE}")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{name} has checkpoint format version {version!r}; this digitrec ({digitrec.__version__}) "
            f"reads version {FORMAT_VERSION}. Use the digitrec that saved it, or save it again with this one."
        )
    if "config" not in metadata:
        raise CheckpointError(f"{name} has no model configuration in its metadata, so its model cannot be rebuilt. {_HOW_TO_SAVE}")
    try:
        raw = json.loads(metadata["config"])
    except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, or a number too long to convert
        reason = e.msg if isinstance(e, json.JSONDecodeError) else (
            "nested too deeply" if isinstance(e, RecursionError) else "a number in it is too long")
        raise CheckpointError(
            f"{name} is damaged: its model configuration is not valid JSON ({reason}). {_HOW_TO_SAVE}"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{name} is damaged: its model configuration is not a JSON object. {_HOW_TO_SAVE}")
    try:
        config = models.config_from_dict(raw)
    except DigitrecError as e:  # InvalidConfig: unknown architecture or bad settings
        raise CheckpointError(f"{name} describes a model this digitrec cannot build: {e} {_HOW_TO_SAVE}") from None
    arch = metadata.get("architecture")
    if arch != config.architecture:
        raise CheckpointError(
            f"{name} is inconsistent: its metadata says architecture {arch!r} but its configuration "
            f"describes {config.architecture!r}. {_HOW_TO_SAVE}"
        )
    return config


def _read_info(metadata: dict[str, str], name: str) -> dict:
    """The informational metadata, parsed; a value we wrote always parses, so a bad one is damage."""

    def parse(key: str, kind: type):
        text = metadata.get(key, "")
        if text == "":
            return None
        try:
            value = kind(text)
        except ValueError:
            raise CheckpointError(f"{name} is damaged: its {key} {text!r} is not a number. {_HOW_TO_SAVE}") from None
        if kind is float and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise CheckpointError(f"{name} is damaged: its {key} {text!r} is not a fraction from 0 to 1. {_HOW_TO_SAVE}")
        return value

    return {
        "test_accuracy": parse("test_accuracy", float),
        "epochs": parse("epochs", int),
        "seed": parse("seed", int),
        "date": metadata.get("date") or None,
        "digitrec_version": metadata.get("digitrec_version") or None,
        "extra": {k: v for k, v in metadata.items() if k not in RESERVED_KEYS},
    }


def _check_tensor_specs(
    entries: dict[str, dict], expected: dict[str, torch.Tensor], config: models.ModelConfig, name: str
) -> None:
    """Every tensor the model needs is in the file with its exact shape and dtype, and nothing else."""
    model_name = models.display_name(config)
    missing = [k for k in expected if k not in entries]
    unexpected = [k for k in entries if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_first_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_first_few(unexpected)}")
        raise CheckpointError(
            f"{name} does not match the {model_name} its metadata describes: {'; '.join(parts)}. "
            f"The file was changed or saved by other code. {_HOW_TO_SAVE}"
        )
    for key, want in expected.items():
        got = entries[key]
        if tuple(got["shape"]) != tuple(want.shape):
            raise CheckpointError(
                f"{name} does not match the {model_name} its metadata describes: tensor {key} has shape "
                f"{tuple(got['shape'])}, expected {tuple(want.shape)}. {_HOW_TO_SAVE}"
            )
        want_dtype = _DTYPE_NAMES.get(want.dtype, str(want.dtype))
        if got["dtype"] != want_dtype:
            raise CheckpointError(
                f"{name} does not match the {model_name} its metadata describes: tensor {key} has dtype "
                f"{got['dtype']}, expected {want_dtype}. {_HOW_TO_SAVE}"
            )


def _legacy_names(entries: dict[str, dict], expected: dict[str, torch.Tensor], config: models.ModelConfig) -> dict[str, str]:
    """Old tensor name -> today's, for a spec model saved before its conv layers were named by block
    (``conv_2.weight`` -> ``conv_1_2.weight``); empty when the file already uses today's names."""
    if not isinstance(config, models.ModelSpec) or set(entries) == set(expected):
        return {}
    from digitrec.layers import layer_names, legacy_layer_names

    new_of = dict(zip(legacy_layer_names(config), layer_names(config)))
    renamed = {}
    for key in entries:
        layer, dot, tensor = key.partition(".")
        if dot and layer in new_of:
            renamed[key] = f"{new_of[layer]}.{tensor}"
    return renamed if set(renamed.values()) == set(expected) else {}


def _first_few(names: list[str], n: int = 6) -> str:
    """A readable list: a crafted file may name thousands of tensors."""
    shown = ", ".join(names[:n])
    return shown if len(names) <= n else f"{shown} and {len(names) - n} more"
