"""Scale the task: FCNet against TinyVGG on larger, coloured inputs, measured on this machine.

The race trains on 28 x 28 grey digits, where the fully connected network is
cheaper per digit. Learners read that on larger colour images the fully
connected network becomes infeasible and the CNN faster; ``measure`` lets them
test it. For each input size (28, 32, 64, 128 px) and 1 or 3 channels it builds
both networks with the app's shapes (FCNet 784-128-64-10's hidden widths,
TinyVGG with 10 channels, padding 1, two 2 x 2 poolings), on synthetic images
of that size (timing needs no dataset), and reports:

- parameters, counted on the built model;
- multiply-adds per image, counted from each layer's shapes (as ``models.describe``);
- training memory for a batch of ``BATCH`` images: every layer's output kept for
  the backward pass (x 3 for its gradient and temporaries, as
  ``spec.training_memory_bytes``), plus 4 floats per weight (the weight, its
  gradient, Adam's two moments);
- seconds per 1,000 images of training (Adam steps on random images), timed here.

``explain`` writes the conclusion from these numbers, including when the claim
does not hold on this machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from digitrec import config

SIZES = (28, 32, 64, 128)
CHANNELS = (1, 3)
FC_HIDDEN = config.PRESETS["fc-wide"].hidden  # (128, 64): the race's wide FCNet
CNN_CHANNELS = config.CNN_CHANNELS
BATCH = 128  # the training batch the memory is estimated for (the app's default)
TIMING_BATCH = 16  # images per timed step (small: the page measures while a learner waits)
TIMING_STEPS = 2


def network_name(network: str) -> str:
    """What the panel calls "fc" and "cnn": FCNet with its hidden widths (its input grows with the
    image, so no 784 in the name: it is not the race's FCNet), TinyVGG with its channels."""
    if network == "fc":
        return f"FCNet, hidden {'-'.join(str(width) for width in FC_HIDDEN)}"
    return f"TinyVGG, {CNN_CHANNELS} channels"


def fc_net(size: int, channels: int, hidden: Sequence[int] = FC_HIDDEN) -> nn.Module:
    """FCNet for size x size x channels inputs: every pixel of every channel feeds each first-layer neuron."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = size * size * channels
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def cnn_net(size: int, channels: int, maps: int = CNN_CHANNELS) -> nn.Module:
    """TinyVGG for size x size x channels inputs: two blocks of two 3x3 convolutions and a 2x2 pooling."""
    def conv(cin: int) -> nn.Conv2d:
        return nn.Conv2d(cin, maps, 3, padding=config.CNN_PADDING)

    return nn.Sequential(
        conv(channels), nn.ReLU(), conv(maps), nn.ReLU(), nn.MaxPool2d(2),
        conv(maps), nn.ReLU(), conv(maps), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(maps * (size // 4) ** 2, 10),
    )


@dataclass(frozen=True)
class ScaleRow:
    network: str  # "fc" or "cnn"
    size: int  # pixels per side
    channels: int
    params: int
    macs: int  # multiply-adds per image, forward
    memory_bytes: int  # training a batch of BATCH images (estimate)
    seconds_per_1000: float  # training, measured here

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= config.MEMORY_BUDGET_BYTES


def count(model: nn.Module, size: int, channels: int) -> tuple[int, int, int]:
    """(parameters, multiply-adds per image, floats of layer outputs per image) from the layers' shapes."""
    macs = floats = 0
    x = torch.zeros(1, channels, size, size)
    for layer in model:
        x = layer(x)
        floats += x.numel()
        if isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features
        elif isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            macs += x.numel() * layer.in_channels * kh * kw
    return sum(p.numel() for p in model.parameters()), macs, floats


def memory_bytes(params: int, floats_per_image: int, batch: int = BATCH) -> int:
    return batch * floats_per_image * 4 * 3 + params * 4 * 4


def seconds_per_1000(model: nn.Module, size: int, channels: int, steps: int = TIMING_STEPS,
                     batch: int = TIMING_BATCH) -> float:
    """Training seconds per 1,000 images: Adam steps on random images (one untimed warm-up step)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.LR)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / (steps * batch) * 1000


def measure(channels: int = 1, sizes: Sequence[int] = SIZES, steps: int = TIMING_STEPS) -> list[ScaleRow]:
    """Both networks at each size: counted, estimated and timed now. A network that would not fit
    the memory budget is not built or timed (seconds nan)."""
    rows = []
    torch.manual_seed(0)
    for size in sizes:
        for name, build in (("fc", fc_net), ("cnn", cnn_net)):
            with torch.device("meta"):  # shapes only, no memory: a too-large network is never allocated
                shapes = build(size, channels)
            params, macs, floats = _meta_count(shapes, size, channels)
            need = memory_bytes(params, floats)
            seconds = math.nan
            if need <= config.MEMORY_BUDGET_BYTES:
                seconds = seconds_per_1000(build(size, channels), size, channels, steps)
            rows.append(ScaleRow(name, size, channels, params, macs, need, seconds))
    return rows


def measure_alone(channels: int, threads: int) -> list[ScaleRow]:
    """``measure`` in a process of its own, with the torch threads a training worker gets: the app
    runs it there so a learner's page (and everyone else's) never waits on the timing loops."""
    torch.set_num_threads(threads)
    return measure(channels)


def _meta_count(model: nn.Module, size: int, channels: int) -> tuple[int, int, int]:
    with torch.device("meta"):
        return count(model, size, channels)


def fc_limit_size(channels: int, hidden: Sequence[int] = FC_HIDDEN) -> int:
    """The smallest square input (pixels per side) at which FCNet would pass the memory budget."""
    size = 28
    while True:
        with torch.device("meta"):
            params, _, floats = count(fc_net(size, channels, hidden), size, channels)
        if memory_bytes(params, floats) > config.MEMORY_BUDGET_BYTES:
            return size
        size += max(1, size // 16)


@dataclass(frozen=True)
class ScaleExplanation:
    overtakes_at: int | None  # the smallest size where the CNN trained faster per image, if any
    fc_too_big_at: int | None  # the smallest measured size where FCNet did not fit the budget, if any
    text: str


def explain(rows: Sequence[ScaleRow]) -> ScaleExplanation:
    """What these measurements say about "on bigger images the CNN wins", in sentences with their numbers."""
    fc = {r.size: r for r in rows if r.network == "fc"}
    cnn = {r.size: r for r in rows if r.network == "cnn"}
    sizes = sorted(fc)
    small, large = sizes[0], sizes[-1]
    channels = rows[0].channels
    budget = config.MEMORY_BUDGET_BYTES / 2**30
    too_big = next((s for s in sizes if not fc[s].fits), None)
    overtakes = next((s for s in sizes if math.isfinite(cnn[s].seconds_per_1000)
                      and (not fc[s].fits or cnn[s].seconds_per_1000 < fc[s].seconds_per_1000)), None)

    grow_fc = fc[large].params / fc[small].params
    grow_cnn = cnn[large].params / cnn[small].params
    text = [
        f"**Weights.** From {small} to {large} px ({channels} channel{'s' if channels > 1 else ''}), FCNet's "
        f"weights grow {grow_fc:,.0f}× ({fc[small].params:,} → {fc[large].params:,}): each first-layer neuron "
        f"has one weight per pixel and channel. TinyVGG's grow {grow_cnn:,.1f}× ({cnn[small].params:,} → "
        f"{cnn[large].params:,}): a 3×3 filter stays 9 weights per channel at any size; only its last layer "
        "grows with the image."
    ]
    if too_big is not None:
        text.append(f"**Memory.** At {too_big} px FCNet needs {fc[too_big].memory_bytes / 2**30:,.1f} GiB to train "
                    f"a batch of {BATCH}, more than this server's {budget:.0f} GiB budget: it cannot train here at all.")
    else:
        limit = fc_limit_size(channels)
        text.append(
            f"**Memory.** Every size here fits the {budget:.0f} GiB budget: FCNet needs "
            f"{fc[large].memory_bytes / 2**20:,.0f} MiB at {large} px, TinyVGG {cnn[large].memory_bytes / 2**20:,.0f} MiB "
            f"(its feature maps, kept for the backward pass, are what grow). With these hidden widths FCNet would "
            f"pass the budget at about {limit} × {limit} px."
        )
    macs_small = cnn[small].macs / fc[small].macs
    macs_large = cnn[large].macs / fc[large].macs
    text.append(
        f"**Arithmetic per image.** TinyVGG does {macs_small:,.1f}× FCNet's multiply-adds at {small} px and "
        f"{macs_large:,.1f}× at {large} px: both grow with the number of pixels, so the ratio barely moves."
    )
    timed = [s for s in sizes if fc[s].fits and math.isfinite(cnn[s].seconds_per_1000)]
    if overtakes is not None and fc[overtakes].fits:
        text.append(f"**Speed.** On this machine TinyVGG trained faster per image from {overtakes} px on "
                    f"({cnn[overtakes].seconds_per_1000:.2f} s against {fc[overtakes].seconds_per_1000:.2f} s per "
                    "1,000 images).")
    elif overtakes is not None:
        text.append(f"**Speed.** From {overtakes} px only TinyVGG can train here at all.")
    elif timed:
        slow = [cnn[s].seconds_per_1000 / fc[s].seconds_per_1000 for s in timed]
        text.append(
            f"**Speed.** Here the claim does not hold: TinyVGG was slower per image at every size "
            f"({min(slow):,.1f}× to {max(slow):,.1f}× FCNet's seconds per 1,000 images). With hidden widths that stay "
            "the same, a fully connected network's arithmetic grows no faster than a CNN's; it becomes infeasible "
            "when its first layer must be wide enough to keep what the image holds, or its weights outgrow memory, "
            "as they would past the size above. What the CNN keeps winning here is weights."
        )
    return ScaleExplanation(overtakes, too_big, "\n\n".join(text))
