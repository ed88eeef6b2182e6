"""After the first step, step() creates no tensor: every torch op it
dispatches is recorded and none may allocate. The only op allowed is copy_ of
a differently-strided grad into the plan's cached scratch buffer."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fusedoptim


class _Record(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((str(func), args))
        return func(*args, **(kwargs or {}))


def _aten(ops):
    return [(name, args) for name, args in ops if name.startswith("aten.")]


MAKERS = {
    "AdamW": lambda ps: fusedoptim.AdamW(ps, weight_decay=0.1),
    "Adam-amsgrad": lambda ps: fusedoptim.Adam(ps, amsgrad=True),
    "SGD-momentum": lambda ps: fusedoptim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "SGD": lambda ps: fusedoptim.SGD(ps, lr=0.1),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_steady_state_step_dispatches_no_torch_op(name):
    ps = [torch.nn.Parameter(torch.randn(33)) for _ in range(5)]
    ps.append(torch.nn.Parameter(torch.randn(7, 5).t()))  # dense, non-contiguous
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = MAKERS[name](ps)
    opt.step()
    for p in ps:  # new grad tensors each step, as zero_grad(set_to_none=True) gives
        p.grad = torch.randn_like(p)
    with _Record() as rec:
        opt.step()
    assert _aten(rec.ops) == [], _aten(rec.ops)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_strided_grad_copies_into_cached_scratch_only(name):
    p = torch.nn.Parameter(torch.randn(7, 5))
    p.grad = torch.randn(5, 7).t()  # strides differ from the param's
    q = torch.nn.Parameter(torch.randn(9))
    q.grad = torch.randn(9)
    opt = MAKERS[name]([p, q])
    opt.step()
    dests = []
    for _ in range(2):
        p.grad = torch.randn(5, 7).t()
        with _Record() as rec:
            opt.step()
        ops = _aten(rec.ops)
        assert [n for n, _ in ops] == ["aten.copy_.default"], ops
        dests.append(ops[0][1][0].data_ptr())
    assert dests[0] == dests[1]  # the same scratch buffer both times
