"""Safe loading of L-CAM checkpoints (a checkpoint is untrusted input).

A ``.ckpt`` file is a pickle; unpickling an arbitrary one can run code. Checkpoints are therefore
read with ``torch.load(..., weights_only=True)``, which only rebuilds tensors and plain containers
(dict, list, tuple, str, numbers, ...). The model is then rebuilt from the checkpoint's
hyperparameters (``LCAM(**hyper_parameters)``: the frozen backbone comes from its identity, never
from the file) and the head weights are loaded through the module's own checkpoint hook, which
checks that the backbone matches.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

import torch

if TYPE_CHECKING:  # pragma: no cover
    from lcam.module import LCAM

MapLocation = Union[str, torch.device, dict, Callable, None]

#: keys every checkpoint written by ``train.py`` has
REQUIRED_KEYS = ("state_dict", "hyper_parameters")


class CheckpointError(RuntimeError):
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


def _target_device(map_location: MapLocation, state: dict[str, Any]) -> torch.device:
    if isinstance(map_location, (str, torch.device)):
        return torch.device(map_location)
    tensor = next((v for v in state.values() if isinstance(v, torch.Tensor)), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _check_head(ckpt_state: dict[str, Any], model: "LCAM", path: Path) -> None:
    weight = ckpt_state.get("head.conv.weight")
    if not isinstance(weight, torch.Tensor):
        raise CheckpointError(f"{path} has no L-CAM head weights ('head.conv.weight' missing from its state_dict)")
    mine = model.head.conv.weight
    if tuple(weight.shape) != tuple(mine.shape):
        spec = model.backbone_spec
        ident = f"'{spec.name}' at layer '{spec.layer}'" if spec is not None else type(model.backbone).__name__
        raise CheckpointError(
            f"Checkpoint {path} does not match the requested model: its head explains {weight.shape[0]} classes from "
            f"{weight.shape[1]} feature channels, but backbone {ident} has {mine.shape[0]} classes and "
            f"{mine.shape[1]} channels. Load it with the backbone it was trained on."
        )


def load_lcam_checkpoint(path: str | os.PathLike, map_location: MapLocation = None, backbone_weights: str | None = None,
                         strict: bool = True, hparams_file: Any = None, cls: type | None = None, **overrides: Any) -> "LCAM":
    """Load an L-CAM model from a checkpoint written by ``train.py``, safely.

    Args:
        path: the ``.ckpt`` file.
        map_location: where to put the model: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``
            (or a dict/callable as for :func:`torch.load`). ``None`` means CPU, so GPU checkpoints open
            on machines without a GPU; move the model later with ``.to("cuda")``.
        backbone_weights: where the frozen backbone's weights come from, when not from the run that
            wrote the checkpoint: ``"imagenet"`` (torchvision/timm caches), a state-dict file, or
            ``"none"`` (random, for tests).
        strict: passed to ``load_state_dict``.
        hparams_file: not supported (hyperparameters come from the checkpoint); must be ``None``.
        cls: the class to build (default :class:`lcam.module.LCAM`).
        **overrides: hyperparameters that replace the checkpoint's (as in Lightning), e.g.
            ``backbone={...}`` to request a specific backbone; a backbone that differs from the
            checkpoint's raises an error naming both.

    Returns:
        The model in eval mode on the requested device.

    Raises:
        FileNotFoundError, CheckpointError, ValueError (mismatched backbone), BackboneWeightsError.
    """
    if hparams_file is not None:
        raise ValueError("hparams_file is not supported: hyperparameters are read from the checkpoint; "
                         "pass replacements as keyword arguments instead")
    if cls is None:
        from lcam.module import LCAM as cls  # noqa: N813 - default class
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
    from lcam.backbones import BackboneWeightsError

    try:
        model = cls(**hparams)
    except TypeError as err:
        raise CheckpointError(f"Cannot rebuild the model from {p}: {err} (hyper_parameters: {sorted(hparams)})") from None
    except BackboneWeightsError as err:
        raise BackboneWeightsError(f"{err} (when loading {p.name}: pass backbone_weights=... to choose the backbone's weights)") from None
    state = ckpt["state_dict"]
    model.on_load_checkpoint(ckpt)  # checks the backbone identity, re-inserts the frozen weights
    _check_head(state, model, p)
    model.load_state_dict(state, strict=strict)
    model.to(_target_device(map_location if map_location is not None else "cpu", state))
    model.eval()
    return model
