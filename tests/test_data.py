"""data: real MNIST through the offline-mirror path, the "no data" message, and batches."""

from __future__ import annotations

import gzip

import pytest
import torch

from digitrec import data
from digitrec.errors import DataUnavailable, DigitrecError

SHARED_MIRROR = data.REPO_ROOT.parent / "shared" / "data" / "mnist"

# Known facts about MNIST (LeCun's files): digits per class.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
RAW_SIZES = {  # bytes of the unpacked IDX files: 16-byte header + 28*28 per image, 8 + 1 per label
    "train-images-idx3-ubyte": 16 + 60000 * 784,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 784,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}


# --- real MNIST ---------------------------------------------------------------------------


def test_mnist_has_its_known_sizes_types_and_class_counts(mnist):
    assert mnist.train.images.shape == (60000, 28, 28)
    assert mnist.test.images.shape == (10000, 28, 28)
    assert mnist.train.images.dtype == torch.uint8 and mnist.test.images.dtype == torch.uint8
    assert mnist.train.labels.dtype == torch.int64 and mnist.test.labels.dtype == torch.int64
    assert len(mnist.train) == 60000 and len(mnist.test) == 10000
    assert torch.bincount(mnist.test.labels, minlength=10).tolist() == TEST_COUNTS
    assert torch.bincount(mnist.train.labels, minlength=10).tolist() == TRAIN_COUNTS
    assert int(mnist.train.labels.min()) == 0 and int(mnist.train.labels.max()) == 9


def test_mnist_first_digits_are_the_well_known_ones(mnist):
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    # Ink is bright on a black background; the mean intensity over the training set is
    # the 0.1307 every MNIST tutorial normalises with.
    assert int(mnist.train.images.max()) == 255 and int(mnist.train.images.min()) == 0
    mean = mnist.train.images.float().mean().item() / 255
    assert abs(mean - 0.1307) < 5e-4
    assert mnist.test.images[0, 0, 0] == 0  # the corners are background


def test_digitset_subset_and_indices_of(mnist):
    sub = mnist.test.subset(5)
    assert len(sub) == 5 and sub.labels.tolist() == [7, 2, 1, 0, 4]
    assert torch.equal(sub.images, mnist.test.images[:5])
    sevens = mnist.test.indices_of(7)
    assert len(sevens) == TEST_COUNTS[7]
    assert sevens[0] == 0 and (mnist.test.labels[sevens] == 7).all()


def test_mirror_named_in_the_environment_is_unpacked_into_digitrec_data(tmp_path, monkeypatch, mnist):
    # Only the mirror named by DIGITREC_MNIST_MIRROR can supply the files: the repository
    # root is moved to an empty folder, so neither data/ nor ../shared/data/mnist exists.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for gz in SHARED_MIRROR.glob("*-ubyte.gz"):
        (mirror / gz.name).symlink_to(gz)
    target = tmp_path / "data"
    target.mkdir()
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "nowhere" / "repo")
    monkeypatch.setenv("DIGITREC_DATA", str(target))
    monkeypatch.setenv("DIGITREC_MNIST_MIRROR", str(mirror))
    assert data.data_dir() == target
    assert data.mirror_dirs()[0] == mirror

    loaded = data.load_mnist(download=False)

    raw = target / "MNIST" / "raw"
    assert {p.name: p.stat().st_size for p in raw.iterdir()} == RAW_SIZES  # no partial files left
    assert torch.equal(loaded.train.images, mnist.train.images)
    assert torch.equal(loaded.train.labels, mnist.train.labels)
    assert torch.equal(loaded.test.images, mnist.test.images)
    assert torch.equal(loaded.test.labels, mnist.test.labels)
    # A second call finds the unpacked files and no longer needs the mirror.
    monkeypatch.setenv("DIGITREC_MNIST_MIRROR", str(tmp_path / "gone"))
    assert data.ensure_mnist(download=False) == target


def test_shared_mirror_beside_the_repository_is_a_default_mirror():
    assert SHARED_MIRROR in data.mirror_dirs()
    assert all((SHARED_MIRROR / f"{name}.gz").exists() for name in data.MNIST_FILES)


def _assert_says_how_to_get_mnist(message: str) -> None:
    assert "python -m digitrec data" in message
    assert "DIGITREC_MNIST_MIRROR" in message
    assert message.endswith(".")


def test_no_data_anywhere_raises_data_unavailable_saying_both_ways(tmp_path, monkeypatch):
    empty_data, empty_mirror = tmp_path / "data", tmp_path / "mirror"
    empty_data.mkdir()
    empty_mirror.mkdir()
    monkeypatch.setenv("DIGITREC_DATA", str(empty_data))
    monkeypatch.setenv("DIGITREC_MNIST_MIRROR", str(empty_mirror))
    monkeypatch.setattr(data, "mirror_dirs", lambda: [empty_mirror])

    with pytest.raises(DataUnavailable) as info:
        data.load_mnist(download=False)
    _assert_says_how_to_get_mnist(str(info.value))
    assert str(empty_data) in str(info.value)
    assert isinstance(info.value, DigitrecError)
    assert list(empty_data.iterdir()) == []  # nothing half-made was left behind


def test_an_incomplete_mirror_is_not_used(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in data.MNIST_FILES[:3]:  # the test labels are missing
        (mirror / f"{name}.gz").symlink_to(SHARED_MIRROR / f"{name}.gz")
    monkeypatch.setattr(data, "mirror_dirs", lambda: [mirror])
    with pytest.raises(DataUnavailable) as info:
        data.ensure_mnist(tmp_path / "data", download=False)
    _assert_says_how_to_get_mnist(str(info.value))
    assert not (tmp_path / "data" / "MNIST").exists()


def test_ensure_mnist_unpacks_byte_identical_files(tmp_path, monkeypatch):
    # A tiny made-up mirror: the unpacked file must be exactly the gzip's content.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    contents = {name: bytes([i]) * (100 + i) for i, name in enumerate(data.MNIST_FILES)}
    for name, payload in contents.items():
        with gzip.open(mirror / f"{name}.gz", "wb") as f:
            f.write(payload)
    monkeypatch.setattr(data, "mirror_dirs", lambda: [mirror])
    root = data.ensure_mnist(tmp_path / "out", download=False)
    assert root == tmp_path / "out"
    for name, payload in contents.items():
        assert (root / "MNIST" / "raw" / name).read_bytes() == payload


# --- to_input and batches -----------------------------------------------------------------


def test_to_input_scales_uint8_to_unit_floats_with_a_channel():
    images = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)  # (1, 2, 2)
    x = data.to_input(images)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert x.flatten().tolist() == pytest.approx([0.0, 1.0, 0.2, 0.4])
    assert images.dtype == torch.uint8 and images[0, 0, 1] == 255  # input unchanged


def _numbered(n: int) -> data.DigitSet:
    """n digits whose label is their own index and whose pixels encode it."""
    images = (torch.arange(n, dtype=torch.int64) % 256).to(torch.uint8)[:, None, None].expand(n, 28, 28)
    return data.DigitSet(images.contiguous(), torch.arange(n))


def test_batches_cover_every_index_once_per_pass_with_a_smaller_last_batch():
    digits = _numbered(103)
    got = list(data.batches(digits, 10, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in got] == [10] * 10 + [3]
    seen = torch.cat([y for _, y in got])
    assert sorted(seen.tolist()) == list(range(103))
    assert not torch.equal(seen, torch.arange(103))  # shuffled
    for x, y in got:
        assert x.shape == (len(y), 1, 28, 28) and x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        # each x is the image of its own label, scaled to [0, 1]
        torch.testing.assert_close(x, digits.images[y].unsqueeze(1).float() / 255)


def test_batches_same_seed_same_order_and_each_pass_reshuffles():
    digits = _numbered(50)

    def order(gen: torch.Generator) -> list[int]:
        return torch.cat([y for _, y in data.batches(digits, 8, generator=gen)]).tolist()

    assert order(torch.Generator().manual_seed(3)) == order(torch.Generator().manual_seed(3))
    assert order(torch.Generator().manual_seed(3)) != order(torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(3)
    first, second = order(gen), order(gen)
    assert first != second  # a new permutation per pass
    assert sorted(first) == sorted(second) == list(range(50))


def test_batches_without_shuffle_keep_the_stored_order():
    digits = _numbered(25)
    got = [y.tolist() for _, y in data.batches(digits, 10, shuffle=False)]
    assert got == [list(range(10)), list(range(10, 20)), list(range(20, 25))]


def test_no_digits_make_no_batches_and_a_batch_of_none_is_refused():
    assert list(data.batches(_numbered(0), 10)) == []
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(_numbered(5), 0))


def test_batches_of_real_digits(mnist):
    sub = mnist.test.subset(300)
    x, y = next(data.batches(sub, 64, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0


def test_synthetic_digits_are_reproducible_and_balanced():
    a, b = data.synthetic_digits(100, seed=1), data.synthetic_digits(100, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, data.synthetic_digits(100, seed=2).images)
    assert a.images.shape == (100, 28, 28) and a.images.dtype == torch.uint8
    assert torch.bincount(a.labels).tolist() == [10] * 10


# --- the lab: validation split, augmentation, shuffled pixels ------------------------------------


def test_validation_split_is_fixed_disjoint_and_covers_every_training_digit(mnist):
    kept, held = data.validation_split(mnist.train)
    again_kept, again_held = data.validation_split(mnist.train)
    assert len(held) == data.VALIDATION_SIZE and len(kept) == 60000 - data.VALIDATION_SIZE
    assert torch.equal(held.images, again_held.images) and torch.equal(kept.labels, again_kept.labels)
    # Disjoint and complete: find each digit's index in the 60,000 by its exact pixels.
    index = {bytes(img.numpy()): i for i, img in enumerate(mnist.train.images)}
    held_ids = {index[bytes(img.numpy())] for img in held.images}
    kept_ids = {index[bytes(img.numpy())] for img in kept.images}
    assert not held_ids & kept_ids and len(held_ids | kept_ids) >= 59_900  # MNIST holds a few exact duplicates
    # Seeded, not the first or last 5,000, and every class is there in roughly its share.
    assert held_ids != set(range(5000)) and held_ids != set(range(55000, 60000))
    counts = torch.bincount(held.labels, minlength=10)
    assert counts.min() > 400 and counts.max() < 600
    other_kept, other_held = data.validation_split(mnist.train, seed=data.SPLIT_SEED + 1)
    assert not torch.equal(other_held.labels, held.labels)


def test_validation_split_refuses_a_size_that_leaves_nothing():
    digits = data.synthetic_digits(20)
    for size in (0, 20, 25):
        with pytest.raises(ValueError):
            data.validation_split(digits, size=size)
        with pytest.raises(ValueError):
            data.split_sizes(20, size)


@pytest.mark.parametrize("n, size", [(60_000, None), (600, None), (20, None), (100, 7)])
def test_split_sizes_are_the_splits_own_counts(n, size):
    kept, held = data.validation_split(data.synthetic_digits(n), size=size)
    assert data.split_sizes(n, size) == (len(kept), len(held))


@pytest.mark.parametrize("as_input", [False, True], ids=["uint8", "float"])
def test_augment_keeps_shape_dtype_and_ink_and_really_shifts(mnist, as_input):
    from digitrec.shift import shift_digit

    images = mnist.train.images[:64]  # (64, 28, 28) uint8
    batch = data.to_input(images) if as_input else images
    g = torch.Generator().manual_seed(0)
    moved = data.augment(batch, max_shift=3, max_rotation=0, generator=g)
    assert moved.shape == batch.shape and moved.dtype == batch.dtype
    # Each digit is exactly one whole-pixel shift of itself, by the shifts the generator draws.
    g = torch.Generator().manual_seed(0)
    dx, dy = torch.randint(-3, 4, (64,), generator=g), torch.randint(-3, 4, (64,), generator=g)
    flat = batch.squeeze(1) if as_input else batch
    out = moved.squeeze(1) if as_input else moved
    for digit, result, x, y in zip(flat, out, dx.tolist(), dy.tolist()):
        torch.testing.assert_close(result, shift_digit(digit, x, y), rtol=0, atol=1e-5 if as_input else 0)
    assert (dx != 0).sum() > 40  # most digits really moved
    # MNIST keeps 4 px of margin, so shifting by 3 loses (almost) no ink.
    ink_before, ink_after = flat.float().sum(), out.float().sum()
    assert abs(ink_after - ink_before) / ink_before < 0.01


def test_augment_rotates_small_angles_keeping_most_ink_and_nothing_when_off(mnist):
    images = mnist.train.images[:32]
    turned = data.augment(images, max_shift=0, max_rotation=15, generator=torch.Generator().manual_seed(1))
    assert turned.shape == images.shape and turned.dtype == torch.uint8
    assert (turned != images).any(dim=(1, 2)).all()  # every digit turned a little
    ratio = turned.float().sum(dim=(1, 2)) / images.float().sum(dim=(1, 2))
    assert ((ratio > 0.9) & (ratio < 1.1)).all()  # interpolation blurs, it neither adds nor loses much ink
    # The centre of the ink stays near the centre: a rotation about the middle, not a shift.
    rows = torch.arange(28).float()
    def centre(x):
        w = x.float()
        return (w.sum(2) * rows).sum(1) / w.sum((1, 2))
    assert (centre(turned) - centre(images)).abs().max() < 1.5
    assert data.augment(images, 0, 0) is images


def test_pixel_permutation_is_fixed_and_invertible(mnist):
    order = data.pixel_permutation()
    assert torch.equal(order, data.pixel_permutation())  # the same for training and for testing
    assert torch.equal(order.sort().values, torch.arange(784)) and not torch.equal(order, torch.arange(784))
    images = mnist.test.images[:10]
    shuffled = data.permute_pixels(images, order)
    assert shuffled.shape == images.shape and shuffled.dtype == images.dtype
    assert not torch.equal(shuffled, images)
    assert torch.equal(data.permute_pixels(shuffled, torch.argsort(order)), images)
    # Position i of the shuffled digit shows pixel order[i] of the original.
    assert torch.equal(shuffled.reshape(10, -1)[:, 5], images.reshape(10, -1)[:, order[5]])
    # Works on model inputs too, (B, 1, 28, 28) floats.
    x = data.to_input(images)
    assert torch.equal(data.permute_pixels(x, order), data.to_input(shuffled))
