"""Detection deletion / insertion as the D-RISE face-detection paper runs it: the mAP over the folder.

"Towards Explainability in Using Deep Learning for Face Detection in Paintings" (Fig. 9;
D-RISE: Petsiuk et al., https://arxiv.org/abs/2006.03204). At each fraction
``f = i / n_steps`` of pixels perturbed, **every image of the folder** is perturbed by its own
saliency map (deletion: its ``floor(f * H * W)`` most salient pixels replaced by a Gaussian-blurred
copy, kernel 51, sigma 50 px; insertion: the blurred copy with those pixels put back), the detector
runs on all perturbed images, and one average precision is computed over the **whole folder's**
detections against **all** its ground-truth boxes. One curve ``mAP(f)`` per explainer and mode;
its area over ``f`` (trapezoid rule) is the score (deletion: lower is better, insertion: higher).

AP (:func:`folder_average_precision`): per class, the detections of every image pooled and sorted
by score (ties: image order, then detection order), each matched greedily to the unmatched
ground-truth box of its class in its image with the highest IoU, a true positive at
``IoU >= 0.5``; precision's upper envelope integrated over recall (all-point interpolation, as VOC
2010+; COCO's AP50 is the same number up to COCO's 101-point recall sampling). mAP is the mean over
the classes with at least one ground-truth box (detections of other classes are not scored, as in
VOC/COCO). Ground-truth boxes without a class (label -1) make the whole folder class-agnostic: all
detections and boxes count as one class (the face-detection case). Without ground truth the
reference is the detector's own final detections on the unperturbed images, and the result says
so (``against``): then ``mAP(0) = 1`` for deletion by construction.

The perturbing map of an image with several explained detections (:func:`image_saliency`): each
target's map min-max normalised to [0, 1], then the pixelwise **maximum** (``combine="max"``).
Why the maximum: deleting an image's pixels in the order of the max map removes every object's own
most salient pixels first, at the same pace for all of them, whatever the maps' spreads; a sum
ranks first the pixels salient for several detections (overlaps, shared context) and lets one
diffuse map outweigh a peaked one, so a small object's core could stay until late. With one
target both are the target's map. ``"sum"`` and ``"mean"`` are available for comparison. An image
with no explained detection has no map: it is perturbed in a seeded random pixel order (the same
for every explainer), so every curve still runs from the original folder (``f = 0``) to the fully
blurred one (``f = 1``) and the explainers differ only where they have maps.

Streaming: the perturbed images of one image exist ``batch_size`` at a time; only the detections
(boxes, scores, labels) are kept, per explainer, mode and step, as rows of a torchmetrics state
(``cat`` under DDP; images need globally unique ``image_id``).

Reference explainers (:data:`REFERENCE_MAPS`, free to compute): ``box`` (a Gaussian centred on each
target's box, sigma = half its width / height: the box's centre first) and ``random`` (seeded
uniform noise), to read the D-RISE curve against.

The per-target AP of :class:`lcam.detection.metrics.DetectionInsertionDeletion` (``image_ap``)
is a per-image diagnostic (each target's class in its own image only), not this number.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou

from lcam.detection.base import Detector, postprocess
from lcam.explainers.base import chunks
from lcam.maps import blur, minmax_normalize
from lcam.metrics.insertion_deletion import auc, step_counts

#: the D-RISE paper's blurred substrate: a 51 x 51 Gaussian kernel of sigma 50 px
DETECTION_BLUR_KERNEL = 51
DETECTION_BLUR_SIGMA = 50.0
MODES = ("deletion", "insertion")
COMBINE = ("max", "sum", "mean")
AGAINST_GT = "ground truth"
AGAINST_DETECTIONS = "the detector's own detections on the unperturbed images (no ground truth)"


def all_point_ap(tp: Tensor, n_gt: int) -> float:
    """Area under the precision envelope over recall (all-point interpolation) of detections
    sorted by score, ``tp`` ``(N,)`` 1 for a true positive, against ``n_gt`` boxes (> 0)."""
    if tp.numel() == 0:
        return 0.0
    tp = tp.double()
    ctp = tp.cumsum(0)
    recall = ctp / n_gt
    precision = ctp / torch.arange(1, len(tp) + 1, dtype=torch.float64)
    envelope = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - prev) * envelope).sum())


def greedy_matches(boxes: Tensor, gt_boxes: Tensor, iou_threshold: float) -> Tensor:
    """``(N,)`` 1.0 where a detection (in the given order, best first) takes the unmatched
    ground-truth box ``(G, 4)`` of highest IoU at ``IoU >= iou_threshold``."""
    tp = torch.zeros(boxes.shape[0], dtype=torch.float64)
    if boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return tp
    iou = box_iou(boxes.float(), gt_boxes.float())
    taken = torch.zeros(gt_boxes.shape[0], dtype=torch.bool)
    for k in range(boxes.shape[0]):
        cand = iou[k].clone()
        cand[taken] = -1.0
        j = int(cand.argmax())
        if cand[j] >= iou_threshold:
            taken[j] = True
            tp[k] = 1.0
    return tp


def folder_average_precision(detections: Sequence[tuple[Tensor, Tensor, Tensor]], ground_truth: Sequence[tuple[Tensor, Tensor]],
                             iou_threshold: float = 0.5) -> tuple[float, dict[int, float]]:
    """mAP of a folder's detections against its ground truth (see the module docstring).

    Args:
        detections: per image ``(boxes (N, 4), scores (N,), labels (N,))``.
        ground_truth: per image (same order) ``(boxes (G, 4), labels (G,))``; label -1: any class
            (then the whole folder is class-agnostic).

    Returns:
        ``(mAP, {class: AP})``; mAP is NaN when the folder has no ground-truth box.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"one detections entry per image: {len(detections)} detections, {len(ground_truth)} ground truths")
    agnostic = any(bool((g[1] < 0).any()) for g in ground_truth)
    gt_labels = [torch.zeros_like(g[1]) if agnostic else g[1] for g in ground_truth]
    det_labels = [torch.zeros_like(d[2]) if agnostic else d[2] for d in detections]
    classes = sorted({int(c) for labels in gt_labels for c in labels.tolist()})
    per_class: dict[int, float] = {}
    for c in classes:
        n_gt = sum(int((labels == c).sum()) for labels in gt_labels)
        scores, owner, index = [], [], []
        for i, ((boxes, s, _), labels) in enumerate(zip(detections, det_labels)):
            keep = torch.nonzero(labels == c).flatten()
            scores.append(s[keep].double().cpu())
            owner.append(torch.full((len(keep),), i, dtype=torch.long))
            index.append(keep.cpu())
        s_all, o_all, k_all = torch.cat(scores), torch.cat(owner), torch.cat(index)
        order = s_all.argsort(descending=True, stable=True)
        taken = [torch.zeros(len(labels), dtype=torch.bool) for labels in gt_labels]
        gt_boxes = [g[0][gt_labels[i] == c].float().cpu() for i, g in enumerate(ground_truth)]
        gt_index = [torch.nonzero(gt_labels[i] == c).flatten() for i in range(len(ground_truth))]
        tp = torch.zeros(len(order), dtype=torch.float64)
        for r, d in enumerate(order.tolist()):
            i, k = int(o_all[d]), int(k_all[d])
            if not len(gt_boxes[i]):
                continue
            iou = box_iou(detections[i][0][k:k + 1].float().cpu(), gt_boxes[i])[0]
            iou[taken[i][gt_index[i]]] = -1.0
            j = int(iou.argmax())
            if iou[j] >= iou_threshold:
                taken[i][gt_index[i][j]] = True
                tp[r] = 1.0
        per_class[c] = all_point_ap(tp, n_gt)
    m = sum(per_class.values()) / len(per_class) if per_class else float("nan")
    return m, per_class


def image_saliency(maps: Tensor, combine: str = "max") -> Tensor:
    """One ``(H, W)`` map in [0, 1] from an image's target maps ``(T, H, W)``, ``T >= 1``: each
    map min-max normalised, then their pixelwise max (or sum / mean), normalised again. Why the
    max: see the module docstring. The input is not changed."""
    if combine not in COMBINE:
        raise ValueError(f"Unknown combine {combine!r}; valid: {list(COMBINE)}")
    if maps.dim() != 3 or maps.shape[0] == 0:
        raise ValueError(f"maps must be (T, H, W) with T >= 1, got shape {tuple(maps.shape)}")
    norm = minmax_normalize(maps.float())
    out = norm.amax(0) if combine == "max" else norm.sum(0) if combine == "sum" else norm.mean(0)
    return minmax_normalize(out.unsqueeze(0))[0]


def box_maps(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Reference maps ``(T, H, W)``: a Gaussian centred on each box ``(T, 4)`` xyxy, sigma = half
    its width / height (the box's centre first, then outwards)."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32, device=boxes.device).view(1, -1, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float32, device=boxes.device).view(1, 1, -1) + 0.5
    b = boxes.float()
    cx, cy = ((b[:, 0] + b[:, 2]) / 2).view(-1, 1, 1), ((b[:, 1] + b[:, 3]) / 2).view(-1, 1, 1)
    sx, sy = ((b[:, 2] - b[:, 0]) / 2).clamp(min=1).view(-1, 1, 1), ((b[:, 3] - b[:, 1]) / 2).clamp(min=1).view(-1, 1, 1)
    return torch.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))


def random_maps(n: int, size: tuple[int, int], seed: int, device: torch.device | str = "cpu") -> Tensor:
    """Reference maps ``(n, H, W)`` of seeded uniform noise."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(n, *size, generator=gen).to(device)


#: reference explainers: name -> maps ``(T, H, W)`` from the targets' boxes ``(T, 4)``, the size and a seed
REFERENCE_MAPS = {
    "box": lambda boxes, size, seed: box_maps(boxes, size),
    "random": lambda boxes, size, seed: random_maps(len(boxes), size, seed, boxes.device),
}


class FolderDeletionInsertion(Metric):
    """The folder protocol's mAP curves and AUCs, one per explainer and mode (torchmetrics; rows of
    detections are ``cat`` states, so DDP processes each see a part of the folder).

    ``update(image_id, image, maps, ground_truth=None)``: ``image`` ``(3, H, W)`` in [0, 1];
    ``maps`` ``{explainer: (T, H, W)}`` (``T = 0``: no explained detection); ``ground_truth``
    ``(boxes (G, 4), labels (G,))`` in the image's pixels, or ``None`` (then the reference is the
    detector's final detections on ``image``; give it for all images or for none).
    ``compute()``: ``{"<mode>/<explainer>": AUC of mAP over f}``; :meth:`curves`: the curves.

    Args:
        detector: the detector (its final detections: ``score_threshold`` or the detector's own,
            its NMS and ``max_detections``).
        explainers: the names of the maps every update gives.
        modes: any of ``"deletion"``, ``"insertion"``.
        n_steps: fractions ``i / n_steps``, ``i = 0..n_steps``.
        batch_size: perturbed images per detector pass.
        combine: how an image's target maps become one (:func:`image_saliency`).
        iou_threshold: of a true positive (0.5).
        seed: of the random order of images without a map (per image: ``seed + image_id``).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, detector: Detector, explainers: Sequence[str] = ("drise",), modes: Sequence[str] = MODES,
                 n_steps: int = 20, batch_size: int = 16, combine: str = "max", iou_threshold: float = 0.5,
                 score_threshold: float | None = None, blur_kernel: int = DETECTION_BLUR_KERNEL,
                 blur_sigma: float = DETECTION_BLUR_SIGMA, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f"Invalid modes {bad or list(modes)}; valid: {list(MODES)}")
        if combine not in COMBINE:
            raise ValueError(f"Unknown combine {combine!r}; valid: {list(COMBINE)}")
        if int(n_steps) < 1 or not explainers:
            raise ValueError(f"n_steps must be >= 1 and explainers non-empty, got {n_steps}, {list(explainers)}")
        self.__dict__["detector"] = detector
        self.explainers, self.modes = list(explainers), list(modes)
        self.n_steps, self.batch_size, self.combine = int(n_steps), int(batch_size), combine
        self.iou_threshold, self.seed = float(iou_threshold), int(seed)
        self.score_threshold = detector.score_threshold if score_threshold is None else float(score_threshold)
        self.blur_kernel, self.blur_sigma = int(blur_kernel), float(blur_sigma)
        self.against: str | None = None
        # detections: (key, step, image, label, score, x1, y1, x2, y2); ground truth: (image, label, x1, y1, x2, y2)
        self.add_state("det_rows", default=[], dist_reduce_fx="cat")
        self.add_state("gt_rows", default=[], dist_reduce_fx="cat")
        self.add_state("images", default=[], dist_reduce_fx="cat")

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(m, e) for m in self.modes for e in self.explainers]

    @torch.no_grad()
    def update(self, image_id: int, image: Tensor, maps: Mapping[str, Tensor],  # type: ignore[override]
               ground_truth: tuple[Tensor, Tensor] | None = None) -> None:
        missing = [e for e in self.explainers if e not in maps]
        if missing:
            raise ValueError(f"no map for explainer(s) {missing}; give every one of {self.explainers}")
        against = AGAINST_GT if ground_truth is not None else AGAINST_DETECTIONS
        if self.against not in (None, against):
            raise ValueError("give ground truth for every image of the folder or for none")
        self.against = against
        det = self.detector
        device = image.device
        _, h, w = image.shape
        if ground_truth is None:
            ref = det.detect(image.unsqueeze(0))[0]
            gt_boxes, gt_labels = ref.boxes.float().cpu(), ref.labels.cpu()
        else:
            gt_boxes, gt_labels = ground_truth[0].float().cpu().view(-1, 4), ground_truth[1].long().cpu()
        self.images.append(torch.tensor([image_id], dtype=torch.long, device=self.device))
        gt = torch.cat([torch.full((len(gt_boxes), 1), float(image_id)), gt_labels.view(-1, 1).double(), gt_boxes.double()], 1)
        self.gt_rows.append(gt.to(self.device))
        blurred = blur(image.unsqueeze(0), self.blur_kernel, self.blur_sigma)[0]
        counts = step_counts(h * w, self.n_steps, device)
        fallback = None
        for e_index, name in enumerate(self.explainers):
            m = maps[name]
            if m.shape[0]:
                sal = image_saliency(m.to(device), self.combine)
            else:
                if fallback is None:
                    fallback = random_maps(1, (h, w), self.seed + int(image_id), device)[0]
                sal = fallback
            order = sal.reshape(-1).argsort(descending=True, stable=True)
            rank = torch.empty_like(order).scatter_(0, order, torch.arange(h * w, device=device))
            for mode in self.modes:
                start, finish = (image, blurred) if mode == "deletion" else (blurred, image)
                key = self.keys.index((mode, name))
                for part in chunks(self.n_steps + 1, self.batch_size):
                    changed = (rank.view(1, -1) < counts[part].view(-1, 1)).view(-1, 1, h, w)
                    inputs = torch.where(changed, finish, start)
                    for step, props in zip(range(part.start, part.stop), det.proposals(inputs)):
                        final = postprocess(props, self.score_threshold, det.nms_iou, det.max_detections)
                        n = len(final)
                        if not n:
                            continue
                        head = torch.tensor([key, step, image_id], dtype=torch.float64).expand(n, 3)
                        rows = torch.cat([head, final.labels.double().cpu().view(-1, 1), final.scores.double().cpu().view(-1, 1),
                                          final.boxes.double().cpu()], 1)
                        self.det_rows.append(rows.to(self.device))

    def _cat(self, rows: list[Tensor] | Tensor, width: int) -> Tensor:
        if isinstance(rows, Tensor):
            return rows.cpu()
        return torch.cat(rows).cpu() if rows else torch.zeros(0, width, dtype=torch.float64)

    def n_reference_boxes(self) -> int:
        """How many ground-truth boxes (or reference detections, without ground truth) so far."""
        return len(self._cat(self.gt_rows, 6))

    def curves(self) -> dict[tuple[str, str], Tensor]:
        """``{(mode, explainer): (n_steps + 1,)}`` mAP at ``f = i / n_steps``."""
        det, gt, ids = self._cat(self.det_rows, 9), self._cat(self.gt_rows, 6), self._cat(self.images, 1).flatten()
        images = sorted(set(int(i) for i in ids.tolist()))
        truth = []
        for i in images:
            g = gt[gt[:, 0] == i]
            truth.append((g[:, 2:6].float(), g[:, 1].long()))
        out = {}
        for key_index, key in enumerate(self.keys):
            mine = det[det[:, 0] == key_index]
            curve = torch.zeros(self.n_steps + 1)
            for step in range(self.n_steps + 1):
                at = mine[mine[:, 1] == step]
                dets = []
                for i in images:
                    d = at[at[:, 2] == i]
                    dets.append((d[:, 5:9].float(), d[:, 4], d[:, 3].long()))
                curve[step] = folder_average_precision(dets, truth, self.iou_threshold)[0]
            out[key] = curve
        return out

    def fractions(self) -> Tensor:
        """``(n_steps + 1,)`` the fraction of pixels perturbed at each step."""
        return torch.arange(self.n_steps + 1, dtype=torch.float32) / self.n_steps

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        x = self.fractions()
        return {f"{mode}/{name}": auc(x, c) for (mode, name), c in self.curves().items()}
