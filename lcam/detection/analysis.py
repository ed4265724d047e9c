"""The paper's analyses with ground truth: the average saliency map over many detections, and the
maps of false positives and of missed objects.

* :func:`match_detections`: greedy matching in score order (IoU >= 0.5, same class, or any class
  for a ground-truth box given without one): a detection without a match is a false positive, a
  ground-truth box without one a missed object.
* :class:`AverageMap`: each detection's map cropped to its box, resized to ``size``, min-max
  normalised, averaged (where, inside their boxes, the detector looks).
* missed objects are explained as target boxes with no matching detection (:mod:`lcam.detection.api`:
  explicit boxes; a one-hot class vector when the box has a class).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.ops import box_iou

from lcam.maps import minmax_normalize


def match_detections(boxes: Tensor, labels: Tensor, scores: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                     iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Greedy matching of detections ``(T, 4)`` (best score first) to ground truth ``(G, 4)``.

    A pair matches at ``IoU >= iou_threshold`` when the classes agree or the ground-truth label is
    -1 (any class); each ground-truth box matches once. Returns ``(detection matched (T,) bool,
    ground truth matched (G,) bool)``.
    """
    t, g = boxes.shape[0], gt_boxes.shape[0]
    det_ok = torch.zeros(t, dtype=torch.bool)
    gt_ok = torch.zeros(g, dtype=torch.bool)
    if t == 0 or g == 0:
        return det_ok, gt_ok
    iou = box_iou(boxes.float().cpu(), gt_boxes.float().cpu())
    same = (labels.cpu().view(-1, 1) == gt_labels.cpu().view(1, -1)) | (gt_labels.cpu().view(1, -1) < 0)
    iou = torch.where(same, iou, torch.full_like(iou, -1.0))
    for k in scores.cpu().argsort(descending=True, stable=True).tolist():
        cand = iou[k].clone()
        cand[gt_ok] = -1.0
        j = int(cand.argmax())
        if cand[j] >= iou_threshold:
            det_ok[k] = gt_ok[j] = True
    return det_ok, gt_ok


def crop_to_box(saliency: Tensor, box: Sequence[float], size: tuple[int, int]) -> Tensor:
    """The ``(H, W)`` map inside ``box`` (x1, y1, x2, y2 pixels, at least one pixel), resized
    bilinearly to ``size`` and min-max normalised: ``(*size,)``."""
    h, w = saliency.shape[-2:]
    x1, y1, x2, y2 = [float(v) for v in box]
    c1, r1 = min(max(int(np.floor(x1)), 0), w - 1), min(max(int(np.floor(y1)), 0), h - 1)
    c2, r2 = max(min(int(np.ceil(x2)), w), c1 + 1), max(min(int(np.ceil(y2)), h), r1 + 1)
    crop = saliency[r1:r2, c1:c2].float()
    out = F.interpolate(crop[None, None], size=size, mode="bilinear", align_corners=False)[0]
    return minmax_normalize(out)[0]


class AverageMap:
    """Running mean of detections' maps, each cropped to its box, resized to ``size`` and normalised."""

    def __init__(self, size: tuple[int, int] = (64, 64)) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.total = torch.zeros(self.size)
        self.count = 0

    def add(self, maps: Tensor, boxes: Tensor) -> None:
        """Maps ``(T, H, W)`` and their boxes ``(T, 4)`` (pixels of the maps)."""
        for m, b in zip(maps, boxes):
            self.total += crop_to_box(m.cpu(), b.tolist(), self.size)
            self.count += 1

    def value(self) -> Tensor:
        """``(*size,)`` the average (zeros before any detection)."""
        return self.total / max(self.count, 1)

    def image(self, scale: int = 4, cmap: str = "jet") -> Image.Image:
        """The average as a colour image, ``scale`` times ``size``."""
        from lcam.viz import colorize

        rgb = (colorize(self.value(), cmap) * 255).round().astype(np.uint8)
        return Image.fromarray(rgb).resize((self.size[1] * scale, self.size[0] * scale), Image.NEAREST)
