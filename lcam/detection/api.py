"""Explain detections from Python in one call, the same shape as the classifier API::

    from lcam.detection import explain_detections
    results = explain_detections("yolov3_tiny", "photos/", n_masks=1000)
    for r in results:
        print(r.name, r.records())            # one row per detection (box in the file's pixels)
        r.overlay(0).save("first.png")        # map + box + class + score

``detector``: a name (:func:`~lcam.detection.registry.detector_names`), a config mapping or a
:class:`~lcam.detection.base.Detector`; ``images``: files, folders, globs, PIL images, ``"demo"``
or a ``(B, 3, H, W)`` tensor in [0, 1]. ``targets`` selects what is explained per image:

* ``None``: every detection above the detector's score threshold;
* a float ``0.3``: every detection scoring at least that (below the threshold too);
* a class id or name (``0``, ``"person"``): that class's detections;
* a mapping ``{"score": 0.3, "class": "person"}``: both conditions;
* explicit boxes ``[[x1, y1, x2, y2], [x1, y1, x2, y2, "dog"], ...]`` in the file's pixels (with
  no class, the class vector of the best-overlapping proposal is used; with one, a one-hot vector,
  which is how a missed ground-truth object is explained), or :class:`lcam.explainers.targets.Box`
  objects, the box target of the project's one target parser.

Classes (ids and names, their range and the closest-name hints) are resolved by that parser's
:class:`~lcam.explainers.targets.ClassSpace` (:meth:`Detector.class_index`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.ops import box_iou

from lcam.detection.base import Detections, Detector, postprocess
from lcam.detection.drise import DRISE, drise_similarity
from lcam.detection.metrics import energy_in_box
from lcam.detection.registry import build_detector
from lcam.explain.inputs import InputError, InputItem, collect_inputs
from lcam.explainers.targets import TOPK, Box
from lcam.explainers.targets import parse_targets as parse_class_targets
from lcam.runtime.io import try_read
from lcam.viz.overlays import draw_box, overlay_pil

COLUMNS = ["file", "detection", "class_id", "class_name", "score", "x1", "y1", "x2", "y2", "energy_in_box", "status"]


@dataclass
class DetectionExplanation:
    """The explained detections of one image.

    Attributes:
        name: the image's name (output file stem). file: its path, or ``<name>``.
        image: ``(3, H, W)`` in [0, 1], the working copy the detector saw (the file downscaled to
            ``max_size`` on its longer side when larger).
        scale: ``(sx, sy)``, file pixels per working pixel.
        targets: the ``T`` explained detections (boxes in working pixels).
        scores: ``(T,)`` each target's score (detector score, or for explicit boxes the D-RISE
            similarity of the best-matching proposal).
        maps: ``(T, H, W)`` D-RISE maps in [0, 1].
        class_names: the detector's class names.
    """

    name: str
    file: str
    image: Tensor
    scale: tuple[float, float]
    targets: Detections
    scores: Tensor
    maps: Tensor
    class_names: list[str] = field(repr=False)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def boxes(self) -> Tensor:
        """``(T, 4)`` boxes in the file's pixels."""
        sx, sy = self.scale
        return self.targets.boxes.cpu() * torch.tensor([sx, sy, sx, sy])

    def energy(self) -> list[float]:
        """Per target, the share of its map's sum inside its box."""
        return [energy_in_box(self.maps[t], self.targets.boxes[t]) for t in range(len(self))]

    def records(self) -> list[dict[str, Any]]:
        """One ``detections.csv`` row per target (a ``no detections`` row when there is none)."""
        if not len(self):
            return [{"file": self.file, "detection": "", "class_id": "", "class_name": "", "score": "", "x1": "", "y1": "",
                     "x2": "", "y2": "", "energy_in_box": "", "status": "no detections"}]
        rows = []
        labels = self.targets.labels.tolist()
        for t, (box, energy) in enumerate(zip(self.boxes.tolist(), self.energy())):
            rows.append({"file": self.file, "detection": t, "class_id": labels[t], "class_name": self.class_names[labels[t]],
                         "score": round(float(self.scores[t]), 4), **{k: round(v, 1) for k, v in zip(("x1", "y1", "x2", "y2"), box)},
                         "energy_in_box": round(energy, 4), "status": "ok"})
        return rows

    def title(self, t: int) -> str:
        return f"{self.class_names[int(self.targets.labels[t])]} {float(self.scores[t]):.2f}"

    def overlay(self, t: int, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
        """Target ``t``'s map over the image, with its box and ``class score`` drawn in."""
        return draw_box(overlay_pil(self.image, self.maps[t], alpha, cmap), self.targets.boxes[t].tolist(), self.title(t))


def working_image(img: Image.Image, max_size: int | None) -> tuple[Tensor, tuple[float, float]]:
    """PIL image -> ``(3, H, W)`` in [0, 1], downscaled (antialiased) so the longer side is at most
    ``max_size``; and ``(sx, sy)`` file pixels per working pixel."""
    w, h = img.size
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    if max_size and max(w, h) > int(max_size):
        f = int(max_size) / max(w, h)
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        x = F.interpolate(x.unsqueeze(0), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
        return x, (w / nw, h / nh)
    return x, (1.0, 1.0)


# -- targets -------------------------------------------------------------------------------


@dataclass
class TargetSpec:
    """What to explain in each image (see the module docstring); built by :func:`parse_targets`."""

    score: float | None = None
    class_id: int | None = None
    boxes: list[Box] | None = None  # corners in pixels of the file; label: class id or None


def box_target(xyxy: Sequence[float], label: Any, detector: Detector) -> Box:
    """A :class:`~lcam.explainers.targets.Box` (the shared box target) with its corners and class checked."""
    (box,) = _boxes([Box(*(float(v) for v in xyxy), label)], detector)
    return box


_HOW = "give a score (0.3), a class (id or name), {score:..., class:...} or boxes [[x1,y1,x2,y2(,class)]]"


def parse_targets(targets: Any, detector: Detector) -> TargetSpec:
    """Check a ``targets`` value against the detector; one-line ``ValueError`` when it is bad.

    A score threshold and ``{score, class}`` are the detector's own; classes and boxes are read by the
    project's one target parser (:func:`lcam.explainers.targets.parse_targets`, here with boxes allowed),
    a box also written as a list ``[x1, y1, x2, y2(, class)]``."""
    if targets is None:
        return TargetSpec()
    if isinstance(targets, bool):
        raise ValueError(f"targets={targets!r}: {_HOW}")
    if isinstance(targets, float):
        if not 0.0 <= targets <= 1.0:
            raise ValueError(f"targets={targets}: a score threshold must be in [0, 1]")
        return TargetSpec(score=float(targets))
    if isinstance(targets, Mapping):
        bad = sorted(set(targets) - {"score", "class"})
        if bad:
            raise ValueError(f"targets: unknown key(s) {bad}; valid: ['class', 'score']")
        spec = parse_targets(float(targets["score"]), detector) if targets.get("score") is not None else TargetSpec()
        if targets.get("class") is not None:
            spec.class_id = parse_targets(targets["class"], detector).class_id
        return spec
    if isinstance(targets, (int, str)) and not (isinstance(targets, str) and targets.strip().lower() == TOPK):
        return TargetSpec(class_id=_shared_plan(targets, detector)[0])  # type: ignore[arg-type]
    boxes = _box_list(targets)
    if boxes is None:
        raise ValueError(f"targets={targets!r}: {_HOW}")
    return TargetSpec(boxes=_boxes(boxes, detector))


def _box_list(targets: Any) -> list[Box] | None:
    """Box targets as :class:`Box` objects (labels as given), or ``None`` when ``targets`` is no box."""
    if isinstance(targets, Box):
        return [targets]
    if not isinstance(targets, Sequence) or isinstance(targets, str) or not targets:
        return None
    if all(isinstance(b, Box) for b in targets):
        return list(targets)
    if isinstance(targets[0], (int, float)) and len(targets) in (4, 5):
        targets = [targets]
    if not all(isinstance(b, Sequence) and not isinstance(b, str) for b in targets):
        return None
    for b in targets:
        if len(b) not in (4, 5):
            raise ValueError(f"targets: a box is [x1, y1, x2, y2] or [x1, y1, x2, y2, class], got {list(b)}")
    return [Box(*(float(v) for v in b[:4]), b[4] if len(b) == 5 else None) for b in targets]


def _boxes(boxes: list[Box], detector: Detector) -> list[Box]:
    """Boxes for every image, corners checked and classes resolved by the shared parser."""
    for b in boxes:
        if not (b.x1 < b.x2 and b.y1 < b.y2):
            raise ValueError(f"targets: box {[b.x1, b.y1, b.x2, b.y2]} needs x1 < x2 and y1 < y2")
    return _shared_plan([boxes], detector)  # type: ignore[return-value]


def _shared_plan(targets: Any, detector: Detector) -> list[int | Box]:
    """The one row of targets for every image, by :func:`lcam.explainers.targets.parse_targets`."""
    try:
        plan = parse_class_targets(targets, detector.class_space, num_images=1, boxes=True)
    except InputError as err:
        raise InputError(f"Detector {detector.name}: {err}") from None
    assert plan.rows is not None
    return plan.rows[0]


def select_targets(spec: TargetSpec, detector: Detector, proposals: Detections, size: tuple[int, int],
                   scale: tuple[float, float]) -> tuple[Detections, Tensor]:
    """The targets of one image and their scores, from its proposals ``(P, ...)`` (working pixels)."""
    if spec.boxes is not None:
        h, w = size
        sx, sy = scale
        fw, fh = w * sx, h * sy
        boxes, vecs = [], []
        for target in spec.boxes:
            xyxy, cls = [target.x1, target.y1, target.x2, target.y2], target.label
            if xyxy[0] < 0 or xyxy[1] < 0 or xyxy[2] > fw + 1e-6 or xyxy[3] > fh + 1e-6:
                raise ValueError(f"targets: box {xyxy} lies outside the image: x in [0, {fw:g}], y in [0, {fh:g}]")
            box = torch.tensor([xyxy[0] / sx, xyxy[1] / sy, xyxy[2] / sx, xyxy[3] / sy], device=proposals.boxes.device)
            if cls is None:
                if not len(proposals):
                    raise ValueError("targets: a box without a class needs a proposal to borrow its class from; give [x1,y1,x2,y2,class]")
                best = int(box_iou(box.view(1, 4), proposals.boxes.float()).argmax())
                vec = proposals.probs[best]
            else:
                vec = torch.zeros(detector.num_classes, device=proposals.probs.device)
                vec[cls] = 1.0
            boxes.append(box)
            vecs.append(vec)
        targets = Detections(torch.stack(boxes), torch.stack(vecs), None, proposals.background)
        if len(proposals):
            sim = drise_similarity(targets.boxes, targets.probs, proposals.boxes, proposals.probs, proposals.objectness)
            scores = sim.max(dim=1).values
        else:
            scores = torch.zeros(len(targets), device=targets.boxes.device)
        return targets, scores
    threshold = detector.score_threshold if spec.score is None else spec.score
    final = postprocess(proposals, threshold, detector.nms_iou, detector.max_detections)
    if spec.class_id is not None:
        final = final.select(final.labels == spec.class_id)
    return final, final.scores


# -- the call ------------------------------------------------------------------------------


def _items(images: Any) -> tuple[list[InputItem], Tensor | None]:
    if isinstance(images, Tensor):
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"An image tensor must be (B, 3, H, W) or (3, H, W) in [0, 1], got {tuple(images.shape)}")
        return [InputItem(f"image{i}", Image.new("RGB", (1, 1))) for i in range(x.shape[0])], x.float()
    return collect_inputs(images), None


def make_drise(detector: Detector, settings: Mapping[str, Any] | None) -> DRISE:
    """A :class:`DRISE` with ``settings`` (unknown keys name the valid ones)."""
    import inspect

    settings = dict(settings or {})
    valid = [p for p in inspect.signature(DRISE.__init__).parameters if p not in ("self", "detector")]
    bad = sorted(set(settings) - set(valid))
    if bad:
        raise ValueError(f"Unknown D-RISE setting(s) {bad}; valid: {valid}")
    return DRISE(detector, **settings)


def explain_one(detector: Detector, drise: DRISE, spec: TargetSpec, item: InputItem, image: Tensor,
                scale: tuple[float, float]) -> DetectionExplanation:
    """Detect, select targets and explain them for one working image ``(3, H, W)``."""
    x = image.to(detector.device).unsqueeze(0)
    proposals = detector.proposals(x)[0]
    targets, scores = select_targets(spec, detector, proposals, tuple(image.shape[-2:]), scale)  # type: ignore[arg-type]
    maps = drise.explain(x, [targets])[0]
    return DetectionExplanation(item.name, item.file, image.cpu(), scale, targets.to("cpu"), scores.cpu(), maps.cpu(),
                                detector.class_names)


def iter_explanations(detector: Detector, items: Sequence[InputItem], spec: TargetSpec, drise: DRISE,
                      max_size: int | None) -> Iterator[tuple[InputItem, DetectionExplanation | None, str]]:
    """Per item ``(item, explanation, "")`` or ``(item, None, error)`` for a file that cannot be read."""
    for item in items:
        img, error = try_read(item.source)  # the one reader (lcam.runtime.io): a bad file is one line
        if img is None:
            yield item, None, error
            continue
        image, scale = working_image(img, max_size)
        yield item, explain_one(detector, drise, spec, item, image, scale), ""


def explain_detections(detector: str | Mapping[str, Any] | Detector, images: Any, targets: Any = None, *,
                       max_size: int | None = 640, device: str | torch.device | None = None,
                       **drise_settings: Any) -> list[DetectionExplanation]:
    """Detect and explain, one :class:`DetectionExplanation` per image.

    Args:
        detector: a name, a config mapping (``{"name": "yolov3_tiny", "score_threshold": 0.3}``)
            or a :class:`Detector` (used as is, never changed).
        images: files, folders, globs, PIL images, ``"demo"``, a mapping ``name -> image``, or a
            tensor ``(B, 3, H, W)`` / ``(3, H, W)`` in [0, 1] (used at its size).
        targets: see the module docstring.
        max_size: files and PIL images larger than this on their longer side are downscaled.
        device: ``None``: the detector's device (a built detector goes to CUDA when available).
        drise_settings: :class:`DRISE` settings (``n_masks``, ``s``, ``p``, ``seed``, ``batch_size``...).

    Raises:
        InputError / ValueError: bad input (one line); OSError for an unreadable file.
    """
    if device is None and not isinstance(detector, Detector):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    det = build_detector(detector, device if not isinstance(detector, Detector) else None)
    spec = parse_targets(targets, det)
    drise = make_drise(det, drise_settings)
    items, tensor = _items(images)
    if tensor is not None:
        return [explain_one(det, drise, spec, item, tensor[i], (1.0, 1.0)) for i, item in enumerate(items)]
    out = []
    for item, result, error in iter_explanations(det, items, spec, drise, max_size):
        if result is None:
            raise OSError(f"Cannot read {item.file}: {error}")
        out.append(result)
    return out
