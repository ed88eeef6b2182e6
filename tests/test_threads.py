"""The chunk table splits a group across torch's pool by total elements, so a
thread's range may start and end inside any tensor, and inside its torch-style
remainder. Results must not depend on where the splits fall."""
import pytest
import torch

import fusedoptim
from fusedoptim import _C

SIZES = [1, 7, 8, 9, 16, 17, 33, 100, 257, 1000, 4099]


def _run(make, grain, threads, dtype):
    old_grain, old_threads = _C.get_grain(), torch.get_num_threads()
    _C.set_grain(grain)
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(3)
        ps = [torch.nn.Parameter(torch.randn(n, generator=gen, dtype=dtype)) for n in SIZES]
        opt = make(ps)
        for _ in range(4):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            opt.step()
        return [p.detach().clone() for p in ps], [
            v.clone() for p in ps for v in opt.state[p].values() if torch.is_tensor(v)
        ]
    finally:
        _C.set_grain(old_grain)
        torch.set_num_threads(old_threads)


MAKERS = {
    "AdamW-amsgrad": lambda ps: fusedoptim.AdamW(ps, lr=0.01, amsgrad=True, betas=(0.3, 0.9)),
    "Adam-wd": lambda ps: fusedoptim.Adam(ps, lr=0.01, weight_decay=0.1),
    "SGD-nesterov": lambda ps: fusedoptim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
}


def test_kernels_run_on_torchs_pool():
    assert _C.has_parallel_for()


@pytest.mark.skipif(torch.get_num_threads() < 2 and __import__("os").cpu_count() < 2, reason="one CPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_result_independent_of_split(name, dtype):
    ref = _run(MAKERS[name], grain=1 << 30, threads=1, dtype=dtype)   # one range, inline
    for grain, threads in ((16, 2), (48, 2), (16, 1)):
        got = _run(MAKERS[name], grain=grain, threads=threads, dtype=dtype)
        for a, b in zip(ref[0] + ref[1], got[0] + got[1]):
            assert torch.equal(a.view(-1).view(torch.int8), b.view(-1).view(torch.int8)), (grain, threads)
