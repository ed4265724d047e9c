"""Step 3a of the visual summaries: object proposals per image, kept where they lie inside a region.

Proposals come from selective search (OpenCV contrib, ``cv2.ximgproc.segmentation``, fast mode;
the same OpenCV the detectors use). The paper's two filters:

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


def selective_search(image: np.ndarray, mode: str = "fast", max_proposals: int = 2000) -> np.ndarray:
    """Selective-search boxes ``(P, 4)`` int ``x1, y1, x2, y2`` for an RGB uint8 image ``(H, W, 3)``.

    Raises:
        RuntimeError: OpenCV without the contrib modules (names the package to install).
    """
    import cv2

    if not hasattr(cv2, "ximgproc"):
        raise RuntimeError("Selective search needs OpenCV's contrib modules: pip install 'opencv-contrib-python-headless<5' "
                           "(and uninstall other OpenCV wheels, which shadow it)")
    cv2.setNumThreads(1)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    elif mode == "quality":
        ss.switchToSelectiveSearchQuality()
    else:
        raise ValueError(f"Unknown selective-search mode {mode!r}; valid: ['fast', 'quality']")
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
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    fits = (bw >= min_side) & (bh >= min_side) & (bw * bh <= max_area * h * w)
    boxes = np.unique(boxes[fits], axis=0)
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
