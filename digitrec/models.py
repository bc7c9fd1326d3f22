"""The two networks: FCNet (3Blue1Brown's) and TinyVGG (CNN Explainer's), as two layer specifications.

Both read x of shape (B, 1, 28, 28), pixel intensities in [0, 1], and return
(B, 10) logits. Each preset's configuration (``FCConfig``, ``TinyVGGConfig``:
the knobs a learner turns) makes a ``digitrec.layers.ModelSpec``, and the model
is the ``SpecNet`` of that spec, like any imported model: every operation is its
own named child module, in forward order, so activation capture, the explorers
and Captum's DeepLift see each ReLU and pooling step separately.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from digitrec import config as settings
from digitrec.data import IMAGE_SIZE, NUM_CLASSES
from digitrec.errors import InvalidConfig
from digitrec.layers import Layer, ModelSpec, SpecNet

# The presets' own bound on weights: digitrec.config's ranges (at most 8 hidden layers of
# 4096) keep every FCNet and TinyVGG under it; an imported spec gets layers.MAX_PARAMS.
_PRESET_MAX_PARAMS = 200_000_000


@dataclass(frozen=True)
class FCConfig:
    """Fully connected network: flatten -> (Linear -> ReLU) per hidden layer -> Linear."""

    architecture = "fcnet"  # class attribute, not a field: names the model in checkpoints
    # hidden layer widths (why 16-16: digitrec.config); () is no hidden layer at all:
    # one Linear layer, softmax regression, the course's baseline (LINEAR below)
    hidden: tuple[int, ...] = settings.FC_HIDDEN
    # "relu" puts ReLU after each hidden layer; "none" leaves it out, and then the
    # stacked Linear layers collapse into one linear map (the lab's "linear
    # ceiling"). Checkpoints saved before this field read as "relu".
    activation: str = settings.FC_ACTIVATION

    def __post_init__(self) -> None:
        if self.activation not in settings.ACTIVATIONS:
            raise InvalidConfig(
                f"The activation must be one of {', '.join(settings.ACTIVATIONS)}, got {self.activation!r}."
            )
        try:  # whole numbers only: 16.5, "16" or a bare 16 would otherwise slip through or crash later
            hidden = tuple(operator.index(h) for h in self.hidden)
        except TypeError:
            hidden = None
        low, high = settings.WIDTH_RANGE
        if hidden is None or len(hidden) > settings.MAX_HIDDEN_LAYERS or any(h < low or h > high for h in hidden):
            raise InvalidConfig(
                f"Hidden widths must be one to {settings.MAX_HIDDEN_LAYERS} whole numbers from {low} to {high} "
                f"(or none at all), got {self.hidden!r}."
            )
        object.__setattr__(self, "hidden", hidden)

    def spec(self) -> ModelSpec:
        """flatten -> (linear(h) -> relu) per hidden width -> linear(10), as layers."""
        layers = [Layer("Flatten")]
        for h in self.hidden:
            layers.append(Layer("Linear", out=h))  # (B, h)
            if self.activation == "relu":  # no layer at all otherwise: nothing named ReLU that is not one
                layers.append(Layer("ReLU"))
        layers.append(Layer("Linear", out=NUM_CLASSES))  # (B, 10)
        return ModelSpec(tuple(layers), max_params=_PRESET_MAX_PARAMS)


@dataclass(frozen=True)
class TinyVGGConfig:
    """TinyVGG: 2 x [conv3x3 -> ReLU -> conv3x3 -> ReLU -> maxpool2] -> flatten -> Linear."""

    architecture = "tinyvgg"
    channels: int = settings.CNN_CHANNELS  # feature maps per conv layer (why 10: digitrec.config)
    # Padding 1 keeps each block's maps the size of its input (28 -> 28, 14 -> 14),
    # so a feature map lines up pixel for pixel with the digit (learnpytorch.io's
    # TinyVGG for 28 x 28 images does the same).
    padding: int = settings.CNN_PADDING

    def __post_init__(self) -> None:
        try:  # whole numbers only: channels=10.5 would pass a range check, then fail in Conv2d
            object.__setattr__(self, "channels", operator.index(self.channels))  # plain int for JSON
            object.__setattr__(self, "padding", operator.index(self.padding))
        except TypeError:
            raise InvalidConfig(
                f"Channels and padding must be whole numbers, got {self.channels!r} and {self.padding!r}."
            ) from None
        low, high = settings.CHANNELS_RANGE
        if not low <= int(self.channels) <= high:
            raise InvalidConfig(f"Channels must be from {low} to {high}, got {self.channels}.")
        if int(self.padding) not in settings.PADDINGS:
            raise InvalidConfig(f"Padding must be {' or '.join(map(str, settings.PADDINGS))}, got {self.padding}.")

    def spec(self) -> ModelSpec:
        """2 x [conv3x3 -> relu -> conv3x3 -> relu -> maxpool2] -> flatten -> linear(10), as layers.
        Shapes for the default padding 1 and 10 channels: (10, 28, 28) -> pool (10, 14, 14)
        -> pool (10, 7, 7) -> flatten (490,) -> (10,)."""
        conv = Layer("Conv2d", out=self.channels, kernel=3, padding=self.padding)
        block = (conv, Layer("ReLU"), conv, Layer("ReLU"), Layer("MaxPool2d", kernel=2, stride=0))  # stride 0: the window
        layers = (*block, *block, Layer("Flatten"), Layer("Linear", out=NUM_CLASSES))
        return ModelSpec(layers, max_params=_PRESET_MAX_PARAMS)


# ModelSpec (digitrec.layers): any other stack of layers, e.g. a learner's imported model.
ModelConfig = Union[FCConfig, TinyVGGConfig, ModelSpec]

# No hidden layer: one weighted sum per class (softmax regression), the bottom of the
# course's accuracy ladder (weights/linear.safetensors). Not a lesson network, so not in PRESETS.
LINEAR = FCConfig(hidden=())


def preset_config(preset: settings.Preset) -> ModelConfig:
    """The model configuration of one of ``digitrec.config.PRESETS``."""
    if preset.architecture == FCConfig.architecture:
        return FCConfig(hidden=preset.hidden)
    return TinyVGGConfig(channels=preset.channels)


# "fc": 784-16-16-10 (3Blue1Brown's), "fc-wide": 784-128-64-10 (about 98 %), "cnn": TinyVGG.
PRESETS: dict[str, ModelConfig] = {name: preset_config(p) for name, p in settings.PRESETS.items()}


class FCNet(SpecNet):
    """FCNet is the SpecNet of ``FCConfig.spec()``; the class keeps the preset's configuration
    (what its checkpoints store) and lets a page say "an FCNet"."""

    def __init__(self, config: FCConfig = FCConfig()) -> None:
        super().__init__(config.spec())
        self.config = config


class TinyVGG(SpecNet):
    """TinyVGG is the SpecNet of ``TinyVGGConfig.spec()``: children conv_1_1, relu_1_1, conv_1_2,
    relu_1_2, max_pool_1, conv_2_1, ..., max_pool_2, flatten, output."""

    def __init__(self, config: TinyVGGConfig = TinyVGGConfig()) -> None:
        super().__init__(config.spec())
        self.config = config


def spec_of(config: ModelConfig) -> ModelSpec:
    """The layer specification of any model configuration (a preset's, or a spec itself)."""
    return config if isinstance(config, ModelSpec) else config.spec()


def build(config: ModelConfig, seed: int | None = None) -> nn.Module:
    """A fresh model for ``config``; ``seed`` makes its initial weights reproducible."""
    if seed is not None:
        torch.manual_seed(seed)
    if isinstance(config, FCConfig):
        return FCNet(config)
    if isinstance(config, TinyVGGConfig):
        return TinyVGG(config)
    if isinstance(config, ModelSpec):
        return SpecNet(config)
    raise InvalidConfig(f"Unknown model configuration {config!r}.")


def config_to_dict(config: ModelConfig) -> dict:
    """The configuration as plain JSON-able values, with its architecture name."""
    if isinstance(config, ModelSpec):
        return config.to_dict()
    d = dataclasses.asdict(config)
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    if d.get("activation") == "relu":  # the default: left out, so a ReLU network's checkpoint reads as before
        del d["activation"]
    return {"architecture": config.architecture, **d}


def config_from_dict(d: dict) -> ModelConfig:
    """Inverse of ``config_to_dict``; raises InvalidConfig for anything unknown."""
    d = dict(d)
    arch = d.pop("architecture", None)
    if arch == ModelSpec.architecture:
        return ModelSpec.from_dict(d)
    classes = {FCConfig.architecture: FCConfig, TinyVGGConfig.architecture: TinyVGGConfig}
    if arch not in classes:
        raise InvalidConfig(f"Unknown architecture {arch!r}; expected one of {sorted(classes)}.")
    cls = classes[arch]
    names = {f.name for f in dataclasses.fields(cls)}
    if set(d) - names:
        raise InvalidConfig(f"Unknown {arch} settings: {sorted(set(d) - names)}.")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise InvalidConfig(f"Bad {arch} settings {d}: {e}") from e


def display_name(config: ModelConfig) -> str:
    """A short human name: 'FCNet 784-16-16-10' or 'TinyVGG (10 channels)'."""
    if isinstance(config, ModelSpec):
        return config.name or config.text()
    if isinstance(config, FCConfig):
        name = "FCNet " + "-".join(str(w) for w in (IMAGE_SIZE * IMAGE_SIZE, *config.hidden, NUM_CLASSES))
        return name + (" (no activation)" if config.activation == "none" else "")
    return f"TinyVGG ({config.channels} channels)"


@dataclass(frozen=True)
class LayerInfo:
    name: str  # the module's name, e.g. "conv_1_1"
    kind: str  # "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"
    output_shape: tuple[int, ...]  # for one digit, without the batch dimension
    params: int  # trainable parameters of this layer
    macs: int  # multiply-adds for one digit's forward pass


def describe(model: nn.Module) -> list[LayerInfo]:
    """Each layer of ``model`` in forward order, measured on one 1 x 28 x 28 input.

    Shapes come from running the model; multiply-adds are counted from those
    shapes: a Linear layer does in x out, a convolution does, per output value,
    in_channels x kernel_h x kernel_w. ReLU, pooling and flatten multiply nothing.
    """
    from digitrec.inspection import capture_activations

    x = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    acts = capture_activations(model, x)
    modules = dict(model.named_children())
    rows = []
    for name, out in acts.items():
        m = modules[name]
        shape = tuple(out.shape[1:])
        if isinstance(m, nn.Linear):
            macs = m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs = out.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            macs = 0
        params = sum(p.numel() for p in m.parameters())
        rows.append(LayerInfo(name, type(m).__name__, shape, params, macs))
    return rows


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module) -> int:
    """Multiply-adds of one digit's forward pass."""
    return sum(row.macs for row in describe(model))
