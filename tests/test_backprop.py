"""digitrec.backprop: the chain rule by hand equals autograd, autograd equals finite
differences, a worked example on paper, one SGD step, and the shared model left alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from digitrec import backprop, checkpoints, lessons, models, samples
from digitrec.backprop import BadTarget, UnsupportedModel

REPO = Path(__file__).resolve().parents[1]


def _digit(seed: int) -> torch.Tensor:
    """A random 'digit' (1, 1, 28, 28) in [0, 1] with a third of the pixels blank, like real ink."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, 28, 28, generator=g)
    return x * (torch.rand(1, 1, 28, 28, generator=g) > 0.33)


def _untouched(model: nn.Module):
    """A check that ``model`` has the same weights, no gradients, no hooks and its mode afterwards."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    training = model.training

    def check() -> None:
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
        assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
        assert model.training == training

    return check


# ---------------------------------------------------------------- hand chain rule = autograd


FC_CASES = [((16, 16), 0, 3), ((16, 16), 1, 7), ((5,), 2, 0), ((32, 8, 4), 3, 9), ((128, 64), 4, 5)]


@pytest.mark.parametrize("hidden, seed, target", FC_CASES)
def test_fc_hand_chain_rule_equals_autograd(hidden, seed, target):
    model = models.build(models.FCConfig(hidden=hidden), seed=seed)
    x = _digit(seed)
    # float64: the two computations agree to rounding of doubles.
    bw = backprop.backward(model, x, target, dtype=torch.float64)
    assert bw.disagreement() < 1e-12
    for name in bw.linear_layers():
        t = bw.layer(name)
        assert torch.allclose(t.weight_grad, t.autograd_weight_grad, rtol=0, atol=1e-12)
        assert torch.allclose(t.bias_grad, t.autograd_bias_grad, rtol=0, atol=1e-12)
        assert torch.allclose(t.grad_output, t.autograd_grad_output, rtol=0, atol=1e-12)  # δ of every neuron
    # float32 (what the app shows): to float precision.
    bw32 = backprop.backward(model, x, target)
    scale = max(float(g.abs().max()) for g in bw32.gradients.values())
    assert bw32.disagreement() <= 1e-5 * max(scale, 1.0)
    assert math.isclose(bw32.loss, bw32.hand_loss, rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.parametrize("channels, padding, seed, target", [(10, 1, 0, 2), (3, 1, 1, 8), (4, 0, 2, 5)])
def test_tinyvgg_hand_chain_rule_equals_autograd(channels, padding, seed, target):
    model = models.build(models.TinyVGGConfig(channels=channels, padding=padding), seed=seed)
    x = _digit(10 + seed)
    bw = backprop.backward(model, x, target, dtype=torch.float64)
    assert bw.disagreement() < 1e-12
    assert [t.kind for t in bw.layers].count("MaxPool2d") == 2  # blame routed through both poolings by hand
    for layer in bw.conv_layers():
        t = bw.layer(layer)
        assert torch.allclose(t.weight_grad, t.autograd_weight_grad, rtol=0, atol=1e-12)
        assert torch.allclose(t.bias_grad, t.autograd_bias_grad, rtol=0, atol=1e-12)
    # One kernel weight as a sum over positions, in every layer and at a corner cell (touches the padding).
    for layer in bw.conv_layers():
        c_in = bw.layer(layer).weight.shape[1]
        for cell in [(0, 0), (1, 1), (2, 1)]:
            kg = backprop.kernel_gradient(bw, layer, channels - 1, c_in - 1, *cell)
            assert kg.hand == pytest.approx(kg.autograd, abs=1e-12)
            assert kg.hand == pytest.approx(float(kg.products.sum()), abs=1e-12)
            assert kg.autograd == pytest.approx(float(bw.gradients[f"{layer}.weight"][channels - 1, c_in - 1, *cell]))
    bw32 = backprop.backward(model, x, target)
    scale = max(float(g.abs().max()) for g in bw32.gradients.values())
    assert bw32.disagreement() <= 1e-5 * max(scale, 1.0)


def test_kernel_gradient_reads_the_padded_input_at_shifted_positions():
    model = models.build(models.TinyVGGConfig(channels=2), seed=0)
    x = _digit(5)
    bw = backprop.backward(model, x, 1, dtype=torch.float64)
    kg = backprop.kernel_gradient(bw, "conv_1_1", 1, 0, 0, 0)  # top-left kernel cell, padding 1
    # At output position (r, c) the top-left cell sits on input pixel (r - 1, c - 1): row 0 and column 0 are padding.
    assert kg.inputs.shape == (28, 28)
    assert torch.all(kg.inputs[0] == 0) and torch.all(kg.inputs[:, 0] == 0)
    assert torch.equal(kg.inputs[1:, 1:], x[0, 0, :-1, :-1].double())
    kg = backprop.kernel_gradient(bw, "conv_1_1", 1, 0, 2, 2)  # bottom-right cell: input pixel (r + 1, c + 1)
    assert torch.equal(kg.inputs[:-1, :-1], x[0, 0, 1:, 1:].double())
    with pytest.raises(IndexError):
        backprop.kernel_gradient(bw, "conv_1_1", 0, 1, 0, 0)  # conv_1_1 reads one channel
    with pytest.raises(KeyError):
        backprop.kernel_gradient(bw, "output", 0, 0, 0, 0)


# ---------------------------------------------------------------- autograd = finite differences


def _loss_with(model: nn.Module, x: torch.Tensor, target: int, name: str, index: tuple, value: float) -> float:
    work = models.build(model.config).double()
    work.load_state_dict(model.state_dict())
    with torch.no_grad():
        dict(work.named_parameters())[name][index] = value
        logits = work(x.double())
    return float(nn.functional.cross_entropy(logits, torch.tensor([target])))


@pytest.mark.parametrize("config, seed", [(models.FCConfig(hidden=(16, 16)), 0), (models.FCConfig(hidden=(7,)), 1),
                                          (models.TinyVGGConfig(channels=3), 2)])
def test_autograd_matches_finite_differences(config, seed):
    model = models.build(config, seed=seed).double()
    x = _digit(20 + seed)
    target = 4
    bw = backprop.backward(model, x, target, dtype=torch.float64)
    h = 1e-6
    g = torch.Generator().manual_seed(seed)
    checked = 0
    for name, p in model.named_parameters():
        grad = bw.gradients[name]
        # The largest-gradient entry and two random ones of every parameter tensor.
        picks = [int(grad.abs().argmax())] + torch.randint(0, p.numel(), (2,), generator=g).tolist()
        for flat in picks:
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), p.shape))
            w = float(p.detach()[index])
            numeric = (_loss_with(model, x, target, name, index, w + h)
                       - _loss_with(model, x, target, name, index, w - h)) / (2 * h)
            assert numeric == pytest.approx(float(grad[index]), rel=1e-5, abs=1e-8), (name, index)
            checked += 1
    assert checked >= 3 * len(list(model.parameters()))


# ---------------------------------------------------------------- a worked example on paper


def _paper_network() -> tuple[nn.Module, torch.Tensor]:
    """784 -> 2 -> 10 with a handful of non-zero weights, and a digit of two inked pixels.

    x: pixel 0 = 1, pixel 1 = 0.5.  fc_1: w[0, 0] = 1, w[0, 1] = 2, w[1, 0] = −1, b = 0
    -> z1 = (1·1 + 2·0.5, −1·1) = (2, −1) -> ReLU -> a1 = (2, 0).
    output: w[3, 0] = 1, all else 0 -> scores: 2 for digit 3, 0 for the nine others.
    """
    model = models.build(models.FCConfig(hidden=(2,)), seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fc_1.weight[0, 0], model.fc_1.weight[0, 1], model.fc_1.weight[1, 0] = 1.0, 2.0, -1.0
        model.output.weight[3, 0] = 1.0
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, 0.5
    return model, x


def test_the_chain_rule_worked_on_paper():
    model, x = _paper_network()
    bw = backprop.backward(model, x, target=3, dtype=torch.float64)
    e2 = math.exp(2)
    p3, p_other = e2 / (e2 + 9), 1 / (e2 + 9)  # softmax of (0, 0, 0, 2, 0, ...): 0.4508 and 0.0610
    assert bw.loss == pytest.approx(-math.log(p3), abs=1e-12)  # 0.7966
    expected = [p_other] * 10
    expected[3] = p3 - 1  # p − onehot: −0.5492 for the target, +0.0610 for every other digit
    assert bw.output_delta.tolist() == pytest.approx(expected, abs=1e-12)
    assert float(bw.output_delta.sum()) == pytest.approx(0.0, abs=1e-12)  # the blame on the scores adds up to 0
    # Hidden neuron 0: weighted sum of the blame above = 1 · (p3 − 1); on (z = 2 > 0) -> δ = p3 − 1.
    nb = backprop.neuron_blame(bw, "fc_1", 0)
    assert (nb.pre_activation, nb.relu_on) == (2.0, True)
    assert nb.blame_sum == pytest.approx(p3 - 1, abs=1e-12) and nb.delta == pytest.approx(p3 - 1, abs=1e-12)
    # Hidden neuron 1: z = −1, ReLU off -> δ = 0 whatever arrives from above.
    off = backprop.neuron_blame(bw, "fc_1", 1)
    assert (off.pre_activation, off.relu_on, off.delta) == (-1.0, False, 0.0)
    # A weight's gradient is δ × its input: w[0, 1] read pixel 1 (0.5) -> (p3 − 1) · 0.5 = −0.2746.
    wg = backprop.weight_gradient(bw, "fc_1", 0, 1)
    assert (wg.input_value, wg.hand) == (0.5, pytest.approx((p3 - 1) * 0.5, abs=1e-12))
    assert wg.autograd == pytest.approx(wg.hand, abs=1e-12) and wg.from_pixels and wg.pixel == (0, 1)
    # The output weight w[3, 0] read a1[0] = 2 -> (p3 − 1) · 2; a blank pixel's weight gets exactly 0.
    assert backprop.weight_gradient(bw, "output", 3, 0).hand == pytest.approx((p3 - 1) * 2, abs=1e-12)
    assert backprop.weight_gradient(bw, "fc_1", 0, 500).autograd == 0.0
    assert backprop.most_blamed(bw, "fc_1") == 0


# ---------------------------------------------------------------- views of the pass


def test_blame_pictures_are_the_digit_scaled_by_each_neurons_delta():
    model = models.build(models.FCConfig(hidden=(16, 16)), seed=3)
    x = _digit(3)
    bw = backprop.backward(model, x, 6, dtype=torch.float64)
    layer, pictures, deltas = backprop.first_layer_pictures(bw)
    assert layer == "fc_1" and pictures.shape == (16, 28, 28)
    assert torch.allclose(pictures, deltas[:, None, None] * x[0, 0].double()[None], atol=1e-15)
    assert torch.equal(pictures.reshape(16, 784), bw.layer("fc_1").weight_grad)
    off = (bw.layer("fc_1").output <= 0).nonzero().flatten().tolist()
    assert off and all(float(deltas[j]) == 0.0 for j in off)  # switched-off neurons: blank pictures
    cnn = backprop.backward(models.build(models.TinyVGGConfig(channels=2), seed=0), x, 6)
    with pytest.raises(UnsupportedModel):
        backprop.first_layer_pictures(cnn)


def test_a_neurons_blame_is_the_weighted_sum_of_the_blame_above():
    model = models.build(models.FCConfig(hidden=(12, 9)), seed=5)
    bw = backprop.backward(model, _digit(5), 2, dtype=torch.float64)
    w_above = bw.layer("output").weight  # (10, 9)
    for j in range(9):
        nb = backprop.neuron_blame(bw, "fc_2", j)
        assert nb.above == "output" and nb.weights.shape == (10,)
        assert nb.blame_sum == pytest.approx(float(w_above[:, j] @ bw.output_delta), abs=1e-12)
        assert nb.delta == pytest.approx(nb.blame_sum if nb.pre_activation > 0 else 0.0, abs=1e-12)
        assert nb.delta == pytest.approx(nb.autograd_delta, abs=1e-12)
    score = backprop.neuron_blame(bw, "output", 2)
    assert score.is_output and score.is_target and score.delta == pytest.approx(score.probability - 1)
    with pytest.raises(IndexError):
        backprop.neuron_blame(bw, "fc_2", 9)
    with pytest.raises(KeyError):
        backprop.neuron_blame(bw, "relu_1", 0)


# ---------------------------------------------------------------- one SGD step


@pytest.mark.parametrize("config", [models.FCConfig(hidden=(16, 16)), models.TinyVGGConfig(channels=3)])
def test_sgd_step_moves_every_weight_by_exactly_minus_lr_times_gradient(config):
    model = models.build(config, seed=7)
    model.train()  # as a training run might leave it: the step must not switch it
    untouched = _untouched(model)
    x = _digit(7)
    lr = 0.05
    step = backprop.sgd_step(model, x, 1, lr)
    untouched()
    bw = backprop.backward(model, x, 1)
    untouched()
    assert set(step.after) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert torch.equal(step.before[name], p.detach())
        assert torch.equal(step.gradient[name], bw.gradients[name])
        assert torch.equal(step.after[name], step.before[name] - lr * step.gradient[name])  # exactly, bit for bit
    # A small step downhill lowers this digit's loss; the step's own numbers are the model's.
    assert step.loss_after < step.loss_before
    assert step.loss_before == pytest.approx(bw.loss, rel=1e-5)
    assert float(step.probs_after[1]) > float(step.probs_before[1])
    stepped = models.build(config)
    stepped.load_state_dict(step.after)
    with torch.no_grad():
        expected = -torch.log_softmax(stepped.eval()(x)[0].double(), dim=0)[1]
    assert step.loss_after == pytest.approx(float(expected), rel=1e-6)
    name, change = step.largest_change()
    assert change == pytest.approx(lr * float(step.gradient[name].abs().max()), rel=1e-5)


def test_a_too_big_step_overshoots_on_real_digits(mnist):
    """The pretrained FCNet, sample 7 with target 3: small steps leave the other digits alone,
    a big one makes the net call most of them 3 and their loss explodes (what the lesson claims)."""
    model = checkpoints.load_pretrained("fc").model
    untouched = _untouched(model)
    x = samples.sample_digit(7).reshape(1, 1, 28, 28)
    images = mnist.test.images[:500].float().div(255).unsqueeze(1)
    labels = mnist.test.labels[:500].long()
    bw = backprop.backward(model, x, 3)
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    mine, theirs = backprop.loss_along_gradient(model, x, bw, lrs, images, labels)
    assert mine[0] < bw.loss and mine[-1] < 1e-3  # this digit: ever more sure it is a 3
    assert theirs[-1] > 20 * theirs[0]  # everyone else: the step overshot
    small, big = (backprop.effect_on_others(model, bw, lr, images, labels) for lr in (1e-4, 10.0))
    assert small.accuracy_after == pytest.approx(small.accuracy_before, abs=0.01) and small.accuracy_before > 0.9
    assert big.called_target_after > 0.9 and big.accuracy_after < 0.2
    # The curve and a single step agree.
    assert mine[2] == pytest.approx(backprop.sgd_step(model, x, 3, 1e-2, bw).loss_after, rel=1e-6, abs=1e-9)
    untouched()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("target", [-1, 10, 3.5, "3", None])
def test_a_target_outside_0_to_9_is_refused_with_a_sentence(target):
    model = models.build(models.FCConfig(hidden=(4,)), seed=0)
    with pytest.raises(BadTarget, match="whole number from 0 to 9"):
        backprop.backward(model, _digit(0), target)


def test_a_layer_it_cannot_explain_is_refused_with_a_sentence():
    class WithDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten, self.drop, self.output = nn.Flatten(), nn.Dropout(0.1), nn.Linear(784, 10)

        def forward(self, x):
            return self.output(self.drop(self.flatten(x)))

    class Skip(nn.Module):  # the second layer reads the input again, not the first layer's output
        def __init__(self):
            super().__init__()
            self.flatten, self.output = nn.Flatten(), nn.Linear(784, 10)

        def forward(self, x):
            self.flatten(x)
            return self.output(x.reshape(1, -1) * 2)

    with pytest.raises(UnsupportedModel, match="Dropout"):
        backprop.backward(WithDropout(), _digit(0), 1)
    with pytest.raises(UnsupportedModel, match="does not read the output of the layer before"):
        backprop.backward(Skip(), _digit(0), 1)
    with pytest.raises(ValueError, match="learning rate"):
        backprop.sgd_step(models.build(models.FCConfig(hidden=(4,))), _digit(0), 1, -0.1)


# ---------------------------------------------------------------- lesson 7's facts and file


@pytest.fixture(scope="module")
def pretrained() -> dict[str, nn.Module]:
    return {k: checkpoints.load_pretrained(k).model for k in ("fc", "cnn")}


def test_backprop_lesson_facts_are_the_models_own(pretrained):
    x = samples.sample_digit(7).reshape(1, 1, 28, 28)
    facts = lessons.backprop_facts({k: backprop.backward(m, x, 7) for k, m in pretrained.items()})
    fc = pretrained["fc"]
    with torch.no_grad():  # recomputed here without digitrec.backprop
        h1 = torch.relu(fc.fc_1(x.reshape(1, -1)))
        z2 = fc.fc_2(h1)
        logits = fc.output(torch.relu(z2))[0].double()
    p = torch.softmax(logits, dim=0)
    assert facts["bp.fc.target"] == "7"
    loss = float(-torch.log_softmax(logits, dim=0)[7])
    assert facts["bp.fc.loss"] == (f"{loss:.4f}" if loss >= 1e-3 else f"{loss:.1e}")
    assert facts["bp.fc.p_target"] == f"{float(p[7]):.2%}"
    runner_up = int(torch.cat([p[:7], torch.tensor([-1.0], dtype=p.dtype), p[8:]]).argmax())
    assert facts["bp.fc.runner_up"] == str(runner_up)
    # Were the runner-up the target: autograd's gradient of the loss on that score (lesson 7's "Try it").
    scores = logits.clone().requires_grad_(True)
    nn.functional.cross_entropy(scores[None], torch.tensor([runner_up])).backward()
    blame = float(facts["bp.fc.runner_up_as_target_blame"].replace("\u2212", "-"))
    assert blame == pytest.approx(float(scores.grad[runner_up]), abs=5e-5) and blame < 0
    assert facts["bp.fc.off_neurons"] == str(int((z2 <= 0).sum())) and facts["bp.fc.width"] == "16"
    # The most blamed fc_2 neuron from autograd alone.
    work = checkpoints.load_pretrained("fc").model
    z = work.fc_2(torch.relu(work.fc_1(x.reshape(1, -1))))
    z.retain_grad()
    nn.functional.cross_entropy(work.output(torch.relu(z)), torch.tensor([7])).backward()
    assert facts["bp.fc.blamed_neuron"] == str(int(z.grad[0].abs().argmax()))
    assert facts["bp.cnn.positions"] == "784"  # conv_1_1 keeps 28 x 28 with padding 1


def test_lesson_7_is_backpropagation_with_its_widgets_and_known_placeholders(pretrained):
    from streamlit_app.widgets import registry

    path = REPO / "lessons" / "07-backpropagation.md"
    lesson = lessons.parse_lesson(path.read_text(encoding="utf-8"), path.name)
    assert lesson.number == 7 and lesson.networks == ("fc", "cnn")
    names = {w.name for step in lesson.steps for w in step.widgets}
    assert {"backprop_loss", "backprop_diagram", "backprop_weight", "backprop_gradient_pictures",
            "backprop_sgd_step", "kernel_gradient"} <= names
    for step in lesson.steps:
        for w in step.widgets:
            assert registry.check(w.name, w.params) == [], (w.line, w.name)
    assert len(lesson.steps[-1].questions) == 3
    x = samples.sample_digit(7).reshape(1, 1, 28, 28)
    facts = lessons.model_facts(pretrained)
    facts.update(lessons.digit_facts(pretrained, x, 7))
    facts.update(lessons.backprop_facts({k: backprop.backward(m, x, 7) for k, m in pretrained.items()}))
    facts.update({f"{k}.accuracy": "0%" for k in pretrained})
    assert lesson.placeholders <= set(facts), sorted(lesson.placeholders - set(facts))
