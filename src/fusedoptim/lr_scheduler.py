"""Learning-rate schedulers: everything `torch.optim.lr_scheduler` has, plus warmup.

    from fusedoptim import lr_scheduler     # instead of torch.optim.lr_scheduler

Every name of `torch.optim.lr_scheduler` is available here. The scheduler
classes are subclasses of torch's own (``isinstance(s, torch.optim.lr_scheduler.StepLR)``
holds), so learning-rate sequences, ``state_dict`` layout, ``last_epoch``
semantics and errors are torch's: a torch scheduler's ``state_dict`` loads into
the fusedoptim class of the same name and back. They drive torch's optimizers
and fusedoptim's alike.

What differs is one guarantee torch does not quite give: **a scheduler never
changes the type of ``group["lr"]``**.

* A tensor ``lr`` is written in place (``.fill_()``) and stays the same tensor
  object (torch 2.13 already does this; it is checked after every write).
* A float ``lr`` stays a Python float. torch writes whatever the schedule
  computed, so a tensor hyper-parameter (``gamma``, ``eta_min``, ``min_lr``,
  ``max_lr``, a lambda returning a tensor or a NumPy scalar) silently turns
  ``group["lr"]`` into a tensor or ``numpy.float32``. With ``CyclicLR`` and a
  tensor ``base_lr`` that is worse than a type change: torch puts the
  ``base_lr`` tensor itself into the group, later fills it in place, and the
  schedule gets stuck at ``max_lr``. Here the value is converted to a float.

New schedulers (real `LRScheduler` subclasses, with ``state_dict`` support):

* `WarmupLR`             warmup (linear, exponential or constant), then any scheduler
* `WarmupCosineLR`       linear warmup + cosine decay with optional restarts
* `WarmupStableDecayLR`  warmup, constant plateau, then a linear/cosine/1-sqrt cooldown

and `plot` draws schedules into a PNG (needs matplotlib: ``pip install
'fusedoptim[plot]'``), also from the shell::

    python -m fusedoptim.lr_scheduler "WarmupCosineLR(warmup_steps=500, total_steps=10000)" \\
        --steps 10000 --out schedule.png
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import warnings
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim import lr_scheduler as _torch_sched

# `python -m fusedoptim.lr_scheduler` runs this file as __main__ after the
# package's __init__ has already imported it as fusedoptim.lr_scheduler; runpy
# then warns about "unpredictable behaviour". The __main__ block below hands
# over to the imported module, so the warning says nothing useful: silence
# exactly that one message.
warnings.filterwarnings(
    "ignore",
    message=r"'fusedoptim\.lr_scheduler' found in sys\.modules after import of package 'fusedoptim'",
    category=RuntimeWarning,
)

_TORCH_ALL = list(getattr(_torch_sched, "__all__", []))
_NEW = ["WarmupLR", "WarmupCosineLR", "WarmupStableDecayLR", "plot"]
__all__ = _TORCH_ALL + _NEW


# ---------------------------------------------------------------------------
# Keeping group["lr"] of the type the user gave it
# ---------------------------------------------------------------------------
def _lr_values(optimizer) -> list:
    """group["lr"] of every group, tensors cloned (never aliased)."""
    return [g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"] for g in optimizer.param_groups]


def _as_fill_value(value):
    if isinstance(value, Tensor):
        value = value.detach()
        return value.reshape(()) if value.dim() != 0 else value
    return value


def _write_lr(group: dict, value) -> None:
    """Set group["lr"] to `value` keeping its type: a tensor lr is filled in
    place, anything else becomes a Python float (ints are kept as torch keeps them)."""
    cur = group["lr"]
    if isinstance(cur, Tensor):
        if value is not cur:
            cur.fill_(_as_fill_value(value))
    elif type(value) in (float, int):
        group["lr"] = value
    else:  # Tensor, numpy scalar, Fraction, ...
        group["lr"] = float(value)


class _KeepLRTypes:
    """Around torch code that writes group["lr"]: afterwards every tensor lr is
    the very tensor it was before (holding the new value) and every float lr is
    a float again; the scheduler's `_last_lr` is refreshed if anything was fixed."""

    def __init__(self, optimizer, scheduler=None):
        groups = getattr(optimizer, "param_groups", None)
        self.saved = [(g, g.get("lr")) for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []
        self.optimizer = optimizer
        self.scheduler = scheduler

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        fixed = False
        for group, old in self.saved:
            if old is None or "lr" not in group:
                continue
            new = group["lr"]
            if isinstance(old, Tensor):
                if new is not old:
                    old.fill_(_as_fill_value(new))
                    group["lr"] = old
                    fixed = True
            elif type(new) not in (float, int):
                group["lr"] = float(new)
                fixed = True
        if fixed and self.scheduler is not None and "_last_lr" in self.scheduler.__dict__:
            self.scheduler._last_lr = _lr_values(self.optimizer)
        return False


def _floats_for_float_groups(optimizer, value):
    """Per-group lr arguments that torch stores into param groups (CyclicLR's
    `base_lr` becomes group["lr"] itself, OneCycleLR's `max_lr` becomes
    group["initial_lr"], "max_lr", "min_lr"): floats for groups whose lr is a
    float, so no group gets a tensor there (or, worse, an alias of the argument)."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list):
        return value  # let torch raise its own error
    float_group = [not isinstance(g.get("lr"), Tensor) for g in groups]
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            return value
        return type(value)(
            float(v) if isinstance(v, Tensor) and f else v for v, f in zip(value, float_group)
        )
    if isinstance(value, Tensor) and any(float_group):
        return [float(value) if f else value for f in float_group]
    return value


_warn_get_lr = getattr(_torch_sched, "_warn_get_lr_called_within_step", lambda sched: None)


# ---------------------------------------------------------------------------
# torch's schedulers
# ---------------------------------------------------------------------------
class LRScheduler(_torch_sched.LRScheduler):
    __doc__ = _torch_sched.LRScheduler.__doc__

    if hasattr(_torch_sched.LRScheduler, "_update_lr"):

        def _update_lr(self, epoch=None) -> None:
            with _KeepLRTypes(self.optimizer, self):
                super()._update_lr(epoch)

    else:  # pragma: no cover - torch versions that write the lrs inside step()

        def step(self, *args, **kwargs):
            # passes everything on: for ReduceLROnPlateau the next step() in the MRO is step(metrics)
            with _KeepLRTypes(self.optimizer, self):
                return super().step(*args, **kwargs)


class _LRScheduler(LRScheduler, _torch_sched._LRScheduler):
    __doc__ = _torch_sched._LRScheduler.__doc__


def _same(name):
    """A subclass of torch's scheduler `name` that only adds the lr type guard."""
    base = getattr(_torch_sched, name)
    return type(name, (LRScheduler, base), {"__doc__": base.__doc__, "__module__": __name__, "__qualname__": name})


LambdaLR = _same("LambdaLR")
MultiplicativeLR = _same("MultiplicativeLR")
StepLR = _same("StepLR")
MultiStepLR = _same("MultiStepLR")
ConstantLR = _same("ConstantLR")
LinearLR = _same("LinearLR")
ExponentialLR = _same("ExponentialLR")
PolynomialLR = _same("PolynomialLR")
CosineAnnealingLR = _same("CosineAnnealingLR")


class SequentialLR(LRScheduler, _torch_sched.SequentialLR):
    __doc__ = _torch_sched.SequentialLR.__doc__

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        with _KeepLRTypes(optimizer, self):
            super().__init__(optimizer, schedulers, milestones, last_epoch)

    def step(self) -> None:  # type: ignore[override]
        with _KeepLRTypes(self.optimizer, self):
            super().step()


class ChainedScheduler(LRScheduler, _torch_sched.ChainedScheduler):
    __doc__ = _torch_sched.ChainedScheduler.__doc__

    def step(self) -> None:  # type: ignore[override]
        with _KeepLRTypes(self.optimizer, self):
            super().step()


class ReduceLROnPlateau(LRScheduler, _torch_sched.ReduceLROnPlateau):
    __doc__ = _torch_sched.ReduceLROnPlateau.__doc__

    def _reduce_lr(self, epoch) -> None:
        # the only place it writes; step() reads _last_lr back afterwards
        with _KeepLRTypes(self.optimizer):
            super()._reduce_lr(epoch)


class CyclicLR(LRScheduler, _torch_sched.CyclicLR):
    __doc__ = _torch_sched.CyclicLR.__doc__

    def __init__(self, optimizer, base_lr, max_lr, *args, **kwargs):
        base_lr = _floats_for_float_groups(optimizer, base_lr)
        with _KeepLRTypes(optimizer, self):
            super().__init__(optimizer, base_lr, max_lr, *args, **kwargs)


class OneCycleLR(LRScheduler, _torch_sched.OneCycleLR):
    __doc__ = _torch_sched.OneCycleLR.__doc__

    def __init__(self, optimizer, max_lr, *args, **kwargs):
        super().__init__(optimizer, _floats_for_float_groups(optimizer, max_lr), *args, **kwargs)


class CosineAnnealingWarmRestarts(LRScheduler, _torch_sched.CosineAnnealingWarmRestarts):
    __doc__ = _torch_sched.CosineAnnealingWarmRestarts.__doc__

    def step(self, epoch=None) -> None:
        with _KeepLRTypes(self.optimizer, self):
            super().step(epoch)


def _copy_torch_signatures() -> None:
    """Methods we wrap show torch's signature and docstring (introspection, e.g.
    LightningCLI building scheduler arguments from __init__, and help())."""
    for name in _TORCH_ALL + ["_LRScheduler"]:
        ours, theirs = globals()[name], getattr(_torch_sched, name)
        for attr, fn in vars(ours).items():
            if inspect.isfunction(fn) and hasattr(theirs, attr):
                original = getattr(theirs, attr)
                fn.__signature__ = inspect.signature(original)
                fn.__doc__ = fn.__doc__ or original.__doc__


_copy_torch_signatures()


# ---------------------------------------------------------------------------
# New schedulers
# ---------------------------------------------------------------------------
def _check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _initial_lrs(optimizer, last_epoch) -> list | None:
    """The lrs LRScheduler.__init__ will take as base_lrs (None: let it raise)."""
    out = []
    for g in optimizer.param_groups:
        if "initial_lr" in g:
            out.append(float(g["initial_lr"]))
        elif last_epoch == -1:
            out.append(float(g["lr"]))
        else:
            return None  # torch raises its KeyError about 'initial_lr'
    return out


def _min_lrs(optimizer, min_lr, last_epoch) -> list[float]:
    n = len(optimizer.param_groups)
    if isinstance(min_lr, (list, tuple)):
        if len(min_lr) != n:
            raise ValueError(f"min_lr must have one value per param group ({n}), got {len(min_lr)}")
        values = [_check_real("min_lr", v) for v in min_lr]
    else:
        values = [_check_real("min_lr", min_lr)] * n
    for v in values:
        if v < 0:
            raise ValueError(f"min_lr must be >= 0, got {v}")
    initial = _initial_lrs(optimizer, last_epoch)
    if initial is not None:
        for i, (lo, hi) in enumerate(zip(values, initial)):
            if lo > hi:
                raise ValueError(
                    f"min_lr ({lo}) is larger than the learning rate of param group {i} ({hi})"
                )
    return values


class _ClosedFormLR(LRScheduler):
    """A schedule given by `_lr_at(step, base_lr, min_lr)` in closed form."""

    def get_lr(self) -> list:
        _warn_get_lr(self)
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self) -> list:
        return [self._lr_at(self.last_epoch, base, lo) for base, lo in zip(self.base_lrs, self.min_lrs)]


class WarmupCosineLR(_ClosedFormLR):
    r"""Linear warmup, then cosine decay to ``min_lr``, with optional restarts.

    With ``W = warmup_steps``, ``T = total_steps``, ``C = cycles``, the
    learning rate at step ``t`` (``last_epoch``) of a group whose initial lr
    is ``lr`` is

    * ``lr * t / W`` for ``t < W`` (from 0, reaching ``lr`` at ``t = W``);
    * for ``W <= t < T``: the ``T - W`` decay steps are split into ``C`` equal
      cycles; in cycle ``k`` (``k = floor((t - W) * C / (T - W))``) at progress
      ``p`` in [0, 1) through the cycle::

          min_lr + (lr - min_lr) * cycle_decay**k * (1 + cos(pi * p)) / 2

      so every restart jumps back up to ``min_lr + (lr - min_lr) * cycle_decay**k``;
    * ``min_lr`` for ``t >= T``.

    With ``min_lr=0, cycles=1`` this is ``transformers.get_cosine_schedule_with_warmup``;
    with ``cycles=C`` it is their ``..._with_hard_restarts``.

    The value depends on ``t`` and the initial lrs only (like `LambdaLR`), so it
    is not chainable with other schedulers; ``step(epoch)`` jumps to ``epoch``.

    Args:
        optimizer: wrapped optimizer.
        warmup_steps (int): steps of linear warmup, ``0 <= warmup_steps < total_steps``.
        total_steps (int): step at which ``min_lr`` is reached.
        min_lr (float or list): final learning rate (one per param group, or one for all).
        cycles (int): number of cosine cycles in the decay phase (``cycles - 1`` restarts).
        cycle_decay (float): in (0, 1]; each restart's peak is scaled by it.
        last_epoch (int): index of the last step, to resume; default -1.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr: float | list[float] = 0.0,
        cycles: int = 1,
        cycle_decay: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        self.total_steps = _check_int("total_steps", total_steps, 1)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps}): "
                "the cosine phase needs at least one step"
            )
        self.cycles = _check_int("cycles", cycles, 1)
        decay_steps = self.total_steps - self.warmup_steps
        if self.cycles > decay_steps:
            raise ValueError(
                f"cycles ({cycles}) must not exceed the {decay_steps} decay steps "
                "(total_steps - warmup_steps): each cycle needs at least one step"
            )
        self.cycle_decay = _check_real("cycle_decay", cycle_decay)
        if not 0.0 < self.cycle_decay <= 1.0:
            raise ValueError(f"cycle_decay must be in (0, 1], got {cycle_decay}")
        self.min_lrs = _min_lrs(optimizer, min_lr, last_epoch)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, t: int, base, lo: float):
        w, total = self.warmup_steps, self.total_steps
        if t < w:
            return base * (max(t, 0) / w)
        if t >= total:
            return lo
        if t == w:
            return base
        decay = total - w
        pos = (t - w) * self.cycles  # exact integer arithmetic for the cycle index
        k = pos // decay
        p = (pos - k * decay) / decay
        return lo + (base - lo) * (self.cycle_decay**k) * ((1.0 + math.cos(math.pi * p)) / 2.0)


_WSD_DECAYS = ("linear", "cosine", "sqrt")


class WarmupStableDecayLR(_ClosedFormLR):
    r"""Warmup-stable-decay ("trapezoidal") schedule.

    With ``W, S, D`` = ``warmup_steps, stable_steps, decay_steps`` and a group's
    initial lr ``lr``, the learning rate at step ``t`` is

    * ``lr * t / W`` for ``t < W`` (linear warmup from 0);
    * ``lr`` for ``W <= t <= W + S``;
    * ``min_lr + (lr - min_lr) * f(p)`` with ``p = (t - W - S) / D`` for the
      next ``D`` steps, where ``f(p)`` is ``1 - p`` (``decay="linear"``),
      ``(1 + cos(pi p)) / 2`` (``"cosine"``) or ``1 - sqrt(p)`` (``"sqrt"``,
      the "1-sqrt" cooldown of Hägele et al., 2024);
    * ``min_lr`` from ``t = W + S + D`` on.

    Like `WarmupCosineLR` it is a closed form of ``t`` (not chainable).

    Args:
        optimizer: wrapped optimizer.
        warmup_steps (int): >= 0.
        stable_steps (int): >= 0, steps at the peak learning rate after warmup.
        decay_steps (int): >= 1, length of the cooldown.
        min_lr (float or list): final learning rate (one per group, or one for all).
        decay (str): ``"linear"``, ``"cosine"`` or ``"sqrt"``.
        last_epoch (int): index of the last step, to resume; default -1.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        stable_steps: int,
        decay_steps: int,
        min_lr: float | list[float] = 0.0,
        decay: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        self.stable_steps = _check_int("stable_steps", stable_steps, 0)
        self.decay_steps = _check_int("decay_steps", decay_steps, 1)
        if decay not in _WSD_DECAYS:
            raise ValueError(f"decay must be one of {', '.join(map(repr, _WSD_DECAYS))}, got {decay!r}")
        self.decay = decay
        self.min_lrs = _min_lrs(optimizer, min_lr, last_epoch)
        super().__init__(optimizer, last_epoch)

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.stable_steps + self.decay_steps

    def _lr_at(self, t: int, base, lo: float):
        w, s, d = self.warmup_steps, self.stable_steps, self.decay_steps
        if t < w:
            return base * (max(t, 0) / w)
        if t <= w + s:
            return base
        if t >= w + s + d:
            return lo
        p = (t - w - s) / d
        if self.decay == "linear":
            f = 1.0 - p
        elif self.decay == "cosine":
            f = (1.0 + math.cos(math.pi * p)) / 2.0
        else:
            f = 1.0 - math.sqrt(p)
        return lo + (base - lo) * f


_WARMUP_MODES = ("linear", "exponential", "constant")


def _needs_metrics(scheduler) -> bool:
    if isinstance(scheduler, _torch_sched.ReduceLROnPlateau):
        return True
    return isinstance(scheduler, WarmupLR) and _needs_metrics(scheduler.after)


class WarmupLR(LRScheduler):
    r"""Warm up, then hand over to another scheduler.

    For ``t < warmup_steps`` (``t`` = ``last_epoch``) the learning rate of a
    group with initial lr ``lr`` is ``lr * factor(t)`` with, for
    ``W = warmup_steps`` and ``s = start_factor``:

    * ``"linear"``:      ``s + (1 - s) * t / W``
    * ``"exponential"``: ``s ** (1 - t / W)``  (geometric from ``s*lr`` to ``lr``; needs ``s > 0``)
    * ``"constant"``:    ``s``

    At ``t = W`` warmup is over: the optimizer gets the learning rates
    ``after`` started from (for most schedulers, ``lr``) and ``after`` is put
    back into the state it had when this WarmupLR was created, i.e. its step 0;
    step ``W + k`` is ``after``'s step ``k``. ``after`` may be any scheduler on
    the same optimizer, torch's or ours, including `ReduceLROnPlateau` (call
    ``scheduler.step(metric)``; metrics passed during warmup are ignored) and
    another `WarmupLR`. Without ``after`` the learning rate stays at ``lr``.

    Create ``after`` first, then the WarmupLR (as with `SequentialLR`)::

        cosine = CosineAnnealingLR(opt, T_max=9000)
        sched = WarmupLR(opt, warmup_steps=1000, after=cosine)

    ``state_dict()`` includes ``after``'s state dict.

    Args:
        optimizer: wrapped optimizer.
        warmup_steps (int): >= 0.
        after (scheduler, optional): the scheduler that runs after warmup.
        start_factor (float): in [0, 1], the warmup starts at ``start_factor * lr``.
        mode (str): ``"linear"``, ``"exponential"`` or ``"constant"``.
        last_epoch (int): index of the last step, to resume without ``after``;
            with ``after``, resume through ``load_state_dict`` instead.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        after=None,
        start_factor: float = 0.0,
        mode: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        if mode not in _WARMUP_MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, _WARMUP_MODES))}, got {mode!r}")
        self.mode = mode
        self.start_factor = _check_real("start_factor", start_factor)
        if not 0.0 <= self.start_factor <= 1.0:
            raise ValueError(f"start_factor must be in [0, 1], got {start_factor}")
        if mode == "exponential" and self.start_factor <= 0.0:
            raise ValueError("mode='exponential' needs start_factor > 0 (0 cannot grow geometrically)")
        if after is not None:
            for attr in ("optimizer", "step", "state_dict", "load_state_dict"):
                if not hasattr(after, attr):
                    raise TypeError(f"after must be an LR scheduler, got {type(after).__name__} (no `{attr}`)")
            if after.optimizer is not optimizer:
                raise ValueError("WarmupLR and its `after` scheduler must belong to the same optimizer")
            if last_epoch != -1:
                raise ValueError(
                    "WarmupLR(after=...) cannot resume from last_epoch; create it with last_epoch=-1 "
                    "and restore it with load_state_dict()"
                )
        self.after = after
        # what `after` starts from: its state and the lrs right after its own construction
        self._after_start = copy.deepcopy(after.state_dict()) if after is not None else None
        self._after_lrs = _lr_values(optimizer) if after is not None else None
        super().__init__(optimizer, last_epoch)

    def _factor(self, t: int) -> float:
        s, w = self.start_factor, self.warmup_steps
        if self.mode == "linear":
            return s + (1.0 - s) * (t / w)
        if self.mode == "exponential":
            return s ** (1.0 - t / w)
        return s

    def get_lr(self) -> list:
        _warn_get_lr(self)
        t = self.last_epoch
        if t < self.warmup_steps:
            f = self._factor(max(t, 0))
            return [base * f for base in self.base_lrs]
        if t == self.warmup_steps:  # hand over: `after` at its step 0
            if self.after is None:
                return [b.clone() if isinstance(b, Tensor) else b for b in self.base_lrs]
            self.after.load_state_dict(copy.deepcopy(self._after_start))
            return [v.clone() if isinstance(v, Tensor) else v for v in self._after_lrs]
        return _lr_values(self.optimizer)  # past warmup without `after`: hold

    def step(self, metrics=None) -> None:  # type: ignore[override]
        """Advance one step. ``metrics``: only when ``after`` is a
        `ReduceLROnPlateau` (ignored during warmup, required afterwards)."""
        takes_metrics = _needs_metrics(self.after)
        if metrics is not None and not takes_metrics:
            raise TypeError(
                "WarmupLR.step() takes a metric only when `after` is ReduceLROnPlateau "
                "(the deprecated step(epoch) form is not supported)"
            )
        if self.after is None or self.last_epoch + 1 <= self.warmup_steps:
            super().step()
            return
        if takes_metrics and metrics is None:
            raise TypeError(
                "after warmup, WarmupLR(after=ReduceLROnPlateau) needs the metric: scheduler.step(val_loss)"
            )
        self._step_count += 1
        self.last_epoch += 1
        with _KeepLRTypes(self.optimizer):
            if takes_metrics:
                self.after.step(metrics)
            else:
                self.after.step()
        self._last_lr = _lr_values(self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "after")}
        state["after"] = self.after.state_dict() if self.after is not None else None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        after = state.pop("after", None)
        if (after is None) != (self.after is None):
            raise ValueError(
                "WarmupLR.load_state_dict: the state was saved "
                + ("with" if after is not None else "without")
                + " an `after` scheduler but this WarmupLR has "
                + ("none" if self.after is None else "one")
            )
        self.__dict__.update(state)
        if after is not None:
            self.after.load_state_dict(after)


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------
def _require_matplotlib(what: str):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            f"{what} needs matplotlib, which is an optional extra of fusedoptim: "
            "pip install 'fusedoptim[plot]'"
        ) from e
    return Figure


def _is_scheduler(obj) -> bool:
    return isinstance(obj, _torch_sched.LRScheduler) or (
        hasattr(obj, "optimizer") and hasattr(obj, "step") and hasattr(obj, "state_dict") and not callable(obj)
    )


def _label(obj: functools.partial) -> str:
    args = [repr(a) for a in obj.args] + [f"{k}={v!r}" for k, v in obj.keywords.items()]
    return f"{getattr(obj.func, '__name__', 'schedule')}({', '.join(args)})"


def _snapshot(value):
    return value.clone() if isinstance(value, Tensor) else copy.deepcopy(value)


def _restore_groups(optimizer, saved) -> None:
    for group, keys in zip(optimizer.param_groups, saved):
        for k in [k for k in group if k != "params" and k not in keys]:
            del group[k]
        for k, v in keys.items():
            cur = group.get(k)
            if isinstance(cur, Tensor) and isinstance(v, Tensor) and cur.shape == v.shape:
                cur.copy_(v)
            else:
                group[k] = v


def _trace(obj, steps: int, lr: float) -> tuple[str, list[list[float]]]:
    """The lr of every param group at steps 0..steps-1: (name, [per-step values])."""
    if _is_scheduler(obj):
        sched, factory = obj, False
    elif callable(obj):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        sched, factory = obj(opt), True
        if not _is_scheduler(sched) or sched.optimizer is not opt:
            raise TypeError(
                f"a schedule factory must return a scheduler built on the optimizer it is given, got {type(sched).__name__}"
            )
    else:
        raise TypeError(f"expected a scheduler or a callable optimizer -> scheduler, got {type(obj).__name__}")
    if _needs_metrics(sched):
        raise TypeError(f"cannot plot {type(sched).__name__}: its schedule depends on the metrics passed to step()")
    name = _label(obj) if isinstance(obj, functools.partial) else type(sched).__name__
    opt = sched.optimizer
    if not factory:  # leave the caller's scheduler and optimizer as they were
        saved_sched = copy.deepcopy(sched.state_dict())
        saved_groups = [{k: _snapshot(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]
        had_called = "_opt_called" in opt.__dict__, opt.__dict__.get("_opt_called")
    values = []
    try:
        with warnings.catch_warnings():
            # we step the scheduler without training: no optimizer.step() warnings
            warnings.filterwarnings("ignore", message=r".*optimizer\.step\(\)", category=UserWarning)
            for i in range(steps):
                values.append([float(g["lr"]) for g in opt.param_groups])
                if i + 1 < steps:
                    sched.step()
    finally:
        if not factory:
            sched.load_state_dict(saved_sched)
            _restore_groups(opt, saved_groups)
            if had_called[0]:
                opt._opt_called = had_called[1]
            else:
                opt.__dict__.pop("_opt_called", None)
    return name, values


def plot(schedulers_or_factories, steps: int, path, *, lr: float = 1.0, title: str | None = None, log_y: bool = False):
    """Draw one or more learning-rate schedules into an image file (PNG).

    Args:
        schedulers_or_factories: a scheduler, a factory ``optimizer -> scheduler``
            (e.g. ``functools.partial(WarmupCosineLR, warmup_steps=10, total_steps=100)``
            or a lambda), a list of those, or a dict ``{label: scheduler or factory}``.
            Factories get a one-parameter SGD with learning rate ``lr``. A
            scheduler you pass is stepped ``steps - 1`` times and then restored
            (its state and its optimizer's param-group values), so it can be
            plotted mid-training.
        steps (int): number of steps to draw (0 .. steps-1).
        path: where to write the image (its suffix picks the format, e.g. ``.png``).
        lr (float): the learning rate factories' optimizers start from.
        title (str, optional): figure title.
        log_y (bool): logarithmic learning-rate axis.

    Returns the path. Needs matplotlib (``pip install 'fusedoptim[plot]'``);
    without it raises ImportError naming that extra.
    """
    Figure = _require_matplotlib("fusedoptim.lr_scheduler.plot")
    steps = _check_int("steps", steps, 1)
    lr = _check_real("lr", lr)
    if isinstance(schedulers_or_factories, dict):
        items = list(schedulers_or_factories.items())
    elif isinstance(schedulers_or_factories, (list, tuple)):
        items = [(None, o) for o in schedulers_or_factories]
    else:
        items = [(None, schedulers_or_factories)]
    if not items:
        raise ValueError("nothing to plot: no scheduler or factory given")
    curves = []
    for label, obj in items:
        name, values = _trace(obj, steps, lr)
        label = name if label is None else str(label)
        n_groups = len(values[0])
        for g in range(n_groups):
            curves.append((label if n_groups == 1 else f"{label} [group {g}]", [v[g] for v in values]))
    fig = Figure(figsize=(8, 4.5 + 0.25 * len(curves)), layout="constrained")
    ax = fig.add_subplot()
    xs = list(range(steps))
    for label, ys in curves:
        ax.plot(xs, ys, label=label, linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", fontsize="small")
    fig.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------------
# Command line: python -m fusedoptim.lr_scheduler "EXPR" --steps N --out file.png
# (the expression mini-language lives in fusedoptim._schedule_cli)
# ---------------------------------------------------------------------------
def main(argv=None) -> int:
    """`python -m fusedoptim.lr_scheduler`: see fusedoptim._schedule_cli."""
    from ._schedule_cli import main as _main

    return _main(argv)


def _parse_schedule(expr: str) -> Callable[[Optimizer], Any]:
    from ._schedule_cli import parse_schedule

    return parse_schedule(expr)


# Every other name of torch.optim.lr_scheduler (helpers, EPOCH_DEPRECATION_WARNING, ...)
for _name in dir(_torch_sched):
    if not (_name.startswith("__") and _name.endswith("__")) and _name not in globals():
        globals()[_name] = getattr(_torch_sched, _name)
del _name


if __name__ == "__main__":
    # run the package's module (the one __init__ imported), not a second copy of its classes
    from fusedoptim.lr_scheduler import main as _main

    raise SystemExit(_main())
