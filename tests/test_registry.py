"""Explainers register themselves with ``@register_explainer``; ``lcam.explainers.EXPLAINERS`` is the registry."""
from __future__ import annotations

import pytest

from lcam.explainers import EXPLAINERS, GradCAM, register_explainer
from lcam.explainers.registry import EXPLAINERS as REGISTRY


def test_every_method_is_registered_by_its_decorator_in_the_one_registry() -> None:
    assert EXPLAINERS is REGISTRY and EXPLAINERS["gradcam"] is GradCAM
    assert next(iter(EXPLAINERS)) == "lcam"  # the checkpoint method is listed first


def test_a_new_method_registers_with_one_line_and_names_stay_unique(monkeypatch) -> None:
    monkeypatch.setattr("lcam.explainers.registry.EXPLAINERS", dict(REGISTRY))  # leave the real registry as it was
    import lcam.explainers.registry as registry

    @register_explainer
    class Doubled(GradCAM):
        name = "doubledcam"

    assert registry.EXPLAINERS["doubledcam"] is Doubled and "doubledcam" not in EXPLAINERS
    with pytest.raises(ValueError, match="'gradcam' is taken by GradCAM"):
        register_explainer(type("Other", (GradCAM,), {"name": "gradcam"}))
    with pytest.raises(ValueError, match="lower-case"):
        register_explainer(type("Shouting", (GradCAM,), {"name": "LOUD"}))
