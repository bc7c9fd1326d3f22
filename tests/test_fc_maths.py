"""digitrec.fc_maths: the FC forward pass as steps, one neuron's sum, and linear collapse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from digitrec import fc_maths, models
from digitrec.errors import DigitrecError
from digitrec.inspection import capture_activations


def _digit(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, 28, 28, generator=g)


# ---------------------------------------------------------------- linear collapse


def test_collapse_worked_by_hand():
    w1, b1 = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([1.0, -1.0])
    w2, b2 = torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([0.0, 1.0])
    c = fc_maths.collapse_linear(w1, b1, w2, b2)
    # W = W2 W1 = [[2, 4], [1, 3]];  b = W2 b1 + b2 = [2, 0] + [0, 1] = [2, 1]
    assert c.w.tolist() == [[2.0, 4.0], [1.0, 3.0]]
    assert c.b.tolist() == [2.0, 1.0]
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # h = W1 x + b1 = [4, 0];  y = W2 h + b2 = [8, 5];  W x + b = [6 + 2, 4 + 1] = [8, 5]
    assert c.two_layers(x).tolist() == [8.0, 5.0]
    assert c.one_layer(x).tolist() == [8.0, 5.0]
    # With ReLU: h = [4, 0] has nothing negative, so here ReLU changes nothing ...
    assert c.with_relu(x).tolist() == [8.0, 5.0]
    # ... but for x = [-1, 0]: h = [0, -1] -> ReLU [0, 0] -> y = [0, 1], while the collapsed layer gives [0, 0].
    x = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    assert c.one_layer(x).tolist() == [0.0, 0.0]
    assert c.with_relu(x).tolist() == [0.0, 1.0]


def test_collapsed_layer_equals_two_layers_on_random_inputs():
    torch.manual_seed(0)
    first, second = nn.Linear(7, 5), nn.Linear(5, 3)
    c = fc_maths.collapse_layers(first, second)
    x = torch.randn(50, 7)
    with torch.no_grad():
        reference = second(first(x)).double()  # PyTorch's own two layers
    assert torch.allclose(c.two_layers(x.double()), reference, atol=1e-5)
    assert torch.allclose(c.one_layer(x.double()), reference, atol=1e-5)
    assert c.w.shape == (3, 7) and c.b.shape == (3,)
    # ReLU in between breaks the equality for some of the inputs.
    assert not torch.allclose(c.with_relu(x.double()), reference, atol=1e-3)


def test_collapse_of_a_real_network_without_its_relu():
    model = models.build(models.FCConfig(), seed=0)
    c = fc_maths.collapse_layers(model.fc_1, model.fc_2)
    x = _digit().reshape(1, -1)  # (1, 784)
    with torch.no_grad():
        no_relu = model.fc_2(model.fc_1(x))
    assert torch.allclose(c.one_layer(x.double()), no_relu.double(), atol=1e-5)


def test_collapse_rejects_matrices_that_do_not_chain():
    with pytest.raises(ValueError, match="cannot follow"):
        fc_maths.collapse_linear(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 4), torch.zeros(2))


def test_small_example_is_whole_numbers_that_collapse():
    c, x = fc_maths.small_example(seed=2)
    for t in (c.w1, c.b1, c.w2, c.b2, x):
        assert torch.equal(t, t.round()) and t.abs().max() <= 3
    assert torch.equal(c.two_layers(x), c.one_layer(x))


# ---------------------------------------------------------------- the forward pass as steps


def test_forward_steps_of_the_16_16_network_match_its_activations():
    model = models.build(models.FCConfig(), seed=0)
    x = _digit()
    steps = fc_maths.forward_steps(model, x)
    assert [s.name for s in steps] == ["input", "flatten", "fc_1", "relu_1", "fc_2", "relu_2", "output", "softmax"]
    assert [s.kind for s in steps] == ["Input", "Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear", "Softmax"]
    assert [s.index for s in steps] == list(range(8))
    acts = capture_activations(model, x)
    assert torch.equal(steps[0].values, x[0, 0])
    for s in steps[1:-1]:
        assert torch.equal(s.values, acts[s.name][0])
    for before, after in zip(steps[:-1], steps[1:]):
        assert torch.equal(after.inputs, before.values)  # each step reads what the previous one produced
    assert steps[-1].values.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert int(steps[-1].values.argmax()) == int(acts["output"][0].argmax())


@pytest.mark.parametrize("hidden, widths", [
    ((128, 64), [784, 784, 128, 128, 64, 64, 10, 10]),
    ((32, 16, 8), [784, 784, 32, 32, 16, 16, 8, 8, 10, 10]),
])
def test_forward_steps_follow_the_model_layers_not_16_16(hidden, widths):
    model = models.build(models.FCConfig(hidden=hidden), seed=0)
    steps = fc_maths.forward_steps(model, _digit())
    assert [s.width for s in steps] == widths
    assert fc_maths.hidden_layers(model) == [f"fc_{i}" for i in range(1, len(hidden) + 1)]
    assert fc_maths.linear_layers(model)[-1] == "output"


def test_forward_steps_refuse_a_convolutional_network():
    with pytest.raises(DigitrecError, match="FCNet"):
        fc_maths.forward_steps(models.build(models.TinyVGGConfig(), seed=0), _digit())


def test_zeroed_by_relu():
    assert fc_maths.zeroed_by_relu(torch.tensor([1.0, -2.0, 0.0, -0.1])) == [1, 3]


# ---------------------------------------------------------------- one neuron


def _hand_network() -> nn.Module:
    """An FCNet whose fc_1 neuron 0 looks at two pixels: +2 at (0, 0), -1 at (1, 1), bias 0.5."""
    model = models.build(models.FCConfig(hidden=(2,)), seed=0)
    with torch.no_grad():
        model.fc_1.weight.zero_()
        model.fc_1.weight[0, 0] = 2.0
        model.fc_1.weight[0, 29] = -1.0  # pixel (1, 1) is position 28 * 1 + 1
        model.fc_1.bias[0] = 0.5
    return model


def test_neuron_sum_worked_by_hand():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 0, 0], x[0, 0, 1, 1] = 1.0, 0.5
    ns = fc_maths.neuron_sum(_hand_network(), x, "fc_1", 0)
    # 2 * 1 + (-1) * 0.5 = 1.5; + 0.5 = 2.0; ReLU(2.0) = 2.0
    assert ns.weighted_sum == pytest.approx(1.5)
    assert ns.bias == pytest.approx(0.5)
    assert ns.result == pytest.approx(2.0)
    assert ns.activated == pytest.approx(2.0)
    assert ns.positive_total == pytest.approx(2.0) and ns.negative_total == pytest.approx(-0.5)
    assert [(c.index, c.weight, c.input, c.product) for c in ns.top_positive] == [(0, 2.0, 1.0, 2.0)]
    assert [(c.index, c.pixel, c.product) for c in ns.top_negative] == [(29, (1, 1), -0.5)]
    assert ns.from_pixels


def test_neuron_sum_equals_the_layer_activation_and_relu_clips():
    model = models.build(models.FCConfig(), seed=0)
    x = _digit(1)
    acts = capture_activations(model, x)
    for layer in ("fc_1", "fc_2"):
        for j in range(16):
            ns = fc_maths.neuron_sum(model, x, layer, j)
            assert ns.result == pytest.approx(float(acts[layer][0, j]), abs=1e-5)
            assert ns.activated == pytest.approx(max(0.0, ns.result))
            assert ns.weighted_sum + ns.bias == pytest.approx(ns.result)
            assert ns.positive_total + ns.negative_total == pytest.approx(ns.weighted_sum, abs=1e-4)
            products = [c.product for c in ns.top_positive]
            assert products == sorted(products, reverse=True)
            if ns.top_positive:
                assert products[0] == pytest.approx(float(ns.products.max()))
            if ns.top_negative:
                assert ns.top_negative[0].product == pytest.approx(float(ns.products.min()))
    out = fc_maths.neuron_sum(model, x, "output", 3)
    assert out.activated is None and out.result == pytest.approx(float(acts["output"][0, 3]), abs=1e-5)
    assert not fc_maths.neuron_sum(model, x, "fc_2", 0).from_pixels


def test_most_active_neuron_and_bad_requests():
    model = models.build(models.FCConfig(), seed=0)
    x = _digit(2)
    assert fc_maths.most_active_neuron(model, x, "fc_1") == int(capture_activations(model, x)["fc_1"][0].argmax())
    with pytest.raises(IndexError):
        fc_maths.neuron_sum(model, x, "fc_1", 16)
    with pytest.raises(KeyError):
        fc_maths.neuron_sum(model, x, "relu_1", 0)
