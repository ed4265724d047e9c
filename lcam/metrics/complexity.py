"""Complexity of a map: sparseness (Gini index) and entropy, one value per image.

* ``Gini`` — Chalasani, Chen, Chowdhury, Wu and Jha, "Concise explanations of neural networks
  using adversarial training", ICML 2020 (https://arxiv.org/abs/1810.06583), as Quantus'
  ``Sparseness``: with the map's ``n = H * W`` values sorted ascending, ``a_(1) <= ... <= a_(n)``,

      Gini = sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))

  in [0, 1 - 1/n]; 0 for a constant map, ``1 - 1/n`` for a single salient pixel. Higher is sparser.
* ``Entropy`` — Bhatt, Weller and Moura, "Evaluating and aggregating feature-based model
  explanations", IJCAI 2020 (https://arxiv.org/abs/2005.00631), as Quantus' ``Complexity``: the
  Shannon entropy, in nats, of the map normalised to a distribution ``p_i = a_i / sum_j a_j``,

      Entropy = - sum_i p_i ln p_i        (0 ln 0 = 0)

  in [0, ln n]; 0 for a single salient pixel, ``ln n`` for a constant map. Lower is simpler.

Both read ``|a|`` (maps are in [0, 1], so ``|a| = a``) and neither depends on the map's scale
(Quantus first divides by the maximum; the result is the same). An all-zero map is not a
distribution and has no Gini index (0 / 0): both columns are NaN for that image, which the
table's mean leaves out (count such images from the records if they matter).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from lcam.metrics.per_image import PerImageMetric


def _flat(maps: Tensor) -> Tensor:
    return maps.detach().reshape(maps.shape[0], -1).double().abs()


def gini_index(maps: Tensor) -> Tensor:
    """Gini index of each map: ``(B, H, W)`` -> ``(B,)`` float64 (formula in the module docstring); NaN if all zero."""
    a = _flat(maps).sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, device=a.device, dtype=torch.float64)
    total = a.sum(1)
    g = ((2 * i - n - 1) * a).sum(1) / (n * total)
    return torch.where(total > 0, g, torch.full_like(g, float("nan")))


def map_entropy(maps: Tensor) -> Tensor:
    """Entropy in nats of each map normalised to sum 1: ``(B, H, W)`` -> ``(B,)`` float64; NaN if all zero."""
    a = _flat(maps)
    total = a.sum(1, keepdim=True)
    p = a / total
    h = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(1)
    return torch.where(total.squeeze(1) > 0, h, torch.full_like(h, float("nan")))


class _MapStatistic(PerImageMetric):
    """A per-image statistic of the map alone: ``per_image`` gives ``{columns[0]: statistic(maps)}``.

    ``update(images, maps, targets)`` reads only ``maps`` ``(B, H, W)``. No settings.

    Args:
        model: the classifier (unused; kept so every metric is built as ``cls(model, **settings)``).
    """

    statistic: ClassVar[Callable[[Tensor], Tensor]]

    def __init__(self, model: Any = None) -> None:
        super().__init__()

    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor, *extra: Any) -> dict[str, Tensor]:
        """``{column: (B,)}`` float64 for maps ``(B, H, W)``."""
        return {self.columns[0]: type(self).statistic(maps)}


class Sparseness(_MapStatistic):
    """Gini index of the map (Chalasani et al. 2020; Quantus ``Sparseness``); column ``Gini``, higher
    is sparser (:func:`gini_index`). Built as ``Sparseness(model)``; no settings."""

    columns: ClassVar[tuple[str, ...]] = ("Gini",)
    higher_is_better = True
    statistic = staticmethod(gini_index)


class Complexity(_MapStatistic):
    """Entropy of the normalised map (Bhatt et al. 2020; Quantus ``Complexity``); column ``Entropy``
    in nats, lower is simpler (:func:`map_entropy`). Built as ``Complexity(model)``; no settings."""

    columns: ClassVar[tuple[str, ...]] = ("Entropy",)
    higher_is_better = False
    statistic = staticmethod(map_entropy)
