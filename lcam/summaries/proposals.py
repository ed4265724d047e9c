"""Step 3 of the visual summaries: object proposals per image, and the ones kept inside a region.

Proposals come from selective search (OpenCV contrib, ``cv2.ximgproc.segmentation``, fast mode;
the same OpenCV the detectors use; :func:`selective_search` checks it with
:func:`lcam.runtime.optional.require`, so a shadowed OpenCV fails at once with its repair commands).

The paper matches the proposals of the *whole image* (:mod:`.matching`) and only then keeps the
matched ones that lie in crisp regions. Matching every proposal of every pair of images is bounded
by :func:`top_proposals`: the first ``top_k`` proposals of an image in the order selective search
returns them. Selective search has no objectness score; its order is its own ranking (OpenCV ranks
each box by its hierarchy level times a random factor, the pseudo-random ranking of Uijlings et al.
that R-CNN-style users truncate at the top N), so the top K mix scales: measured on 224-px photos,
the median box of the first 100 covers about 3% of the image (the size of a crisp region) and later
ones grow to 10-60%. A size ranking would keep only one end of that range: largest first loses the
tight frames of the small crisp regions, smallest first loses the context frames.

OpenCV draws that random factor from C's ``rand()``; :func:`selective_search` seeds it before each
image, so an image's top K is the same whatever ran before it in the process.

Of the matched proposals the paper keeps (:func:`parts_in_regions`):

* keep a proposal that overlaps a region by more than ``min_overlap`` (75%): the share of the
  region's pixels inside the proposal's box (the proposal frames the region, with some context);
* of two overlapping proposals (intersection over the smaller box > ``duplicate_overlap``) whose
  area ratio is below ``area_ratio`` (2), drop one, the larger: near duplicates would otherwise
  split a part's matches between them. What survives around a region is its tightest frame and
  frames at least twice as large each, a small scale pyramid of the part in context.

Two bounds of ours: proposals larger than ``max_area`` (a share of the image) are not parts, and
at most ``max_parts`` proposals per image survive (the tightest first), which bounds the class's
similarity matrix. Measured on crisp masks of real photos: the other reading of the overlap (the
share of the *proposal* inside the region) keeps almost nothing, since crisp regions are small
blobs (1-5% of the image) that few selective-search boxes fit inside.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lcam.summaries.regions import Region


@dataclass
class Part:
    """A proposal kept inside a region: a candidate part of the class.

    Attributes:
        image: index of the image; region: index of its region in that image.
        box: ``(x1, y1, x2, y2)`` pixels (exclusive ends).
        overlap: share of the region's pixels inside the box.
    """

    image: int
    region: int
    box: tuple[int, int, int, int]
    overlap: float

    @property
    def area(self) -> int:
        x1, y1, x2, y2 = self.box
        return max(0, x2 - x1) * max(0, y2 - y1)


def _seed_c_rand(seed: int) -> bool:
    """Seed C's ``rand()``, which OpenCV's selective search draws its ranking from (unseeded, the order
    of an image's boxes would depend on every earlier call in the process). False where the C library
    cannot be reached this way (e.g. Windows): the order is then OpenCV's unseeded one."""
    import ctypes

    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        return True
    except (OSError, AttributeError, TypeError):
        return False


def selective_search(image: np.ndarray, mode: str = "fast", max_proposals: int = 2000, seed: int = 0) -> np.ndarray:
    """Selective-search boxes ``(P, 4)`` int ``x1, y1, x2, y2`` for an RGB uint8 image ``(H, W, 3)``, in
    selective search's ranking (seeded with ``seed``, so an image's order does not depend on what ran
    before it).

    Raises:
        lcam.runtime.optional.MissingDependency: (a ``RuntimeError``) OpenCV without
            ``cv2.ximgproc.segmentation``, e.g. a wheel shadowing the contrib build; names the repair.
    """
    from lcam.runtime.optional import require

    require("selective_search")
    import cv2

    cv2.setNumThreads(1)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    elif mode == "quality":
        ss.switchToSelectiveSearchQuality()
    else:
        raise ValueError(f"Unknown selective-search mode {mode!r}; valid: ['fast', 'quality']")
    _seed_c_rand(seed)
    rects = ss.process()[: int(max_proposals)]
    if len(rects) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    rects = np.asarray(rects, dtype=np.int64)
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)


def region_share_inside(boxes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(P,)``: share of ``mask``'s pixels ``(H, W)`` bool inside each box ``(P, 4)`` (integral image)."""
    ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    x1, y1, x2, y2 = boxes.T
    inside = ii[y2, x2] - ii[y1, x2] - ii[y2, x1] + ii[y1, x1]
    return inside / max(1, int(mask.sum()))


def _overlap_of_smaller(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(1, smaller)


def _fitting(boxes: np.ndarray, h: int, w: int, min_side: int, max_area: float) -> np.ndarray:
    """Boxes ``(P, 4)`` clipped to an ``h x w`` image, without those narrower or shorter than ``min_side``
    pixels or larger than ``max_area`` of the image (order kept)."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes[(bw >= min_side) & (bh >= min_side) & (bw * bh <= max_area * h * w)]


def top_proposals(boxes: np.ndarray, shape: tuple[int, int], top_k: int, min_side: int = 8,
                  max_area: float = 0.5) -> np.ndarray:
    """The proposals of one image that are matched in context: ``(K', 4)``, ``K' <= top_k``.

    The boxes ``(P, 4)`` (``x1, y1, x2, y2``, selective search's order) clipped to the image ``shape``
    ``(H, W)``, without the ones :func:`parts_in_regions` would ignore anyway (``min_side``,
    ``max_area``) and without repeats, the first ``top_k`` in the given order (see the module docstring).
    """
    h, w = shape
    boxes = _fitting(boxes, h, w, min_side, max_area)
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)][: max(0, int(top_k))]


def parts_in_regions(boxes: np.ndarray, regions: list[Region], min_overlap: float = 0.75, area_ratio: float = 2.0,
                     duplicate_overlap: float = 0.5, min_side: int = 8, max_area: float = 0.5,
                     max_parts: int = 20) -> list[Part]:
    """The proposals of one image that become parts (see the module docstring).

    Args:
        boxes: ``(P, 4)`` proposals of the image, ``x1, y1, x2, y2``.
        regions: the image's regions (:func:`~lcam.summaries.regions.find_regions`).
        min_side: proposals narrower or shorter than this many pixels are ignored.
        max_area: proposals larger than this share of the image are ignored.
    """
    if len(boxes) == 0 or not regions:
        return []
    h, w = regions[0].mask.shape
    boxes = np.unique(_fitting(boxes, h, w, min_side, max_area), axis=0)
    candidates: list[Part] = []
    for region in regions:
        cov = region_share_inside(boxes, region.mask)
        for i in np.flatnonzero(cov > min_overlap):
            candidates.append(Part(region.image, region.index, tuple(int(v) for v in boxes[i]), float(cov[i])))
    candidates.sort(key=lambda p: (p.area, -p.overlap))
    kept: list[Part] = []
    for part in candidates:
        duplicate = any(_overlap_of_smaller(part.box, k.box) > duplicate_overlap
                        and max(part.area, k.area) / max(1, min(part.area, k.area)) < area_ratio for k in kept)
        if not duplicate:
            kept.append(part)
        if len(kept) >= max_parts:
            break
    return kept
