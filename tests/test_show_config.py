"""show_config() is read from the code, so it cannot go stale."""
from __future__ import annotations

import torch

import fusedoptim
from fusedoptim import _base, _catalog, _config, _cuda


def test_every_optimizer_and_dtype_is_listed(capsys):
    fusedoptim.show_config()
    out = capsys.readouterr().out
    lines = out.splitlines()
    classes = _catalog.optimizer_classes()
    for name in ("SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta", "Lion", "LAMB"):
        assert name in classes
        row = next(line for line in lines if line.split(" ")[0] == name)
        assert row.split()[1:3] == ["fused", "kernel"], row  # CPU column
    cfg = _config.config()
    assert set(cfg["accelerated"]) == set(classes)
    for dt in ("float32", "float64", "bfloat16", "float16"):
        assert dt in cfg["kernel_dtypes"] and dt in cfg["backend_cpu"]
    assert "other dtypes: torch" not in out
    assert set(cfg["torch_classes"]) >= {"SparseAdam", "LBFGS", "ASGD"}
    assert not set(cfg["torch_classes"]) & set(classes)


def test_cuda_column_follows_the_cuda_backend():
    for row in _config.optimizer_table():
        cls = _catalog.optimizer_classes()[row["optimizer"]]
        served = _cuda.cuda_kind(cls) is not None
        assert (row["cuda"] == "fused kernel") == served, row


def test_dtypes_come_from_the_kernels_own_test(monkeypatch):
    real = _base.native_param
    monkeypatch.setattr(_base, "native_param", lambda p: real(p) and p.dtype != torch.float16)
    cfg = _config.config()
    assert cfg["kernel_dtypes"] == ["float32", "float64", "bfloat16"]
    assert "float16" not in cfg["backend_cpu"].replace("bfloat16", "")
