"""`--plot`: one picture of the results. Per optimizer and workload (and each
low-precision option variant), two bar panels side by side: fusedoptim's
speedup over torch's best mode (log axis, 1x = parity) and its % of the
same-traffic roofline (the 85% flag line marked); one bar per thread count."""
from __future__ import annotations

from typing import Sequence

from .report import FLAG_ROOFLINE

R_CLIP = 150.0  # % roofline bars longer than this are clipped (the label keeps the value)


def _rows(results: Sequence[dict], opts: Sequence[dict]) -> tuple:
    """(labels top to bottom, thread counts, {(label, threads): (x_best, roofline_fraction)})."""
    labels, threads, data = [], [], {}
    for r in results:
        dt = "" if r["dtype"] == "float32" else f" {r['dtype'].replace('bfloat16', 'bf16')}"
        label = f"{r['optimizer_label']} {r['workload']}{dt}" + (" (vs ref)" if r["optimizer"] in ("lion", "lamb") else "")
        if label not in labels:
            labels.append(label)
        if r["threads"] not in threads:
            threads.append(r["threads"])
        data[(label, r["threads"])] = (r["speedup"].get("best"), r.get("roofline_fraction"))
    for o in opts:
        for v in o["variants"]:
            label = f"{o['optimizer_label']} {o['workload']} bf16, {v['variant'].replace(' (bf16 state)', '')}"
            if label not in labels:
                labels.append(label)
            if o["threads"] not in threads:
                threads.append(o["threads"])
            data[(label, o["threads"])] = (v.get("speedup_best"), v["roofline_fraction"])
    return labels, sorted(threads), data


def plot_results(results: Sequence[dict], opts: Sequence[dict], path: str, *, title: str | None = None) -> str | None:
    """Saves the results chart as a PNG; returns None, or why it could not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib not available ({e}): no plot written"
    labels, threads, data = _rows(results, opts)
    if not labels:
        return "no results to plot"
    n, k = len(labels), len(threads)
    height = 0.8 / k
    fig, (ax_x, ax_r) = plt.subplots(1, 2, sharey=True, figsize=(12, 1.2 + 0.32 * n * max(1, k * 0.6)))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
    ys = range(n)
    x_max = 1.0
    for j, t in enumerate(threads):
        off = [y - 0.4 + height * (j + 0.5) for y in ys]
        xb = [data.get((lab, t), (None, None))[0] for lab in labels]
        rf = [data.get((lab, t), (None, None))[1] for lab in labels]
        c = colors[j % len(colors)]
        tl = f"{t} thread{'s' if t != 1 else ''}"
        ax_x.barh([o for o, v in zip(off, xb) if v], [v for v in xb if v], height=height, color=c, label=tl)
        ax_r.barh([o for o, v in zip(off, rf) if v is not None], [min(100 * v, R_CLIP) for v in rf if v is not None],
                  height=height, color=c, label=tl)
        for o, v in zip(off, xb):
            if v:
                x_max = max(x_max, v)
                ax_x.text(v * 1.04, o, f"{v:.1f}x" if v < 100 else f"{v:.0f}x", va="center", fontsize=7)
        for o, v in zip(off, rf):
            if v is not None:
                ax_r.text(min(100 * v, R_CLIP) + 1, o, f"{100 * v:.0f}%" + (" (clipped)" if 100 * v > R_CLIP else ""),
                          va="center", fontsize=7)
    ax_x.set_xscale("log")
    ax_x.set_xlim(min(0.3, 0.8 * min((v[0] for v in data.values() if v[0]), default=1)), x_max * 2.2)
    ax_x.axvline(1.0, color="black", linewidth=1)
    ax_x.set_xlabel("fusedoptim speedup over torch's fastest mode\n(log axis; left of 1x: torch is faster)")
    ax_r.axvline(100 * FLAG_ROOFLINE, color="tab:red", linestyle="--", linewidth=1,
                 label=f"{FLAG_ROOFLINE:.0%} flag")
    ax_r.axvline(100, color="black", linewidth=1)
    r_max = max((v[1] for v in data.values() if v[1] is not None), default=1.0)
    ax_r.set_xlim(0, min(R_CLIP, max(110, 100 * r_max)) + 25)
    ax_r.set_xlabel("% of the same-traffic roofline\n(a trivial kernel moving the same bytes)")
    ax_x.set_yticks(list(ys))
    ax_x.set_yticklabels(labels, fontsize=8)
    ax_x.invert_yaxis()
    for ax in (ax_x, ax_r):
        ax.grid(True, axis="x", which="both", alpha=0.3)
        for y in ys[1:]:
            ax.axhline(y - 0.5, color="0.85", linewidth=0.5)
    ax_r.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or "fusedoptim vs torch.optim on CPU (python -m fusedoptim.bench)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
