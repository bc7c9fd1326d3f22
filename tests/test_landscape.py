"""The loss along one weight (digitrec.landscape): the real loss, autograd's slope checked against a
finite difference, and gradient descent that follows new = old - lr x slope."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from digitrec import checkpoints, data, landscape
from digitrec.viz.landscape import loss_slice_figure


@pytest.fixture(scope="module")
def fc():
    return checkpoints.load_pretrained("fc").model


@pytest.fixture(scope="module")
def batch(mnist):
    return data.to_input(mnist.train.images[:500]), mnist.train.labels[:500].long()


def test_the_slice_is_the_real_loss_and_leaves_the_model_alone(fc, batch):
    x, y = batch
    ref = landscape.narrowest_weight(fc, "output", 3, x, y)
    before = fc.output.weight.detach().clone()
    curve = landscape.loss_slice(fc, ref, x, y, span=2.0, points=21)
    assert torch.equal(fc.output.weight, before)  # worked on a copy
    assert curve.trained == pytest.approx(float(before[ref.row, ref.col]))
    with torch.no_grad():
        assert curve.losses[10] == pytest.approx(float(F.cross_entropy(fc(x), y)), rel=1e-5)  # the middle point
    # Along one output weight the loss is convex (cross-entropy is convex in the logits, a logit is linear in it).
    second = [curve.losses[i - 1] - 2 * curve.losses[i] + curve.losses[i + 1] for i in range(1, 20)]
    assert min(second) > -1e-5
    assert min(curve.losses) < curve.losses[0] and min(curve.losses) < curve.losses[-1]  # a valley


def test_the_slope_is_the_derivative(fc, batch):
    x, y = batch
    ref = landscape.WeightRef("fc_2", 2, 5)
    w0 = float(fc.fc_2.weight[2, 5].detach())
    h = 1e-3
    step = landscape.loss_and_slope(fc, ref, w0 + 0.5, x, y)
    up = landscape.loss_and_slope(fc, ref, w0 + 0.5 + h, x, y).loss
    down = landscape.loss_and_slope(fc, ref, w0 + 0.5 - h, x, y).loss
    assert step.slope == pytest.approx((up - down) / (2 * h), rel=2e-2, abs=1e-4)


def test_descend_follows_the_rule_and_goes_downhill(fc, batch):
    x, y = batch
    ref = landscape.narrowest_weight(fc, "output", 7, x, y)
    start = float(fc.output.weight[ref.row, ref.col].detach()) + 2.0
    path = landscape.descend(fc, ref, start, lr=0.3, steps=5, x=x, y=y)
    assert len(path) == 6 and path[0].value == pytest.approx(start)
    for before, after in zip(path, path[1:]):
        assert after.value == pytest.approx(before.value - 0.3 * before.slope)
    assert path[-1].loss < path[0].loss and path[0].slope > 0  # started uphill on the right: moved left


def test_a_weight_that_does_not_exist_is_refused(fc):
    with pytest.raises(ValueError, match="no weight"):
        landscape.WeightRef("output", 10, 0).parameter(fc)
    with pytest.raises(ValueError, match="not a Linear layer"):
        landscape.WeightRef("relu_1", 0, 0).parameter(fc)


def test_the_figure_draws_the_curve_the_trained_value_and_the_steps(fc, batch):
    x, y = batch
    ref = landscape.narrowest_weight(fc, "output", 1, x, y)
    curve = landscape.loss_slice(fc, ref, x, y, points=11)
    path = landscape.descend(fc, ref, curve.trained + 1, 0.5, 2, x, y)
    fig = loss_slice_figure(curve, path)
    names = [t.name for t in fig.data]
    assert names == ["loss", "trained weight", "steps"]
    assert list(fig.data[0].y) == pytest.approx(curve.losses)
    assert list(fig.data[2].x) == pytest.approx([p.value for p in path])
    assert f"weight[{ref.row}, {ref.col}]" in fig.layout.title.text


def test_the_narrowest_valley_creeps_at_0_1_and_is_leapt_at_3_for_every_class(fc, mnist):
    """What lesson 6 tells the learner to try on the slice it shows (the loss_slice widget: the narrowest of
    the class's weights, the first SLICE_DIGITS training digits, a start 1 to the right): for every class,
    steps of 0.1 creep downhill without crossing the trained value; a step of 3 leaps over the valley and
    lands higher than it started. And the trained value sits at the valley's bottom."""
    x, y = landscape.slice_digits(mnist.train)
    for row in range(10):
        ref = landscape.narrowest_weight(fc, "output", row, x, y)
        trained = float(fc.output.weight[row, ref.col].detach())
        curve = landscape.loss_slice(fc, ref, x, y)
        bottom = curve.values[min(range(len(curve.losses)), key=curve.losses.__getitem__)]
        assert abs(bottom - trained) <= 0.25, row
        slow = landscape.descend(fc, ref, trained + 1.0, 0.1, 6, x, y)
        assert all(p.value > trained for p in slow), row
        assert all(b.loss < a.loss for a, b in zip(slow, slow[1:])), row
        fast = landscape.descend(fc, ref, trained + 1.0, 3.0, 1, x, y)
        assert fast[1].value < trained and fast[1].loss > fast[0].loss, row
    # The narrowest is the most curved of class 7's 16 weights, measured here apart: a second difference of
    # the loss itself (no slopes), on a plain copy of the output layer.
    ref = landscape.narrowest_weight(fc, "output", 7, x, y)
    with torch.no_grad():
        hidden = fc.relu_2(fc.fc_2(fc.relu_1(fc.fc_1(fc.flatten(x)))))  # (N, 16): what the output layer reads

        def loss_at(col: int, delta: float) -> float:
            w = fc.output.weight.detach().clone()
            w[7, col] += delta
            return float(F.cross_entropy(hidden @ w.T + fc.output.bias, y, reduction="sum").double() / len(y))

        bend = [loss_at(c, 0.1) - 2 * loss_at(c, 0.0) + loss_at(c, -0.1) for c in range(16)]
    assert ref.col == max(range(16), key=bend.__getitem__)
