"""Explainers: ``explainer(images, targets=None) -> (B, H, W)`` saliency in [0, 1] (see ``base``).

Registry names (``EXPLAINERS``): ``gradcam``, ``gradcampp``, ``smoothgradcampp``, ``xgradcam``,
``guidedcam`` (guidance-map CAM), ``scorecam``, ``sscam1``, ``sscam2``, ``rise``. Build one with
:func:`build_explainer` from a name or a config mapping with a ``name`` key.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import Explainer, resolve_targets
from lcam.explainers.gradient import (
    GradCAM,
    GradCAMPlusPlus,
    GradientCAM,
    GuidanceMapCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from lcam.explainers.perturbation import SSCAM1, SSCAM2, ScoreCAM
from lcam.explainers.rise import RISE

EXPLAINERS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (GradCAM, GradCAMPlusPlus, SmoothGradCAMPlusPlus, XGradCAM, GuidanceMapCAM, ScoreCAM, SSCAM1, SSCAM2, RISE)
}


def _as_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"Expected an explainer name or a mapping with a 'name' key, got {type(cfg).__name__}")


def build_explainer(cfg_or_name: str | Mapping[str, Any], model: FrozenClassifier, **kwargs: Any) -> Explainer:
    """Build a registered explainer.

    Args:
        cfg_or_name: a registry name (``"gradcam"``) or a dict / ``DictConfig`` with a ``name`` key
            and the explainer's settings (e.g. ``{"name": "rise", "n_masks": 4000}``).
        model: the frozen classifier to explain.
        **kwargs: settings that override those of the config.

    Raises:
        ValueError: unknown name (the message lists the registry) or unknown setting (lists the
            method's settings).
    """
    if isinstance(cfg_or_name, str):
        name, settings = cfg_or_name, {}
    else:
        settings = _as_dict(cfg_or_name)
        if "name" not in settings:
            raise ValueError(f"Explainer config needs a 'name' key; valid names: {sorted(EXPLAINERS)}")
        name = settings.pop("name")
    settings.update(kwargs)
    cls = EXPLAINERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"Unknown explainer {name!r}; valid choices: {sorted(EXPLAINERS)}")
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"Unknown setting(s) {unknown} for explainer {cls.name!r}; valid settings: {valid}")
    return cls(model, **settings)


__all__ = [
    "EXPLAINERS",
    "RISE",
    "SSCAM1",
    "SSCAM2",
    "Explainer",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientCAM",
    "GuidanceMapCAM",
    "ScoreCAM",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "build_explainer",
    "resolve_targets",
]

from lcam.explainers.crisp import CrispMask  # noqa: E402 - crisp-mask optimisation (issue 12)
EXPLAINERS[CrispMask.name] = CrispMask
