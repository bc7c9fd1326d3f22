"""digitrec.fooling: the edit flips the answer, stays inside its budget, and the budget is the smallest found."""

from __future__ import annotations

import pytest
import torch

from digitrec import checkpoints, fooling, intervention


@pytest.mark.parametrize("key", ["fc", "cnn"])
def test_edit_flips_the_answer_within_its_budget(key, mnist):
    model = checkpoints.load_pretrained(key).model
    before = intervention.fingerprint(model)
    was_training = model.training
    x = mnist.test.images[:3].unsqueeze(1).float() / 255.0
    target = (mnist.test.labels[:3] + 3) % 10
    edit = fooling.smallest_budget(model, x, target)
    assert edit.flipped.all()
    with torch.inference_mode():
        assert torch.equal(model(edit.edited).argmax(1), target)
    change = (edit.edited - x).flatten(1).abs().max(dim=1).values
    assert (change <= edit.budget + 1e-6).all()
    assert float(edit.edited.min()) >= 0 and float(edit.edited.max()) <= 1
    # The bisection's last failing budget is one step (1/128) below: PGD there does not flip the digit.
    lower = edit.budget - fooling.MAX_BUDGET / 2**fooling.BISECTIONS
    attempt = fooling.pgd(fooling.frozen(model), x, target, lower)
    with torch.inference_mode():
        assert not (model(attempt).argmax(1) == target).any()
    assert intervention.fingerprint(model) == before and model.training == was_training
    assert all(p.grad is None for p in model.parameters())


def test_make_it_one_digit(mnist):
    model = checkpoints.load_pretrained("fc").model
    pixels = mnist.test.images[0].float() / 255.0
    edit = fooling.make_it(model, pixels, 9)
    assert bool(edit.flipped[0]) and int(fooling.predict(model, edit.edited).argmax()) == 9
    assert 0 < float(edit.budget[0]) < 0.5  # a small change, far less than repainting the digit


def test_transfer_counts_are_consistent(mnist):
    fc, cnn = checkpoints.load_pretrained("fc").model, checkpoints.load_pretrained("cnn").model
    result = fooling.transfer(fc, cnn, mnist.test, n=12)
    assert result.n == 12 and result.fooled_source == 12
    assert 0 <= result.reached <= result.changed <= result.fooled_source
    assert 0 < result.median_budget < 1


def test_noise_images_and_verdicts():
    fc = checkpoints.load_pretrained("fc").model
    for kind in fooling.NOISE_KINDS:
        images = fooling.noise_images(kind, 50, seed=1)
        assert images.shape == (50, 28, 28) and float(images.min()) >= 0 and float(images.max()) <= 1
        assert torch.equal(images, fooling.noise_images(kind, 50, seed=1))  # seeded
        verdict = fooling.noise_verdict(fc, images)
        assert int(verdict.counts.sum()) == 50 and verdict.top_share == float(verdict.counts.max()) / 50
    with pytest.raises(ValueError, match="Unknown noise"):
        fooling.noise_images("pink", 1)


def test_draw_to_fool_rule():
    assert fooling.fooled({"fc": 9, "cnn": 4}, meant=4, victim="fc")
    assert not fooling.fooled({"fc": 9, "cnn": 7}, meant=4, victim="fc")  # both wrong: a scribble, not a win
    assert not fooling.fooled({"fc": 4, "cnn": 4}, meant=4, victim="fc")
