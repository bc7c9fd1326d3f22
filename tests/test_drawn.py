"""drawn: the bench of drawings the networks never saw, and the augmented pretrained weights on it."""

from __future__ import annotations

import json

import pytest
import torch

from digitrec import checkpoints, drawn, samples
from digitrec.shift import shift_digit


def test_every_digit_is_drawn_in_every_variation_like_a_canvas_drawing():
    bench = drawn.drawn_digits()
    per_digit = len(drawn.PENS) * len(drawn.SLANTS) * len(drawn.TURNS) + len(drawn.SHAPES) + len(drawn.OFF_CENTRE)
    assert len(bench) == 10 * per_digit == 330
    assert bench.images.shape == (330, 28, 28) and bench.images.dtype == torch.float32
    assert torch.equal(torch.bincount(bench.labels), torch.full((10,), per_digit))
    assert 0 <= bench.images.min() and bench.images.max() <= 1
    assert (bench.images.sum(dim=(1, 2)) > 20).all()  # every drawing has ink
    # The plain variation is the app's own sample digit (same strokes, same preprocessing),
    # and an off-centre one is it moved by 2 pixels.
    kinds = list(bench.kinds)
    three = [i for i, (k, d) in enumerate(zip(kinds, bench.labels.tolist())) if d == 3]
    plain = bench.images[three[kinds[three[0]:].index("default pen, as drawn, upright")]]
    moved = bench.images[three[kinds[three[0]:].index("2 px right")]]
    torch.testing.assert_close(moved, shift_digit(plain, 2, 0))
    # A thick pen puts more ink down than a thin one.
    thin = bench.images[three[kinds[three[0]:].index("thin pen, as drawn, upright")]]
    thick = bench.images[three[kinds[three[0]:].index("thick pen, as drawn, upright")]]
    assert thick.sum() > 1.3 * thin.sum()
    # Not MNIST-perfect: the variations really differ from one another.
    assert len({bytes(img.numpy()) for img in bench.images}) == 330
    assert samples.SAMPLE_STROKES  # the strokes it is drawn from


@pytest.mark.parametrize("key, floor", [("fc", 0.90), ("cnn", 0.95)])
def test_the_shipped_augmented_weights_read_the_drawn_digits(key, floor):
    ck = checkpoints.load_pretrained(key)
    # They were trained with augmentation: the checkpoint says so.
    train_config = json.loads(ck.info.extra["train_config"])
    assert train_config["augment_shift"] >= 1 and train_config["augment_rotation"] >= 10
    accuracy = drawn.accuracy(ck.model)
    assert accuracy >= floor  # weights/README.md: FCNet 91.5 %, TinyVGG 96.7 %
    by_kind = drawn.accuracy_by_variation(ck.model)
    assert set(by_kind) >= {"thin pen", "thick pen", "leaning left", "leaning right", "off-centre", "narrow"}
    assert by_kind["off-centre"] >= 0.85  # the shift a learner's drawing may keep after centring
