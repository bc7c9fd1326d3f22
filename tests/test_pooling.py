"""digitrec.pooling: 2 x 2 max pooling's inference path and its training kernel (pooling.c) give
max_pool2d's values, winners and gradients exactly."""

import logging
import os
import shutil
import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import profile

from digitrec import config, image_conv, layers, models, native, pooling, train
from digitrec.pooling import MaxPool2d, use_torch_pools
from tests.native_kernels import OTHER_WIDTHS, built_for, require_kernel


def _ops(fn) -> set[str]:
    """The ATen operations ``fn`` ran."""
    with profile() as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def _maps(batch, channels, size, dtype=torch.float32, seed=0, after_relu=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g)
    x = (x.relu() if after_relu else x).round(decimals=1)  # ties inside windows (and windows of zeros)
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("no_gradient", [torch.inference_mode, torch.no_grad])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,channels,size,after_relu",
                         [(1, 10, 28, True), (7, 10, 14, True), (3, 1, 2, False), (2, 16, 6, False)])
def test_the_inference_path_gives_max_pool2ds_values_and_skips_its_indices(
        no_gradient, dtype, batch, channels, size, after_relu):
    x = _maps(batch, channels, size, dtype, after_relu=after_relu)
    x[0, 0, 0, 1] = float("nan")  # a NaN wins its window, as in max_pool2d
    pool = MaxPool2d(2)
    with no_gradient():
        got = pool(x)
        ops = _ops(lambda: pool(x))
    want = F.max_pool2d(x, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)  # exactly, NaN included
    assert torch.isnan(got[0, 0, 0, 0])
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert "aten::maximum" in ops and "aten::max_pool2d_with_indices" not in ops


@pytest.mark.parametrize(
    "pool,x",
    [
        (MaxPool2d(2), _maps(2, 10, 14).contiguous()),  # not channels-last
        (MaxPool2d(2), _maps(2, 10, 7)),  # odd size: max_pool2d drops the last row and column
        (MaxPool2d(3), _maps(2, 10, 12)),
        (MaxPool2d(2, stride=1), _maps(2, 10, 12)),
        (MaxPool2d(2, padding=1), _maps(2, 10, 12)),
        (MaxPool2d(2, ceil_mode=True), _maps(2, 10, 7)),
    ],
)
def test_every_other_pool_is_max_pool2d_itself(pool, x):
    with torch.inference_mode():
        got = pool(x)
        ops = _ops(lambda: pool(x))
    assert torch.equal(got, pool.as_torch()(x))
    assert "aten::max_pool2d_with_indices" in ops


def _awkward_maps(batch, channels, height, width, dtype, seed=0):
    """Maps full of what decides a window's winner: ties, -0 beside +0, infinities and NaNs."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, channels, height, width, generator=g) * 2).round() / 2  # many ties
    x[x.abs() < 0.3] = -0.0
    x[(x == 0) & (torch.rand(x.shape, generator=g) < 0.5)] = 0.0
    flat = x.view(-1)
    picked = torch.randperm(flat.numel(), generator=g)[: max(3, flat.numel() // 40)]
    flat[picked[0::3]], flat[picked[1::3]], flat[picked[2::3]] = float("nan"), float("inf"), -float("inf")
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


def _same_values(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal bit for bit (so -0 is not +0), NaN where ``want`` has NaN (whose bits max_pool2d itself
    does not keep: its bfloat16 kernel writes the standard NaN, its vectorised conversions another)."""
    nan = want.isnan()
    return torch.equal(got.isnan(), nan) and torch.equal(_bits(got)[~nan], _bits(want)[~nan])


@pytest.fixture
def kernels():
    require_kernel("pooling", instead="max_pool2d")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(128, 10, 28, 28), (5, 10, 14, 14), (3, 1, 2, 2), (2, 3, 4, 6), (2, 10, 2, 4),
                                   (4, 16, 8, 8), (1, 33, 6, 10), (2, 7, 30, 30)])
def test_training_pools_with_the_kernel_and_gets_max_pool2ds_values_and_gradients(kernels, dtype, shape):
    x = _awkward_maps(*shape, dtype)
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    pool = MaxPool2d(2)  # a new module is in training mode
    out = pool(mine)
    ops = _ops(lambda: pool(x.clone().requires_grad_()).sum().backward())
    want = F.max_pool2d(reference, 2)
    grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (got_grad,) = torch.autograd.grad(out, mine, grad)
    (want_grad,) = torch.autograd.grad(want, reference, grad)

    assert type(out.grad_fn).__name__ == "_KernelPoolBackward" and "aten::max_pool2d_with_indices" not in ops
    assert _same_values(out, want) and out.is_contiguous(memory_format=torch.channels_last)
    # the gradient goes to the same winner of every window (the first maximum, the last NaN)
    assert torch.equal(_bits(got_grad), _bits(want_grad))
    assert got_grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("march", OTHER_WIDTHS)
def test_each_vector_width_gives_the_same_numbers(kernels, march, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    library = built_for("pooling", march)
    monkeypatch.setattr(pooling, "_kernels", lambda: library)
    for dtype in (torch.bfloat16, torch.float32):
        for shape in ((2, 7, 30, 30), (16, 10, 28, 28), (1, 33, 6, 10), (3, 1, 2, 2)):
            x = _awkward_maps(*shape, dtype)
            mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
            out, want = MaxPool2d(2)(mine), F.max_pool2d(reference, 2)
            grad = torch.randn(want.shape).to(dtype)
            assert type(out.grad_fn).__name__ == "_KernelPoolBackward"
            assert _same_values(out, want)
            assert torch.equal(_bits(torch.autograd.grad(out, mine, grad)[0]),
                               _bits(torch.autograd.grad(want, reference, grad)[0]))
            out = pooling.relu_then_pool(nn.ReLU(), MaxPool2d(2), mine)
            want = F.max_pool2d(torch.relu(reference), 2)
            assert _same_values(out, want)
            assert torch.equal(_bits(torch.autograd.grad(out, mine, grad)[0]),
                               _bits(torch.autograd.grad(want, reference, grad)[0]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("relu_first", [False, True])
def test_a_gradient_of_minus_zero_nan_and_infinity_arrives_as_max_pool2ds(kernels, dtype, relu_first):
    x = _awkward_maps(4, 10, 14, 14, dtype)
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = pooling._KernelPool.apply(mine, relu_first)
    want = F.max_pool2d(torch.relu(reference) if relu_first else reference, 2)
    grad = _awkward_maps(4, 10, 7, 7, dtype, seed=3)  # -0, +0, infinities and NaN among the gradients
    (got,) = torch.autograd.grad(out, mine, grad)
    (expected,) = torch.autograd.grad(want, reference, grad)
    assert _same_values(got, expected)


def test_the_kernel_takes_a_gradient_that_is_not_channels_last(kernels):
    x = _awkward_maps(4, 10, 14, 14, torch.bfloat16)
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(4, 10, 7, 7).to(torch.bfloat16)  # as Flatten's backward hands it: (n, c, h, w) order
    (got,) = torch.autograd.grad(MaxPool2d(2)(mine), mine, grad)
    (want,) = torch.autograd.grad(F.max_pool2d(reference, 2), reference, grad)
    assert torch.equal(_bits(got), _bits(want))


@pytest.mark.parametrize(
    "case",
    ["evaluation mode", "not channels-last", "odd size", "float64", "3 x 3 window"],
)
def test_every_other_pool_with_a_gradient_is_max_pool2d_itself(kernels, case):
    x = _maps(2, 10, 7 if case == "odd size" else 12, after_relu=False)
    pool = MaxPool2d(3 if case == "3 x 3 window" else 2)
    if case == "evaluation mode":  # Captum's gradients, the backward step-through
        pool.eval()
    if case == "not channels-last":
        x = x.contiguous()
    if case == "float64":
        x = x.double()
    x.requires_grad_()
    ops = _ops(lambda: pool(x).sum().backward())
    assert "aten::max_pool2d_with_indices" in ops
    reference = x.detach().clone().requires_grad_()
    want = pool.as_torch()(reference)
    out = pool(x)
    grad = torch.randn_like(want)
    x.grad = None
    out.backward(grad)
    want.backward(grad)
    assert torch.equal(out, want) and torch.equal(x.grad, reference.grad)


def test_switched_off_training_keeps_max_pool2d(monkeypatch):
    monkeypatch.setenv(config.NATIVE_ENV, "0")
    native.load.cache_clear()
    try:
        x = _maps(2, 10, 12).requires_grad_()
        assert native.load("pooling") is None
        assert "aten::max_pool2d_with_indices" in _ops(lambda: MaxPool2d(2)(x).sum().backward())
    finally:
        native.load.cache_clear()


def test_without_a_compiler_it_says_why_once_and_training_pools_as_before(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing compiled yet
    native.load.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="digitrec.native"):
            x = _maps(2, 10, 12).requires_grad_()
            out = MaxPool2d(2)(x)
            MaxPool2d(2)(x)
        assert torch.equal(out, F.max_pool2d(x, 2)) and type(out.grad_fn).__name__ != "_KernelPoolBackward"
        warnings = [r.getMessage() for r in caplog.records if r.name == "digitrec.native"]
        assert len(warnings) == 1 and "pooling" in warnings[0] and "no-such-compiler" in warnings[0]
    finally:
        native.load.cache_clear()


def test_the_kernel_is_compiled_once_per_source_and_processor(kernels, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    source = tmp_path / "pooling.c"
    shutil.copy(native.SOURCES / "pooling.c", source)
    first = native._compiled(source)
    built_at = first.stat().st_mtime_ns
    assert native._compiled(source) == first and first.stat().st_mtime_ns == built_at  # not compiled again
    source.write_text(source.read_text() + "\n/* changed */\n")
    changed = native._compiled(source)
    assert changed != first and changed.exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "digitrec").iterdir()) == sorted([first.name, changed.name])


def test_a_training_run_gives_the_same_weights_with_the_kernel_and_without(kernels, mnist, monkeypatch):
    """TinyVGG's training forward pass pools bfloat16 maps (or float32 where the processor has no
    bfloat16); both pools then run on pooling.c with the ReLU before them, and 40 steps end on the
    same weights, bit for bit."""
    def trained() -> list[torch.Tensor]:
        model = models.build(models.PRESETS["cnn"], seed=0)
        train.fit(model, mnist, train.TrainConfig(epochs=1, max_steps=40, batch_size=64))
        return [p.detach().clone() for p in model.parameters()]

    # The first convolution keeps PyTorch's in both runs: its kernel (digitrec.image_conv) adds in
    # another order, and only the pools are compared here.
    monkeypatch.setattr(image_conv, "_kernels", lambda: None)
    calls = []
    real_forward = pooling._KernelPool.forward
    monkeypatch.setattr(pooling._KernelPool, "forward",
                        staticmethod(lambda ctx, x, relu_first: calls.append(relu_first) or real_forward(ctx, x, relu_first)))
    with_kernel = trained()
    assert calls == [True] * (2 * 40)  # each pool with the ReLU before it, in one pass
    monkeypatch.setenv(config.NATIVE_ENV, "0")
    native.load.cache_clear()
    try:
        without = trained()
    finally:
        monkeypatch.delenv(config.NATIVE_ENV)
        native.load.cache_clear()
    assert len(calls) == 2 * 40
    assert all(torch.equal(a, b) for a, b in zip(with_kernel, without))


def test_networks_are_built_with_it_and_read_back_as_max_pool2d():
    model = models.build(models.PRESETS["cnn"], seed=0)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(type(m) is MaxPool2d for m in pools)
    kinds = [layer.kind for layer in layers.spec_from_module(model).layers]
    assert kinds == [layer.kind for layer in models.PRESETS["cnn"].spec().layers]


def test_an_evaluation_gives_the_same_numbers_as_with_torchs_max_pool(mnist):
    model = models.build(models.PRESETS["cnn"], seed=0)
    fast = train.evaluate_each(model, mnist.test)
    plain = train.evaluate_each(use_torch_pools(model), mnist.test)
    assert not any(isinstance(m, MaxPool2d) for m in model.modules())
    assert torch.equal(fast[0], plain[0]) and torch.equal(fast[1], plain[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(16, 10, 28, 28), (3, 1, 2, 2), (1, 33, 6, 10)])
def test_a_relu_and_the_pool_after_it_in_one_pass_give_their_values_and_gradients(kernels, dtype, shape):
    x = _awkward_maps(*shape, dtype)  # half negative: the ReLU's zeros tie in many windows
    relu, pool = nn.ReLU(), MaxPool2d(2)
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = pooling.relu_then_pool(relu, pool, mine)
    want = F.max_pool2d(torch.relu(reference), 2)
    grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    (got_grad,) = torch.autograd.grad(out, mine, grad)
    (want_grad,) = torch.autograd.grad(want, reference, grad)
    assert type(out.grad_fn).__name__ == "_KernelPoolBackward"
    assert _same_values(out, want)  # a negative became +0, -0 stayed -0
    # the gradient stops where the window's output is <= 0 (and passes through a NaN, as relu's does)
    assert torch.equal(_bits(got_grad), _bits(want_grad))


def test_a_relu_and_its_pool_run_apart_where_a_hook_watches_or_in_evaluation(kernels):
    model = models.build(models.PRESETS["cnn"], seed=0).to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    assert pooling.relu_then_pool(model.relu_1_2, model.max_pool_1, _maps(4, 10, 28).requires_grad_()) is not None
    seen = []
    handle = model.relu_1_2.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        model(x).sum().backward()
    finally:
        handle.remove()
    assert seen == [torch.Size([4, 10, 28, 28])]  # the page's hook saw the ReLU's output
    model.eval()
    assert pooling.relu_then_pool(model.relu_1_2, model.max_pool_1, _maps(4, 10, 28).requires_grad_()) is None
    with torch.no_grad():
        assert pooling.relu_then_pool(model.relu_1_1, model.max_pool_1, _maps(4, 10, 28)) is None
    assert pooling.relu_then_pool(model.conv_1_2, model.max_pool_1, _maps(4, 10, 28).requires_grad_()) is None


def test_a_training_forward_pass_gives_the_models_numbers_with_and_without_the_fused_pass(kernels, monkeypatch):
    """SpecNet.forward in training takes the fused pass; its logits and every gradient are those of
    running each module in turn."""
    torch.manual_seed(0)
    model = models.build(models.PRESETS["cnn"], seed=0).to(memory_format=torch.channels_last)
    x = torch.rand(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)

    def logits_and_grads():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        logits.float().sum().backward()
        return [logits.detach()] + [p.grad.clone() for p in model.parameters()]

    fused = logits_and_grads()
    monkeypatch.setattr(pooling, "relu_then_pool", lambda relu, pool, x: None)
    apart = logits_and_grads()
    assert all(torch.equal(a, b) for a, b in zip(fused, apart))


def test_a_cache_that_cannot_be_written_gives_way_to_a_private_temporary_folder(kernels, monkeypatch, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    library = native._compiled(native.SOURCES / "pooling.c")
    private = tmp_path / "tmp" / f"digitrec-{os.getuid()}"
    assert library.parent == private and library.exists()
    assert private.stat().st_mode & 0o777 == 0o700


def test_a_temporary_folder_others_may_write_to_is_not_used(monkeypatch, tmp_path, caplog):
    """In a shared /tmp another account could make the folder first and plant a library in it."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    planted = tmp_path / "tmp" / f"digitrec-{os.getuid()}"
    planted.mkdir(parents=True)
    planted.chmod(0o777)
    with pytest.raises(OSError, match="not a folder of this user's alone"):
        native._compiled(native.SOURCES / "pooling.c")
    assert list(planted.iterdir()) == []
    native.load.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="digitrec.native"):
            assert native.load("pooling") is None  # and training keeps PyTorch's pooling
        assert "this user's alone" in caplog.text
    finally:
        native.load.cache_clear()
