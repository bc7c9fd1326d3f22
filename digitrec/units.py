"""A unit's biography: what one hidden neuron of FCNet or one feature map of TinyVGG responds to.

A *unit* is one output of a Linear layer (a neuron) or one output channel of a
convolution (a feature map), named by its layer and index: ``Unit("fc_1", 3)``,
``Unit("conv_2_1", 7)``. The ReLU and pooling layers after it carry the same
unit (channel 7 of ``relu_2_1`` is map 7 of ``conv_2_1`` with its negatives
cut off), so a unit is always named by the layer that computes it.

Its biography, as Distill's "Feature Visualization" pairs them:

- the test digits that excite it most (for a map: the digits whose strongest
  cell is highest, and the input patch that cell sees);
- how often it fires, and whether it is **dead** (never positive on any of the
  10,000 test digits, so ReLU always outputs 0 and nothing downstream ever
  hears from it);
- its receptive field: the input pixels one of its cells can see;
- an activation-maximising input: the picture gradient ascent paints for it;
- its pull on each of the ten scores.

``statistics`` does the one expensive pass (every test digit through the
model once, batched); everything else reads from its result.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from digitrec.data import IMAGE_SIZE, DigitSet
from digitrec.inspection import convolves, eval_mode, forward_hooks

TOP_K = 9  # Distill shows a 3 x 3 grid of dataset examples per unit
BATCH = 500  # digits per forward pass: with two busy threads as fast as 1,000, with one 1.4x faster (cache-sized maps)
PULL_DIGITS = 1000  # test digits the knock-out pull is averaged over (TinyVGG: about 0.3 s)


@dataclass(frozen=True)
class Unit:
    layer: str  # the Linear or Conv2d layer that computes it, e.g. "fc_1", "conv_2_1"
    index: int  # neuron or output channel


def unit_layers(model: nn.Module) -> list[str]:
    """The layers whose outputs are units: every Linear and Conv2d except the output layer."""
    names = [n for n, m in model.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return names[:-1]  # the last one gives the ten scores: those are classes, not hidden units


def unit_count(model: nn.Module, layer: str) -> int:
    m = dict(model.named_children())[layer]
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def owning_layer(model: nn.Module, layer: str) -> str | None:
    """The unit layer behind ``layer``: itself, or the nearest Linear/Conv2d before a ReLU or pooling layer."""
    names = [n for n, _ in model.named_children()]
    units = set(unit_layers(model))
    if layer not in names:
        return None
    for name in reversed(names[: names.index(layer) + 1]):
        if name in units:
            return name
        if not isinstance(dict(model.named_children())[name], (nn.ReLU, nn.MaxPool2d)):
            return None  # a flatten or the output: no single unit behind it
    return None


def clamp_unit(model: nn.Module, layer: str | None, index: int) -> tuple[Unit, bool]:
    """The unit nearest to (layer, index) that exists, and whether anything had to change (a URL's bad values)."""
    layers = unit_layers(model)
    owner = owning_layer(model, layer) if layer else None
    chosen = owner or layers[0]
    top = unit_count(model, chosen) - 1
    clamped = min(max(int(index), 0), top)
    return Unit(chosen, clamped), (owner is None or clamped != index)


# ---------------------------------------------------------------- the one pass over the test set


@dataclass(frozen=True)
class LayerStats:
    """One unit layer over N digits, measured where its ReLU reads it (through a batch norm, if one sits between).

    peak: (N, U) each digit's strongest value of each unit, before ReLU (a
    neuron's value; a map's largest cell). cell: (N, U) flat index of that cell
    (0 for neurons). positive: (U,) fraction of digits on which the unit is
    positive somewhere. cells_positive: (U,) float64, the share of all its values
    (every cell of every digit) that are positive (equals ``positive`` for
    neurons). shape: (H, W) of a map, () for neurons. relu: the ReLU layer that
    reads the unit (None when none does), whose zeros are exactly the values
    that are not positive here.
    """

    peak: torch.Tensor
    cell: torch.Tensor
    positive: torch.Tensor
    cells_positive: torch.Tensor
    shape: tuple[int, ...]
    relu: str | None = None


# Layers that pass a unit on to its ReLU one value per value: the ReLU's input is still that unit.
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Identity)


def _reading_relu(model: nn.Module, layer: str) -> str | None:
    """The ReLU right after ``layer`` (past a batch norm or dropout), or None."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    for name, module in children[names.index(layer) + 1 :]:
        if isinstance(module, nn.ReLU):
            return name
        if not isinstance(module, _PASS_THROUGH):
            return None
    return None


def statistics(model: nn.Module, digits: DigitSet, batch: int = BATCH) -> dict[str, LayerStats]:
    """Every unit layer's statistics over ``digits``, in one batched pass on a private copy.

    The one pass over the test set for both what a unit likes (top digits) and
    which ReLU units are dead (``relu_statistics``, the CNN overview's marks, the
    lessons' numbers). Each unit is read where its ReLU reads it: the ReLU's
    input, or the layer's own output when no ReLU follows.
    """
    model = copy.deepcopy(model)  # hooks and eval mode never touch the caller's (possibly shared) model
    # Channels-last: oneDNN's convolutions ran 1.5-2x as fast on these few-channel maps here, and each
    # map's cells then sit channel-innermost, so the per-unit reductions below read them without a copy.
    has_convolutions = convolves(model)
    if has_convolutions:
        model = model.to(memory_format=torch.channels_last)
    layers = unit_layers(model)
    relus = {name: _reading_relu(model, name) for name in layers}
    peaks: dict[str, list] = {n: [] for n in layers}
    cells: dict[str, list] = {n: [] for n in layers}
    positive_values: dict[str, torch.Tensor] = {}  # (U,) int64: values above 0 so far
    shapes: dict[str, tuple[int, ...]] = {}
    hooked = [relus[n] or n for n in layers]
    with eval_mode(model), torch.inference_mode(), forward_hooks(model, hooked) as records:
        for start in range(0, len(digits), batch):
            x = digits.images[start : start + batch].unsqueeze(1).float() / 255.0  # (B, 1, 28, 28)
            model(x.contiguous(memory_format=torch.channels_last) if has_convolutions else x)
            for name in layers:
                relu = relus[name]
                out = records[relu][0] if relu else records[name][1]  # (B, U) or (B, U, H, W), before ReLU
                shapes[name] = tuple(out.shape[2:])
                # (B, cells, U): a view of a channels-last map (cell index = row * W + col), a neuron's value as one cell
                flat = out.permute(0, 2, 3, 1).reshape(out.shape[0], -1, out.shape[1]) if out.dim() == 4 else out.unsqueeze(1)
                peak, cell = flat.max(dim=1)  # (B, U)
                peaks[name].append(peak)
                cells[name].append(cell)
                # Counted as float32 down one dimension (exact: a batch has far fewer than 2**24 values per unit):
                # twice as fast as an integer sum over two, whose int64 copy of the bool tensor took a sixth of the pass.
                counted = (flat > 0).reshape(-1, flat.shape[2]).float().sum(dim=0).long()  # (U,)
                positive_values[name] = positive_values.get(name, 0) + counted
    n = len(digits)
    result = {}
    for name in layers:
        peak = torch.cat(peaks[name])
        values = n * max(1, math.prod(shapes[name]))  # per unit: cells x digits
        result[name] = LayerStats(
            peak=peak, cell=torch.cat(cells[name]), positive=(peak > 0).float().mean(dim=0),
            cells_positive=positive_values[name].double() / values, shape=shapes[name], relu=relus[name],
        )
    return result


def dead_units(stats: dict[str, LayerStats]) -> dict[str, list[int]]:
    """Per layer, the units never positive on any of the digits ``stats`` was computed over."""
    return {name: [int(u) for u in torch.nonzero(s.peak.max(dim=0).values <= 0).flatten()] for name, s in stats.items()}


@dataclass(frozen=True)
class ReluStats:
    """How a ReLU layer behaves over many digits.

    A unit is a feature map (a conv layer's channel) or a neuron (a Linear layer's
    output). A *dead* unit is 0 at every position for every digit measured: its
    weighted sums never climb above zero, so nothing after it ever hears from it.
    """

    layer: str
    units: int
    zero_fraction: float  # share of all values (every unit, position and digit) that are exactly 0
    dead: tuple[int, ...]  # units that were 0 everywhere on every digit
    unit_zero_fraction: tuple[float, ...]  # per unit: share of its values that are 0


def relu_statistics(stats: dict[str, LayerStats]) -> dict[str, ReluStats]:
    """Zero fraction and dead units of every ReLU layer that reads a unit layer, from ``statistics``' one pass.

    ReLU(x) is 0 exactly where x is not positive, so its zeros are the unit's values that are not positive.
    Returns ReLU layer name -> ReluStats, in forward order.
    """
    dead = dead_units(stats)
    out = {}
    for name, s in stats.items():
        if s.relu is None:
            continue
        zeros = 1.0 - s.cells_positive  # (U,) float64
        out[s.relu] = ReluStats(layer=s.relu, units=len(zeros), zero_fraction=float(zeros.mean()),
                                dead=tuple(dead[name]), unit_zero_fraction=tuple(float(z) for z in zeros))
    return out


def top_digits(stats: dict[str, LayerStats], unit: Unit, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values): the k digits with the unit's highest peak, highest first."""
    values, indices = stats[unit.layer].peak[:, unit.index].topk(k)
    return indices, values


# ---------------------------------------------------------------- receptive fields


def _geometry(module: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of a layer that slides a window; (1, 1, 0) for cell-wise layers; None otherwise."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        pick = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731 (square windows only here)
        stride = module.stride if module.stride is not None else module.kernel_size
        return pick(module.kernel_size), pick(stride), pick(module.padding)
    if isinstance(module, nn.ReLU):
        return 1, 1, 0
    return None


def receptive_field_size(model: nn.Module, layer: str) -> int:
    """Side in input pixels of what one cell of ``layer`` sees (ignoring the image border).

    The textbook recurrence, layer by layer from the input: r grows by
    (kernel - 1) x jump, and jump (input pixels between neighbouring cells)
    multiplies by the stride. r = 1, jump = 1 at the input.
    """
    r, jump = 1, 1
    for name, m in model.named_children():
        geometry = _geometry(m)
        if geometry is None:
            raise ValueError(f"{layer} is not a spatial layer of {type(model).__name__}")
        k, s, _ = geometry
        r, jump = r + (k - 1) * jump, jump * s
        if name == layer:
            return r
    raise KeyError(f"{type(model).__name__} has no layer {layer!r}")


def receptive_field(model: nn.Module, layer: str, row: int, col: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), inclusive, of the input pixels cell (row, col) of ``layer`` sees.

    Walked back from the cell: output cell i of a window layer reads input cells
    i*stride - padding to i*stride - padding + kernel - 1. The result may reach
    outside the 28 x 28 image (into the zero padding); ``cut_patch`` pads it.
    """
    chain = []
    for name, m in model.named_children():
        chain.append(_geometry(m))
        if name == layer:
            break
    else:
        raise KeyError(f"{type(model).__name__} has no layer {layer!r}")
    top, left, bottom, right = row, col, row, col
    for geometry in reversed(chain):
        k, s, p = geometry
        top, left = top * s - p, left * s - p
        bottom, right = bottom * s - p + k - 1, right * s - p + k - 1
    return top, left, bottom, right


def cut_patch(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The (h, w) part of a (28, 28) image inside ``box``, zeros where the box leaves the image."""
    top, left, bottom, right = box
    pad = max(0, -top, -left, bottom - (IMAGE_SIZE - 1), right - (IMAGE_SIZE - 1))
    padded = F.pad(image, (pad, pad, pad, pad))
    return padded[top + pad : bottom + pad + 1, left + pad : right + pad + 1]


# ---------------------------------------------------------------- the biography


@dataclass(frozen=True)
class Biography:
    """Everything the panel shows that comes from the statistics pass.

    top_indices, top_values: (k,) the test digits exciting the unit most and
    their peak values. top_cells: for a map, the (row, col) of each digit's
    strongest cell, and patches: (k, r, r) the input each of those cells sees;
    None for neurons, which see the whole image.
    """

    unit: Unit
    kind: str  # "neuron" or "feature map"
    top_indices: torch.Tensor
    top_values: torch.Tensor
    top_cells: list[tuple[int, int]] | None
    patches: torch.Tensor | None
    boxes: list[tuple[int, int, int, int]] | None
    fires: float  # fraction of digits on which it is positive (somewhere, for a map)
    cells_positive: float  # mean fraction of its cells that are positive
    dead: bool
    receptive_field: int  # side in input pixels; 28 for a neuron (it sees every pixel)
    map_shape: tuple[int, ...]


def biography(model: nn.Module, stats: dict[str, LayerStats], digits: DigitSet, unit: Unit, k: int = TOP_K) -> Biography:
    """The unit's biography from precomputed ``statistics`` of ``digits`` (a few milliseconds)."""
    s = stats[unit.layer]
    indices, values = top_digits(stats, unit, k)
    is_map = len(s.shape) == 2
    cells = patches = boxes = None
    if is_map:
        width = s.shape[1]
        cells = [(int(c) // width, int(c) % width) for c in s.cell[indices, unit.index]]
        boxes = [receptive_field(model, unit.layer, r, c) for r, c in cells]
        patches = torch.stack([cut_patch(digits.images[i].float() / 255.0, b) for i, b in zip(indices.tolist(), boxes)])
    return Biography(
        unit=unit, kind="feature map" if is_map else "neuron", top_indices=indices, top_values=values,
        top_cells=cells, patches=patches, boxes=boxes, fires=float(s.positive[unit.index]),
        cells_positive=float(s.cells_positive[unit.index]), dead=bool(s.peak[:, unit.index].max() <= 0),
        receptive_field=receptive_field_size(model, unit.layer) if is_map else IMAGE_SIZE,
        map_shape=s.shape,
    )


# ---------------------------------------------------------------- which unit to show: the quietest, the clearest

PICKS = ("quietest", "clearest")  # what a lesson may ask ``pick_unit`` for


def top_inputs(bio: Biography, digits: DigitSet) -> torch.Tensor:
    """(k, h, w) what the unit's top digits showed it: a map's patches under its strongest cell, a neuron's whole digits."""
    return bio.patches if bio.patches is not None else digits.images[bio.top_indices].float() / 255.0


def agreement(inputs: torch.Tensor) -> float:
    """Mean pairwise correlation of (k, h, w) inputs: near 1 when they look alike, near 0 when unrelated.

    A unit whose top inputs agree can be named from them ("a loop on top"); a blank input counts as unrelated.
    """
    flat = inputs.flatten(1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = flat.shape[0]
    corr = flat @ flat.T  # (k, k)
    return float((corr.sum() - corr.diagonal().sum()) / (k * (k - 1)))


def pick_unit(model: nn.Module, stats: dict[str, LayerStats], digits: DigitSet, how: str, layer: str = "") -> Unit:
    """The unit of ``layer`` (every unit layer when empty) that fires least ("quietest": on the fewest digits, then
    the lowest strongest value, so a dead unit comes first) or whose top inputs agree most ("clearest", among
    units that fire at all)."""
    layers = [layer] if layer else list(stats)
    candidates = [Unit(name, u) for name in layers for u in range(stats[name].peak.shape[1])]
    if how == "quietest":
        return min(candidates, key=lambda u: (float(stats[u.layer].positive[u.index]),
                                              float(stats[u.layer].peak[:, u.index].max())))
    if how == "clearest":
        live = [u for u in candidates if float(stats[u.layer].positive[u.index]) > 0] or candidates
        return max(live, key=lambda u: agreement(top_inputs(biography(model, stats, digits, u), digits)))
    raise ValueError(f"pick must be one of {PICKS}, got {how!r}")


# ---------------------------------------------------------------- what it reads: its incoming weights


def incoming_weights(model: nn.Module, unit: Unit) -> torch.Tensor:
    """A copy of the weights that make the unit: (in,) for a neuron (784 for fc_1: one per pixel), (I, k, k) for a map."""
    module = dict(model.named_children())[unit.layer]
    return module.weight.detach()[unit.index].cpu().clone()


# ---------------------------------------------------------------- what it is for: pull on the scores


def pull(model: nn.Module, digits: DigitSet, unit: Unit, n: int = PULL_DIGITS) -> torch.Tensor:
    """(10,) how much each score drops, on average over the first ``n`` digits, when the unit is switched off.

    Switching off = the unit's output replaced by 0 (for a map, every cell),
    everything downstream recomputed. Positive: the unit pushes that score up.
    For a neuron of FCNet's last hidden layer this is exactly its output weight
    times its mean ReLU output; deeper in, it also counts every path through
    the layers in between.
    """
    model = copy.deepcopy(model)
    x = digits.images[:n].unsqueeze(1).float() / 255.0
    module = dict(model.named_children())[unit.layer]

    def knock_out(mod, inputs, output):
        output = output.clone()
        output[:, unit.index] = 0
        return output

    with eval_mode(model), torch.inference_mode():
        before = model(x)
        handle = module.register_forward_hook(knock_out)
        try:
            after = model(x)
        finally:
            handle.remove()
    return (before - after).mean(dim=0)


# ---------------------------------------------------------------- what excites it: activation maximisation

MAX_STEPS = 80
MAX_LR = 0.08
JITTER = 2  # px: the picture is shifted at random each step so it cannot rely on single pixels
BLUR_EVERY = 4  # steps between blurs: high frequencies a network never saw are smoothed away
LEAK = 0.1  # weight of the plain mean in a map's objective
START_GREY = 0.5  # a blank mid-grey start: from black, pixels the gradient wants darker are stuck at 0


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).reshape(1, 1, 3, 3)
    return F.conv2d(x, kernel, padding=1)


def maximising_input(model: nn.Module, unit: Unit, steps: int = MAX_STEPS, seed: int = 0) -> torch.Tensor:
    """(28, 28) in [0, 1]: the picture gradient ascent finds that drives the unit highest.

    Starts from a blank mid-grey image and climbs the unit's value before ReLU
    (for a map: the mean of its positive cells, plus a little of the mean of all) with Adam, shifting the picture
    by up to ``JITTER`` pixels each step and blurring it every ``BLUR_EVERY``
    steps (the two regularisers of Distill's feature visualisation), keeping
    pixels in [0, 1] like ink. Runs on a private copy with frozen weights.
    """
    generator = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    image = torch.full((1, 1, IMAGE_SIZE, IMAGE_SIZE), START_GREY, requires_grad=True)  # (1, 1, 28, 28)
    optimiser = torch.optim.Adam([image], lr=MAX_LR)
    names = [n for n, _ in model.named_children()]
    upto = names[: names.index(unit.layer) + 1]  # only the layers up to the unit: the rest is not needed
    for step in range(steps):
        dy, dx = (int(v) for v in torch.randint(-JITTER, JITTER + 1, (2,), generator=generator))
        h = torch.roll(image, shifts=(dy, dx), dims=(2, 3))
        for name in upto:
            h = getattr(model, name)(h)  # ends as (1, U) or (1, U, H, W)
        out = h[0, unit.index]
        # A map: the mean of its positive part rewards the pattern wherever it appears (a texture), where the
        # plain mean of a linear first layer only rewards uniform grey; a little of the plain mean keeps a
        # gradient when no cell is positive yet.
        value = out.clamp(min=0).mean() + LEAK * out.mean() if out.dim() == 2 else out
        optimiser.zero_grad()
        (-value).backward()
        optimiser.step()
        with torch.no_grad():
            if (step + 1) % BLUR_EVERY == 0:
                image.copy_(_blur(image))
            image.clamp_(0, 1)
    return image.detach()[0, 0]


def unit_value(model: nn.Module, unit: Unit, x: torch.Tensor) -> torch.Tensor:
    """(B,) the unit's mean value before ReLU for inputs x (B, 1, 28, 28): what ``maximising_input`` climbs."""
    model = copy.deepcopy(model)
    with eval_mode(model), torch.inference_mode(), forward_hooks(model, [unit.layer]) as records:
        model(x)
    out = records[unit.layer][1][:, unit.index]
    return out.flatten(1).mean(dim=1) if out.dim() == 3 else out
