"""Training-recipe helpers that every training script writes by hand.

* `scale_lr`        the batch-size scaling rule (linear or square root)
* `param_groups`    parameter groups without weight decay for biases, norm layers, 1-d params
* `EarlyStopping`   stop when a validation metric stops improving
* `lr_range_test`   the LR range test ("LR finder"): exponential sweep, stop on divergence,
                    model and optimizer restored afterwards
"""
from __future__ import annotations

import copy
import fnmatch
import math
import numbers
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from .lr_scheduler import _require_matplotlib, _write_lr

__all__ = ["scale_lr", "param_groups", "EarlyStopping", "lr_range_test", "LRRangeTestResult"]


def _real(name: str, value, *, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return value


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------
# Batch-size scaling
# ---------------------------------------------------------------------------
def scale_lr(base_lr, batch_size, base_batch_size=256, rule: str = "linear"):
    """Scale a learning rate tuned at ``base_batch_size`` to ``batch_size``.

    ``rule="linear"``: ``base_lr * batch_size / base_batch_size``. The linear
    scaling rule (Goyal et al., 2017, "Accurate, Large Minibatch SGD"): doubling
    the batch halves the gradient noise, so SGD (with momentum) can take twice
    the step. It holds for SGD up to batch sizes of a few thousand on ImageNet-
    like problems and needs a warmup (e.g. `fusedoptim.lr_scheduler.WarmupLR`)
    at large batch sizes; beyond the "critical batch size" of the problem it
    over-shoots and the learning rate has to grow more slowly.

    ``rule="sqrt"``: ``base_lr * sqrt(batch_size / base_batch_size)``. The
    square-root rule (Krizhevsky, 2014; Hoffer et al., 2017) keeps the variance
    of the update constant; it is the rule that matches adaptive optimizers
    (Adam, AdamW, RMSprop: Malladi et al., 2022, "On the SDEs and Scaling Rules
    for Adaptive Gradient Algorithms") and is the safer choice when scaling far
    from ``base_batch_size``.

    Either way the result is a starting point for a short search, not a
    guarantee. ``base_lr`` may be a float or a tensor (the result has its type).

    >>> scale_lr(0.1, 1024)                # 0.1 tuned at 256, now at 1024
    0.4
    >>> scale_lr(1e-3, 1024, rule="sqrt")  # Adam
    0.002
    """
    if isinstance(base_lr, Tensor):
        if float(base_lr.min()) < 0 or torch.isnan(base_lr).any():
            raise ValueError(f"base_lr must be >= 0, got {base_lr}")
    else:
        _real("base_lr", base_lr, minimum=0.0)
    bs = _real("batch_size", batch_size, minimum=0.0, strict=True)
    base_bs = _real("base_batch_size", base_batch_size, minimum=0.0, strict=True)
    if rule == "linear":
        factor = bs / base_bs
    elif rule == "sqrt":
        factor = math.sqrt(bs / base_bs)
    else:
        raise ValueError(f"rule must be 'linear' or 'sqrt', got {rule!r}")
    return base_lr * factor


# ---------------------------------------------------------------------------
# Parameter groups without weight decay
# ---------------------------------------------------------------------------
_NORM_TYPES = tuple(
    t
    for t in (
        getattr(nn.modules.batchnorm, "_NormBase", None),  # BatchNorm*, InstanceNorm*, SyncBatchNorm
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)
_NORM_NAME = re.compile(r"Norm(\d[dD])?$")  # third-party norms: LayerNorm2d, LlamaRMSNorm, ...


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))


def _name_matches(name: str, pattern: str) -> bool:
    """Exact name, glob (``*.bias``), or a module prefix (``pos_embed`` matches ``pos_embed.weight``)."""
    return name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)


def _strings(value, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out = list(value)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{what} must return parameter names (str), got {type(v).__name__}")
    return out


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: Iterable[str | type] | None = None,
    lr_scale: dict[str | type, float] | Callable[[str, Tensor], float] | None = None,
    *,
    lr: float | Tensor | None = None,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Parameter groups that apply weight decay only where it belongs.

    No weight decay for (the reason is shown with ``verbose=True``):

    * every parameter with ``ndim <= 1`` (biases, norm scales, scalars, 1-d embeddings);
    * parameters named ``bias`` (``*.bias``);
    * parameters of normalization layers (BatchNorm, InstanceNorm, LayerNorm,
      GroupNorm, RMSNorm, and any module whose class name ends in ``Norm``);
    * names returned by ``model.no_weight_decay()`` and names containing a
      keyword of ``model.no_weight_decay_keywords()``, if the model has them
      (the timm / Swin convention);
    * entries of ``no_decay``: parameter names, module prefixes (``"pos_embed"``),
      glob patterns (``"*.relative_position_bias_table"``) or module types
      (``nn.Embedding``: every parameter of every embedding).

    Parameters with ``requires_grad=False`` are left out (as timm does).

    ``lr_scale`` scales the learning rate of some parameters: a dict
    ``{name pattern or module type: factor}`` (first match wins, others get 1)
    or a function ``(name, param) -> factor``. torch optimizers do not know
    about scales, so it needs the base learning rate: ``lr=`` (each group gets
    ``"lr": lr * factor`` and records ``"lr_scale"``).

    Returns a list of dicts ``{"params", "weight_decay"[, "lr", "lr_scale"]}``
    (empty groups dropped), ready for any torch or fusedoptim optimizer::

        opt = fusedoptim.AdamW(param_groups(model, weight_decay=0.05), lr=1e-3)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    weight_decay = _real("weight_decay", weight_decay, minimum=0.0)
    if lr_scale is not None and lr is None:
        raise ValueError(
            "lr_scale needs the base learning rate: param_groups(..., lr_scale=..., lr=base_lr) "
            "(optimizers do not read a per-group scale)"
        )
    if lr is not None and not isinstance(lr, Tensor):
        lr = _real("lr", lr, minimum=0.0)

    patterns: list[str] = []
    types: list[type] = []
    for entry in [] if no_decay is None else ([no_decay] if isinstance(no_decay, (str, type)) else list(no_decay)):
        if isinstance(entry, str):
            patterns.append(entry)
        elif isinstance(entry, type) and issubclass(entry, nn.Module):
            types.append(entry)
        else:
            raise TypeError(f"no_decay entries must be names/patterns (str) or nn.Module types, got {entry!r}")
    model_names = _strings(model.no_weight_decay(), "model.no_weight_decay()") if hasattr(model, "no_weight_decay") else []
    keywords = (
        _strings(model.no_weight_decay_keywords(), "model.no_weight_decay_keywords()")
        if hasattr(model, "no_weight_decay_keywords")
        else []
    )

    if callable(lr_scale) and not isinstance(lr_scale, dict):
        scale_fn = lr_scale
    elif lr_scale is None or isinstance(lr_scale, dict):
        rules = list((lr_scale or {}).items())
        for key, value in rules:
            if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, nn.Module))):
                raise TypeError(f"lr_scale keys must be names/patterns (str) or nn.Module types, got {key!r}")
            _real(f"lr_scale[{key!r}]", value, minimum=0.0)
        scale_fn = None
    else:
        raise TypeError(f"lr_scale must be a dict or a function (name, param) -> factor, got {type(lr_scale).__name__}")

    owner: dict[int, nn.Module] = {}
    for _, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owner.setdefault(id(p), module)

    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        module = owner.get(id(p))
        reason = None
        if p.ndim <= 1:
            reason = f"{p.ndim}-d"
        elif name == "bias" or name.endswith(".bias"):
            reason = "bias"
        elif module is not None and _is_norm(module):
            reason = f"{type(module).__name__} layer"
        elif any(_name_matches(name, n) for n in model_names):
            reason = "model.no_weight_decay()"
        elif any(k in name for k in keywords):
            reason = "model.no_weight_decay_keywords()"
        elif module is not None and isinstance(module, tuple(types)):
            reason = f"no_decay: {type(module).__name__}"
        else:
            for pat in patterns:
                if _name_matches(name, pat):
                    reason = f"no_decay: {pat!r}"
                    break
        scale = 1.0
        if scale_fn is not None:
            scale = _real(f"lr_scale({name!r})", scale_fn(name, p), minimum=0.0)
        elif lr_scale:
            for key, value in lr_scale.items():
                hit = _name_matches(name, key) if isinstance(key, str) else isinstance(module, key)
                if hit:
                    scale = float(value)
                    break
        key = (scale, reason is None)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"names": [], "params": [], "decay": reason is None, "scale": scale}
        group["params"].append(p)
        group["names"].append((name, reason))

    # order: by first appearance of each scale, the decayed group before the other
    scales = []
    for g in groups.values():
        if g["scale"] not in scales:
            scales.append(g["scale"])
    ordered = [groups[(s, d)] for s in scales for d in (True, False) if (s, d) in groups]

    out = []
    for g in ordered:
        d: dict[str, Any] = {"params": g["params"], "weight_decay": weight_decay if g["decay"] else 0.0}
        if lr_scale is not None:
            d["lr"] = lr * g["scale"]
            d["lr_scale"] = g["scale"]
        out.append(d)

    if verbose:
        total = sum(p.numel() for g in ordered for p in g["params"])
        print(f"param_groups: {len(out)} groups, {sum(len(g['params']) for g in ordered)} tensors, {total:,} elements")
        for i, (g, d) in enumerate(zip(ordered, out)):
            n = sum(p.numel() for p in g["params"])
            extra = f" lr_scale={g['scale']:g}" if lr_scale is not None else ""
            print(f"  group {i}: weight_decay={d['weight_decay']:g}{extra}  {len(g['params'])} tensors  {n:,} elements")
            for name, reason in g["names"]:
                print(f"    {name}" + (f"  ({reason})" if reason else ""))
        sys.stdout.flush()
    return out


# ---------------------------------------------------------------------------
# Early stopping
# ---------------------------------------------------------------------------
class EarlyStopping:
    """Stop training when a monitored metric has stopped improving.

    ``step(metric)`` returns True when training should stop: after
    ``patience`` consecutive steps without improvement (``patience=0`` and ``1``
    both stop at the first step without improvement). A step improves when
    ``metric < best - min_delta`` (``mode="min"``) or ``metric > best + min_delta``
    (``mode="max"``); the first finite metric always improves. NaN never
    improves.

    Visible state: ``best``, ``best_step``, ``num_bad_epochs``, ``num_steps``,
    ``improved`` (did the last step improve: time to save a checkpoint) and
    ``should_stop`` (what the last ``step`` returned). ``state_dict()`` /
    ``load_state_dict()`` checkpoint it.

        stopper = EarlyStopping(patience=5, min_delta=1e-3)
        for epoch in range(max_epochs):
            train(...)
            if stopper.step(validate(...)):
                break
    """

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "min") -> None:
        self.patience = _int("patience", patience, 0)
        self.min_delta = _real("min_delta", min_delta, minimum=0.0)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_step = -1
        self.num_bad_epochs = 0
        self.num_steps = 0
        self.improved = False
        self.should_stop = False

    def _is_better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, metric) -> bool:
        value = float(metric)  # float or 0-d tensor
        self.improved = self._is_better(value)
        if self.improved:
            self.best = value
            self.best_step = self.num_steps
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        self.num_steps += 1
        self.should_stop = not self.improved and self.num_bad_epochs >= self.patience
        return self.should_stop

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        unknown = set(state_dict) - set(self.__dict__)
        if unknown:
            raise KeyError(f"EarlyStopping.load_state_dict: unexpected keys {sorted(unknown)}")
        self.__dict__.update(state_dict)

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, mode={self.mode!r}; "
            f"best={self.best}, num_bad_epochs={self.num_bad_epochs})"
        )


# ---------------------------------------------------------------------------
# LR range test
# ---------------------------------------------------------------------------
@dataclass
class LRRangeTestResult:
    """What `lr_range_test` measured.

    ``lrs[i]`` is the learning rate of the i-th update and ``losses[i]`` the
    smoothed (bias-corrected exponential moving average) loss measured right
    after it; ``raw_losses`` are the unsmoothed values. ``suggested_lr`` is the
    learning rate at the lowest smoothed loss divided by 10 (fastai's
    "minimum/10" rule: safely below where the loss turns up); ``steepest_lr``
    is where the smoothed loss falls fastest against log(lr) (the suggestion
    of torch-lr-finder and fastai's "steep"), searched between the first
    ``skip_start`` updates (early noise: the moving average has seen few
    losses) and the lowest smoothed loss (the divergence tail is no
    candidate). ``diverged`` says whether the sweep stopped because the loss
    exceeded ``diverge_factor`` times its best (or became NaN/inf). Learning
    rates are those of ``param_groups[0]``.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggested_lr: float
    best_lr: float
    steepest_lr: float
    diverged: bool

    def __repr__(self) -> str:
        return (f"LRRangeTestResult(suggested_lr={self.suggested_lr:.3g}, steepest_lr={self.steepest_lr:.3g}, "
                f"best_lr={self.best_lr:.3g}, steps={len(self.lrs)}, "
                f"lrs={self.lrs[0]:.3g}..{self.lrs[-1]:.3g}, diverged={self.diverged})")

    def plot_limits(self) -> tuple[float, float] | None:
        """The y-range `plot` uses: the smoothed curve from its start to its
        lowest point, plus the way back up as far as the start's level (the
        divergence tail above that is clipped, as are raw-loss spikes)."""
        finite = [v for v in self.losses if math.isfinite(v)]
        if not finite:
            return None
        lo = min(finite)
        i_lo = finite.index(lo)
        hi = max(finite[: i_lo + 1])
        if hi <= lo:  # a curve that only rises: show it up to the threshold
            hi = max(finite)
        span = (hi - lo) or abs(lo) or 1.0
        return lo - 0.05 * span, hi + 0.10 * span

    def plot(self, path, *, title: str | None = None):
        """Write the loss against the learning rate (log axis) to an image
        file (PNG): the smoothed loss, the raw losses in grey, the suggested
        and steepest learning rates; y scaled to the smoothed curve."""
        Figure = _require_matplotlib("LRRangeTestResult.plot")
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
        finite = [(lr, l, r) for lr, l, r in zip(self.lrs, self.losses, self.raw_losses) if math.isfinite(l)]
        if finite:
            xs, ys, raw = zip(*finite)
            ax.plot(xs, raw, color="0.75", linewidth=1, label="loss")
            ax.plot(xs, ys, linewidth=1.8, label="smoothed loss")
        limits = self.plot_limits()
        if limits is not None:
            ax.set_ylim(*limits)
        ax.axvline(self.suggested_lr, color="tab:red", linestyle="--",
                   label=f"suggested lr {self.suggested_lr:.3g} (min/10)")
        ax.axvline(self.steepest_lr, color="tab:green", linestyle=":",
                   label=f"steepest descent {self.steepest_lr:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title(title or "LR range test" + (" (stopped at divergence)" if self.diverged else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.savefig(path, dpi=100)
        return path


def steepest_lr(lrs, losses, skip_start: int | None = None) -> float | None:
    """The learning rate where the smoothed `losses` fall fastest against
    log(lr) (central differences), searched from update `skip_start`
    (default: 10% of the updates, at least 1: the moving average is noisy at
    first) to the lowest loss; None if fewer than 3 points remain."""
    pts = [(lr, l) for lr, l in zip(lrs, losses) if math.isfinite(l)]
    if not pts:
        return None
    skip = max(1, len(pts) // 10) if skip_start is None else max(0, int(skip_start))
    i_min = min(range(len(pts)), key=lambda i: pts[i][1])
    seg = pts[skip: i_min + 1]
    if len(seg) < 3:
        seg = pts[: i_min + 1]
    if len(seg) < 3:
        return None
    slopes = [((seg[j + 1][1] - seg[j - 1][1]) / (math.log(seg[j + 1][0]) - math.log(seg[j - 1][0])), seg[j][0])
              for j in range(1, len(seg) - 1)]
    return min(slopes)[1]


def _clone(value):
    return value.detach().clone() if isinstance(value, Tensor) else copy.deepcopy(value)


def _put(container: dict, key, value) -> None:
    """Restore container[key] = value, in place when both are same-shaped tensors."""
    cur = container.get(key)
    if isinstance(cur, Tensor) and isinstance(value, Tensor) and cur.shape == value.shape and cur.dtype == value.dtype:
        with torch.no_grad():
            cur.copy_(value)
    else:
        container[key] = value


class _Snapshot:
    """Everything an LR range test changes, restored in place (tensors keep their identity)."""

    def __init__(self, model: nn.Module, optimizer) -> None:
        params = {id(p): p for p in model.parameters()}
        for g in optimizer.param_groups:
            for p in g["params"]:
                params.setdefault(id(p), p)
        self.tensors = [(t, t.detach().clone()) for t in list(params.values()) + list(model.buffers())]
        self.grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in params.values()]
        self.modes = [(m, m.training) for m in model.modules()]
        self.optimizer = optimizer
        self.groups = [{k: _clone(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        self.state = {p: {k: _clone(v) for k, v in s.items()} for p, s in optimizer.state.items()}
        self.rng = torch.get_rng_state()
        self.cuda_rng = (
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        )

    def restore(self) -> None:
        with torch.no_grad():
            for t, saved in self.tensors:
                t.copy_(saved)
        for p, g in self.grads:
            if g is None:
                p.grad = None
            elif p.grad is not None and p.grad.shape == g.shape and p.grad.layout == g.layout:
                p.grad.copy_(g)
            else:
                p.grad = g
        for m, mode in self.modes:
            m.training = mode
        opt = self.optimizer
        for group, saved in zip(opt.param_groups, self.groups):
            for k in [k for k in group if k != "params" and k not in saved]:
                del group[k]
            for k, v in saved.items():
                _put(group, k, v)
        for p in [p for p in opt.state if p not in self.state]:
            opt.state[p].clear()  # in place first: caches holding this dict see it emptied
            del opt.state[p]
        for p, saved in self.state.items():
            st = opt.state[p]
            for k in [k for k in st if k not in saved]:
                del st[k]
            for k, v in saved.items():
                _put(st, k, v)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _cycle(batches):
    """Iterate `batches` again and again (a one-shot iterator only once)."""
    while True:
        it = iter(batches)
        got = False
        for b in it:
            got = True
            yield b
        if not got or it is batches:
            return


def _loss(model, loss_fn, batch) -> Tensor:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            "lr_range_test: each batch must be an (inputs, targets) pair; it minimises loss_fn(model(inputs), targets)"
        )
    inputs, targets = batch
    if isinstance(inputs, dict):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    loss = loss_fn(out, targets)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError(f"lr_range_test: loss_fn must return a scalar tensor, got {type(loss).__name__}")
    return loss


def lr_range_test(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    start_lr: float = 1e-7,
    end_lr: float = 10,
    num_steps: int = 100,
    smooth: float = 0.98,
    diverge_factor: float = 4,
) -> LRRangeTestResult:
    """The LR range test (Smith, 2017; the fastai "LR finder").

    Trains for up to ``num_steps`` updates while the learning rate grows
    exponentially from ``start_lr`` to ``end_lr``, measuring the loss after
    every update, and stops early when the smoothed loss exceeds
    ``diverge_factor`` times the best smoothed loss so far (or is NaN/inf).
    Afterwards the model (parameters, buffers, gradients, train/eval modes),
    the optimizer (param-group values, per-parameter state) and torch's RNG
    are restored in place, so training can start from where it was.

    Args:
        model: the model; it is put in train mode for the test.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar tensor``.
        batches: iterable of ``(inputs, targets)``; re-iterated if it has fewer
            than ``num_steps + 1`` batches (a one-shot iterator is used once).
            ``inputs`` may be a tensor, a tuple (``model(*inputs)``) or a dict
            (``model(**inputs)``).
        optimizer: the optimizer to test, torch's or fusedoptim's; param
            groups keep their learning-rate ratios to ``param_groups[0]``.
        start_lr, end_lr: the sweep's first and last learning rate.
        num_steps: number of updates (>= 2).
        smooth: in [0, 1), weight of the exponential moving average of the loss.
        diverge_factor: > 1, the divergence threshold.

    Returns an `LRRangeTestResult` (``.lrs``, ``.losses``, ``.suggested_lr``,
    ``.plot(path)``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(model(inputs), targets) -> scalar tensor")
    start_lr = _real("start_lr", start_lr, minimum=0.0, strict=True)
    end_lr = _real("end_lr", end_lr, minimum=0.0, strict=True)
    if end_lr <= start_lr:
        raise ValueError(f"end_lr ({end_lr}) must be larger than start_lr ({start_lr})")
    num_steps = _int("num_steps", num_steps, 2)
    smooth = _real("smooth", smooth)
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    diverge_factor = _real("diverge_factor", diverge_factor)
    if not diverge_factor > 1.0:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")

    groups = optimizer.param_groups
    ref = float(groups[0]["lr"])
    ratios = [float(g["lr"]) / ref if ref != 0 else 1.0 for g in groups]
    sweep = [start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)) for i in range(num_steps)]

    snapshot = _Snapshot(model, optimizer)
    lrs: list[float] = []
    raw: list[float] = []
    smoothed: list[float] = []
    diverged = False
    try:
        model.train()
        it = _cycle(batches)
        batch = next(it, None)
        if batch is None:
            raise ValueError("lr_range_test: `batches` yielded no batch")
        loss = _loss(model, loss_fn, batch)
        avg = 0.0
        best = math.inf
        for i, lr in enumerate(sweep):
            for g, r in zip(groups, ratios):
                _write_lr(g, lr * r)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch = next(it, None)
            if batch is None:
                break
            loss = _loss(model, loss_fn, batch)  # the loss after the update with `lr`
            value = float(loss.detach())
            lrs.append(lr)
            raw.append(value)
            if not math.isfinite(value):
                smoothed.append(value)
                diverged = True
                break
            avg = smooth * avg + (1.0 - smooth) * value
            s = avg / (1.0 - smooth ** (len(raw)))
            smoothed.append(s)
            best = min(best, s)
            if s > diverge_factor * best:
                diverged = True
                break
    finally:
        snapshot.restore()

    if not lrs:
        raise ValueError("lr_range_test: `batches` must yield at least two batches")
    finite = [(l, lr) for l, lr in zip(smoothed, lrs) if math.isfinite(l)]
    if finite:
        best_loss, best_lr = min(finite)
    else:
        best_lr = lrs[0]
    steep = steepest_lr(lrs, smoothed)
    return LRRangeTestResult(
        lrs=lrs,
        losses=smoothed,
        raw_losses=raw,
        suggested_lr=best_lr / 10.0,
        best_lr=best_lr,
        steepest_lr=best_lr if steep is None else steep,
        diverged=diverged,
    )
