"""The printed report: environment header, tables (text or markdown), notes."""
from __future__ import annotations

import os
import platform
import sys
from typing import Sequence

import torch

import fusedoptim
from fusedoptim import _C

from .timing import CONTENDERS

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (AttributeError, OSError):
        return None


def busy_warning(load: tuple | None, cpu_count: int | None, threads: Sequence[int]) -> str | None:
    """A warning when other processes keep the CPUs busy: fewer idle CPUs
    (count minus the 1-minute load) than the largest thread count timed,
    by more than half a CPU (the load includes this process's own start-up).
    Then a timed step shares its cores: absolute times grow, 2-thread runs
    can come out slower than 1-thread ones, and ratios against the roofline
    or torch move with whatever else runs."""
    if not load or not cpu_count or not threads:
        return None
    idle = cpu_count - load[0]
    need = max(threads)
    if idle > need - 0.5:
        return None
    return (f"WARNING: the machine is busy (load average {load[0]:.2f} over {cpu_count} CPUs: "
            f"{max(idle, 0):.1f} idle for up to {need} threads): the figures below are unreliable "
            f"(slower absolute times, {need}-thread runs may lose to 1-thread ones, ratios inflate); "
            f"rerun on a quiet machine.")


def environment() -> dict:
    """show_config()-style facts about this run."""
    try:
        cfg = fusedoptim._config.config()
    except Exception:  # pragma: no cover - show_config's internals changed
        cfg = {}
    return {
        "fusedoptim": fusedoptim.__version__,
        "isa": _C.get_isa(),
        "isa_selected_by": cfg.get("isa_selected_by", "?"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "thread_pool": cfg.get("thread_pool", "?"),
        "tensor_metadata": cfg.get("tensor_metadata", "?"),
        "load_average": load_average(),
    }


def format_header(env: dict, calibration: Sequence[dict] = (), *, threads: Sequence[int] = (),
                  repeats: int | None = None, contenders: Sequence[str] = CONTENDERS, quick: bool = False,
                  markdown: bool = False) -> str:
    """show_config()-style lines: versions, instruction set, threads, and the
    bandwidth measured at start-up (roofline kernel; torch add_ for reference)."""
    items = [
        ("fusedoptim", env["fusedoptim"]),
        ("isa", f"{env['isa']} (selected by {env['isa_selected_by']})"),
        ("torch", env["torch"]),
        ("python", env["python"]),
        ("cpu", f"{env['cpu']} ({env['machine']}, {env['cpu_count']} logical CPUs)"),
        ("thread_pool", env["thread_pool"]),
    ]
    if env.get("load_average"):
        la = env["load_average"]
        items.append(("load average", f"{la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f} (1, 5, 15 min) at the start, "
                                      f"{env['cpu_count']} logical CPUs"))
    if threads:
        items.append(("threads", f"{', '.join(map(str, threads))} (torch.set_num_threads; "
                                 f"torch default here: {env['torch_threads_default']})"))
    if repeats:
        items.append(("rounds", f"{repeats}, round-robin: {', '.join(contenders)} "
                                f"(torch modes that exist for the optimizer)"))
    if quick:
        items.append(("sizes", "QUICK (small workloads: smoke run, not a measurement)"))
    items.append(("traffic model", "bytes per element per step (B/el column) from each optimizer's state "
                                   "arrays and dtypes: param (or fp32 master) read+write, grad read, each "
                                   "state array read+write, bf16 image of a master copy written; LAMB: "
                                   "2 passes (re-reads param and moments); e.g. AdamW fp32 28 B, bf16 14 B"))
    items.append(("roofline kernel", "fusedoptim._C.roofline is float32-only: a 2-byte (bf16/fp16) stream is "
                                     "timed as float32 arrays of half the length, i.e. the same byte count "
                                     "(same traffic, not the same element count)"))
    for c in calibration:
        t = f"{c['threads']} thread{'s' if c['threads'] != 1 else ''}"
        items.append((f"roofline {t}", f"{c['gbps']:.1f} GB/s median, {c['max_gbps']:.1f} best "
                                       f"({c['rw']} rw + {c['ro']} ro arrays of {c['numel'] / 1e6:.1f} M)"))
        items.append((f"torch add_ {t}", f"{c['torch_add_gbps']:.1f} GB/s median, "
                                         f"{c['torch_add_max_gbps']:.1f} best (12 B/element, reference)"))
    warn = busy_warning(env.get("load_average"), env.get("cpu_count"), threads) if threads else None
    if markdown:
        return "\n".join(f"- **{k}**: {v}" for k, v in items) + (f"\n\n**{warn}**" if warn else "")
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in items) + (f"\n{warn}" if warn else "")


def _fmt_ms(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else (f"{x:.1f}x" if x < 100 else f"{x:.0f}x")


def _mark(res: dict, target: str) -> str:
    t = res.get("targets", {}).get(target)
    if t is None:
        return ""
    return " ✓" if t["ok"] else " ✗"


def _render(headers: list, rows: list, markdown: bool, align: str) -> str:
    if markdown:
        seps = ["---:" if a == "r" else ":---" for a in align]
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join(seps) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def format_summary(results: Sequence[dict], markdown: bool = False) -> str:
    """One row per optimizer x workload x threads: fusedoptim against the
    roofline and each torch mode (✓/✗: the issue's target met or not)."""
    headers = ["optimizer", "workload", "thr", "B/el", "fusedoptim ms (IQR)", "GB/s", "roofline GB/s",
               "% roofline", "x forloop", "x foreach", "x fused", "x best", "us/tensor"]
    align = "llrrlrrrrrrrr"
    rows = []
    for r in results:
        fo = r["contenders"].get("fusedoptim")
        roof = r["contenders"].get("roofline")
        frac = r.get("roofline_fraction")
        ref = "" if r["optimizer"] not in ("lion", "lamb") else " (ref)"
        rows.append([
            r["optimizer_label"], r["workload"], str(r["threads"]), str(r["bytes_per_element"]),
            (f"{_fmt_ms(fo['median_ms'])} ({_fmt_ms(fo['p25_ms'])}-{_fmt_ms(fo['p75_ms'])})" if fo else "-"),
            f"{fo['gbps']:.1f}" if fo else "-",
            f"{roof['gbps']:.1f}" if roof else "-",
            (f"{frac:.1%}" + _mark(r, "roofline_fraction")) if frac is not None else "-",
            (_fmt_x(r["speedup"].get("forloop")) + ref if "forloop" in r["speedup"] else "-")
            + _mark(r, "speedup_forloop"),
            _fmt_x(r["speedup"].get("foreach")),
            _fmt_x(r["speedup"].get("fused")) + _mark(r, "speedup_fused"),
            _fmt_x(r["speedup"].get("best")) + _mark(r, "speedup_best"),
            (f"{fo['us_per_tensor']:.3f}" + _mark(r, "us_per_tensor")) if fo and r["workload"] == "W3" else "-",
        ])
    return _render(headers, rows, markdown, align)


def format_details(results: Sequence[dict], markdown: bool = False) -> str:
    """One row per contender: ms/step median, IQR and min-max over rounds,
    GB/s under the traffic model, fraction of the roofline and fusedoptim's
    speedup over it (both medians of ratios paired within a round)."""
    headers = ["optimizer", "workload", "thr", "contender", "ms/step", "IQR (p25-p75)", "min-max",
               "GB/s", "% roofline", "fusedoptim x", "us/tensor"]
    align = "llrlrrrrrrr"
    rows = []
    for r in results:
        for name, c in r["contenders"].items():
            frac = c["roofline_fraction"]
            rows.append([
                r["optimizer_label"], r["workload"], str(r["threads"]), name,
                _fmt_ms(c["median_ms"]),
                f"{_fmt_ms(c['p25_ms'])}-{_fmt_ms(c['p75_ms'])}",
                f"{_fmt_ms(c['min_ms'])}-{_fmt_ms(c['max_ms'])}",
                f"{c['gbps']:.1f}",
                f"{frac:.1%}" if frac is not None else "-",
                _fmt_x(c["fusedoptim_speedup"]) if name not in ("fusedoptim", "roofline") else "-",
                f"{c['us_per_tensor']:.3f}" if r["workload"] == "W3" else "-",
            ])
    return _render(headers, rows, markdown, align)


def format_traffic(results: Sequence[dict], markdown: bool = False) -> str:
    """The traffic model of each optimizer x dtype in the results."""
    seen = {}
    for r in results:
        seen.setdefault((r["optimizer_label"], r["dtype"]), (r["bytes_per_element"], r["traffic"]))
    rows = [[o, d, str(b), t] for (o, d), (b, t) in seen.items()]
    return _render(["optimizer", "dtype", "B/el", "streams (bytes per element, read/write)"], rows, markdown, "llrl")


LEGEND = ("x <mode>: fusedoptim speedup over torch in that mode (median of per-round ratios; Lion/LAMB "
          "'(ref)': the plain-torch reference for-loop); x best: over torch's fastest mode in each round; "
          "% roofline: roofline time / fusedoptim time (same-traffic kernel, same run; bf16 rows: float32 arrays "
          "of the same byte count); B/el: traffic model. "
          "Targets (✓ met, ✗ missed): fp32 SGD/Adam/AdamW/Adagrad: W1/W2 >= 95% roofline, x forloop >= 5 "
          "(Adam/AdamW) / 2.5 (SGD, Adagrad), W3 x fused >= 10 and < 0.5 us/tensor at 1 thread; optimizers "
          "torch does not fuse: x best >= 5; bf16 (W4, W2bf16): >= 85% roofline, x fused >= 2")


def format_options(opts: Sequence[dict], markdown: bool = False) -> str:
    """The cost-of-the-options table."""
    headers = ["thr", "variant", "B/el", "ms (IQR)", "GB/s", "roofline GB/s", "% roofline",
               "time / default", "x torch", "x best"]
    rows = []
    for o in opts:
        ref = o["reference_mode"]
        for v in o["variants"]:
            rows.append([str(o["threads"]), v["variant"], str(v["bytes_per_element"]),
                         f"{_fmt_ms(v['median_ms'])} ({_fmt_ms(v['p25_ms'])}-{_fmt_ms(v['p75_ms'])})",
                         f"{v['gbps']:.1f}", f"{v['roofline_gbps']:.1f}", f"{v['roofline_fraction']:.1%}",
                         f"{v['time_vs_first']:.2f}", _fmt_x(v[f"speedup_{ref}"]),
                         _fmt_x(v.get("speedup_best"))])
    if not opts:
        return ""
    o = opts[0]
    title = (f"Cost of the options: fusedoptim {o['optimizer_args']} on {o['workload']} "
             f"({o['workload_description']}); each variant next to a roofline moving its own traffic; "
             f"x torch: speedup over torch {o['reference_mode']} (its default: bf16 state); x best: over torch's "
             f"fastest mode in each round ({', '.join(o.get('torch_modes', [o['reference_mode']]))}); "
             + ", ".join(f"{x['threads']} thr {_fmt_ms(x['reference']['median_ms'])} ms" for x in opts))
    traffic = "; ".join(f"{v['variant']}: {v['traffic']}" for v in o["variants"])
    table = _render(headers, rows, markdown, "rlrlrrrrrr")
    if markdown:
        return f"**{title}**\n\n{table}\n\nTraffic: {traffic}"
    return f"{title}\n{table}\nTraffic: {traffic}"


def format_table(results: Sequence[dict], markdown: bool = False) -> str:
    """The printed report: summary table, then per-contender details."""
    notes = _notes(results)
    if markdown:
        return ("**Summary** (fusedoptim)\n\n" + format_summary(results, True) + "\n\n" + LEGEND
                + "".join("\n\n" + n for n in notes)
                + "\n\n**Traffic model**\n\n" + format_traffic(results, True)
                + "\n\n**Details** (every contender)\n\n" + format_details(results, True))
    return ("Summary (fusedoptim)\n" + format_summary(results) + "\n" + LEGEND
            + "".join("\n" + n for n in notes)
            + "\n\nTraffic model\n" + format_traffic(results)
            + "\n\nDetails (every contender)\n" + format_details(results))


FLAG_ROOFLINE = 0.85  # cases under this fraction of their own same-traffic roofline are listed


def under_roofline(results: Sequence[dict] = (), opts: Sequence[dict] = (), limit: float = FLAG_ROOFLINE) -> list:
    """Every timed case (optimizer x workload/dtype x threads, and each
    option variant) whose fusedoptim step ran under `limit` of its own
    same-traffic roofline: [(label, fraction)]."""
    out = []
    for r in results:
        f = r.get("roofline_fraction")
        if f is not None and f < limit:
            out.append((f"{r['optimizer_label']} {r['workload']} ({r['dtype']}) {r['threads']} thr", f))
    for o in opts:
        for v in o["variants"]:
            if v["roofline_fraction"] < limit:
                out.append((f"{o['optimizer_label']} {o['workload']} {v['variant']} {o['threads']} thr",
                            v["roofline_fraction"]))
    return out


def over_roofline(results: Sequence[dict] = (), opts: Sequence[dict] = (), limit: float = 1.05) -> list:
    """Cases faster than their roofline kernel (by more than 5%): there the
    roofline did not run at the memory bound and the % overstates."""
    out = [(f"{r['optimizer_label']} {r['workload']} {r['threads']} thr", r["roofline_fraction"])
           for r in results if (r.get("roofline_fraction") or 0) > limit]
    out += [(f"{o['optimizer_label']} {o['workload']} {v['variant']} {o['threads']} thr", v["roofline_fraction"])
            for o in opts for v in o["variants"] if v["roofline_fraction"] > limit]
    return out


def format_flags(results: Sequence[dict] = (), opts: Sequence[dict] = (), markdown: bool = False) -> str:
    """The summary's flag line: every case under 85% of its roofline (and
    those over 105%, where the roofline itself is suspect)."""
    low = under_roofline(results, opts)
    n = len(results) + sum(len(o["variants"]) for o in opts)
    if not n:
        return ""
    if not low:
        text = f"All {n} timed cases ran at >= {FLAG_ROOFLINE:.0%} of their same-traffic roofline."
    else:
        items = ", ".join(f"{label} {f:.0%}" for label, f in low)
        text = (f"FLAG: {len(low)} of {n} timed cases ran under {FLAG_ROOFLINE:.0%} of their own same-traffic "
                f"roofline: {items}.")
    high = over_roofline(results, opts)
    extra = ""
    if high:
        extra = (f"Roofline suspect in {len(high)} case(s), faster than their roofline kernel (it did not run at "
                 f"the memory bound there, so the % overstates): "
                 + ", ".join(f"{label} {f:.0%}" for label, f in high) + ".")
    if markdown:
        return f"**{text}**" + (f"\n\n{extra}" if extra else "")
    return text + (f"\n{extra}" if extra else "")


def _notes(results: Sequence[dict]) -> list:
    """Things a reader must not miss: a roofline that is beaten (then it is
    not measuring the memory bound) and torch modes faster than fusedoptim."""
    notes = []
    beaten = [r for r in results if (r.get("roofline_fraction") or 0) > 1.05]
    if beaten:
        worst = max(beaten, key=lambda r: r["roofline_fraction"])
        notes.append(
            f"NOTE: fusedoptim ran faster than the same-traffic roofline kernel in {len(beaten)} of "
            f"{len(results)} rows (up to {worst['roofline_fraction']:.0%}: {worst['optimizer_label']} "
            f"{worst['workload']} {worst['threads']} thr): there the roofline is not at the memory "
            f"bound and '% roofline' overstates; compare the torch add_ reference in the header.")
    slower = [(r, m, x) for r in results for m, x in r["speedup"].items()
              if m != "best" and x is not None and x < 1.0]
    if slower:
        items = ", ".join(f"{r['optimizer_label']} {r['workload']} {r['threads']} thr vs {m} ({x:.2f}x)"
                          for r, m, x in slower)
        notes.append(f"NOTE: fusedoptim slower than torch (median paired ratio < 1) in: {items}.")
    return notes



def _print(text: str = "", file=None) -> None:
    file = file or sys.stdout
    try:
        print(text, file=file, flush=True)
    except UnicodeEncodeError:
        print(text.replace("✓", "+").replace("✗", "-").encode("ascii", "replace").decode(), file=file, flush=True)



def _progress_note(r: dict) -> str:
    fo = r["contenders"].get("fusedoptim")
    if not fo:
        return ""
    note = f"fusedoptim {_fmt_ms(fo['median_ms'])} ms"
    if r["roofline_fraction"] is not None:
        note += f", {r['roofline_fraction']:.0%} of roofline"
    for mode, x in r["speedup"].items():
        note += f", {x:.1f}x {mode}"
    return note
