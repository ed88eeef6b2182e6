"""Low-precision (and fp32) steps against their same-traffic roofline and torch's fused step.

    PYTHONPATH=src python bench/lowprec_roofline.py                  # issue 12's table, 1 and 2 threads
    PYTHONPATH=src python bench/lowprec_roofline.py --all            # + every optimizer x storage option
    PYTHONPATH=src python bench/lowprec_roofline.py --threads 1 --repeats 5 --numel 4194304

Per case, in one process and interleaved round-robin (fusedoptim, torch fused where it exists, the
roofline): the median step time and, paired within a round, fusedoptim's % of the roofline and its
speed-up over torch fused. The roofline is fusedoptim._C.roofline moving exactly the case's bytes
(fusedoptim.bench.traffic_model: 2-byte streams are float arrays of half the length); AMP unscaling
adds the grad write-back. Cases under 85% of their roofline are flagged with '<'.
Nothing here asserts speed.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

import torch

from fusedoptim import bench as B

W4 = 16_777_216


@dataclasses.dataclass
class Case:
    label: str
    optimizer: str
    dtype: torch.dtype
    options: dict
    workload: str | None = None  # a bench.py workload instead of one tensor of numel
    amp: bool = False


def table_cases():
    bf = torch.bfloat16
    return [
        Case("W4 AdamW bf16 (params+state)", "adamw", bf, {}),
        Case("W4 AdamW bf16, state_dtype=fp32", "adamw", bf, {"state_dtype": torch.float32}),
        Case("W4 SGD momentum bf16", "sgd", bf, {}),
        Case("W1 SGD momentum fp32", "sgd", torch.float32, {}),
        Case("W1 AdamW fp32", "adamw", torch.float32, {}),
        Case("W2 NAdam fp32", "nadam", torch.float32, {}, workload="W2"),
    ]


def all_cases():
    bf, h = torch.bfloat16, torch.float16
    out = []
    for k in B.OPTIMIZERS:
        out += [
            Case(f"{k} bf16", k, bf, {}),
            Case(f"{k} bf16 state fp32", k, bf, {"state_dtype": torch.float32}),
            Case(f"{k} bf16 master", k, bf, {"master_weights": True}),
            Case(f"{k} bf16 sr", k, bf, {"stochastic_rounding": True}),
            Case(f"{k} fp16", k, h, {}),
            Case(f"{k} fp16 master", k, h, {"master_weights": True}),
            Case(f"{k} bf16 amp", k, bf, {}, amp=True),
            Case(f"{k} fp32", k, torch.float32, {}),
        ]
    return out


def traffic(spec, case):
    t = B.traffic_model(spec, case.dtype, case.options)
    if case.amp:  # the unscaled grads are stored back
        t = B.Traffic(tuple(tuple(dataclasses.replace(s, mode="rw") if s.name == "grad" else s for s in p)
                            for p in t.passes[:1]) + t.passes[1:])
    return t


def contenders(case, numel):
    spec = B.OPTIMIZERS[case.optimizer]
    if case.workload:
        base = B.make_base(B.workload(case.workload))
    else:
        g = torch.Generator().manual_seed(0)
        p = torch.nn.Parameter(torch.randn(numel, generator=g).to(case.dtype))
        p.grad = torch.randn(numel, generator=g).to(case.dtype)
        base = [p]
    tr = traffic(spec, case)
    build = {"fusedoptim": functools.partial(B.build_contender, "fusedoptim", spec, base, options=case.options)}
    if case.amp:
        def amp_build():
            c = B.build_contender("fusedoptim", spec, base, options=case.options)
            opt = c._keep[1]
            opt.grad_scale = torch.tensor(1.0)  # unscale by 1: the grads stay as they are
            opt.found_inf = torch.tensor(0.0)
            return c
        build["fusedoptim"] = amp_build
    if "fused" in spec.modes and not case.options and not case.amp:
        build["fused"] = functools.partial(B.build_contender, "fused", spec, base)
    build["roofline"] = functools.partial(B.build_contender, "roofline", spec, base, traffic=tr)
    return build, tr, sum(p.numel() for p in base)


def run(cases, threads, repeats, numel, out=print):
    rows = []
    for case in cases:
        for th in threads:
            build, tr, n = contenders(case, numel)
            s, _ = B._run_rounds(build, th, repeats=repeats, warmup=2, quick=False, min_sample_s=0.15)
            fo, roof = s["fusedoptim"], s["roofline"]
            frac = B._paired(roof, fo)
            fused = B._paired(s["fused"], fo) if "fused" in s else None
            r = dict(case=case.label, threads=th, fo_ms=1e3 * B._median(fo), roof_ms=1e3 * B._median(roof),
                     fused_ms=1e3 * B._median(s["fused"]) if "fused" in s else None, roof_frac=frac,
                     vs_fused=fused, bytes_per_element=tr.bytes_per_element)
            rows.append(r)
            out(f"{case.label:36s} {th}T  fusedoptim {r['fo_ms']:7.2f} ms  "
                f"torch fused {'%7.2f ms' % r['fused_ms'] if fused else '      —   '}  "
                f"roofline {r['roof_ms']:6.2f} ms ({tr.bytes_per_element} B/el)  "
                f"{100 * frac:5.1f}% of roofline{' <' if frac < 0.85 else '  '}  "
                f"{'%.2fx torch fused' % fused if fused else ''}")
            sys.stdout.flush()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--numel", type=int, default=W4, help="elements of the single-tensor cases")
    ap.add_argument("--all", action="store_true", help="every optimizer x storage option")
    ap.add_argument("--only", default=None, help="substring filter on case labels")
    a = ap.parse_args(argv)
    cases = table_cases() + (all_cases() if a.all else [])
    if a.only:
        cases = [c for c in cases if a.only in c.label]
    print(f"torch {torch.__version__}, fusedoptim ISA {B.fusedoptim._C.get_isa() if hasattr(B.fusedoptim._C, 'get_isa') else '?'}")
    run(cases, [int(t) for t in a.threads.split(",")], a.repeats, a.numel)


if __name__ == "__main__":
    main()
