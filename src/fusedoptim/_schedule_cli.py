"""The command line of `python -m fusedoptim.lr_scheduler`: a schedule is
written as a call of one of fusedoptim.lr_scheduler's schedulers, e.g.
``"WarmupCosineLR(warmup_steps=500, total_steps=10000)"``, parsed with `ast`
into a factory ``optimizer -> scheduler``; nothing is evaluated."""
from __future__ import annotations

import argparse
import ast
import copy
import inspect
import sys
from typing import Any, Callable

from torch.optim import Optimizer


def _cli_schedulers() -> dict[str, type]:
    from . import lr_scheduler as mod

    names = [n for n in mod._TORCH_ALL if n != "LRScheduler"] + ["WarmupLR", "WarmupCosineLR", "WarmupStableDecayLR"]
    return {n: getattr(mod, n) for n in names}


def _optimizer_first(cls) -> bool:
    """The optimizer is the constructor's first parameter (all but
    ChainedScheduler, which takes it after `schedulers`)."""
    try:
        return next(iter(inspect.signature(cls).parameters)) == "optimizer"
    except (TypeError, ValueError, StopIteration):
        return True


def _signature(cls) -> str:
    """The constructor's parameters after the optimizer, as Python shows them."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return "(...)"
    parts = []
    for n, p in sig.parameters.items():
        if n == "optimizer":
            continue
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{n}")
        elif p.kind is p.VAR_KEYWORD:
            parts.append(f"**{n}")
        else:
            parts.append(n if p.default is p.empty else f"{n}={p.default!r}")
    return f"({', '.join(parts)})"


def _epilog() -> str:
    lines = ["schedulers (the optimizer is supplied; arguments by position or keyword):"]
    for name, cls in sorted(_cli_schedulers().items()):
        lines.append(f"  {name}{_signature(cls)}")
    lines += ["", "examples:",
              "  python -m fusedoptim.lr_scheduler \"WarmupStableDecayLR(500, 8000, 1500, decay='cosine')\" "
              "--steps 10000",
              "  python -m fusedoptim.lr_scheduler \"WarmupLR(100, after=CosineAnnealingLR(T_max=900))\" "
              "\"OneCycleLR(max_lr=1.0, total_steps=1000)\" --steps 1000 --out cmp.png"]
    return "\n".join(lines)


def _compile_value(node: ast.AST, where: str) -> Callable[[Optimizer], Any]:
    if isinstance(node, ast.Call):
        return _compile_call(node)
    if isinstance(node, (ast.List, ast.Tuple)):
        parts = [_compile_value(e, where) for e in node.elts]
        kind = list if isinstance(node, ast.List) else tuple
        return lambda opt: kind(p(opt) for p in parts)
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(
            f"{where} must be a literal (number, string, True/False/None, list) or a scheduler call, "
            f"got {ast.unparse(node)!r}"
        ) from None
    return lambda opt: copy.deepcopy(value)


def _compile_call(node: ast.Call) -> Callable[[Optimizer], Any]:
    allowed = _cli_schedulers()
    if not isinstance(node.func, ast.Name) or node.func.id not in allowed:
        raise ValueError(
            f"unknown scheduler {ast.unparse(node.func)!r}; use one of: {', '.join(sorted(allowed))}"
        )
    cls = allowed[node.func.id]
    args = []
    for i, a in enumerate(node.args):
        if isinstance(a, ast.Starred):
            raise ValueError(f"{node.func.id}(...): *args are not supported")
        args.append(_compile_value(a, f"{node.func.id}(argument {i + 1})"))
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"{node.func.id}(...): **kwargs are not supported")
        if kw.arg == "optimizer":
            raise ValueError(f"{node.func.id}(...): the optimizer is supplied, do not pass one")
        kwargs[kw.arg] = _compile_value(kw.value, f"{node.func.id}({kw.arg}=...)")
    first = _optimizer_first(cls)
    try:  # arity and names now, as Python would check them
        if first:
            inspect.signature(cls).bind(None, *args, **kwargs)
        else:
            inspect.signature(cls).bind(*args, optimizer=None, **kwargs)
    except TypeError as e:
        raise ValueError(f"{node.func.id}{_signature(cls)}: {e} (the optimizer is supplied)") from None

    def build(optimizer):
        pos = [a(optimizer) for a in args]
        kw = {k: v(optimizer) for k, v in kwargs.items()}
        return cls(optimizer, *pos, **kw) if first else cls(*pos, optimizer=optimizer, **kw)

    build.__name__ = node.func.id
    return build


def parse_schedule(expr: str) -> Callable[[Optimizer], Any]:
    """Turn ``"WarmupCosineLR(warmup_steps=500, total_steps=10000)"`` into a
    factory ``optimizer -> scheduler``. Only calls of fusedoptim.lr_scheduler's
    schedulers with literal arguments (positional after the optimizer, or by keyword) (or nested scheduler calls, e.g. for
    ``WarmupLR(after=...)`` and ``SequentialLR(schedulers=[...])``) are
    accepted; nothing is evaluated."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not a valid expression: {expr!r} ({e.msg})") from None
    if not isinstance(tree.body, ast.Call):
        raise ValueError(
            f"expected a scheduler call such as 'WarmupCosineLR(warmup_steps=500, total_steps=10000)', got {expr!r}"
        )
    return _compile_call(tree.body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fusedoptim.lr_scheduler",
        description="Draw learning-rate schedules into a PNG (needs matplotlib: pip install 'fusedoptim[plot]').",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "schedules", nargs="+", metavar="EXPR",
        help="a scheduler call, e.g. \"WarmupCosineLR(warmup_steps=500, total_steps=10000)\" or "
             "\"WarmupStableDecayLR(500, 8000, 1500, decay='cosine')\" (parameters: see below)",
    )
    parser.add_argument("--steps", type=int, required=True, help="number of steps to draw")
    parser.add_argument("--out", default="schedule.png", help="output file (default: schedule.png)")
    parser.add_argument("--lr", type=float, default=1.0, help="learning rate of the dummy SGD optimizer (default: 1)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--log", action="store_true", help="logarithmic learning-rate axis")
    args = parser.parse_args(argv)
    factories = {}
    for expr in args.schedules:
        try:
            factories[expr.strip()] = parse_schedule(expr)
        except ValueError as e:
            parser.error(str(e))
    try:
        from .lr_scheduler import plot

        plot(factories, args.steps, args.out, lr=args.lr, title=args.title, log_y=args.log)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (TypeError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0
