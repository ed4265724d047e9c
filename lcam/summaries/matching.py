"""Step 3b of the visual summaries: match parts across images into one similarity matrix.

The paper matches proposals with Proposal Flow (Ham et al., CVPR 2016), which is not on PyPI.
This is its local-offset matching (LOM) on HOG descriptors:

* appearance ``A(r, r')``: cosine similarity of the parts' HOG descriptors (scikit-image; each
  part resized to ``patch x patch`` grey pixels), clipped at 0;
* geometric consistency: a match ``r -> r'`` moves the part by the offset ``v(r, r')`` (centre
  displacement in image-size units, and log change of scale). Each neighbour ``q`` of ``r`` (its
  ``neighbours`` nearest parts in the same image) votes with the offset of its own best
  appearance match; the consensus ``v~(r)`` is the per-component median of the votes, and
  ``g(r, r') = exp(-||v(r, r') - v~(r)||^2 / (2 sigma^2))``;
* score ``A(r, r') g(r, r')``; the class matrix is symmetrised, ``(S + S^T) / 2``, and parts of one
  image get 0 (a summary gathers a part across images).

Differences from Proposal Flow: one HOG descriptor per proposal instead of its choice of
features, neighbours by centre distance instead of PF's spatial neighbourhood of boxes, the
median offset of the neighbours' best matches in place of PF's iterative LOM refinement, no
flow field (only the proposal-to-proposal scores that the summaries use).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lcam.summaries.proposals import Part


def hog_descriptors(gray: Sequence[np.ndarray], parts: Sequence[Part], patch: int = 32) -> np.ndarray:
    """L2-normalised HOG descriptors ``(P, D)`` of the parts, cut from grey images ``(H, W)`` in [0, 1]."""
    from skimage.feature import hog

    out = [hog(part_patch(gray[p.image], p, patch), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
               feature_vector=True) for p in parts]
    if not out:
        return np.zeros((0, 1), dtype=np.float32)
    d = np.stack(out).astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-8)


def part_patch(gray: np.ndarray, part: Part, size: int) -> np.ndarray:
    """The part's box of a grey image ``(H, W)``, resized to ``(size, size)``."""
    from skimage.transform import resize

    x1, y1, x2, y2 = part.box
    return resize(gray[y1:y2, x1:x2], (size, size), anti_aliasing=True, mode="reflect")


def _geometry(parts: Sequence[Part], shape: tuple[int, int]) -> np.ndarray:
    """``(P, 3)``: centre x, centre y (image-size units) and log of sqrt(area) per part."""
    h, w = shape
    b = np.array([p.box for p in parts], dtype=np.float64).reshape(-1, 4)
    cx = (b[:, 0] + b[:, 2]) / 2 / w
    cy = (b[:, 1] + b[:, 3]) / 2 / h
    scale = 0.5 * np.log(np.maximum(1.0, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) / (h * w))
    return np.stack([cx, cy, scale], axis=1)


def lom_scores(desc_a: np.ndarray, geo_a: np.ndarray, desc_b: np.ndarray, geo_b: np.ndarray, neighbours: int = 5,
               sigma: float = 0.15) -> np.ndarray:
    """Scores ``(n, m)`` of matching the ``n`` parts of image a to the ``m`` parts of image b.

    Args:
        desc_a, desc_b: ``(n, D)``, ``(m, D)`` L2-normalised descriptors.
        geo_a, geo_b: ``(n, 3)``, ``(m, 3)`` from the parts' geometry (centre x, y, log scale).
        neighbours: parts of image a that vote on each part's offset.
        sigma: width of the geometric kernel, in image-size units.
    """
    appearance = np.clip(desc_a @ desc_b.T, 0.0, None)  # (n, m)
    n = appearance.shape[0]
    offsets = geo_b[None, :, :] - geo_a[:, None, :]  # (n, m, 3)
    k = min(int(neighbours), n - 1)
    if k <= 0 or appearance.shape[1] == 0:
        return appearance
    best = appearance.argmax(axis=1)  # (n,) each part's best appearance match
    votes = offsets[np.arange(n), best]  # (n, 3)
    dist = np.linalg.norm(geo_a[:, None, :2] - geo_a[None, :, :2], axis=2)
    np.fill_diagonal(dist, np.inf)
    near = np.argsort(dist, axis=1)[:, :k]  # (n, k)
    consensus = np.median(votes[near], axis=1)  # (n, 3)
    gap = np.sum((offsets - consensus[:, None, :]) ** 2, axis=2)
    return appearance * np.exp(-gap / (2.0 * float(sigma) ** 2))


def similarity_matrix(gray: Sequence[np.ndarray], parts: Sequence[Part], patch: int = 32, neighbours: int = 5,
                      sigma: float = 0.15) -> np.ndarray:
    """The class's symmetric part similarity ``(P, P)`` in [0, 1] (0 within an image), see the module docstring.

    Args:
        gray: the class's grey images ``(H, W)`` in [0, 1], indexed by ``Part.image``.
        parts: every part of the class.
    """
    p = len(parts)
    sim = np.zeros((p, p), dtype=np.float64)
    if p == 0:
        return sim
    desc = hog_descriptors(gray, parts, patch)
    images = np.array([q.image for q in parts])
    groups = {i: np.flatnonzero(images == i) for i in np.unique(images)}
    geo = {i: _geometry([parts[j] for j in idx], gray[i].shape[:2]) for i, idx in groups.items()}
    for a, ia in groups.items():
        for b, ib in groups.items():
            if a != b:
                sim[np.ix_(ia, ib)] = lom_scores(desc[ia], geo[a], desc[ib], geo[b], neighbours, sigma)
    return (sim + sim.T) / 2.0
