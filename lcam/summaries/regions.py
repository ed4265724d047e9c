"""Step 2 of the visual summaries: regions are the connected parts of a crisp mask's deleted zone.

The crisp mask ``m`` keeps a pixel at 1 and deletes (blurs) it at 0; the pixels whose deletion
destroys the class are the salient ones, so a region is a connected component (8-neighbour) of
``1 - m >= threshold``. Components smaller than ``min_area`` (a share of the image) are noise
of the optimisation and are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Region:
    """One connected salient region of one image.

    Attributes:
        image: index of the image in the class's list.
        index: the region's number within its image (0, 1, ...).
        mask: ``(H, W)`` bool, the region's pixels.
        box: ``(x1, y1, x2, y2)`` in pixels, ``x2``/``y2`` exclusive.
    """

    image: int
    index: int
    mask: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def find_regions(mask: np.ndarray, image: int = 0, threshold: float = 0.3, min_area: float = 0.005) -> list[Region]:
    """Regions of one crisp mask ``m`` ``(H, W)`` in [0, 1], largest first.

    Args:
        image: the image index stored in each region.
        threshold: a pixel is salient when ``1 - m >= threshold``.
        min_area: the smallest region kept, as a share of the image's pixels.
    """
    salient = (1.0 - np.asarray(mask, dtype=np.float32)) >= threshold
    labels, n = ndimage.label(salient, structure=np.ones((3, 3), dtype=bool))
    smallest = max(1, int(round(min_area * salient.size)))
    regions = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels == k
        if comp.sum() < smallest:
            continue
        regions.append((comp, (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)))
    regions.sort(key=lambda r: -int(r[0].sum()))
    return [Region(image, i, comp, box) for i, (comp, box) in enumerate(regions)]
