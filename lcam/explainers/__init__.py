"""Explainers: ``explainer(images, targets=None) -> (B, H, W)`` saliency in [0, 1] (see ``base``), the registry, the target parser.
May import: runtime, maps, viz, data, backbones, metrics, model (L-CAM's head and checkpoints).

Registry names (``EXPLAINERS``): ``lcam`` (a trained L-CAM head, from ``ckpt_path``), ``gradcam``,
``gradcampp``, ``smoothgradcampp``, ``xgradcam``, ``guidedcam`` (guidance-map CAM), ``scorecam``,
``sscam1``, ``sscam2``, ``rise``, ``hirescam``, ``layercam``, ``eigencam`` (not class-discriminative),
``ablationcam``, and through Captum ``integratedgradients``, ``smoothgrad``, ``occlusion``. Build one with :func:`build_explainer` from a name or a config
mapping with a ``name`` key. A new method registers itself: ``@register_explainer`` on its class (:mod:`lcam.explainers.registry`).
"""
from __future__ import annotations  # noqa: I001 - the methods are imported in registration order (below)

import inspect
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import Explainer, resolve_targets
# importing a method's module registers it (@register_explainer); the registry keeps the order of registration,
# the order in which commands list the methods
from lcam.explainers.learned import LCAMExplainer
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
from lcam.explainers.cams import AblationCAM, EigenCAM, HiResCAM, LayerCAM
from lcam.explainers.captum_methods import IntegratedGradients, Occlusion, SmoothGrad
from lcam.explainers.crisp import CrispMask
from lcam.explainers.registry import EXPLAINERS, register_explainer
from lcam.explainers.targets import Box, ClassSpace, TargetPlan, parse_targets


def _as_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"Expected an explainer name or a mapping with a 'name' key, got {type(cfg).__name__}")


def explainer_settings(cfg_or_name: str | Mapping[str, Any]) -> tuple[type[Explainer], dict[str, Any]]:
    """``(class, settings)`` of a registry name or config (``name`` + settings), checked.

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
    cls = EXPLAINERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"Unknown explainer {name!r}; valid choices: {sorted(EXPLAINERS)}")
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"Unknown setting(s) {unknown} for explainer {cls.name!r}; valid settings: {valid}")
    return cls, settings


def missing_settings(cfg_or_name: str | Mapping[str, Any]) -> list[str]:
    """The required settings (``required_settings``) a config leaves empty, e.g. ``["ckpt_path"]`` for ``lcam``."""
    cls, settings = explainer_settings(cfg_or_name)
    return [k for k in cls.required_settings if settings.get(k) in (None, "", "???")]  # ??? : Hydra's missing value


def checkpoint_method() -> str:
    """The registered method whose model is a checkpoint file (``checkpoint_setting`` set), e.g. ``lcam``."""
    names = [n for n, cls in EXPLAINERS.items() if cls.checkpoint_setting]
    if len(names) != 1:
        raise ValueError(f"Expected one registered explainer that loads checkpoints, found {names}")
    return names[0]


def from_checkpoint(path: str, **settings: Any) -> Explainer:
    """The explainer of a checkpoint file, with the classifier it was trained on (``explainer.model``)."""
    name = checkpoint_method()
    return build_explainer({"name": name, EXPLAINERS[name].checkpoint_setting: path, **settings}, None)


def build_explainer(cfg_or_name: str | Mapping[str, Any], model: FrozenClassifier | None, **kwargs: Any) -> Explainer:
    """Build a registered explainer.

    Args:
        cfg_or_name: a registry name (``"gradcam"``) or a dict / ``DictConfig`` with a ``name`` key
            and the explainer's settings (e.g. ``{"name": "rise", "n_masks": 4000}``,
            ``{"name": "lcam", "ckpt_path": "last.ckpt"}``).
        model: the frozen classifier to explain; ``None`` for a method that brings its own (``lcam``
            rebuilds its checkpoint's backbone; read it back from ``explainer.model``).
        **kwargs: settings that override those of the config.

    Raises:
        ValueError: unknown name (the message lists the registry), unknown setting (lists the
            method's settings), or no classifier for a method that needs one.
    """
    cls, settings = explainer_settings(cfg_or_name)
    settings.update(kwargs)
    explainer_settings({"name": cls.name, **settings})  # the overrides are checked too
    if model is None and "model" in inspect.signature(cls.__init__).parameters:
        default = inspect.signature(cls.__init__).parameters["model"].default
        if default is inspect.Parameter.empty:
            raise ValueError(f"Explainer {cls.name!r} needs a classifier to explain: build_explainer(cfg, model)")
    return cls(model, **settings)


__all__ = [
    "EXPLAINERS",
    "register_explainer",
    "Box",
    "ClassSpace",
    "LCAMExplainer",
    "TargetPlan",
    "checkpoint_method",
    "explainer_settings",
    "from_checkpoint",
    "missing_settings",
    "parse_targets",
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
    "HiResCAM",
    "LayerCAM",
    "EigenCAM",
    "AblationCAM",
    "CrispMask",
    "IntegratedGradients",
    "SmoothGrad",
    "Occlusion",
    "build_explainer",
    "resolve_targets",
]
