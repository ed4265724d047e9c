"""Image transforms: images stay in [0, 1] (normalisation is inside the backbone wrapper)."""
from __future__ import annotations

from torchvision import transforms as T

_INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def _mode(interpolation: str) -> T.InterpolationMode:
    try:
        return _INTERPOLATIONS[interpolation]
    except KeyError:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got '{interpolation}'") from None


def train_transform(resize: int = 256, crop: int = 224, interpolation: str = "bilinear", hflip: bool = True) -> T.Compose:
    """Shorter side ``resize``, random ``crop`` x ``crop``, optional flip -> tensor ``(3, crop, crop)`` in [0, 1]."""
    steps = [T.Resize(resize, interpolation=_mode(interpolation), antialias=True), T.RandomCrop(crop)]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor()])


def eval_transform(resize: int = 256, crop: int = 224, interpolation: str = "bilinear") -> T.Compose:
    """Shorter side ``resize``, centre ``crop`` -> tensor ``(3, crop, crop)`` in [0, 1]."""
    return T.Compose([T.Resize(resize, interpolation=_mode(interpolation), antialias=True), T.CenterCrop(crop), T.ToTensor()])
