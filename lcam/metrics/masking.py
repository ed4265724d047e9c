"""Per-sample saliency thresholding and explanation images (as L-CAM evaluates, https://arxiv.org/abs/2209.11189)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def keep_top_fraction(maps: Tensor, fraction: float) -> Tensor:
    """Keep the ``fraction`` highest-valued pixels of *each* map, zero the rest.

    Kept pixels keep their saliency value (not binarised), as in the AD/IC protocol.
    The threshold is computed per sample (unlike the public L-CAM code, which thresholds
    over the whole batch).

    Args:
        maps: ``(B, H, W)`` saliency maps.
        fraction: in (0, 1]; ``1.0`` returns ``maps`` unchanged.

    Returns:
        ``(B, H, W)`` thresholded maps. Ties at the threshold are all kept.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return maps
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    k = max(1, math.ceil(fraction * flat.shape[1]))
    thr = flat.topk(k, dim=1).values[:, -1:]  # (B, 1) k-th largest value per sample
    return torch.where(flat >= thr, flat, torch.zeros_like(flat)).view_as(maps)


def explanation_images(images: Tensor, maps: Tensor, fractions: Sequence[float]) -> Tensor:
    """Explanation images ``x (.) T_v(SM)`` for every threshold, stacked threshold-major.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        maps: ``(B, H, W)`` saliency in [0, 1] at image resolution.
        fractions: T thresholds, e.g. ``(1.0, 0.5, 0.15)``.

    Returns:
        ``(T * B, 3, H, W)``: rows ``t*B:(t+1)*B`` are masked with threshold ``fractions[t]``.
    """
    masked = [images * keep_top_fraction(maps, v).unsqueeze(1).to(images.dtype) for v in fractions]
    return torch.cat(masked, dim=0)
