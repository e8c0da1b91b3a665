"""RMSProp in the centred, momentum form of Graves (2013), eqs. 38-41, used by §4.6.

    n  = decay * n + (1 - decay) * g^2
    m  = decay * m + (1 - decay) * g
    D  = momentum * D - lr * g / sqrt(n - m^2 + eps)
    w  = w + D

torch.optim.RMSprop(centered=True) computes g / (sqrt(n - m^2) + eps): its epsilon sits
outside the square root. Graves puts it inside (eps = 1e-4 bounds the divisor below by
1e-2), so we implement the update ourselves rather than approximate it.
"""

from __future__ import annotations

import math

import torch

# train.lr_batch_scaling: the factor on the tables' rate at a batch of B sequences per update
LR_BATCH_SCALINGS = {"none": lambda batch: 1.0, "sqrt": math.sqrt, "linear": float}


def batch_scaled_lr(lr: float, batch_size: int, scaling: str) -> float:
    """The rate a step uses: the tables' rate ``lr`` (set for one sequence per update) times 1,
    sqrt(B) or B for ``scaling`` none, sqrt or linear at a batch of ``batch_size`` = B."""
    return lr * LR_BATCH_SCALINGS[scaling](batch_size)


class GravesRMSprop(torch.optim.Optimizer):
    def __init__(self, params, *, lr: float, decay: float, momentum: float, eps: float):
        """Every setting by keyword, no defaults: their values live in conf/config.yaml (train.*)."""
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps))

    @torch.no_grad()
    def init_state(self) -> None:
        """Create the running averages (zeros) now rather than at the first step, so a step
        can be captured in a CUDA graph (ntm_experiments.fast)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad and not self.state[p]:
                    self.state[p].update(square_avg=torch.zeros_like(p), grad_avg=torch.zeros_like(p),
                                         delta=torch.zeros_like(p))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    state["grad_avg"] = torch.zeros_like(p)
                    state["delta"] = torch.zeros_like(p)
            square_avg = [s["square_avg"] for s in states]
            grad_avg = [s["grad_avg"] for s in states]
            delta = [s["delta"] for s in states]
            decay = group["decay"]
            torch._foreach_mul_(square_avg, decay)
            torch._foreach_addcmul_(square_avg, grads, grads, value=1 - decay)
            torch._foreach_mul_(grad_avg, decay)
            torch._foreach_add_(grad_avg, grads, alpha=1 - decay)
            # denominator sqrt(n - m^2 + eps)
            denom = torch._foreach_addcmul(square_avg, grad_avg, grad_avg, value=-1)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(delta, group["momentum"])
            torch._foreach_addcdiv_(delta, grads, denom, value=-group["lr"])
            torch._foreach_add_(params, delta)
        return loss
