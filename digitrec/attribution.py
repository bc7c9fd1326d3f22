"""Which pixels made the model say "7"? Captum's attribution methods behind one function.

``attribute(model, x, target, method)`` returns an ``Attribution`` whose
``values`` have the shape of the input (Captum's vocabulary): one number per
pixel, positive where the pixel pushed the target logit up.

Every method runs on a private copy of the model (``copy.deepcopy``, eval
mode, hooks cleared, parameters frozen). The app shares one cached model
between users, and Captum registers hooks (DeepLift, Grad-CAM), sets
``requires_grad`` on inputs and runs backward passes; on the copy none of that
can leak into the shared model. The models are tiny (at most about 110,000
weights), so copying costs well under a millisecond per call.

``randomized_copy`` gives the "sanity check" of Adebayo et al. (2018): a
saliency method whose map barely changes when the weights are re-initialised
is explaining the image, not the model.
"""

from __future__ import annotations

import math

import copy
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from torch import nn

from digitrec import pooling
from digitrec.data import NUM_CLASSES
from digitrec.errors import DigitrecError
from digitrec.inspection import convolves


class UnsupportedAttribution(DigitrecError, ValueError):
    """An attribution method was asked of a model (or with a setting) it cannot serve.

    Also a ValueError, so code that treats a bad argument as a ValueError
    catches it too.
    """


class MethodInfo(NamedTuple):
    label: str  # human name for menus and figure titles
    explanation: str  # one sentence for a learner
    architectures: tuple[str, ...]  # model architectures it works on ("fcnet", "tinyvgg")


METHODS: dict[str, MethodInfo] = {
    "saliency": MethodInfo(
        "Saliency (gradient)",
        "How much the class score would change if you nudged each pixel a tiny bit: "
        "the size of the gradient of the score with respect to the pixel.",
        ("fcnet", "tinyvgg"),
    ),
    "integrated_gradients": MethodInfo(
        "Integrated Gradients",
        "Fades the digit in from a blank canvas and adds up, pixel by pixel, how much "
        "each one raised the class score along the way; the pixel scores sum to the "
        "score's total change.",
        ("fcnet", "tinyvgg"),
    ),
    "gradient_shap": MethodInfo(
        "GradientSHAP",
        "Like Integrated Gradients, but averaged over random starting canvases "
        "(blank and faintly speckled) and random points on the way, "
        "so no single baseline decides the answer.",
        ("fcnet", "tinyvgg"),
    ),
    "deeplift": MethodInfo(
        "DeepLIFT",
        "Compares every neuron's value on the digit with its value on a blank canvas "
        "and passes those differences back to the pixels, in one backward pass.",
        ("fcnet", "tinyvgg"),
    ),
    "occlusion": MethodInfo(
        "Occlusion",
        "Covers the digit with a small black square, one place at a time, and records "
        "how much the class score drops when each place is hidden.",
        ("fcnet", "tinyvgg"),
    ),
    "grad_cam": MethodInfo(
        "Grad-CAM",
        "Weights the last convolution's feature maps by how much the class score "
        "depends on each, giving a coarse map of where the network looked.",
        ("tinyvgg",),
    ),
}

# What a method's map holds whatever the network learned (read beside the randomised-weights check):
# a map of (gradient-like) x (input - baseline) carries the ink's pattern by construction.
_TIMES_INPUT = ("multiplies a gradient by the input (pixel minus blank canvas), so both maps are zero off the "
                "ink and carry the ink's pattern by construction")
BY_CONSTRUCTION: dict[str, str] = {
    "integrated_gradients": _TIMES_INPUT,
    "deeplift": _TIMES_INPUT,
    "gradient_shap": ("multiplies a gradient by the input (pixel minus baseline), and its baselines include faint "
                      "speckle, so blank pixels get small scores too, while the ink still shapes both maps"),
}


@dataclass(frozen=True)
class Attribution:
    """One attribution map.

    values: same shape as the input x, e.g. (1, 1, 28, 28), float32, detached.
      Units are logit units for Integrated Gradients, GradientSHAP, DeepLIFT
      and Occlusion (their pixel scores add up to a change of the target
      logit); gradient magnitudes for Saliency; relative importance for Grad-CAM.
    delta: the completeness error, in logit units, where the method promises
      completeness: ``sum(values) - (F(x) - F(baseline))`` with F the target
      logit, as Captum computes it (signed).
      Integrated Gradients: error of the n_steps integral approximation.
      DeepLIFT: about 0 on FCNet (summation-to-delta holds for Linear and
      ReLU). On TinyVGG Captum's max-pool rule can leave a remainder: where a
      pooling window's winning pixel is unchanged from the baseline, the
      change of the pooled value routed to it is dropped.
      GradientSHAP: the mean of Captum's per-sample deltas, i.e.
      ``sum(values) - (F(x) - mean_i F(b_i))`` over the drawn baselines b_i:
      the Monte-Carlo error of the estimate, which shrinks with n_samples.
      None for Saliency, Occlusion and Grad-CAM, which promise no such sum.
    """

    method: str  # key in METHODS
    target: int  # the class explained, 0..9
    values: torch.Tensor
    delta: float | None
    label: str  # METHODS[method].label


# Captum's GradientSHAP draws from numpy's and torch's global random
# generators. We seed them for a reproducible map and restore their state
# afterwards; the lock keeps two app sessions from interleaving in between.
_RNG_LOCK = threading.Lock()


def attribute(model: nn.Module, x: torch.Tensor, target: int, method: str, **options: Any) -> Attribution:
    """Attribute ``model``'s logit for class ``target`` on digit ``x`` to its pixels.

    x: (1, 1, 28, 28) float in [0, 1]; it is not modified.
    method: a key of METHODS. Options per method (all optional):
      saliency: abs=True (magnitude of the gradient; False keeps its sign).
      integrated_gradients: n_steps=50, baseline=0.0 (blank canvas).
      gradient_shap: n_samples=20, noisy_baselines=4 (speckled canvases besides
        the blank one), noise=0.1 (their brightest speckle), stdevs=0.0 (noise
        added to the input itself), seed=0.
      deeplift: baseline=0.0.
      occlusion: window=4, stride=2 (pixels), baseline=0.0.
      grad_cam: layer="conv_2_2" (name of a Conv2d child), relu=True (keep only
        the regions that raise the score, as in the Grad-CAM paper).
    Raises UnsupportedAttribution for an unknown method, an unknown option, or
    Grad-CAM on a model without convolution layers (FCNet).
    The model is left exactly as it was: no hooks, no gradients, same mode,
    same requires_grad flags, same weights.
    """
    _check_method(method)
    with _autograd_on():
        return _attribute_with(_private_copy(model), model, x, target, method, options)


def all_classes(model: nn.Module, x: torch.Tensor, method: str, **options: Any) -> list[Attribution]:
    """``attribute`` for each of the ten classes, in class order (for the ten-map grid)."""
    _check_method(method)
    with _autograd_on():
        work = _private_copy(model)  # one copy serves all ten
        return [_attribute_with(work, model, x, t, method, options) for t in range(NUM_CLASSES)]


def randomized_copy(model: nn.Module, seed: int = 0, layers: Iterable[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose weights are re-initialised; ``model`` is untouched.

    Each layer's own ``reset_parameters`` draws the new weights (PyTorch's
    default initialisation) from torch's generator, seeded with ``seed`` inside
    ``fork_rng``, so the same seed gives the same copy.
    The copy carries no hooks and no gradients, and keeps ``model``'s mode. ``layers`` names the children to re-initialise
    (e.g. only "output", then "output" and "conv_2_2", ... for Adebayo et al.'s
    cascading test); None re-initialises all. The global random state is
    restored afterwards.
    """
    names = None if layers is None else set(layers)
    children = dict(model.named_children())
    if names is not None and names - set(children):
        raise UnsupportedAttribution(
            f"{type(model).__name__} has no layer(s) {sorted(names - set(children))}; "
            f"its layers are {list(children)}."
        )
    with torch.inference_mode(False):
        clone = copy.deepcopy(model)
    _clear_hooks(clone)
    for p in clone.parameters():
        p.grad = None
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]), torch.no_grad():
        # Offset so that randomized_copy(models.build(cfg, seed=s), seed=s) is
        # not the very weights build drew: both would run the same
        # initialisers, in the same order, from the same seed.
        torch.manual_seed(_RANDOMIZE_SEED_OFFSET + int(seed))
        for name, child in clone.named_children():  # forward order, so the draw order is fixed
            if names is not None and name not in names:
                continue
            for m in child.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    return clone


_RANDOMIZE_SEED_OFFSET = 2018  # Adebayo et al.'s year: any number far from the usual seeds


def methods_for(model: nn.Module) -> list[str]:
    """Keys of METHODS that work on ``model`` (Grad-CAM needs a convolution layer)."""
    return [k for k in METHODS if k != "grad_cam" or convolves(model)]


# --- internals ---------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise UnsupportedAttribution(
            f"Unknown attribution method {method!r}; choose one of {list(METHODS)}."
        )


@contextmanager
def _autograd_on() -> Iterator[None]:
    """Gradients on, even inside a caller's no_grad or inference_mode.

    Covers the model copy and the input clone too: made in inference mode they
    would be inference tensors, which autograd refuses to differentiate.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _private_copy(model: nn.Module) -> nn.Module:
    """A copy to run Captum on: eval mode, no hooks, frozen parameters, no grads, torch's own pools.

    Hooks are cleared because deepcopy copies them: a capture in progress on
    the shared model (another user's page) would otherwise record our passes.
    Parameters are frozen because attributions need gradients with respect to
    the input only.
    """
    work = copy.deepcopy(model).eval()
    _clear_hooks(work)
    for p in work.parameters():
        p.grad = None
        p.requires_grad_(False)
    # DeepLift applies its max-pool rule to a layer whose class is exactly nn.MaxPool2d, and
    # digitrec's pools are a subclass (digitrec.pooling: faster evaluations): give Captum torch's own.
    return pooling.use_torch_pools(work)


def _clear_hooks(model: nn.Module) -> None:
    """Drop the module hooks a deepcopy brought along (the copy's own dicts only)."""
    for m in model.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
            hooks.clear()


_OPTIONS: dict[str, dict[str, Any]] = {
    "saliency": {"abs": True},
    "integrated_gradients": {"n_steps": 50, "baseline": 0.0},
    "gradient_shap": {"n_samples": 20, "noisy_baselines": 4, "noise": 0.1, "stdevs": 0.0, "seed": 0},
    "deeplift": {"baseline": 0.0},
    "occlusion": {"window": 4, "stride": 2, "baseline": 0.0},
    # The last convolution's maps before its ReLU. Grad-CAM's authors took them after it (VGG's relu5_3), but
    # TinyVGG has only 10 of them, and after the ReLU the weighted sum was below 0 everywhere for 15 of the
    # first 500 test digits (all of them 9s: 15 of 54), so their map was blank; before it, 2 of 500 were.
    "grad_cam": {"layer": "conv_2_2", "relu": True},
}


def _attribute_with(
    work: nn.Module, original: nn.Module, x: torch.Tensor, target: int, method: str, options: dict
) -> Attribution:
    unknown = set(options) - set(_OPTIONS[method])
    if unknown:
        raise UnsupportedAttribution(
            f"{METHODS[method].label} has no option(s) {sorted(unknown)}; "
            f"its options are {sorted(_OPTIONS[method])}."
        )
    opts = {**_OPTIONS[method], **options}
    if x.dim() != 4 or x.shape[0] != 1:
        raise UnsupportedAttribution(
            "Attribution explains one digit at a time: "
            f"expected x of shape (1, C, H, W), got {tuple(x.shape)}."
        )
    target = int(target)
    if not 0 <= target < NUM_CLASSES:
        raise UnsupportedAttribution(f"The target class must be 0 to {NUM_CLASSES - 1}, got {target}.")
    device = next(work.parameters()).device
    # Captum sets requires_grad on the tensor it is given: hand it a private copy.
    inp = x.detach().to(device=device, dtype=torch.float32).clone()
    if method != "occlusion":  # the gradient methods differentiate with respect to it
        inp.requires_grad_(True)
    values, delta = _RUNNERS[method](work, original, inp, target, opts)
    return Attribution(
        method=method,
        target=target,
        values=values.detach().to(torch.float32).reshape(x.shape).clone(),
        delta=None if delta is None else float(delta),
        label=METHODS[method].label,
    )


Runner = Callable[[nn.Module, nn.Module, torch.Tensor, int, dict], "tuple[torch.Tensor, float | None]"]


def _saliency(work, original, x, target, o):
    return Saliency(work).attribute(x, target=target, abs=bool(o["abs"])), None


def _integrated_gradients(work, original, x, target, o):
    baseline = torch.full_like(x, float(o["baseline"]))  # the blank canvas
    values, delta = IntegratedGradients(work).attribute(
        x, baselines=baseline, target=target, n_steps=int(o["n_steps"]), return_convergence_delta=True
    )  # values (1, 1, 28, 28), delta (1,)
    return values, delta.item()


def _gradient_shap(work, original, x, target, o):
    n_noisy = int(o["noisy_baselines"])
    if n_noisy < 0:
        raise UnsupportedAttribution(f"noisy_baselines must be 0 or more, got {n_noisy}.")
    gen = torch.Generator().manual_seed(int(o["seed"]))
    # Baseline distribution: one blank canvas plus faint uniform speckle in [0, noise].
    speckle = torch.rand((n_noisy, *x.shape[1:]), generator=gen) * float(o["noise"])
    baselines = torch.cat([torch.zeros_like(x), speckle.to(x.device)])  # (1 + n_noisy, 1, 28, 28)
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        np_state = np.random.get_state()
        try:
            np.random.seed(int(o["seed"]))  # which baseline each sample uses
            torch.manual_seed(int(o["seed"]))  # input noise when stdevs > 0
            values, deltas = GradientShap(work).attribute(
                x,
                baselines=baselines,
                target=target,
                n_samples=int(o["n_samples"]),
                stdevs=float(o["stdevs"]),
                return_convergence_delta=True,
            )  # values (1, 1, 28, 28), deltas (n_samples,): one per drawn sample
        finally:
            np.random.set_state(np_state)
    return values, deltas.mean().item()


def _deeplift(work, original, x, target, o):
    baseline = torch.full_like(x, float(o["baseline"]))
    with warnings.catch_warnings():
        # Captum warns that it sets hooks; they go on our private copy.
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        values, delta = DeepLift(work).attribute(
            x, baselines=baseline, target=target, return_convergence_delta=True
        )
    return values, delta.item()


def _occlusion(work, original, x, target, o):
    w, s = int(o["window"]), int(o["stride"])
    if not (1 <= w <= min(x.shape[-2:]) and 1 <= s <= w):
        raise UnsupportedAttribution(
            f"Occlusion needs 1 <= window <= {min(x.shape[-2:])} and 1 <= stride <= window, "
            f"got window {w}, stride {s}."
        )
    values = Occlusion(work).attribute(
        x,
        sliding_window_shapes=(x.shape[1], w, w),  # every channel, w x w pixels
        strides=(x.shape[1], s, s),
        baselines=float(o["baseline"]),
        target=target,
        perturbations_per_eval=64,  # 169 windows for 4/2 on 28 x 28: three batched passes
    )
    return values, None


def _grad_cam(work, original, x, target, o):
    convs = [name for name, m in work.named_children() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UnsupportedAttribution(
            f"Grad-CAM needs a convolution layer, and {type(original).__name__} has none: "
            f"choose another method such as Integrated Gradients."
        )
    layer = o["layer"]
    if isinstance(layer, nn.Module):  # a module of the original model: find its name
        names = [n for n, m in original.named_children() if m is layer]
        layer = names[0] if names else None
    if layer not in convs:
        raise UnsupportedAttribution(
            f"Grad-CAM's layer must be one of {type(original).__name__}'s convolution layers {convs}, "
            f"got {o['layer']!r}."
        )
    cam = LayerGradCam(work, getattr(work, layer)).attribute(
        x, target=target, relu_attributions=bool(o["relu"])
    )  # (1, 1, h, w): the layer's own resolution, e.g. 14 x 14 for conv_2_2
    values = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return values.expand_as(x), None  # (1, C, 28, 28): the input's shape


_RUNNERS: dict[str, Runner] = {
    "saliency": _saliency,
    "integrated_gradients": _integrated_gradients,
    "gradient_shap": _gradient_shap,
    "deeplift": _deeplift,
    "occlusion": _occlusion,
    "grad_cam": _grad_cam,
}


def sanity_verdict(rho_whole: float, rho_ink: float) -> tuple[str, str]:
    """Read the randomised-weights check (Adebayo et al. 2018) from two rank correlations of
    |attribution| between the trained and the randomised network: over all pixels and over
    the ink only. Returns (level, sentence), level "depends" / "partly" / "image".

    The verdict rests on the ink: blank pixels get 0 from most methods for both networks,
    which pushes the whole-image correlation towards 1 whatever the model learned.
    """
    basis = rho_ink if not math.isnan(rho_ink) else rho_whole
    note = ""
    if not math.isnan(rho_ink) and rho_whole - rho_ink > 0.2:
        note = (f" (Over the whole image ρ = {rho_whole:.2f}, higher because the blank pixels rank alike in "
                "both maps: that outline comes from the image.)")
    if basis < 0.5:
        return "depends", (f"The maps differ within the strokes (ρ = {basis:.2f}): this map depends on the trained "
                           "weights, so it says something about the model, not just where the ink is." + note)
    if basis < 0.8:
        return "partly", (f"The maps are only partly alike within the strokes (ρ = {basis:.2f}): part of what the "
                          "map shows comes from the ink itself, part from what the network learned." + note)
    return "image", (f"The maps are alike even within the strokes (ρ = {basis:.2f}): this method's map barely "
                     "changes when the network knows nothing, so it explains the image more than the model." + note)
