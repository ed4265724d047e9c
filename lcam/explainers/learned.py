"""L-CAM as an explainer: one forward pass of a trained head gives the prediction and the map."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import Explainer, Targets

if TYPE_CHECKING:
    from lcam.module import LCAM


def same_backbone(a: FrozenClassifier, b: FrozenClassifier) -> bool:
    """True when two classifiers have the same identity (name, layer, source, weights)."""
    if a is b:
        return True
    if a.spec is None or b.spec is None:
        return False
    keys = ("name", "layer", "source", "weights")
    return all(getattr(a.spec, k) == getattr(b.spec, k) for k in keys)


class LCAMExplainer(Explainer):
    """A trained L-CAM-Fm / L-CAM-Img head.

    Args:
        model: the classifier to explain; must be the checkpoint's backbone (same name, layer,
            source and weights). ``None``: use the backbone rebuilt from the checkpoint.
        ckpt_path: an L-CAM checkpoint written by ``train.py``.
        module: an already loaded :class:`~lcam.module.LCAM` (instead of ``ckpt_path``).

    ``maps = explainer(images, targets)`` runs the frozen classifier once: the map
    ``U(minmax(A_c))`` and the prediction come from the same pass (``last_forward_passes == 1``).
    """

    name = "lcam"

    def __init__(self, model: FrozenClassifier | None = None, ckpt_path: str | None = None,
                 module: "LCAM | None" = None) -> None:
        if module is None:
            if not ckpt_path:
                raise ValueError("The lcam explainer needs a checkpoint: explainer.ckpt_path=/path/to/last.ckpt")
            if not os.path.isfile(os.path.expanduser(str(ckpt_path))):
                raise FileNotFoundError(f"L-CAM checkpoint not found: {ckpt_path}. Set explainer.ckpt_path=/path/to/last.ckpt")
            from lcam.module import LCAM

            module = LCAM.load_from_checkpoint(os.path.expanduser(str(ckpt_path)), map_location="cpu")
        if model is not None:
            if not same_backbone(model, module.backbone):
                raise ValueError(
                    f"The L-CAM checkpoint was trained on {module.backbone.spec} but the classifier to explain is "
                    f"{model.spec}; evaluate it with the checkpoint's backbone"
                )
            module.backbone = model  # share one copy of the frozen classifier
        super().__init__(module.backbone)
        self.ckpt_path = ckpt_path
        self.lcam = module.eval()

    @property
    def variant(self) -> str:
        return self.lcam.variant

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        maps, logits, _ = self.lcam.saliency(images, None if targets is None else self.targets_for(targets, images, None))
        self.last_forward_passes = 1
        return maps
