"""Adam's training step without torch.optim's per-step Python: the same fused kernel, the same bits.

``torch.optim.Adam(fused=True)`` updates every weight in one call of ``torch._fused_adam_``,
but ``Optimizer.step`` first spends Python on every step: its hooks and profiler wrapper,
``_init_group`` walking the parameters and their state, and grouping the tensors by device
and type. For FCNet 784-16-16-10 (six tensors, 1 thread) that took 188 us a step against
61 us for the kernel and its step counters alone, a quarter of a training step whose
arithmetic is a few microseconds.

``step_function(optimizer)`` returns what ``fit`` calls instead of ``optimizer.step``.
Where the optimizer is a fused Adam with one parameter group of float32 CPU tensors and
nothing to watch its step (no hooks), it lets ``optimizer.step()`` take the first step
(which creates the state, as always), then calls the kernel itself on the optimizer's own
tensors, reading the group's learning rate and betas each time (a schedule changes them):
the same operations torch.optim runs, in the same order, so the weights, moments and step
counts are bit for bit the ones ``optimizer.step()`` gives (``tests/test_fused_adam.py``),
and the optimizer's state stays torch's own. A step where a weight has no gradient, and any
other optimizer, goes through ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import optimizer as torch_optimizer


def step_function(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step``, or for a fused Adam on the CPU an equivalent call without its Python overhead."""
    if not _direct_applies(optimizer):
        return optimizer.step
    return _DirectAdam(optimizer)


def _direct_applies(optimizer: torch.optim.Optimizer) -> bool:
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1 \
            or not hasattr(torch, "_fused_adam_"):
        return False
    group = optimizer.param_groups[0]
    flags_as_fused_cpu_adam = (group["fused"] and not group["amsgrad"] and not group["maximize"]
                               and not group["capturable"] and not group["differentiable"]
                               and not group.get("decoupled_weight_decay", False))
    return flags_as_fused_cpu_adam and bool(group["params"]) and all(
        p.device.type == "cpu" and p.dtype == torch.float32 and not p.is_sparse for p in group["params"])


class _DirectAdam:
    """Calls ``torch._fused_adam_`` as ``torch.optim.adam._fused_adam`` does for one CPU float32 group."""

    def __init__(self, optimizer: torch.optim.Adam) -> None:
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]
        self.params: list[torch.Tensor] = list(self.group["params"])
        self.moments: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None

    def __call__(self) -> None:
        grads = [p.grad for p in self.params]
        group = self.group
        beta1, beta2 = group["betas"]
        if (self.moments is None or self._watched() or any(g is None or g.is_sparse for g in grads)
                or not isinstance(beta1, float) or not isinstance(beta2, float)):
            # The first step creates the state; a hook, a missing gradient or a beta given as a tensor
            # (torch.optim reshapes it) is torch.optim's business.
            self.optimizer.step()
            self.moments = self._state()
            return
        exp_avgs, exp_avg_sqs, steps = self.moments
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            self.params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
            beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
            maximize=False, grad_scale=None, found_inf=None,
        )

    def _state(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None:
        """Each weight's moments and step count, once every weight has them (else None: step by torch)."""
        states = [self.optimizer.state.get(p) for p in self.params]
        if not all(s and {"exp_avg", "exp_avg_sq", "step"} <= s.keys() for s in states):
            return None
        return ([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [s["step"] for s in states])

    def _watched(self) -> bool:
        """Would ``optimizer.step()`` call a hook (the optimizer's own, or one for every optimizer)?"""
        return bool(self.optimizer._optimizer_step_pre_hooks or self.optimizer._optimizer_step_post_hooks
                    or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks)
