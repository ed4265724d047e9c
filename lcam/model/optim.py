"""The head's optimiser and learning-rate schedule, built from ``_target_`` entries.

``model.optimizer`` and ``model.scheduler`` name any ``torch.optim`` class (or any importable
one) by ``_target_``; the other keys are its arguments. Two keys are lcam's own:

* ``model.optimizer.bias_lr_mult``: the biases' rate is ``lr * bias_lr_mult`` (the paper: x2);
* ``model.scheduler.interval`` (``epoch`` | ``step``) and ``model.scheduler.monitor`` (the metric
  a ``ReduceLROnPlateau`` watches); ``model.scheduler._target_: null`` keeps the rate constant.

The defaults are the paper's: SGD (Nesterov momentum 0.9, weight decay 5e-4) and a per-epoch
exponential decay. Swapping the class keeps the rest of the config usable: a default setting the
new class does not take (SGD's ``momentum``/``nesterov`` for AdamW, ``gamma`` for a cosine
schedule) is dropped with a note; any other key it does not take is an error naming it.

    python train.py model.optimizer._target_=torch.optim.AdamW model.optimizer.lr=1e-3
    python train.py model.scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR +model.scheduler.T_max=8
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Iterable, Mapping

import torch
from pytorch_lightning.utilities import rank_zero_info

SGD = "torch.optim.SGD"
EXPONENTIAL = "torch.optim.lr_scheduler.ExponentialLR"
#: the paper's settings (checkpoints written before ``_target_`` existed hold these keys without it)
DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": SGD, "lr": 0.01, "bias_lr_mult": 2.0, "momentum": 0.9, "nesterov": True,
                                     "weight_decay": 5e-4}
DEFAULT_SCHEDULER: dict[str, Any] = {"_target_": EXPONENTIAL, "gamma": 0.75, "interval": "epoch"}
INTERVALS = ("epoch", "step")


def _locate(target: Any, key: str) -> type:
    if not isinstance(target, str) or not target:
        raise ValueError(f"{key}._target_ must name a class, e.g. {key}._target_=torch.optim.AdamW; got {target!r}")
    module_name, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError, ValueError):
        found = None
    if not isinstance(found, type):
        raise ValueError(f"{key}._target_={target}: no such class (e.g. {key}._target_=torch.optim.AdamW)")
    return found


def _accepted(cls: type) -> tuple[set[str], bool]:
    """The keyword arguments of ``cls`` and whether it takes ``**kwargs``."""
    params = inspect.signature(cls).parameters.values()
    return {p.name for p in params}, any(p.kind is p.VAR_KEYWORD for p in params)


def _arguments(cls: type, settings: Mapping[str, Any], defaults: Mapping[str, Any], key: str, positional: Iterable[str]) -> dict[str, Any]:
    """``settings`` minus the paper defaults ``cls`` does not take (with a note); other unknown keys raise."""
    names, var_kw = _accepted(cls)
    if var_kw:
        return dict(settings)
    names -= set(positional)
    unknown = [k for k in settings if k not in names]
    dropped = [k for k in unknown if k in defaults]
    wrong = [k for k in unknown if k not in defaults]
    if wrong:
        raise ValueError(f"{key}.{wrong[0]} is not an argument of {cls.__qualname__} "
                         f"(it takes: {', '.join(sorted(names))}); remove it with ~{key}.{wrong[0]}")
    if dropped:
        rank_zero_info(f"{key}: {cls.__qualname__} takes no {', '.join(dropped)}; "
                       f"{'that default is' if len(dropped) == 1 else 'those defaults are'} not used")
    return {k: v for k, v in settings.items() if k not in dropped}


def build_optimizer(settings: Mapping[str, Any], weights: list[torch.Tensor], biases: list[torch.Tensor],
                    key: str = "model.optimizer") -> torch.optim.Optimizer:
    """The optimiser of ``settings`` (``_target_``, ``lr``, ``bias_lr_mult`` and the class's arguments)
    over two parameter groups: ``head.weight`` at ``lr`` and ``head.bias`` at ``lr * bias_lr_mult``."""
    cfg = {**DEFAULT_OPTIMIZER, **dict(settings)}
    cls = _locate(cfg.pop("_target_"), key)
    try:
        lr, bias_mult = float(cfg.pop("lr")), float(cfg.pop("bias_lr_mult"))
    except (TypeError, ValueError):
        raise ValueError(f"{key}.lr and {key}.bias_lr_mult must be numbers") from None
    groups = [{"params": weights, "lr": lr, "name": "head.weight"}]
    if biases:
        groups.append({"params": biases, "lr": lr * bias_mult, "name": "head.bias"})
    kwargs = _arguments(cls, cfg, DEFAULT_OPTIMIZER, key, positional=("params", "lr"))
    try:
        return cls(groups, lr=lr, **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: {cls.__qualname__}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed: {err}") from None


def build_scheduler(settings: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer,
                    key: str = "model.scheduler") -> dict[str, Any] | None:
    """Lightning's ``lr_scheduler`` entry for ``settings``, or ``None`` when ``_target_`` is null."""
    cfg = {**DEFAULT_SCHEDULER, **dict(settings or {})}
    target = cfg.pop("_target_")
    interval, monitor = cfg.pop("interval", "epoch"), cfg.pop("monitor", None)
    if interval not in INTERVALS:
        raise ValueError(f"{key}.interval must be one of {INTERVALS}, got {interval!r}")
    if target in (None, "", "null", "none"):
        return None
    cls = _locate(target, key)
    kwargs = _arguments(cls, cfg, DEFAULT_SCHEDULER, key, positional=("optimizer",))
    try:
        scheduler = cls(optimizer, **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: {cls.__qualname__}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed: {err}") from None
    entry: dict[str, Any] = {"scheduler": scheduler, "interval": interval}
    if monitor:
        entry["monitor"] = monitor
    return entry
