"""Start-up checks of the optional dependencies: each feature, what it needs, and how to repair it.

A peer package can silently replace a dependency lcam was set up with: ``pip install grad-cam``
brings ``opencv-python-headless`` 5.x, whose ``cv2`` shadows the contrib build of
``requirements.txt`` (no ``cv2.ximgproc.segmentation``, no darknet reader in ``cv2.dnn``), and
``python -m lcam.summaries`` would otherwise fail only after minutes of crisp masks. The entry
points that need a feature call :func:`require` first (and the classes that need one call it
before loading any model), so a broken environment stops within a second with the pip commands
that repair it::

    from lcam.runtime.optional import require, check
    require("selective_search", "scikit_image")      # raises MissingDependency naming the repair
    check()                                           # {feature: problem or None} for every feature

Features (:data:`FEATURES`):

* ``selective_search``: ``cv2.ximgproc.segmentation`` (OpenCV contrib, < 5), visual summaries;
* ``opencv_darknet``: ``cv2.dnn.readNetFromDarknet`` (OpenCV < 5), the YOLOv3-tiny parity check;
* ``onnx_to_torch``: ``onnx`` and ``onnx2torch``, the face detector (:mod:`lcam.detection.faces`);
* ``scikit_image``: HOG and SSIM of the visual summaries; ``scikit_learn``: their Affinity Propagation.

The checks are cheap: ``cv2`` is imported (about 0.2 s; what matters is which ``cv2`` Python
finds), the other packages are located and their versions read from their metadata without
importing them (``sklearn.cluster`` alone takes about a second to import).
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import sys
from dataclasses import dataclass
from typing import Callable

from lcam.runtime.errors import UserError

OPENCV = "opencv-contrib-python-headless>=4.8,<5"
#: every OpenCV wheel that installs a ``cv2`` package (they overwrite each other's files)
OPENCV_DISTRIBUTIONS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
OPENCV_REPAIR = ("pip uninstall -y opencv-python-headless opencv-python opencv-contrib-python",
                 f'pip install --force-reinstall --no-deps "{OPENCV}"')


class MissingDependency(UserError, RuntimeError):
    """An optional feature's dependency is missing or shadowed; the message names the repair."""


@dataclass(frozen=True)
class Feature:
    """What a feature needs: ``needs`` (in words), ``probe()`` (``None`` when usable, else what is
    wrong) and ``repair`` (the shell commands that fix it, in order)."""

    name: str
    used_by: str
    needs: str
    probe: Callable[[], str | None]
    repair: tuple[str, ...]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def _opencv_found() -> str:
    installed = [f"{d} {v}" for d in OPENCV_DISTRIBUTIONS if (v := _version(d))]
    return "installed OpenCV wheels: " + (", ".join(installed) if installed else "none")


def _import_cv2() -> tuple[object | None, str | None]:
    try:
        return importlib.import_module("cv2"), None
    except Exception as err:  # noqa: BLE001 - a broken cv2 raises anything from ImportError to AttributeError
        return None, f"import cv2 failed ({type(err).__name__}: {err}); {_opencv_found()}"


def _attr_path(module: object, path: str) -> bool:
    obj = module
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _cv2_probe(path: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        cv2, error = _import_cv2()
        if cv2 is None:
            return error
        version = str(getattr(cv2, "__version__", "?"))
        where = getattr(cv2, "__file__", "?")
        if not _attr_path(cv2, path):
            why = "OpenCV 5 dropped it or another wheel shadows the contrib build" if _major(version) >= 5 else "not the contrib build"
            return f"cv2 {version} from {where} has no cv2.{path} ({why}); {_opencv_found()}"
        return None

    return probe


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it fail (how tests and users block a module)
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _package_probe(modules: tuple[str, ...], minimum: dict[str, str]) -> Callable[[], str | None]:
    def probe() -> str | None:
        missing = [m for m in modules if not _installed(m)]
        if missing:
            return "cannot import " + ", ".join(missing)
        old = []
        for dist, low in minimum.items():
            have = _version(dist)
            if have is not None and _version_tuple(have) < _version_tuple(low):
                old.append(f"{dist} {have} < {low}")
        return ("too old: " + ", ".join(old)) if old else None

    return probe


def _version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("selective_search", "visual summaries (python -m lcam.summaries)",
            "cv2.ximgproc.segmentation from OpenCV's contrib build < 5", _cv2_probe("ximgproc.segmentation.createSelectiveSearchSegmentation"),
            OPENCV_REPAIR),
    Feature("opencv_darknet", "the YOLOv3-tiny parity check against OpenCV's darknet reader",
            "cv2.dnn.readNetFromDarknet (OpenCV < 5)", _cv2_probe("dnn.readNetFromDarknet"), OPENCV_REPAIR),
    Feature("onnx_to_torch", "the face detector (detector=retinaface)", "onnx and onnx2torch>=1.5",
            _package_probe(("onnx", "onnx2torch"), {"onnx2torch": "1.5"}),
            ("pip uninstall -y onnx2torch", 'pip install "onnx2torch>=1.5" onnx')),
    Feature("scikit_image", "visual summaries (HOG, SSIM)", "scikit-image>=0.22",
            _package_probe(("skimage",), {"scikit-image": "0.22"}),
            ("pip uninstall -y scikit-image", 'pip install "scikit-image>=0.22"')),
    Feature("scikit_learn", "visual summaries (Affinity Propagation)", "scikit-learn>=1.3",
            _package_probe(("sklearn",), {"scikit-learn": "1.3"}),
            ("pip uninstall -y scikit-learn", 'pip install "scikit-learn>=1.3"')),
)}


def _feature(name: str) -> Feature:
    if name not in FEATURES:
        raise ValueError(f"Unknown optional feature {name!r}; valid: {sorted(FEATURES)}")
    return FEATURES[name]


def check(*names: str) -> dict[str, str | None]:
    """``{feature: None when usable, else what is wrong}`` for ``names`` (all features when none)."""
    return {name: _feature(name).probe() for name in (names or tuple(FEATURES))}


def message(name: str, problem: str) -> str:
    """The error text of a broken feature: what needs it, what it needs, what was found, the repair."""
    f = _feature(name)
    steps = " && ".join(f.repair)
    return f"{f.used_by} needs {f.needs}, but: {problem}. Repair with: {steps}"


def require(*names: str) -> None:
    """Raise :class:`MissingDependency` naming every broken feature of ``names`` and its repair
    commands (one sentence each); return silently when all are usable."""
    problems = [message(n, p) for n, p in check(*names).items() if p is not None]
    if problems:
        raise MissingDependency(" | ".join(problems))
