"""L-CAM as an explainer: one forward pass of a trained head gives the prediction and the map.

Registered as ``lcam``, built like every baseline::

    build_explainer({"name": "lcam", "ckpt_path": "run/checkpoints/last.ckpt"}, model)   # model may be None
    LCAMExplainer(model, head=trained_lcam_module.head)                                    # an in-memory head

The checkpoint is read safely (:mod:`lcam.model.checkpoint`) and only the head is rebuilt: this module
never imports the LightningModule or its training code.
"""
from __future__ import annotations

from torch import Tensor, nn

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import Explainer, Targets
from lcam.explainers.registry import register_explainer
from lcam.maps import normalize_then_upsample
from lcam.model.checkpoint import load_learned_head, same_backbone

__all__ = ["LCAMExplainer", "same_backbone"]


@register_explainer
class LCAMExplainer(Explainer):
    """A trained L-CAM-Fm / L-CAM-Img head.

    Args:
        model: the classifier to explain; must be the checkpoint's backbone (same name, layer,
            source and weights). ``None``: the backbone rebuilt from the checkpoint.
        ckpt_path: an L-CAM checkpoint written by ``train.py``.
        head: an attention head (``1x1 conv K -> C``, e.g. ``LCAM.head``) instead of a checkpoint;
            then ``model`` is required.
        backbone_weights: where the rebuilt backbone's weights come from when not from the run that
            wrote the checkpoint (``imagenet``, a file, ``none``).
        backbone: a backbone config for the rebuilt backbone; it must agree with the checkpoint's
            (name, layer, source), else a ``ValueError`` names both.
        variant: ``"img"`` or ``"fm"`` (reported only: both variants explain the same way).

    ``maps = explainer(images, targets)`` runs the frozen classifier once: the map
    ``U(minmax(A_c))`` and the prediction come from the same pass (``last_forward_passes == 1``).
    """

    name = "lcam"
    shares_features = True
    required_settings = ("ckpt_path",)
    checkpoint_setting = "ckpt_path"
    requirement_hint = "an L-CAM model or checkpoint (lcam.explain('.../last.ckpt', images))"

    def __init__(self, model: FrozenClassifier | None = None, ckpt_path: str | None = None, head: nn.Module | None = None,
                 backbone_weights: str | None = None, variant: str | None = None, backbone: dict | None = None) -> None:
        if head is None:
            if not ckpt_path:
                raise ValueError("The lcam explainer needs a checkpoint: set its ckpt_path=/path/to/last.ckpt")
            loaded = load_learned_head(ckpt_path, backbone=model if model is not None else backbone,
                                       backbone_weights=backbone_weights)
            head, model, variant = loaded.head, loaded.backbone, variant or loaded.variant
        elif model is None:
            raise ValueError("LCAMExplainer(head=...) needs the classifier the head was trained on: LCAMExplainer(model, head=head)")
        elif getattr(head, "conv", None) is not None and head.conv.in_channels != model.feature_channels:
            raise ValueError(f"The head takes {head.conv.in_channels} feature channels, the classifier gives {model.feature_channels}")
        super().__init__(model)
        self.ckpt_path = ckpt_path
        self.backbone_weights = backbone_weights
        self.backbone = backbone
        self.variant = variant
        self.head = head

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    def maps_from_features(self, images: Tensor, feats: Tensor, targets: Tensor) -> Tensor:
        """``U(minmax(A_c))`` ``(B, H, W)`` from ``F`` = ``feats`` ``(B, K, h, w)`` and class ids ``(B,)``."""
        import torch

        with torch.no_grad():
            maps = normalize_then_upsample(self.head.class_maps(feats, targets), images.shape[-2:])
        self.last_forward_passes = 1
        return maps.float()

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        import torch

        with torch.no_grad():
            feats = self.model.features(images)
            logits = self.model.classify(feats.clone()) if targets is None else None
        return self.maps_from_features(images, feats, self.targets_for(targets, images, logits))
