"""The bf16 convergence demonstration: the same training in fp32 and in bf16
with each low-precision option."""
from __future__ import annotations

import copy
import math
import time

import torch

from .report import _render
from .workloads import OPTIMIZERS

CONV_MODES = {
    "fp32": (torch.float32, {}),
    "bf16": (torch.bfloat16, {}),
    "bf16 state fp32": (torch.bfloat16, {"state_dtype": torch.float32}),
    "bf16 master": (torch.bfloat16, {"master_weights": True}),
    "bf16 SR": (torch.bfloat16, {"stochastic_rounding": True}),
}
CONV_STEPS, CONV_EVERY, CONV_LR, CONV_WIDTH = 400, 25, 1e-4, 64
QUICK_CONV_STEPS, QUICK_CONV_EVERY = 40, 10


def _conv_task(seed: int, n: int = 512, d_in: int = 32, d_hidden: int = 64) -> tuple:
    """A fixed synthetic regression task: inputs x ~ N(0, 1), targets from a
    random teacher MLP (tanh), all drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=gen)
    w1 = torch.randn(d_in, d_hidden, generator=gen) / math.sqrt(d_in)
    w2 = torch.randn(d_hidden, 1, generator=gen) / math.sqrt(d_hidden)
    y = torch.tanh(x @ w1) @ w2
    return x, y


def _conv_model(seed: int, d_in: int = 32, width: int = CONV_WIDTH) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))


def convergence(steps: int = CONV_STEPS, every: int = CONV_EVERY, lr: float = CONV_LR, *, seed: int = 0,
                threads: int = 1, modes: dict | None = None, optimizer: str = "adamw") -> dict:
    """Trains the same MLP (same init, same data: a fixed teacher-student
    regression drawn from `seed`, full batch) with fusedoptim `optimizer`
    (weight_decay=0) in fp32 and in bf16 with each option, and records the
    training MSE (fp32 loss of the model's own-dtype output) every `every`
    steps, plus the fraction of parameter elements that did not change over
    the last `every` steps (a stalled bf16 param cannot take updates smaller
    than half its spacing). Deterministic: seeded, run at `threads` threads
    (torch's matmul results can depend on the thread count)."""
    modes = CONV_MODES if modes is None else modes
    if steps < 1 or every < 1:
        raise ValueError("steps and every must be >= 1")
    spec = OPTIMIZERS[optimizer]
    x, y = _conv_task(seed)
    init = _conv_model(seed + 1)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    t_all = time.perf_counter()
    out = {"optimizer": spec.label, "lr": lr, "steps": steps, "every": every, "seed": seed, "threads": threads,
           "task": f"MLP {x.shape[1]}-{CONV_WIDTH}-{CONV_WIDTH}-1 (tanh) regressing a random teacher MLP, {x.shape[0]} samples, "
                   f"full batch, MSE", "modes": {}}
    try:
        for name, (dtype, options) in modes.items():
            t0 = time.perf_counter()
            model = copy.deepcopy(init).to(dtype)
            opt = spec.fo_cls(model.parameters(), lr=lr, weight_decay=0.0, **options)
            torch.manual_seed(seed + 2)  # stochastic rounding draws from torch's generator
            xd = x.to(dtype)
            record, losses, snap, unchanged = [], [], None, None
            for step in range(steps + 1):
                if step == steps - every:
                    snap = [p.detach().clone() for p in model.parameters()]
                loss = torch.nn.functional.mse_loss(model(xd).float(), y)
                if step % every == 0 or step == steps:
                    record.append(step)
                    losses.append(loss.item())
                if step == steps:
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
            if snap is not None:
                same = sum(int((a == p.detach()).sum()) for a, p in zip(snap, model.parameters()))
                unchanged = same / sum(p.numel() for p in model.parameters())
            out["modes"][name] = {"dtype": str(dtype).replace("torch.", ""),
                                  "options": {k: str(v) for k, v in options.items()},
                                  "steps": record, "loss": losses, "unchanged_last": unchanged,
                                  "seconds": time.perf_counter() - t0}
    finally:
        torch.set_num_threads(old)
    out["seconds"] = time.perf_counter() - t_all
    return out


def format_convergence(conv: dict, markdown: bool = False) -> str:
    names = list(conv["modes"])
    headers = ["step"] + names
    rows = []
    steps = conv["modes"][names[0]]["steps"]
    for i, s in enumerate(steps):
        rows.append([str(s)] + [f"{conv['modes'][n]['loss'][i]:.4g}" for n in names])
    fp32 = conv["modes"].get("fp32")
    if fp32:
        rows.append(["final / fp32"] + [f"{conv['modes'][n]['loss'][-1] / fp32['loss'][-1]:.2f}x"
                                        if fp32["loss"][-1] > 0 else "-" for n in names])
    rows.append([f"unchanged, last {conv['every']}"] +
                [f"{conv['modes'][n]['unchanged_last']:.1%}" if conv["modes"][n]["unchanged_last"] is not None
                 else "-" for n in names])
    title = (f"Convergence: {conv['optimizer']}(lr={conv['lr']:g}, weight_decay=0), {conv['task']}; "
             f"training loss every {conv['every']} steps, seed {conv['seed']}, {conv['threads']} thread(s), "
             f"{conv['seconds']:.1f} s. 'bf16': bf16 params and state (torch's default); 'state fp32': "
             f"state_dtype=float32; 'master': master_weights=True; 'SR': stochastic_rounding=True; "
             f"'unchanged': parameter elements that did not move over the last {conv['every']} steps.")
    table = _render(headers, rows, markdown, "l" + "r" * len(names))
    return (f"**{title}**\n\n{table}" if markdown else f"{title}\n{table}")


def plot_convergence(conv: dict, path: str) -> str | None:
    """Saves the loss curves as a PNG; returns None, or why it could not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib not available ({e}): no plot written"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ("-", "--", ":", "-.")
    for i, (name, m) in enumerate(conv["modes"].items()):  # curves overlap: vary the line style
        ax.plot(m["steps"], m["loss"], label=name, marker=".", linestyle=styles[i % len(styles)])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training MSE")
    ax.set_title(f"{conv['optimizer']} lr={conv['lr']:g}: fp32 vs bf16 modes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None

