"""One rank of the distributed tests (tests/test_distributed.py starts two).

    python tests/dist_worker.py RANK WORLD PORT WORKDIR SCENARIO[,SCENARIO...]

Every scenario trains the same model with a fusedoptim optimizer and with its
torch.optim counterpart, on torch.distributed (gloo, CPU), and compares them
after every step; it prints "PASS <scenario> <detail>" or raises (non-zero
exit). Scenarios:

  ddp      DistributedDataParallel, every optimizer of the registry (its last
           option set): params equal torch's run (float32: bit-identical to
           torch fused when the ISAs match) and equal across ranks
  zero     ZeroRedundancyOptimizer(optimizer_class=fusedoptim.AdamW) vs
           optimizer_class=torch.optim.AdamW, and its consolidated state_dict
  fsdp2    fully_shard (FSDP2) on CPU: params are DTensors, which fusedoptim
           hands to torch's implementation: local shards bit-identical to
           torch.optim.AdamW on the same sharded model, close to a one-process
           unsharded run on the same global batches
  dcp_ddp  torch.distributed.checkpoint save after 3 steps, resume in a fresh
  dcp_fsdp model + optimizer, 3 more steps == an uninterrupted run (bitwise);
           with DDP (fusedoptim's kernels) and with FSDP2
"""
from __future__ import annotations

import datetime
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import registry as R  # noqa: E402

import fusedoptim  # noqa: E402

STEPS = 6
IN, HID, OUT, BATCH = 16, 24, 8, 8


def model_fn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.Tanh(), torch.nn.Linear(HID, OUT))


def batch(step, rank):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(BATCH, IN, generator=g), torch.randn(BATCH, OUT, generator=g)


def loss_fn(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def train_step(model, opt, step, rank):
    x, y = batch(step, rank)
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    opt.step()


def local(t):
    t = t.detach()
    return t.to_local() if hasattr(t, "to_local") else t


def compare_models(a, b, mode, label):
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        R.compare_tensor(local(pa), local(pb), mode, f"{label} {n}")


def same_across_ranks(model, label):
    for n, p in model.named_parameters():
        t = local(p).clone()
        other = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(other, t)
        for r, o in enumerate(other):
            R.compare_tensor(o, t, "bitwise", f"{label} {n} rank {r} vs {dist.get_rank()}")


def fused_kwargs(info, kw):
    """torch's side of a comparison: its fused kernel where there is one."""
    import trust_support as T
    return T.torch_kwargs(info, kw, "fused") if T.has_fused_oracle(info) else T.torch_kwargs(info, kw, "loop")


def mode_for(info):
    import trust_support as T
    return R.fp32_mode() if T.has_fused_oracle(info) else "close"


# ------------------------------------------------------------------- scenarios --


def scenario_ddp(rank, workdir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    for info in R.OPTIMS:
        kw = info.configs[-1].kwargs
        runs = []
        for cls, extra in ((info.fo_cls, kw), (info.torch_cls, fused_kwargs(info, kw))):
            model = DDP(model_fn())
            opt = cls(model.parameters(), **extra)
            runs.append((model, opt))
        for s in range(STEPS):
            for model, opt in runs:
                train_step(model, opt, s, rank)
            compare_models(runs[0][0], runs[1][0], mode_for(info), f"DDP {info.name} step {s + 1}")
            same_across_ranks(runs[0][0], f"DDP {info.name} step {s + 1}")
        print(f"PASS ddp {info.name} {STEPS} steps x 2 ranks", flush=True)


def scenario_zero(rank, workdir):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    kw = dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), amsgrad=True)
    runs = []
    for cls, extra in ((fusedoptim.AdamW, {}), (torch.optim.AdamW, {"fused": True})):
        model = DDP(model_fn())
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kw, **extra)
        runs.append((model, opt))
    # each rank's local optimizer holds only its shard of the params
    assert isinstance(runs[0][1].optim, fusedoptim.AdamW)
    n_local = sum(len(g["params"]) for g in runs[0][1].optim.param_groups)
    n_all = len(list(runs[0][0].parameters()))
    assert 0 < n_local < n_all, (n_local, n_all)
    for s in range(STEPS):
        for model, opt in runs:
            train_step(model, opt, s, rank)
        compare_models(runs[0][0], runs[1][0], R.fp32_mode(), f"ZeRO AdamW step {s + 1}")
        same_across_ranks(runs[0][0], f"ZeRO step {s + 1}")
    # consolidated checkpoint: same state as torch's, loads back into both
    sds = []
    for model, opt in runs:
        opt.consolidate_state_dict(to=0)
        sds.append(opt.state_dict() if rank == 0 else None)
    if rank == 0:
        a, b = sds
        assert a["state"].keys() == b["state"].keys()
        for pid in b["state"]:
            for k, v in b["state"][pid].items():
                if torch.is_tensor(v) and k != "step":
                    R.compare_tensor(a["state"][pid][k], v, R.fp32_mode(), f"ZeRO state {pid} {k}")
                else:
                    assert float(a["state"][pid][k]) == float(v)
        torch.save(a, os.path.join(workdir, "zero.pt"))
    dist.barrier()
    sd = torch.load(os.path.join(workdir, "zero.pt"), weights_only=False)
    for cls, extra in ((fusedoptim.AdamW, {}), (torch.optim.AdamW, {"fused": True})):
        model = DDP(model_fn())
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kw, **extra)
        opt.load_state_dict(sd)
    print(f"PASS zero AdamW {STEPS} steps x 2 ranks, {n_local}/{n_all} params local, checkpoint loads", flush=True)


def _fsdp_model(mesh):
    from torch.distributed.fsdp import fully_shard

    model = model_fn()
    for m in model:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


# Known bug, checked strictly (the test fails once it is fixed, to drop the
# entry): fusedoptim hands DTensor params to its reference implementation,
# whose per-tensor norms (LAMB's trust ratio) take float() of a DTensor norm;
# with Shard placements that norm is a Partial DTensor and float() gives the
# shard-local value, so each shard gets its own trust ratio and FSDP2 training
# differs from unsharded training (src/fusedoptim/_reference.py, LAMBTorch).
KNOWN_FSDP2_UNSHARDED_MISMATCH = set()  # LAMB was here until its norms reduced over shards


def scenario_fsdp2(rank, workdir):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for info in R.OPTIMS:
        kw = info.configs[-1].kwargs
        runs = []
        for cls in (info.fo_cls, info.torch_cls):
            model = _fsdp_model(mesh)
            runs.append((model, cls(model.parameters(), **kw)))
        assert all(isinstance(p, DTensor) for p in runs[0][0].parameters())
        known = None
        # one process, unsharded, on the same global batches (FSDP averages grads)
        ref = model_fn()
        ref_opt = info.torch_cls(ref.parameters(), **R.OPTIMS_BY_NAME[info.name].configs[-1].kwargs)
        for s in range(STEPS):
            for model, opt in runs:
                train_step(model, opt, s, rank)
            # DTensor params take torch's own implementation inside fusedoptim: bit-identical
            compare_models(runs[0][0], runs[1][0], "bitwise", f"FSDP2 {info.name} step {s + 1}")
            xs, ys = zip(*(batch(s, r) for r in range(dist.get_world_size())))
            ref_opt.zero_grad()
            (sum(loss_fn(ref, x, y) for x, y in zip(xs, ys)) / len(xs)).backward()
            ref_opt.step()
            for (n, p), q in zip(runs[0][0].named_parameters(), ref.parameters()):
                try:
                    R.compare_tensor(p.detach().full_tensor(), q.detach(), "close",
                                     f"FSDP2 {info.name} step {s + 1} {n} vs unsharded", rtol=1e-4, atol=1e-5)
                except AssertionError as e:
                    if info.name not in KNOWN_FSDP2_UNSHARDED_MISMATCH:
                        raise
                    known = str(e).splitlines()[0]
        if info.name in KNOWN_FSDP2_UNSHARDED_MISMATCH:
            assert known is not None, f"{info.name}: the known FSDP2 mismatch is gone: drop it from the list"
            print(f"XFAIL fsdp2 {info.name} vs unsharded (known bug): {known}", flush=True)
        st = runs[0][1].state[next(runs[0][0].parameters())]
        dstate = [k for k, v in st.items() if isinstance(v, DTensor)]
        assert dstate or not st, f"{info.name}: state of a DTensor param is not DTensor: {st}"
        print(f"PASS fsdp2 {info.name} {STEPS} steps x 2 ranks (state {sorted(dstate)} are DTensors)", flush=True)


def _dcp_run(make_model, cls, kw, rank, workdir, tag):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
    )

    # uninterrupted
    model = make_model()
    opt = cls(model.parameters(), **kw)
    for s in range(STEPS):
        train_step(model, opt, s, rank)
    # interrupted: save after half, resume in fresh objects
    model1 = make_model()
    opt1 = cls(model1.parameters(), **kw)
    half = STEPS // 2
    for s in range(half):
        train_step(model1, opt1, s, rank)
    path = os.path.join(workdir, f"dcp_{tag}")
    dcp.save({"model": get_model_state_dict(model1), "optim": get_optimizer_state_dict(model1, opt1)},
             checkpoint_id=path)
    del model1, opt1
    model2 = make_model()
    opt2 = cls(model2.parameters(), **kw)
    sd = {"model": get_model_state_dict(model2), "optim": get_optimizer_state_dict(model2, opt2)}
    dcp.load(sd, checkpoint_id=path)
    set_model_state_dict(model2, sd["model"])
    set_optimizer_state_dict(model2, opt2, sd["optim"])
    for s in range(half, STEPS):
        train_step(model2, opt2, s, rank)
    compare_models(model2, model, "bitwise", f"DCP {tag} resumed vs uninterrupted")
    for p, q in zip(model2.parameters(), model.parameters()):
        for k, v in opt.state[q].items():
            R.compare_tensor(local(opt2.state[p][k]), local(v), "bitwise", f"DCP {tag} state {k}")


def scenario_dcp_ddp(rank, workdir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    for info in R.OPTIMS:
        _dcp_run(lambda: DDP(model_fn()), info.fo_cls, info.configs[-1].kwargs, rank, workdir, f"ddp_{info.name}")
        print(f"PASS dcp_ddp {info.name}: resumed after {STEPS // 2} of {STEPS} steps == uninterrupted", flush=True)


def scenario_dcp_fsdp(rank, workdir):
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    _dcp_run(lambda: _fsdp_model(mesh), fusedoptim.AdamW, dict(lr=0.01, weight_decay=0.1), rank, workdir,
             "fsdp_AdamW")
    print(f"PASS dcp_fsdp AdamW: resumed after {STEPS // 2} of {STEPS} steps == uninterrupted", flush=True)


SCENARIOS = {
    "ddp": scenario_ddp, "zero": scenario_zero, "fsdp2": scenario_fsdp2,
    "dcp_ddp": scenario_dcp_ddp, "dcp_fsdp": scenario_dcp_fsdp,
}


def main():
    rank, world, port, workdir, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        for name in names.split(","):
            SCENARIOS[name](rank, workdir)
            dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
