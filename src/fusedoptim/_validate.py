"""Input validation: every check runs before anything is changed, and every
error names the problem (which tensor, what was expected, what was found)."""
from __future__ import annotations

import math
import numbers

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


_SETSTATE_FILLS: dict = {}


def _setstate_fills(opt) -> frozenset:
    """Group keys the optimizer class's __setstate__ fills in for old
    checkpoints (e.g. Adam's `amsgrad`, `maximize`, `foreach`): a checkpoint
    may lack them. Found by running __setstate__ on a bare instance."""
    cls = type(opt)
    if cls not in _SETSTATE_FILLS:
        probe = cls.__new__(cls)
        try:
            probe.__setstate__({"defaults": dict(opt.defaults), "state": {}, "param_groups": [{"params": []}]})
            filled = frozenset(probe.param_groups[0]) - {"params"}
        except Exception:  # noqa: BLE001 - a class whose __setstate__ needs more: assume it fills nothing
            filled = frozenset()
        _SETSTATE_FILLS[cls] = filled
    return _SETSTATE_FILLS[cls]


def _is_number(v) -> bool:
    """int, float and other real scalars (numpy's included); not bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def _is_scalar_tensor(v) -> bool:
    return torch.is_tensor(v) and v.numel() == 1 and not v.is_complex() and v.dtype != torch.bool


def _check_hparam(name, gi, key, default, v) -> None:
    """A saved hyper-parameter has the type of the constructor default (a
    number may also be a one-element tensor, as a tensor `lr` is)."""
    where = f"{name}.load_state_dict: param group {gi} {key!r}"
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise ValueError(f"{where} must be a bool like its default, got {v!r}")
    elif _is_number(default):
        if not (_is_number(v) or _is_scalar_tensor(v)):
            raise ValueError(f"{where} must be a number (or a one-element tensor), got {type(v).__name__} {v!r}")
    elif isinstance(default, tuple):
        if not isinstance(v, (tuple, list)) or len(v) != len(default):
            raise ValueError(f"{where} must be a sequence of {len(default)} like its default "
                             f"{default!r}, got {v!r}")
        for x in v:
            if not (_is_number(x) or _is_scalar_tensor(x)):
                raise ValueError(f"{where} must hold numbers, got {v!r}")


def _check_step(name, pid, v) -> None:
    where = f"{name}.load_state_dict: 'step' of param {pid}"
    if torch.is_tensor(v):
        if v.numel() != 1:
            raise ValueError(f"{where} must be a scalar, got shape {tuple(v.shape)}")
        if v.is_complex() or v.dtype == torch.bool or v.is_sparse or v.device.type == "meta":
            raise ValueError(f"{where} must be a real number, got a {v.dtype} tensor on {v.device}")
        x = float(v)
    elif _is_number(v):
        x = float(v)
    else:
        raise ValueError(f"{where} must be a number or a scalar tensor, got {type(v).__name__} {v!r}")
    if not (math.isfinite(x) and x >= 0 and x == int(x)):
        raise ValueError(f"{where} must be a whole number >= 0 (a count of steps), got {x!r}")


# per-param state that is a real scalar, not a tensor like the param (NAdam)
_SCALAR_STATE = ("mu_product",)


def _check_scalar_state(name, pid, k, v) -> None:
    where = f"{name}.load_state_dict: {k!r} of param {pid}"
    if torch.is_tensor(v):
        if v.numel() != 1:
            raise ValueError(f"{where} must be a scalar, got shape {tuple(v.shape)}")
        if v.is_complex() or v.dtype == torch.bool or v.is_sparse or v.device.type == "meta":
            raise ValueError(f"{where} must be a real number, got a {v.dtype} tensor on {v.device}")
    elif not _is_number(v):
        raise ValueError(f"{where} must be a number or a scalar tensor, got {type(v).__name__} {v!r}")


def check_state_dict(opt, state_dict, required) -> None:
    """Validate an optimizer state_dict against `opt` before anything is loaded.

    `required(group) -> (tensor_keys_required, tensor_keys_optional)` names the
    per-param state of each group. Checks what torch checks (group count and
    sizes) and what it does not, so that a load either succeeds or raises
    ValueError with the optimizer untouched:
      - structure: 'state' a dict, 'param_groups' a list of dicts with a
        'params' list; no param id listed twice; no state for an id no group
        lists;
      - hyper-parameters: every one the optimizer needs is present (or filled
        in by the class for old checkpoints) with the type of its default;
      - per-param state: a dict holding every required key; each state tensor
        has the param's shape, a floating dtype (complex only for a complex
        param), a strided layout and real storage (not meta); `step` is a
        whole number >= 0, as a number or a one-element real tensor.
    """
    name = type(opt).__name__
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'")
    state = state_dict["state"]
    saved_groups = state_dict["param_groups"]
    if not isinstance(state, dict):
        raise ValueError(f"{name}.load_state_dict: 'state' must be a dict, got {type(state).__name__}")
    if not isinstance(saved_groups, (list, tuple)):
        raise ValueError(f"{name}.load_state_dict: 'param_groups' must be a list, got {type(saved_groups).__name__}")
    for gi, sg in enumerate(saved_groups):
        if not isinstance(sg, dict) or not isinstance(sg.get("params"), (list, tuple)):
            raise ValueError(f"{name}.load_state_dict: param group {gi} must be a dict with a 'params' list")
    groups = opt.param_groups
    if len(groups) != len(saved_groups):
        raise ValueError(
            f"loaded state dict has a different number of parameter groups "
            f"({len(saved_groups)}, the optimizer has {len(groups)})"
        )
    for gi, (g, sg) in enumerate(zip(groups, saved_groups)):
        if len(g["params"]) != len(sg["params"]):
            raise ValueError(
                f"loaded state dict contains a parameter group that doesn't match the size of optimizer's group "
                f"(group {gi}: {len(sg['params'])} params saved, {len(g['params'])} in the optimizer)"
            )
    seen = set()
    for gi, sg in enumerate(saved_groups):
        for pid in sg["params"]:
            try:
                dup = pid in seen
            except TypeError:
                raise ValueError(f"{name}.load_state_dict: param group {gi} lists an unhashable param id {pid!r}")
            if dup:
                raise ValueError(f"{name}.load_state_dict: param id {pid!r} is listed twice in 'param_groups'")
            seen.add(pid)
    for pid in state:
        if pid not in seen:
            raise ValueError(
                f"{name}.load_state_dict: 'state' has an entry for param id {pid!r}, which no param group lists"
            )
    defaults = getattr(opt, "defaults", {}) or {}
    fills = _setstate_fills(opt)
    for gi, sg in enumerate(saved_groups):
        for key, default in defaults.items():
            if key not in sg:
                if key not in fills:
                    raise ValueError(f"{name}.load_state_dict: param group {gi} has no {key!r}")
                continue
            _check_hparam(name, gi, key, default, sg[key])
    for g, sg in zip(groups, saved_groups):
        merged = dict(g)
        merged.update({k: v for k, v in sg.items() if k != "params"})
        req, opt_keys = required(merged)
        for p, pid in zip(g["params"], sg["params"]):
            st = state.get(pid)
            if st is None:
                continue
            if not isinstance(st, dict):
                raise ValueError(f"{name}.load_state_dict: state of param {pid} is not a dict "
                                 f"(got {type(st).__name__})")
            if not st:
                continue
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
                if k == "step":
                    _check_step(name, pid, v)
                    continue
                if k in _SCALAR_STATE:
                    _check_scalar_state(name, pid, k, v)
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
                if not (v.is_floating_point() or v.is_complex()) or (v.is_complex() and not p.is_complex()):
                    raise ValueError(
                        f"{name}.load_state_dict: {k!r} of param {pid} has dtype {v.dtype}; "
                        f"expected a floating-point tensor (like the param's {p.dtype})"
                    )
                if v.layout != torch.strided or v.device.type == "meta":
                    raise ValueError(
                        f"{name}.load_state_dict: {k!r} of param {pid} must be a dense tensor with data "
                        f"(got layout {v.layout}, device {v.device})"
                    )
