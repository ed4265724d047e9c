"""Explain images: ``lcam.explain(model, images, ...)`` from Python, ``python -m lcam.explain`` from the shell.

This package is itself callable: ``lcam.explain(...)`` is :func:`lcam.explain.api.explain`, while
``python -m lcam.explain`` runs the Hydra command (:mod:`lcam.explain.cli`, ``conf/explain.yaml``).
"""
from __future__ import annotations

import sys
import types
from typing import Any

from lcam.explain.api import Engine, Explanation, explain, explain_with, make_engine, method_choices
from lcam.explain.inputs import InputError, collect_inputs

__all__ = ["Engine", "Explanation", "InputError", "collect_inputs", "explain", "explain_with", "make_engine", "method_choices"]


class _CallableModule(types.ModuleType):
    """Lets ``lcam.explain(...)`` call :func:`explain` while ``lcam.explain`` stays a package."""

    def __call__(self, *args: Any, **kwargs: Any) -> Explanation:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
