"""digitrec.fusion: evaluation with each conv+ReLU as one oneDNN call gives the model's own numbers."""

import pytest
import torch
from torch import nn
from torch.profiler import profile

from digitrec import checkpoints, data, fusion, inspection, layers, models, train

pytestmark = pytest.mark.skipif(not fusion.available(), reason="this PyTorch has no oneDNN fused convolution")

FUSED = "mkldnn::_convolution_pointwise"


def _ops(fn) -> set[str]:
    """The operations ``fn`` ran."""
    with profile() as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def _batch(mnist, model, n=500):
    return inspection.as_model_reads(data.to_input(mnist.test.images[:n]), model)


@pytest.mark.parametrize("weights", ["trained", "untrained"])
def test_tinyvggs_fused_pass_gives_its_logits_bit_for_bit_on_real_digits(mnist, weights):
    model = checkpoints.load_pretrained("cnn").model if weights == "trained" else models.build(models.PRESETS["cnn"], seed=0)
    model = inspection.channels_last(model).eval()
    x = _batch(mnist, model)
    with torch.inference_mode():
        want = model(x)
        got = fusion.forward(model, x)
        ops = _ops(lambda: fusion.forward(model, x))
    assert torch.equal(got, want)
    # Every ReLU follows a convolution: fused calls, and no ReLU of its own left.
    assert FUSED in ops and "aten::relu" not in ops and "aten::clamp_min" not in ops


def test_an_evaluation_takes_the_fused_path_and_gives_the_models_own_numbers(mnist):
    model = checkpoints.load_pretrained("cnn").model
    digits = data.DigitSet(mnist.test.images[:2000], mnist.test.labels[:2000])
    ops = _ops(lambda: train.evaluate_each(model, digits))
    losses, right = train.evaluate_each(model, digits)
    with torch.inference_mode():
        logits = inspection.channels_last(model).eval()(_batch(mnist, model, 2000))
    assert FUSED in ops
    assert torch.equal(right, logits.argmax(dim=1) == digits.labels)
    assert torch.equal(losses, nn.functional.cross_entropy(logits, digits.labels, reduction="none"))
    probabilities = train.predictions(model, digits)
    assert torch.equal(probabilities, torch.softmax(logits, dim=1))


def test_a_learners_network_fuses_only_conv_then_relu_and_keeps_its_normalisation(mnist):
    # conv+ReLU (fused: strided without bias, 5 x 5 without padding), conv+LeakyReLU and a conv without
    # an activation (called as they are), normalised input.
    spec = layers.parse("conv3x3(6,s=2,p=1,bias=0) relu conv(6,k=5) relu conv3x3(6) leakyrelu conv3x3(4,s=2) "
                        "maxpool2 flatten linear(10)",
                        mean=layers.MNIST_MEAN, std=layers.MNIST_STD, name="mine")
    assert spec.normalised
    model = inspection.channels_last(layers.SpecNet(spec)).eval()
    x = _batch(mnist, model, 64)
    with torch.inference_mode():
        want = model(x)
        got = fusion.forward(model, x)
        ops = _ops(lambda: fusion.forward(model, x))
    assert torch.equal(got, want)
    assert FUSED in ops


def test_where_conv2d_would_not_use_onednn_nothing_is_fused_and_the_numbers_stay_the_models(mnist):
    model = inspection.channels_last(checkpoints.load_pretrained("cnn").model).eval()
    # One digit at a time: conv2d takes another kernel, whose sums differ from oneDNN's in the last bits.
    with torch.inference_mode():
        for i in range(20):
            x = _batch(mnist, model, 21)[i : i + 1]
            assert torch.equal(fusion.forward(model, x), model(x)), f"digit {i}"
        assert FUSED not in _ops(lambda: fusion.forward(model, x))

    # A 1 x 1 convolution on a small batch with one thread goes to another kernel too.
    one_by_one = layers.SpecNet(layers.parse("conv(8,k=1) relu conv(4,k=1) relu flatten linear(10)")).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            x = _batch(mnist, one_by_one, 2)
            assert torch.equal(fusion.forward(one_by_one, x), one_by_one(x))
            assert FUSED not in _ops(lambda: fusion.forward(one_by_one, x))
    finally:
        torch.set_num_threads(threads)

    # oneDNN switched off: conv2d does not use it, so neither does the fused pass.
    with torch.backends.mkldnn.flags(enabled=False), torch.inference_mode():
        x = _batch(mnist, model, 64)
        assert torch.equal(fusion.forward(model, x), model(x))
        assert FUSED not in _ops(lambda: fusion.forward(model, x))


def test_a_hook_a_gradient_or_another_model_gets_the_models_own_forward(mnist):
    model = inspection.channels_last(models.build(models.PRESETS["cnn"], seed=0)).eval()
    x = _batch(mnist, model, 8)
    with torch.inference_mode():
        assert FUSED in _ops(lambda: fusion.forward(model, x))  # unwatched, this batch is fused
    seen = []
    handle = model.relu_1_1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.inference_mode():
            ops = _ops(lambda: fusion.forward(model, x))
    finally:
        handle.remove()
    assert seen and FUSED not in ops  # a page watching a ReLU still sees it run

    seen.clear()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(type(m)))
    try:
        with torch.inference_mode():
            ops = _ops(lambda: fusion.forward(model, x))
    finally:
        handle.remove()
    assert nn.ReLU in seen and FUSED not in ops  # a hook on every module

    ops = _ops(lambda: fusion.forward(model, x))  # gradients on (training, Captum)
    assert FUSED not in ops

    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    with torch.inference_mode():
        assert FUSED not in _ops(lambda: fusion.forward(plain, x))
