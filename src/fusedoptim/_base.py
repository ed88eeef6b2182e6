"""The machinery shared by every fused optimizer: per-group native plans,
validation before any change, torch's own path for what the kernels do not
serve, version-counter bumps. The optimizer classes only say how their state
looks and how their hyper-parameters reach the kernel."""
from __future__ import annotations

import torch
from torch.optim.optimizer import _use_grad_for_differentiable

from . import _C, _cuda
from ._validate import check_grad, check_group_devices, check_param_dtype, check_state_dict, is_dense

_NATIVE_DTYPES = (torch.float32, torch.float64)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def native_param(p: torch.Tensor) -> bool:
    """Params the CPU kernels update in place; everything else takes torch's path."""
    return (
        type(p) in _TENSOR_TYPES
        and p.device.type == "cpu"
        and p.dtype in _NATIVE_DTYPES
        and p.layout == torch.strided
        and is_dense(p)
    )


def match_layout(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """State tensor with exactly p's dtype, device and strides (a copy only if
    it differs, e.g. a contiguous checkpoint tensor for a transposed param)."""
    if t.dtype == p.dtype and t.device == p.device and (p.numel() <= 1 or t.stride() == p.stride()):
        return t
    return torch.empty_like(p, memory_format=torch.preserve_format).copy_(t)


class FusedOptimizerMixin:
    """Mixed in before a torch.optim class: keeps its constructor, validation,
    defaults, state_dict and hooks; replaces `step` with the fused kernels."""

    _fo_kind: int = -1
    _fo_sparse_ok = False  # SGD serves sparse grads through torch's path

    # -- what each optimizer defines -------------------------------------------------
    def _fo_key(self, group):  # options that change the shape of the plan
        raise NotImplementedError

    def _fo_init_state(self, group, p):
        """-> (s0, s1, s2, step, first, ref) creating p's state lazily, where ref
        is (state dict, (key, tensor), ...) for the per-step identity check, or
        () for an optimizer that keeps no state for p."""
        raise NotImplementedError

    def _fo_set_hparams(self, plan, group):
        raise NotImplementedError

    def _fo_torch_step(self, group, params):
        """torch's own implementation, for params the kernels do not serve."""
        raise NotImplementedError

    def _fo_state_keys(self, group):
        """(required, optional) per-param state keys, for load_state_dict checks."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------
    def _fo_native_group(self, group) -> bool:
        return not group.get("differentiable", False) and not group.get("capturable", False)

    def _fo_check_group(self, group) -> None:
        """Every check a group's grads must pass, changing nothing (phase 1)."""
        self._fo_check_params([p for p in group["params"] if p.grad is not None])

    def _fo_check_params(self, with_grad) -> None:
        name = type(self).__name__
        check_group_devices(name, with_grad)
        for p in with_grad:
            check_param_dtype(name, p)
            if not (self._fo_sparse_ok and p.grad.is_sparse):
                check_grad(name, p, p.grad)

    def _fo_build(self, group, key):
        """A new plan for `group`, creating lazy state (phase 2: checked already)."""
        params_all = tuple(group["params"])
        plan = _C.Plan(self._fo_kind, params_all, key, self.state)
        plan.group = group
        for j, p in enumerate(params_all):
            g = p.grad
            if g is None:
                plan.mark(j, -2)
            elif not native_param(p) or g.is_sparse:
                plan.mark(j, -1)
            else:
                s0, s1, s2, step, first, ref = self._fo_init_state(group, p)
                plan.add(j, p, s0, s1, s2, step, first, ref)
        plan.finalize()
        return plan

    def _fo_refresh(self, plan, group):
        """Per-step refresh of a valid plan: grads copied into the param's layout
        where their strides differ, hyper-parameters read from the group."""
        for i in plan.relayout:
            p = plan.params[i]
            buf = plan.scratch[i]
            if buf is None:
                buf = plan.scratch[i] = torch.empty_like(p, memory_format=torch.preserve_format)
            buf.copy_(p.grad)
            plan.set_grad(i, buf)
        self._fo_set_hparams(plan, group)

    @_use_grad_for_differentiable
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        plans = self.__dict__.get("_fo_plans")
        if plans is None:
            plans = self._fo_plans = {}
        groups = self.param_groups
        state = self.state
        todo = []
        # 1. check every group; nothing is created or changed until all pass
        for group in groups:
            if not self._fo_native_group(group):
                self._fo_check_group(group)
                todo.append([group, None, [p for p in group["params"] if p.grad is not None]])
                continue
            key = self._fo_key(group)
            plan = plans.get(id(group))
            if (
                plan is not None
                and plan.group is group
                and plan.key == key
                and plan.load_grads(group["params"], state)
            ):
                if plan.fallback:  # torch's path checks late: check its params now
                    self._fo_check_params(plan.fallback)
                todo.append([group, plan, plan.fallback])
            else:
                self._fo_check_group(group)
                todo.append([group, key, None])
        # 2. build what must be built (lazy state), then run every group
        for item in todo:
            group, plan, fallback = item
            if fallback is None:  # plan holds the key of a plan to build
                plan = self._fo_build(group, plan)
                if not plan.load_grads(group["params"], state):  # pragma: no cover
                    raise RuntimeError("fusedoptim: a freshly built plan does not match its group")
                plans[id(group)] = plan
                item[1], item[2] = plan, plan.fallback
        if len(plans) > len(groups):
            live = {id(g) for g in groups}
            for k in [k for k in plans if k not in live]:
                del plans[k]
        for group, plan, fallback in todo:
            if plan is not None and plan.n:  # (a CUDA-only group reads no host scalars: no sync)
                self._fo_refresh(plan, group)
                plan.run()
                torch._C._increment_version(plan.params)
            if fallback:
                self._fo_torch_fallback(group, fallback)
        return loss

    def _fo_torch_fallback(self, group, params):
        """torch's implementation for params the kernels do not serve. torch
        2.13's fused (and foreach) CPU kernels mis-update non-contiguous params
        and grads whose strides differ from the param's, so those CPU params
        take its for-loop path whatever the group's flags say."""
        params = _cuda.step_cuda(self, group, params)  # CUDA params: fusedoptim's CUDA kernels
        if not params:
            return
        odd = [
            p for p in params
            if p.device.type == "cpu"
            and not p.grad.is_sparse
            and not (p.is_contiguous() and p.grad.is_contiguous())
        ]
        if odd:
            rest = [p for p in params if all(p is not q for q in odd)]
            forloop = dict(group, foreach=False, fused=False)
            self._fo_torch_step(forloop, odd)
            if rest:
                self._fo_torch_step(group, rest)
        else:
            self._fo_torch_step(group, params)

    def load_state_dict(self, state_dict) -> None:
        """Load optimizer state. Everything is validated first (group count and
        sizes, every per-param state tensor's shape and dtype, required keys,
        scalar `step`): on error the optimizer is unchanged. Load pre-hooks
        run first, as in torch, so a hook may adapt the checkpoint."""
        state_dict = dict(state_dict) if isinstance(state_dict, dict) else state_dict
        hooks = self._optimizer_load_state_dict_pre_hooks
        for hook in list(hooks.values()):
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        check_state_dict(self, state_dict, self._fo_state_keys)
        self._optimizer_load_state_dict_pre_hooks = type(hooks)()  # ran above
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks = hooks
        self.__dict__.pop("_fo_plans", None)


def init_step(group, p):
    """torch's own lazy `step` state (see torch.optim.adam.Adam._init_group)."""
    from torch.optim.optimizer import _get_scalar_dtype

    if group.get("capturable") or group.get("fused"):
        return torch.zeros((), dtype=_get_scalar_dtype(is_fused=group.get("fused")), device=p.device)
    return torch.tensor(0.0, dtype=_get_scalar_dtype())


def native_step(state):
    """The step counter as a CPU float32/float64 scalar tensor the kernel can bump."""
    s = state["step"]
    if not torch.is_tensor(s) or s.device.type != "cpu" or s.dtype not in _NATIVE_DTYPES or s.numel() != 1:
        s = state["step"] = torch.tensor(float(s), dtype=torch.float32)
    elif s.dim() != 0 or not s.is_contiguous():
        s = state["step"] = s.reshape(()).clone()
    return s
