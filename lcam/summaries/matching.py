"""Step 3b of the visual summaries: match proposals across images into one similarity matrix.

The paper matches the object proposals of the *whole images* with Proposal Flow (Ham et al., CVPR
2016), so that the geometric vote sees each proposal's context, and keeps the proposals lying in
crisp regions afterwards. Proposal Flow is not on PyPI; this is its local-offset matching (LOM) on
HOG descriptors, computed over the ``context`` proposals of each pair of images (the top K of each
image, :func:`lcam.summaries.proposals.top_proposals`) and read out for the kept parts:

* appearance ``A(r, r')``: cosine similarity of the proposals' HOG descriptors (scikit-image; each
  box resized to ``patch x patch`` grey pixels), clipped at 0;
* geometric consistency: a match ``r -> r'`` moves the box by the offset ``v(r, r')`` (centre
  displacement in image-size units, and log change of scale). Each neighbour ``q`` of ``r`` (its
  ``neighbours`` nearest proposals of the same image's context, by centre distance) votes with the
  offset of its own best appearance match among the other image's context proposals; the consensus
  ``v~(r)`` is the per-component median of the votes, and
  ``g(r, r') = exp(-||v(r, r') - v~(r)||^2 / (2 sigma^2))``;
* score ``A(r, r') g(r, r')``; the class matrix over the kept parts is symmetrised,
  ``(S + S^T) / 2``, and parts of one image get 0 (a summary gathers a part across images).

Without ``context`` (``matching.context: parts``, the earlier pipeline) each image's
context is its kept parts alone: with one or two parts per image the vote has no or one neighbour
and the geometric term all but vanishes.

Differences from Proposal Flow: one HOG descriptor per proposal instead of its choice of
features, neighbours by centre distance instead of PF's spatial neighbourhood of boxes, the
median offset of the neighbours' best matches in place of PF's iterative LOM refinement, no
flow field (only the proposal-to-proposal scores that the summaries use).
"""
from __future__ import annotations

from typing import Mapping, Sequence

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


def _geometry(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(P, 3)``: centre x, centre y (image-size units) and log of sqrt(area) per box ``(P, 4)``."""
    h, w = shape
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
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
                      sigma: float = 0.15, context: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """The class's symmetric part similarity ``(P, P)`` in [0, 1] (0 within an image), see the module docstring.

    Args:
        gray: the class's grey images ``(H, W)`` in [0, 1], indexed by ``Part.image``.
        parts: every part of the class.
        context: per image, the proposals ``(K, 4)`` (``x1, y1, x2, y2``) matched in context; every
            part's box must be one of its image's. ``None``: each image's parts are its context.

    Raises:
        ValueError: a part whose box is not among its image's context proposals.
    """
    p = len(parts)
    sim = np.zeros((p, p), dtype=np.float64)
    if p == 0:
        return sim
    images = np.array([q.image for q in parts])
    groups = {int(i): np.flatnonzero(images == i) for i in np.unique(images)}
    if context is None:
        context = {i: np.array([parts[j].box for j in idx]) for i, idx in groups.items()}
    rows, desc, geo = {}, {}, {}
    for i, idx in groups.items():
        boxes = np.asarray(context.get(i, ()), dtype=np.int64).reshape(-1, 4)
        where = {tuple(int(v) for v in b): k for k, b in enumerate(boxes)}
        missing = [parts[j].box for j in idx if tuple(parts[j].box) not in where]
        if missing:
            raise ValueError(f"Part(s) {missing[:3]} of image {i} are not among its {len(boxes)} context proposals")
        rows[i] = np.array([where[tuple(parts[j].box)] for j in idx])
        desc[i] = hog_descriptors(gray, [Part(i, -1, tuple(int(v) for v in b), 0.0) for b in boxes], patch)
        geo[i] = _geometry(boxes, gray[i].shape[:2])
    for a, ia in groups.items():
        for b, ib in groups.items():
            if a != b:
                scores = lom_scores(desc[a], geo[a], desc[b], geo[b], neighbours, sigma)  # (K_a, K_b), all in context
                sim[np.ix_(ia, ib)] = scores[np.ix_(rows[a], rows[b])]
    return (sim + sim.T) / 2.0
