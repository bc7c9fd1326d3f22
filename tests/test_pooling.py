"""digitrec.pooling: the inference path of 2 x 2 max pooling gives max_pool2d's values exactly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import profile

from digitrec import layers, models, train
from digitrec.pooling import MaxPool2d, use_torch_pools


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


def test_training_keeps_max_pool2d_and_its_gradient():
    x = _maps(4, 10, 14).requires_grad_()
    reference = x.detach().clone().requires_grad_()
    out = MaxPool2d(2)(x)
    want = F.max_pool2d(reference, 2)
    grad = torch.randn_like(want)
    out.backward(grad)
    want.backward(grad)
    assert torch.equal(out, want) and torch.equal(x.grad, reference.grad)


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
