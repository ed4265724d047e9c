"""Explain images: ``lcam.explain(model, images, ...)`` from Python, ``python -m lcam.explain`` from the shell; analysis views.
May import: every layer below (runtime ... explainers); ``__main__`` (an entry point) also dispatches to lcam.detection.

This package is itself callable: ``lcam.explain(...)`` is :func:`lcam.explain.api.explain`, while
``python -m lcam.explain`` runs the Hydra command (:mod:`lcam.explain.cli`, ``conf/explain.yaml``).

Modules, one concern each: ``classifier`` (what a "model" is, and its layer), ``engine`` (a
registered explainer bound to it), ``stream`` (the one loop over images in batches, with progress),
``result`` (:class:`Explanation`), ``inputs`` (what images are), ``state`` (the caller's model is
left untouched), ``api`` / ``cli`` (the two front ends). Targets: :mod:`lcam.explainers.targets`.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from lcam.explain.api import explain, explain_with
from lcam.explain.engine import Engine, make_engine, method_choices
from lcam.explain.inputs import InputError, collect_inputs
from lcam.explain.result import Explanation

__all__ = ["Engine", "Explanation", "InputError", "collect_inputs", "explain", "explain_with", "make_engine", "method_choices"]


class _CallableModule(types.ModuleType):
    """Lets ``lcam.explain(...)`` call :func:`explain` while ``lcam.explain`` stays a package."""

    def __call__(self, *args: Any, **kwargs: Any) -> Explanation:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
