"""Input validation: every check runs before anything is changed, and every
error names the problem (which tensor, what was expected, what was found)."""
from __future__ import annotations

import torch


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def grad_mismatch_error(name: str, p: torch.Tensor, g: torch.Tensor) -> Exception:
    """The error for a grad that cannot update its param."""
    if g.is_sparse:
        if name.startswith("Adam"):  # torch's own words, AdamW included
            return RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
        return RuntimeError(f"{name} does not support sparse gradients")
    if g.device != p.device:
        return RuntimeError(
            f"{name}: grad is on device {g.device} but its param is on {p.device} "
            f"(param {_describe(p)})"
        )
    if g.dtype != p.dtype:
        return RuntimeError(
            f"{name}: grad has dtype {g.dtype} but its param has dtype {p.dtype} "
            f"(param {_describe(p)})"
        )
    return RuntimeError(
        f"{name}: grad has shape {tuple(g.shape)} but its param has shape {tuple(p.shape)} "
        f"(param {_describe(p)})"
    )


def check_grad(name: str, p: torch.Tensor, g: torch.Tensor) -> None:
    if g.is_sparse or g.device != p.device or g.dtype != p.dtype or g.shape != p.shape:
        raise grad_mismatch_error(name, p, g)


def check_param_dtype(name: str, p: torch.Tensor) -> None:
    if not (p.is_floating_point() or p.is_complex()):
        raise RuntimeError(
            f"{name}: cannot optimize a param of dtype {p.dtype} (shape {tuple(p.shape)}); "
            f"params must be floating-point or complex"
        )


def check_group_devices(name: str, params) -> None:
    """One parameter group, one device: the fused step is one call per group."""
    devs = {p.device for p in params}
    if len(devs) > 1:
        raise RuntimeError(
            f"{name}: the params of one parameter group are on several devices "
            f"({', '.join(sorted(str(d) for d in devs))}); put each device's params "
            f"in a group of its own"
        )


def is_dense(t: torch.Tensor) -> bool:
    """True if t's elements fill one contiguous block of memory, in any order
    (contiguous, transposed, permuted): an elementwise update over that block
    with a grad and state of identical strides is then exact."""
    if t.is_contiguous():
        return True
    dims = sorted(
        (s, st) for s, st in zip(t.shape, t.stride()) if s != 1
    )
    dims.sort(key=lambda x: x[1])
    expected = 1
    for size, stride in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def check_state_dict(opt, state_dict, required) -> None:
    """Validate an optimizer state_dict against `opt` before anything is loaded.

    `required(group) -> (tensor_keys_required, tensor_keys_optional)` names the
    per-param state of each group. Checks what torch checks (group count and
    sizes) plus what it does not: every per-param state tensor has the param's
    shape, `step` is a scalar, nothing required is missing.
    """
    name = type(opt).__name__
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'")
    groups = opt.param_groups
    saved_groups = state_dict["param_groups"]
    if len(groups) != len(saved_groups):
        raise ValueError("loaded state dict has a different number of parameter groups")
    for g, sg in zip(groups, saved_groups):
        if len(g["params"]) != len(sg["params"]):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
    state = state_dict["state"]
    for g, sg in zip(groups, saved_groups):
        merged = dict(g)
        merged.update({k: v for k, v in sg.items() if k != "params"})
        req, opt_keys = required(merged)
        for p, pid in zip(g["params"], sg["params"]):
            st = state.get(pid)
            if not st:
                continue
            if not isinstance(st, dict):
                raise ValueError(f"{name}.load_state_dict: state of param {pid} is not a dict")
            for k in req:
                if k not in st:
                    raise ValueError(
                        f"{name}.load_state_dict: state of param {pid} is missing {k!r} "
                        f"(has {sorted(st)})"
                    )
            for k in (*req, *opt_keys):
                v = st.get(k)
                if v is None:
                    continue
                if k in ("step", "mu_product"):  # per-param scalars
                    if torch.is_tensor(v):
                        if v.numel() != 1:
                            raise ValueError(
                                f"{name}.load_state_dict: {k!r} of param {pid} must be a scalar, "
                                f"got shape {tuple(v.shape)}"
                            )
                    elif not isinstance(v, (int, float)):
                        raise ValueError(
                            f"{name}.load_state_dict: {k!r} of param {pid} must be a number or a "
                            f"scalar tensor, got {type(v).__name__}"
                        )
                    continue
                if not torch.is_tensor(v):
                    raise ValueError(
                        f"{name}.load_state_dict: {k!r} of param {pid} must be a tensor, got {type(v).__name__}"
                    )
                if v.shape != p.shape:
                    raise ValueError(
                        f"{name}.load_state_dict: {k!r} of param {pid} has shape {tuple(v.shape)} "
                        f"but the param has shape {tuple(p.shape)}"
                    )
                if not (v.is_floating_point() or v.is_complex()):
                    raise ValueError(
                        f"{name}.load_state_dict: {k!r} of param {pid} has dtype {v.dtype}; "
                        f"expected a floating-point tensor"
                    )
