"""A learner's own model: a state dict from a notebook -> a layer specification + weights.

A notebook saves ``torch.save(model.state_dict(), "model.pth")`` (or a
``.safetensors`` file). The file holds named tensors and nothing else, so the
architecture is found from what the names, their order and their shapes say:

- each ``*.weight`` of 2 dimensions is a Linear layer, of 4 a convolution, of 1
  with ``running_mean`` beside it a batch norm; their order is the forward order
  (the order ``__init__`` registered them, which is how learners write models);
- what a state dict cannot say (the activation, pooling, padding, stride) is
  tried: only candidates whose shapes line up survive (the Linear layer after
  the last convolution fixes the flattened width, which for a 28 x 28 digit
  fixes padding and pooling in most models), and among those the one that reads
  a few hundred real test digits best wins. Indices of an ``nn.Sequential``
  (``0.weight``, ``2.weight``) say how many weightless layers sit between;
- the input normalisation (``ToTensor`` only, ``Normalize((0.1307,), (0.3081,))``
  or ``Normalize((0.5,), (0.5,))``) is found the same way and stored in the spec,
  so every page feeds the model what it was trained on.

Safety: a ``.pth`` file is a pickle, which can run code when opened. It is read
only after a size check, only by ``torch.load(..., weights_only=True)`` (PyTorch's
restricted unpickler), and a file that pickles a whole model (its classes named
inside) is refused before anything is unpickled.
"""

from __future__ import annotations

import io
import os
import sys
import math
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from digitrec import layers as L
from digitrec.data import DigitSet
from digitrec.errors import InvalidConfig, ModelImportError

MAX_IMPORT_BYTES = 100 * 2**20  # a model for 28 x 28 digits is far smaller; refuse before reading more
DETECT_DIGITS = 300  # test digits used to choose between candidates (a few hundred separate them clearly)
MAX_STRUCTURES = 8  # shape-consistent layouts tried with every activation and normalisation
CHANCE_ACCURACY = 0.2  # below this (chance is 0.1) the import warns that the model has learned little

NORMALISATIONS = {  # name -> (mean, std) the notebook's transform used
    "ToTensor only (ink in [0, 1])": (0.0, 1.0),
    "Normalize((0.1307,), (0.3081,))": (L.MNIST_MEAN, L.MNIST_STD),
    "Normalize((0.5,), (0.5,))": (0.5, 0.5),
}
# Short names for the command line and the page (--input).
INPUT_CHOICES = dict(zip(("totensor", "mnist", "half"), NORMALISATIONS))
ACTIVATIONS = (L.Layer("ReLU"), L.Layer("LeakyReLU"), L.Layer("Sigmoid"), L.Layer("Tanh"), L.Layer("GELU"))
POOLS = ("MaxPool2d", "AvgPool2d")

_HOW = "In the notebook, save it with torch.save(model.state_dict(), \"model.pth\")."
_PARAM_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_SAFE_PICKLE_MODULES = ("collections", "torch", "torch._utils", "torch.storage", "_codecs", "builtins",
                        "__builtin__", "torch._tensor")


@dataclass(frozen=True, eq=False)
class ImportResult:
    model: nn.Module  # a digitrec SpecNet in eval mode, holding the learner's weights
    spec: L.ModelSpec
    normalisation: str  # a key of NORMALISATIONS, or "given"
    accuracy: float | None  # on the DETECT_DIGITS digits the choice was made on
    test_accuracy: float | None  # on all test digits given to ``import_bytes``
    warnings: tuple[str, ...] = ()
    alternatives: tuple[tuple[str, float], ...] = ()  # (spec text, accuracy) close behind the winner


# ---------------------------------------------------------------- reading the file


def read_state_dict(data: bytes, name: str = "upload") -> dict[str, torch.Tensor]:
    """The named tensors of a ``.pth``/``.pt`` (torch.save of a state dict) or ``.safetensors`` file."""
    if len(data) == 0:
        raise ModelImportError(f"{name} is empty (0 bytes). {_HOW}")
    if len(data) > MAX_IMPORT_BYTES:
        raise ModelImportError(
            f"{name} is {len(data) / 2**20:.0f} MB, over the {MAX_IMPORT_BYTES // 2**20} MB limit for an imported "
            "model; a model for 28×28 digits is much smaller. Check that you saved the right model."
        )
    if data[:4] == b"PK\x03\x04":
        _refuse_whole_model(data, name)
        tensors = _torch_load(data, name)
    elif data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        tensors = _torch_load(data, name)  # the old (non-zip) torch.save format
    elif len(data) >= 8 and data[8:9] == b"{":
        tensors = _safetensors_load(data, name)
    else:
        raise ModelImportError(
            f"{name} is neither a PyTorch state dict (.pth) nor a .safetensors file. {_HOW}"
        )
    state = _unwrap(tensors, name)
    return _forward_order(state) if not data[:4] == b"PK\x03\x04" and data[:1] != b"\x80" else state


def _forward_order(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A .safetensors file keeps its tensors sorted by name, not in the order the model made them.

    Rebuild the forward order: names in natural order ("2" before "10"), then, from the layer that
    reads the digit, each next layer is the first (in that order) whose input fits what came before;
    convolutions before Linear layers, a batch norm right after the layer whose width it has.
    """
    def natural(key: str) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]

    paths: dict[str, list[str]] = {}
    for key in sorted(state, key=natural):
        paths.setdefault(key.rpartition(".")[0], []).append(key)
    pending = list(paths)

    def weight(p):
        return state.get(p + ".weight")

    ordered, maps, width = [], True, 1  # the digit: maps with 1 channel

    def fits(p) -> int:  # 0: no; lower is better
        w = weight(p)
        if w is None:
            return 0
        if p + ".running_mean" in state:
            return 1 if w.shape[0] == width and ordered else 0
        if w.dim() == 4:
            return 2 if maps and w.shape[1] == width else 0
        if w.dim() == 2:
            if not maps:
                return 2 if w.shape[1] == width else 0
            return 3 if (not ordered and w.shape[1] == 784) or ordered else 0
        return 0

    while pending:
        scores = [(fits(p), i) for i, p in enumerate(pending) if fits(p)]
        if not scores:
            return state  # no chain: keep the file's order, and let the inference explain what does not fit
        _, i = min(scores)
        p = pending.pop(i)
        w = weight(p)
        if w.dim() == 2:
            maps, width = False, w.shape[0]
        elif w.dim() == 4:
            width = w.shape[0]
        ordered.append(p)
    return {k: state[k] for p in ordered for k in paths[p]}


def _refuse_whole_model(data: bytes, name: str) -> None:
    """Read the pickle's opcodes (without running them): a class of the model named inside means
    torch.save(model) of a whole model, which only unpickling arbitrary code could rebuild."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1 or archive.getinfo(pickles[0]).file_size > MAX_IMPORT_BYTES:
            raise ModelImportError(f"{name} is a zip file but not one torch.save wrote. {_HOW}")
        payload = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError):
        raise ModelImportError(f"{name} is damaged: it starts like a torch.save file but cannot be read. {_HOW}") from None
    strings: list[str] = []
    memo: dict = {}
    try:
        for op, arg, _ in pickletools.genops(payload):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING"):
                strings.append(str(arg))
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[arg] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                strings.append(memo[arg])
            if op.name == "GLOBAL":
                module, _, qualname = str(arg).partition(" ")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                module, qualname = strings[-2], strings[-1]
            else:
                continue
            if module.startswith("torch.nn") or module not in _SAFE_PICKLE_MODULES:
                raise ModelImportError(
                    f"{name} holds a whole pickled model ({module}.{qualname}), not a state dict; opening it "
                    "would run code from the file, so digitrec does not. Save model.state_dict() instead: "
                    "torch.save(model.state_dict(), \"model.pth\")."
                )
    except ModelImportError:
        raise
    except Exception:  # a malformed opcode stream: torch.load below refuses it with its own error
        return


def _torch_load(data: bytes, name: str) -> object:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (weights_only refused a class), RuntimeError (damaged zip), ...
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text:
            raise ModelImportError(
                f"{name} holds more than tensors (a pickled model or object), which could run code when opened. "
                "Save model.state_dict() instead: torch.save(model.state_dict(), \"model.pth\")."
            ) from None
        raise ModelImportError(f"{name} is damaged or not a torch.save file ({text.splitlines()[0][:120] if text else type(e).__name__}). {_HOW}") from None


def _safetensors_load(data: bytes, name: str) -> dict:
    import safetensors.torch

    try:
        return safetensors.torch.load(data)
    except Exception as e:
        raise ModelImportError(f"{name} is not a readable .safetensors file ({str(e)[:120]}). {_HOW}") from None


def _unwrap(obj: object, name: str) -> dict[str, torch.Tensor]:
    """The tensor table: the object itself, or the one state dict inside a training checkpoint
    ({"model_state_dict": ..., "optimizer_state_dict": ...}); "module." / "_orig_mod." prefixes dropped."""
    if isinstance(obj, dict) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model_state_dict", "state_dict", "model", "net", "weights"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ModelImportError(f"{name} holds a {type(obj).__name__}, not a state dict (a table of named tensors). {_HOW}")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelImportError(
                f"{name} is not a plain state dict: its entry {str(key)[:40]!r} is a {type(value).__name__}, not a tensor. {_HOW}"
            )
        for prefix in ("module.", "_orig_mod."):  # nn.DataParallel, torch.compile
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


# ---------------------------------------------------------------- what the tensors say


@dataclass(frozen=True)
class Group:
    """The tensors of one layer with weights, e.g. "conv_block_1.0" -> weight, bias."""

    path: str
    kind: str  # "Linear", "Conv2d" or "BatchNorm"
    tensors: dict
    container: str  # "conv_block_1" for "conv_block_1.0"; the path itself if not numbered
    index: int | None  # 0 for "conv_block_1.0"

    @property
    def out(self) -> int:
        return int(self.tensors["weight"].shape[0])

    @property
    def inputs(self) -> int:
        return int(self.tensors["weight"].shape[1]) if self.kind != "BatchNorm" else self.out


def groups(state: dict[str, torch.Tensor], name: str = "upload") -> list[Group]:
    """The layers with weights, in the file's order; ModelImportError if a tensor fits no known layer."""
    table: dict[str, dict] = {}
    for key, t in state.items():
        path, _, tname = key.rpartition(".")
        if tname not in _PARAM_NAMES:
            raise ModelImportError(
                f"{name}: the tensor {key!r} is not a weight, bias or batch-norm statistic, so this is not a "
                "stack of Linear, Conv2d and BatchNorm layers digitrec can rebuild."
            )
        table.setdefault(path, {})[tname] = t
    out = []
    for path, tensors in table.items():
        w = tensors.get("weight")
        if "running_mean" in tensors:
            if w is None or w.dim() != 1:
                raise ModelImportError(f"{name}: the batch norm {path!r} has no learned scale (affine=False), which digitrec does not support.")
            kind = "BatchNorm"
        elif w is None:
            raise ModelImportError(f"{name}: {path!r} has a bias but no weight; this is not a layer digitrec knows.")
        elif w.dim() == 2:
            kind = "Linear"
        elif w.dim() == 4:
            if w.shape[2] != w.shape[3]:
                raise ModelImportError(f"{name}: the convolution {path!r} has a {w.shape[2]}×{w.shape[3]} kernel; only square kernels are supported.")
            kind = "Conv2d"
        else:
            raise ModelImportError(
                f"{name}: {path}.weight has shape {tuple(w.shape)}, which is neither a Linear (2-D), a convolution "
                "(4-D) nor a batch norm (1-D with running statistics) weight."
            )
        for tname, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ModelImportError(
                    f"{name} holds NaN or infinite weights (in {path}.{tname}), so the model cannot predict anything: "
                    "the training diverged. Train again with a lower learning rate."
                )
            if tname != "num_batches_tracked" and not t.is_floating_point():
                raise ModelImportError(f"{name}: {path}.{tname} holds {t.dtype} numbers, not weights.")
        # "conv_block_1.0" or "0": the index in an nn.Sequential ("fc1" is a name, not an index)
        m = re.fullmatch(r"(?:(.*)\.)?(\d+)", path)
        container, index = (m.group(1) or "", int(m.group(2))) if m else (path, None)
        out.append(Group(path, kind, tensors, container, index))
    if not out:
        raise ModelImportError(f"{name} holds no weights. {_HOW}")
    if out[-1].kind != "Linear" or out[-1].out != 10:
        last = out[-1]
        raise ModelImportError(
            f"{name}: the last layer ({last.path}, weight {tuple(last.tensors['weight'].shape)}) does not give "
            "10 scores, so this is not a digit classifier digitrec can rebuild (it expects the last Linear to have 10 outputs)."
        )
    if len(out) > L.MAX_LAYERS // 2:
        raise ModelImportError(f"{name} has {len(out)} layers with weights; digitrec imports up to {L.MAX_LAYERS // 2}.")
    return out


def _gap(a: Group, b: Group) -> int | None:
    """Weightless layers between two layers of the same nn.Sequential (their indices say), else None."""
    if a.index is not None and b.index is not None and a.container == b.container and b.index > a.index:
        return b.index - a.index - 1
    return None


def _slot_options(a: Group, b: Group, act: L.Layer, pool: L.Layer) -> list[tuple[L.Layer, ...]]:
    """What may sit between layer a and layer b, most usual first."""
    if b.kind == "BatchNorm":
        options = [(), (act,)]
    elif a.kind == "Conv2d" or (a.kind == "BatchNorm" and b.kind == "Conv2d"):
        if b.kind == "Linear":
            options = [(act, pool, L.Layer("Flatten")), (act, L.Layer("Flatten")), (pool, L.Layer("Flatten")),
                       (L.Layer("Flatten"),)]
        else:
            options = [(act,), (act, pool), (pool,), ()]
    elif a.kind == "BatchNorm" and b.kind == "Linear":
        options = [(act,), ()]  # a flat BatchNorm1d, or after a conv (handled by shape below)
        options += [(act, pool, L.Layer("Flatten")), (act, L.Layer("Flatten")), (L.Layer("Flatten"),)]
    else:  # Linear -> Linear
        options = [(act,), ()]
    gap = _gap(a, b)
    if gap is None and b.kind != "BatchNorm":
        # Separate attributes (self.fc1, self.fc2): nothing says what is between, and two layers with no
        # activation between them would collapse into one, so a learner puts one there.
        options = [o for o in options if act in o]
    if gap is not None:  # an nn.Sequential: exactly `gap` layers, the extra ones dropout (identity at inference)
        options = [o + (L.Layer("Dropout"),) * (gap - len(o)) for o in options if len(o) <= gap]
        if gap >= 1:
            options = [o for o in options if o.count(L.Layer("Dropout")) < gap] or options
    return options


def _param_layer(g: Group, shape_in: tuple[int, ...], stride: int, padding: int) -> L.Layer:
    if g.kind == "Linear":
        return L.Layer("Linear", out=g.out, bias="bias" in g.tensors)
    if g.kind == "Conv2d":
        return L.Layer("Conv2d", out=g.out, kernel=int(g.tensors["weight"].shape[2]), stride=stride,
                       padding=padding, bias="bias" in g.tensors)
    return L.Layer("BatchNorm2d" if len(shape_in) == 3 else "BatchNorm1d")


def structures(gs: list[Group], act: L.Layer = L.Layer("ReLU"), pool: L.Layer = L.Layer("MaxPool2d", kernel=2, stride=2),
               limit: int = 200) -> list[tuple[L.Layer, ...]]:
    """Layer lists whose shapes line up with every tensor, fewest unusual choices first.

    Per convolution: padding "same" (k // 2) or 0, stride 1 or 2; between layers: see _slot_options.
    """
    found: list[tuple[int, tuple[L.Layer, ...]]] = []

    def walk(i: int, shape: tuple[int, ...], done: tuple[L.Layer, ...], cost: int) -> None:
        if len(found) >= 20_000:  # bounded time for a crafted file with many convolutions
            return
        g = gs[i]
        if i == 0 and g.kind != "Conv2d":
            done, shape = (L.Layer("Flatten"),), (math.prod(shape),)
        need = g.inputs
        if shape[0] != need or (g.kind == "Linear" and len(shape) != 1):
            return
        if g.kind == "Conv2d":
            k = int(g.tensors["weight"].shape[2])
            choices = [(1, k // 2, 0), (1, 0, 1), (2, k // 2, 2), (2, 0, 3)]
            if k // 2 == 0:
                choices = [(1, 0, 0), (2, 0, 2)]
        else:
            choices = [(1, 0, 0)]
        for stride, padding, c in choices:
            layer = _param_layer(g, shape, stride, padding)
            try:
                out_shape = L.layer_shapes(layer, shape, 0)
            except InvalidConfig:
                continue
            if i == len(gs) - 1:
                found.append((cost + c, done + (layer,)))
                continue
            for j, slot in enumerate(_slot_options(g, gs[i + 1], act, pool)):
                s = out_shape
                try:
                    for extra in slot:
                        if extra.kind == "Flatten" and len(s) != 3:
                            raise InvalidConfig("flatten only after maps")
                        s = L.layer_shapes(extra, s, 0)
                except InvalidConfig:
                    continue
                walk(i + 1, s, done + (layer,) + slot, cost + c + j)

    walk(0, L.INPUT_SHAPE, (), 0)
    found.sort(key=lambda item: item[0])
    unique, seen = [], set()
    for _, layers in found:
        if layers not in seen:
            seen.add(layers)
            unique.append(layers)
    return unique[:limit]


# ---------------------------------------------------------------- weights into a spec


def load_weights(spec: L.ModelSpec, state: dict[str, torch.Tensor], name: str = "upload") -> nn.Module:
    """A SpecNet of ``spec`` holding the file's tensors, matched in order to its layers with weights.
    ModelImportError names the layer and both shapes where they differ."""
    gs = groups(state, name)
    net = L.SpecNet(spec)
    wanted = [(n, i + 1, layer, shape_in)
              for i, (n, layer, shape_in) in enumerate(zip(net.names, spec.layers, L.input_shapes(spec)))
              if layer.kind in L.WITH_PARAMS]
    if len(wanted) != len(gs):
        raise ModelImportError(
            f"The specification has {len(wanted)} layers with weights "
            f"({', '.join(w[2].text() for w in wanted)}) but {name} has {len(gs)} "
            f"({', '.join(g.path for g in gs)}). Change the specification to match."
        )
    new_state = {}
    for (child, position, layer, shape_in), g in zip(wanted, gs):
        kind_ok = (g.kind == "BatchNorm") == layer.kind.startswith("BatchNorm") and (
            g.kind in ("BatchNorm", layer.kind))
        expected = L.param_shapes(layer, shape_in)
        for tname, shape in expected.items():
            t = g.tensors.get(tname)
            if tname == "num_batches_tracked":
                new_state[f"{child}.{tname}"] = (t if t is not None else torch.tensor(0)).to(torch.long).reshape(())
                continue
            if not kind_ok or t is None or tuple(t.shape) != tuple(shape):
                got = "missing" if t is None else f"shape {tuple(t.shape)}"
                raise ModelImportError(
                    f"Layer {position} ({layer.text()}) reading {shape_in} needs {tname} of shape {tuple(shape)}, "
                    f"but {name}'s {g.path}.{tname} is {got}. Change the specification (or --arch) so the shapes line up."
                )
            new_state[f"{child}.{tname}"] = t.detach().to(torch.float32)
        extra = set(g.tensors) - set(expected)
        if extra:
            raise ModelImportError(f"Layer {position} ({layer.text()}) has no {', '.join(sorted(extra))}, but {name}'s {g.path} does.")
    net.load_state_dict(new_state, strict=True)
    return net.eval()


# ---------------------------------------------------------------- choosing by accuracy


def _inputs(digits: DigitSet, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = digits.images[:n].float().div(255.0).unsqueeze(1)  # (N, 1, 28, 28) ink in [0, 1]
    return images, digits.labels[:n]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    return fit(model, x, y, batch)[0]


_TEMPERATURES = torch.logspace(-3, 3, 31, base=2).tolist()  # 1/8 .. 8


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> tuple[float, float]:
    """(accuracy, cross-entropy at the best temperature) of ``model`` on x (N, 1, 28, 28), y (N,).

    The loss tells candidates apart far better than accuracy on a few hundred
    digits. Taken at the best of a range of temperatures (logits times t), it
    does not reward a wrong candidate for merely making a lightly trained, timid
    model more confident (tanh in place of sigmoid doubles the scale).
    """
    with torch.inference_mode():
        logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(y), batch)]).float()  # (N, 10)
    if not torch.isfinite(logits).all():
        return 0.0, float("inf")
    acc = float((logits.argmax(1) == y).float().mean())
    scaled = logits.unsqueeze(0) * torch.tensor(_TEMPERATURES).view(-1, 1, 1)  # (T, N, 10)
    nll = -scaled.log_softmax(-1).gather(2, y.view(1, -1, 1).expand(len(_TEMPERATURES), -1, 1))  # (T, N, 1)
    return acc, float(nll.mean(dim=(1, 2)).min())


def import_state_dict(
    state: dict[str, torch.Tensor],
    name: str = "upload",
    arch: str | None = None,
    digits: DigitSet | None = None,
    normalisation: str | None = None,
    model_name: str = "",
) -> ImportResult:
    """Rebuild the learner's model from ``state``.

    arch: a one-line spec (``layers.parse``) to use instead of inferring one.
    digits: MNIST test digits; the first DETECT_DIGITS choose the architecture and
    normalisation, all of them give ``test_accuracy``. Without digits the layout must
    be unambiguous (or given with ``arch``) and the normalisation given.
    normalisation: a key of NORMALISATIONS to use instead of detecting it.
    """
    gs = groups(state, name)
    if normalisation is not None and normalisation not in NORMALISATIONS:
        raise ModelImportError(f"Unknown normalisation {normalisation!r}; choose one of: {'; '.join(NORMALISATIONS)}.")
    norms = [normalisation] if normalisation else list(NORMALISATIONS)
    if arch is not None:
        try:
            base = L.parse(arch, name=model_name)
        except InvalidConfig as e:
            raise ModelImportError(f"The specification does not work: {e}") from None
        candidates = [base.layers]
    else:
        candidates = []  # (layers) with every activation / pool kind
        relu_max = structures(gs, limit=MAX_STRUCTURES)
        if not relu_max:
            raise ModelImportError(
                f"{name}: no stack of layers digitrec knows fits these tensors "
                f"({_describe_groups(gs)}): "
                "the widths do not line up for a 28×28 digit with any padding, stride or 2×2 pooling tried. "
                "Give the layers with --arch (e.g. \"conv3x3(10,p=1) relu maxpool2 flatten linear(10)\")."
            )
        candidates = relu_max
    if digits is None:
        if len(candidates) > 1:
            options = "; ".join(L.ModelSpec(c).text() for c in candidates[:3])
            raise ModelImportError(
                f"{name}: several layouts fit these tensors (e.g. {options}) and without the MNIST test digits "
                "digitrec cannot tell which is yours. Give it with --arch, or get MNIST (python -m digitrec data)."
            )
        spec = L.ModelSpec(candidates[0], *NORMALISATIONS[norms[0]], name=model_name)
        model = load_weights(spec, state, name)
        return ImportResult(model, spec, norms[0] if normalisation else "assumed: " + norms[0], None, None,
                            ("Without MNIST the accuracy could not be measured.",))

    # Stage 1, on a hundred digits: every layout with ReLU and max pooling (the usual choices) under
    # every normalisation. Stage 2, on DETECT_DIGITS: the best two (layout, normalisation) pairs with
    # every activation and pooling kind. Each candidate costs one forward pass of a few hundred digits.
    scored: list[tuple[float, int, L.ModelSpec, str, float]] = []  # (loss, rank, spec, normalisation, accuracy)

    def score(layers: tuple[L.Layer, ...], rank: int, norm: str, x, y) -> None:
        spec = L.ModelSpec(layers, *NORMALISATIONS[norm], name=model_name)
        acc, loss = fit(load_weights(spec, state, name), x, y)
        scored.append((loss, rank, spec, norm, acc))

    x1, y1 = _inputs(digits, DETECT_DIGITS // 3)
    for rank, layers in enumerate(candidates):
        for n, norm in enumerate(norms):
            score(layers, rank * 100 + n * 10, norm, x1, y1)
    ranked = sorted(scored, key=lambda s: (s[0], s[1]))
    layouts = list(dict.fromkeys(s[2].layers for s in ranked))[:2]
    first = [s for layout in layouts for s in [t for t in ranked if t[2].layers == layout][:2]]
    scored.clear()
    x, y = _inputs(digits, DETECT_DIGITS)
    for _, rank, spec1, norm, _ in first:
        for a, act in enumerate(ACTIVATIONS if arch is None else ACTIVATIONS[:1]):
            for p, pool_kind in enumerate(POOLS if arch is None else POOLS[:1]):
                if pool_kind == "AvgPool2d" and not any(l.kind == "MaxPool2d" for l in spec1.layers):
                    continue
                swapped = spec1.layers if arch is not None else tuple(
                    act if l.kind == "ReLU" else (L.Layer(pool_kind, kernel=l.kernel, stride=l.stride, padding=l.padding)
                                                  if l.kind == "MaxPool2d" else l)
                    for l in spec1.layers
                )
                score(swapped, rank + a * 2 + p, norm, x, y)

    # The lowest loss wins; close to it, the more usual choice (lower rank) does. ReLU with max
    # pooling is by far the most common, and GELU or LeakyReLU(0.01) compute nearly the same, so
    # it may be up to 10 % behind; any other choice 2 %.
    best = min(s[0] for s in scored)
    if os.environ.get("DIGITREC_IMPORT_DEBUG"):
        for row in sorted(scored, key=lambda s: s[0])[:8]:
            print(f"{row[0]:.4f} acc {row[4]:.3f} rank {row[1]} {row[2].text()} {row[3]}", file=sys.stderr)

    def usual(spec: L.ModelSpec) -> bool:
        return not any(l.kind in L.ACTIVATIONS and l.kind != "ReLU" for l in spec.layers)

    close = [s for s in scored if s[0] <= best * (1.10 if usual(s[2]) else 1.02) + 1e-6]
    _, _, spec, norm, acc = min(close, key=lambda s: s[1])
    model = load_weights(spec, state, name)
    alternatives = []
    for loss, _, other, other_norm, a in sorted(scored, key=lambda s: (s[0], s[1])):
        if (other, other_norm) != (spec, norm) and loss <= best * 1.2 and len(alternatives) < 3:
            alternatives.append((other.text() + ("" if other_norm == norm else f" with {other_norm}"), a))
    tx, ty = _inputs(digits, len(digits))
    test_acc = accuracy(model, tx, ty)
    warnings = []
    if test_acc < CHANCE_ACCURACY:
        warnings.append(
            f"Its accuracy on the test digits is {test_acc:.1%}, about chance (10 %): it has learned little, or its "
            "layers are not what digitrec inferred. It was imported anyway; give the layers with --arch if you know them."
        )
    return ImportResult(model, spec, norm, acc, test_acc, tuple(warnings), tuple(alternatives))


def _describe_groups(gs: list[Group]) -> str:
    return ", ".join(f"{g.path} {tuple(g.tensors['weight'].shape)}" for g in gs)


def import_bytes(data: bytes, name: str = "upload", **kwargs) -> ImportResult:
    """``import_state_dict`` of a file's bytes (an upload)."""
    return import_state_dict(read_state_dict(bytes(data), name), name, **kwargs)


def import_file(path: str | Path, **kwargs) -> ImportResult:
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"{path} is not a file. Give the path of the .pth or .safetensors file your notebook saved.")
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:  # refuse before reading it into memory
        raise ModelImportError(
            f"{path} is {size / 2**20:.0f} MB, over the {MAX_IMPORT_BYTES // 2**20} MB limit for an imported model; "
            "a model for 28×28 digits is much smaller. Check that you saved the right model."
        )
    kwargs.setdefault("model_name", path.stem)
    return import_bytes(path.read_bytes(), path.name, **kwargs)


def summary(result: ImportResult) -> str:
    """What was imported, in a few sentences (the CLI prints it; the page shows it)."""
    lines = [f"Layers: {result.spec.text()}", f"Input: {result.normalisation}"]
    if result.test_accuracy is not None:
        lines.append(f"Test accuracy: {result.test_accuracy:.2%} on the MNIST test digits")
    for text, acc in result.alternatives:
        lines.append(f"Also close ({acc:.1%} on {DETECT_DIGITS} digits): {text}")
    return "\n".join(lines)


def save(result: ImportResult, path: str | Path, source: str = "") -> Path:
    """Write the imported model as a digitrec checkpoint (its spec in the metadata)."""
    from digitrec import checkpoints

    extra = {"imported_from": source[:200], "input_normalisation": result.normalisation}
    return checkpoints.save(result.model, path, test_accuracy=result.test_accuracy, epochs=None, seed=None, extra=extra)
