"""MNIST held in memory as uint8 tensors, and batches sliced from it.

The whole dataset is 47 MB as uint8, so it lives in memory as one tensor per
split. Training batches are slices of a seeded permutation, scaled to [0, 1]
on the whole batch at once: no per-sample PIL transform on the hot path
(the shape of Keller Jordan's airbench loaders).

Where the files come from, in order:
1. ``DIGITREC_DATA`` (default ``data/``), if torchvision's raw files are there;
2. an offline mirror of the four original ``*-ubyte.gz`` files
   (``DIGITREC_MNIST_MIRROR``, then ``../shared/data/mnist`` beside the
   repository), unpacked into the raw folder torchvision reads;
3. torchvision's own download.
The mirror is tried before the download because it is local, instant and holds
byte-identical files; the download is the last resort for a machine with
neither.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from digitrec import config, digit_batch
from digitrec.errors import DataUnavailable

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGE_SIZE = 28
NUM_CLASSES = 10
# The validation split and the pixel permutation (why these: digitrec.config).
VALIDATION_SIZE = config.VALIDATION_SIZE
SPLIT_SEED = config.SPLIT_SEED
PERMUTATION_SEED = config.PERMUTATION_SEED


@dataclass(frozen=True)
class DigitSet:
    """Digits and their labels.

    images: (N, 28, 28) uint8, ink is bright (0 background, 255 full ink).
    labels: (N,) int64 in 0..9.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> "DigitSet":
        """The first ``n`` digits (a quick set for demos and tests)."""
        return DigitSet(self.images[:n], self.labels[:n])

    def indices_of(self, digit: int) -> torch.Tensor:
        """Positions of every example labelled ``digit``."""
        return torch.nonzero(self.labels == digit).flatten()


@dataclass(frozen=True)
class MNIST:
    train: DigitSet  # 60,000 digits
    test: DigitSet  # 10,000 digits


def data_dir() -> Path:
    """Where MNIST is kept: ``DIGITREC_DATA`` or ``data/`` in the repository."""
    return Path(os.environ.get("DIGITREC_DATA", REPO_ROOT / "data"))


def mirror_dirs() -> list[Path]:
    """Offline mirrors holding the four original ``.gz`` files, in order of preference."""
    dirs = []
    if os.environ.get("DIGITREC_MNIST_MIRROR"):
        dirs.append(Path(os.environ["DIGITREC_MNIST_MIRROR"]))
    dirs.append(REPO_ROOT.parent / "shared" / "data" / "mnist")
    return dirs


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _has_raw(root: Path) -> bool:
    raw = _raw_dir(root)
    return all((raw / name).exists() for name in MNIST_FILES)


def _unpack_mirror(mirror: Path, root: Path) -> bool:
    """Unpack a mirror's ``.gz`` files into ``root``'s raw folder; False if incomplete."""
    if not all((mirror / f"{name}.gz").exists() for name in MNIST_FILES):
        return False
    raw = _raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        tmp = raw / f".{name}.{os.getpid()}.partial"  # per process: two unpacking at once never share a file
        with gzip.open(mirror / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, raw / name)  # atomic: a half-written file is never read
    return True


def _try_download(root: Path) -> bool:
    import torchvision

    try:
        torchvision.datasets.MNIST(str(root), train=True, download=True)
        torchvision.datasets.MNIST(str(root), train=False, download=True)
    except Exception:  # no network, a refused mirror, a partial file: all mean "not here"
        return False
    return _has_raw(root)


def ensure_mnist(root: Path | None = None, download: bool = True) -> Path:
    """Make sure the raw MNIST files are in ``root``; return ``root``.

    Raises DataUnavailable, saying how to get the data, when no source has it.
    """
    root = Path(root) if root is not None else data_dir()
    if _has_raw(root):
        return root
    for mirror in mirror_dirs():
        if _unpack_mirror(mirror, root):
            return root
    if download and _try_download(root):
        return root
    raise DataUnavailable(
        f"MNIST was not found in {root} and could not be downloaded. "
        "Either connect to the internet and run `python -m digitrec data`, or put the four "
        "original files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder and set "
        "DIGITREC_MNIST_MIRROR to it."
    )


def load_mnist(root: Path | None = None, download: bool = True) -> MNIST:
    """Both splits of MNIST as in-memory uint8 tensors (about 55 MB)."""
    import torchvision

    root = ensure_mnist(root, download=download)
    splits = []
    for train in (True, False):
        ds = torchvision.datasets.MNIST(str(root), train=train, download=False)
        splits.append(DigitSet(ds.data.contiguous(), ds.targets.long().contiguous()))
    return MNIST(train=splits[0], test=splits[1])


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) -> model input (N, 1, 28, 28) float32 in [0, 1].

    The models read pixel intensities in [0, 1] rather than mean/std-standardised
    values, so every number the explorers show is a plain "how much ink".
    """
    return images.unsqueeze(1).float().div_(255.0)


def batches(
    digits: DigitSet,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y): x (B, 1, 28, 28) float in [0, 1], y (B,) int64.

    Shuffled with one ``randperm`` per pass over the data; the last batch may be
    smaller. Pass a seeded ``generator`` for a reproducible order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n = len(digits)
    if n == 0:
        return  # no batches (split would give one empty batch)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    images, labels = digits.images, digits.labels
    gather = digit_batch.gatherer(images, labels)  # the C kernel, the same numbers in one pass; None: PyTorch's ops
    for idx in order.split(batch_size):  # one call for the pass's batches, not a slice each
        if gather is not None:
            yield gather(idx)
        else:
            # index_select, not images[idx]: advanced indexing took 5x longer here (200 vs 35 ms an epoch
            # of 128-digit batches, 1 thread), a sixth of a small network's epoch.
            yield to_input(images.index_select(0, idx)), labels.index_select(0, idx)


# --- the validation split -----------------------------------------------------------------------


def validation_split(
    digits: DigitSet, size: int | None = None, seed: int = SPLIT_SEED
) -> tuple[DigitSet, DigitSet]:
    """(training part, validation part) of ``digits``: a fixed, seeded, disjoint split.

    The validation part is ``size`` digits drawn by a seeded permutation
    (default: VALIDATION_SIZE of MNIST's 60,000, one twelfth of a smaller set);
    the training part is all the others. Both keep the digits' original order, so
    "the first N training digits" stays a meaningful, reproducible quick set.
    """
    n = len(digits)
    size = split_sizes(n, size)[1]
    key = (id(digits.images), size, seed)
    cached = _SPLITS.get(key)
    if cached is not None and cached[0] is digits.images:  # the same tensor, not a new one at a reused id
        return cached[1]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held, kept = order[:size].sort().values, order[size:].sort().values
    split = (
        DigitSet(digits.images[kept], digits.labels[kept]),
        DigitSet(digits.images[held], digits.labels[held]),
    )
    _SPLITS.clear()  # one split kept: every run of a process splits the same 60,000
    _SPLITS[key] = (digits.images, split)
    return split


def split_sizes(n: int, size: int | None = None) -> tuple[int, int]:
    """(training part, validation part): how many of ``n`` digits ``validation_split`` keeps and holds out,
    without making the split. A page process that hands a run to a worker needs only these counts: the
    split itself copies the training digits (43 MB kept, 4 MB held out of MNIST's 47 MB), which the
    worker makes (and keeps) for itself."""
    if size is None:
        size = min(VALIDATION_SIZE, max(1, n // 12))
    if not 0 < size < n:
        raise ValueError(f"A validation split needs 0 < size < {n} digits, got {size}.")
    return n - size, size


# Every run splits the same training set: keep the last split (a 47 MB copy) instead of one per run.
_SPLITS: dict[tuple, tuple[torch.Tensor, tuple[DigitSet, DigitSet]]] = {}


# --- augmentation: random shifts and small rotations of a whole batch -----------------------------


def augment(
    images: torch.Tensor,
    max_shift: int = 2,
    max_rotation: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each digit of a batch moved by a random whole-pixel shift and turned by a small random angle.

    images: (B, 28, 28) uint8 or (B, 1, 28, 28) float; returns the same shape and dtype.
    Shifts are drawn uniformly from -max_shift..max_shift pixels on each axis,
    angles uniformly from -max_rotation..max_rotation degrees about the centre.
    One ``affine_grid`` + ``grid_sample`` moves the whole batch at once (no
    per-sample PIL): with no rotation a whole-pixel shift samples exactly at pixel
    centres, so the digit is moved, not blurred; what leaves the frame is lost
    and new pixels are 0 (no ink).
    """
    if max_shift == 0 and max_rotation == 0:
        return images
    squeeze = images.dim() == 3
    x = images.unsqueeze(1) if squeeze else images  # (B, 1, H, W)
    b, _, h, w = x.shape
    dx = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator).float()
    dy = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator).float()
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_rotation)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Each output pixel reads the input at rotation x (its position) - shift, in grid_sample's
    # [-1, 1] coordinates (one pixel = 2 / side): moving the ink right by dx means reading dx
    # to the left. The grid is built here with one einsum (affine_grid took ~5x longer on CPU).
    rotation = torch.stack([torch.stack([cos, -sin], dim=1), torch.stack([sin, cos], dim=1)], dim=1)  # (B, 2, 2)
    shift = torch.stack([2 * dx / w, 2 * dy / h], dim=1)  # (B, 2)
    grid = torch.einsum("hwj,bij->bhwi", _base_grid(h, w), rotation) - shift[:, None, None, :]  # (B, H, W, 2)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if images.dtype == torch.uint8:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = out.to(images.dtype)
    return out.squeeze(1) if squeeze else out


@functools.lru_cache(maxsize=4)
def _base_grid(h: int, w: int) -> torch.Tensor:
    """(H, W, 2): each pixel centre's (x, y) in [-1, 1] coordinates (align_corners=False)."""
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


# --- shuffle the pixels: one fixed permutation -----------------------------------------------------


def pixel_permutation(seed: int = PERMUTATION_SEED) -> torch.Tensor:
    """The fixed order (784,) int64 in which "shuffled pixels" are read: position i shows pixel order[i]."""
    return torch.randperm(IMAGE_SIZE * IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def permute_pixels(images: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rearrange every digit's 784 pixels by ``order``: (..., 28, 28) -> (..., 28, 28), any dtype.

    The inverse is ``permute_pixels(shuffled, torch.argsort(order))``.
    """
    shape = images.shape
    return images.reshape(*shape[:-2], -1)[..., order].reshape(shape)


def synthetic_digits(n: int = 256, seed: int = 0) -> DigitSet:
    """Random blob "digits" for tests that need shapes, not real handwriting.

    Each class is a fixed random pattern plus noise, so a model can learn it.
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE, generator=g) > 0.7).float()
    labels = torch.arange(n) % NUM_CLASSES
    noise = torch.rand(n, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 0.3
    images = ((prototypes[labels] * 0.7 + noise) * 255).clamp(0, 255).to(torch.uint8)
    return DigitSet(images, labels)
