"""The detector interface D-RISE and the detection metrics use.

A :class:`Detector` maps images ``(B, 3, H, W)`` in [0, 1] to one :class:`Detections` per image:
boxes ``(N, 4)`` (x1, y1, x2, y2 in pixels of that image), an objectness ``(N,)`` or ``None``, and
class-probability vectors ``(N, C)``. :meth:`Detector.proposals` gives every proposal before the
final score threshold and non-maximum suppression, where the model allows (D-RISE compares each
masked image's proposals with the target); :meth:`Detector.detect` gives the final detections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

if TYPE_CHECKING:  # pragma: no cover
    from lcam.explainers.targets import ClassSpace


@dataclass
class Detections:
    """Detections (or proposals) of one image.

    Attributes:
        boxes: ``(N, 4)`` float, x1, y1, x2, y2 in pixels of the image the detector saw.
        probs: ``(N, C)`` class-probability vectors (what D-RISE compares by cosine).
        objectness: ``(N,)`` in [0, 1], or ``None`` for detectors without one.
        background: the column of ``probs`` that is the background class (never a label), or ``None``.
    """

    boxes: Tensor
    probs: Tensor
    objectness: Tensor | None = None
    background: int | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def _top(self) -> tuple[Tensor, Tensor]:
        probs = self.probs
        if self.background is not None and probs.shape[1] > 1:
            probs = probs.clone()
            probs[:, self.background] = -1.0
        if not probs.shape[1]:
            return probs.new_zeros(len(self)), torch.zeros(len(self), dtype=torch.long, device=probs.device)
        top, labels = probs.max(dim=1)
        return top, labels

    @property
    def labels(self) -> Tensor:
        """``(N,)`` the most probable class of each box (never the background column)."""
        return self._top()[1]

    @property
    def scores(self) -> Tensor:
        """``(N,)`` the detection score: objectness x top class probability (or the top probability)."""
        top = self._top()[0]
        return top * self.objectness if self.objectness is not None else top

    def select(self, index: Tensor) -> "Detections":
        """The detections at ``index`` (a bool mask or integer indices), as a new object."""
        obj = None if self.objectness is None else self.objectness[index]
        return Detections(self.boxes[index], self.probs[index], obj, self.background)

    def to(self, device: torch.device | str) -> "Detections":
        obj = None if self.objectness is None else self.objectness.to(device)
        return Detections(self.boxes.to(device), self.probs.to(device), obj, self.background)


def top_score_vectors(scores: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Class vectors for detectors that report only a top class and its score.

    Each ``(N,)`` score goes to its label's column and ``1 - score`` is spread evenly over the other
    ``C - 1`` columns, so the row sums to 1. Returns ``(N, C)``.
    """
    n = scores.shape[0]
    rest = ((1.0 - scores) / max(num_classes - 1, 1)).clamp(min=0.0)
    out = rest.view(n, 1).expand(n, num_classes).clone()
    out[torch.arange(n, device=scores.device), labels.long()] = scores.to(out.dtype)
    return out


def postprocess(proposals: Detections, score_threshold: float, nms_iou: float | None, max_detections: int | None = None) -> Detections:
    """Final detections from proposals: keep ``scores >= score_threshold``, then per-class NMS.

    Args:
        nms_iou: IoU above which a lower-scored box of the same class is dropped (``None``: no NMS).
        max_detections: keep at most this many, best first (``None``: all).

    The proposals' ``background`` column never counts as a detection.
    """
    scores, labels = proposals.scores, proposals.labels
    keep = torch.nonzero(scores >= score_threshold).squeeze(1)
    if nms_iou is not None and keep.numel():
        keep = keep[batched_nms(proposals.boxes[keep].float(), scores[keep].float(), labels[keep], float(nms_iou))]
    else:
        keep = keep[scores[keep].argsort(descending=True)]
    if max_detections is not None:
        keep = keep[: int(max_detections)]
    return proposals.select(keep)


class Detector(nn.Module):
    """Base of every detector: images ``(B, 3, H, W)`` in [0, 1] -> per image :class:`Detections`.

    Subclasses implement :meth:`proposals`. Attributes:

    * ``class_names``: ``C`` names, one per column of ``probs`` (background included where the
      model has one, then ``background`` is its column).
    * ``has_objectness``: whether proposals carry an objectness (D-RISE drops that factor if not).
    * ``full_vectors``: ``False`` when the model reports only a top class and score, so ``probs``
      are built by :func:`top_score_vectors` (said in the output of D-RISE runs).
    * ``score_threshold`` / ``nms_iou`` / ``max_detections``: the final detections' settings.
    """

    name: str = "detector"
    has_objectness: bool = False
    full_vectors: bool = True
    background: int | None = None

    def __init__(self, class_names: Sequence[str], score_threshold: float = 0.5, nms_iou: float | None = 0.45,
                 max_detections: int | None = 100) -> None:
        super().__init__()
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.class_names = list(class_names)
        self.score_threshold = float(score_threshold)
        self.nms_iou = None if nms_iou is None else float(nms_iou)
        self.max_detections = None if max_detections is None else int(max_detections)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def proposals(self, images: Tensor) -> list[Detections]:
        """Every proposal of each image of ``images`` ``(B, 3, H, W)`` in [0, 1], before the final
        score threshold and NMS (where the model allows). Runs without gradients."""
        raise NotImplementedError

    def detect(self, images: Tensor) -> list[Detections]:
        """The final detections of each image: score threshold, then per-class NMS."""
        return [postprocess(p, self.score_threshold, self.nms_iou, self.max_detections)
                for p in self.proposals(images)]

    def forward(self, images: Tensor) -> list[Detections]:  # type: ignore[override]
        return self.detect(images)

    @property
    def class_space(self) -> ClassSpace:
        """The detector's classes as the project's one target parser sees them
        (:class:`lcam.explainers.targets.ClassSpace`: ids, names, closest-name hints)."""
        from lcam.explainers.targets import ClassSpace

        return ClassSpace(self.num_classes, list(self.class_names))

    def class_index(self, ref: int | str) -> int:
        """A class id or name -> its column, by :attr:`class_space`; a one-line error naming the valid
        range (or the closest names) otherwise."""
        from lcam.runtime.io import InputError

        try:
            return self.class_space.index(ref)
        except InputError as err:
            raise InputError(f"Detector {self.name}: {err}") from None

    @property
    def first_class(self) -> int:
        return 1 if self.background == 0 and self.num_classes > 1 else 0
