"""lcam: learned class activation maps (L-CAM) and the explainers they are compared with.

    from lcam import LCAM, explain, Explanation
    model = LCAM.load_from_checkpoint("run/checkpoints/last.ckpt")
    result = model.explain(images)                        # or lcam.explain("vgg16", images, method="gradcam")

On CPU, ``lcam.tune_cpu_allocator()`` makes masked passes faster (see :mod:`lcam.runtime.allocator`).
Heavy modules load on first use (``import lcam`` alone stays cheap).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from lcam import explain
    from lcam.explain.result import Explanation
    from lcam.model.module import LCAM

__all__ = ["LCAM", "Explanation", "__version__", "explain", "load_checkpoint", "tune_cpu_allocator"]

_LAZY = {"LCAM": ("lcam.model.module", "LCAM"), "Explanation": ("lcam.explain.result", "Explanation"),
         "load_checkpoint": ("lcam.model.module", "load_lcam_checkpoint"),
         "tune_cpu_allocator": ("lcam.runtime.allocator", "tune_cpu_allocator")}


def __getattr__(name: str) -> Any:
    if name == "explain":  # the callable package lcam.explain (lcam.explain(...) == lcam.explain.api.explain(...))
        return importlib.import_module("lcam.explain")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lcam' has no attribute {name!r}")
