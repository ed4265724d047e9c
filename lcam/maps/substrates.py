"""Substrates: what a masked-out pixel becomes (mean colour, black, RISE's Gaussian blur)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: RISE's blurred substrate, ``gkern(klen=11, nsig=5)``: a Gaussian of sigma 5 px smoothing an
#: 11 x 11 delta (scipy's ``gaussian_filter``, whose tails beyond the window fold back into it)
RISE_BLUR_KERNEL = 11
RISE_BLUR_SIGMA = 5.0


def _reflect(index: int, size: int) -> int:
    """scipy.ndimage's ``mode='reflect'`` (``d c b a | a b c d | d c b a``) for one index."""
    while not 0 <= index < size:
        index = -index - 1 if index < 0 else 2 * size - index - 1
    return index


def gaussian_kernel1d(kernel_size: int, sigma: float, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32, fold_tails: bool = False) -> Tensor:
    """Normalised 1-D Gaussian ``(kernel_size,)`` (odd size, ``sigma`` in pixels).

    ``fold_tails=False``: the Gaussian sampled on the ``kernel_size`` taps and renormalised.
    ``fold_tails=True``: what RISE's ``gkern(klen, nsig)`` builds, i.e. scipy's
    ``gaussian_filter(delta, sigma)`` of a centred delta of ``kernel_size`` samples (``truncate=4``,
    ``mode='reflect'``): the Gaussian out to ``4 sigma`` with the taps beyond the window reflected
    back into it. The 2-D kernel is the outer product of this one with itself.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not fold_tails:
        x = torch.arange(kernel_size, device=device, dtype=torch.float64) - (kernel_size - 1) / 2
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        return (k / k.sum()).to(dtype)
    radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4.0
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    k = torch.zeros(kernel_size, dtype=torch.float64)
    centre = kernel_size // 2
    for offset, weight in zip(offsets.long().tolist(), taps):
        k[_reflect(centre + offset, kernel_size)] += weight
    return k.to(device=device, dtype=dtype)


def blur(images: Tensor, kernel_size: int = RISE_BLUR_KERNEL, sigma: float = RISE_BLUR_SIGMA,
         fold_tails: bool = False) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with replicate padding (a constant stays constant).

    ``sigma`` is in pixels; ``fold_tails`` as :func:`gaussian_kernel1d` (``True`` with the defaults
    is RISE's insertion substrate, ``gkern(11, 5)``). Works for any ``H, W`` (also smaller than the
    kernel). Returns the same shape and dtype.
    """
    c = images.shape[1]
    k = gaussian_kernel1d(kernel_size, sigma, images.device, images.dtype, fold_tails=fold_tails)
    pad = kernel_size // 2
    x = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)


#: what masked-out pixels become (perturbation explainers' masks, insertion/deletion)
SUBSTRATES = ("mean", "black", "blur")


def substrate_images(images: Tensor, kind: str, mean: Tensor | None = None,
                     kernel_size: int = RISE_BLUR_KERNEL, sigma: float = RISE_BLUR_SIGMA) -> Tensor:
    """What a masked-out pixel of ``images`` ``(B, 3, H, W)`` becomes, ``(B, 3, H, W)`` (a broadcast
    view for the constant substrates).

    ``mean``: the classifier's normalisation mean (3 values; the Score-CAM, SS-CAM and RISE
    reference codes mask the *normalised* input, so a masked pixel becomes 0 in that space, i.e.
    the mean colour); ``black``: 0 in [0, 1] pixel space; ``blur``: the image blurred with
    ``gkern(kernel_size, sigma)`` (RISE's insertion substrate by default).
    """
    if kind == "black":
        return torch.zeros((), device=images.device, dtype=images.dtype).expand_as(images)
    if kind == "blur":
        return blur(images, kernel_size, sigma, fold_tails=True)
    if kind != "mean":
        raise ValueError(f"Unknown substrate {kind!r}; valid: {list(SUBSTRATES)}")
    if mean is None:
        raise ValueError("substrate 'mean' needs the classifier's normalisation mean: pass a classifier with a "
                         "`mean` buffer, mean=(r, g, b), or choose another substrate")
    return torch.as_tensor(mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1).expand_as(images)
