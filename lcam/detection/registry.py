"""Detectors by name: ``build_detector("yolov3_tiny")`` or a config mapping ``{name: ..., setting: ...}``.

Unknown names and unknown settings fail with the list of valid choices.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch

from lcam.detection.base import Detector


def _yolov3_tiny(**kwargs: Any) -> Detector:
    from lcam.detection.darknet import YOLOv3Tiny

    return YOLOv3Tiny(**kwargs)


def _retinaface(**kwargs: Any) -> Detector:
    from lcam.detection.faces import RetinaFaceDetector

    return RetinaFaceDetector(**kwargs)


def _torchvision(name: str) -> Callable[..., Detector]:
    def build(**kwargs: Any) -> Detector:
        from lcam.detection.torchvision_models import torchvision_detector

        return torchvision_detector(name, **kwargs)

    return build


def _registry() -> dict[str, Callable[..., Detector]]:
    from lcam.detection.torchvision_models import TORCHVISION_DETECTORS

    reg: dict[str, Callable[..., Detector]] = {"yolov3_tiny": _yolov3_tiny}
    try:
        from lcam.detection import faces  # noqa: F401 - only when its module exists

        reg["retinaface"] = _retinaface
    except ImportError:
        pass
    reg.update({name: _torchvision(name) for name in TORCHVISION_DETECTORS})
    return reg


#: optional features (:mod:`lcam.runtime.optional`) a detector needs beyond torch / torchvision
DETECTOR_FEATURES: dict[str, tuple[str, ...]] = {"retinaface": ("onnx_to_torch",)}


def require_detector_features(spec: str | Mapping[str, Any] | Detector) -> None:
    """Check, within a second and before anything is loaded, what the detector ``spec`` needs;
    raises :class:`lcam.runtime.optional.MissingDependency` naming the pip commands that repair it."""
    from lcam.runtime.optional import require

    if isinstance(spec, Detector):
        return
    name = spec if isinstance(spec, str) else dict(spec).get("name")
    require(*DETECTOR_FEATURES.get(str(name), ()))


def detector_names() -> list[str]:
    """Every name :func:`build_detector` takes."""
    return sorted(_registry())


def _settings_of(name: str) -> set[str]:
    if name == "yolov3_tiny":
        from lcam.detection.darknet import YOLOv3Tiny as cls
    elif name == "retinaface":
        from lcam.detection.faces import RetinaFaceDetector as cls  # type: ignore[no-redef]
    else:
        from lcam.detection.torchvision_models import TORCHVISION_DETECTORS, FasterRCNNDetector, TorchvisionDetector

        cls = FasterRCNNDetector if TORCHVISION_DETECTORS[name] == "faster_rcnn" else TorchvisionDetector  # type: ignore[assignment]
        extra = {"min_size", "max_size", "num_classes"}
        return {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model", "name", "kwargs")} | extra
    return {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}


def build_detector(spec: str | Mapping[str, Any] | Detector, device: torch.device | str | None = None) -> Detector:
    """A detector from a name, a config mapping (``name`` plus settings) or a ready detector.

    Raises:
        ValueError: unknown name or setting (the message lists the valid ones).
        DetectorWeightsError: weights missing offline (the message says how to provide them).
    """
    if isinstance(spec, Detector):
        det = spec
    else:
        settings = {"name": spec} if isinstance(spec, str) else dict(spec)
        name = settings.pop("name", None)
        reg = _registry()
        if name not in reg:
            raise ValueError(f"Unknown detector {name!r}; valid: {sorted(reg)}")
        settings = {k: v for k, v in settings.items() if not k.startswith("_")}
        valid = _settings_of(str(name))
        bad = sorted(set(settings) - valid)
        if bad:
            raise ValueError(f"Unknown setting(s) {bad} for detector {name}; valid: {sorted(valid)}")
        det = reg[str(name)](**settings)
    return det.to(device) if device is not None else det
