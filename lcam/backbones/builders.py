"""Build a :class:`FrozenClassifier` from a backbone identity (torchvision or timm)."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torchvision
from torch import nn

from lcam.backbones.frozen import BackboneSpec, FrozenClassifier
from lcam.backbones.split import SplitError, default_layer, split_model
from lcam.backbones.weights import (
    BackboneWeightsError,
    TimmWeights,
    host_reachable,
    hub_offline,
    load_state_dict_file,
    offline_weights_file,
    timm_weights_location,
    torch_hub_checkpoint_dir,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 20.0
#: seconds to find out that a download server cannot be reached (then fail at once, no retries)
REACHABLE_TIMEOUT_S = 3.0


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's order (one place: :mod:`lcam.data.classes`)."""
    from lcam.data.classes import imagenet_class_names as names

    return list(names())


def resolve_source(name: str, source: str = "auto") -> str:
    """``"torchvision"`` or ``"timm"`` for ``name``; ``auto`` prefers torchvision."""
    if source in ("torchvision", "timm"):
        return source
    if source != "auto":
        raise ValueError(f"backbone.source must be auto, torchvision or timm, got '{source}'")
    if name in torchvision.models.list_models(module=torchvision.models):
        return "torchvision"
    import timm

    if timm.is_model(name):
        return "timm"
    raise ValueError(f"Unknown backbone '{name}': neither a torchvision classification model nor a timm model (see timm.list_models())")


@contextmanager
def download_timeout(seconds: float) -> Iterator[None]:
    """Give up a download after ``seconds`` without an answer (offline machines fail fast)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _missing_weights(spec: BackboneSpec, expected: str, why: str) -> BackboneWeightsError:
    """torchvision: ``expected`` is the file name torchvision downloads into the torch hub cache."""
    return BackboneWeightsError(
        f"No pretrained weights for backbone '{spec.name}' (torchvision): {expected} is not in the torch hub cache "
        f"({torch_hub_checkpoint_dir()}) and {why}. Put the file there, or pass it with "
        f"backbone.weights=/path/to/{expected}, or use backbone.weights=none for random weights."
    )


def _missing_timm_weights(spec: BackboneSpec, where: TimmWeights, why: str) -> BackboneWeightsError:
    fetch = (f" (on a machine with network: huggingface-cli download {where.repo_id} {where.filenames[0]}, then copy "
             f"{where.cache_dir.name}/ into the cache)" if where.source == "hf-hub" else "")
    return BackboneWeightsError(
        f"No pretrained weights for backbone '{spec.name}' (timm, {where.model}): {where.describe()}; it is not there "
        f"and {why}. Provide the file{fetch}, or pass it with backbone.weights=/path/to/{where.filenames[0]}, "
        f"or use backbone.weights=none for random weights."
    )


def _cannot_download(url: str, offline: bool = False) -> str | None:
    """Why a download from ``url`` cannot work right now (offline switch, server unreachable), else None."""
    if offline:
        return "downloads are switched off (HF_HUB_OFFLINE is set)"
    if not host_reachable(url, REACHABLE_TIMEOUT_S):
        return f"{url.split('/')[2] if '//' in url else url} cannot be reached (offline?)"
    return None


#: ``weights=imagenet`` for the L-CAM paper's backbones: torchvision's original weights, as the
#: paper used them (``pretrained=True``). ResNet-50's DEFAULT (V2) was trained with label smoothing,
#: which changes every confidence and so every AD/IC.
PAPER_WEIGHTS = {"vgg16": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V1"}


def classifier_weights(enum: Any) -> list[Any]:
    """The members of a torchvision weights ``enum`` with a usable classifier.

    ``IMAGENET1K_FEATURES`` files (VGG-16's) hold trained convolutions but an untrained classifier.
    """
    return [w for w in enum if "FEATURES" not in w.name]


def imagenet_weights(name: str, enum: Any) -> Any:
    """The weights ``weights=imagenet`` means for torchvision model ``name``.

    The paper's backbones get :data:`PAPER_WEIGHTS`; other models the first classifier weights
    already in the torch hub cache, else the enum's DEFAULT.
    """
    if name in PAPER_WEIGHTS:
        return enum[PAPER_WEIGHTS[name]]
    usable = classifier_weights(enum)
    cache = torch_hub_checkpoint_dir()
    for w in usable:
        if (cache / w.url.rsplit("/", 1)[-1]).is_file():
            return w
    return enum.DEFAULT if enum.DEFAULT in usable else usable[0]


def _torchvision_model(spec: BackboneSpec) -> tuple[nn.Module, dict[str, Any]]:
    name = spec.name
    meta: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bilinear"}
    if spec.weights == "none":
        return torchvision.models.get_model(name, weights=None), meta
    enum = torchvision.models.get_model_weights(name)
    if spec.weights == "imagenet" or spec.weights in enum.__members__:
        offline_weights_file("torchvision", name)  # places packaged files into the hub cache
        if "FEATURES" in spec.weights:
            raise BackboneWeightsError(
                f"backbone.weights={spec.weights}: that file holds trained convolutions but an untrained classifier, "
                f"so there is nothing to explain. Use backbone.weights=imagenet or one of "
                f"{[w.name for w in classifier_weights(enum)]}")
        weights = enum[spec.weights] if spec.weights in enum.__members__ else imagenet_weights(name, enum)
        fname = weights.url.rsplit("/", 1)[-1]
        if not (torch_hub_checkpoint_dir() / fname).is_file():
            why = _cannot_download(weights.url)
            if why:
                raise _missing_weights(spec, fname, why)
        try:
            with download_timeout(DOWNLOAD_TIMEOUT_S):
                model = torchvision.models.get_model(name, weights=weights)
        except (OSError, RuntimeError) as err:
            raise _missing_weights(spec, fname, f"the download failed ({type(err).__name__}: {err})") from err
        tf = weights.transforms()
        meta.update(mean=tuple(tf.mean), std=tuple(tf.std), interpolation=tf.interpolation.value)
        return model, meta
    model = torchvision.models.get_model(name, weights=None)
    model.load_state_dict(load_state_dict_file(spec.weights))
    return model, meta


def _timm_model(spec: BackboneSpec) -> tuple[nn.Module, dict[str, Any]]:
    import timm

    kwargs: dict[str, Any] = {}
    pretrained = spec.weights != "none"
    where: TimmWeights | None = None
    if spec.weights == "imagenet":
        local = offline_weights_file("timm", spec.name)
        if local is None:
            # timm would retry the hub ~20 times over a minute when offline: look in its cache
            # first, and fail at once when the file is not there and cannot be downloaded
            where = timm_weights_location(spec.name)
            if where is not None and where.cached is not None:
                local = where.cached
            elif where is not None:
                why = _cannot_download(where.url, hub_offline(where.source))
                if why:
                    raise _missing_timm_weights(spec, where, why)
        if local is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(local)}
    elif pretrained:
        path = Path(spec.weights).expanduser()
        if not path.is_file():
            raise BackboneWeightsError(f"Weights file not found: {path}. Pass an existing file with backbone.weights=/path/to/file")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        with download_timeout(DOWNLOAD_TIMEOUT_S):
            model = timm.create_model(spec.name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as err:
        if not pretrained or where is None:
            raise
        raise _missing_timm_weights(spec, where, f"the download failed ({type(err).__name__}: {err})") from err
    cfg = model.pretrained_cfg
    meta = {"mean": tuple(cfg.get("mean", IMAGENET_MEAN)), "std": tuple(cfg.get("std", IMAGENET_STD)),
            "interpolation": cfg.get("interpolation", "bilinear")}
    return model, meta


def build_backbone(spec: BackboneSpec | dict[str, Any] | str, device: torch.device | str | None = None) -> FrozenClassifier:
    """Build the frozen classifier described by ``spec``.

    Args:
        spec: a :class:`BackboneSpec`, its dict form (Hydra ``backbone`` config) or a model name.
        device: where to put it (default CPU).

    Returns:
        A :class:`FrozenClassifier`; its ``spec`` has ``source``, ``layer``, ``mean``, ``std`` and
        ``interpolation`` filled in, so it can be rebuilt exactly from a checkpoint.

    Raises:
        BackboneWeightsError: pretrained weights are unavailable (message says how to provide them).
        SplitError: the layer does not exist or the model cannot be split there.
    """
    if isinstance(spec, str):
        spec = BackboneSpec(name=spec)
    elif isinstance(spec, dict):
        spec = BackboneSpec.from_dict(dict(spec))
    source = resolve_source(spec.name, spec.source)
    spec = BackboneSpec(**{**spec.to_dict(), "source": source})
    if spec.weights not in ("imagenet", "none") and not spec.weights.isupper() and not os.path.isfile(os.path.expanduser(spec.weights)):
        raise BackboneWeightsError(f"Weights file not found: {spec.weights}. Pass an existing file with backbone.weights=/path/to/file, or backbone.weights=imagenet|none")
    model, meta = (_torchvision_model if source == "torchvision" else _timm_model)(spec)
    model.eval()
    layer = spec.layer or default_layer(model)
    try:
        features, classify = split_model(model, layer)
    except SplitError as err:
        raise SplitError(f"Backbone '{spec.name}': {err}") from None
    mean = tuple(spec.mean) if spec.mean is not None else meta["mean"]
    std = tuple(spec.std) if spec.std is not None else meta["std"]
    interpolation = spec.interpolation or meta["interpolation"]
    full = BackboneSpec(**{**spec.to_dict(), "layer": layer, "mean": list(mean), "std": list(std), "interpolation": interpolation})
    num_classes = getattr(model, "num_classes", None) or 1000
    names = imagenet_class_names() if num_classes == 1000 else None
    backbone = FrozenClassifier(features, classify, mean, std, spec=full, class_names=names)
    return backbone.to(device) if device is not None else backbone
