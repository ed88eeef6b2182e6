"""The issues' targets, evaluated per measurement (reported, never asserted)."""
from __future__ import annotations

from .workloads import LARGE_WORKLOADS, OPTIMIZERS

# Targets (reported, never asserted)
TARGET_ROOFLINE = 0.95        # W1, W2 fp32 (core): fraction of the same-traffic roofline
TARGET_W3_VS_FUSED = 10.0     # W3: speedup over torch fused
TARGET_W3_US_PER_TENSOR = 0.5  # W3 at 1 thread: microseconds per tensor
TARGET_UNFUSED_VS_BEST = 5.0  # optimizers torch does not fuse on CPU: speedup over torch's best mode
TARGET_BF16_VS_FUSED = 2.0    # bf16 workloads: speedup over torch's fused bf16 step
TARGET_BF16_ROOFLINE = 0.85   # bf16 workloads: fraction of the same-traffic roofline



def _target(value, ok_if_ge: float | None = None, lt: float | None = None, fmt: str = "x") -> dict:
    if ok_if_ge is not None:
        t = f">= {ok_if_ge:.0%}" if fmt == "%" else f">= {ok_if_ge:g}x"
        return {"value": value, "target": t, "ok": value >= ok_if_ge}
    return {"value": value, "target": f"< {lt:g} us", "ok": value < lt}


def evaluate_targets(res: dict) -> dict:
    """The issues' targets for one measurement: {name: {value, target, ok}}.

    fp32 (W1-W3), optimizers torch fuses (SGD, Adam, AdamW, Adagrad): the
    core targets (W1/W2 >= 95% roofline; x forloop >= the spec's target;
    W3 x fused >= 10 and < 0.5 us/tensor at 1 thread).
    Optimizers torch does not fuse (RMSprop, Adamax, NAdam, RAdam, Adadelta,
    Lion, LAMB), every workload: >= 5x torch's best mode (paired per round).
    bf16 (W4, W2bf16): >= 85% roofline; >= 2x torch fused where it exists."""
    out = {}
    spec = OPTIMIZERS[res["optimizer"]]
    fo = res["contenders"].get("fusedoptim")
    if fo is None:
        return out
    sp = res["speedup"]
    frac = res.get("roofline_fraction")
    bf16 = res["dtype"] != "float32"
    if bf16:
        if frac is not None:
            out["roofline_fraction"] = _target(frac, TARGET_BF16_ROOFLINE, fmt="%")
        if "fused" in sp:
            out["speedup_fused"] = _target(sp["fused"], TARGET_BF16_VS_FUSED)
    elif spec.torch_fuses:
        if res["workload"] in LARGE_WORKLOADS and frac is not None:
            out["roofline_fraction"] = _target(frac, TARGET_ROOFLINE, fmt="%")
        if "forloop" in sp and spec.forloop_target is not None:
            out["speedup_forloop"] = _target(sp["forloop"], spec.forloop_target)
        if res["workload"] == "W3":
            if "fused" in sp:
                out["speedup_fused"] = _target(sp["fused"], TARGET_W3_VS_FUSED)
            if res["threads"] == 1:
                out["us_per_tensor"] = _target(fo["us_per_tensor"], lt=TARGET_W3_US_PER_TENSOR)
    if not spec.torch_fuses and "best" in sp:
        out["speedup_best"] = _target(sp["best"], TARGET_UNFUSED_VS_BEST)
    return out

