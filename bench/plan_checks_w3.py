"""W3 (2,000 x 512 fp32, AdamW, 1 thread): two fusedoptim source trees (each built in place),
interleaved in one process; the per-round ratio is the cost of one tree's per-step checks.
usage: python bench/plan_checks_w3.py MAIN_SRC NEW_SRC [rounds]   (SRC: the directory holding fusedoptim/)"""
import importlib, os, shutil, sys, time
import torch
torch.set_num_threads(1)
root = os.path.join(os.environ.get("TMPDIR", "/tmp"), "fusedoptim_plan_checks_w3")
shutil.rmtree(root, ignore_errors=True); os.makedirs(root)
for name, src in (("fo_main", sys.argv[1]), ("fo_new", sys.argv[2])):
    shutil.copytree(os.path.join(src, "fusedoptim"), os.path.join(root, name),
                    ignore=shutil.ignore_patterns("*.c", "__pycache__"))
sys.path.insert(0, root)
mods = {n: importlib.import_module(n) for n in ("fo_main", "fo_new")}
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
STEPS = 200
setups = {}
for n, m in mods.items():
    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(512, generator=g)) for _ in range(2000)]
    for p in ps:
        p.grad = torch.randn(512, generator=g) * 1e-3
    opt = m.AdamW(ps, lr=1e-3)
    for _ in range(20):
        opt.step()
    setups[n] = opt
res = {n: [] for n in mods}
for r in range(rounds):
    for n in (("fo_main", "fo_new") if r % 2 == 0 else ("fo_new", "fo_main")):
        opt = setups[n]
        t0 = time.perf_counter()
        for _ in range(STEPS):
            opt.step()
        res[n].append((time.perf_counter() - t0) / STEPS * 1e6)
import statistics as st
for n in mods:
    v = sorted(res[n])
    print(f"{n}: median {st.median(v):.1f} us/step  min {v[0]:.1f}  (rounds {rounds} x {STEPS} steps)")
ratios = sorted(b / a for a, b in zip(res["fo_main"], res["fo_new"]))
print(f"new/main per-round ratio: median {st.median(ratios):.4f}  min {ratios[0]:.4f} max {ratios[-1]:.4f}")
print(f"new/main min/min: {min(res['fo_new'])/min(res['fo_main']):.4f}")
