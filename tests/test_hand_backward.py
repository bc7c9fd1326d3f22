"""hand_backward: the written-out chain rule gives autograd's gradients bit for bit, fit uses it for a
stack of Linear and ReLU layers only, and a run trained with it ends on the same weights as autograd's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from digitrec import data, models, train
from digitrec.hand_backward import hand_backward
from digitrec.layers import Layer, ModelSpec, SpecNet

FC_SHAPES = [
    models.FCConfig(),
    models.FCConfig(hidden=()),  # softmax regression: one Linear layer
    models.FCConfig(hidden=(128, 64)),
    models.FCConfig(activation="none"),  # Linear layers with nothing between them
]
NORMALISED = ModelSpec((Layer("Flatten"), Layer("Linear", out=32), Layer("ReLU"), Layer("Linear", out=10)),
                       mean=0.1307, std=0.3081)


def _autograd_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = nn.functional.cross_entropy(model(x).float(), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


# fit trains on the GPU when there is one (scripts/gpu-check runs this file there); the CPU always.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", FC_SHAPES + [NORMALISED], ids=["16-16", "linear", "128-64", "no-relu", "normalised"])
@pytest.mark.parametrize("batch_size", [128, 96, 1])  # 96: 60,000 digits end on a batch of 96, and 1/96 is inexact
def test_the_gradients_are_autograds_bit_for_bit(config, batch_size, device):
    digits = data.synthetic_digits(200, seed=3)
    x, y = next(data.batches(digits, batch_size, generator=torch.Generator().manual_seed(batch_size)))
    x, y = x.to(device), y.to(device)
    reference = models.build(config, seed=0).to(device)
    by_hand_model = models.build(config, seed=0).to(device)
    loss, grads = _autograd_grads(reference, x, y)

    by_hand = hand_backward(by_hand_model)
    assert by_hand is not None
    logits, hand_loss, forward = by_hand.forward(x, y)
    by_hand.backward(forward)
    assert torch.equal(logits, reference(x).detach())
    assert torch.equal(hand_loss, loss)
    for (name, p), g in zip(by_hand_model.named_parameters(), grads):
        assert torch.equal(p.grad, g), name
        assert p.grad.is_contiguous()  # as AccumulateGrad would leave it: the fused optimizer reads it so


def test_a_wrong_gradient_would_be_caught():
    """The comparison above can fail: a blame that skips one ReLU's mask differs from autograd's."""
    digits = data.synthetic_digits(64, seed=3)
    x, y = next(data.batches(digits, 64, generator=torch.Generator().manual_seed(0)))
    model = models.build(models.FCConfig(), seed=0)
    _, grads = _autograd_grads(models.build(models.FCConfig(), seed=0), x, y)
    by_hand = hand_backward(model)
    _, _, forward = by_hand.forward(x, y)
    by_hand.relu_after[0] = False  # forget the first ReLU in the backward pass only
    by_hand.backward(forward)
    assert torch.equal(model.output.weight.grad, grads[4])  # above that ReLU nothing changes
    assert not torch.equal(model.fc_1.weight.grad, grads[0])


@pytest.mark.parametrize("model", [
    models.build(models.TinyVGGConfig(), seed=0),
    SpecNet(ModelSpec((Layer("Flatten"), Layer("Linear", out=16), Layer("Sigmoid"), Layer("Linear", out=10)))),
    SpecNet(ModelSpec((Layer("Flatten"), Layer("Linear", out=16), Layer("Dropout", p=0.2), Layer("Linear", out=10)))),
    SpecNet(ModelSpec((Layer("Flatten"), Layer("Linear", out=16), Layer("BatchNorm1d"), Layer("Linear", out=10)))),
    nn.Sequential(nn.Flatten(), nn.Linear(784, 10)),  # not a SpecNet: its forward is its own
], ids=["tinyvgg", "sigmoid", "dropout", "batchnorm", "plain-module"])
def test_anything_else_trains_through_autograd(model):
    assert hand_backward(model) is None


def test_a_hook_on_a_layer_sends_the_model_through_autograd():
    model = models.build(models.FCConfig(), seed=0)
    assert hand_backward(model) is not None
    model.fc_2.register_forward_hook(lambda module, inputs, output: None)  # e.g. a unit switched off
    assert hand_backward(model) is None


@pytest.mark.parametrize("change", ["backward pre-hook", "gradient hook", "frozen layer", "float64", "parametrized"])
def test_anything_autograd_would_do_differently_sends_the_model_through_autograd(change):
    model = models.build(models.FCConfig(), seed=0)
    if change == "backward pre-hook":
        model.fc_1.register_full_backward_pre_hook(lambda module, grad_output: None)
    elif change == "gradient hook":
        model.output.weight.register_hook(lambda grad: grad * 2)
    elif change == "frozen layer":
        model.fc_1.requires_grad_(False)
    elif change == "float64":
        model.double()
    else:
        nn.utils.parametrize.register_parametrization(model.fc_2, "weight", nn.Identity())
    assert hand_backward(model) is None


def test_fit_trains_fcnet_by_hand_to_the_weights_autograd_reaches():
    digits = data.synthetic_digits(300, seed=1)
    config = train.TrainConfig(epochs=2, batch_size=64, seed=5, evaluate_each_epoch=False)  # 300 = 4 x 64 + 44
    by_hand, through_autograd = models.build(models.FCConfig(), seed=0), models.build(models.FCConfig(), seed=0)
    through_autograd.fc_1.register_forward_hook(lambda module, inputs, output: None)  # a hook: autograd's path

    hand_state = train.fit(by_hand, digits, config)
    autograd_state = train.fit(through_autograd, digits, config)
    assert hand_state.hand_backward and not autograd_state.hand_backward
    assert hand_state.loss == autograd_state.loss
    for (name, p), q in zip(by_hand.named_parameters(), through_autograd.parameters()):
        assert torch.equal(p, q), name
        assert p.grad is None  # fit leaves no gradients behind on a model the explorers share
    # the passes ran in inference mode: autograd can still go on from the weights fit left (the backprop explorer does)
    nn.functional.cross_entropy(by_hand(digits.images[:8].unsqueeze(1).float() / 255), digits.labels[:8]).backward()
    assert all(p.grad is not None for p in by_hand.parameters())
    assert not train.fit(models.build(models.TinyVGGConfig(), seed=0), digits,
                         train.TrainConfig(epochs=1, max_steps=1, evaluate_each_epoch=False)).hand_backward


def test_a_run_says_which_network_trained_by_hand_and_the_race_table_shows_it():
    from digitrec import race
    from digitrec.runs import TrainingRun
    from digitrec.spec import RunSpec
    from tests.helpers import small_mnist

    rows = []
    for config in (models.FCConfig(), models.TinyVGGConfig()):
        run = TrainingRun(RunSpec(config, train.TrainConfig(epochs=1, batch_size=16)), small_mnist(n_train=32, n_test=40))
        run.start()
        assert run.join(timeout=120)
        rows.append(race.row_of(run.progress()))
    fc, cnn = race.table(rows)["trained on"]
    assert rows[0].hand_backward and fc.endswith(", backward by hand")
    assert not rows[1].hand_backward and "by hand" not in cnn
