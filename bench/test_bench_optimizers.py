"""Micro-benchmarks (pytest-benchmark): optimizer x workload x mode, and
the cost of the bf16 options.

Modes: fusedoptim, torch.optim for-loop (foreach=False), foreach, fused (only
the modes torch has for the optimizer: fused for SGD/Adam/AdamW/Adagrad;
Lion and LAMB: the plain-torch reference for-loop only), and the
same-traffic roofline kernel (each optimizer's own traffic model). Workloads
W1, W2, W3 (fp32), W4 (W1 in bf16) and W2bf16. Each benchmark is one
optimizer step; its `extra_info` carries the effective GB/s under the traffic
model. Nothing asserts speed. With --benchmark-disable every benchmark runs
its step once (smoke test); FUSEDOPTIM_BENCH_QUICK=1 shrinks the workloads.

For interleaved, paired comparisons (the numbers to quote) use
`python -m fusedoptim.bench`; these are for pytest-benchmark's tooling
(--benchmark-save / --benchmark-compare, histograms, CI smoke runs).
"""
from __future__ import annotations

import gc
import json
import math
import statistics
import time

import pytest
import torch

from fusedoptim import bench as fb

WORKLOADS = fb.WORKLOADS  # W1, W2, W3, W4, W2bf16
OPTIMIZERS = tuple(fb.OPTIMIZERS)
MODES = ("fusedoptim", "forloop", "foreach", "fused", "roofline")

# workload outermost, so the session keeps one workload's parameters at a time;
# only the torch modes that exist for the optimizer
CASES = [(w, o, m) for w in WORKLOADS for o in OPTIMIZERS for m in MODES
         if m not in fb.TORCH_MODES or m in fb.OPTIMIZERS[o].modes]
OPTION_CASES = [(v, m) for v in fb.OPTION_VARIANTS for m in ("fusedoptim", "roofline")]

TARGET_SECONDS = 1.0  # timed rounds per benchmark: about this long, 3..50 rounds


def _run(benchmark, step_fn) -> tuple:
    """Times step_fn with benchmark.pedantic (once when disabled) -> (median s, times)."""
    times: list = []

    def step():
        t0 = time.perf_counter()
        step_fn()
        times.append(time.perf_counter() - t0)

    if benchmark.disabled:
        benchmark.pedantic(step, rounds=1, iterations=1)  # runs once: a smoke test
    else:
        step()  # warm-up: lazy state, first-touch page faults, plan building
        step()  # sizes the number of rounds
        rounds = max(3, min(50, math.ceil(TARGET_SECONDS / max(times[-1], 1e-6))))
        times.clear()
        benchmark.pedantic(step, rounds=rounds, warmup_rounds=0, iterations=1)
    stats = getattr(benchmark.stats, "stats", None)
    median = stats.median if stats is not None else statistics.median(times)
    return median, times


@pytest.mark.parametrize(("workload_key", "optimizer", "mode"), CASES, ids=["-".join(c) for c in CASES])
def test_step(benchmark, workload_base, bench_quick, bench_threads, workload_key, optimizer, mode):
    spec = fb.OPTIMIZERS[optimizer]
    wl = fb.workload(workload_key, bench_quick)
    traffic = fb.traffic_model(spec, wl.dtype)
    contender = fb.build_contender(mode, spec, workload_base(workload_key), traffic=traffic)
    nbytes = traffic.bytes_per_element * wl.numel

    benchmark.group = f"{spec.label} {wl.key} {bench_threads} thr"
    benchmark.extra_info.update(
        optimizer=optimizer, workload=wl.key, dtype=wl.dtype_name, mode=mode, threads=bench_threads,
        quick=bench_quick, numel=wl.numel, tensors=wl.tensors,
        bytes_per_element=traffic.bytes_per_element, bytes_per_step=nbytes, traffic=traffic.describe(),
    )
    median, times = _run(benchmark, contender.step)
    benchmark.extra_info["median_ms"] = median * 1e3
    benchmark.extra_info["gbps"] = nbytes / median / 1e9
    benchmark.extra_info["us_per_tensor"] = median * 1e6 / wl.tensors

    assert len(times) >= 1
    if mode != "roofline":  # the step ran on params of the workload's dtype and kept them finite
        params = contender._keep[0]
        assert all(p.dtype == wl.dtype and bool(torch.isfinite(p).all()) for p in params)
    del contender
    if not bench_quick:  # free full-size contenders (optimizers may sit in cycles) now
        gc.collect()


@pytest.mark.parametrize(("variant", "mode"), OPTION_CASES, ids=["-".join(c) for c in OPTION_CASES])
def test_options(benchmark, workload_base, bench_quick, bench_threads, variant, mode):
    """AdamW on W4 (bf16) with each option of the cost-of-the-options table."""
    spec = fb.OPTIMIZERS["adamw"]
    wl = fb.workload("W4", bench_quick)
    options = fb.OPTION_VARIANTS[variant]
    traffic = fb.traffic_model(spec, wl.dtype, options)
    contender = fb.build_contender(mode, spec, workload_base("W4"), options=options, traffic=traffic)
    nbytes = traffic.bytes_per_element * wl.numel
    benchmark.group = f"AdamW W4 options {bench_threads} thr"
    benchmark.extra_info.update(variant=variant, mode=mode, threads=bench_threads, quick=bench_quick,
                                numel=wl.numel, bytes_per_element=traffic.bytes_per_element,
                                bytes_per_step=nbytes, traffic=traffic.describe())
    median, times = _run(benchmark, contender.step)
    benchmark.extra_info["median_ms"] = median * 1e3
    benchmark.extra_info["gbps"] = nbytes / median / 1e9
    assert len(times) >= 1
    del contender
    if not bench_quick:
        gc.collect()


# ------------------------------------------------- the fusedoptim.bench package itself --
# Plain tests (no benchmark fixture): the runner's logic works end to end.

def test_workload_shapes_full_size_counts():
    w1, w2, w3, w4, w2b = (fb.workload(k) for k in WORKLOADS)
    assert (w1.numel, w1.tensors) == (16_777_216, 1)
    assert (w2.numel, w2.tensors) == (35_299_328, 75)
    assert (w3.numel, w3.tensors) == (2000 * 512, 2000)
    assert (w4.shapes, w4.dtype, w1.dtype) == (w1.shapes, torch.bfloat16, torch.float32)
    assert (w2b.shapes, w2b.dtype) == (w2.shapes, torch.bfloat16)
    assert fb.workload("w2BF16").key == "W2bf16"


@pytest.mark.parametrize(("optimizer", "dtype", "options", "expected"), [
    ("adamw", torch.float32, {}, 28),       # p, m, v rw + g r, 4 B
    ("adamw", torch.bfloat16, {}, 14),      # the same in 2 B
    ("adamw", torch.bfloat16, {"state_dtype": torch.float32}, 22),  # p 2+2, g 2, m, v 4+4 each
    ("adamw", torch.bfloat16, {"master_weights": True}, 28),        # master 4+4, p 2 w, g 2, m, v 4+4 each (fp32 state by default under master weights)
    ("adamw", torch.bfloat16, {"stochastic_rounding": True}, 14),
    ("sgd", torch.float32, {}, 20),
    ("rmsprop", torch.float32, {}, 28),     # square_avg + momentum_buffer (momentum=0.9)
    ("lion", torch.float32, {}, 20),
    ("lamb", torch.float32, {}, 40),        # two passes: 6 + 4 arrays of 4 B
    ("lamb", torch.bfloat16, {}, 20),
])
def test_traffic_model_and_roofline_bytes(optimizer, dtype, options, expected):
    t = fb.traffic_model(fb.OPTIMIZERS[optimizer], dtype, options)
    assert t.bytes_per_element == expected
    n = 1000
    step, arrays = fb.roofline_step(t, n)
    # the roofline's float32 arrays move exactly the model's bytes
    seen = {id(a): a for arrs in arrays.values() for a in arrs}
    assert all(a.dtype == torch.float32 and a.numel() == seen[next(iter(seen))].numel() for a in seen.values())
    unit_len = next(iter(seen.values())).numel()
    moved = sum((2 if s.mode == "rw" else 1) * len(arrays[s.name]) * unit_len * 4
                for p in t.passes for s in p)
    assert moved == expected * n
    step()


def test_measure_and_format_quick():
    r = fb.measure("sgd", "W3", 1, repeats=2, quick=True, min_sample_s=0.0)
    assert set(r["contenders"]) == set(fb.CONTENDERS)
    assert set(r["speedup"]) == {"forloop", "foreach", "fused", "best"}
    for c in r["contenders"].values():
        assert len(c["samples_ms"]) == 2 and c["median_ms"] > 0 and c["gbps"] > 0
    assert r["contenders"]["roofline"]["roofline_fraction"] == pytest.approx(1.0)
    assert {"speedup_forloop", "speedup_fused", "us_per_tensor"} <= set(r["targets"])
    for markdown in (False, True):
        text = fb.format_table([r], markdown=markdown)
        assert "fusedoptim" in text and "W3" in text


@pytest.mark.parametrize(("optimizer", "modes"), [("rmsprop", {"forloop", "foreach"}), ("lamb", {"forloop"})])
def test_measure_unfused_bf16_quick(optimizer, modes):
    r = fb.measure(optimizer, "W4", 1, repeats=1, quick=True, min_sample_s=0.0)
    assert set(r["contenders"]) == {"roofline", "fusedoptim"} | modes
    assert set(r["speedup"]) == modes | {"best"}
    assert r["best_torch_mode"] in modes and r["dtype"] == "bfloat16"
    best = min(r["contenders"][m]["samples_ms"][0] for m in modes) / r["contenders"]["fusedoptim"]["samples_ms"][0]
    assert r["speedup"]["best"] == pytest.approx(best)
    assert set(r["targets"]) == {"roofline_fraction", "speedup_best"}
    assert r["targets"]["speedup_best"]["target"] == ">= 5x"


def test_measure_options_quick():
    o = fb.measure_options(1, repeats=1, quick=True, min_sample_s=0.0)
    assert [v["variant"] for v in o["variants"]] == list(fb.OPTION_VARIANTS)
    assert [v["bytes_per_element"] for v in o["variants"]] == [14, 22, 28, 14]
    assert o["variants"][0]["time_vs_first"] == pytest.approx(1.0)
    assert o["reference_mode"] == "fused" and o["torch_modes"] == ["forloop", "foreach", "fused"]
    for v in o["variants"]:  # x best: against torch's fastest mode of each round (one round here)
        best = min(o["torch"][m]["samples_ms"][0] for m in o["torch_modes"]) / v["samples_ms"][0]
        assert v["speedup_best"] == pytest.approx(best)
        assert v["speedup_best"] >= v["speedup_fused"] * (1 - 1e-12) or \
            o["torch"]["fused"]["samples_ms"][0] > min(o["torch"][m]["samples_ms"][0] for m in o["torch_modes"])
    assert "state_dtype=float32" in fb.format_options([o]) and "| thr |" in fb.format_options([o], markdown=True)
    assert "x best" in fb.format_options([o])


def test_convergence_is_deterministic():
    a = fb.convergence(12, 4)
    b = fb.convergence(12, 4)
    assert list(a["modes"]) == list(fb.CONV_MODES)
    for name in a["modes"]:
        assert a["modes"][name]["loss"] == b["modes"][name]["loss"], name
        assert a["modes"][name]["steps"] == [0, 4, 8, 12]
        assert all(math.isfinite(x) for x in a["modes"][name]["loss"])
    fp32 = a["modes"]["fp32"]["loss"]
    assert fp32[-1] < fp32[0]  # it trains
    text = fb.format_convergence(a)
    assert "bf16 SR" in text and "unchanged, last 4" in text


def test_cli_quick_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = fb.main(["--quick", "--workloads", "w1", "--optimizers", "adam", "--threads", "1",
                  "--repeats", "1", "--no-options", "--no-convergence", "--markdown", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| optimizer |" in printed and "**isa**" in printed
    data = json.loads(out.read_text())
    assert [(r["optimizer"], r["workload"], r["threads"]) for r in data["results"]] == [("adam", "W1", 1)]
    assert data["calibration"][0]["gbps"] > 0
    assert data["options"] == [] and data["convergence"] is None


def test_cli_convergence_only_and_plot(tmp_path, capsys):
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    rc = fb.main(["--convergence", "--convergence-steps", "4", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Convergence" in printed and "Summary" not in printed
    data = json.loads(out.read_text())
    assert data["results"] == [] and data["convergence"]["steps"] == 4
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_plan_covers_every_optimizer():
    args = fb.parse_args(["--quick"])
    cases = fb._cases(args)
    assert {o for _, o, _ in cases} == set(fb.OPTIMIZERS)
    assert {w for w, _, _ in cases} == set(fb.DEFAULT_WORKLOADS)
    args = fb.parse_args(["--quick", "--optimizers", "lion", "--workloads", "W1,W4"])
    assert fb._cases(args) == [(w, "lion", t) for w in ("W1", "W4") for t in (1, 2)]


def test_cli_groups_and_rejects_unknown_names():
    assert fb.parse_args([]).optimizers == ["adamw", "adam", "sgd"]
    assert fb.parse_args(["--family"]).optimizers == list(fb.OPTIMIZERS)
    assert fb.parse_args(["--optimizers", "family"]).optimizers == fb.OPTIMIZER_GROUPS["family"]
    assert fb.parse_args(["--workloads", "all"]).workloads == list(fb.WORKLOADS)
    for bad in (["--workloads", "W9"], ["--threads", "0"], ["--optimizers", "adamx"],
                ["--family", "--optimizers", "sgd"], ["--convergence", "--no-convergence"]):
        with pytest.raises(SystemExit):
            fb.parse_args(bad)


def _fake(label, workload, threads, frac, best, dtype="float32"):
    return {"optimizer": label.lower(), "optimizer_label": label, "workload": workload, "dtype": dtype,
            "threads": threads, "roofline_fraction": frac, "speedup": {"best": best}, "quick": True}


def test_flags_list_every_case_under_85_percent_of_its_roofline():
    results = [_fake("AdamW", "W1", 1, 0.95, 1.2), _fake("AdamW", "W4", 1, 0.36, 0.97, "bfloat16"),
               _fake("SGD", "W4", 2, 0.849, 1.1, "bfloat16"), _fake("SGD", "W1", 1, None, None)]
    opts = [{"optimizer_label": "AdamW", "workload": "W4", "threads": 1,
             "variants": [{"variant": "default (bf16 state)", "roofline_fraction": 0.9},
                          {"variant": "state_dtype=float32", "roofline_fraction": 0.53}]}]
    low = fb.under_roofline(results, opts)
    assert low == [("AdamW W4 (bfloat16) 1 thr", 0.36), ("SGD W4 (bfloat16) 2 thr", 0.849),
                   ("AdamW W4 state_dtype=float32 1 thr", 0.53)]
    text = fb.format_flags(results, opts)
    assert text.startswith("FLAG: 3 of 6 timed cases ran under 85%") and "state_dtype=float32 1 thr 53%" in text
    assert fb.format_flags(results[:1]).startswith("All 1 timed cases ran at >= 85%")


@pytest.mark.parametrize("load,cpus,threads,busy", [
    ((0.1, 0.1, 0.1), 2, [1, 2], False), ((0.9, 0.5, 0.2), 2, [1, 2], True), ((0.9, 0.5, 0.2), 2, [1], False),
    ((2.5, 2.0, 1.0), 8, [1, 2], False), (None, 2, [1, 2], False)])
def test_busy_machine_warning(load, cpus, threads, busy):
    w = fb.busy_warning(load, cpus, threads)
    assert (w is not None) == busy
    if busy:
        assert f"load average {load[0]:.2f} over {cpus} CPUs" in w and "unreliable" in w
    env = dict(fb.environment(), load_average=load, cpu_count=cpus)
    header = fb.format_header(env, threads=threads)
    assert ("WARNING: the machine is busy" in header) == busy
    if load:
        assert "load average" in header


def test_results_chart(tmp_path):
    pytest.importorskip("matplotlib")
    results = [_fake("AdamW", "W1", 1, 0.95, 1.2), _fake("AdamW", "W1", 2, 2.4, 0.8),
               _fake("Lion", "W4", 1, 0.5, 4.0, "bfloat16")]
    png = tmp_path / "chart.png"
    assert fb.plot_results(results, [], str(png)) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels, threads, data = fb.plot_rows(results, [])
    assert labels == ["AdamW W1", "Lion W4 bf16 (vs ref)"] and threads == [1, 2]
    assert data[("AdamW W1", 2)] == (0.8, 2.4)
    assert fb.plot_results([], [], str(tmp_path / "none.png")) == "no results to plot"


def test_cli_plot_writes_chart_and_convergence(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "r.png"
    rc = fb.main(["--quick", "--workloads", "w4", "--optimizers", "sgd", "--threads", "1", "--repeats", "1",
                  "--convergence-steps", "4", "--plot", str(png)])
    assert rc == 0
    captured = capsys.readouterr()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    conv = tmp_path / "r-convergence.png"
    assert conv.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"results chart written to {png}" in captured.err and "Run time:" in captured.out
    assert "timed cases ran" in captured.out


@pytest.mark.parametrize("optimizer,options", [("adamw", {"state_dtype": torch.float32}),
                                               ("adamw", {"master_weights": True}), ("adamw", {}),
                                               ("lamb", {"state_dtype": torch.float32})])
def test_roofline_calls_fit_the_fused_loop_and_move_each_array_once(monkeypatch, optimizer, options):
    """Beyond 4 read-write / 2 read-only arrays the kernel's fallback re-reads
    the read-only arrays per read-write one (more bytes, ~4x slower here): the
    roofline cuts such a pass into calls that fit, each array once."""
    from fusedoptim.bench import traffic as tr

    t = fb.traffic_model(fb.OPTIMIZERS[optimizer], torch.bfloat16, options)
    calls = []
    monkeypatch.setattr(tr._C, "roofline", lambda rw, ro: calls.append((list(rw), list(ro))))
    step, arrays = fb.roofline_step(t, 1000)
    step()
    per_pass = {}
    for p_i, p in enumerate(t.passes):
        per_pass[p_i] = ({id(a) for s in p if s.mode == "rw" for a in arrays[s.name]},
                         {id(a) for s in p if s.mode != "rw" for a in arrays[s.name]})
    got_rw = [id(a) for rw, _ in calls for a in rw]
    got_ro = [id(a) for _, ro in calls for a in ro]
    assert sorted(got_rw) == sorted(i for rw, _ in per_pass.values() for i in rw)
    assert sorted(got_ro) == sorted(i for _, ro in per_pass.values() for i in ro)
    fits = [1 <= len(rw) <= tr.ROOF_RW and len(ro) <= tr.ROOF_RO for rw, ro in calls]
    if optimizer == "adamw":
        assert all(fits), [(len(rw), len(ro)) for rw, ro in calls]
    if options.get("state_dtype") is torch.float32 and optimizer == "adamw":
        assert len(calls) == 2  # 5 rw + 1 ro half-length arrays: 3+1 and 2+0
