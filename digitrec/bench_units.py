"""Timings of issue 13's interactive pieces, for ``make bench`` (speed belongs here, never in a test).

``python -m digitrec.bench_units`` prints one table: the per-model pass over
the test set, a warm biography, activation maximisation, a fooling edit, map
builds and placing one digit. Each is the median of a few runs in one process
(the first UMAP fit, which compiles numba code, is reported on its own).
Targets from the issue: biography warm < 300 ms, activation maximisation
< 2 s, a fooling edit < 1 s, placing a digit < 200 ms.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from digitrec import checkpoints, data, embedding, fooling, units


def _median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(mnist: data.MNIST | None = None, umap: bool = True) -> list[tuple[str, float]]:
    """(what, seconds) for every timed piece, pretrained FCNet and TinyVGG."""
    mnist = mnist or data.load_mnist(download=False)
    rows: list[tuple[str, float]] = []
    nets = {"FCNet": checkpoints.load_pretrained("fc").model, "TinyVGG": checkpoints.load_pretrained("cnn").model}
    digit = mnist.test.images[0].float() / 255.0  # a 7
    for name, model in nets.items():
        stats = units.statistics(model, mnist.test)  # the first pass also warms oneDNN's kernels up
        rows.append((f"{name}: statistics over 10,000 test digits (once per model, and per snapshot of a run)",
                     _median_seconds(lambda: units.statistics(model, mnist.test))))
        unit = units.Unit(units.unit_layers(model)[-1], 0)
        rows.append((f"{name}: biography, warm", _median_seconds(lambda: units.biography(model, stats, mnist.test, unit))))
        rows.append((f"{name}: pull over {units.PULL_DIGITS:,} digits", _median_seconds(lambda: units.pull(model, mnist.test, unit))))
        rows.append((f"{name}: activation maximisation", _median_seconds(lambda: units.maximising_input(model, unit))))
        rows.append((f"{name}: fooling edit (smallest budget, 7 -> 9)", _median_seconds(lambda: fooling.make_it(model, digit, 9))))
    fc = nets["FCNet"]
    feats = embedding.representations(fc, mnist.test.images, ["relu_2"])["relu_2"]
    rows.append(("FCNet relu_2: PCA map of 10,000 digits", _median_seconds(lambda: embedding.fit_pca("relu_2", feats))))
    pca = embedding.fit_pca("relu_2", feats)
    x = digit.reshape(1, 1, 28, 28)
    rows.append(("FCNet relu_2: place a digit on the PCA map", _median_seconds(
        lambda: pca.place(embedding.features_of(fc, x, "relu_2")), repeats=10)))
    if umap:
        start = time.perf_counter()
        embedding.fit_umap("relu_2", feats[:200], n_epochs=20)
        rows.append(("UMAP: first fit in the process (numba compiling)", time.perf_counter() - start))
        start = time.perf_counter()
        umap_map = embedding.fit_umap("relu_2", feats[: embedding.UMAP_POINTS])
        rows.append((f"FCNet relu_2: UMAP map of {embedding.UMAP_POINTS:,} digits", time.perf_counter() - start))
        rows.append(("FCNet relu_2: place a digit on the UMAP map", _median_seconds(
            lambda: umap_map.place(embedding.features_of(fc, x, "relu_2")), repeats=10)))
        # What placing cost before: UMAP's own transform (the same start, then 100 SGD epochs), on its own fit.
        import umap

        reducer = umap.UMAP(n_components=2, random_state=embedding.UMAP_SEED, transform_seed=embedding.UMAP_SEED,
                            n_jobs=1).fit(feats[: embedding.UMAP_POINTS].numpy())
        reducer.transform(feats[:1].numpy())
        rows.append(("  for comparison: UMAP's own transform of a digit", _median_seconds(
            lambda: reducer.transform(embedding.features_of(fc, x, "relu_2").numpy()), repeats=10)))
    start = time.perf_counter()
    fooling.transfer(fc, nets["TinyVGG"], mnist.test)
    rows.append(("transfer FCNet -> TinyVGG over 100 digits", time.perf_counter() - start))
    return rows


def table(rows: list[tuple[str, float]]) -> str:
    lines = ["| what | time |", "|---|---|"]
    for what, seconds in rows:
        lines.append(f"| {what} | {seconds * 1000:.0f} ms |" if seconds < 1 else f"| {what} | {seconds:.2f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m digitrec.bench_units [THREADS] [--no-umap]
    # One digit's gradient loop is tiny: on a busy machine two intra-op threads wait on each other
    # far longer than they compute, so compare THREADS=1 with the default.
    import sys

    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    if numbers:
        torch.set_num_threads(int(numbers[0]))
    print(f"torch threads: {torch.get_num_threads()}")
    print(table(measure(umap="--no-umap" not in sys.argv)))
