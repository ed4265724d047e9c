"""Per-sample min-max normalisation and resizing of saliency maps ``(B, h, w)``, in both orders."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def minmax_normalize(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-sample min-max normalisation of ``(B, h, w)`` maps to [0, 1].

    A constant map (e.g. all zeros after a ReLU) becomes all zeros, never NaN.
    """
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > eps, (flat - lo) / span.clamp(min=eps), torch.zeros_like(flat))
    return out.view_as(maps)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``(B, h, w)`` maps to ``(B, *size)`` (``align_corners=False``)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


def normalize_then_upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """CAM order (Grad-CAM, L-CAM): ``U(minmax(A))``, clamped to [0, 1]. ``(B, h, w) -> (B, *size)``."""
    return upsample(minmax_normalize(maps), size).clamp(0.0, 1.0)


def upsample_then_normalize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Score-CAM / RISE order: ``minmax(U(A))``. ``(B, h, w) -> (B, *size)``."""
    return minmax_normalize(upsample(maps, size))
