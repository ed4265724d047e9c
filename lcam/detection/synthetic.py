"""A synthetic detector with a known answer (tests, examples): it reports a box where a bright square is."""
from __future__ import annotations

import torch
from torch import Tensor

from lcam.detection.base import Detections, Detector


class BrightSquareDetector(Detector):
    """Finds the pixels brighter than ``level`` in each of ``regions`` (x1, y1, x2, y2) and reports,
    per region with any such pixel, their bounding box, class ``k`` (one-hot, C = len(regions) + 1)
    and objectness = share of the region's pixels still bright. Counts the images it has seen."""

    name = "bright_square"
    has_objectness = True

    def __init__(self, regions: list[tuple[int, int, int, int]], level: float = 0.8) -> None:
        super().__init__([f"square{k}" for k in range(len(regions))] + ["other"], score_threshold=0.5, nms_iou=None)
        self.regions, self.level, self.seen = regions, level, 0

    def proposals(self, images: Tensor) -> list[Detections]:
        self.seen += images.shape[0]
        out = []
        for img in images:
            bright = img.mean(0) > self.level
            boxes, probs, obj = [], [], []
            for k, (x1, y1, x2, y2) in enumerate(self.regions):
                region = bright[y1:y2, x1:x2]
                if not region.any():
                    continue
                ys, xs = torch.nonzero(region, as_tuple=True)
                boxes.append(torch.stack([xs.min() + x1, ys.min() + y1, xs.max() + x1 + 1, ys.max() + y1 + 1]).float())
                probs.append(torch.nn.functional.one_hot(torch.tensor(k), self.num_classes).float())
                obj.append(region.float().mean())
            if boxes:
                out.append(Detections(torch.stack(boxes), torch.stack(probs), torch.stack(obj)))
            else:
                out.append(Detections(torch.zeros(0, 4), torch.zeros(0, self.num_classes), torch.zeros(0)))
        return out


def squares_image(size: int, squares: list[tuple[int, int, int, int]]) -> Tensor:
    """``(1, 3, size, size)``: dark grey with white squares (x1, y1, x2, y2)."""
    img = torch.full((1, 3, size, size), 0.2)
    for x1, y1, x2, y2 in squares:
        img[..., y1:y2, x1:x2] = 1.0
    return img
