"""A model as a list of layers: the specification any network here is built from.

A ``ModelSpec`` is a frozen, JSON-serialisable sequence of ``Layer`` specs
(Flatten, Linear, Conv2d, MaxPool2d, AvgPool2d, ReLU, LeakyReLU, Sigmoid, Tanh,
GELU, Dropout, BatchNorm1d/2d, and Softmax/LogSoftmax at the end) plus the
input normalisation the model was trained with. It has a one-line text form a
learner can type (ConvNetJS edits its architecture as text too)::

    conv3x3(10,p=1) relu conv3x3(10,p=1) relu maxpool2 flatten linear(10)

A layer states only what it makes (``linear(10)``: ten outputs); what it reads
follows from the layer before, so ``shapes()`` walks a 1 x 28 x 28 digit through
the list and names the layer and both shapes where they do not line up.

``SpecNet`` builds the spec as an ``nn.Module`` whose children are the layers,
named in forward order (``conv_1_1``, ``relu_1_1``, ``max_pool_1``, ``flatten``,
``fc_1``, ``output``: see ``layer_names``), so activation capture, ``describe()``,
the explorers and Captum see every step. FCNet and TinyVGG (digitrec.models)
are two such specs. The normalisation is applied inside ``forward``:
every page feeds ink in [0, 1] and the model receives what it was trained on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn

from digitrec import image_conv, pooling
from digitrec.data import IMAGE_SIZE, NUM_CLASSES
from digitrec.errors import InvalidConfig

INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)  # one grey digit: channels, height, width

# Limits: enough for any model a learner writes for MNIST; a crafted spec or
# checkpoint cannot make us build something huge before its tensors are checked.
MAX_LAYERS = 64
MAX_WIDTH = 4096  # Linear outputs
MAX_CHANNELS = 512  # Conv2d outputs
MAX_KERNEL = IMAGE_SIZE
MAX_PARAMS = 20_000_000  # 80 MB of float32

# MNIST's mean and standard deviation of ink in [0, 1]: the Normalize((0.1307,), (0.3081,))
# of pytorch/examples' mnist/main.py and many notebooks.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

KINDS = (
    "Flatten", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
    "GELU", "Softmax", "LogSoftmax", "Dropout", "BatchNorm1d", "BatchNorm2d",
)
ACTIVATIONS = ("ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU")
WITH_PARAMS = ("Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d")
FINAL_ONLY = ("Softmax", "LogSoftmax")

# The text words of each kind (first one is what ``text()`` writes).
_WORDS = {
    "flatten": "Flatten", "relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "gelu": "GELU",
    "softmax": "Softmax", "logsoftmax": "LogSoftmax", "log_softmax": "LogSoftmax",
    "leakyrelu": "LeakyReLU", "leaky_relu": "LeakyReLU", "dropout": "Dropout",
    "linear": "Linear", "fc": "Linear", "bn1d": "BatchNorm1d", "batchnorm1d": "BatchNorm1d",
    "bn2d": "BatchNorm2d", "batchnorm2d": "BatchNorm2d", "conv": "Conv2d",
    "maxpool": "MaxPool2d", "avgpool": "AvgPool2d",
}


@dataclass(frozen=True)
class Layer:
    """One layer. Only the fields its kind uses matter; the rest keep their defaults.

    out: Linear outputs / Conv2d output channels. kernel, stride, padding: Conv2d
    and pooling (a pool's stride 0 means "its kernel size", PyTorch's default).
    bias: Linear/Conv2d have one. slope: LeakyReLU's negative slope. p: Dropout's rate.
    """

    kind: str
    out: int = 0
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    bias: bool = True
    slope: float = 0.01
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidConfig(f"Unknown layer kind {self.kind!r}; known kinds: {', '.join(KINDS)}.")
        for name in ("out", "kernel", "stride", "padding"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    object.__setattr__(self, name, int(value))
                else:
                    raise InvalidConfig(f"{self.kind}'s {name} must be a whole number, got {value!r}.")
        object.__setattr__(self, "bias", bool(self.bias))
        object.__setattr__(self, "slope", float(self.slope))
        object.__setattr__(self, "p", float(self.p))
        k = self.kind
        if k == "Linear" and not 1 <= self.out <= MAX_WIDTH:
            raise InvalidConfig(f"linear({self.out}): a Linear layer makes 1 to {MAX_WIDTH} outputs.")
        if k == "Conv2d":
            if not 1 <= self.out <= MAX_CHANNELS:
                raise InvalidConfig(f"{self.text()}: a convolution makes 1 to {MAX_CHANNELS} channels.")
            if not 1 <= self.kernel <= MAX_KERNEL or not 1 <= self.stride <= MAX_KERNEL or not 0 <= self.padding <= MAX_KERNEL:
                raise InvalidConfig(f"{self.text()}: kernel and stride must be 1 to {MAX_KERNEL}, padding 0 to {MAX_KERNEL}.")
        if k in ("MaxPool2d", "AvgPool2d"):
            if not 1 <= self.kernel <= MAX_KERNEL or not 0 <= self.stride <= MAX_KERNEL:
                raise InvalidConfig(f"{self.text()}: a pooling window is 1 to {MAX_KERNEL} cells.")
            if not 0 <= self.padding <= self.kernel // 2:
                raise InvalidConfig(f"{self.text()}: pooling padding must be at most half the window ({self.kernel // 2}).")
        if k == "Dropout" and not 0.0 <= self.p < 1.0:
            raise InvalidConfig(f"dropout({self.p}): the dropout rate is from 0 up to (not including) 1.")
        if k == "LeakyReLU" and not (math.isfinite(self.slope) and -10 <= self.slope <= 10):
            raise InvalidConfig(f"leakyrelu({self.slope}): the slope must be a number from -10 to 10.")

    @property
    def pool_stride(self) -> int:
        return self.stride or self.kernel

    def text(self) -> str:
        """The layer in the one-line text form: ``conv5x5(16,s=2,p=2)``, ``maxpool2``, ``relu``."""
        k = self.kind
        if k == "Linear":
            return f"linear({self.out}{'' if self.bias else ',bias=0'})"
        if k == "Conv2d":
            opts = [str(self.out)]
            if self.stride != 1:
                opts.append(f"s={self.stride}")
            if self.padding:
                opts.append(f"p={self.padding}")
            if not self.bias:
                opts.append("bias=0")
            return f"conv{self.kernel}x{self.kernel}({','.join(opts)})"
        if k in ("MaxPool2d", "AvgPool2d"):
            word = "maxpool" if k == "MaxPool2d" else "avgpool"
            if self.pool_stride == self.kernel and not self.padding:
                return f"{word}{self.kernel}"
            return f"{word}({self.kernel},s={self.pool_stride},p={self.padding})"
        if k == "LeakyReLU":
            return f"leakyrelu({self.slope:g})"
        if k == "Dropout":
            return f"dropout({self.p:g})"
        return {"BatchNorm1d": "bn1d", "BatchNorm2d": "bn2d"}.get(k, k.lower())

    def to_dict(self) -> dict:
        """Only the fields that differ from the defaults (short JSON)."""
        d = {"kind": self.kind}
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value != f.default:
                d[f.name] = value
        return d


@dataclass(frozen=True)
class ModelSpec:
    """A whole model: its layers in order, and the input normalisation it was trained on.

    The model reads (B, 1, 28, 28) ink in [0, 1]; forward first computes
    (x - mean) / std, so mean=0, std=1 means "ToTensor only".
    """

    architecture = "spec"  # class attribute, not a field: names the model kind in checkpoints
    layers: tuple[Layer, ...]
    mean: float = 0.0
    std: float = 1.0
    name: str = ""  # a learner's name for it ("my-cnn"); shown in pickers
    # The most weights this spec may describe. An imported spec (from a file or a
    # checkpoint) always gets MAX_PARAMS; the presets' specs (digitrec.models) pass
    # their own bound, which digitrec.config's ranges keep (an 8 x 4096 FCNet is larger).
    max_params: int = field(default=MAX_PARAMS, compare=False, repr=False)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise InvalidConfig("A model needs at least one layer, e.g. `flatten linear(10)`.")
        if len(layers) > MAX_LAYERS:
            raise InvalidConfig(f"A model may have at most {MAX_LAYERS} layers; this one has {len(layers)}.")
        if not all(isinstance(layer, Layer) for layer in layers):
            raise InvalidConfig("A model's layers must be Layer specifications.")
        object.__setattr__(self, "layers", layers)
        try:
            mean, std = float(self.mean), float(self.std)
        except (TypeError, ValueError):
            raise InvalidConfig(f"The input normalisation must be numbers, got {self.mean!r} and {self.std!r}.") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise InvalidConfig(f"The input normalisation needs a finite mean and a positive std, got {mean} and {std}.")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "name", str(self.name)[:60])
        shapes(self)  # raises InvalidConfig naming the layer and both shapes where they do not line up
        params = count_params(self)
        if params > self.max_params:
            raise InvalidConfig(f"This model has {params:,} weights; digitrec takes models of up to {self.max_params:,}.")

    @property
    def normalised(self) -> bool:
        return (self.mean, self.std) != (0.0, 1.0)

    @property
    def has_conv(self) -> bool:
        return any(layer.kind == "Conv2d" for layer in self.layers)

    def text(self) -> str:
        return " ".join(layer.text() for layer in self.layers)

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, "layers": [layer.to_dict() for layer in self.layers],
                "mean": self.mean, "std": self.std, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        if not isinstance(d, dict) or not isinstance(d.get("layers"), list):
            raise InvalidConfig("A model specification is a table with a list of layers.")
        if len(d["layers"]) > MAX_LAYERS:
            raise InvalidConfig(f"A model may have at most {MAX_LAYERS} layers; this one has {len(d['layers'])}.")
        names = {f.name for f in fields(Layer)}
        layers = []
        for item in d["layers"]:
            if not isinstance(item, dict) or set(item) - names or "kind" not in item:
                raise InvalidConfig(f"Bad layer specification {str(item)[:80]}.")
            try:
                layers.append(Layer(**item))
            except TypeError as e:
                raise InvalidConfig(f"Bad layer specification {str(item)[:80]}: {e}.") from None
        extra = set(d) - {"architecture", "layers", "mean", "std", "name"}
        if extra:
            raise InvalidConfig(f"Unknown model settings {sorted(extra)}.")
        return cls(tuple(layers), d.get("mean", 0.0), d.get("std", 1.0), d.get("name", ""))

    def with_normalisation(self, mean: float, std: float) -> "ModelSpec":
        return replace(self, mean=mean, std=std)


# ---------------------------------------------------------------- shapes


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if len(shape) != 1 else f"({shape[0]},)"


def layer_shapes(layer: Layer, shape: tuple[int, ...], index: int) -> tuple[int, ...]:
    """The output shape of ``layer`` for an input of ``shape`` (no batch), or InvalidConfig."""
    where = f"Layer {index + 1} ({layer.text()})"
    k = layer.kind
    if k == "Flatten":
        return (math.prod(shape),)
    if k in ("Linear", "BatchNorm1d"):
        if len(shape) != 1:
            raise InvalidConfig(
                f"{where} reads a flat list of numbers but gets maps of shape {_shape_text(shape)}: "
                "put `flatten` before it."
            )
        return (layer.out,) if k == "Linear" else shape
    if k in ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d"):
        if len(shape) != 3:
            raise InvalidConfig(
                f"{where} reads maps (channels, height, width) but gets a flat list of shape {_shape_text(shape)}: "
                "convolutions, pooling and bn2d come before `flatten`."
            )
        if k == "BatchNorm2d":
            return shape
        c, h, w = shape
        stride = layer.stride if k == "Conv2d" else layer.pool_stride
        oh = (h + 2 * layer.padding - layer.kernel) // stride + 1
        ow = (w + 2 * layer.padding - layer.kernel) // stride + 1
        if oh < 1 or ow < 1:
            raise InvalidConfig(
                f"{where} needs maps of at least {layer.kernel}×{layer.kernel} (with padding {layer.padding}) "
                f"but gets {_shape_text(shape)}: the maps have shrunk too much before it."
            )
        return (layer.out if k == "Conv2d" else c, oh, ow)
    return shape  # activations, dropout, softmax: same shape


def shapes(spec: ModelSpec) -> list[tuple[int, ...]]:
    """Each layer's output shape for one 1 x 28 x 28 digit; raises InvalidConfig where they do not line up."""
    shape: tuple[int, ...] = INPUT_SHAPE
    out = []
    last = len(spec.layers) - 1
    for i, layer in enumerate(spec.layers):
        if layer.kind in FINAL_ONLY and i != last:
            raise InvalidConfig(f"Layer {i + 1} ({layer.text()}) may only be the last layer: it turns scores into probabilities.")
        shape = layer_shapes(layer, shape, i)
        out.append(shape)
    if shape != (NUM_CLASSES,):
        raise InvalidConfig(
            f"The last layer ({spec.layers[-1].text()}) gives shape {_shape_text(shape)}, but a digit classifier "
            f"ends with {NUM_CLASSES} scores: end with `flatten linear(10)` or `linear(10)`."
        )
    return out


def input_shapes(spec: ModelSpec) -> list[tuple[int, ...]]:
    """Each layer's input shape (the previous layer's output, the digit for the first)."""
    return [INPUT_SHAPE, *shapes(spec)[:-1]]


def param_shapes(layer: Layer, shape_in: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The tensors of ``layer`` in a state dict (weights and buffers), for input ``shape_in``."""
    k = layer.kind
    if k == "Linear":
        d = {"weight": (layer.out, shape_in[0])}
        return d | ({"bias": (layer.out,)} if layer.bias else {})
    if k == "Conv2d":
        d = {"weight": (layer.out, shape_in[0], layer.kernel, layer.kernel)}
        return d | ({"bias": (layer.out,)} if layer.bias else {})
    if k in ("BatchNorm1d", "BatchNorm2d"):
        c = shape_in[0]
        return {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}
    return {}


def count_params(spec: ModelSpec) -> int:
    """Trainable parameters (weights and biases; batch-norm's running statistics are not trained)."""
    total = 0
    for layer, shape_in in zip(spec.layers, input_shapes(spec)):
        for name, shape in param_shapes(layer, shape_in).items():
            if name in ("weight", "bias"):
                total += math.prod(shape)
    return total


# ---------------------------------------------------------------- the text form

def parse(text: str, mean: float = 0.0, std: float = 1.0, name: str = "") -> ModelSpec:
    """A ModelSpec from the one-line text form; InvalidConfig says which word is wrong.

    Words, separated by spaces (or commas, or ``->``): ``flatten``, ``linear(N)``,
    ``conv3x3(C,s=1,p=1,bias=0)`` (or ``conv(C,k=3)``), ``maxpool2``, ``avgpool2``
    (or ``maxpool(k,s=..,p=..)``), ``relu``, ``leakyrelu(0.01)``, ``sigmoid``,
    ``tanh``, ``gelu``, ``dropout(0.5)``, ``bn1d``, ``bn2d``, ``softmax``,
    ``logsoftmax``. A model that starts with ``linear`` gets its ``flatten``.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidConfig("The model specification is empty; write e.g. `flatten linear(16) relu linear(10)`.")
    if len(text) > 4000:
        raise InvalidConfig("The model specification is too long (over 4000 characters).")
    words = _split_words(text)
    layers = [_parse_word(w) for w in words]
    if layers and layers[0].kind in ("Linear", "BatchNorm1d"):
        layers.insert(0, Layer("Flatten"))
    return ModelSpec(tuple(layers), mean, std, name)


def _split_words(text: str) -> list[str]:
    """Words at spaces, commas or arrows outside brackets."""
    words, depth, current = [], 0, ""
    for ch in text.replace("->", " ").replace("→", " "):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InvalidConfig(f"Unbalanced brackets in the model specification near {current + ch!r}.")
        if depth == 0 and (ch.isspace() or ch == ","):
            if current:
                words.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise InvalidConfig(f"Unbalanced brackets in the model specification near {current!r}.")
    if current:
        words.append(current)
    return words


_WORD = re.compile(r"^([a-z_]+?)(\d+(?:x\d+)?)?(?:\((.*)\))?$")


def _parse_word(word: str) -> Layer:
    word_l = word.strip().lower()
    head, paren, rest = word_l.partition("(")
    if head in _WORDS:  # "bn2d", "relu": the digits belong to the name
        m = re.match(r"^(.*)$", head)
        base, size, args = head, None, rest[:-1] if paren and rest.endswith(")") else (None if not paren else rest)
        if paren and not rest.endswith(")"):
            raise InvalidConfig(f"`{word}`: a bracket is not closed.")
    else:
        m = _WORD.match(word_l)
        base = size = args = None
    known = "flatten, linear(N), convKxK(C,s=..,p=..), maxpoolK, avgpoolK, relu, leakyrelu(a), sigmoid, tanh, gelu, dropout(p), bn1d, bn2d, softmax, logsoftmax"
    if base is None:
        if not m or m.group(1) not in _WORDS:
            raise InvalidConfig(f"`{word}` is not a layer digitrec knows; write one of: {known}.")
        base, size, args = m.group(1), m.group(2), m.group(3)
    kind = _WORDS[base]
    positional, named = _args(word, args)
    try:
        if kind == "Conv2d":
            k = _kernel(word, size) if size else int(named.pop("k", named.pop("kernel", 0)) or 0)
            out = int(positional.pop(0)) if positional else int(named.pop("out", 0) or 0)
            return Layer("Conv2d", out=out, kernel=k, stride=int(named.pop("s", named.pop("stride", 1))),
                         padding=_padding(named.pop("p", named.pop("padding", 0)), k), bias=_flag(named.pop("bias", 1)),
                         **_none_left(word, named, positional))
        if kind in ("MaxPool2d", "AvgPool2d"):
            k = _kernel(word, size) if size else int(positional.pop(0)) if positional else int(named.pop("k", 2))
            return Layer(kind, kernel=k, stride=int(named.pop("s", named.pop("stride", 0))),
                         padding=int(named.pop("p", named.pop("padding", 0))), **_none_left(word, named, positional))
        if size:
            raise InvalidConfig(f"`{word}`: {base} takes no size.")
        if kind == "Linear":
            out = int(positional.pop(0)) if positional else int(named.pop("out", 0) or 0)
            return Layer("Linear", out=out, bias=_flag(named.pop("bias", 1)), **_none_left(word, named, positional))
        if kind == "LeakyReLU":
            slope = float(positional.pop(0)) if positional else float(named.pop("slope", 0.01))
            return Layer(kind, slope=slope, **_none_left(word, named, positional))
        if kind == "Dropout":
            p = float(positional.pop(0)) if positional else float(named.pop("p", 0.5))
            return Layer(kind, p=p, **_none_left(word, named, positional))
        return Layer(kind, **_none_left(word, named, positional))
    except (ValueError, TypeError):
        raise InvalidConfig(f"`{word}`: its numbers are not right; e.g. conv3x3(10,p=1), linear(16), maxpool2.") from None


def _args(word: str, args: str | None) -> tuple[list[str], dict[str, str]]:
    positional, named = [], {}
    if args is None:
        return positional, named
    for part in (a.strip() for a in args.split(",")):
        if not part:
            continue
        if "=" in part:
            k, _, v = part.partition("=")
            named[k.strip()] = v.strip()
        elif named:
            raise InvalidConfig(f"`{word}`: put plain numbers before named ones (k=v).")
        else:
            positional.append(part)
    return positional, named


def _none_left(word: str, named: dict, positional: list) -> dict:
    if named or positional:
        extra = ", ".join([*positional, *(f"{k}=" for k in named)])
        raise InvalidConfig(f"`{word}` has settings it does not take: {extra}.")
    return {}


def _kernel(word: str, size: str) -> int:
    a, _, b = size.partition("x")
    if b and a != b:
        raise InvalidConfig(f"`{word}`: only square kernels are supported (write e.g. conv3x3 or conv5x5).")
    return int(a)


def _padding(value, kernel: int) -> int:
    return kernel // 2 if str(value) == "same" else int(value)


def _flag(value) -> bool:
    text = str(value).lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(value)


# ---------------------------------------------------------------- the module

_PREFIX = {
    "Flatten": "flatten", "Linear": "fc", "Conv2d": "conv", "MaxPool2d": "max_pool", "AvgPool2d": "avg_pool",
    "ReLU": "relu", "LeakyReLU": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "GELU": "gelu",
    "Softmax": "softmax", "LogSoftmax": "log_softmax", "Dropout": "dropout", "BatchNorm1d": "bn",
    "BatchNorm2d": "bn",
}


def layer_names(spec: ModelSpec, blocks: bool = True) -> list[str]:
    """The children's names in forward order, the names the explorers, lessons and checkpoints use.

    The last Linear is "output" and a single flatten is "flatten". Layers that read maps
    (before the flatten) are named by block, as CNN Explainer names TinyVGG's: a block
    ends at a pooling layer, so block b's second convolution is ``conv_b_2``, its ReLUs
    ``relu_b_1``, ``relu_b_2`` and its pooling ``max_pool_b``. The other layers are
    numbered per kind from 1: ``fc_1``, ``relu_1``, ``fc_2``. FCNet's and TinyVGG's
    specs get exactly the names their classes had (tests/test_models.py). ``blocks=False``:
    every kind numbered through the whole model (``legacy_layer_names``).
    """
    counts: dict[str, int] = {}
    names = []
    last_linear = max((i for i, l in enumerate(spec.layers) if l.kind == "Linear"), default=-1)
    flattens = sum(l.kind == "Flatten" for l in spec.layers)
    block = 1  # the convolutional block a map-reading layer belongs to
    shape_ins = input_shapes(spec)
    for i, layer in enumerate(spec.layers):
        prefix = _PREFIX[layer.kind]
        if i == last_linear:
            names.append("output")
        elif layer.kind == "Flatten" and flattens == 1:
            names.append("flatten")
        elif blocks and len(shape_ins[i]) == 3 and layer.kind in ("MaxPool2d", "AvgPool2d"):
            names.append(f"{prefix}_{block}")
            block += 1
        elif blocks and len(shape_ins[i]) == 3 and layer.kind != "Flatten":
            counts[(prefix, block)] = counts.get((prefix, block), 0) + 1
            names.append(f"{prefix}_{block}_{counts[(prefix, block)]}")
        else:
            counts[prefix] = counts.get(prefix, 0) + 1
            names.append(f"{prefix}_{counts[prefix]}")
    return names


def legacy_layer_names(spec: ModelSpec) -> list[str]:
    """The names digitrec gave a spec's layers before block naming (every kind numbered
    from 1 through the whole model: ``conv_1``, ``conv_2``, ``max_pool_1``): checkpoints of
    imported models saved then use them (digitrec.checkpoints renames their tensors)."""
    return layer_names(spec, blocks=False)


def build_layer(layer: Layer, shape_in: tuple[int, ...]) -> nn.Module:
    k = layer.kind
    if k == "Flatten":
        return nn.Flatten()
    if k == "Linear":
        return nn.Linear(shape_in[0], layer.out, bias=layer.bias)
    if k == "Conv2d":
        return nn.Conv2d(shape_in[0], layer.out, layer.kernel, stride=layer.stride, padding=layer.padding, bias=layer.bias)
    if k == "MaxPool2d":
        return pooling.MaxPool2d(layer.kernel, stride=layer.pool_stride, padding=layer.padding)  # nn.MaxPool2d, faster to evaluate
    if k == "AvgPool2d":
        return nn.AvgPool2d(layer.kernel, stride=layer.pool_stride, padding=layer.padding)
    if k == "BatchNorm1d":
        return nn.BatchNorm1d(shape_in[0])
    if k == "BatchNorm2d":
        return nn.BatchNorm2d(shape_in[0])
    if k == "LeakyReLU":
        return nn.LeakyReLU(layer.slope)
    if k == "Dropout":
        return nn.Dropout(layer.p)
    if k in ("Softmax", "LogSoftmax"):
        return getattr(nn, k)(dim=1)
    return getattr(nn, k)()  # ReLU, Sigmoid, Tanh, GELU


class SpecNet(nn.Module):
    """The model a ModelSpec describes. x: (B, 1, 28, 28) ink in [0, 1] -> (B, 10) scores."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec  # what every explorer reads: the layers in order
        # What a checkpoint stores to rebuild the model: the spec itself, or (FCNet,
        # TinyVGG, digitrec.models) the preset's configuration the spec was made from.
        self.config = spec
        self.names = layer_names(spec)
        for name, layer, shape_in in zip(self.names, spec.layers, input_shapes(spec)):
            self.add_module(name, build_layer(layer, shape_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.normalised:  # what the learner's notebook fed it: (x - mean) / std
            x = (x - self.spec.mean) / self.spec.std  # (B, 1, 28, 28)
        layers = [getattr(self, name) for name in self.names]
        i = 0
        while i < len(layers):
            # In training, a ReLU and the max pool after it run as one pass where they can
            # (digitrec.pooling.relu_then_pool: the same numbers, one pass over the map fewer), and
            # so do a convolution of the one-channel image and its ReLU (digitrec.image_conv).
            if self.training:
                following = layers[i + 1] if i + 1 < len(layers) else None
                fused = image_conv.conv_then_relu(layers[i], following, x)
                if fused is not None:
                    x, ran = fused
                    i += ran
                    continue
                pooled = pooling.relu_then_pool(layers[i], following, x)
                if pooled is not None:
                    x, i = pooled, i + 2
                    continue
            x = layers[i](x)
            i += 1
        return x  # (B, 10)


# ---------------------------------------------------------------- from a module a learner wrote


def spec_from_module(model: nn.Module, name: str = "") -> ModelSpec:
    """The spec of a plain stack of layers (an nn.Sequential, or a class whose layers are
    registered in the order forward uses them). InvalidConfig for a layer kind not in KINDS.
    Whether forward really runs them in that order is for the caller to check (outputs equal)."""
    layers = []
    for path, m in model.named_modules():
        if list(m.children()):
            continue  # a container: its leaves come next
        layers.append(layer_from_module(m, path))
    if layers and layers[0].kind in ("Linear", "BatchNorm1d"):
        layers.insert(0, Layer("Flatten"))
    return ModelSpec(tuple(layers), name=name)


def layer_from_module(m: nn.Module, path: str = "") -> Layer:
    def one(v) -> int:
        v = v if isinstance(v, (tuple, list)) else (v, v)
        if len(set(v)) != 1:
            raise InvalidConfig(f"{path or type(m).__name__}: only square kernels, strides and paddings are supported, got {tuple(v)}.")
        return int(v[0])

    if isinstance(m, nn.Flatten):
        return Layer("Flatten")
    if isinstance(m, nn.Linear):
        return Layer("Linear", out=m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or one(m.dilation) != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise InvalidConfig(f"{path}: only plain convolutions (no groups, dilation or padding modes) are supported.")
        return Layer("Conv2d", out=m.out_channels, kernel=one(m.kernel_size), stride=one(m.stride),
                     padding=one(m.padding), bias=m.bias is not None)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(m, nn.MaxPool2d) and one(m.dilation) != 1 or getattr(m, "ceil_mode", False):
            raise InvalidConfig(f"{path}: pooling with dilation or ceil_mode is not supported.")
        if isinstance(m, nn.AvgPool2d) and not m.count_include_pad:
            raise InvalidConfig(f"{path}: average pooling with count_include_pad=False is not supported.")
        stride = one(m.stride) if m.stride is not None else 0
        return Layer(type(m).__name__, kernel=one(m.kernel_size), stride=stride, padding=one(m.padding))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return Layer(type(m).__name__)
    if isinstance(m, nn.LeakyReLU):
        return Layer("LeakyReLU", slope=m.negative_slope)
    if isinstance(m, nn.Dropout):
        return Layer("Dropout", p=m.p)
    if isinstance(m, nn.GELU) and m.approximate != "none":
        raise InvalidConfig(f"{path}: GELU(approximate='tanh') is not supported; use nn.GELU().")
    if type(m).__name__ in ("ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax"):
        return Layer(type(m).__name__)
    raise InvalidConfig(
        f"{path or 'a layer'} is a {type(m).__name__}, which digitrec cannot show; it knows {', '.join(KINDS)}."
    )
