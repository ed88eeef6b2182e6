"""`fusedoptim.create_optimizer`: an optimizer by name, timm-style.

    opt = fusedoptim.create_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)

The names are the lower-case class names of every optimizer fusedoptim
defines (read from the package at call time: a new optimizer is creatable by
name as soon as the package exports it), plus timm's SGD aliases
``"momentum"`` (SGD with momentum) and ``"nesterov"`` (SGD, Nesterov).
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch
from torch import nn

from . import _catalog
from .recipes import param_groups

# timm's spellings for SGD variants: name -> (class name, extra kwargs)
_ALIASES = {"momentum": ("SGD", {"nesterov": False}), "nesterov": ("SGD", {"nesterov": True})}


def optimizer_names() -> dict:
    """{name: class} of what create_optimizer accepts (lower-case)."""
    classes = _catalog.optimizer_classes()
    names = {n.lower(): c for n, c in classes.items()}
    for alias, (target, _) in _ALIASES.items():
        if target in classes and alias not in names:
            names[alias] = classes[target]
    return names


def _accepts(cls, name: str) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def create_optimizer(
    model_or_params: nn.Module | Iterable,
    name: str = "sgd",
    lr: float | None = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    filter_bias_and_bn: bool = True,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """A fusedoptim optimizer by name, the way timm's ``create_optimizer_v2`` makes one.

    Args:
        model_or_params: an ``nn.Module``, or parameters / param groups as any
            torch optimizer takes them.
        name: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"lion"``, ``"lamb"``, ...:
            the lower-case name of any fusedoptim optimizer
            (``fusedoptim.factory.optimizer_names()`` lists them), or
            ``"momentum"`` / ``"nesterov"`` (SGD). Case-insensitive.
        lr: learning rate; None keeps the optimizer's own default.
        weight_decay: weight decay (the optimizer's own kind: L2 for SGD/Adam,
            decoupled for AdamW/Lion/LAMB).
        momentum: passed to the optimizers that take ``momentum`` (SGD,
            RMSprop), as timm does (so ``"rmsprop"`` gets 0.9 here, torch's
            default is 0); the others ignore it.
        filter_bias_and_bn: with a model and ``weight_decay > 0``, put biases,
            norm weights and other 1-d params in a group without weight decay
            (``fusedoptim.param_groups``: also honours ``model.no_weight_decay()``).
        **kwargs: any other argument of the optimizer (``betas``, ``eps``,
            ``state_dtype``, ``master_weights``, ``max_grad_norm``, ...).

    Raises ValueError for an unknown name (listing the known ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'adamw', got {type(name).__name__}")
    names = optimizer_names()
    key = name.strip().lower()
    if key not in names:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(names))}")
    cls = names[key]
    args = dict(_ALIASES[key][1]) if key in _ALIASES and cls.__name__ == _ALIASES[key][0] else {}
    if lr is not None:
        args["lr"] = lr
    if _accepts(cls, "momentum"):
        args["momentum"] = momentum
    args.update(kwargs)
    if isinstance(model_or_params, nn.Module):
        if weight_decay and filter_bias_and_bn:
            params = param_groups(model_or_params, weight_decay)
            weight_decay = 0.0  # each group carries its own
        else:
            params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = model_or_params
    return cls(params, weight_decay=weight_decay, **args)
