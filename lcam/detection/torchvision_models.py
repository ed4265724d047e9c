"""torchvision detection models behind the :class:`~lcam.detection.base.Detector` interface.

* Faster R-CNN (:class:`FasterRCNNDetector`): every region proposal (1000 per image by default)
  with its full softmax class-probability vector over the 91 COCO columns (column 0 is the
  background) and the box regressed for its most probable foreground class, before the score
  threshold and NMS. No objectness (D-RISE drops that factor).
* RetinaNet, FCOS, SSD (:class:`TorchvisionDetector`): these report a top class and a score per
  box; proposals are the model's own detections with its score threshold lowered to
  ``proposal_threshold``, and their class vectors put the score at the class and spread the rest
  evenly (``full_vectors = False``; D-RISE says so when it runs).

Weights: ``"coco"`` (torchvision's COCO weights, from the torch hub cache, downloaded when online),
a path to a state-dict file, or ``"none"`` (random). Offline, missing weights raise a
:class:`~lcam.detection.weights.DetectorWeightsError` naming the file and how to provide it.
The caller's model is never changed: settings are lowered on a private copy.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes

from lcam.backbones.builders import DOWNLOAD_TIMEOUT_S, download_timeout
from lcam.backbones.weights import load_state_dict_file, torch_hub_checkpoint_dir
from lcam.detection.base import Detections, Detector, top_score_vectors
from lcam.detection.weights import DetectorWeightsError

#: torchvision detection models this module adapts (name -> family)
TORCHVISION_DETECTORS = {
    "fasterrcnn_resnet50_fpn": "faster_rcnn",
    "fasterrcnn_resnet50_fpn_v2": "faster_rcnn",
    "fasterrcnn_mobilenet_v3_large_fpn": "faster_rcnn",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "faster_rcnn",
    "retinanet_resnet50_fpn": "retinanet",
    "retinanet_resnet50_fpn_v2": "retinanet",
    "fcos_resnet50_fpn": "fcos",
    "ssd300_vgg16": "ssd",
    "ssdlite320_mobilenet_v3_large": "ssd",
}


def build_torchvision_model(name: str, weights: str | os.PathLike | None = "coco", **kwargs: Any) -> tuple[nn.Module, list[str]]:
    """A torchvision detection model and its class names.

    Args:
        name: one of :data:`TORCHVISION_DETECTORS`.
        weights: ``"coco"`` (the model's DEFAULT COCO weights: torch hub cache, else download),
            a state-dict file, or ``"none"``/``None`` (random weights, backbone included).
        kwargs: passed to the builder (e.g. ``min_size=512``).
    """
    if name not in TORCHVISION_DETECTORS:
        raise ValueError(f"Unknown torchvision detector {name!r}; valid: {sorted(TORCHVISION_DETECTORS)}")
    enum = torchvision.models.get_model_weights(name)
    categories = list(enum.DEFAULT.meta["categories"])
    if weights is None or str(weights).lower() == "none":
        return torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs), categories
    if str(weights).lower() in ("coco", "default") or str(weights) in enum.__members__:
        w = enum.DEFAULT if str(weights).lower() in ("coco", "default") else enum[str(weights)]
        file = w.url.rsplit("/", 1)[-1]
        try:
            with download_timeout(DOWNLOAD_TIMEOUT_S):
                model = torchvision.models.get_model(name, weights=w, weights_backbone=None, **kwargs)
        except (OSError, RuntimeError) as err:
            raise DetectorWeightsError(
                f"No COCO weights for detector {name}: {file} is not in the torch hub cache ({torch_hub_checkpoint_dir()}) "
                f"and the download failed ({type(err).__name__}). Provide the file with detector.weights=/path/to/{file}, "
                f"put it into that folder, or use detector.weights=none for random weights") from err
        return model, list(w.meta["categories"])
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise DetectorWeightsError(f"Detector weights file not found: {path}. Pass an existing file with "
                                   f"detector.weights=/path/to/file.pth, or detector.weights=coco")
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)
    try:
        model.load_state_dict(load_state_dict_file(path))
    except Exception as err:  # noqa: BLE001 - reported with the file
        raise DetectorWeightsError(f"{path} does not fit {name}: {' '.join(str(err).split())[:300]}") from err
    return model, categories


def _as_list(images: Tensor) -> list[Tensor]:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    return list(images)


class FasterRCNNDetector(Detector):
    """torchvision Faster R-CNN with each proposal's full class-probability vector.

    ``probs`` ``(P, 91)`` is the softmax of the box classifier (column 0: background); the box is
    the one regressed for the most probable foreground class, in the input image's pixels.

    Args:
        model: a torchvision ``FasterRCNN`` (copied, so the caller's model is untouched), or ``None``
            to build ``name`` with ``weights``.
        name, weights, kwargs: see :func:`build_torchvision_model`.
        class_names: names of the columns (default: the weights' COCO categories).
    """

    has_objectness = False
    background = 0

    def __init__(self, model: nn.Module | None = None, name: str = "fasterrcnn_resnet50_fpn", weights: str | None = "coco",
                 class_names: list[str] | None = None, score_threshold: float = 0.5, nms_iou: float | None = 0.5,
                 max_detections: int | None = 100, **kwargs: Any) -> None:
        if model is None:
            model, names = build_torchvision_model(name, weights, **kwargs)
        else:
            model, names = copy.deepcopy(model), class_names or [str(i) for i in range(model.roi_heads.box_predictor.cls_score.out_features)]
        super().__init__(class_names or names, score_threshold, nms_iou, max_detections)
        self.name = name
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def proposals(self, images: Tensor) -> list[Detections]:
        m = self.model
        originals = [tuple(img.shape[-2:]) for img in images]
        batch, _ = m.transform(_as_list(images))
        features = m.backbone(batch.tensors)
        props, _ = m.rpn(batch, features)
        heads = m.roi_heads
        feats = heads.box_head(heads.box_roi_pool(features, props, batch.image_sizes))
        logits, regression = heads.box_predictor(feats)
        boxes = heads.box_coder.decode(regression, props)  # (sum P, C, 4)
        probs = logits.softmax(dim=1)
        out = []
        start = 0
        for k, p in enumerate(props):
            n = p.shape[0]
            pr = probs[start:start + n]
            fg = pr[:, 1:].argmax(dim=1) + 1 if pr.shape[1] > 1 else torch.zeros(n, dtype=torch.long, device=pr.device)
            bx = boxes[start:start + n][torch.arange(n, device=pr.device), fg]
            bx = torchvision.ops.clip_boxes_to_image(bx, batch.image_sizes[k])
            out.append(Detections(resize_boxes(bx, batch.image_sizes[k], originals[k]), pr, None, self.background))
            start += n
        return out


class TorchvisionDetector(Detector):
    """RetinaNet, FCOS or SSD from torchvision: boxes with a top class and score.

    Proposals are the model's detections with its score threshold set to ``proposal_threshold``
    (and up to ``proposal_limit`` per image), on a private copy of the model. Class vectors:
    :func:`~lcam.detection.base.top_score_vectors` (``full_vectors = False``).
    """

    has_objectness = False
    full_vectors = False

    def __init__(self, model: nn.Module | None = None, name: str = "retinanet_resnet50_fpn", weights: str | None = "coco",
                 class_names: list[str] | None = None, score_threshold: float = 0.5, nms_iou: float | None = 0.5,
                 max_detections: int | None = 100, proposal_threshold: float = 0.05, proposal_limit: int = 300,
                 **kwargs: Any) -> None:
        if model is None:
            model, names = build_torchvision_model(name, weights, **kwargs)
        else:
            model = copy.deepcopy(model)
            names = class_names or [str(i) for i in range(int(getattr(model, "num_classes", 0) or 91))]
        super().__init__(class_names or names, score_threshold, nms_iou, max_detections)
        self.name = name
        self.background = 0 if self.class_names and self.class_names[0].startswith("__background") else None
        self.model = model.eval().requires_grad_(False)
        self.model.score_thresh = float(proposal_threshold)
        if hasattr(self.model, "detections_per_img"):
            self.model.detections_per_img = int(proposal_limit)

    @torch.no_grad()
    def proposals(self, images: Tensor) -> list[Detections]:
        outs = self.model(_as_list(images))
        return [Detections(o["boxes"], top_score_vectors(o["scores"], o["labels"], self.num_classes), None, self.background)
                for o in outs]


def torchvision_detector(name: str, **kwargs: Any) -> Detector:
    """The adapter for torchvision model ``name`` (Faster R-CNN: full vectors; others: top class)."""
    if name not in TORCHVISION_DETECTORS:
        raise ValueError(f"Unknown torchvision detector {name!r}; valid: {sorted(TORCHVISION_DETECTORS)}")
    cls = FasterRCNNDetector if TORCHVISION_DETECTORS[name] == "faster_rcnn" else TorchvisionDetector
    return cls(name=name, **kwargs)
