"""`python -m fusedoptim.bench`: arguments, the run plan, main()."""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from typing import Callable, Sequence

from .convergence import CONV_EVERY, CONV_STEPS, QUICK_CONV_EVERY, QUICK_CONV_STEPS, convergence, \
    plot_convergence
from .convergence import format_convergence
from .plot import plot_results
from .report import _print, _progress_note, environment, format_flags, format_header, format_options, format_table, \
    load_average
from .timing import CONTENDERS, measure, measure_options
from .timing_core import DEFAULT_REPEATS, DEFAULT_WARMUP, QUICK_REPEATS
from .traffic import roofline_calibration
from .workloads import DEFAULT_WORKLOADS, OPTIMIZER_GROUPS, OPTIMIZERS, W1_NUMEL, WORKLOADS, \
    _canonical_workload, make_base, workload


def _csv(kind: str, valid: Sequence[str], norm: Callable[[str], str], groups: dict | None = None):
    groups = groups or {}

    def parse(s: str) -> list:
        items = []
        for x in (x.strip() for x in s.split(",")):
            if not x:
                continue
            if x.lower() in groups:
                items += groups[x.lower()]
                continue
            try:
                items.append(norm(x))
            except ValueError:
                items.append(x)
        bad = [x for x in items if x not in valid]
        if bad or not items:
            names = ", ".join(list(valid) + list(groups))
            raise argparse.ArgumentTypeError(f"{kind}: expected a comma list of {names}; got {s!r}")
        return list(dict.fromkeys(items))
    return parse


def _threads(s: str) -> list:
    try:
        items = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        items = []
    if not items or any(n < 1 for n in items):
        raise argparse.ArgumentTypeError(f"threads: expected a comma list of positive integers; got {s!r}")
    return list(dict.fromkeys(items))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m fusedoptim.bench",
        description="fusedoptim vs torch.optim (for-loop, foreach, fused) and a same-traffic roofline; "
                    "the cost of the bf16 options; a bf16 convergence demonstration.")
    ap.add_argument("--workloads", type=_csv("workloads", WORKLOADS, _canonical_workload, {"all": list(WORKLOADS)}),
                    default=None, help=f"comma list of {','.join(WORKLOADS)} or 'all' "
                                       f"(default: {','.join(DEFAULT_WORKLOADS)})")
    ap.add_argument("--optimizers", type=_csv("optimizers", tuple(OPTIMIZERS), str.lower, OPTIMIZER_GROUPS),
                    default=None, help=f"comma list of {','.join(OPTIMIZERS)} or the groups core "
                                       f"({','.join(OPTIMIZER_GROUPS['core'])}), family (the others), all "
                                       f"(default: core; --quick: core on every workload and "
                                       f"thread count, the others once on {QUICK_FAMILY_WORKLOAD} at the first)")
    ap.add_argument("--family", action="store_true", help="every optimizer: the same as --optimizers all")
    ap.add_argument("--threads", type=_threads, default=[1, 2], help="comma list of thread counts (default: 1,2)")
    ap.add_argument("--contenders", type=_csv("contenders", CONTENDERS, str.lower), default=list(CONTENDERS),
                    help=f"comma list of {','.join(CONTENDERS)} (default: all that exist per optimizer)")
    ap.add_argument("--repeats", type=int, default=None,
                    help=f"interleaved rounds per measurement (default: {DEFAULT_REPEATS}, --quick: {QUICK_REPEATS})")
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed steps per contender first")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 3 rounds, every optimizer at least once: CI smoke runs")
    ap.add_argument("--no-options", action="store_true", help="skip the cost-of-the-options table (bf16 W4 AdamW)")
    ap.add_argument("--convergence", action="store_true",
                    help="run only the bf16 convergence demonstration (part of the default run otherwise)")
    ap.add_argument("--no-convergence", action="store_true", help="skip the convergence demonstration")
    ap.add_argument("--convergence-steps", type=int, default=None,
                    help=f"training steps per mode (default: {CONV_STEPS}, --quick: {QUICK_CONV_STEPS})")
    ap.add_argument("--plot", metavar="PNG",
                    help="save a chart of the results here (per optimizer and workload: x torch's best mode and "
                         "%% of the roofline) and the convergence curves next to it as <name>-convergence.png "
                         "(needs matplotlib)")
    ap.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (for the README)")
    args = ap.parse_args(argv)
    if args.family:
        if args.optimizers is not None and args.optimizers != OPTIMIZER_GROUPS["all"]:
            ap.error("--family means --optimizers all: give one or the other")
        args.optimizers = list(OPTIMIZER_GROUPS["all"])
    args.default_plan = args.optimizers is None and args.workloads is None
    if args.optimizers is None:
        args.optimizers = list(OPTIMIZER_GROUPS["all" if args.quick else "core"])
    if args.workloads is None:
        args.workloads = list(DEFAULT_WORKLOADS)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.convergence_steps is None:
        args.convergence_steps = QUICK_CONV_STEPS if args.quick else CONV_STEPS
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.convergence_steps < 2:
        ap.error("--convergence-steps must be >= 2")
    if args.convergence and args.no_convergence:
        ap.error("--convergence and --no-convergence exclude each other")
    return args



QUICK_FAMILY_WORKLOAD = "W4"


def _cases(args) -> list:
    """(workload, optimizer, threads) to measure: the cross product, except
    for a default --quick run (no --optimizers / --workloads / --family):
    the core optimizers on W1-W4 at every thread count and every other
    optimizer once, on W4 (bf16) at the first thread count."""
    if args.quick and args.default_plan:
        cases = [(w, o, t) for w in DEFAULT_WORKLOADS for o in OPTIMIZER_GROUPS["core"] for t in args.threads]
        cases += [(QUICK_FAMILY_WORKLOAD, o, args.threads[0]) for o in OPTIMIZER_GROUPS["family"]]
        return cases
    return [(w, o, t) for w in args.workloads for o in args.optimizers for t in args.threads]


def _conv_every(steps: int, quick: bool) -> int:
    every = QUICK_CONV_EVERY if quick else CONV_EVERY
    return max(1, min(every, steps // 2))


def run(args: argparse.Namespace, log=sys.stderr) -> dict:
    """Every requested measurement (prints the header first, progress on
    `log`); returns {environment, calibration, args, results, options,
    convergence}."""
    env = environment()
    out = {"environment": env, "calibration": [],
           "args": {k: getattr(args, k) for k in
                    ("workloads", "optimizers", "threads", "contenders", "repeats", "warmup", "quick",
                     "no_options", "convergence", "no_convergence", "convergence_steps", "default_plan")},
           "results": [], "options": [], "convergence": None}
    t_start = time.perf_counter()
    if not args.convergence:
        calib_n = 1 << 18 if args.quick else W1_NUMEL
        out["calibration"] = [roofline_calibration(t, numel=calib_n, repeats=3 if args.quick else 5)
                              for t in args.threads]
        _print(format_header(env, out["calibration"], threads=args.threads, repeats=args.repeats,
                             contenders=args.contenders, quick=args.quick, markdown=args.markdown))
        _print()
        cases = _cases(args)
        base_key, base = None, None
        for i, (w, o, t) in enumerate(cases, 1):
            if w != base_key:
                base = None
                gc.collect()
                base_key, base = w, make_base(workload(w, args.quick))  # copied by every contender
            t0 = time.perf_counter()
            r = measure(o, w, t, repeats=args.repeats, warmup=args.warmup, quick=args.quick,
                        contenders=args.contenders, base=base)
            out["results"].append(r)
            _print(f"[{i:3d}/{len(cases)}] {OPTIMIZERS[o].label:8s} {w:6s} {t} thr  "
                   f"{time.perf_counter() - t0:5.1f} s  {_progress_note(r)}", file=log)
        base = None
        gc.collect()
        if not args.no_options:
            base = make_base(workload("W4", args.quick))
            for t in args.threads[:1] if args.quick else args.threads:
                t0 = time.perf_counter()
                out["options"].append(measure_options(t, repeats=args.repeats, warmup=args.warmup,
                                                      quick=args.quick, base=base))
                _print(f"[options] AdamW W4 {t} thr  {time.perf_counter() - t0:5.1f} s", file=log)
            base = None
            gc.collect()
    if args.convergence or not args.no_convergence:
        steps = args.convergence_steps
        out["convergence"] = convergence(steps, _conv_every(steps, args.quick))
        _print(f"[convergence] {out['convergence']['seconds']:.1f} s", file=log)
    out["seconds"] = time.perf_counter() - t_start
    out["load_average_end"] = load_average()
    _print(f"total {out['seconds']:.0f} s", file=log)
    return out



def format_report(out: dict, markdown: bool = False) -> str:
    parts = []
    if out["results"]:
        parts.append(format_table(out["results"], markdown=markdown))
    if out["options"]:
        parts.append(format_options(out["options"], markdown=markdown))
    if out["results"] or out["options"]:
        parts.append(format_flags(out["results"], out["options"], markdown=markdown))
    if out["convergence"]:
        parts.append(format_convergence(out["convergence"], markdown=markdown))
    if out.get("seconds") is not None:
        end = out.get("load_average_end")
        line = f"Run time: {out['seconds']:.0f} s" + (f"; load average at the end {end[0]:.2f}" if end else "")
        parts.append(f"*{line}*" if markdown else line)
    return "\n\n".join(parts)


def convergence_plot_path(path: str) -> str:
    """Where --plot PATH puts the convergence curves: PATH's stem + '-convergence'."""
    root, ext = os.path.splitext(path)
    return f"{root}-convergence{ext or '.png'}"


def _plot_title(out: dict) -> str:
    env = out["environment"]
    t = f"fusedoptim {env['fusedoptim']} vs torch {env['torch']} on {env['cpu']} ({env['isa']})"
    if out["results"] and out["results"][0].get("quick"):
        t += " - QUICK sizes: smoke run"
    la = env.get("load_average")
    if la:
        t += f"\nload average at start {la[0]:.2f} on {env['cpu_count']} CPUs"
    return t


def main(argv=None) -> int:
    args = parse_args(argv)
    out = run(args)
    _print(format_report(out, markdown=args.markdown))
    if args.plot:
        if out["results"] or out["options"]:
            why = plot_results(out["results"], out["options"], args.plot,
                               title=_plot_title(out))
            _print(f"\n{why}" if why else f"\nresults chart written to {args.plot}", file=sys.stderr)
        if out["convergence"] is not None:
            path = convergence_plot_path(args.plot) if (out["results"] or out["options"]) else args.plot
            why = plot_convergence(out["convergence"], path)
            _print(f"\n{why}" if why else f"\nconvergence plot written to {path}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
        _print(f"\nresults written to {args.json}", file=sys.stderr)
    return 0
