"""Per-image detection insertion / deletion (a diagnostic) and map statistics.

**Not the paper's number.** The D-RISE face-detection paper's protocol (Fig. 9) is the detector's
mAP over the whole folder at each fraction of pixels perturbed: :mod:`lcam.detection.folder_map`.
This module's curves are per target, in its own image: useful to read one map, not comparable
with the paper.

Deletion starts from the image and replaces its pixels, most salient first (the target's map),
by a Gaussian-blurred copy (kernel 51, sigma 50 px); insertion starts from the blurred copy and
puts the image's pixels back in the same order. After each of ``n_steps`` steps the detector runs
on the perturbed image and two scores are recorded for the target:

* ``similarity``: D-RISE's score of the target, ``max_j IoU x cosine x objectness`` over the
  perturbed image's proposals (:func:`~lcam.detection.drise.drise_similarity`);
* ``image_ap``: the per-image diagnostic AP (IoU 0.5, all-point interpolation) of the detector's
  final detections **of the target's class in the target's image only** against that image's
  ground-truth boxes of that class, or, without ground truth, against the original image's
  detections of that class. Images without an explained detection (missed objects) never enter it.

The score of a curve is its area over the fraction of pixels changed (trapezoid rule; deletion:
lower is better, insertion: higher is better). Step ``i`` changes ``floor(i * H * W / n_steps)``
pixels; saliency ties are broken by pixel index. All steps of a target run through the detector
``batch_size`` images at a time.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lcam.detection.base import Detections, Detector, postprocess
from lcam.detection.drise import mask_weights
from lcam.detection.folder_map import DETECTION_BLUR_KERNEL, DETECTION_BLUR_SIGMA, MODES, all_point_ap, greedy_matches
from lcam.explainers.base import chunks
from lcam.maps import blur
from lcam.metrics.insertion_deletion import auc, step_counts

SCORES = ("similarity", "image_ap")


def energy_in_box(saliency: Tensor, box: Tensor | Sequence[float]) -> float:
    """Share of the ``(H, W)`` map's sum inside ``box`` (x1, y1, x2, y2 pixels; clipped to the
    image; a pixel counts when its centre is inside). 0 for an all-zero map."""
    h, w = saliency.shape[-2:]
    x1, y1, x2, y2 = [float(v) for v in box]
    ys = torch.arange(h, device=saliency.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=saliency.device, dtype=torch.float32) + 0.5
    inside = ((ys >= y1) & (ys < y2)).view(-1, 1) & ((xs >= x1) & (xs < x2)).view(1, -1)
    total = float(saliency.sum())
    return float(saliency[inside].sum()) / total if total > 0 else 0.0


def average_precision(boxes: Tensor, scores: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> float:
    """AP of detections ``(N, 4)`` with ``scores`` ``(N,)`` against ground truth ``(G, 4)`` (one
    class, one image): greedy matching in score order at ``IoU >= iou_threshold``, then the area
    under the precision envelope over recall (all-point interpolation, VOC 2010+ / COCO style).
    No ground truth: 1.0 without detections, else 0.0. The folder's AP (many images, many
    classes): :func:`lcam.detection.folder_map.folder_average_precision`."""
    g = gt_boxes.shape[0]
    if g == 0:
        return 1.0 if boxes.shape[0] == 0 else 0.0
    if boxes.shape[0] == 0:
        return 0.0
    order = scores.argsort(descending=True, stable=True)
    return all_point_ap(greedy_matches(boxes[order], gt_boxes, iou_threshold), g)


def _class_boxes(dets: Detections, label: int) -> tuple[Tensor, Tensor]:
    keep = dets.labels == label
    return dets.boxes[keep], dets.scores[keep]


@torch.no_grad()
def detection_curves(detector: Detector, image: Tensor, maps: Tensor, targets: Detections, mode: str = "deletion",
                     n_steps: int = 50, ground_truth: tuple[Tensor, Tensor] | None = None, batch_size: int = 16,
                     blur_kernel: int = DETECTION_BLUR_KERNEL, blur_sigma: float = DETECTION_BLUR_SIGMA,
                     iou_threshold: float = 0.5) -> dict[str, Tensor]:
    """Deletion or insertion curves of the targets of one image (the per-image diagnostic).

    Args:
        detector: the detector (its final detections give the AP; its proposals the similarity).
        image: ``(3, H, W)`` in [0, 1].
        maps: ``(T, H, W)``, one map per target (any range; only the order matters).
        targets: the ``T`` explained detections.
        mode: ``"deletion"`` or ``"insertion"``.
        ground_truth: ``(boxes (G, 4), labels (G,))`` of the image (label -1: any class), or
            ``None`` (then the original image's final detections are the reference).
        batch_size: perturbed images per detector pass.

    Returns:
        ``{"x": (n_steps + 1,), "similarity": (T, n_steps + 1), "image_ap": (T, n_steps + 1)}``.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; valid: {list(MODES)}")
    if maps.shape[0] != len(targets):
        raise ValueError(f"one map per target: {maps.shape[0]} maps, {len(targets)} targets")
    _, h, w = image.shape
    device = image.device
    blurred = blur(image.unsqueeze(0), blur_kernel, blur_sigma)[0]
    start, finish = (image, blurred) if mode == "deletion" else (blurred, image)
    counts = step_counts(h * w, n_steps, device)
    n_points = n_steps + 1
    if ground_truth is None:
        ref = detector.detect(image.unsqueeze(0))[0]
        gt_boxes, gt_labels = ref.boxes, ref.labels
    else:
        gt_boxes, gt_labels = ground_truth[0].to(device).float(), ground_truth[1].to(device).long()
    sim = torch.zeros(len(targets), n_points)
    image_ap = torch.zeros(len(targets), n_points)
    labels = targets.labels
    for t in range(len(targets)):
        order = maps[t].reshape(-1).argsort(descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(h * w, device=device))
        target = targets.select(torch.tensor([t], device=targets.boxes.device)).to(device)
        gt = gt_boxes[(gt_labels == labels[t]) | (gt_labels < 0)]  # -1: a box of any class
        for part in chunks(n_points, batch_size):
            changed = (rank.view(1, -1) < counts[part].view(-1, 1)).view(-1, 1, h, w)
            inputs = torch.where(changed, finish, start)
            props = detector.proposals(inputs)
            sim[t, part] = mask_weights(target, props, use_objectness=True)[0].cpu()
            for k, p in zip(range(part.start, part.stop), props):
                final = postprocess(p, detector.score_threshold, detector.nms_iou, detector.max_detections)
                b, s = _class_boxes(final, int(labels[t]))
                image_ap[t, k] = average_precision(b.cpu(), s.cpu(), gt.cpu(), iou_threshold)
    x = (counts.double() / (h * w)).float().cpu()
    return {"x": x, "similarity": sim, "image_ap": image_ap}


class DetectionInsertionDeletion(Metric):
    """Streaming per-image detection insertion/deletion AUCs (a diagnostic, not the paper's folder
    mAP: :class:`lcam.detection.folder_map.FolderDeletionInsertion`); a torchmetrics ``Metric``.

    ``update(images, maps, targets, ground_truth=None)`` with images ``(B, 3, H, W)``, per image
    maps ``(T, H, W)`` and :class:`Detections` targets (and optionally ``(boxes, labels)``).
    ``compute()`` returns the mean AUC per ``<mode>_<score>`` (``deletion_similarity``,
    ``deletion_image_ap``, ``insertion_similarity``, ``insertion_image_ap``); :attr:`per_target` holds each
    target's AUCs ``(targets, modes x scores)`` in that order.

    Args:
        detector: the detector (not registered as a submodule; the metric state holds only sums).
        modes: any of ``"deletion"``, ``"insertion"``.
        n_steps, batch_size, blur_kernel, blur_sigma, iou_threshold: see :func:`detection_curves`.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, detector: Detector, modes: Sequence[str] = MODES, n_steps: int = 50, batch_size: int = 16,
                 blur_kernel: int = DETECTION_BLUR_KERNEL, blur_sigma: float = DETECTION_BLUR_SIGMA,
                 iou_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f"Invalid modes {bad or list(modes)}; valid: {list(MODES)}")
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.__dict__["detector"] = detector
        self.modes = tuple(modes)
        self.curve_kwargs = dict(n_steps=int(n_steps), batch_size=int(batch_size), blur_kernel=int(blur_kernel),
                                 blur_sigma=float(blur_sigma), iou_threshold=float(iou_threshold))
        self.keys = [f"{m}_{s}" for m in self.modes for s in SCORES]
        k = len(self.keys)
        self.add_state("auc_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("curve_sum", default=torch.zeros(k, int(n_steps) + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("per_target_aucs", default=[], dist_reduce_fx="cat")

    def update(self, images: Tensor, maps: Sequence[Tensor], targets: Sequence[Detections],  # type: ignore[override]
               ground_truth: Sequence[tuple[Tensor, Tensor] | None] | None = None) -> None:
        for i in range(images.shape[0]):
            if len(targets[i]) == 0:
                continue
            gt = ground_truth[i] if ground_truth is not None else None
            rows = []
            for mode in self.modes:
                c = detection_curves(self.detector, images[i], maps[i], targets[i], mode, ground_truth=gt, **self.curve_kwargs)
                for score in SCORES:
                    rows.append((auc(c["x"].expand_as(c[score]), c[score]), c[score]))
            aucs = torch.stack([r[0] for r in rows], dim=1).double()  # (T, k)
            self.per_target_aucs.append(aucs.to(self.auc_sum.device))
            self.auc_sum += aucs.sum(0).to(self.auc_sum.device)
            self.curve_sum += torch.stack([r[1].double().sum(0) for r in rows]).to(self.curve_sum.device)
            self.count += aucs.shape[0]

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        n = self.count.clamp(min=1)
        return {key: (self.auc_sum[j] / n).float() for j, key in enumerate(self.keys)}

    @property
    def per_target(self) -> Tensor:
        """``(targets, len(keys))`` AUCs of every target so far, in update order."""
        rows = self.per_target_aucs
        if isinstance(rows, Tensor):
            return rows
        return torch.cat(rows) if rows else torch.zeros(0, len(self.keys), dtype=torch.float64)

    def mean_curves(self) -> dict[str, Tensor]:
        """Mean curve per key, ``(n_steps + 1,)`` over ``x = i / n_steps``."""
        n = self.count.clamp(min=1)
        return {key: (self.curve_sum[j] / n).float() for j, key in enumerate(self.keys)}
