"""digitrec.digit_batch: the C kernel that gathers a training batch gives PyTorch's numbers exactly,
and ``data.batches`` gives the same batches with it or without it."""

import pytest
import torch

from digitrec import config, data, digit_batch, native
from tests.native_kernels import OTHER_WIDTHS, built_for, require_kernel


@pytest.fixture
def kernel():
    require_kernel("digit_batch", "index_select and division")


def _every_pixel_value() -> data.DigitSet:
    """256 digits of 28 x 28: digit k holds every value 0-255, starting at k (so each row differs)."""
    values = (torch.arange(784).reshape(1, 784) + torch.arange(256).reshape(256, 1)) % 256
    return data.DigitSet(values.to(torch.uint8).reshape(256, 28, 28), torch.arange(256) % 10)


def _torch_batch(digits: data.DigitSet, rows: torch.Tensor):
    return data.to_input(digits.images.index_select(0, rows)), digits.labels.index_select(0, rows)


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32)


def test_every_pixel_value_becomes_pytorchs_float_bit_for_bit(kernel):
    digits = _every_pixel_value()
    gather = digit_batch.gatherer(digits.images, digits.labels)
    assert gather is not None
    rows = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    x, y = gather(rows)
    want_x, want_y = _torch_batch(digits, rows)
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(_bits(x), _bits(want_x)) and torch.equal(y, want_y)
    assert x.min() == 0 and x.max() == 1


@pytest.mark.parametrize("rows", [[0], [5, 5, 5], [255, 0, 17], list(range(40))])  # one, repeats, any order, more than the prefetch
def test_any_rows_in_any_order(kernel, rows):
    digits = data.synthetic_digits(256, seed=3)
    rows = torch.tensor(rows)
    x, y = digit_batch.gatherer(digits.images, digits.labels)(rows)
    want_x, want_y = _torch_batch(digits, rows)
    assert torch.equal(_bits(x), _bits(want_x)) and torch.equal(y, want_y)


def test_batches_are_the_same_with_the_kernel_or_without(kernel, monkeypatch):
    digits = data.synthetic_digits(300, seed=1)  # 300 = 2 x 128 + 44: a short last batch
    served = []
    real = digit_batch.gatherer

    def watched(images, labels):
        served.append(real(images, labels))
        return served[-1]

    monkeypatch.setattr(digit_batch, "gatherer", watched)
    with_kernel = list(data.batches(digits, 128, generator=torch.Generator().manual_seed(7)))
    assert len(served) == 1 and served[0] is not None  # batches took the kernel
    monkeypatch.setattr(digit_batch, "gatherer", lambda images, labels: None)
    without = list(data.batches(digits, 128, generator=torch.Generator().manual_seed(7)))
    assert [len(y) for _, y in with_kernel] == [128, 128, 44]
    for (x, y), (want_x, want_y) in zip(with_kernel, without, strict=True):
        assert torch.equal(_bits(x), _bits(want_x)) and torch.equal(y, want_y)


def test_a_subset_of_the_digits_is_read_from_its_own_first_digit(kernel):
    digits = data.synthetic_digits(64, seed=5)
    later = data.DigitSet(digits.images[7:], digits.labels[7:])  # a view that starts inside the tensor
    rows = torch.tensor([0, 56, 3])
    x, y = digit_batch.gatherer(later.images, later.labels)(rows)
    want_x, want_y = _torch_batch(later, rows)
    assert torch.equal(_bits(x), _bits(want_x)) and torch.equal(y, want_y)


@pytest.mark.parametrize("row", [-1, 64])
def test_a_row_outside_the_digits_is_refused_not_read(kernel, row):
    digits = data.synthetic_digits(64, seed=6)
    with pytest.raises(IndexError, match="outside 0..63"):
        digit_batch.gatherer(digits.images, digits.labels)(torch.tensor([0, row]))


def test_rows_of_another_integer_type_are_read_as_int64(kernel):
    digits = data.synthetic_digits(64, seed=7)
    rows = torch.tensor([9, 2, 40], dtype=torch.int32)
    x, y = digit_batch.gatherer(digits.images, digits.labels)(rows)
    want_x, want_y = _torch_batch(digits, rows.long())
    assert torch.equal(_bits(x), _bits(want_x)) and torch.equal(y, want_y)


@pytest.mark.parametrize("change", ["not contiguous", "float images", "int32 labels", "labels of two columns"])
def test_digits_the_kernel_cannot_read_go_through_pytorch(change):
    digits = data.synthetic_digits(64, seed=2)
    images, labels = digits.images, digits.labels
    if change == "not contiguous":
        images = images.transpose(1, 2)
    elif change == "float images":
        images = images.float()
    elif change == "int32 labels":
        labels = labels.int()
    else:
        labels = torch.stack([labels, labels], dim=1)
    assert digit_batch.gatherer(images, labels) is None
    if change == "not contiguous":  # data.batches still gives the right digits, through PyTorch
        x, y = next(data.batches(data.DigitSet(images, labels), 64, shuffle=False))
        assert torch.equal(x, data.to_input(images)) and torch.equal(y, labels)


@pytest.mark.parametrize("march", OTHER_WIDTHS)
def test_each_vector_width_gives_the_same_numbers(kernel, march, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    library = built_for("digit_batch", march)
    monkeypatch.setattr(digit_batch, "_kernel", lambda: digit_batch.entry_point(library))
    digits = _every_pixel_value()
    rows = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    x, y = digit_batch.gatherer(digits.images, digits.labels)(rows)
    want_x, want_y = _torch_batch(digits, rows)
    assert torch.equal(_bits(x), _bits(want_x)) and torch.equal(y, want_y)


def test_switched_off_batches_come_from_pytorch(monkeypatch):
    monkeypatch.setenv(config.NATIVE_ENV, "0")
    native.load.cache_clear()
    try:
        digits = data.synthetic_digits(64, seed=4)
        assert digit_batch.gatherer(digits.images, digits.labels) is None
        x, y = next(data.batches(digits, 32, shuffle=False))
        assert torch.equal(x, data.to_input(digits.images[:32])) and torch.equal(y, digits.labels[:32])
    finally:
        native.load.cache_clear()
