"""Similarity of two saliency maps, image by image: Pearson, Spearman, SSIM and HOG correlation.

These are the similarities of the sanity checks of Adebayo et al. (2018), "Sanity checks for
saliency maps", NeurIPS (https://arxiv.org/abs/1810.03292): Spearman rank correlation, the
structural similarity index (SSIM) and the Pearson correlation of the histograms of oriented
gradients (HOG) of the two maps. Every function takes two batches of maps ``(B, H, W)`` (or
``(B, ...)``, flattened per image where the measure allows) and returns ``(B,)`` float64 on
the inputs' device; an image on which the measure is undefined (a constant map for the
correlations) gets NaN.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"a and b must be (B, ...) of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.detach().reshape(a.shape[0], -1).double(), b.detach().reshape(b.shape[0], -1).double()


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per row: ``(B, ...)``, ``(B, ...)`` -> ``(B,)`` float64 in [-1, 1].

    ``r = sum (a - mean a)(b - mean b) / sqrt(sum (a - mean a)^2 sum (b - mean b)^2)`` over the
    flattened values of each image; NaN where either row is constant (zero variance).
    """
    x, y = _pair(a, b)
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    den = (x.square().sum(1) * y.square().sum(1)).sqrt()
    r = (x * y).sum(1) / den
    r = torch.where(den > 0, r, torch.full_like(r, float("nan")))
    return r.clamp(-1.0, 1.0)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..N per row, ties given the mean of the ranks they span (scipy's ``rankdata(method="average")``).

    Args:
        values: ``(B, N)``.

    Returns:
        ``(B, N)`` float64 ranks.
    """
    v = values.detach().double().contiguous()
    s = v.sort(dim=1).values
    below = torch.searchsorted(s, v, right=False)   # values strictly smaller
    upto = torch.searchsorted(s, v, right=True)     # values smaller or equal
    return (below + upto + 1).double() / 2.0


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per image: ``(B, H, W)``, ``(B, H, W)`` -> ``(B,)`` float64 in [-1, 1].

    The Pearson correlation of the average ranks (ties get the mean rank) of the flattened maps,
    as ``scipy.stats.spearmanr``; NaN where a map is constant.
    """
    x, y = _pair(a, b)
    return pearson(average_ranks(x), average_ranks(y))


def ssim_similarity(a: Tensor, b: Tensor, data_range: float = 1.0, **kwargs: Any) -> Tensor:
    """Structural similarity (SSIM) per image: ``(B, H, W)``, ``(B, H, W)`` -> ``(B,)`` float64.

    scikit-image's ``structural_similarity`` (Wang et al. 2004; 7 x 7 uniform window by default)
    on each pair of maps, with ``data_range`` the range of the map values (1 for maps in [0, 1]).
    ``kwargs`` go to ``structural_similarity``. Runs on the CPU (NumPy).
    """
    from skimage.metrics import structural_similarity

    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"a and b must both be (B, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    out = [structural_similarity(p, q, data_range=float(data_range), **kwargs) for p, q in zip(x, y)]
    return torch.tensor(out, dtype=torch.float64, device=a.device)


def hog_similarity(a: Tensor, b: Tensor, **hog_kwargs: Any) -> Tensor:
    """Pearson correlation of the maps' HOG features per image: ``(B, H, W)`` x 2 -> ``(B,)`` float64.

    ``skimage.feature.hog`` with its defaults (9 orientations, 8 x 8-pixel cells, 3 x 3-cell
    blocks, L2-Hys) unless ``hog_kwargs`` say otherwise; maps smaller than one block give an empty
    descriptor and raise. NaN where a descriptor is constant (e.g. a constant map). CPU (NumPy).
    """
    from skimage.feature import hog

    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"a and b must both be (B, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    fa = np.stack([hog(m, feature_vector=True, **hog_kwargs) for m in x])
    fb = np.stack([hog(m, feature_vector=True, **hog_kwargs) for m in y])
    if fa.shape[1] == 0:
        raise ValueError(f"maps of size {tuple(a.shape[1:])} are too small for one HOG block; use larger maps "
                         "or smaller pixels_per_cell / cells_per_block")
    return pearson(torch.from_numpy(fa), torch.from_numpy(fb)).to(a.device)
