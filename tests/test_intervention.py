"""digitrec.intervention: changes land in a copy, do exactly what they say, and never touch the original."""

from __future__ import annotations

import pytest
import torch

from digitrec import checkpoints, intervention
from digitrec.inspection import capture_activations
from digitrec.intervention import BadChange, Change


@pytest.fixture(scope="module")
def digits(mnist) -> torch.Tensor:
    return mnist.test.images[:64].unsqueeze(1).float() / 255.0  # (64, 1, 28, 28)


@pytest.mark.parametrize("key,layer,after", [("fc", "fc_1", "relu_1"), ("cnn", "conv_2_1", "relu_2_1")])
def test_knock_out_and_clamp_fix_the_unit_on_every_digit(key, layer, after, digits):
    shared = checkpoints.load_pretrained(key).model
    before = intervention.fingerprint(shared)
    off = intervention.apply(shared, [Change("knock out", layer, 3)], check=digits[:1])
    held = intervention.apply(shared, [Change("clamp", layer, 3, value=2.5)], check=digits[:1])
    acts_off, acts_held = capture_activations(off, digits), capture_activations(held, digits)
    assert acts_off[after][:, 3].eq(0).all()
    torch.testing.assert_close(acts_held[layer][:, 3], torch.full_like(acts_held[layer][:, 3], 2.5))
    original = capture_activations(shared, digits)
    others = [u for u in range(original[layer].shape[1]) if u != 3]
    torch.testing.assert_close(acts_off[layer][:, others], original[layer][:, others])  # the rest of the layer as before
    assert intervention.fingerprint(shared) == before


def test_set_weight_changes_exactly_one_number():
    shared = checkpoints.load_pretrained("cnn").model
    changed = intervention.apply(shared, [Change("set weight", "conv_1_2", 2, value=0.75, weight=(4, 0, 2))])
    diff = (changed.conv_1_2.weight - shared.conv_1_2.weight).detach()
    assert int((diff != 0).sum()) == 1 and float(changed.conv_1_2.weight.detach()[2, 4, 0, 2]) == 0.75
    others = {k: v for k, v in changed.state_dict().items() if k != "conv_1_2.weight"}
    for k, v in others.items():
        torch.testing.assert_close(v, shared.state_dict()[k])


def test_a_change_that_gives_nan_is_refused_and_nothing_is_kept(digits):
    shared = checkpoints.load_pretrained("fc").model
    before = intervention.fingerprint(shared)
    inked = int(digits[0].flatten().argmax())  # a pixel with ink, so the huge weight reaches the output
    with pytest.raises(BadChange, match="no longer numbers"):
        intervention.apply(shared, [Change("set weight", "fc_1", u, value=3e38, weight=(inked,)) for u in range(16)],
                           check=digits[:1])
    with pytest.raises(BadChange, match="too large"):
        intervention.apply(shared, [Change("set weight", "fc_1", 0, value=1e39, weight=(inked,))])
    with pytest.raises(BadChange, match="not a finite number"):
        intervention.apply(shared, [Change("clamp", "fc_1", 0, value=float("nan"))])
    with pytest.raises(BadChange, match="units 0 to 15"):
        intervention.apply(shared, [Change("knock out", "fc_1", 16)])
    with pytest.raises(BadChange, match="not a position"):
        intervention.apply(shared, [Change("set weight", "fc_1", 0, value=1.0, weight=(784,))])
    with pytest.raises(BadChange, match="not a layer with weights"):
        intervention.apply(shared, [Change("knock out", "relu_1", 0)])
    assert intervention.fingerprint(shared) == before
