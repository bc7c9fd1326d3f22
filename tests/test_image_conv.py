"""digitrec.image_conv: the first convolution's training kernel (image_conv.c) gives PyTorch's
convolution's values and gradients, to rounding, and is taken only where it applies."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from digitrec import config, image_conv, models, native
from digitrec.image_conv import conv_then_relu
from tests.native_kernels import OTHER_WIDTHS, built_for, require_kernel


@pytest.fixture
def kernels():
    require_kernel("image_conv", instead="convolution")


def _images(batch, height, width, seed=0):
    """Digit-like inputs: mostly zeros (the background), the rest from -0.4 to 2.8 (normalised ink)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, height, width, generator=g) * 3.2 - 0.4
    x[torch.rand(x.shape, generator=g) < 0.6] = 0.0
    return x.contiguous(memory_format=torch.channels_last)


def _conv(channels, kernel, padding, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(1, channels, kernel, padding=padding, bias=bias).to(memory_format=torch.channels_last)


# Unit roundoff of each type: the kernel rounds each sum once, after adding in float32.
EPS = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}


def _assert_close_to(got: torch.Tensor, exact: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype):
    """``got`` is ``exact`` (float64) rounded once to ``dtype``, give or take float32 sums: within one
    unit of the result's last place, plus float32's error on the sum of the terms' sizes ``scale``."""
    error = (got.double() - exact).abs()
    allowed = 2 * EPS[dtype] * exact.abs() + 64 * EPS[torch.float32] * scale + 1e-30
    assert (error <= allowed).all(), f"off by {(error - allowed).max().item():.3g} beyond rounding"


# (batch, height, width, output channels, kernel, padding): TinyVGG's first layer, then sizes that
# test the edges: no padding, more padding than the kernel, even and large kernels, 1 x 1, more
# channels than a vector holds, an image narrower than the kernel is wide (with padding).
SHAPES = [(128, 28, 28, 10, 3, 1), (5, 14, 14, 10, 3, 0), (3, 7, 9, 7, 5, 2), (2, 4, 4, 33, 1, 0),
          (2, 6, 5, 3, 2, 1), (1, 3, 3, 16, 3, 4), (4, 28, 28, 64, 3, 1), (2, 2, 9, 20, 7, 3)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("batch,height,width,channels,kernel,padding", SHAPES)
def test_the_kernel_gives_the_convolutions_values_and_gradients(kernels, dtype, relu, batch, height, width,
                                                                channels, kernel, padding):
    x = _images(batch, height, width).to(dtype)
    conv = _conv(channels, kernel, padding).to(dtype)
    out = image_conv._KernelConv.apply(x, conv.weight, conv.bias, padding, relu)
    assert type(out.grad_fn).__name__ == "_KernelConvBackward"
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)

    # What the convolution is, in float64 on the same (rounded) numbers.
    x64, w64 = x.double(), conv.weight.detach().double().requires_grad_()
    b64 = conv.bias.detach().double().requires_grad_()
    exact = F.conv2d(x64, w64, b64, padding=padding)
    scale = F.conv2d(x64.abs(), w64.detach().abs(), b64.detach().abs(), padding=padding)
    assert out.shape == exact.shape
    if relu:  # PyTorch's relu: a negative sum is +0
        assert (out >= 0).all() and not torch.signbit(out[out == 0]).any()
        kept = out > 0
        _assert_close_to(out[kept], exact[kept], scale[kept], dtype)
        assert (exact[~kept] <= 2 * EPS[torch.float32] * scale[~kept]).all()
    else:
        _assert_close_to(out, exact, scale, dtype)

    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got_weight, got_bias = torch.autograd.grad(out, (conv.weight, conv.bias), grad)
    # The ReLU passes the gradient where the output is > 0: the kernel's own output decides.
    passed = grad.double() * (out > 0) if relu else grad.double()
    want_weight, want_bias = torch.autograd.grad(exact, (w64, b64), passed)
    scale_weight, scale_bias = torch.autograd.grad(F.conv2d(x64.abs(), w64, b64, padding=padding), (w64, b64),
                                                   passed.abs())
    assert got_weight.shape == conv.weight.shape and got_bias.shape == conv.bias.shape
    _assert_close_to(got_weight, want_weight, scale_weight, dtype)
    _assert_close_to(got_bias, want_bias, scale_bias, dtype)


def test_without_a_bias_it_gives_the_convolution_and_its_weight_gradient(kernels):
    x, conv = _images(3, 8, 8), _conv(5, 3, 1, bias=False)
    out = image_conv._KernelConv.apply(x, conv.weight, None, 1, False)
    x64, w64 = x.double(), conv.weight.detach().double().requires_grad_()
    exact = F.conv2d(x64, w64, padding=1)
    _assert_close_to(out, exact, F.conv2d(x64.abs(), w64.detach().abs(), padding=1), torch.float32)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (got,) = torch.autograd.grad(out, conv.weight, grad)
    (want,) = torch.autograd.grad(exact, w64, grad.double())
    (scale,) = torch.autograd.grad(F.conv2d(x64.abs(), w64, padding=1), w64, grad.double().abs())
    _assert_close_to(got, want, scale, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_nan_and_infinity_go_through_as_in_the_convolution(kernels, dtype):
    x, conv = _images(2, 6, 6), _conv(4, 3, 1)
    x[0, 0, 2, 3], x[1, 0, 0, 0] = float("nan"), float("inf")
    x, conv = x.to(dtype), conv.to(dtype)
    got = image_conv._KernelConv.apply(x, conv.weight, conv.bias, 1, False)
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
    relu_got = image_conv._KernelConv.apply(x, conv.weight, conv.bias, 1, True)
    assert torch.equal(relu_got.isnan(), want.isnan())  # relu keeps a NaN, as PyTorch's does
    # backward: a NaN output passes its gradient (threshold_backward's rule), so the weights' gradient
    # is NaN, as PyTorch's own convolution gives from a NaN pixel
    w_grad = torch.autograd.grad(relu_got, conv.weight, torch.ones_like(relu_got))[0]
    assert w_grad.isnan().any()


@pytest.mark.parametrize("march", OTHER_WIDTHS)
def test_each_vector_width_gives_the_convolution(kernels, march, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    library = built_for("image_conv", march)
    monkeypatch.setattr(image_conv, "_kernels", lambda: library)
    for dtype in (torch.bfloat16, torch.float32):
        for (batch, height, width, channels, kernel, padding), relu in zip(SHAPES, [False, True] * 4):
            x = _images(batch, height, width).to(dtype)
            conv = _conv(channels, kernel, padding).to(dtype)
            out = image_conv._KernelConv.apply(x, conv.weight, conv.bias, padding, relu)
            x64, w64, b64 = x.double(), conv.weight.detach().double(), conv.bias.detach().double()
            exact = F.conv2d(x64, w64, b64, padding=padding)
            scale = F.conv2d(x64.abs(), w64.abs(), b64.abs(), padding=padding)
            kept = out > 0 if relu else torch.ones_like(out, dtype=torch.bool)
            _assert_close_to(out[kept], exact[kept], scale[kept], dtype)
            assert not relu or (out[~kept] == 0).all()
            grad = torch.randn(out.shape).to(dtype)
            got = torch.autograd.grad(out, conv.weight, grad)[0]
            passed = grad.double() * kept
            w64.requires_grad_()
            want = torch.autograd.grad(F.conv2d(x64, w64, b64, padding=padding), w64, passed)[0]
            scale = torch.autograd.grad(F.conv2d(x64.abs(), w64, None, padding=padding), w64, passed.abs())[0]
            _assert_close_to(got, want, scale, dtype)


def test_tinyvgg_trains_its_first_convolution_and_relu_in_one_pass(kernels, monkeypatch):
    """In training, SpecNet.forward takes the kernel for conv_1_1 with relu_1_1 after it; the logits
    and every gradient are those of PyTorch's convolution, to bfloat16's rounding."""
    model = models.build(models.PRESETS["cnn"], seed=0).to(memory_format=torch.channels_last)
    x = _images(32, 28, 28)
    calls = []
    real_forward = image_conv._KernelConv.forward

    def counted(ctx, *args):
        calls.append(args[-1])  # relu
        return real_forward(ctx, *args)

    monkeypatch.setattr(image_conv._KernelConv, "forward", staticmethod(counted))

    def logits_and_grads():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        logits.float().pow(2).sum().backward()
        return [logits.detach().float()] + [p.grad.clone() for p in model.parameters()]

    fused = logits_and_grads()
    assert calls == [True]
    monkeypatch.setattr(image_conv, "conv_then_relu", lambda conv, relu, x: None)
    torch_conv = logits_and_grads()
    assert calls == [True]
    for name, a, b in zip(["logits"] + [n for n, _ in model.named_parameters()], fused, torch_conv):
        # bfloat16 rounds each activation to 3 significant digits, in different places on each path
        assert torch.allclose(a, b, rtol=0.05, atol=0.02 * b.abs().max().item()), name


def test_it_is_not_taken_where_it_does_not_apply(kernels):
    x = _images(2, 8, 8)
    relu = nn.ReLU()
    assert conv_then_relu(_conv(4, 3, 1), relu, x) is not None
    for conv in (nn.Conv2d(1, 4, 3, stride=2), nn.Conv2d(1, 4, 3, dilation=2), nn.Conv2d(1, 4, 3, padding="same"),
                 nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(1, 4, (3, 5)),
                 nn.Conv2d(1, 4, 3, padding=(1, 0)), nn.Conv2d(3, 4, 3), nn.Conv2d(1, 4, 9)):
        assert conv_then_relu(conv, relu, x if conv.in_channels == 1 else x.repeat(1, 3, 1, 1)) is None, conv
    conv = _conv(4, 3, 1)
    assert conv_then_relu(conv, relu, x.clone().requires_grad_()) is None  # the image wants a gradient
    assert conv_then_relu(conv.double(), relu, x.double()) is None  # a type without a kernel
    assert conv_then_relu(conv.float(), relu, x.double()) is None  # types that differ: PyTorch says so
    with torch.autocast("cpu", dtype=torch.float16):
        assert conv_then_relu(conv, relu, x) is None  # autocast to a type without a kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv_then_relu(conv.double(), relu, x.double()) is None  # autocast leaves float64 alone
        conv.float()
        y, _ = conv_then_relu(conv, relu, x)
        assert y.dtype == torch.bfloat16  # as autocast's convolution gives
    negative = nn.Conv2d(1, 4, 3, padding=1)
    negative.padding = (-1, -1)  # changed after it was made: PyTorch's convolution refuses it
    assert conv_then_relu(negative, relu, x) is None
    with torch.no_grad():
        assert conv_then_relu(conv, relu, x) is None
    conv.eval()
    assert conv_then_relu(conv, relu, x) is None  # evaluation and every explorer keep PyTorch's
    conv.train()
    for register in (conv.register_forward_hook, conv.register_forward_pre_hook,
                     conv.register_full_backward_hook, nn.modules.module.register_module_forward_hook):
        handle = register(lambda *args: None)
        try:
            assert conv_then_relu(conv, relu, x) is None, register
        finally:
            handle.remove()
    assert conv_then_relu(conv, relu, x) is not None


def test_a_relu_that_is_watched_or_in_place_runs_on_its_own(kernels):
    x, conv = _images(2, 8, 8), _conv(4, 3, 1)
    assert conv_then_relu(conv, nn.ReLU(), x)[1] == 2
    assert conv_then_relu(conv, nn.ReLU(inplace=True), x)[1] == 1
    assert conv_then_relu(conv, nn.Tanh(), x)[1] == 1
    assert conv_then_relu(conv, None, x)[1] == 1
    relu = nn.ReLU()
    seen = []
    handle = relu.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        y, ran = conv_then_relu(conv, relu, x)
    finally:
        handle.remove()
    assert ran == 1 and (y < 0).any()  # the ReLU is left to run, and its hook to see it


def test_switched_off_training_keeps_pytorchs_convolution(monkeypatch):
    monkeypatch.setenv(config.NATIVE_ENV, "0")
    native.load.cache_clear()
    try:
        assert conv_then_relu(_conv(4, 3, 1), nn.ReLU(), _images(2, 8, 8)) is None
    finally:
        native.load.cache_clear()


def test_a_model_trained_with_the_kernel_learns_as_with_pytorchs(kernels, mnist, monkeypatch):
    """Eighty steps of TinyVGG's training with the kernel and without: the loss falls alike (measured:
    2.30 to 0.43 either way, the two curves within 1 % of each other at every tenth step)."""
    from digitrec import train

    def losses() -> list[float]:
        seen = []

        class Record(train.Callback):
            def on_step_end(self, state):
                seen.append(state.loss)

        model = models.build(models.PRESETS["cnn"], seed=0)
        train.fit(model, mnist, train.TrainConfig(epochs=1, max_steps=80, evaluate_each_epoch=False), callbacks=[Record()])
        return seen

    with_kernel = losses()
    monkeypatch.setattr(image_conv, "_kernels", lambda: None)
    without = losses()
    assert with_kernel[0] == pytest.approx(without[0], rel=0.02)  # the same first batch, the same start
    late = sum(with_kernel[-10:]) / 10, sum(without[-10:]) / 10
    assert late[0] < 0.3 * with_kernel[0] and late[0] == pytest.approx(late[1], rel=0.1)
