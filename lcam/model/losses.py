"""The L-CAM loss: cross-entropy + mask area + total variation (L-CAM, "Learning Visual Explanations for DCNN-Based Image Classifiers Using an Attention Mechanism", https://arxiv.org/abs/2209.11189).

``L = ce_coef * CE(f(x'), c) + area_coef * mean((sigmoid(A_c) + area_eps) ** area_power)
+ tv_coef * TV(sigmoid(A_c))`` with defaults ``1.5, 2, 0.01, 0.3`` and ``area_eps = 5e-4``.

Which maps the area and TV terms see (``regularize``):

* ``"own"`` (default, the paper's text): each sample's map for its own target, ``(B, h, w)``;
* ``"batch"`` (the official training code, ``masks = a[:, labels]``): a ``(B, B, h, w)`` block,
  every sample's map for every target of the batch. The area term is its mean; the TV sums over
  the whole block and divides by ``2 * B`` (as the official code), so it weighs about ``B`` times
  more than with ``"own"``. The cross-entropy always uses each sample's own map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


def total_variation(mask: Tensor, border_coef: float = 0.3) -> Tensor:
    """Total variation of Dabkowski & Gal with a border term.

    ``(sum (dx)^2 + sum (dy)^2 + border_coef * border) / (2 * B)``, where ``border`` is the sum
    of squared mask values over the four border lines (first and last row, first and last
    column; a corner lies on two lines and is counted twice).

    Args:
        mask: ``(B, h, w)`` or ``(B, B', h, w)`` in [0, 1]; sums run over every map, ``B`` is the
            first dimension.
    """
    b = mask.shape[0]
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).pow(2).sum()
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).pow(2).sum()
    sq = mask.pow(2)
    border = sq[..., 0, :].sum() + sq[..., -1, :].sum() + sq[..., :, 0].sum() + sq[..., :, -1].sum()
    return (dx + dy + border_coef * border) / (2.0 * b)


def area_term(mask: Tensor, power: float = 0.3, eps: float = 5e-4) -> Tensor:
    """``mean((mask + eps) ** power)`` over all pixels of all maps; ``mask`` ``(B, h, w)`` or ``(B, B', h, w)``."""
    return (mask + eps).pow(power).mean()


#: which maps the area and TV terms see
REGULARIZE = ("own", "batch")


@dataclass
class LossTerms:
    """Unweighted terms and the weighted total (all scalars)."""

    ce: Tensor
    area: Tensor
    tv: Tensor
    total: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {"ce": self.ce, "area": self.area, "tv": self.tv, "total": self.total}


class LCAMLoss(nn.Module):
    """The L-CAM loss with its three named terms.

    Args:
        ce_coef, area_coef, tv_coef: l1, l2, l3 of the paper (1.5, 2, 0.01).
        area_power: l4 (0.3). area_eps: keeps the power's gradient finite at 0 (5e-4).
        tv_border_coef: weight of the border term of the TV (0.3).
        regularize: ``"own"`` (paper) or ``"batch"`` (official code): the maps the area and TV
            terms see (see the module docstring).
    """

    def __init__(self, ce_coef: float = 1.5, area_coef: float = 2.0, tv_coef: float = 0.01,
                 area_power: float = 0.3, area_eps: float = 5e-4, tv_border_coef: float = 0.3,
                 regularize: str = "own") -> None:
        super().__init__()
        if regularize not in REGULARIZE:
            raise ValueError(f"model.loss.regularize must be one of {list(REGULARIZE)}, got {regularize!r}")
        self.regularize = regularize
        self.ce_coef, self.area_coef, self.tv_coef = float(ce_coef), float(area_coef), float(tv_coef)
        self.area_power, self.area_eps, self.tv_border_coef = float(area_power), float(area_eps), float(tv_border_coef)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor) -> LossTerms:
        """Args: ``logits`` ``(B, C)`` on the masked input, ``targets`` ``(B,)``, ``mask`` the maps the
        area and TV terms see: ``(B, h, w)`` = sigmoid(A_c) (``own``) or ``(B, B, h, w)`` (``batch``)."""
        ce = F.cross_entropy(logits, targets)
        area = area_term(mask, self.area_power, self.area_eps)
        tv = total_variation(mask, self.tv_border_coef)
        total = self.ce_coef * ce
        if self.area_coef:
            total = total + self.area_coef * area
        if self.tv_coef:
            total = total + self.tv_coef * tv
        return LossTerms(ce=ce, area=area, tv=tv, total=total)
