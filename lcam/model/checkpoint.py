"""Safe loading of L-CAM checkpoints (a checkpoint is untrusted input).

A ``.ckpt`` file is a pickle; unpickling an arbitrary one can run code. Checkpoints are therefore
read with ``torch.load(..., weights_only=True)``, which only rebuilds tensors and plain containers
(dict, list, tuple, str, numbers, ...). Two ways to use one:

* :func:`load_learned_head` - the frozen backbone (rebuilt from its identity, never from the file)
  and the attention head: all that explaining needs (the ``lcam`` explainer);
* :func:`load_module` - the whole LightningModule of a given class, ``cls(**hyper_parameters)``,
  with its weights loaded through its own checkpoint hook (``LCAM.load_from_checkpoint``).

This module never imports the LightningModule: the class is passed in.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import torch

from lcam.backbones import BackboneSpec, BackboneWeightsError, FrozenClassifier, build_backbone
from lcam.model.heads import AttentionHead
from lcam.runtime.errors import UserError

MapLocation = Union[str, torch.device, dict, Callable, None]

#: keys every checkpoint written by ``train.py`` has
REQUIRED_KEYS = ("state_dict", "hyper_parameters")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be (safely) loaded; the message says which file and why."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def read_checkpoint(path: str | os.PathLike, map_location: MapLocation = "cpu") -> dict[str, Any]:
    """Read a checkpoint file without executing code from it.

    Args:
        path: a ``.ckpt`` file written by ``train.py`` (Lightning).
        map_location: as for :func:`torch.load` (default CPU).

    Returns:
        The checkpoint dict (tensors and plain Python containers only).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file holds objects other than tensors and plain containers (refused,
            nothing from it is run), is truncated or is not a checkpoint.
    """
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {p}. Pass the .ckpt file written by train.py "
                                "(e.g. outputs/train/runs/<date>/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refusing to load checkpoint {p}: it contains Python objects other than tensors and plain "
            f"containers, which could run code when unpickled (blocked by torch.load(weights_only=True): "
            f"{_first_line(err)}). Only checkpoints written by lcam's train.py are supported."
        ) from None
    except Exception as err:  # noqa: BLE001 - truncated zip, wrong format, ...
        raise CheckpointError(f"Cannot read checkpoint {p}: {type(err).__name__}: {_first_line(err)}. "
                              "Is it a complete .ckpt file written by train.py?") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{p} is not an L-CAM checkpoint written by train.py: expected keys {list(REQUIRED_KEYS)}, found {found}")
    return ckpt


#: the keys that make two backbones the same classifier for a head (weights aside)
IDENTITY_KEYS = ("name", "layer", "source")


def _target_device(map_location: MapLocation, state: dict[str, Any]) -> torch.device:
    if isinstance(map_location, (str, torch.device)):
        return torch.device(map_location)
    tensor = next((v for v in state.values() if isinstance(v, torch.Tensor)), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def same_backbone(a: FrozenClassifier, b: FrozenClassifier) -> bool:
    """True when two classifiers have the same identity (name, layer, source, weights)."""
    if a is b:
        return True
    if a.spec is None or b.spec is None:
        return False
    return all(getattr(a.spec, k) == getattr(b.spec, k) for k in (*IDENTITY_KEYS, "weights"))


def saved_backbone(ckpt: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The backbone identity a checkpoint was trained on."""
    saved = ckpt.get("lcam_backbone") or ckpt["hyper_parameters"].get("backbone")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} does not record its backbone (hyper_parameters['backbone'] missing); "
                              "pass backbone={'name': ..., 'layer': ...} explicitly")
    return dict(saved)


def check_identity(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming both identities when the requested backbone is not the saved one."""
    if any(saved.get(k) != requested.get(k) for k in IDENTITY_KEYS if requested.get(k) is not None):
        raise ValueError(
            "Checkpoint backbone does not match this model: checkpoint has "
            f"{ {k: saved.get(k) for k in IDENTITY_KEYS} }, model has { {k: requested.get(k) for k in IDENTITY_KEYS} }. "
            "Use the same backbone config (e.g. the same +experiment=...) as the run that wrote it."
        )


def _check_head(weight: Any, backbone: FrozenClassifier, path: Path) -> None:
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise CheckpointError(f"{path} has no L-CAM head weights ('head.conv.weight' missing from its state_dict)")
    k, c = backbone.feature_channels, backbone.num_classes
    if (weight.shape[0], weight.shape[1]) != (c, k):
        spec = backbone.spec
        ident = f"'{spec.name}' at layer '{spec.layer}'" if spec is not None else type(backbone).__name__
        raise CheckpointError(
            f"Checkpoint {path} does not match the requested model: its head explains {weight.shape[0]} classes from "
            f"{weight.shape[1]} feature channels, but backbone {ident} has {c} classes and "
            f"{k} channels. Load it with the backbone it was trained on."
        )


@dataclass
class LearnedHead:
    """What explaining with a checkpoint needs: the frozen classifier, the head and the variant."""

    backbone: FrozenClassifier
    head: AttentionHead
    variant: str
    path: Path


def load_learned_head(path: str | os.PathLike, backbone: FrozenClassifier | Mapping[str, Any] | None = None,
                      backbone_weights: str | None = None, map_location: MapLocation = None) -> LearnedHead:
    """The backbone and the trained attention head of an L-CAM checkpoint, loaded safely.

    Args:
        path: the ``.ckpt`` file written by ``train.py``.
        backbone: ``None`` (rebuild the checkpoint's backbone), a :class:`FrozenClassifier` to share
            (it must be the checkpoint's: same name, layer, source and weights) or a backbone config
            that must agree with the checkpoint's (name, layer, source).
        backbone_weights: where a rebuilt backbone's weights come from (``imagenet``, a file, ``none``).
        map_location: device of a rebuilt backbone and of the head (default CPU; a shared backbone
            keeps its device).

    Raises:
        FileNotFoundError, CheckpointError, ValueError (another backbone), BackboneWeightsError.
    """
    p = Path(os.path.expanduser(str(path)))
    ckpt = read_checkpoint(p, map_location="cpu")
    saved = saved_backbone(ckpt, p)
    if isinstance(backbone, FrozenClassifier):
        if backbone.spec is None or any(getattr(backbone.spec, k) != saved.get(k) for k in (*IDENTITY_KEYS, "weights")):
            raise ValueError(f"The L-CAM checkpoint {p.name} was trained on {BackboneSpec.from_dict(saved)} but the classifier "
                             f"to explain is {backbone.spec}; explain it with the checkpoint's backbone")
        model = backbone
    else:
        spec = dict(saved)
        if backbone is not None:
            requested = dict(backbone)
            check_identity(saved, requested)
            spec.update({k: v for k, v in requested.items() if v is not None})
        if backbone_weights is not None:
            spec["weights"] = str(backbone_weights)
        try:
            model = build_backbone(spec)
        except BackboneWeightsError as err:
            raise BackboneWeightsError(f"{err} (when loading {p.name}: pass backbone_weights=... to choose the backbone's weights)") from None
        model.to(_target_device("cpu" if map_location is None else map_location, {}))
    state = ckpt["state_dict"]
    weight = state.get("head.conv.weight")
    _check_head(weight, model, p)
    head = AttentionHead(int(weight.shape[1]), int(weight.shape[0]))
    head.load_state_dict({"conv.weight": weight, "conv.bias": state["head.conv.bias"]})
    head.to(model.mean.device).eval()
    for param in head.parameters():
        param.requires_grad_(False)
    return LearnedHead(model, head, str(ckpt["hyper_parameters"].get("variant", "img")), p)


def load_module(path: str | os.PathLike, cls: type, map_location: MapLocation = None, backbone_weights: str | None = None,
                strict: bool = True, hparams_file: Any = None, **overrides: Any) -> Any:
    """Load a whole LightningModule of class ``cls`` (e.g. :class:`lcam.model.module.LCAM`) from a checkpoint, safely.

    Args:
        path: the ``.ckpt`` file.
        cls: the class to build, ``cls(**hyper_parameters)``; it must provide ``on_load_checkpoint``
            (checks the backbone identity, re-inserts the frozen weights) and ``backbone``.
        map_location: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device`` (or a dict/callable as for
            :func:`torch.load`). ``None`` means CPU, so GPU checkpoints open on machines without a GPU.
        backbone_weights: where the frozen backbone's weights come from, when not from the run that
            wrote the checkpoint: ``"imagenet"``, a state-dict file, or ``"none"`` (random, for tests).
        strict: passed to ``load_state_dict``.
        hparams_file: not supported (hyperparameters come from the checkpoint); must be ``None``.
        **overrides: hyperparameters that replace the checkpoint's (as in Lightning), e.g.
            ``backbone={...}``; a backbone that differs from the checkpoint's raises an error naming both.

    Returns:
        The model in eval mode on the requested device.

    Raises:
        FileNotFoundError, CheckpointError, ValueError (mismatched backbone), BackboneWeightsError.
    """
    if hparams_file is not None:
        raise ValueError("hparams_file is not supported: hyperparameters are read from the checkpoint; "
                         "pass replacements as keyword arguments instead")
    p = Path(os.path.expanduser(str(path)))
    ckpt = read_checkpoint(p, map_location="cpu" if map_location is None else map_location)
    hparams = dict(ckpt["hyper_parameters"])
    hparams.update(overrides)
    backbone = hparams.get("backbone")
    if backbone is None:
        raise CheckpointError(f"{p} does not record its backbone (hyper_parameters['backbone'] missing); "
                              "pass backbone={'name': ..., 'layer': ...} explicitly")
    if isinstance(backbone, dict) and backbone_weights is not None:
        hparams["backbone"] = {**backbone, "weights": str(backbone_weights)}
    try:
        model = cls(**hparams)
    except TypeError as err:
        raise CheckpointError(f"Cannot rebuild the model from {p}: {err} (hyper_parameters: {sorted(hparams)})") from None
    except BackboneWeightsError as err:
        raise BackboneWeightsError(f"{err} (when loading {p.name}: pass backbone_weights=... to choose the backbone's weights)") from None
    state = ckpt["state_dict"]
    model.on_load_checkpoint(ckpt)  # checks the backbone identity, re-inserts the frozen weights
    _check_head(state.get("head.conv.weight"), model.backbone, p)
    model.load_state_dict(state, strict=strict)
    model.to(_target_device(map_location if map_location is not None else "cpu", state))
    model.eval()
    return model
