"""Gradient clipping by total norm on fused multi-tensor C kernels.

Drop-in for torch 2.13's `torch.nn.utils.clip_grad_norm_`, `get_total_norm`
and `clip_grads_with_norm_`: same signatures, accepted inputs, returned tensor
(dtype and device), errors and in-place effect. Clipping is one read pass over
all grads (the norm) and, only when the coefficient is below 1, one
read-write pass (the scale), each a single native call split across torch's
intra-op pool.

Differences from torch, by design:
  * The norm is accumulated in double for every dtype (torch accumulates a
    float32 grad's norm in float32), then rounded once to the result dtype.
    The result is as close as or closer to the exact norm of the values, and
    does not depend on the thread count. One visible consequence: when a
    float32 grad's sum of squares overflows (or underflows) float32 but the
    norm itself is representable (|g| around 1e19 and above, or 1e-23 and
    below), torch returns inf (or 0) and fusedoptim the finite norm.
  * When the clip coefficient is exactly 1, torch multiplies every grad by 1;
    fusedoptim skips that write pass (x * 1 == x for every value) and only
    bumps the grads' version counters, as torch's in-place multiply does.

Everything the kernels do not serve goes to torch's implementation for the
whole call: grads on other devices, sparse grads, tensor subclasses, dtypes
other than float32/float64/bfloat16/float16, and layouts with gaps or
self-overlap (dense permuted layouts, e.g. a transposed grad, are served).
The cases where torch raises (an inf or negative-order norm over an empty
tensor, a NaN order) also go to torch, so the error is torch's own.
"""
from __future__ import annotations

import math
import struct
import types
import warnings
from typing import Iterable, Optional, Union

import torch

from . import _C

__all__ = ["clip_grad_norm_", "get_total_norm", "clip_grads_with_norm_"]

_tensor_or_tensors = Union[torch.Tensor, Iterable[torch.Tensor]]

_torch_clip_grad_norm_ = torch.nn.utils.clip_grad_norm_
_torch_get_total_norm = torch.nn.utils.get_total_norm
_torch_clip_grads_with_norm_ = torch.nn.utils.clip_grads_with_norm_

_B_F32, _B_F64 = 1 << _C.DT_F32, 1 << _C.DT_F64
_B_BF16, _B_F16 = 1 << _C.DT_BF16, 1 << _C.DT_F16
_SCALE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _result_dtype(mask: int) -> torch.dtype:
    """dtype of torch's total norm: the promotion of the grads' dtypes
    (torch.stack of the per-tensor norms promotes; bf16 with fp16 gives fp32)."""
    if mask & _B_F64:
        return torch.float64
    if mask & _B_F32 or (mask & _B_BF16 and mask & _B_F16):
        return torch.float32
    return torch.bfloat16 if mask & _B_BF16 else torch.float16


def _round_to_odd_f32(v: float) -> float:
    """v rounded to float32 with round-to-odd: rounding that value once more
    to bfloat16/float16 (fewer than 23 - 2 mantissa bits) gives the correctly
    rounded v, where double -> float -> half would round twice."""
    if not math.isfinite(v) or abs(v) >= 3.4e38:
        return v
    f = struct.unpack("<f", struct.pack("<f", v))[0]
    if f == v:
        return f
    bits = struct.unpack("<I", struct.pack("<f", f))[0]
    if bits & 1:
        return f
    bits += 1 if abs(f) < abs(v) else -1   # one unit toward v, in magnitude
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _as_tensor(v: float, dtype: torch.dtype) -> torch.Tensor:
    if dtype is torch.bfloat16 or dtype is torch.float16:
        v = _round_to_odd_f32(v)
    return torch.tensor(v, dtype=dtype)


def _native_table(tensors: list, norm_type: float):
    """The kernel table for `tensors`, or None when torch must handle the call."""
    if math.isnan(norm_type):
        return None
    tab = _C.rtable(tensors)
    if tab is None:
        return None
    if tab.any_empty and (norm_type < 0 or norm_type == math.inf):
        return None  # torch raises: that norm has no identity on an empty tensor
    return tab


def _norm(tab, norm_type: float, error_if_nonfinite: bool) -> torch.Tensor:
    total = _as_tensor(tab.norm(norm_type), _result_dtype(tab.dtype_mask))
    if error_if_nonfinite and not math.isfinite(total.item()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    return total


def _scale(params: list, grads: list, tab, max_norm: float, total_norm, foreach) -> None:
    """grads *= min(max_norm / (total_norm + 1e-6), 1), the coefficient computed
    with torch's own tensor ops (so in the total norm's dtype, rounded as torch
    rounds it) and applied by the scale kernel as torch's mul_ applies it."""
    clip_coef = max_norm / (total_norm + 1e-6)
    coef_t = torch.clamp(clip_coef, max=1.0)
    if tab is None:
        tab = _C.rtable(grads)
    if (tab is None or coef_t.dim() != 0 or coef_t.device.type != "cpu"
            or coef_t.dtype not in _SCALE_DTYPES or tab.overlaps()):
        # torch's own loop: e.g. the same grad listed twice is scaled twice
        _torch_clip_grads_with_norm_(params, max_norm, total_norm, foreach)
        return
    coef = coef_t.item()
    if coef != 1.0:
        tab.scale(coef)
    torch._C._increment_version(grads)


def get_total_norm(
    tensors: _tensor_or_tensors,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: Optional[bool] = None,
) -> torch.Tensor:
    r"""Compute the norm of an iterable of tensors, as if they were concatenated
    into a single vector (torch.nn.utils.get_total_norm, on a fused kernel).

    Args:
        tensors (Iterable[Tensor] or Tensor): the tensors (or a single tensor)
        norm_type (float): order of the p-norm; ``inf`` for the max norm
        error_if_nonfinite (bool): raise if the total norm is nan, inf or -inf
        foreach (bool): accepted for compatibility; CPU tensors always take the
            fused kernel, others torch's implementation with this flag

    Returns:
        Total norm of the tensors (a 0-d tensor in their promoted dtype).
    """
    with torch.no_grad():
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        else:
            tensors = list(tensors)
        norm_type = float(norm_type)
        if len(tensors) == 0:
            return torch.tensor(0.0)
        tab = _native_table(tensors, norm_type)
        if tab is None:
            return _torch_get_total_norm(tensors, norm_type, error_if_nonfinite, foreach)
        return _norm(tab, norm_type, error_if_nonfinite)


def clip_grads_with_norm_(
    parameters: _tensor_or_tensors,
    max_norm: float,
    total_norm: torch.Tensor,
    foreach: Optional[bool] = None,
) -> None:
    r"""Scale the gradients of parameters given a pre-computed total norm:
    ``grad = grad * min(max_norm / (total_norm + 1e-6), 1)``, in place
    (torch.nn.utils.clip_grads_with_norm_, on a fused kernel).

    Args:
        parameters (Iterable[Tensor] or Tensor): parameters whose ``.grad`` is scaled
        max_norm (float): max norm of the gradients
        total_norm (Tensor): total norm of the gradients
        foreach (bool): accepted for compatibility (see :func:`get_total_norm`)
    """
    with torch.no_grad():
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        else:
            parameters = list(parameters)
        grads = [p.grad for p in parameters if p.grad is not None]
        max_norm = float(max_norm)
        if len(grads) == 0:
            return
        _scale(parameters, grads, None, max_norm, total_norm, foreach)


def clip_grad_norm_(
    parameters: _tensor_or_tensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: Optional[bool] = None,
) -> torch.Tensor:
    r"""Clip the gradient norm of an iterable of parameters, in place
    (torch.nn.utils.clip_grad_norm_, on fused multi-tensor kernels).

    The norm is computed over all gradients together, as if concatenated into
    one vector; every gradient is then multiplied by
    ``min(max_norm / (total_norm + 1e-6), 1)``.

    Args:
        parameters (Iterable[Tensor] or Tensor): parameters whose ``.grad`` is clipped
        max_norm (float): max norm of the gradients
        norm_type (float): order of the p-norm; ``inf`` for the max norm. Default: 2.0
        error_if_nonfinite (bool): raise if the total norm is nan, inf or -inf
            (the gradients are then left unchanged). Default: False
        foreach (bool): accepted for compatibility; CPU grads always take the
            fused kernels, others torch's implementation with this flag

    Returns:
        Total norm of the parameter gradients (viewed as a single vector).
    """
    with torch.no_grad():
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        else:
            is_generator = isinstance(parameters, types.GeneratorType)
            parameters = list(parameters)  # a generator is consumed once
            if is_generator and len(parameters) == 0:
                warnings.warn(
                    "`parameters` is an empty generator, no gradient clipping will occur.",
                    stacklevel=2,
                )
        grads = [p.grad for p in parameters if p.grad is not None]
        norm_type = float(norm_type)
        if len(grads) == 0:
            total = torch.tensor(0.0)
            float(max_norm)  # torch converts it (and raises on a bad value) even then
            return total
        tab = _native_table(grads, norm_type)
        if tab is None:
            return _torch_clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
        total = _norm(tab, norm_type, error_if_nonfinite)
        max_norm = float(max_norm)
        _scale(parameters, grads, tab, max_norm, total, foreach)
        return total
