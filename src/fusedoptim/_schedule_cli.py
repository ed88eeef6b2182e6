"""The command line of `python -m fusedoptim.lr_scheduler`: a schedule is
written as a call of one of fusedoptim.lr_scheduler's schedulers, e.g.
``"WarmupCosineLR(warmup_steps=500, total_steps=10000)"``, parsed with `ast`
into a factory ``optimizer -> scheduler``; nothing is evaluated."""
from __future__ import annotations

import argparse
import ast
import copy
import sys
from typing import Any, Callable

from torch.optim import Optimizer


def _cli_schedulers() -> dict[str, type]:
    from . import lr_scheduler as mod

    names = [n for n in mod._TORCH_ALL if n != "LRScheduler"] + ["WarmupLR", "WarmupCosineLR", "WarmupStableDecayLR"]
    return {n: getattr(mod, n) for n in names}


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
    if node.args:
        raise ValueError(f"{node.func.id}(...): pass arguments by keyword (the optimizer is supplied)")
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"{node.func.id}(...): **kwargs are not supported")
        if kw.arg == "optimizer":
            raise ValueError(f"{node.func.id}(...): the optimizer is supplied, do not pass one")
        kwargs[kw.arg] = _compile_value(kw.value, f"{node.func.id}({kw.arg}=...)")

    def build(optimizer):
        return cls(optimizer=optimizer, **{k: v(optimizer) for k, v in kwargs.items()})

    build.__name__ = node.func.id
    return build


def parse_schedule(expr: str) -> Callable[[Optimizer], Any]:
    """Turn ``"WarmupCosineLR(warmup_steps=500, total_steps=10000)"`` into a
    factory ``optimizer -> scheduler``. Only calls of this module's schedulers
    with literal keyword arguments (or nested scheduler calls, e.g. for
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
    )
    parser.add_argument(
        "schedules", nargs="+", metavar="EXPR",
        help="a scheduler call with keyword arguments, e.g. \"WarmupCosineLR(warmup_steps=500, total_steps=10000)\"",
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
