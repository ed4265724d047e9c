"""Saliency-map utilities shared by L-CAM, every explainer and the metrics: normalisation, resizing, blur."""
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


#: RISE's blurred substrate, ``gkern(klen=11, nsig=5)``: 11 taps over +-5 sigma -> sigma = 1.1 px
RISE_BLUR_KERNEL = 11
RISE_BLUR_SIGMA = 1.1


def gaussian_kernel1d(kernel_size: int, sigma: float, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 1-D Gaussian ``(kernel_size,)`` (odd size, ``sigma`` in pixels)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = torch.arange(kernel_size, device=device, dtype=dtype) - (kernel_size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(images: Tensor, kernel_size: int = RISE_BLUR_KERNEL, sigma: float = RISE_BLUR_SIGMA) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with replicate padding (a constant stays constant).

    ``sigma`` is in pixels; the defaults are RISE's insertion substrate. Works for any ``H, W``
    (also smaller than the kernel). Returns the same shape and dtype.
    """
    c = images.shape[1]
    k = gaussian_kernel1d(kernel_size, sigma, images.device, images.dtype)
    pad = kernel_size // 2
    x = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)
