"""Breaking a network: small targeted edits that change its answer, and noise it is sure about.

**Targeted edit** (iterated FGSM, i.e. projected gradient descent, PGD): to
make a network read a digit x as class t, repeat

    x' <- clip( x' - step * sign( d loss(x', t) / d x' ),  x - eps, x + eps,  0, 1 )

a small step against the gradient of the loss for the target class, then
projected back so no pixel moves more than ``eps`` (the L-infinity budget)
from the original and every pixel stays ink in [0, 1]. The gradient is the
same one a saliency map shows: the pixels the network is most sensitive to.

``smallest_budget`` bisects eps: the least change (in ink, 0 to 1 per pixel)
that still flips the answer. All functions work on a batch, so the transfer
rate (does an edit made for FCNet also fool TinyVGG?) over 100 digits is one
batched run.

Models are copied and frozen first: the cached, shared ones never see a
gradient or a mode change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from digitrec.data import IMAGE_SIZE, DigitSet

STEPS = 30  # PGD steps per budget tried
BISECTIONS = 7  # budget precision 1 / 2**7 = 0.008 of full ink: about two grey levels of 255
MAX_BUDGET = 1.0  # eps = 1 may repaint every pixel: any target is reachable then, almost always
TRANSFER_DIGITS = 100
NOISE_KINDS = ("uniform", "gaussian", "blobs")


def frozen(model: nn.Module) -> nn.Module:
    """An eval-mode copy whose weights need no gradient: only the input is differentiated."""
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, budget: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """Targeted PGD. x: (B, 1, 28, 28) in [0, 1]; target: (B,) classes; budget: (B,) L-inf eps.

    ``model`` must be ``frozen``. Returns the edited digits (B, 1, 28, 28); a
    digit stops moving once the model reads it as its target, so each edit is
    no bigger than it needs to be at that budget.
    """
    eps = budget.reshape(-1, 1, 1, 1)
    step = (2.5 * eps / steps).clamp(min=1e-4)  # Madry et al.'s step: the budget's edge is reachable
    low, high = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    edited = x.clone()
    for _ in range(steps):
        edited.requires_grad_(True)
        logits = model(edited)
        done = logits.argmax(dim=1) == target  # (B,)
        if bool(done.all()):
            edited = edited.detach()
            break
        loss = F.cross_entropy(logits, target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, edited)
        with torch.no_grad():
            moved = edited - step * grad.sign()
            moved = torch.minimum(torch.maximum(moved, low), high)
            edited = torch.where(done.reshape(-1, 1, 1, 1), edited, moved).detach()
    return edited.detach()


@dataclass(frozen=True)
class Edit:
    """A targeted edit of B digits. budget: (B,) smallest eps found (inf where even MAX_BUDGET failed).

    edited: (B, 1, 28, 28); flipped: (B,) bool, whether the model reads ``edited`` as the target.
    """

    target: torch.Tensor
    budget: torch.Tensor
    edited: torch.Tensor
    flipped: torch.Tensor


def smallest_budget(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int = STEPS,
                    bisections: int = BISECTIONS, max_budget: float = MAX_BUDGET) -> Edit:
    """The least L-inf budget (to 1/2**bisections) at which PGD flips each digit to its target.

    x: (B, 1, 28, 28) in [0, 1]; target: (B,). Bisection on every digit at once:
    each keeps its own [fails, flips] interval and the edit at its upper end.
    """
    model = frozen(model)
    x = x.float()
    b = len(x)
    low = torch.zeros(b)
    high = torch.full((b,), float(max_budget))
    best = pgd(model, x, target, high, steps)
    with torch.no_grad():
        ok = model(best).argmax(dim=1) == target
    for _ in range(bisections):
        mid = (low + high) / 2
        trial = pgd(model, x, target, mid, steps)
        with torch.no_grad():
            flips = model(trial).argmax(dim=1) == target
        high = torch.where(flips, mid, high)
        low = torch.where(flips, low, mid)
        best = torch.where(flips.reshape(-1, 1, 1, 1), trial, best)
    budget = torch.where(ok, high, torch.full_like(high, float("inf")))
    return Edit(target=target, budget=budget, edited=best, flipped=ok)


def make_it(model: nn.Module, pixels: torch.Tensor, target: int) -> Edit:
    """Edit one digit (28, 28) in [0, 1] so ``model`` reads it as ``target``, with the smallest budget."""
    return smallest_budget(model, pixels.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE), torch.tensor([int(target)]))


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 10) probabilities; on a frozen copy, so a shared model keeps its mode."""
    with torch.inference_mode():
        return torch.softmax(frozen(model)(x.float()), dim=1)


@dataclass(frozen=True)
class Transfer:
    """How often an edit made for one network fools the other, over ``n`` test digits both read right.

    fooled_source: edits that flipped the source network (almost all).
    changed: the other network's answer moved off the true class.
    reached: the other network also says the target.
    median_budget: the source's median smallest budget.
    """

    n: int
    fooled_source: int
    changed: int
    reached: int
    median_budget: float


def transfer(source: nn.Module, other: nn.Module, digits: DigitSet, n: int = TRANSFER_DIGITS) -> Transfer:
    """Edit ``n`` test digits (the first ones both networks read right) to the class after their label
    (0 -> 1, ..., 9 -> 0) for ``source``; count how often ``other`` is fooled too."""
    x = digits.images.unsqueeze(1).float() / 255.0
    labels = digits.labels
    chosen = []
    for start in range(0, len(x), 500):  # take the first n both networks read right
        xb = x[start : start + 500]
        right = (predict(source, xb).argmax(1) == labels[start : start + 500]) & (
            predict(other, xb).argmax(1) == labels[start : start + 500])
        chosen += (torch.nonzero(right).flatten() + start).tolist()
        if len(chosen) >= n:
            break
    idx = torch.tensor(chosen[:n])
    target = (labels[idx] + 1) % 10
    edit = smallest_budget(source, x[idx], target)
    other_says = predict(other, edit.edited).argmax(1)
    ok = edit.flipped
    return Transfer(
        n=len(idx), fooled_source=int(ok.sum()), changed=int((ok & (other_says != labels[idx])).sum()),
        reached=int((ok & (other_says == target)).sum()),
        median_budget=float(edit.budget[ok].median()) if bool(ok.any()) else float("nan"),
    )


# ---------------------------------------------------------------- noise


def noise_images(kind: str, n: int, seed: int = 0) -> torch.Tensor:
    """(n, 28, 28) random pictures in [0, 1] that are no digit at all.

    uniform: every pixel independently uniform in [0, 1] (TV snow).
    gaussian: every pixel 0.5 + 0.25 x N(0, 1), clipped.
    blobs: uniform noise blurred and thresholded: smooth ink-like shapes.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (n, IMAGE_SIZE, IMAGE_SIZE)
    if kind == "uniform":
        return torch.rand(shape, generator=g)
    if kind == "gaussian":
        return (0.5 + 0.25 * torch.randn(shape, generator=g)).clamp(0, 1)
    if kind == "blobs":
        base = torch.rand((n, 1, IMAGE_SIZE, IMAGE_SIZE), generator=g)
        smooth = F.avg_pool2d(F.pad(base, (3, 3, 3, 3), mode="reflect"), 7, stride=1)  # (n, 1, 28, 28)
        centred = (smooth - smooth.mean(dim=(2, 3), keepdim=True)) / smooth.std(dim=(2, 3), keepdim=True)
        return (centred > 0.8).float()[:, 0]
    raise ValueError(f"Unknown noise kind {kind!r}; expected one of {NOISE_KINDS}.")


@dataclass(frozen=True)
class NoiseVerdict:
    """What a network says about n noise images: counts: (10,) answers per class; mean_confidence of its answers;
    top_class and top_share: its most frequent answer and how often."""

    counts: torch.Tensor
    mean_confidence: float
    top_class: int
    top_share: float
    confident_share: float  # fraction of images answered with over 90 % confidence


def noise_verdict(model: nn.Module, images: torch.Tensor) -> NoiseVerdict:
    probs = predict(model, images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
    conf, answer = probs.max(dim=1)
    counts = torch.bincount(answer, minlength=10)
    top = int(counts.argmax())
    return NoiseVerdict(counts, float(conf.mean()), top, float(counts[top]) / len(images), float((conf > 0.9).float().mean()))


# ---------------------------------------------------------------- draw to fool


def fooled(answers: dict[str, int], meant: int, victim: str) -> bool:
    """The draw-to-fool challenge: ``victim`` misreads the digit the learner meant while every other network reads it right.

    answers: network name -> its answer. The other networks reading it right
    is the proof it still looks like ``meant`` (a scribble fools everyone).
    """
    others = [a for name, a in answers.items() if name != victim]
    return answers[victim] != meant and bool(others) and all(a == meant for a in others)
