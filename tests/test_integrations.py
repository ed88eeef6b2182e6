"""The ways in from the tools people use: HF transformers' Trainer, Lightning,
timm-style create_optimizer. CPU only, tiny models built from configs,
nothing downloaded. transformers and lightning are optional: each test is
skipped with a message when its package is absent (CI installs them in the
`integrations` step of .ci/run)."""
from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch import nn

import fusedoptim

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: models come from configs
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _need(name: str):
    return pytest.importorskip(
        name, reason=f"{name} is not installed: the integration tests need it "
                     f"(bash .ci/run installs it in the 'integrations' step)")


# ----------------------------------------------------------- HF transformers --

def _tiny_gpt2():
    tr = _need("transformers")
    cfg = tr.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return tr.GPT2LMHeadModel(cfg)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n=16, length=8):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randint(0, 64, (n, length), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def _train_hf(tmp_path, optimizer_cls_and_kwargs, steps=4):
    tr = _need("transformers")
    model = _tiny_gpt2()
    args = tr.TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
        weight_decay=0.1, warmup_steps=1, use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=3, dataloader_num_workers=0)
    trainer = tr.Trainer(model=model, args=args, train_dataset=_Tokens(),
                         optimizer_cls_and_kwargs=optimizer_cls_and_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return trainer, model


def test_hf_trainer_optimizer_cls_and_kwargs(tmp_path):
    """Trainer(optimizer_cls_and_kwargs=(fusedoptim.AdamW, {...})) builds our
    optimizer on the params it trains (with its own decay / no-decay groups,
    its own linear schedule and grad clipping), and the result equals torch's
    fused AdamW given the same way, bit for bit (fp32)."""
    ours, m_ours = _train_hf(tmp_path / "a", (fusedoptim.AdamW, {"betas": (0.9, 0.95)}))
    ref, m_ref = _train_hf(tmp_path / "b", (torch.optim.AdamW, {"betas": (0.9, 0.95), "fused": True}))
    assert type(ours.optimizer.optimizer if hasattr(ours.optimizer, "optimizer") else ours.optimizer) is fusedoptim.AdamW
    opt = ours.optimizer.optimizer if hasattr(ours.optimizer, "optimizer") else ours.optimizer
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # Trainer's no-decay group
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    assert opt.param_groups[0]["lr"] != 1e-2  # the Trainer's scheduler drives our optimizer
    trained = [p for p in m_ours.parameters() if opt.state.get(p)]
    assert trained and all(int(opt.state[p]["step"]) == 4 for p in trained)
    init = _tiny_gpt2()
    moved = [not torch.equal(a, b) for a, b in zip(m_ours.parameters(), init.parameters())]
    assert any(moved)
    for (name, a), b in zip(m_ours.named_parameters(), m_ref.parameters()):
        assert torch.equal(a, b), name


def test_hf_trainer_create_optimizer_factory_name(tmp_path):
    """A fusedoptim optimizer by name for a Trainer: the class from
    create_optimizer's table, handed over as optimizer_cls_and_kwargs."""
    from fusedoptim.factory import optimizer_names

    cls = optimizer_names()["lion"]
    trainer, _ = _train_hf(tmp_path, (cls, {"betas": (0.9, 0.99)}), steps=2)
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert type(opt) is fusedoptim.Lion


# ----------------------------------------------------------------- Lightning --

def _lightning_module(opt_factory, clip_in_step=None):
    L = _need("lightning")

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            opt = opt_factory(self)
            sched = fusedoptim.lr_scheduler.WarmupCosineLR(opt, warmup_steps=2, total_steps=8)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Tiny()


def _loader():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 8, generator=g)
    y = x.sum(1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def _fit(module, **trainer_kw):
    L = _need("lightning")
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, _loader())
    return trainer


def test_lightning_configure_optimizers_with_create_optimizer_and_clipping():
    """configure_optimizers returns a fusedoptim optimizer (create_optimizer:
    no-decay group for biases and norm weights) and one of our schedulers;
    Trainer(gradient_clip_val=...) clips as with torch's optimizers (fp32:
    no GradScaler involved). The same run with torch.optim.AdamW(fused=True)
    ends with the same weights."""
    def ours(m):
        return fusedoptim.create_optimizer(m, "adamw", lr=1e-2, weight_decay=0.05)

    def ref(m):
        return torch.optim.AdamW(fusedoptim.param_groups(m, weight_decay=0.05), lr=1e-2, fused=True)

    a, b = _lightning_module(ours), _lightning_module(ref)
    ta = _fit(a, gradient_clip_val=0.5)
    _fit(b, gradient_clip_val=0.5)
    opt = ta.optimizers[0]
    assert type(opt) is fusedoptim.AdamW
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert int(opt.state[a.net[0].weight]["step"]) == 8
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_lightning_mixed_precision_clipping_goes_into_the_optimizer():
    """Our optimizers take GradScaler's unscale inside step
    (_step_supports_amp_scaling, like torch's fused ones). Lightning's
    MixedPrecision plugin ('16-mixed' and 'bf16-mixed') then skips its own
    scaler.unscale_ and refuses Trainer(gradient_clip_val=...) with a
    RuntimeError, even in bf16-mixed where no scaler exists (on CPU Lightning
    turns '16-mixed' into 'bf16-mixed'). What works: no gradient_clip_val and
    max_grad_norm= on the optimizer (clips by the unscaled global norm inside
    step); in fp32 that equals Lightning's own norm clipping."""
    _need("lightning")
    from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling

    assert _optimizer_handles_unscaling(fusedoptim.AdamW([nn.Parameter(torch.zeros(1))]))
    m = _lightning_module(lambda m: fusedoptim.AdamW(m.parameters(), lr=1e-2))
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        _fit(m, precision="bf16-mixed", gradient_clip_val=0.5)
    m = _lightning_module(lambda m: fusedoptim.AdamW(m.parameters(), lr=1e-2, max_grad_norm=0.5))
    before = [p.detach().clone() for p in m.parameters()]
    t = _fit(m, precision="bf16-mixed")
    assert type(t.precision_plugin).__name__ == "MixedPrecision"
    assert t.optimizers[0].param_groups[0]["max_grad_norm"] == 0.5
    assert any(not torch.equal(a, p) for a, p in zip(before, m.parameters()))
    assert all(torch.isfinite(p).all() for p in m.parameters())
    # fp32: max_grad_norm in the optimizer == Lightning's gradient_clip_val (norm) with torch's fused AdamW
    a = _lightning_module(lambda m: fusedoptim.AdamW(m.parameters(), lr=1e-2, max_grad_norm=0.5))
    b = _lightning_module(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, fused=True))
    _fit(a)
    _fit(b, gradient_clip_val=0.5)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=name)


# ---------------------------------------------------------------------- timm --

def test_create_optimizer_names_and_groups():
    """timm-style create_optimizer: every optimizer fusedoptim defines by its
    lower-case name; biases and norm weights without decay by default."""
    from fusedoptim import _catalog
    from fusedoptim.factory import optimizer_names

    names = optimizer_names()
    for cls_name, cls in _catalog.optimizer_classes().items():
        assert names[cls_name.lower()] is cls
    for n in ("sgd", "adam", "adamw", "adagrad", "rmsprop", "adamax", "nadam", "radam", "adadelta", "lion", "lamb"):
        assert n in names, n
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    for n in names:
        opt = fusedoptim.create_optimizer(model, n, lr=1e-3, weight_decay=0.01)
        assert isinstance(opt, names[n]), n
        decay = [p for g in opt.param_groups if g["weight_decay"] == 0.01 for p in g["params"]]
        assert {id(p) for p in decay} == {id(model[0].weight), id(model[2].weight)}, n
        assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    sgd = fusedoptim.create_optimizer(model, "SGD", lr=0.1)
    assert sgd.param_groups[0]["momentum"] == 0.9 and not sgd.param_groups[0]["nesterov"]
    assert len(sgd.param_groups) == 1  # weight_decay=0: nothing to split
    assert fusedoptim.create_optimizer(model, "nesterov", lr=0.1).param_groups[0]["nesterov"]
    flat = fusedoptim.create_optimizer(model, "adamw", weight_decay=0.01, filter_bias_and_bn=False)
    assert len(flat.param_groups) == 1 and flat.param_groups[0]["weight_decay"] == 0.01
    assert flat.param_groups[0]["lr"] == torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).param_groups[0]["lr"]
    given = fusedoptim.create_optimizer(list(model.parameters()), "adam", lr=1e-3, betas=(0.8, 0.9),
                                        state_dtype=torch.float32)
    assert given.param_groups[0]["betas"] == (0.8, 0.9) and given.param_groups[0]["state_dtype"] is torch.float32
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; known: adadelta, adagrad, adam, .*lion"):
        fusedoptim.create_optimizer(model, "adamm")
    with pytest.raises(TypeError, match="name must be a string"):
        fusedoptim.create_optimizer(model, fusedoptim.AdamW)


def test_new_optimizers_appear_in_create_optimizer_and_show_config(monkeypatch, capsys):
    """The name table and show_config are read from the package: an optimizer
    the package starts exporting (ADOPT, an 8-bit one) is creatable by name
    and listed, with no edit to either."""
    from fusedoptim.factory import optimizer_names

    class ADOPT(fusedoptim.AdamW):
        pass

    ADOPT.__module__ = "fusedoptim"
    monkeypatch.setattr(fusedoptim, "ADOPT", ADOPT, raising=False)
    assert optimizer_names()["adopt"] is ADOPT
    assert isinstance(fusedoptim.create_optimizer(nn.Linear(2, 2), "adopt", lr=1e-3), ADOPT)
    fusedoptim.show_config()
    out = capsys.readouterr().out
    assert any(line.startswith("ADOPT ") and "fused kernel" in line for line in out.splitlines())


def test_timm_models_train_with_create_optimizer():
    """timm itself is not needed: create_optimizer takes what timm's
    create_optimizer_v2 takes (model, name, lr, weight_decay, momentum,
    filter_bias_and_bn) and honours a model's no_weight_decay() as timm does."""
    class ViTish(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.proj = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)

        def no_weight_decay(self):
            return {"pos_embed"}

        def forward(self, x):
            return self.norm(self.proj(x + self.pos_embed))

    m = ViTish()
    opt = fusedoptim.create_optimizer(m, "lamb", lr=1e-3, weight_decay=0.05)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(m.proj.weight)}
    x = torch.randn(2, 4, 8)
    m(x).square().mean().backward()
    opt.step()
    assert int(opt.state[m.proj.weight]["step"]) == 1
