"""Adam's training step without torch.optim's per-step Python: the same fused kernel, the same bits.

``torch.optim.Adam(fused=True)`` updates every weight in one call of ``torch._fused_adam_``,
but ``Optimizer.step`` first spends Python on every step: its hooks and profiler wrapper,
``_init_group`` walking the parameters and their state, and grouping the tensors by device
and type. For FCNet 784-16-16-10 (six tensors, 1 thread) that took 188 us a step against
61 us for the kernel and its step counters alone; timed section by section, Adam's step
was a quarter of FCNet's training step.

``step_function(optimizer)`` returns what ``fit`` calls instead of ``optimizer.step``. For a
fused Adam (no amsgrad, maximize, capturable or differentiable) it looks at the optimizer
anew on every step, so nothing it reads goes stale (a loaded state dict, a new learning rate
or betas from a schedule). Where the optimizer then has one parameter group of float32 CPU
weights, every weight has a gradient and Adam's state (torch.optim creates it on the first
step), the betas are plain numbers and no hook would run, it calls the kernel itself, with
gradients off, as ``Adam.step`` does: the same two operations on the same tensors with the
same numbers, so the weights, moments and step counts are bit for bit the ones
``optimizer.step()`` gives (``tests/test_fused_adam.py``), and the state stays torch's own.
Any other step, and any other optimizer, goes through ``optimizer.step()``. Under the
profiler a direct step shows as ``fused_adam.step`` (torch.optim's own shows as
``Optimizer.step#Adam.step``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch.optim import optimizer as torch_optimizer

PROFILER_LABEL = "fused_adam.step"


def step_function(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step``, or for a fused Adam an equivalent that skips its Python where it can."""
    if type(optimizer) is not torch.optim.Adam or not hasattr(torch, "_fused_adam_") \
            or not _plain_fused(optimizer.defaults):
        return optimizer.step
    return lambda: _step(optimizer)


def _plain_fused(settings: dict) -> bool:
    """Are these an Adam's settings (its defaults, or a group's) for the fused kernel and nothing more?"""
    return (settings["fused"] and not settings["amsgrad"] and not settings["maximize"] and not settings["capturable"]
            and not settings["differentiable"] and not settings.get("decoupled_weight_decay", False))


def _step(optimizer: torch.optim.Adam) -> None:
    direct = _direct_arguments(optimizer)
    if direct is None:
        optimizer.step()
        return
    params, grads, exp_avgs, exp_avg_sqs, steps, group = direct
    beta1, beta2 = group["betas"]
    with torch.no_grad():  # as Adam.step runs
        if torch.autograd._profiler_enabled():
            with torch.autograd.profiler.record_function(PROFILER_LABEL):
                _kernel(params, grads, exp_avgs, exp_avg_sqs, steps, group, beta1, beta2)
        else:
            _kernel(params, grads, exp_avgs, exp_avg_sqs, steps, group, beta1, beta2)


def _kernel(params, grads, exp_avgs, exp_avg_sqs, steps, group, beta1, beta2) -> None:
    """What torch.optim.adam._fused_adam runs for one device and type.

    Its step counters go up by a tensor 1 rather than the number 1, the same sum in the counters' own
    type: with a number, the CPU's ``_foreach_add_`` wrapped it in a new tensor for every counter (7.0
    against 3.2 us for FCNet's six, 1 thread)."""
    torch._foreach_add_(steps, [_one(steps[0].dtype)] * len(steps))
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                       beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=False, grad_scale=None, found_inf=None)


@functools.cache
def _one(dtype: torch.dtype) -> torch.Tensor:
    """A 1 of a step counter's type (a fused Adam's are float32), on the CPU whatever the default device,
    made once; nothing changes it."""
    return torch.ones((), dtype=dtype, device="cpu")


def _direct_arguments(optimizer: torch.optim.Adam) -> tuple | None:
    """The kernel's arguments for this step, or None where ``optimizer.step()`` must take it."""
    if len(optimizer.param_groups) != 1 or _watched(optimizer):
        return None
    group = optimizer.param_groups[0]
    if not _plain_fused(group):
        return None  # a loaded state dict can bring other settings
    beta1, beta2 = group["betas"]
    if type(beta1) is not float or type(beta2) is not float:
        return None  # torch.optim reshapes a tensor beta first
    params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
    for p in group["params"]:
        state = optimizer.state.get(p)
        if (p.grad is None or p.grad.is_sparse or p.device.type != "cpu" or p.dtype != torch.float32
                or not state or "exp_avg" not in state or "exp_avg_sq" not in state or "step" not in state):
            return None  # a weight without a gradient or without Adam's state yet (the first step makes it)
        params.append(p)
        grads.append(p.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        steps.append(state["step"])
    return (params, grads, exp_avgs, exp_avg_sqs, steps, group) if params else None


def _watched(optimizer: torch.optim.Optimizer) -> bool:
    """Would ``optimizer.step()`` call a hook (the optimizer's own, or one for every optimizer)?"""
    return bool(optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
                or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks)
