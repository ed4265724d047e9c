"""The training mask and the masked pass: ``sigmoid(A_c)`` or ``minmax(A_c)`` (``model.mask``), applied to the
features (``fm``: ``F (.) mask``) or to the image (``img``: ``x (.) U(mask)``)."""
from __future__ import annotations

import torch
from torch import Tensor

from lcam.maps import minmax_normalize, upsample

MASKS = ("sigmoid", "minmax")


class TrainingMask:
    """Mixin of :class:`lcam.model.module.LCAM` (needs ``mask_kind``, ``variant``, ``backbone``)."""

    def training_mask(self, a: Tensor) -> Tensor:
        """The mask the loss sees, from pre-sigmoid maps ``(B, h, w)`` or ``(B, B', h, w)``:
        ``sigmoid(A)`` or per-map ``minmax(A)`` (``model.mask``), same shape, in [0, 1]."""
        if self.mask_kind == "sigmoid":
            return torch.sigmoid(a)
        return minmax_normalize(a.reshape(-1, *a.shape[-2:])).view_as(a)

    def masked_logits(self, images: Tensor, feats: Tensor, mask: Tensor) -> Tensor:
        """Logits ``(B, C)`` of the masked input: ``F (.) mask`` (fm) or ``x (.) U(mask)`` (img); ``mask`` ``(B, h, w)``."""
        if self.variant == "fm":
            return self.backbone.classify(feats * mask.unsqueeze(1))
        return self.backbone(images * upsample(mask, images.shape[-2:]).unsqueeze(1))
