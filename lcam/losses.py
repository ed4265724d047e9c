"""The L-CAM loss: cross-entropy + mask area + total variation (REFERENCE section 1).

``L = ce_coef * CE(f(x'), c) + area_coef * mean((sigmoid(A_c) + area_eps) ** area_power)
+ tv_coef * TV(sigmoid(A_c))`` with defaults ``1.5, 2, 0.01, 0.3`` and ``area_eps = 5e-4``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def total_variation(mask: Tensor, border_coef: float = 0.3) -> Tensor:
    """Total variation of Dabkowski & Gal with a border term.

    ``(sum (dx)^2 + sum (dy)^2 + border_coef * border) / (2 * B)``, where ``border`` is the sum
    of squared mask values over the four border lines (first and last row, first and last
    column; a corner lies on two lines and is counted twice).

    Args:
        mask: ``(B, h, w)`` in [0, 1].
    """
    b = mask.shape[0]
    dx = (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).sum()
    dy = (mask[:, 1:, :] - mask[:, :-1, :]).pow(2).sum()
    sq = mask.pow(2)
    border = sq[:, 0, :].sum() + sq[:, -1, :].sum() + sq[:, :, 0].sum() + sq[:, :, -1].sum()
    return (dx + dy + border_coef * border) / (2.0 * b)


def area_term(mask: Tensor, power: float = 0.3, eps: float = 5e-4) -> Tensor:
    """``mean((mask + eps) ** power)`` over all pixels of the batch; ``mask`` ``(B, h, w)``."""
    return (mask + eps).pow(power).mean()


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
    """

    def __init__(self, ce_coef: float = 1.5, area_coef: float = 2.0, tv_coef: float = 0.01,
                 area_power: float = 0.3, area_eps: float = 5e-4, tv_border_coef: float = 0.3) -> None:
        super().__init__()
        self.ce_coef, self.area_coef, self.tv_coef = float(ce_coef), float(area_coef), float(tv_coef)
        self.area_power, self.area_eps, self.tv_border_coef = float(area_power), float(area_eps), float(tv_border_coef)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor) -> LossTerms:
        """Args: ``logits`` ``(B, C)`` on the masked input, ``targets`` ``(B,)``, ``mask`` ``(B, h, w)`` = sigmoid(A_c)."""
        ce = F.cross_entropy(logits, targets)
        area = area_term(mask, self.area_power, self.area_eps)
        tv = total_variation(mask, self.tv_border_coef)
        total = self.ce_coef * ce
        if self.area_coef:
            total = total + self.area_coef * area
        if self.tv_coef:
            total = total + self.tv_coef * tv
        return LossTerms(ce=ce, area=area, tv=tv, total=total)
