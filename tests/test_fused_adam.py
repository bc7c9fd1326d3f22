"""digitrec.fused_adam: fit's Adam step without torch.optim's Python gives optimizer.step()'s bits."""

import copy

import pytest
import torch
from torch import nn
from torch.profiler import profile

from digitrec import data, fused_adam, models, train


def _twins(key: str = "fc", lr: float = 3e-3, **adam):
    """Two identical models, each with its own fused Adam and one-cycle schedule (which moves lr and beta1)."""
    pair = []
    for _ in range(2):
        model = models.build(models.PRESETS[key], seed=0)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True, **adam)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=40)
        pair.append((model, optimizer, schedule))
    return pair


def _set_gradients(models_: list, seed: int, skip: str | None = None) -> None:
    """The same random gradient on both models' weights (none on ``skip``)."""
    make = torch.Generator().manual_seed(seed)
    grads = {name: torch.randn(p.shape, generator=make) for name, p in models_[0].named_parameters()}
    for model in models_:
        for name, p in model.named_parameters():
            p.grad = None if name == skip else grads[name].clone()


def _assert_same(a: tuple, b: tuple) -> None:
    (model_a, opt_a, _), (model_b, opt_b, _) = a, b
    for (name, p), q in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), name
        sa, sb = opt_a.state.get(p, {}), opt_b.state.get(q, {})
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (name, key)


def _optimizer_steps(fn) -> dict[str, int]:
    """How many steps ``fn`` took through torch.optim and how many went straight to the kernel."""
    with profile() as seen:
        fn()
    counts = {e.key: e.count for e in seen.key_averages()}
    return {"torch": counts.get("Optimizer.step#Adam.step", 0), "direct": counts.get(fused_adam.PROFILER_LABEL, 0)}


@pytest.mark.parametrize("key", ["fc", "cnn"])
def test_the_direct_step_gives_optimizer_steps_weights_moments_and_counts_bit_for_bit(key):
    mine, torchs = _twins(key)
    step = fused_adam.step_function(mine[1])
    assert step != mine[1].step

    def thirty_steps():
        for i in range(30):
            _set_gradients([mine[0], torchs[0]], seed=i)
            step()
            torchs[1].step()
            mine[2].step()
            torchs[2].step()
            _assert_same(mine, torchs)

    # torch.optim's own step ran 31 times: the reference's 30 and our first (it creates the state);
    # our other 29 went straight to the kernel.
    assert _optimizer_steps(thirty_steps) == {"torch": 31, "direct": 29}
    # The schedule really moved what the kernel reads.
    assert mine[1].param_groups[0]["lr"] != pytest.approx(3e-3 / 25)
    assert mine[1].param_groups[0]["betas"][0] != pytest.approx(0.95)


def test_a_step_with_weight_decay_goes_direct_with_the_same_bits():
    mine, torchs = _twins(weight_decay=0.01)
    step = fused_adam.step_function(mine[1])

    def ten_steps():
        for i in range(10):
            _set_gradients([mine[0], torchs[0]], seed=i)
            step()
            torchs[1].step()
            _assert_same(mine, torchs)

    assert _optimizer_steps(ten_steps) == {"torch": 11, "direct": 9}


def test_a_weight_without_a_gradient_and_a_hook_go_through_torch_optim():
    mine, torchs = _twins()
    step = fused_adam.step_function(mine[1])
    for i in range(4):
        _set_gradients([mine[0], torchs[0]], seed=i)
        step()
        torchs[1].step()
    # A step where one weight has no gradient: torch.optim leaves that weight alone.
    frozen = next(iter(dict(mine[0].named_parameters())))
    _set_gradients([mine[0], torchs[0]], seed=10, skip=frozen)
    before = dict(mine[0].named_parameters())[frozen].detach().clone()
    assert _optimizer_steps(step) == {"torch": 1, "direct": 0}
    torchs[1].step()
    _assert_same(mine, torchs)
    assert torch.equal(dict(mine[0].named_parameters())[frozen], before)

    seen = []
    handle = mine[1].register_step_pre_hook(lambda opt, args, kwargs: seen.append(1))
    try:
        for i in range(3):
            _set_gradients([mine[0], torchs[0]], seed=20 + i)
            step()
            torchs[1].step()
    finally:
        handle.remove()
    assert len(seen) == 3  # every step called the hook, as optimizer.step() does
    _assert_same(mine, torchs)


def _reload(model, optimizer):
    optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    optimizer.param_groups[0]["lr"] = 0.02


def _forget(model, optimizer):
    optimizer.state.clear()


def _grow(model, optimizer):
    model.extra = nn.Parameter(torch.ones(3))
    optimizer.add_param_group({"params": [model.extra]})


@pytest.mark.parametrize("change", [_reload, _forget, _grow], ids=["loaded state, new lr", "state cleared",
                                                                     "group added"])
def test_what_changes_the_optimizer_between_steps_is_seen_as_optimizer_step_sees_it(change):
    mine, torchs = _twins()
    step = fused_adam.step_function(mine[1])
    for i in range(6):
        if i == 3:
            change(mine[0], mine[1])
            change(torchs[0], torchs[1])
        _set_gradients([mine[0], torchs[0]], seed=i)
        if change is _grow and i >= 3:
            for model in (mine[0], torchs[0]):
                model.extra.grad = torch.full((3,), 0.5)
        step()
        torchs[1].step()
        _assert_same(mine, torchs)
    if change is _grow:
        assert torch.equal(mine[0].extra, torchs[0].extra) and not torch.equal(mine[0].extra, torch.ones(3))


def test_other_optimizers_and_settings_keep_optimizer_step():
    model = models.build(models.PRESETS["fc"], seed=0)
    for optimizer in (torch.optim.Adam(model.parameters()),  # not fused
                      torch.optim.Adam(model.parameters(), fused=True, amsgrad=True),
                      torch.optim.AdamW(model.parameters(), fused=True),
                      torch.optim.SGD(model.parameters(), lr=0.1)):
        assert fused_adam.step_function(optimizer) == optimizer.step
    # Several groups, or weights in float64: torch.optim takes every step.
    in_groups = torch.optim.Adam([{"params": [p]} for p in model.parameters()], fused=True)
    in_float64 = torch.optim.Adam(models.build(models.PRESETS["fc"], seed=0).double().parameters(), fused=True)
    for optimizer in (in_groups, in_float64):
        step = fused_adam.step_function(optimizer)
        for p in (q for group in optimizer.param_groups for q in group["params"]):
            p.grad = torch.ones_like(p)
        assert _optimizer_steps(lambda: [step() for _ in range(3)]) == {"torch": 3, "direct": 0}


@pytest.mark.parametrize("key, schedule", [("fc", "onecycle"), ("cnn", "cosine")])
def test_fit_takes_the_direct_step_and_trains_to_the_same_weights_as_with_optimizer_step(mnist, monkeypatch,
                                                                                          key, schedule):
    digits = data.DigitSet(mnist.train.images[:3000], mnist.train.labels[:3000])  # 24 steps
    recipe = train.TrainConfig(epochs=1, batch_size=128, lr=3e-3, schedule=schedule, evaluate_each_epoch=False)
    direct = models.build(models.PRESETS[key], seed=0)
    assert _optimizer_steps(lambda: train.fit(direct, digits, recipe)) == {"torch": 1, "direct": 23}
    monkeypatch.setattr(fused_adam, "step_function", lambda optimizer: optimizer.step)  # torch.optim's own step
    reference = models.build(models.PRESETS[key], seed=0)
    assert _optimizer_steps(lambda: train.fit(reference, digits, recipe)) == {"torch": 24, "direct": 0}
    for (name, p), q in zip(direct.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name
