"""Where a digit lands: a layer's representation of the test digits, projected to 2-D.

Each layer turns a digit into a list of numbers (784 pixels, 16 hidden
activations, 490 pooled features, 10 scores). Projecting those lists for all
10,000 test digits onto a flat map shows how far the classes have separated
by that layer (``separation`` puts a number on it).

Two projections, as TensorBoard's embedding projector offers:
- **PCA**: the two directions of largest variance; instant, linear, exact to
  place a new digit on (``place`` is a matrix product).
- **UMAP** (umap-learn): keeps neighbours together, so islands show clearly;
  a fit takes tens of seconds (numba compiles on the first one), so it is
  built once per model and layer and cached by the app; a new digit is placed
  where UMAP's ``transform`` starts it: the weighted mean of its nearest
  fitted digits' positions, weighted by UMAP's own fuzzy neighbour strengths
  (``transform`` then refines that start with 100 SGD epochs, over 200 ms on
  a busy machine; the start alone takes well under a millisecond and lands a
  digit beside its own dot as closely).

A digit's 8 nearest training digits are found in the layer's own space (not on
the map), among ``NEIGHBOUR_POOL`` training digits. A UMAP map shows the first
``UMAP_POINTS`` test digits, a PCA map all 10,000.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from digitrec.data import DigitSet
from digitrec.inspection import eval_mode, forward_hooks

BATCH = 1000
NEIGHBOURS = 8
NEIGHBOUR_POOL = 5_000  # the first 5,000 training digits: close ones exist, and TinyVGG runs them in seconds
UMAP_POINTS = 2_000  # test digits a UMAP map is fitted on: 10,000 take minutes on two shared cores, 2,000 about 15 s
INPUT = "input"  # the name of the pixels as a "layer"
UMAP_SEED = 0
SEPARATION_NEIGHBOURS = 10  # a dot's map neighbours that ``separation`` looks at
SEPARATION_POINTS = 2_000  # the first dots it measures: a distance matrix of all 10,000 would take 400 MB
# How the pages put a separation score in words. A random mix of ten classes scores about 0 (each
# neighbour shares a dot's class 1 time in 10; 6 of 10 doing so is rare), ten clean islands near 1.
# The pretrained networks' PCA maps scored 0.24-0.29 at the pixels and hidden layers (0.41 at
# TinyVGG's second pooling) and 0.49 (FCNet) and 0.67 (TinyVGG) at the scores; their UMAP maps 0.83
# at the pixels up to 0.91 and 0.98 at the scores (2026-12-05; the lessons compute theirs: lessons.map_facts).
MIXED_BELOW = 0.5
ISLANDS_ABOVE = 0.85


def map_layers(model: nn.Module) -> list[str]:
    """The layers worth a map, input to output: pixels, each hidden ReLU (FCNet) or pooling (TinyVGG), the scores."""
    children = list(model.named_children())
    if any(isinstance(m, nn.Conv2d) for _, m in children):
        middle = [n for n, m in children if isinstance(m, nn.MaxPool2d)]
    else:
        middle = [n for n, m in children if isinstance(m, nn.ReLU)]
    return [INPUT, *middle, children[-1][0]]


def layer_title(layer: str) -> str:
    return {INPUT: "input pixels", "output": "output scores"}.get(layer, layer)


def representations(model: nn.Module, images: torch.Tensor, layers: list[str], batch: int = BATCH) -> dict[str, torch.Tensor]:
    """layer -> (N, D) float32: each digit's numbers at that layer, flattened. images: (N, 28, 28) uint8."""
    model = copy.deepcopy(model)  # never hook the caller's (possibly shared) model
    hooked = [n for n in layers if n != INPUT]
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with eval_mode(model), torch.inference_mode(), forward_hooks(model, hooked) as records:
        for start in range(0, len(images), batch):
            x = images[start : start + batch].unsqueeze(1).float() / 255.0  # (B, 1, 28, 28)
            model(x)
            for n in layers:
                out = x if n == INPUT else records[n][1]
                parts[n].append(out.flatten(1).clone())
    return {n: torch.cat(p) for n, p in parts.items()}


@dataclass
class DigitMap:
    """One layer's 2-D map of the digits it was fitted on.

    coords: (N, 2) float32, one point per digit. method: "PCA" or "UMAP".
    For PCA, mean (D,) and axes (D, 2) place a new point; for UMAP, fitted
    (N, D), the features the map was fitted on, and n_neighbors do.
    seconds: how long the fit took.
    """

    layer: str
    method: str
    coords: np.ndarray
    mean: torch.Tensor | None = None
    axes: torch.Tensor | None = None
    fitted: torch.Tensor | None = None
    n_neighbors: int = 15
    seconds: float = 0.0

    def place(self, features: torch.Tensor) -> np.ndarray:
        """(B, 2) map positions of new digits given their (B, D) features at this layer."""
        if self.method == "PCA":
            return ((features.float() - self.mean) @ self.axes).numpy()
        return self._place_among_neighbours(features)

    def _place_among_neighbours(self, features: torch.Tensor) -> np.ndarray:
        """UMAP's starting point for a new digit: its n_neighbors nearest fitted digits' positions, averaged with
        UMAP's membership strengths exp(-(d - rho) / sigma) (rho: the nearest distance; sigma: UMAP's smoothing)."""
        from umap.umap_ import smooth_knn_dist  # compiled by the fit already

        k = min(self.n_neighbors, len(self.fitted))
        dist, idx = torch.cdist(features.float(), self.fitted).topk(k, largest=False)  # (B, k) each, nearest first
        dist_np = dist.numpy().astype(np.float32)
        sigma, rho = smooth_knn_dist(dist_np, float(k))
        weights = np.exp(-np.maximum(dist_np - rho[:, None], 0.0) / sigma[:, None])  # (B, k), the nearest gets 1
        weights /= weights.sum(axis=1, keepdims=True)
        return (weights[:, :, None] * self.coords[idx.numpy()]).sum(axis=1).astype(np.float32)  # (B, 2)


def fit_pca(layer: str, features: torch.Tensor) -> DigitMap:
    """The plane of the two directions of largest variance of ``features`` (N, D)."""
    import time

    start = time.perf_counter()
    mean = features.mean(dim=0)
    centred = features - mean
    # The top right-singular vectors of the centred data are the principal axes (D, 2).
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2].T.contiguous()
    # Fix each axis's sign (SVD may flip it) so the same model always gives the same picture.
    signs = torch.sign((centred @ axes).sum(dim=0) + 1e-12)
    axes = axes * torch.where(signs == 0, 1.0, signs)
    coords = (centred @ axes).numpy()
    return DigitMap(layer, "PCA", coords, mean=mean, axes=axes, seconds=time.perf_counter() - start)


def fit_umap(layer: str, features: torch.Tensor, n_neighbors: int = 15, n_epochs: int | None = None) -> DigitMap:
    """UMAP of ``features`` (N, D), seeded so a model always gets the same map.

    Slow on purpose-less repetition: the first fit in a process compiles numba
    code (tens of seconds); callers cache the result. One placement is made
    here, so the first one a learner asks for is fast too.
    """
    import time

    import umap  # imported here: it pulls in numba, which takes seconds to import

    start = time.perf_counter()
    reducer = umap.UMAP(n_neighbors=n_neighbors, n_components=2, random_state=UMAP_SEED, n_epochs=n_epochs,
                        transform_seed=UMAP_SEED, n_jobs=1)
    data = features.float().numpy()
    coords = np.asarray(reducer.fit_transform(data), dtype=np.float32)
    umap_map = DigitMap(layer, "UMAP", coords, fitted=features.float().clone(), n_neighbors=n_neighbors)
    umap_map.place(umap_map.fitted[:1])  # compiles the placement's numba code now, not on the learner's first digit
    umap_map.seconds = time.perf_counter() - start
    return umap_map


def nearest(features: torch.Tensor, pool: torch.Tensor, k: int = NEIGHBOURS) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, distances) of the k rows of ``pool`` (M, D) closest to ``features`` (D,), closest first."""
    distances = torch.cdist(features.float().reshape(1, -1), pool.float())[0]  # (M,)
    values, indices = distances.topk(min(k, len(pool)), largest=False)
    return indices, values


def features_of(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """(B, D) the features of digits x (B, 1, 28, 28) in [0, 1] at ``layer``."""
    if layer == INPUT:
        return x.flatten(1).float()
    model = copy.deepcopy(model)
    with eval_mode(model), torch.inference_mode(), forward_hooks(model, [layer]) as records:
        model(x)
    return records[layer][1].flatten(1)


def separation(coords: np.ndarray, labels: torch.Tensor, k: int = SEPARATION_NEIGHBOURS) -> float:
    """Fraction of points whose k nearest map neighbours mostly share their class: how well the classes separate.

    A number for "the classes separate layer by layer": near 0 for a random
    mix, near 1 for ten clean islands. Measured on the first ``SEPARATION_POINTS``.
    """
    pts = torch.as_tensor(coords[:SEPARATION_POINTS], dtype=torch.float32)
    lab = labels[: len(pts)]
    d = torch.cdist(pts, pts)
    d.fill_diagonal_(float("inf"))
    idx = d.topk(k, largest=False).indices  # (n, k)
    same = (lab[idx] == lab[:, None]).float().mean(dim=1)
    return float((same > 0.5).float().mean())


def separation_words(score: float) -> str:
    """A separation score in words: "mixed", "partly separated" or "clear islands"."""
    if score < MIXED_BELOW:
        return "mixed"
    return "clear islands" if score > ISLANDS_ABOVE else "partly separated"


def pool_images(train: DigitSet, n: int = NEIGHBOUR_POOL) -> torch.Tensor:
    """(n, 28, 28) uint8: the training digits neighbours are looked for among."""
    return train.images[:n]
