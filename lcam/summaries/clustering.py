"""Step 4 of the visual summaries: Affinity Propagation on the part similarities, then the SSIM filter.

* Affinity Propagation (scikit-learn, ``affinity="precomputed"``) on the class's similarity
  matrix; the preference (how readily a part becomes an exemplar) defaults to the median of the
  similarities between parts of different images. The paper gives no preference; this is
  scikit-learn's default (the median of the input similarities) without the zeros that the matrix
  holds between parts of one image.
* A cluster is a candidate summary when its parts come from at least ``min_images`` images.
* The paper's filter: a cluster whose median pairwise SSIM of its parts (grey patches, scikit-image)
  is below ``ssim_ratio`` (90%) of the class's global median SSIM (over pairs of parts from
  different images, at most ``max_pairs`` pairs drawn with the seed) is discarded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np


@dataclass
class Cluster:
    """One cluster of parts.

    Attributes:
        members: part indices; exemplar: the part AP chose to represent it.
        images: the distinct images its parts come from.
        ssim: median pairwise SSIM of its parts (NaN for a single part).
        kept: survives the filters; reason: why not, when it does not.
    """

    members: list[int]
    exemplar: int
    images: list[int] = field(default_factory=list)
    ssim: float = float("nan")
    kept: bool = False
    reason: str = ""


def affinity_clusters(sim: np.ndarray, images: np.ndarray, preference: float | None = None, damping: float = 0.7,
                      max_iter: int = 1000, seed: int = 0) -> list[Cluster]:
    """Affinity Propagation on ``sim`` ``(P, P)``; ``images`` ``(P,)`` the image of each part."""
    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    p = sim.shape[0]
    if p == 0:
        return []
    if p == 1:
        return [Cluster([0], 0, [int(images[0])])]
    cross = images[:, None] != images[None, :]
    pref = float(np.median(sim[cross])) if preference is None and cross.any() else float(preference or 0.0)
    ap = AffinityPropagation(affinity="precomputed", preference=pref, damping=damping, max_iter=max_iter,
                             convergence_iter=50, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = ap.fit_predict(sim)
    if labels.min() < 0:  # AP did not converge: every part is its own cluster
        labels = np.arange(p)
        centers = np.arange(p)
    else:
        centers = ap.cluster_centers_indices_
    clusters = []
    for k, centre in enumerate(centers):
        members = np.flatnonzero(labels == k).tolist()
        if members:
            clusters.append(Cluster(members, int(centre), sorted({int(images[m]) for m in members})))
    return clusters


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two grey patches ``(s, s)`` in [0, 1]."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=1.0))


def global_median_ssim(patches: np.ndarray, images: np.ndarray, max_pairs: int = 4000, seed: int = 0) -> float:
    """Median SSIM over pairs of parts from different images ``(P, s, s)`` (at most ``max_pairs``, seeded)."""
    pairs = [(i, j) for i, j in combinations(range(len(patches)), 2) if images[i] != images[j]]
    if not pairs:
        return float("nan")
    if len(pairs) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False)
        pairs = [pairs[k] for k in pick]
    return float(np.median([ssim(patches[i], patches[j]) for i, j in pairs]))


def filter_clusters(clusters: list[Cluster], patches: np.ndarray, global_median: float, min_images: int = 2,
                    ssim_ratio: float = 0.9, max_pairs: int = 400, seed: int = 0) -> list[Cluster]:
    """Mark each cluster ``kept`` or not (with a reason); returns the kept ones, largest first.

    Args:
        patches: ``(P, s, s)`` grey patches of the parts.
        global_median: the class's median SSIM (:func:`global_median_ssim`).
    """
    rng = np.random.default_rng(seed)
    for c in clusters:
        pairs = list(combinations(c.members, 2))
        if len(pairs) > max_pairs:
            pairs = [pairs[k] for k in rng.choice(len(pairs), size=max_pairs, replace=False)]
        c.ssim = float(np.median([ssim(patches[i], patches[j]) for i, j in pairs])) if pairs else float("nan")
        if len(c.images) < min_images:
            c.kept, c.reason = False, f"parts from {len(c.images)} image(s) < {min_images}"
        elif np.isfinite(global_median) and not c.ssim >= ssim_ratio * global_median:
            c.kept, c.reason = False, f"median SSIM {c.ssim:.3f} < {ssim_ratio:g} x class median {global_median:.3f}"
        else:
            c.kept, c.reason = True, ""
    return sorted((c for c in clusters if c.kept), key=lambda c: (-len(c.images), -len(c.members)))
