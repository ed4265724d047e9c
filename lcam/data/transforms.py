"""Image transforms: images stay in [0, 1] (normalisation is inside the backbone wrapper)."""
from __future__ import annotations

from typing import Any

from torchvision import transforms as T

from lcam.runtime.io import InputError

_INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def _mode(interpolation: str | None) -> T.InterpolationMode:
    try:
        return _INTERPOLATIONS[interpolation or "bilinear"]
    except KeyError:
        raise InputError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got '{interpolation}'") from None


def train_transform(resize: int = 256, crop: int = 224, interpolation: str = "bilinear", hflip: bool = True) -> T.Compose:
    """Shorter side ``resize``, random ``crop`` x ``crop``, optional flip -> tensor ``(3, crop, crop)`` in [0, 1]."""
    steps = [T.Resize(resize, interpolation=_mode(interpolation), antialias=True), T.RandomCrop(crop)]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor()])


def eval_transform(resize: int | None = 256, crop: int | None = 224, interpolation: str | None = "bilinear") -> T.Compose:
    """Shorter side ``resize``, centre ``crop`` -> tensor ``(3, crop, crop)`` in [0, 1].

    ``crop=None`` keeps the whole image (shorter side ``resize``); ``resize=None, crop=None`` keeps
    the file's own size. The same transform serves evaluation, the explain API and the CLI.
    """
    steps: list[Any] = []
    if resize:
        steps.append(T.Resize(int(resize), interpolation=_mode(interpolation), antialias=True))
    if crop:
        steps.append(T.CenterCrop(int(crop)))
    _mode(interpolation)  # an unknown name fails even when nothing is resized
    return T.Compose([*steps, T.ToTensor()])
