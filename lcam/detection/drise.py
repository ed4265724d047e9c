"""D-RISE: black-box saliency for any detector ("Black-box Explanation of Object Detectors via Saliency Maps", Petsiuk et al., https://arxiv.org/abs/2006.03204).

For ``N`` random RISE masks ``M_i`` (``s x s`` binary grids, each cell kept with probability
``p``, bilinearly upsampled to ``(s + 1) * cell`` pixels with ``cell = ceil(H / s)``, shifted by a
random offset in ``[0, cell)`` and cropped to ``H x W``) the detector sees ``x (.) M_i`` (masked
pixels become the ``substrate``: black, as D-RISE does, or a blurred copy). Each target detection
``t`` (box ``L_t``, class vector ``P_t``) is compared with every proposal ``j`` of the masked image::

    w_i(t) = max_j IoU(L_t, L_j) * cos(P_t, P_j) * O_j           (O_j dropped without objectness)
    S_t    = sum_i w_i(t) M_i / N,     map = minmax(S_t)

Every target of an image shares the same ``N`` masked forward passes. The grids and shifts are
drawn once from ``seed`` on the device (``N x s x s`` values, a few MB for ``N = 4000``); masks are
upsampled and applied ``batch_size`` at a time, so the masked images never exist all at once and
peak memory does not grow with ``N``. The chunk size never changes the maps (beyond float rounding).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from lcam.detection.base import Detections, Detector
from lcam.explainers.base import chunk_size, chunks, make_generator
from lcam.maps import minmax_normalize, substrate_images

#: what masked-out pixels become
DRISE_SUBSTRATES = ("black", "blur")


def drise_similarity(target_boxes: Tensor, target_probs: Tensor, boxes: Tensor, probs: Tensor,
                     objectness: Tensor | None) -> Tensor:
    """D-RISE's similarity of targets and proposals: ``IoU x cosine(class vectors) x objectness``.

    Args:
        target_boxes: ``(T, 4)`` xyxy. target_probs: ``(T, C)``.
        boxes: ``(P, 4)`` xyxy proposals. probs: ``(P, C)``. objectness: ``(P,)`` or ``None``
            (then that factor is 1).

    Returns:
        ``(T, P)``; a zero class vector has cosine 0.
    """
    iou = box_iou(target_boxes.float(), boxes.float())
    cos = F.normalize(target_probs.float(), dim=1) @ F.normalize(probs.float(), dim=1).T
    sim = iou * cos
    return sim * objectness.float().view(1, -1) if objectness is not None else sim


def mask_weights(targets: Detections, proposals: Sequence[Detections], use_objectness: bool = True) -> Tensor:
    """``w[t, i] = max_j sim(target t, proposal j of mask i)``: ``(T, n)`` for ``n`` masked images.

    A masked image without proposals weighs 0. All masks' proposals are compared in one call.
    """
    t = len(targets)
    n = len(proposals)
    device = targets.boxes.device
    out = torch.zeros(t, n, device=device)
    sizes = [len(p) for p in proposals]
    if t == 0 or sum(sizes) == 0:
        return out
    boxes = torch.cat([p.boxes for p in proposals]).to(device)
    probs = torch.cat([p.probs for p in proposals]).to(device)
    obj = None
    if use_objectness and all(p.objectness is not None for p in proposals):
        obj = torch.cat([p.objectness for p in proposals]).to(device)  # type: ignore[misc]
    sim = drise_similarity(targets.boxes, targets.probs, boxes, probs, obj)  # (T, sum P)
    owner = torch.repeat_interleave(torch.arange(n, device=device), torch.tensor(sizes, device=device))
    return out.scatter_reduce(1, owner.view(1, -1).expand(t, -1), sim, reduce="amax", include_self=True)


@dataclass
class MaskGrids:
    """The random part of ``N`` RISE masks: grids ``(N, s, s)`` (bool) and shifts ``(N, 2)`` (dy, dx)."""

    grids: Tensor
    shifts: Tensor
    cell: tuple[int, int]

    def __len__(self) -> int:
        return int(self.grids.shape[0])

    def render(self, index: slice, size: tuple[int, int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Masks ``index`` as ``(n, H, W)`` in [0, 1]: upsample to ``(s + 1) * cell``, shift, crop."""
        h, w = size
        s = self.grids.shape[-1]
        ch, cw = self.cell
        g = self.grids[index].to(dtype).unsqueeze(1)
        up = F.interpolate(g, size=((s + 1) * ch, (s + 1) * cw), mode="bilinear", align_corners=False).squeeze(1)
        dy, dx = self.shifts[index, 0], self.shifts[index, 1]
        rows = dy.view(-1, 1) + torch.arange(h, device=g.device)
        cols = dx.view(-1, 1) + torch.arange(w, device=g.device)
        idx = torch.arange(up.shape[0], device=g.device).view(-1, 1, 1)
        return up[idx, rows.unsqueeze(2), cols.unsqueeze(1)].clamp_(0.0, 1.0)


class DRISE:
    """D-RISE for any :class:`~lcam.detection.base.Detector`. ``#FW = n_masks`` per image.

    Args:
        detector: the detector (used through :meth:`Detector.proposals`; not changed).
        n_masks: ``N`` masks (the paper: 5000; maps settle from about 1000).
        s: grid side (D-RISE: 16).
        p: probability of keeping a grid cell.
        batch_size: masked images per detector pass; ``None``: 32 on an accelerator, ``max(4,
            threads)`` on CPU.
        seed: seed of the masks (the same masks for every image of the same size).
        substrate: ``"black"`` (D-RISE: ``x (.) M``) or ``"blur"`` (a blurred copy shows through).
        use_objectness: multiply by the proposal's objectness when the detector has one.
        normalize: min-max normalise each map to [0, 1] (``False``: the raw ``sum_i w_i M_i / N``).
        debias: subtract what the masks' uneven coverage alone puts into the sum:
            ``S_t = sum_i (w_i(t) - mean_i w_i(t)) M_i / N``. With many masks the coverage is flat and
            the normalised map is the same; with few it removes the noise of the constant part of the
            weights (``c sum_i M_i``), which otherwise dominates. ``False``: the paper's plain sum.
    """

    name = "drise"
    accelerator_batch_size = 32

    def __init__(self, detector: Detector, n_masks: int = 1000, s: int = 16, p: float = 0.5,
                 batch_size: int | None = None, seed: int = 0, substrate: str = "black",
                 use_objectness: bool = True, normalize: bool = True, debias: bool = False) -> None:
        if int(n_masks) < 1 or int(s) < 1:
            raise ValueError(f"n_masks and s must be >= 1, got n_masks={n_masks}, s={s}")
        if not 0.0 < float(p) < 1.0:
            raise ValueError(f"p must be in (0, 1), got {p}")
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if substrate not in DRISE_SUBSTRATES:
            raise ValueError(f"Unknown substrate {substrate!r}; valid: {list(DRISE_SUBSTRATES)}")
        self.detector = detector
        self.n_masks, self.s, self.p = int(n_masks), int(s), float(p)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.seed = int(seed)
        self.substrate = substrate
        self.use_objectness = bool(use_objectness)
        self.normalize = bool(normalize)
        self.debias = bool(debias)
        self.last_forward_passes = 0
        self.last_seconds = 0.0
        if not getattr(detector, "full_vectors", True):
            warnings.warn(f"{getattr(detector, 'name', 'detector')} reports only a top class and score: D-RISE compares "
                          f"class vectors with the score at that class and the rest spread evenly", stacklevel=2)

    def grids(self, size: tuple[int, int], device: torch.device) -> MaskGrids:
        """The ``N`` grids and shifts for images of ``size`` (drawn from ``seed`` on ``device``)."""
        h, w = int(size[0]), int(size[1])
        ch, cw = math.ceil(h / self.s), math.ceil(w / self.s)
        gen = make_generator(self.seed, device)
        grids = torch.rand(self.n_masks, self.s, self.s, generator=gen, device=device) < self.p
        dy = torch.randint(0, ch, (self.n_masks,), generator=gen, device=device)
        dx = torch.randint(0, cw, (self.n_masks,), generator=gen, device=device)
        return MaskGrids(grids, torch.stack([dy, dx], dim=1), (ch, cw))

    def masked_batch_size(self, device: torch.device) -> int:
        return chunk_size(self.batch_size, device, self.accelerator_batch_size)

    @torch.no_grad()
    def explain(self, images: Tensor, targets: Sequence[Detections]) -> list[Tensor]:
        """Maps of the targets of each image.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            targets: per image, the detections to explain (their boxes ``(T, 4)`` in that image's
                pixels and class vectors ``(T, C)``; usually the detector's own detections).

        Returns:
            per image a ``(T, H, W)`` tensor of maps (in [0, 1] when ``normalize``).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        if len(targets) != images.shape[0]:
            raise ValueError(f"one targets entry per image: {images.shape[0]} images, {len(targets)} entries")
        t0 = time.perf_counter()
        b, _, h, w = images.shape
        device = images.device
        masks = self.grids((h, w), device)
        size = self.masked_batch_size(device)
        substrate = substrate_images(images, self.substrate)
        out = []
        for i in range(b):
            tg = targets[i].to(device)
            sal = torch.zeros(len(tg), h, w, device=device)
            coverage = torch.zeros(h, w, device=device)
            total = torch.zeros(len(tg), device=device)  # debias: sum_i (w_i - shift)
            shift = None  # (T,) debias: the first chunk's mean weight; sums of w_i - shift keep float32 exact enough
            if len(tg):
                for part in chunks(self.n_masks, size):
                    m = masks.render(part, (h, w), images.dtype)  # (n, H, W)
                    masked = substrate[i] + (images[i] - substrate[i]) * m.unsqueeze(1)
                    weights = mask_weights(tg, self.detector.proposals(masked), self.use_objectness)
                    if self.debias:
                        if shift is None:
                            shift = weights.mean(1)
                        weights = weights - shift.view(-1, 1)
                        total += weights.sum(1)
                        coverage += m.float().sum(0)
                    sal += torch.einsum("tn,nhw->thw", weights, m.float())
            if self.debias and shift is not None:
                # sum_i (w_i - mean w) M_i = sum_i (w_i - shift) M_i - (mean w - shift) sum_i M_i
                sal -= (total / self.n_masks).view(-1, 1, 1) * coverage
            sal /= self.n_masks
            out.append(minmax_normalize(sal) if self.normalize and len(tg) else sal)
        self.last_forward_passes = self.n_masks * sum(1 for t in targets if len(t))
        self.last_seconds = time.perf_counter() - t0
        return out

    __call__ = explain
