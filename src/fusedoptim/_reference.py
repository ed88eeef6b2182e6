"""Plain-torch implementations of the optimizers torch does not have (Lion,
LAMB, ADOPT): the base classes of the fused ones (constructor, validation,
defaults, state layout) and their implementation for params the CPU kernels
do not serve (other devices, tensor subclasses). Written op by op from the
papers, one tensor at a time, so they also serve as the tests' oracle."""
from __future__ import annotations

import torch
from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable


def _check_common(lr, betas, weight_decay, eps=None):
    if not 0.0 <= float(lr):
        raise ValueError(f"Invalid learning rate: {lr}")
    if eps is not None and not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def _full_norm(t) -> float:
    """2-norm of the whole tensor, in float64: a DTensor's (FSDP2-sharded
    param's) norm is reduced over every shard, not the local one."""
    n = torch.linalg.vector_norm(t, dtype=torch.float64)
    if hasattr(n, "full_tensor"):
        n = n.full_tensor()
    return float(n)


def _moments(state, p):
    """Adam-style state (`step`, `exp_avg`, `exp_avg_sq`), created at the
    first step; the step advanced. -> (exp_avg, exp_avg_sq, step as float)."""
    if len(state) == 0:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    return state["exp_avg"], state["exp_avg_sq"], float(state["step"])


class _PlainTorch(Optimizer):
    """Shared frame of the plain-torch optimizers: defaults restored by
    __setstate__ (older pickles), closure handling, the per-param loop."""

    _LATE_DEFAULTS = dict(maximize=False, decoupled_weight_decay=True, foreach=None, differentiable=False)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self._LATE_DEFAULTS.items():
                group.setdefault(k, v)

    @_use_grad_for_differentiable
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                g = -p.grad if group["maximize"] else p.grad
                self._update(group, p, g, self.state[p])
        return loss

    def _update(self, group, p, g, state):
        raise NotImplementedError


class LionTorch(_PlainTorch):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"):
    the sign of an interpolation of momentum and gradient as the update.

        c = beta1 * m + (1 - beta1) * g
        p = p * (1 - lr * weight_decay)           (decoupled, the default)
        p = p - lr * sign(c)
        m = beta2 * m + (1 - beta2) * g

    State per param: ``exp_avg``. With ``decoupled_weight_decay=False`` the
    decay is coupled L2 (``g += weight_decay * p``) instead. sign(NaN) is NaN
    here (torch.sign gives 0, which would freeze a param silently after a
    NaN grad): NaN propagates as in every other optimizer.
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *,
                 maximize=False, decoupled_weight_decay=True, foreach=None, differentiable=False):
        _check_common(lr, betas, weight_decay)
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, foreach=foreach,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def _update(self, group, p, g, state):
        beta1, beta2 = group["betas"]
        lr, wd = float(group["lr"]), group["weight_decay"]
        if len(state) == 0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m = state["exp_avg"]
        if wd != 0:
            if group["decoupled_weight_decay"]:
                p.mul_(1 - lr * wd)
            else:
                g = g.add(p, alpha=wd)
        c = m.lerp(g, 1 - beta1)
        p.add_(torch.where(torch.isnan(c), c, torch.sign(c)), alpha=-lr)
        m.lerp_(g, 1 - beta2)


class LAMBTorch(_PlainTorch):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"):
    Adam's direction scaled per tensor by a trust ratio, for large batches.

        m = beta1 * m + (1 - beta1) * g ;  v = beta2 * v + (1 - beta2) * g^2
        u = (m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * p
        trust = ||p|| / ||u||   (1 if either norm is 0)
        p = p - lr * trust * u

    bc1, bc2 are Adam's bias corrections (1 with ``bias_correction=False``);
    the norms are exact (accumulated in float64, so a float32 tensor of huge
    values does not overflow them).
    State per param: ``step``, ``exp_avg``, ``exp_avg_sq``. The decay inside
    ``u`` is LAMB's own (decoupled, the default); ``decoupled_weight_decay=False``
    makes it coupled L2 in the gradient instead.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, *,
                 bias_correction=True, maximize=False, decoupled_weight_decay=True, foreach=None,
                 differentiable=False):
        _check_common(lr, betas, weight_decay, eps)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, foreach=foreach,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    _LATE_DEFAULTS = dict(_PlainTorch._LATE_DEFAULTS, bias_correction=True)

    def _update(self, group, p, g, state):
        beta1, beta2 = group["betas"]
        lr, wd, eps = float(group["lr"]), group["weight_decay"], group["eps"]
        m, v, t = _moments(state, p)
        if wd != 0 and not group["decoupled_weight_decay"]:
            g = g.add(p, alpha=wd)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1**t if group["bias_correction"] else 1.0
        bc2 = 1 - beta2**t if group["bias_correction"] else 1.0
        u = (m / bc1) / ((v / bc2).sqrt() + eps)
        if wd != 0 and group["decoupled_weight_decay"]:
            u = u.add(p, alpha=wd)
        wn = _full_norm(p)
        un = _full_norm(u)
        trust = wn / un if wn > 0 and un > 0 else 1.0
        p.add_(u, alpha=-lr * trust)


class ADOPTTorch(_PlainTorch):
    """ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with
    Any beta2 with the Optimal Rate", arXiv 2411.02853), as timm's ``Adopt``
    with its default clipping ``clip = step ** 0.25``:

        step 1:   v = g^2                   (nothing else changes)
        later:    n = clamp(g / max(sqrt(v), eps), -clip, clip)
                  m = beta1 * m + (1 - beta1) * n
                  p = p - lr * m
                  v = beta2 * v + (1 - beta2) * g^2

    The grad is normalised by the second moment of the steps *before* it.
    State per param: ``step``, ``exp_avg``, ``exp_avg_sq``. Weight decay is
    coupled L2 (``g += weight_decay * p``, every step) by default, as in the
    paper's code; ``decoupled_weight_decay=True`` makes it
    ``p *= 1 - lr * weight_decay`` from step 2 on.
    """

    _LATE_DEFAULTS = dict(_PlainTorch._LATE_DEFAULTS, decoupled_weight_decay=False)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0, *,
                 maximize=False, decoupled_weight_decay=False, foreach=None, differentiable=False):
        _check_common(lr, betas, weight_decay, eps)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, foreach=foreach,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def _update(self, group, p, g, state):
        beta1, beta2 = group["betas"]
        lr, wd, eps = float(group["lr"]), group["weight_decay"], group["eps"]
        m, v, t = _moments(state, p)
        if wd != 0 and not group["decoupled_weight_decay"]:
            g = g.add(p, alpha=wd)
        if t == 1:
            v.addcmul_(g, g)
            return
        if wd != 0 and group["decoupled_weight_decay"]:
            p.mul_(1 - lr * wd)
        clip = t**0.25
        n = (g / torch.clamp(v.sqrt(), min=eps)).clamp_(-clip, clip)
        m.lerp_(n, 1 - beta1)
        p.add_(m, alpha=-lr)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
