"""digitrec.embedding: representations equal the layers' outputs, and a test digit placed on a map lands on itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from digitrec import checkpoints, embedding
from digitrec.inspection import capture_activations


def test_map_layers():
    assert embedding.map_layers(checkpoints.load_pretrained("fc").model) == ["input", "relu_1", "relu_2", "output"]
    assert embedding.map_layers(checkpoints.load_pretrained("cnn").model) == ["input", "max_pool_1", "max_pool_2", "output"]


def test_representations_are_the_layer_outputs(mnist):
    model = checkpoints.load_pretrained("cnn").model
    images = mnist.test.images[:40]
    reps = embedding.representations(model, images, embedding.map_layers(model), batch=16)
    acts = capture_activations(model, images.unsqueeze(1).float() / 255.0)
    torch.testing.assert_close(reps["input"], images.flatten(1).float() / 255.0)
    for layer in ("max_pool_1", "max_pool_2", "output"):
        torch.testing.assert_close(reps[layer], acts[layer].flatten(1))
    torch.testing.assert_close(embedding.features_of(model, images[:1].unsqueeze(1).float() / 255.0, "max_pool_2"),
                               reps["max_pool_2"][:1])


def nearest_point(coords: np.ndarray, point: np.ndarray, k: int = 1) -> list[int]:
    return np.argsort(((coords - point) ** 2).sum(axis=1))[:k].tolist()


@pytest.mark.parametrize("layer", ["input", "relu_2", "output"])
def test_pca_places_a_test_digit_on_itself(layer, mnist):
    model = checkpoints.load_pretrained("fc").model
    features = embedding.representations(model, mnist.test.images[:2000], [layer])[layer]
    dmap = embedding.fit_pca(layer, features)
    for i in (0, 7, 1234):
        x = mnist.test.images[i].reshape(1, 1, 28, 28).float() / 255.0
        placed = dmap.place(embedding.features_of(model, x, layer))[0]
        assert nearest_point(dmap.coords, placed) == [i] or np.allclose(dmap.coords[i], placed, atol=1e-4)
        np.testing.assert_allclose(placed, dmap.coords[i], atol=1e-3)
    # The axes are the top two principal directions: orthonormal, and the spread along the first is the largest.
    torch.testing.assert_close(dmap.axes.T @ dmap.axes, torch.eye(2), atol=1e-5, rtol=0)
    assert dmap.coords[:, 0].var() >= dmap.coords[:, 1].var()


def test_umap_places_a_test_digit_next_to_itself(mnist):
    model = checkpoints.load_pretrained("fc").model
    n = 400  # small: the cost of this test is numba compiling UMAP, not the fit
    features = embedding.representations(model, mnist.test.images[:n], ["relu_2"])["relu_2"]
    dmap = embedding.fit_umap("relu_2", features, n_epochs=100)
    assert dmap.coords.shape == (n, 2)
    span = float(np.linalg.norm(dmap.coords.max(axis=0) - dmap.coords.min(axis=0)))
    ranks, gaps = [], []
    for i in range(0, n, 20):  # 20 of the mapped digits, placed again as if new
        x = mnist.test.images[i].reshape(1, 1, 28, 28).float() / 255.0
        placed = dmap.place(embedding.features_of(model, x, "relu_2"))[0]
        distances = np.sqrt(((dmap.coords - placed) ** 2).sum(axis=1))
        ranks.append(int((distances < distances[i]).sum()))  # 0: its own dot is the closest
        gaps.append(float(distances[i]) / span)
    # UMAP's transform averages the digit's neighbours' positions, so it lands beside its own dot, not on it;
    # an ambiguous digit may land by the class it resembles instead. Most land within a few dots of themselves.
    assert sum(r < 10 for r in ranks) >= 16, ranks
    assert float(np.median(gaps)) < 0.03, gaps
    # Classes separate by the last hidden layer: most points' map neighbours share their class.
    assert embedding.separation(dmap.coords, mnist.test.labels[:n]) > 0.8


def test_separation_tells_islands_from_a_mix():
    rng = np.random.default_rng(0)
    labels = torch.arange(10).repeat_interleave(50)
    islands = rng.normal(size=(500, 2)) * 0.1 + np.repeat(np.arange(10)[:, None] * 5.0, 50, axis=0)
    assert embedding.separation(islands, labels) > 0.95
    assert embedding.separation(rng.normal(size=(500, 2)), labels) < 0.02  # about 0: six of ten neighbours alike is rare


def test_nearest_finds_the_digit_itself_first(mnist):
    pool = mnist.train.images[:500].flatten(1).float()
    idx, dist = embedding.nearest(pool[17], pool)
    assert int(idx[0]) == 17 and float(dist[0]) == 0.0 and len(idx) == embedding.NEIGHBOURS
    assert (dist[1:] >= dist[:-1]).all()


def test_separation_words_follow_the_thresholds():
    assert embedding.separation_words(0.0) == "mixed"
    assert embedding.separation_words(embedding.MIXED_BELOW - 0.01) == "mixed"
    assert embedding.separation_words(embedding.MIXED_BELOW) == "partly separated"
    assert embedding.separation_words(embedding.ISLANDS_ABOVE) == "partly separated"
    assert embedding.separation_words(embedding.ISLANDS_ABOVE + 0.01) == "clear islands"
