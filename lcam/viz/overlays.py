"""Saliency maps drawn over their images: colour maps, blends, boxes with labels (PIL and numpy)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from torch import Tensor


def to_numpy_image(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` float array in [0, 1]."""
    return image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def colorize(saliency: Tensor | np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``(H, W)`` map in [0, 1] -> ``(H, W, 3)`` RGB float array."""
    arr = saliency.detach().float().cpu().numpy() if isinstance(saliency, Tensor) else np.asarray(saliency)
    return colormaps[cmap](np.clip(arr, 0, 1))[..., :3]


def overlay(image: Tensor, saliency: Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a ``(3, H, W)`` image with its ``(H, W)`` map -> ``(H, W, 3)`` float array in [0, 1]."""
    return (1 - alpha) * to_numpy_image(image) + alpha * colorize(saliency, cmap)


def overlay_pil(image: Tensor, saliency: Tensor, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """:func:`overlay` as an 8-bit PIL image."""
    return Image.fromarray((overlay(image, saliency, alpha, cmap) * 255).round().astype(np.uint8))


def draw_box(img: Image.Image, box: Sequence[float], label: str, color: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """``img`` with a rectangle (x1, y1, x2, y2 pixels) and a label on a dark strip above it."""
    out = img.copy()
    draw = ImageDraw.Draw(out)
    x1, y1, x2, y2 = [float(v) for v in box]
    width = max(1, round(min(out.size) / 150))
    draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
    tx, ty = max(0.0, x1), max(0.0, y1 - 12)
    bbox = draw.textbbox((tx, ty), label)
    draw.rectangle(bbox, fill=(0, 0, 0))
    draw.text((tx, ty), label, fill=color)
    return out
