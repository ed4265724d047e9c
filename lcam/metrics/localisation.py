"""Localisation and comparison metrics (the papers are cited at each metric), as torchmetrics ``Metric`` classes.

Every metric here has one signature, ``update(images, maps, targets, boxes)``:

* ``images`` ``(B, 3, H, W)`` in [0, 1] (read only by the zone tests),
* ``maps`` ``(B, H, W)`` saliency in [0, 1] at image resolution,
* ``targets`` ``(B,)`` class ids (read only by the zone tests),
* ``boxes`` ``(B, K, 4)`` float boxes ``x1 y1 x2 y2`` in the pixels of ``maps``, padded with NaN
  rows (:func:`pad_boxes` builds it from per-image lists); an image whose rows are all NaN has no
  boxes and is left out of the box metrics (counted in ``skipped``).

Pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``; it belongs to a box when its centre
``(j + 0.5, i + 0.5)`` lies inside the box (edges included), so a box of integer corners covers
exactly ``(x2 - x1) * (y2 - y1)`` pixels. Several boxes on one image count as their union: the
pointing game scores a hit on any of them.

* :class:`PointingGame` (pointing-game paper): a hit when the map's maximum (the first one in
  row-major order) lies inside a box, or within ``tolerance`` pixels of one (the paper's 15 px).
  :func:`random_point_hit_rate` is the exact expected score of a uniformly random point.
* :class:`EnergyPointingGame` (Score-CAM): the share of the map's energy (sum) inside the boxes
  (0 for an all-zero map).
* :class:`MaskOverlap`: IoU and Dice of the thresholded map (``map >= threshold``, or the top
  ``keep_top`` fraction of pixels, ties kept) against the boxes' union, averaged over images.
* :class:`ZoneTest` (guidance-map paper): the confidence drop when only the salient zone (the same
  binarisation) is kept, ``ZoneKeep`` (lower is better), and when only its context is kept,
  ``ZoneDrop`` (higher is better); drop = ``100 * mean(max(0, Y - O) / Y)`` as Average Drop, and
  the share of increases ``ZoneKeepIC`` / ``ZoneDropIC``. Removed pixels become black (0 in [0, 1]
  pixel space), as in AD/IC. Zone tests need no boxes and score every image.
* :class:`WinRate` (SS-CAM paper's Win%): per pair of methods on the same images, the share of
  images where the first method's confidence drop is lower (ties count half, so
  ``Win[a, b] + Win[b, a] = 100``); ``update(drops)`` takes ``(B, M)`` per-image drops.
* :class:`LocalisationMetrics`: everything above in one metric (the ``evaluate.py boxes=`` columns
  ``PG, EPG, IoU, Dice, ZoneKeep, ZoneDrop``), plus each image's drop ``(Y - O) / Y`` on the
  explanation image ``x (.) map`` for the Win% table (:func:`win_rate_table`).
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lcam.data.boxes import pad_boxes  # noqa: F401 - the box layout lives with the boxes (re-exported)

#: the pointing-game paper's tolerance, in pixels
POINTING_TOLERANCE = 15.0


# -- boxes ---------------------------------------------------------------------------------------
def _check_boxes(boxes: Tensor, batch: int) -> Tensor:
    if boxes.ndim != 3 or boxes.shape[0] != batch or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be (B={batch}, K, 4) x1 y1 x2 y2, NaN-padded (see pad_boxes); got {tuple(boxes.shape)}")
    return boxes.float()


def has_boxes(boxes: Tensor) -> Tensor:
    """``(B, K, 4)`` -> ``(B,)`` bool: the image has at least one (non-NaN) box."""
    return ~torch.isnan(boxes).any(dim=2).all(dim=1)


def box_distance(points: Tensor, boxes: Tensor) -> Tensor:
    """Euclidean distance from points to the nearest box (0 inside or on an edge).

    Args:
        points: ``(B, P, 2)`` ``(x, y)`` in pixels.
        boxes: ``(B, K, 4)`` NaN-padded.

    Returns:
        ``(B, P)``; ``inf`` for an image without boxes.
    """
    valid = ~torch.isnan(boxes).any(dim=2)  # (B, K)
    b = torch.nan_to_num(boxes, nan=0.0).to(points.dtype)
    x, y = points[..., 0], points[..., 1]  # (B, P)
    best = torch.full_like(x, math.inf)
    for k in range(boxes.shape[1]):  # one box at a time: memory (B, P), not (B, P, K)
        x1, y1, x2, y2 = (b[:, k, i : i + 1] for i in range(4))  # (B, 1)
        dx = (x1 - x).clamp(min=0) + (x - x2).clamp(min=0)
        dy = (y1 - y).clamp(min=0) + (y - y2).clamp(min=0)
        dist = torch.where(valid[:, k : k + 1], torch.sqrt(dx * dx + dy * dy), torch.full_like(dx, math.inf))
        best = torch.minimum(best, dist)
    return best


def pixel_centres(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """``(H * W, 2)`` pixel centres ``(j + 0.5, i + 0.5)`` in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(width, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def box_masks(boxes: Tensor, size: tuple[int, int], tolerance: float | Tensor = 0.0) -> Tensor:
    """Union of each image's boxes (grown by ``tolerance`` px: a number, or ``(B,)`` per image) as a ``(B, H, W)``
    bool mask."""
    h, w = size
    grid = pixel_centres(h, w, boxes.device).expand(boxes.shape[0], -1, -1)
    tol = tolerance.to(boxes.device).view(-1, 1) if isinstance(tolerance, Tensor) else tolerance
    return (box_distance(grid, boxes) <= tol).view(boxes.shape[0], h, w)


# -- per-image scores ------------------------------------------------------------------------------
def max_points(maps: Tensor) -> Tensor:
    """``(B, H, W)`` -> ``(B, 2)`` ``(x, y)`` centre of each map's first maximum (row-major)."""
    b, _, w = maps.shape
    idx = maps.reshape(b, -1).argmax(dim=1)
    return torch.stack([(idx % w).float() + 0.5, (idx // w).float() + 0.5], dim=1)


def pointing_hits(maps: Tensor, boxes: Tensor, tolerance: float | Tensor = 0.0) -> Tensor:
    """``(B,)`` bool: the map's maximum lies within ``tolerance`` px (a number, or ``(B,)`` per image) of a box."""
    return box_distance(max_points(maps)[:, None, :], boxes)[:, 0] <= tolerance


def random_point_hit_rate(boxes: Tensor, size: tuple[int, int], tolerance: float | Tensor = 0.0) -> Tensor:
    """``(B,)`` exact pointing-game score of a uniformly random pixel: the share of pixels that hit (``tolerance``
    in pixels of ``size``: a number, or ``(B,)`` per image)."""
    return box_masks(boxes, size, tolerance).flatten(1).float().mean(dim=1)


def energy_inside(maps: Tensor, boxes: Tensor) -> Tensor:
    """``(B,)`` share of each map's sum inside its boxes (0 for an all-zero map)."""
    inside = box_masks(boxes, tuple(maps.shape[-2:]))
    m = maps.clamp(min=0).double()
    total = m.flatten(1).sum(1)
    return torch.where(total > 0, (m * inside).flatten(1).sum(1) / total.clamp(min=1e-300), torch.zeros_like(total)).float()


def binarize(maps: Tensor, threshold: float | None = 0.5, keep_top: float | None = None) -> Tensor:
    """``(B, H, W)`` bool salient zone: ``maps >= threshold``, or the top ``keep_top`` fraction per map (ties kept)."""
    if (threshold is None) == (keep_top is None):
        raise ValueError("give exactly one of threshold (a map value in [0, 1]) or keep_top (a fraction in (0, 1])")
    if keep_top is None:
        return maps >= threshold
    if not 0.0 < keep_top <= 1.0:
        raise ValueError(f"keep_top must be a fraction in (0, 1], got {keep_top}")
    flat = maps.reshape(maps.shape[0], -1)
    k = max(1, math.ceil(keep_top * flat.shape[1]))
    kth = flat.topk(k, dim=1).values[:, -1:]
    return (flat >= kth).view_as(maps)


def overlap(zone: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``(IoU, Dice)``, each ``(B,)``, of bool zones ``(B, H, W)`` against the boxes' union."""
    truth = box_masks(boxes, tuple(zone.shape[-2:]))
    inter = (zone & truth).flatten(1).sum(1).double()
    union = (zone | truth).flatten(1).sum(1).double()
    sizes = zone.flatten(1).sum(1).double() + truth.flatten(1).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
    dice = torch.where(sizes > 0, 2 * inter / sizes.clamp(min=1), torch.ones_like(inter))
    return iou.float(), dice.float()


@torch.no_grad()
def zone_confidences(model: Callable[[Tensor], Tensor], images: Tensor, maps: Tensor, targets: Tensor,
                     zone: Tensor) -> Tensor:
    """Target probabilities ``(B, 4)``: original, salient zone only, context only, ``x (.) map``.

    All ``4 B`` images go through ``model`` in one forward pass.
    """
    keep = zone.unsqueeze(1).to(images.dtype)
    batch = torch.cat([images, images * keep, images * (1 - keep), images * maps.unsqueeze(1).to(images.dtype)])
    probs = model(batch).softmax(dim=1).view(4, images.shape[0], -1)
    t = targets.to(probs.device).long().view(1, -1, 1).expand(4, -1, 1)
    return probs.gather(2, t).squeeze(2).t().float()


def _drop(y: Tensor, o: Tensor) -> Tensor:
    return (y - o).clamp(min=0) / y.clamp(min=1e-12)


# -- metrics -------------------------------------------------------------------------------------
class _BoxMetric(Metric):
    """Mean of per-image scores over images that have boxes; ``skipped`` counts the others."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = tuple(names)
        self.add_state("total", default=torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def scores(self, images: Tensor, maps: Tensor, targets: Tensor, boxes: Tensor) -> Tensor:
        """``(B, len(names))`` per-image scores (rows of images without boxes are ignored)."""
        raise NotImplementedError

    def update(self, images: Tensor, maps: Tensor, targets: Tensor, boxes: Tensor) -> None:  # type: ignore[override]
        boxes = _check_boxes(boxes.to(maps.device), maps.shape[0])
        ok = has_boxes(boxes)
        self.skipped += (~ok).sum()
        if ok.any():
            s = self.scores(images[ok] if images is not None else None, maps[ok],
                            targets[ok] if targets is not None else None, boxes[ok])
            self.total += s.double().sum(0)
            self.count += int(ok.sum())

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        n = self.count.clamp(min=1)
        return {name: (100.0 * self.total[i] / n).float() for i, name in enumerate(self.names)}


class PointingGame(_BoxMetric):
    """Pointing game in percent, ``{"PG": ...}`` (hits / images with boxes).

    Args:
        tolerance: pixels around the boxes that still count as a hit (pointing-game paper: 15).
    """

    def __init__(self, tolerance: float = 0.0, **kwargs) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
        super().__init__(["PG"], **kwargs)
        self.tolerance = float(tolerance)

    def scores(self, images, maps, targets, boxes):  # noqa: ANN001, ANN201
        return pointing_hits(maps, boxes, self.tolerance).float().unsqueeze(1)


class EnergyPointingGame(_BoxMetric):
    """Energy-based pointing game in percent, ``{"EPG": ...}`` (mean share of map energy in the boxes)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(["EPG"], **kwargs)

    def scores(self, images, maps, targets, boxes):  # noqa: ANN001, ANN201
        return energy_inside(maps, boxes).unsqueeze(1)


class MaskOverlap(_BoxMetric):
    """Mean IoU and Dice (percent) of the binarised map against the boxes, ``{"IoU": ..., "Dice": ...}``.

    Args:
        threshold: salient when ``map >= threshold`` (default 0.5), or
        keep_top: salient = the top fraction of pixels (then ``threshold=None``).
    """

    def __init__(self, threshold: float | None = 0.5, keep_top: float | None = None, **kwargs) -> None:
        binarize(torch.zeros(1, 1, 1), threshold, keep_top)  # validates the setting
        super().__init__(["IoU", "Dice"], **kwargs)
        self.threshold, self.keep_top = threshold, keep_top

    def scores(self, images, maps, targets, boxes):  # noqa: ANN001, ANN201
        return torch.stack(overlap(binarize(maps, self.threshold, self.keep_top), boxes), dim=1)


class ZoneTest(Metric):
    """Guidance-map zone tests in percent: ``ZoneKeep``, ``ZoneDrop`` (drops), ``ZoneKeepIC``, ``ZoneDropIC``.

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)`` (not a submodule).
        threshold, keep_top: the salient zone, as :class:`MaskOverlap`.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, model: Callable[[Tensor], Tensor], threshold: float | None = 0.5,
                 keep_top: float | None = None, **kwargs) -> None:
        binarize(torch.zeros(1, 1, 1), threshold, keep_top)
        super().__init__(**kwargs)
        self.__dict__["model"] = model
        self.threshold, self.keep_top = threshold, keep_top
        self.add_state("sums", default=torch.zeros(4, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: Tensor, maps: Tensor, targets: Tensor, boxes: Tensor | None = None) -> None:  # type: ignore[override]
        p = zone_confidences(self.model, images, maps, targets, binarize(maps, self.threshold, self.keep_top)).double()
        y, keep, ctx = p[:, 0], p[:, 1], p[:, 2]
        self.sums += torch.stack([_drop(y, keep).sum(), _drop(y, ctx).sum(), (keep > y).double().sum(), (ctx > y).double().sum()])
        self.count += images.shape[0]

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        v = (100.0 * self.sums / self.count.clamp(min=1)).float()
        return {"ZoneKeep": v[0], "ZoneDrop": v[1], "ZoneKeepIC": v[2], "ZoneDropIC": v[3]}


class WinRate(Metric):
    """Win% of every method over every other on the same images (SS-CAM paper).

    ``update(drops)`` takes per-image confidence drops ``(B, M)`` (column ``m`` = method ``m``;
    lower is better); ``compute()`` returns ``(M, M)``: entry ``[a, b]`` = percent of images where
    ``a``'s drop is lower than ``b``'s (ties count half), NaN on the diagonal. Drops within
    ``tie_tolerance`` of each other tie: two methods that give the same map up to float rounding
    (Grad-CAM and XGrad-CAM on a global-average-pooling classifier) score 50%, not a coin toss
    decided by rounding.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_methods: int, tie_tolerance: float = 1e-5, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_methods < 1:
            raise ValueError(f"num_methods must be >= 1, got {num_methods}")
        self.num_methods, self.tie_tolerance = int(num_methods), float(tie_tolerance)
        self.add_state("wins", default=torch.zeros(num_methods, num_methods, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, drops: Tensor) -> None:  # type: ignore[override]
        d = drops.detach().double()
        if d.ndim != 2 or d.shape[1] != self.num_methods:
            raise ValueError(f"drops must be (B, {self.num_methods}), got {tuple(d.shape)}")
        a, b = d[:, :, None], d[:, None, :]
        tie = (a - b).abs() <= self.tie_tolerance
        self.wins += ((~tie & (a < b)).double() + 0.5 * tie.double()).sum(0)
        self.count += d.shape[0]

    def compute(self) -> Tensor:  # type: ignore[override]
        out = (100.0 * self.wins / self.count.clamp(min=1)).float()
        return out.fill_diagonal_(math.nan)


#: the ``evaluate.py boxes=`` columns, in order
LOCALISATION_COLUMNS = ("PG", "EPG", "IoU", "Dice", "ZoneKeep", "ZoneDrop")


class LocalisationMetrics(Metric):
    """Every localisation column of one method in one metric: ``update(images, maps, targets, boxes)``.

    ``compute()`` returns ``PG, EPG, IoU, Dice`` (images with boxes) and ``ZoneKeep, ZoneDrop``
    (every image) in percent; :attr:`drops` after ``compute()``/``sync`` holds each image's drop
    ``(Y - O) / Y`` on ``x (.) map`` in update order, for :func:`win_rate_table`.

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)`` (not a submodule).
        tolerance: pointing-game tolerance in pixels (0: strict; the paper's 15): pixels of the stored
            image when ``update`` / ``per_image`` get the images' ``scales``, else pixels of ``maps``.
        threshold, keep_top: the binarisation for IoU/Dice and the zone tests.
    """

    full_state_update = False
    higher_is_better = None
    takes_boxes = True
    columns = LOCALISATION_COLUMNS

    def __init__(self, model: Callable[[Tensor], Tensor], tolerance: float = 0.0, threshold: float | None = 0.5,
                 keep_top: float | None = None, **kwargs) -> None:
        binarize(torch.zeros(1, 1, 1), threshold, keep_top)
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
        super().__init__(**kwargs)
        self.__dict__["model"] = model
        self.tolerance, self.threshold, self.keep_top = float(tolerance), threshold, keep_top
        self.add_state("box_sums", default=torch.zeros(4, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("box_count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("zone_sums", default=torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("drops", default=[], dist_reduce_fx="cat")
        self._synced_drops: Tensor | list | None = None

    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor, boxes: Tensor,
                  scales: Tensor | None = None) -> dict[str, Tensor]:
        """Each image's columns, in %: ``PG`` (hit 100 / miss 0), ``EPG``, ``IoU``, ``Dice`` (NaN for an
        image without boxes), ``ZoneKeep``, ``ZoneDrop`` (its confidence drops), plus ``drop`` ``(Y - O) / Y``
        on ``x (.) map`` (a fraction, for Win%).

        Args:
            images ``(B, 3, H, W)``, maps ``(B, H, W)``, targets ``(B,)``, boxes ``(B, K, 4)`` NaN-padded.
            scales: ``(B,)`` map pixels per stored-image pixel (:attr:`lcam.data.boxes.BoxedDataset.scales`):
                the pointing-game tolerance is ``tolerance`` pixels of the *stored* (annotated) image,
                ``tolerance * scale`` map pixels. ``None``: the tolerance is in map pixels.
        """
        boxes = _check_boxes(boxes.to(maps.device), maps.shape[0])
        zone = binarize(maps, self.threshold, self.keep_top)
        ok = has_boxes(boxes)
        nan = torch.full((maps.shape[0],), math.nan, dtype=torch.float64, device=maps.device)
        pg, epg, iou, dice = nan.clone(), nan.clone(), nan.clone(), nan.clone()
        if ok.any():
            tol = self.tolerance if scales is None else self.tolerance * scales.to(maps.device).double()[ok]
            pg[ok] = pointing_hits(maps[ok], boxes[ok], tol).double()
            i, d = overlap(zone[ok], boxes[ok])
            iou[ok], dice[ok] = i.double(), d.double()
            epg[ok] = energy_inside(maps[ok], boxes[ok]).double()
        p = zone_confidences(self.model, images, maps, targets, zone).double()
        y = p[:, 0]
        return {"PG": 100.0 * pg, "EPG": 100.0 * epg, "IoU": 100.0 * iou, "Dice": 100.0 * dice,
                "ZoneKeep": 100.0 * _drop(y, p[:, 1]), "ZoneDrop": 100.0 * _drop(y, p[:, 2]),
                "drop": (y - p[:, 3]) / y.clamp(min=1e-12)}

    def update(self, images: Tensor, maps: Tensor, targets: Tensor, boxes: Tensor,  # type: ignore[override]
               scales: Tensor | None = None) -> None:
        v = self.per_image(images, maps, targets, boxes, scales)
        ok = ~torch.isnan(v["PG"])
        if ok.any():
            self.box_sums += torch.stack([v[k][ok].sum() / 100.0 for k in ("PG", "EPG", "IoU", "Dice")])
            self.box_count += int(ok.sum())
        self.zone_sums += torch.stack([v["ZoneKeep"].sum() / 100.0, v["ZoneDrop"].sum() / 100.0])
        self.count += images.shape[0]
        self.drops.append(v["drop"].float())

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        # states are synced across processes inside compute(): keep the gathered drops for Win%
        self._synced_drops = torch.cat(self.drops) if isinstance(self.drops, list) and self.drops else self.drops
        box = (100.0 * self.box_sums / self.box_count.clamp(min=1)).float()
        zone = (100.0 * self.zone_sums / self.count.clamp(min=1)).float()
        return dict(zip(LOCALISATION_COLUMNS, [*box, *zone]))

    def reset(self) -> None:
        super().reset()
        self._synced_drops = None

    def image_drops(self) -> Tensor:
        """``(N,)`` per-image drops ``(Y - O) / Y``: of every process as gathered by the last ``compute()``
        (under DDP), else of this process."""
        drops = getattr(self, "_synced_drops", None)
        if drops is None or (isinstance(drops, list) and not drops):
            drops = self.drops
        if isinstance(drops, list):
            return torch.cat(drops) if drops else torch.zeros(0)
        return drops


def win_rate_table(drops: Mapping[str, Tensor]) -> tuple[list[str], Tensor]:
    """Method names and the ``(M, M)`` Win% matrix from each method's per-image drops (same images, same order)."""
    names = list(drops)
    lengths = {n: int(d.numel()) for n, d in drops.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Win% needs the same images for every method; got per-method counts {lengths}")
    metric = WinRate(len(names))
    if names and lengths[names[0]]:
        metric.update(torch.stack([drops[n].reshape(-1).cpu() for n in names], dim=1))
    return names, metric.compute()
