"""fusedoptim.recipes: scale_lr, param_groups, EarlyStopping, lr_range_test."""
from __future__ import annotations

import math
import pickle
import sys

import pytest
import torch
from torch import nn

import fusedoptim
from fusedoptim.recipes import EarlyStopping, LRRangeTestResult, lr_range_test, param_groups, scale_lr


# ---------------------------------------------------------------------------
# scale_lr
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,kwargs,expected",
    [
        ((0.1, 1024), {}, 0.4),
        ((0.1, 256), {}, 0.1),
        ((0.1, 128), {}, 0.05),
        ((1e-3, 1024), {"rule": "sqrt"}, 2e-3),
        ((1e-3, 64), {"rule": "sqrt"}, 5e-4),
        ((0.2, 96), {"base_batch_size": 32}, 0.6),
        ((3e-4, 2048), {"base_batch_size": 512, "rule": "sqrt"}, 6e-4),
    ],
)
def test_scale_lr_rules(args, kwargs, expected):
    assert scale_lr(*args, **kwargs) == pytest.approx(expected, rel=1e-12)


def test_scale_lr_keeps_tensor_type_and_documents_both_rules():
    lr = torch.tensor(0.1, dtype=torch.float64)
    out = scale_lr(lr, 512)
    assert torch.is_tensor(out) and out.dtype == torch.float64 and float(out) == pytest.approx(0.2)
    assert float(lr) == 0.1  # input untouched
    doc = scale_lr.__doc__
    assert "linear" in doc and "sqrt" in doc and "Adam" in doc and "SGD" in doc and "warmup" in doc


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(base_lr=0.1, batch_size=0), "batch_size must be > 0"),
        (dict(base_lr=0.1, batch_size=-8), "batch_size must be > 0"),
        (dict(base_lr=0.1, batch_size=64, base_batch_size=0), "base_batch_size must be > 0"),
        (dict(base_lr=-0.1, batch_size=64), "base_lr must be >= 0"),
        (dict(base_lr=0.1, batch_size=64, rule="quadratic"), "rule must be 'linear' or 'sqrt'"),
        (dict(base_lr="0.1", batch_size=64), "base_lr must be a real number"),
        (dict(base_lr=0.1, batch_size=float("nan")), "batch_size must be a real number"),
    ],
)
def test_scale_lr_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale_lr(**kwargs)


# ---------------------------------------------------------------------------
# param_groups
# ---------------------------------------------------------------------------
class MyRMSNorm(nn.Module):  # a third-party norm (class name ends in "Norm") with a 2-d scale
    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, n))

    def forward(self, x):
        return x * self.scale


class Net(nn.Module):
    def __init__(self, with_hooks=True):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.pos_embed = nn.Parameter(torch.zeros(4, 8))
        self.fc1 = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8)
        self.rms = MyRMSNorm(8)
        self.attn = nn.Module()
        self.attn.relative_position_bias_table = nn.Parameter(torch.zeros(3, 3))
        self.head = nn.Linear(8, 2)
        self.attn_bias = nn.Parameter(torch.zeros(2, 2))  # 2-d, named *_bias: decayed (as in timm)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.tied = self.head  # the same module twice: its params must appear once
        self.with_hooks = with_hooks

    def no_weight_decay(self):
        return {"pos_embed"} if self.with_hooks else set()

    def no_weight_decay_keywords(self):
        return {"relative_position"} if self.with_hooks else set()

    def forward(self, idx):
        x = self.emb(idx).mean(1) + self.pos_embed.sum(0)
        x = self.rms(self.ln(self.bn(self.fc1(x))))
        return self.head(x) + self.attn.relative_position_bias_table.sum() + self.attn_bias.sum()


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_param_groups_default_split():
    model = Net()
    groups = param_groups(model, weight_decay=0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert set(groups[0]) == {"params", "weight_decay"}
    assert _names(model, groups[0]) == ["attn_bias", "emb.weight", "fc1.weight", "head.weight"]
    assert _names(model, groups[1]) == [
        "attn.relative_position_bias_table",  # no_weight_decay_keywords()
        "bn.bias", "bn.weight", "fc1.bias", "head.bias", "ln.bias", "ln.weight",  # 1-d
        "pos_embed",  # no_weight_decay()
        "rms.scale",  # 2-d, but a norm layer
    ]
    trainable = [p for p in model.parameters() if p.requires_grad]
    listed = [p for g in groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == len(trainable)  # each once, frozen left out


def test_param_groups_without_model_hooks_and_with_no_decay_entries():
    model = Net(with_hooks=False)
    groups = param_groups(model, 0.1)
    assert _names(model, groups[0]) == [
        "attn.relative_position_bias_table", "attn_bias", "emb.weight", "fc1.weight", "head.weight", "pos_embed",
    ]
    groups = param_groups(model, 0.1, no_decay=["pos_embed", "attn.*_table", "attn_bias", nn.Embedding])
    assert _names(model, groups[0]) == ["fc1.weight", "head.weight"]
    groups = param_groups(model, 0.1, no_decay="attn")  # a module prefix
    assert "attn.relative_position_bias_table" in _names(model, groups[1])
    groups = param_groups(model, 0.1, no_decay=["head.weight"])  # an exact name
    assert _names(model, groups[0]) == ["attn.relative_position_bias_table", "attn_bias", "emb.weight", "fc1.weight", "pos_embed"]


def test_param_groups_apply_weight_decay_only_where_intended():
    # AdamW with all-zero grads: the update is pure decoupled decay, p <- p * (1 - lr * wd)
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    for opt_cls in (torch.optim.AdamW, fusedoptim.AdamW):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = opt_cls(param_groups(model, weight_decay=0.5), lr=0.1)
        for p in model.parameters():
            p.grad = torch.zeros_like(p) if p.requires_grad else None
        opt.step()
        decayed = {"attn_bias", "emb.weight", "fc1.weight", "head.weight"}
        for n, p in model.named_parameters():
            expected = before[n] * (1 - 0.1 * 0.5) if n in decayed else before[n]
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(before[n])


def test_param_groups_lr_scale():
    model = Net()
    groups = param_groups(model, 0.05, lr_scale={"emb": 0.1, nn.LayerNorm: 2.0}, lr=1e-3)
    by_name = {}
    for g in groups:
        for n in _names(model, g):
            by_name[n] = (g["lr"], g["lr_scale"], g["weight_decay"])
    assert by_name["emb.weight"] == (pytest.approx(1e-4), 0.1, 0.05)
    assert by_name["ln.weight"] == (pytest.approx(2e-3), 2.0, 0.0)
    assert by_name["fc1.weight"] == (1e-3, 1.0, 0.05)
    assert by_name["fc1.bias"] == (1e-3, 1.0, 0.0)
    opt = torch.optim.SGD(groups, lr=1.0)  # the per-group lr wins over the default
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([1e-4, 1e-3, 2e-3])
    # a function works as well
    groups = param_groups(model, 0.05, lr_scale=lambda name, p: 0.5 if name.startswith("head") else 1.0, lr=0.2)
    assert {g["lr"] for g in groups if "head.weight" in _names(model, g)} == {0.1}


def test_param_groups_lr_scale_groups_are_distinct():
    model = Net()
    groups = param_groups(model, 0.05, lr_scale={"emb": 0.1, nn.LayerNorm: 2.0}, lr=1e-3)
    keys = [(g["lr_scale"], g["weight_decay"]) for g in groups]
    assert len(keys) == len(set(keys))
    assert keys == [(1.0, 0.05), (1.0, 0.0), (0.1, 0.05), (2.0, 0.0)]


def test_param_groups_verbose_prints_the_split(capsys):
    param_groups(Net(), 0.05, verbose=True)
    out = capsys.readouterr().out
    assert "2 groups" in out
    assert "weight_decay=0.05" in out and "weight_decay=0" in out
    assert "pos_embed  (model.no_weight_decay())" in out
    assert "rms.scale  (MyRMSNorm layer)" in out
    assert "fc1.bias  (1-d)" in out
    assert "frozen" not in out


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
        (dict(weight_decay=0.1, lr_scale={"emb": 0.1}), ValueError, "lr_scale needs the base learning rate"),
        (dict(weight_decay=0.1, no_decay=[3]), TypeError, "no_decay entries must be"),
        (dict(weight_decay=0.1, lr_scale={"emb": -1.0}, lr=0.1), ValueError, "must be >= 0"),
        (dict(weight_decay=0.1, lr_scale=[0.1], lr=0.1), TypeError, "lr_scale must be a dict or a function"),
    ],
)
def test_param_groups_invalid(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        param_groups(Net(), **kwargs)


def test_param_groups_needs_a_module():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        param_groups([nn.Parameter(torch.zeros(2))], 0.1)


# ---------------------------------------------------------------------------
# EarlyStopping
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,metrics,expected",
    [
        (dict(patience=2), [1.0, 0.9, 0.95, 0.91, 0.89, 0.9, 0.9], [0, 0, 0, 1, 0, 0, 1]),
        (dict(patience=1, min_delta=0.1), [1.0, 0.95, 0.85, 0.8], [0, 1, 0, 1]),
        (dict(patience=2, mode="max"), [0.5, 0.6, 0.6, 0.7, 0.65, 0.69, 0.8], [0, 0, 0, 0, 0, 1, 0]),
        (dict(patience=0), [3.0, 2.0, 2.0, 1.0], [0, 0, 1, 0]),
        (dict(patience=3), [1.0, float("nan"), float("nan"), float("nan")], [0, 0, 0, 1]),
        (dict(patience=2, min_delta=0.5, mode="max"), [1, 1.4, 1.45, 2.2], [0, 0, 1, 0]),
        (dict(patience=2, min_delta=0.5, mode="max"), [1, 1.4, 1.6, 2.2], [0, 0, 0, 0]),
    ],
)
def test_early_stopping_scripted(kwargs, metrics, expected):
    stopper = EarlyStopping(**kwargs)
    got = [int(stopper.step(m)) for m in metrics]
    assert got == expected
    assert stopper.should_stop == bool(expected[-1])


def test_early_stopping_visible_state_and_tensor_metrics():
    s = EarlyStopping(patience=3, min_delta=0.01)
    assert s.best == math.inf and s.num_bad_epochs == 0
    for m in [torch.tensor(2.0), torch.tensor(1.5), torch.tensor(1.495), torch.tensor(1.6)]:
        s.step(m)
    assert s.best == 1.5 and s.best_step == 1 and s.num_bad_epochs == 2 and s.num_steps == 4
    assert not s.improved
    s.step(1.2)
    assert s.improved and s.best == pytest.approx(1.2) and s.num_bad_epochs == 0
    assert EarlyStopping(1, mode="max").best == -math.inf
    assert "best=1.2" in repr(s)


def test_early_stopping_state_dict_round_trip():
    metrics = [5, 4, 4.5, 3, 3.2, 3.1, 3.3, 2.0, 2.5, 2.6, 2.7, 2.8]
    a = EarlyStopping(patience=3, min_delta=0.05)
    for m in metrics[:6]:
        a.step(m)
    b = EarlyStopping(patience=1)  # its settings come from the state
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    assert [b.step(m) for m in metrics[6:]] == [a.step(m) for m in metrics[6:]]
    assert b.state_dict() == a.state_dict()
    with pytest.raises(KeyError, match="unexpected keys"):
        b.load_state_dict({**a.state_dict(), "wait": 1})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(patience=-1), "patience must be an integer >= 0"),
        (dict(patience=1.5), "patience must be an integer"),
        (dict(patience=2, min_delta=-0.1), "min_delta must be >= 0"),
        (dict(patience=2, mode="avg"), "mode must be 'min' or 'max'"),
    ],
)
def test_early_stopping_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


# ---------------------------------------------------------------------------
# lr_range_test on least squares, where gradient descent is known in closed form
# ---------------------------------------------------------------------------
# Full-batch GD on L(w) = mean((Xw - y)^2) has Hessian H = 2 X^T X / n, and with
# e = w - w_ls each update is e <- (I - lr H) e and L = e^T (H/2) e + L(w_ls).
# Every update with lr < 2 / lambda_max(H) lowers L, so the test may only stop
# above that threshold; the whole loss curve is predictable.
def least_squares(n=64, d=8, noise=0.5, isotropic=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if isotropic:  # H = 3 I
        q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
        x = q * math.sqrt(3.0 * n / 2)
    else:
        x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3.0, d, dtype=torch.float64)
    w = torch.randn(d, 1, generator=g, dtype=torch.float64)
    y = x @ w + noise * torch.randn(n, 1, generator=g, dtype=torch.float64)
    h = 2 * x.T @ x / n
    return x, y, h


def predicted_losses(x, y, h, lrs, w0):
    w_ls = torch.linalg.lstsq(x, y).solution
    floor = float(torch.nn.functional.mse_loss(x @ w_ls, y))
    e = w0 - w_ls
    out = []
    for lr in lrs:
        e = e - lr * (h @ e)
        out.append(float(e.T @ (h / 2) @ e) + floor)
    return out


def smoothed_stop(raw, smooth, factor):
    avg, best, out = 0.0, math.inf, []
    for i, v in enumerate(raw):
        avg = smooth * avg + (1 - smooth) * v
        s = avg / (1 - smooth ** (i + 1))
        out.append(s)
        best = min(best, s)
        if s > factor * best:
            return i, out
    return None, out


def linear(d):
    model = nn.Linear(d, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    return model


@pytest.mark.parametrize("smooth", [0.0, 0.9, 0.98])
def test_lr_range_test_matches_gradient_descent_analytics(smooth):
    x, y, h = least_squares()
    crit = 2 / torch.linalg.eigvalsh(h).max().item()
    model = linear(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    res = lr_range_test(model, nn.functional.mse_loss, [(x, y)], opt, start_lr=1e-4, end_lr=10, num_steps=100, smooth=smooth)
    assert isinstance(res, LRRangeTestResult)
    sweep = [1e-4 * (10 / 1e-4) ** (i / 99) for i in range(100)]
    n = len(res.lrs)
    assert res.lrs == pytest.approx(sweep[:n], rel=1e-12)
    # the loss after each update is the closed form, and the stop is where the smoothed curve crosses 4x its best
    expected = predicted_losses(x, y, h, sweep, torch.zeros(8, 1, dtype=torch.float64))
    # (float64 rounding left in the nearly cancelled top eigen-direction is amplified as it
    # regrows past 2 / lambda_max: ~1e-7 relative at the very end, 1e-12 before)
    assert res.raw_losses[: n - 4] == pytest.approx(expected[: n - 4], rel=1e-10)
    assert res.raw_losses == pytest.approx(expected[:n], rel=1e-5)
    stop, smoothed = smoothed_stop(expected, smooth, 4)
    assert stop is not None and n == stop + 1
    assert res.losses == pytest.approx(smoothed, rel=1e-5)
    assert res.diverged
    # divergence is only possible past 2 / lambda_max; the suggestion is below it and not absurdly small
    assert res.lrs[-1] > crit
    assert crit / 20 < res.suggested_lr < crit
    assert res.suggested_lr == pytest.approx(res.best_lr / 10)
    assert res.steepest_lr < crit


def test_lr_range_test_stops_right_after_the_critical_lr_without_smoothing():
    x, y, h = least_squares(n=32, d=4, noise=0.0, isotropic=True)  # H = 3 I: lambda_max = 3
    crit = 2 / 3.0
    model = linear(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    res = lr_range_test(model, nn.functional.mse_loss, [(x, y)], opt, start_lr=1e-4, end_lr=10, num_steps=100, smooth=0.0)
    ratio = (10 / 1e-4) ** (1 / 99)
    assert res.diverged
    assert crit < res.lrs[-1] <= crit * ratio**3  # within three grid steps of 2 / lambda
    assert res.best_lr == max(lr for lr in res.lrs if lr < crit)  # the loss falls until then
    assert res.raw_losses[-1] > 4 * min(res.raw_losses)


def test_lr_range_test_suggestion_trains():
    x, y, h = least_squares()
    model = linear(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    res = lr_range_test(model, nn.functional.mse_loss, [(x, y)], opt, start_lr=1e-5, end_lr=10, num_steps=80)
    floor = float(nn.functional.mse_loss(x @ torch.linalg.lstsq(x, y).solution, y))
    for g in opt.param_groups:
        g["lr"] = res.suggested_lr
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:]))  # stable: never goes up
    assert losses[-1] - floor < 1e-3 * (losses[0] - floor)


def test_lr_range_test_minibatches_and_one_shot_iterators():
    x, y, _ = least_squares(n=96)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    model = linear(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    res = lr_range_test(model, nn.functional.mse_loss, batches, opt, start_lr=1e-5, end_lr=1e-2, num_steps=10)
    assert len(res.lrs) == 10 and not res.diverged  # the 3 batches were cycled
    assert res.lrs[0] == pytest.approx(1e-5) and res.lrs[-1] == pytest.approx(1e-2)
    res = lr_range_test(model, nn.functional.mse_loss, iter(batches), opt, start_lr=1e-5, end_lr=1e-2, num_steps=10)
    assert len(res.lrs) == 2  # a one-shot iterator is used once: 3 batches, 2 measured updates
    # inputs as a tuple (model(*inputs)) and as a dict (model(**inputs))
    res = lr_range_test(model, nn.functional.mse_loss, [((x,), y)], opt, num_steps=5)
    assert len(res.lrs) == 5
    res = lr_range_test(model, nn.functional.mse_loss, [({"input": x}, y)], opt, num_steps=5)
    assert len(res.lrs) == 5


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def _setup(opt_name, tensor_lr):
    torch.manual_seed(3)
    model = Small()
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    lr = torch.tensor(0.01) if tensor_lr else 0.01
    groups = [
        {"params": [model.fc1.weight, model.fc2.weight], "lr": lr},
        {"params": [model.fc1.bias, model.fc2.bias, *model.bn.parameters()], "weight_decay": 0.0},
    ]
    opt = {
        "torch.SGD": lambda: torch.optim.SGD(groups, lr=0.02, momentum=0.9, weight_decay=1e-4),
        "fusedoptim.SGD": lambda: fusedoptim.SGD(groups, lr=0.02, momentum=0.9, weight_decay=1e-4),
        "fusedoptim.AdamW": lambda: fusedoptim.AdamW(groups, lr=0.02, weight_decay=1e-2),
        "torch.Adam": lambda: torch.optim.Adam(groups, lr=0.02, amsgrad=True),
    }[opt_name]()
    return model, opt, x, y


def _train(model, opt, x, y, steps):
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


@pytest.mark.parametrize("pretrain", [0, 3])
@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("opt_name", ["torch.SGD", "fusedoptim.SGD", "fusedoptim.AdamW", "torch.Adam"])
def test_lr_range_test_restores_model_and_optimizer(opt_name, tensor_lr, pretrain):
    # two identical set-ups, fresh or trained a little (momentum/Adam state exists); one runs the
    # range test; afterwards both must train identically (state, lrs, RNG, BN buffers, grads)
    model_a, opt_a, x, y = _setup(opt_name, tensor_lr)
    model_b, opt_b, _, _ = _setup(opt_name, tensor_lr)
    torch.manual_seed(7)
    _train(model_a, opt_a, x, y, pretrain)
    torch.manual_seed(7)
    _train(model_b, opt_b, x, y, pretrain)
    model_b.eval()
    model_a.eval()
    lr_objects = [g["lr"] for g in opt_b.param_groups]
    grads_before = [None if p.grad is None else p.grad.clone() for p in model_b.parameters()]
    rng = torch.get_rng_state()
    res = lr_range_test(model_b, nn.functional.mse_loss, [(x, y)], opt_b, start_lr=1e-4, end_lr=10.0, num_steps=30)
    assert torch.equal(torch.get_rng_state(), rng)
    assert res.lrs[0] == pytest.approx(1e-4) and len(res.lrs) >= 5  # it did train
    assert not model_b.training and all(not m.training for m in model_b.modules())
    assert all(a is b for a, b in zip((g["lr"] for g in opt_b.param_groups), lr_objects))
    assert [float(g["lr"]) for g in opt_b.param_groups] == [float(g["lr"]) for g in opt_a.param_groups]
    assert opt_b.state_dict()["param_groups"] == opt_a.state_dict()["param_groups"]
    for (pa, sa), (pb, sb) in zip(opt_a.state.items(), opt_b.state.items()):
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=0, atol=0)
    assert len(opt_b.state) == len(opt_a.state)
    for pa, pb, g in zip(model_a.parameters(), model_b.parameters(), grads_before):
        torch.testing.assert_close(pb, pa, rtol=0, atol=0)
        if g is None:
            assert pb.grad is None
        else:
            torch.testing.assert_close(pb.grad, g, rtol=0, atol=0)
    for ba, bb in zip(model_a.buffers(), model_b.buffers()):
        torch.testing.assert_close(bb, ba, rtol=0, atol=0)
    model_a.train()
    model_b.train()
    torch.manual_seed(11)
    after_b = _train(model_b, opt_b, x, y, 5)
    torch.manual_seed(11)
    assert after_b == _train(model_a, opt_a, x, y, 5)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=0, atol=0)


def test_lr_range_test_keeps_group_lr_ratios():
    model, opt, x, y = _setup("torch.SGD", False)  # group lrs 0.01 and 0.02
    seen = []
    orig_step = opt.step

    def spy(*a, **k):
        seen.append([float(g["lr"]) for g in opt.param_groups])
        return orig_step(*a, **k)

    opt.step = spy
    lr_range_test(model, nn.functional.mse_loss, [(x, y)], opt, start_lr=1e-3, end_lr=1e-1, num_steps=5)
    assert [s[1] / s[0] for s in seen] == pytest.approx([2.0] * 5)
    assert [s[0] for s in seen] == pytest.approx([1e-3 * 100 ** (i / 4) for i in range(5)])


def test_lr_range_test_restores_even_when_the_loss_raises():
    model, opt, x, y = _setup("fusedoptim.SGD", False)
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def flaky(out, target):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return nn.functional.mse_loss(out, target)

    with pytest.raises(RuntimeError, match="boom"):
        lr_range_test(model, flaky, [(x, y)], opt, num_steps=10)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    assert all(p.grad is None for p in model.parameters())
    assert len(opt.state) == 0 and [g["lr"] for g in opt.param_groups] == [0.01, 0.02]


def test_lr_range_test_stops_on_nan():
    x, y, _ = least_squares()
    y = y.clone()
    model = linear(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = []

    def loss_fn(out, target):
        calls.append(1)
        loss = nn.functional.mse_loss(out, target)
        return loss * float("nan") if len(calls) == 6 else loss

    res = lr_range_test(model, loss_fn, [(x, y)], opt, num_steps=50)
    assert res.diverged and len(res.lrs) == 5 and math.isnan(res.raw_losses[-1])
    assert math.isfinite(res.suggested_lr)


def test_lr_range_test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    x, y, _ = least_squares()
    model = linear(8)
    res = lr_range_test(model, nn.functional.mse_loss, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1))
    path = res.plot(tmp_path / "range.png")
    data = (tmp_path / "range.png").read_bytes()
    assert path == tmp_path / "range.png"
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_range_test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    res = LRRangeTestResult([1e-3, 1e-2], [1.0, 0.5], [1.0, 0.5], 1e-3, 1e-2, 1e-2, False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'fusedoptim\[plot\]'"):
        res.plot(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _opt():
    return torch.optim.SGD(linear(2).parameters(), lr=0.1)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(start_lr=1.0, end_lr=0.1), ValueError, r"end_lr \(0.1\) must be larger than start_lr \(1.0\)"),
        (dict(start_lr=0.0), ValueError, "start_lr must be > 0"),
        (dict(num_steps=1), ValueError, "num_steps must be an integer >= 2"),
        (dict(smooth=1.0), ValueError, r"smooth must be in \[0, 1\)"),
        (dict(diverge_factor=1.0), ValueError, "diverge_factor must be > 1"),
        (dict(optimizer="sgd"), TypeError, "str is not an Optimizer"),
        (dict(model=lambda x: x), TypeError, "model must be an nn.Module"),
        (dict(batches=[]), ValueError, "yielded no batch"),
        (dict(batches=[torch.zeros(3, 2)]), TypeError, r"each batch must be an \(inputs, targets\) pair"),
        (dict(batches=iter([(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64))])), ValueError, "at least two batches"),
        (dict(loss_fn=lambda out, t: (out - t).abs()), TypeError, "loss_fn must return a scalar tensor"),
    ],
)
def test_lr_range_test_invalid(kwargs, exc, match):
    model = linear(2)
    args = dict(
        model=model,
        loss_fn=nn.functional.mse_loss,
        batches=[(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64))],
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
    )
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        lr_range_test(**args)


def _noisy_range_test():
    torch.manual_seed(0)
    x = torch.randn(2048, 20)
    y = x @ torch.randn(20, 1) + 0.3 * torch.randn(2048, 1)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = fusedoptim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 2048, 32)]
    return lr_range_test(model, nn.functional.mse_loss, batches, opt, start_lr=1e-6, end_lr=10, num_steps=100)


def test_lr_range_test_steepest_skips_early_noise_and_the_tail():
    """Minibatch noise: the smoothed loss drops steeply over the first few
    updates (the moving average has seen few losses). The steepest-slope
    suggestion skips them (10% of the updates) and the divergence tail, as
    torch-lr-finder (skip_start) and fastai do."""
    res = _noisy_range_test()
    pts = list(zip(res.lrs, res.losses))
    slopes = [((pts[j + 1][1] - pts[j - 1][1]) / (math.log(pts[j + 1][0]) - math.log(pts[j - 1][0])), pts[j][0])
              for j in range(1, len(pts) - 1)]
    assert min(slopes)[1] == res.lrs[1]  # the naive rule picks the second lr tried
    skip = len(pts) // 10
    i_best = res.losses.index(min(res.losses))
    assert res.lrs.index(res.steepest_lr) in range(skip + 1, i_best)
    seg = pts[skip:i_best + 1]
    want = min(((seg[j + 1][1] - seg[j - 1][1]) / (math.log(seg[j + 1][0]) - math.log(seg[j - 1][0])), seg[j][0])
               for j in range(1, len(seg) - 1))[1]
    assert res.steepest_lr == want
    assert res.best_lr / 100 < res.steepest_lr < res.best_lr


def test_steepest_lr_rule():
    from fusedoptim.recipes import steepest_lr

    lrs = [10.0 ** (-6 + i / 4) for i in range(24)]
    # early plunge (noise), slow fall, steepest central difference at index 13, minimum at 18, divergence after
    losses = [9.0, 5.0, 4.9, 4.85, 4.8, 4.75, 4.7, 4.65, 4.6, 4.5, 4.4, 4.2, 3.9, 3.3, 2.4, 1.9, 1.6, 1.5, 1.45,
              2.0, 5.0, 20.0, 90.0, float("nan")]
    assert steepest_lr(lrs, losses) == lrs[13]
    assert steepest_lr(lrs, losses, skip_start=0) == lrs[1]
    assert steepest_lr(lrs[:2], losses[:2]) is None
    assert steepest_lr([1e-3, 1e-2], [float("nan")] * 2) is None


def test_lr_range_test_result_repr_and_plot_limits():
    res = LRRangeTestResult(lrs=[1e-4, 1e-3, 1e-2, 1e-1, 1.0], losses=[2.0, 1.5, 1.0, 1.2, 30.0],
                            raw_losses=[2.0, 1.4, 0.9, 1.5, 300.0], suggested_lr=1e-3, best_lr=1e-2,
                            steepest_lr=1e-3, diverged=True)
    assert repr(res) == ("LRRangeTestResult(suggested_lr=0.001, steepest_lr=0.001, best_lr=0.01, steps=5, "
                         "lrs=0.0001..1, diverged=True)")
    lo, hi = res.plot_limits()
    assert lo < 1.0 < 2.0 < hi < 3.0  # the smoothed curve's range; the 30 (and raw 300) tail is clipped
    long = _noisy_range_test()
    assert len(repr(long)) < 160
    assert LRRangeTestResult([1.0], [float("nan")], [float("nan")], 0.1, 1.0, 1.0, True).plot_limits() is None


def test_lr_range_test_plot_is_scaled_to_the_smoothed_curve(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    res = _noisy_range_test()
    seen = {}
    orig = matplotlib.figure.Figure.savefig

    def spy(self, *a, **k):
        seen["ylim"] = self.axes[0].get_ylim()
        return orig(self, *a, **k)

    matplotlib.figure.Figure.savefig = spy
    try:
        res.plot(tmp_path / "r.png")
    finally:
        matplotlib.figure.Figure.savefig = orig
    lo, hi = seen["ylim"]
    assert (lo, hi) == pytest.approx(res.plot_limits())
    assert hi < max(res.raw_losses) and hi < max(res.losses)  # spikes and the divergence tail are clipped
    assert lo < min(res.losses)
