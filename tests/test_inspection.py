"""Inspection and the models' own arithmetic, checked against numbers worked out
by hand: a 3 x 3 convolution on paper, a weighted sum, softmax, max pooling,
parameter and multiply-add counts, and gradients by finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from digitrec import data, inspection, models


def _tinyvgg(padding: int = 1) -> nn.Module:
    return models.build(models.TinyVGGConfig(padding=padding), seed=0)


def _fcnet(hidden=(16, 16)) -> nn.Module:
    return models.build(models.FCConfig(hidden=hidden), seed=0)


@pytest.fixture(scope="module")
def digit() -> torch.Tensor:
    """One synthetic digit, (1, 1, 28, 28) in [0, 1]."""
    return data.to_input(data.synthetic_digits(10, seed=2).images[7:8])


# --- a 3 x 3 convolution worked out on paper --------------------------------

SOBEL = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]  # responds to left-bright edges


@pytest.fixture(scope="module")
def paper_digit() -> torch.Tensor:
    """A hand-made digit: a bright blob in the top-left corner and a vertical stroke.

    rows 0-1, cols 0-2:  0.2 0.6 0.9      column 14, rows 8-19: 1.0
                         0.4 1.0 0.3      column 15, rows 8-19: 0.5
    everything else 0.
    """
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 0, :3] = torch.tensor([0.2, 0.6, 0.9])
    x[0, 0, 1, :3] = torch.tensor([0.4, 1.0, 0.3])
    x[0, 0, 8:20, 14] = 1.0
    x[0, 0, 8:20, 15] = 0.5
    return x


@pytest.fixture(scope="module")
def paper_model() -> nn.Module:
    """TinyVGG whose conv_1_1 channel 3 is the Sobel kernel with bias 0.5."""
    model = _tinyvgg()
    with torch.no_grad():
        model.conv_1_1.weight[3, 0] = torch.tensor(SOBEL)
        model.conv_1_1.bias[3] = 0.5
    return model


# Each case: output (row, col) -> (patch, products, sum of products, result).
# The patch is the 3 x 3 input window centred on (row, col); with padding 1 the
# window at row 0 or col 0 hangs over the border and reads zeros there.
PAPER_CASES = {
    # Top-left corner: padded row -1 and column -1 are zeros.
    # products = patch * kernel:
    #   [0*1  0*0  0*-1 ]   [0 0  0  ]
    #   [0*2 .2*0 .6*-2 ] = [0 0 -1.2]
    #   [0*1 .4*0  1*-1 ]   [0 0 -1.0]   sum -2.2, + bias 0.5 = -1.7
    (0, 0): (
        [[0, 0, 0], [0, 0.2, 0.6], [0, 0.4, 1.0]],
        [[0, 0, 0], [0, 0, -1.2], [0, 0, -1.0]],
        -2.2,
        -1.7,
    ),
    # Top edge, one step right: only padded row -1 is zeros.
    #   [ 0*1   0*0   0*-1]   [ 0   0  0  ]
    #   [.2*2  .6*0  .9*-2] = [ .4  0 -1.8]
    #   [.4*1   1*0  .3*-1]   [ .4  0 -0.3]   sum .4-1.8+.4-.3 = -1.3, + 0.5 = -0.8
    (0, 1): (
        [[0, 0, 0], [0.2, 0.6, 0.9], [0.4, 1.0, 0.3]],
        [[0, 0, 0], [0.4, 0, -1.8], [0.4, 0, -0.3]],
        -1.3,
        -0.8,
    ),
    # Left of the stroke: columns 13, 14, 15 read 0, 1, .5 on each row.
    #   rows [0 0 -.5], [0 0 -1], [0 0 -.5]   sum -2, + 0.5 = -1.5
    (10, 14): (
        [[0, 1, 0.5]] * 3,
        [[0, 0, -0.5], [0, 0, -1.0], [0, 0, -0.5]],
        -2.0,
        -1.5,
    ),
    # On the stroke: columns 14, 15, 16 read 1, .5, 0; the middle column's weight is 0.
    #   rows [1 0 0], [2 0 0], [1 0 0]   sum 4, + 0.5 = 4.5
    (10, 15): (
        [[1, 0.5, 0]] * 3,
        [[1, 0, 0], [2, 0, 0], [1, 0, 0]],
        4.0,
        4.5,
    ),
    # Right of the stroke: columns 15, 16, 17 read .5, 0, 0.
    #   rows [.5 0 0], [1 0 0], [.5 0 0]   sum 2, + 0.5 = 2.5
    (10, 16): (
        [[0.5, 0, 0]] * 3,
        [[0.5, 0, 0], [1.0, 0, 0], [0.5, 0, 0]],
        2.0,
        2.5,
    ),
    # Bottom-right corner: padded row 28 and column 28, and blank paper: only the bias.
    (27, 27): ([[0, 0, 0]] * 3, [[0, 0, 0]] * 3, 0.0, 0.5),
}


@pytest.mark.parametrize("pos", list(PAPER_CASES))
def test_conv_step_matches_the_paper_arithmetic(pos, paper_model, paper_digit):
    patch, products, total, result = PAPER_CASES[pos]
    step = inspection.conv_step(paper_model, paper_digit, "conv_1_1", channel=3, row=pos[0], col=pos[1])
    assert step.padding == 1 and step.bias == pytest.approx(0.5)
    torch.testing.assert_close(step.kernel, torch.tensor([SOBEL]))
    torch.testing.assert_close(step.patches, torch.tensor([patch], dtype=torch.float32))  # (C_in=1, 3, 3)
    torch.testing.assert_close(step.products, torch.tensor([products], dtype=torch.float32))
    torch.testing.assert_close(step.channel_sums, torch.tensor([total]))
    assert step.result == pytest.approx(result, abs=1e-6)
    # The explanation is the layer's real output, before and after ReLU.
    acts = inspection.capture_activations(paper_model, paper_digit)
    assert float(acts["conv_1_1"][0, 3, pos[0], pos[1]]) == pytest.approx(result, abs=1e-6)
    assert float(acts["relu_1_1"][0, 3, pos[0], pos[1]]) == pytest.approx(max(result, 0.0), abs=1e-6)


@pytest.mark.parametrize("pos", [(0, 0), (0, 13), (13, 0), (7, 7), (13, 13)])
def test_conv_step_of_a_deeper_multichannel_layer_equals_its_activation(pos, digit):
    model = _tinyvgg()
    acts = inspection.capture_activations(model, digit)
    inp = acts["max_pool_1"][0]  # conv_2_1 reads the first block's pooled maps: (10, 14, 14)
    padded = nn.functional.pad(inp, (1, 1, 1, 1))  # (10, 16, 16)
    for channel in (0, 7):
        step = inspection.conv_step(model, digit, "conv_2_1", channel, *pos)
        r, c = pos
        assert step.patches.shape == (10, 3, 3)  # every input channel's window
        torch.testing.assert_close(step.patches, padded[:, r : r + 3, c : c + 3])
        torch.testing.assert_close(step.kernel, model.conv_2_1.weight.detach()[channel])
        torch.testing.assert_close(step.products, step.patches * step.kernel)
        torch.testing.assert_close(step.channel_sums, step.products.sum(dim=(1, 2)))
        assert step.result == pytest.approx(float(step.channel_sums.sum()) + step.bias, abs=1e-6)
        assert step.result == pytest.approx(float(acts["conv_2_1"][0, channel, r, c]), abs=1e-5)
        if r == 0:  # the row above the map is padding
            assert torch.all(step.patches[:, 0, :] == 0)
        if c == 13:  # the column right of the map is padding
            assert torch.all(step.patches[:, :, 2] == 0)


def test_conv_step_without_padding_reads_the_input_window(digit):
    model = _tinyvgg(padding=0)
    acts = inspection.capture_activations(model, digit)
    step = inspection.conv_step(model, digit, "conv_1_1", 2, 0, 0)
    assert step.padding == 0
    torch.testing.assert_close(step.patches, digit[0, :, 0:3, 0:3])
    assert step.result == pytest.approx(float(acts["conv_1_1"][0, 2, 0, 0]), abs=1e-5)
    with pytest.raises(TypeError, match="not a convolution"):
        inspection.conv_step(model, digit, "relu_1_1", 0, 0, 0)


# --- linear, softmax, pooling ------------------------------------------------


def test_linear_step_by_hand(paper_digit):
    model = _fcnet()
    with torch.no_grad():
        model.fc_1.weight[0] = 0.0
        model.fc_1.weight[0, 0] = 2.0  # pixel (0, 0) = 0.2
        model.fc_1.weight[0, 1] = -1.0  # pixel (0, 1) = 0.6
        model.fc_1.bias[0] = 0.25
    step = inspection.linear_step(model, paper_digit, "fc_1", 0)
    # 2 * 0.2 + (-1) * 0.6 + 0.25 = 0.4 - 0.6 + 0.25 = 0.05
    assert step.result == pytest.approx(0.05, abs=1e-6)
    assert step.inputs.shape == (784,)
    torch.testing.assert_close(step.inputs, paper_digit.flatten())


@pytest.mark.parametrize(
    "build, layer, neuron",
    [(_fcnet, "fc_1", 5), (_fcnet, "fc_2", 11), (_fcnet, "output", 3), (_tinyvgg, "output", 2)],
)
def test_linear_step_equals_the_activation(build, layer, neuron, digit):
    model = build()
    acts = inspection.capture_activations(model, digit)
    step = inspection.linear_step(model, digit, layer, neuron)
    lin = getattr(model, layer)
    assert step.inputs.shape == (lin.in_features,)  # 490 = 10 * 7 * 7 for TinyVGG's output
    torch.testing.assert_close(step.products, step.inputs * step.weights)
    assert step.result == pytest.approx(float(acts[layer][0, neuron]), abs=1e-5)
    with pytest.raises(TypeError, match="not a Linear"):
        inspection.linear_step(model, digit, "flatten", 0)


def test_softmax_step_matches_torch_and_does_not_overflow():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, 0.0, -2.0, 1.0, 0.25, -0.5, 1.5]])
    step = inspection.softmax_step(logits)
    assert float(step.probs.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(step.probs, torch.softmax(logits.double(), dim=1)[0])
    assert float(step.shifted.max()) == 0.0  # the largest logit, 3.0, is subtracted
    torch.testing.assert_close(step.exps, (logits[0].double() - 3.0).exp())
    assert step.total == pytest.approx(float(step.exps.sum()))

    huge = torch.tensor([1000.0, 999.0] + [0.0] * 8)  # exp(1000) overflows float64
    step = inspection.softmax_step(huge)
    assert torch.isfinite(step.probs).all()
    # e^0 / (e^0 + e^-1 + 8 e^-1000) = 1 / (1 + e^-1)
    assert float(step.probs[0]) == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-12)
    assert float(step.probs[1]) == pytest.approx(math.exp(-1) / (1 + math.exp(-1)), rel=1e-12)
    assert float(step.probs.sum()) == pytest.approx(1.0, abs=1e-12)


def test_pool_step_by_hand():
    fm = torch.tensor(
        [
            [1.0, 5.0, 2.0, 0.0],
            [3.0, 4.0, 8.0, 1.0],
            [0.0, -1.0, -3.0, -2.0],
            [-4.0, -5.0, 6.0, 7.0],
        ]
    )
    cases = {(0, 0): (5.0, (0, 1)), (0, 1): (8.0, (1, 0)), (1, 0): (0.0, (0, 0)), (1, 1): (7.0, (1, 1))}
    for (r, c), (value, argmax) in cases.items():
        step = inspection.pool_step(fm, r, c)
        assert step.result == value and step.argmax == argmax
        torch.testing.assert_close(step.window, fm[2 * r : 2 * r + 2, 2 * c : 2 * c + 2])


def test_pool_step_equals_the_model_pooling(digit):
    model = _tinyvgg()
    acts = inspection.capture_activations(model, digit)
    for r, c in [(0, 0), (6, 9), (13, 13)]:
        step = inspection.pool_step(acts["relu_1_2"][0, 4], r, c)
        assert step.result == float(acts["max_pool_1"][0, 4, r, c])
        i, j = step.argmax
        assert float(step.window[i, j]) == step.result


def test_relu():
    torch.testing.assert_close(inspection.relu(torch.tensor([-2.0, 0.0, 3.5])), torch.tensor([0.0, 0.0, 3.5]))


# --- capture_activations -----------------------------------------------------

TINYVGG_SHAPES = {
    "conv_1_1": (10, 28, 28), "relu_1_1": (10, 28, 28),
    "conv_1_2": (10, 28, 28), "relu_1_2": (10, 28, 28),
    "max_pool_1": (10, 14, 14),
    "conv_2_1": (10, 14, 14), "relu_2_1": (10, 14, 14),
    "conv_2_2": (10, 14, 14), "relu_2_2": (10, 14, 14),
    "max_pool_2": (10, 7, 7),
    "flatten": (490,),
    "output": (10,),
}  # fmt: skip
FCNET_SHAPES = {
    "flatten": (784,), "fc_1": (16,), "relu_1": (16,), "fc_2": (16,), "relu_2": (16,), "output": (10,),
}  # fmt: skip


@pytest.mark.parametrize("build, shapes", [(_tinyvgg, TINYVGG_SHAPES), (_fcnet, FCNET_SHAPES)])
def test_capture_activations_in_forward_order_with_described_shapes(build, shapes):
    model = build()
    x = data.to_input(data.synthetic_digits(3).images)  # (3, 1, 28, 28)
    acts = inspection.capture_activations(model, x)
    assert list(acts) == [name for name, _ in model.named_children()] == list(shapes)
    assert {k: tuple(v.shape) for k, v in acts.items()} == {k: (3, *s) for k, s in shapes.items()}
    assert {row.name: row.output_shape for row in models.describe(model)} == shapes
    with torch.no_grad():
        torch.testing.assert_close(acts["output"], model(x))  # the last entry is the logits


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "build, bad_input",
    [(_fcnet, torch.zeros(1, 1, 20, 20)), (_tinyvgg, torch.zeros(1, 3, 28, 28))],
)
def test_hooks_and_mode_are_restored_even_when_the_forward_pass_raises(build, bad_input, training, digit):
    model = build().train(training)
    requires_grad = [p.requires_grad for p in model.parameters()]
    inspection.capture_activations(model, digit)
    assert _hook_count(model) == 0 and model.training == training
    with pytest.raises(RuntimeError):  # a wrongly shaped digit: the matmul / conv refuses it
        inspection.capture_activations(model, bad_input)
    assert _hook_count(model) == 0
    assert model.training == training and all(m.training == training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(KeyError):
        inspection.layer_io(model, digit, "no_such_layer")
    assert _hook_count(model) == 0


def test_predict_proba_leaves_the_mode_alone(digit):
    model = _tinyvgg().train()
    p = inspection.predict_proba(model, digit)
    assert model.training and p.shape == (1, 10)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)


# --- models.describe: parameters and multiply-adds against the formulas ------


def _fc_expected(hidden: tuple[int, ...]) -> tuple[dict, dict]:
    widths = [784, *hidden, 10]
    names = [f"fc_{i}" for i in range(1, len(hidden) + 1)] + ["output"]
    params = {n: i * o + o for n, i, o in zip(names, widths, widths[1:])}  # weights + biases
    macs = {n: i * o for n, i, o in zip(names, widths, widths[1:])}  # one multiply-add per weight
    return params, macs


def _tinyvgg_expected(c: int, padding: int) -> tuple[dict, dict, int]:
    # Each 3 x 3 conv changes the side by 2 * padding - 2; each pool halves it.
    s1 = 28 + 2 * padding - 2
    s2 = s1 + 2 * padding - 2
    s3 = s2 // 2 + 2 * padding - 2
    s4 = s3 + 2 * padding - 2
    side = s4 // 2
    flat = c * side * side
    conv_in = {"conv_1_1": 1, "conv_1_2": c, "conv_2_1": c, "conv_2_2": c}
    conv_side = {"conv_1_1": s1, "conv_1_2": s2, "conv_2_1": s3, "conv_2_2": s4}
    params = {n: c * cin * 9 + c for n, cin in conv_in.items()}  # out * in * 3 * 3 + out
    macs = {n: conv_side[n] ** 2 * c * cin * 9 for n, cin in conv_in.items()}  # per output value: in * 9
    params["output"] = flat * 10 + 10
    macs["output"] = flat * 10
    return params, macs, flat


@pytest.mark.parametrize("hidden, total_params", [((16, 16), 13_002), ((128, 64), 109_386)])
def test_describe_fcnet_counts(hidden, total_params):
    model = _fcnet(hidden)
    rows = models.describe(model)
    params, macs = _fc_expected(hidden)
    assert {r.name: r.params for r in rows if r.params} == params
    assert {r.name: r.macs for r in rows if r.macs} == macs
    assert all(r.params == r.macs == 0 for r in rows if r.kind in ("ReLU", "Flatten"))
    # 784*16+16 + 16*16+16 + 16*10+10 = 12560 + 272 + 170 = 13002
    # 784*128+128 + 128*64+64 + 64*10+10 = 100480 + 8256 + 650 = 109386
    assert models.count_params(model) == sum(params.values()) == total_params
    assert models.count_macs(model) == sum(macs.values())


@pytest.mark.parametrize(
    "padding, flat, total_params, total_macs",
    [
        # 10*1*9+10 + 3*(10*10*9+10) + 490*10+10 = 100 + 2730 + 4910 = 7740
        # 28*28*10*9 + 28*28*10*90 + 2*(14*14*10*90) + 490*10 = 70560 + 705600 + 352800 + 4900
        (1, 10 * 7 * 7, 7_740, 1_133_860),
        # sides 26, 24, pool 12, 10, 8, pool 4: flatten 10*4*4 = 160
        # 100 + 2730 + 160*10+10 = 4440
        # 26*26*90 + 24*24*900 + 10*10*900 + 8*8*900 + 1600 = 60840 + 518400 + 90000 + 57600 + 1600
        (0, 10 * 4 * 4, 4_440, 728_440),
    ],
)
def test_describe_tinyvgg_counts(padding, flat, total_params, total_macs):
    model = _tinyvgg(padding)
    rows = {r.name: r for r in models.describe(model)}
    params, macs, expected_flat = _tinyvgg_expected(10, padding)
    assert expected_flat == flat == model.output.in_features
    assert rows["flatten"].output_shape == (flat,)
    assert {n: r.params for n, r in rows.items() if r.params} == params
    assert {n: r.macs for n, r in rows.items() if r.macs} == macs
    assert rows["max_pool_1"].macs == rows["relu_2_2"].params == 0
    assert models.count_params(model) == sum(params.values()) == total_params
    assert models.count_macs(model) == sum(macs.values()) == total_macs


# --- gradients checked numerically -------------------------------------------


def test_fcnet_gradients_pass_gradcheck():
    model = _fcnet(hidden=(3,)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64, generator=g).requires_grad_(True)
    # With respect to the input (fast mode: finite differences along random
    # directions, since 1568 inputs one at a time take seconds) ...
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    # ... and with respect to weights and biases of each layer.
    params = {n: p.detach() for n, p in model.named_parameters()}

    def logits(w_out, b_out, b_1):
        over = {**params, "output.weight": w_out, "output.bias": b_out, "fc_1.bias": b_1}
        return functional_call(model, over, (x.detach(),))

    names = ("output.weight", "output.bias", "fc_1.bias")
    inputs = tuple(params[n].clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(logits, inputs, eps=1e-6, atol=1e-5)


def test_tinyvgg_loss_gradient_matches_finite_differences():
    model = _tinyvgg().double()
    digits = data.synthetic_digits(4, seed=3)
    x, y = data.to_input(digits.images).double(), digits.labels

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)

    loss().backward()
    picks = [
        ("conv_1_1.weight", (0, 0, 1, 1)),
        ("conv_1_2.bias", (5,)),
        ("conv_2_2.weight", (3, 2, 0, 1)),
        ("output.weight", (7, 100)),
    ]
    named = dict(model.named_parameters())
    eps = 1e-6
    with torch.no_grad():
        for name, idx in picks:
            p = named[name]
            old = float(p[idx])
            p[idx] = old + eps
            up = float(loss())
            p[idx] = old - eps
            down = float(loss())
            p[idx] = old
            numeric = (up - down) / (2 * eps)  # central difference: error O(eps^2)
            assert float(p.grad[idx]) == pytest.approx(numeric, rel=1e-4, abs=1e-8), name


def test_capture_is_not_disturbed_by_another_thread_using_the_same_model():
    """The app shares one cached model between sessions: a capture must record its own
    digit even while another thread runs the same model on another digit."""
    import threading

    model = models.build(models.FCConfig(), seed=0).eval()
    mine, theirs = torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 28, 28)
    expected = inspection.capture_activations(model, mine)["fc_1"]
    stop = threading.Event()

    def other_session():
        while not stop.is_set():
            with torch.no_grad():
                model(theirs)

    thread = threading.Thread(target=other_session)
    thread.start()
    try:
        mismatches = sum(
            not torch.equal(inspection.capture_activations(model, mine)["fc_1"], expected) for _ in range(300)
        )
    finally:
        stop.set()
        thread.join()
    assert mismatches == 0
    assert not any(m._forward_hooks for m in model.modules())
