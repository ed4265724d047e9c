"""Object detectors behind one small interface, D-RISE, and detection insertion/deletion, with its API and CLI.
May import: every layer up to lcam.explain (inputs, stream, targets); not lcam.evaluation or lcam.summaries.

    from lcam.detection import explain_detections, build_detector, DRISE
"""
from lcam.detection.base import Detections, Detector
from lcam.detection.drise import DRISE
from lcam.detection.registry import build_detector, detector_names


def explain_detections(*args, **kwargs):  # noqa: D103 - documented in lcam.detection.api
    from lcam.detection.api import explain_detections as run

    return run(*args, **kwargs)


explain_detections.__doc__ = "Detect and explain with D-RISE; see :func:`lcam.detection.api.explain_detections`."

__all__ = ["DRISE", "Detections", "Detector", "build_detector", "detector_names", "explain_detections"]
