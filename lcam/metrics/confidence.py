"""Average Drop / Increase in Confidence (the protocol of Grad-CAM++, https://arxiv.org/abs/1710.11063, as L-CAM uses it).

``AD = 100/N * sum max(0, Y_i - O_i) / Y_i`` (lower is better) and
``IC = 100/N * sum [Y_i < O_i]`` (higher is better), where ``Y_i`` is the probability of the
explained class on the original image and ``O_i`` its probability on the explanation image
``x (.) T_v(SM)`` that keeps the v% most salient pixels of *each* map.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lcam.metrics.masking import explanation_images

DEFAULT_THRESHOLDS: tuple[float, ...] = (1.0, 0.5, 0.15)


def threshold_tag(fraction: float) -> str:
    """``0.15 -> "15"``, ``1.0 -> "100"`` (used in metric names such as ``AD15``)."""
    pct = fraction * 100.0
    return f"{pct:g}" if abs(pct - round(pct)) > 1e-9 else str(int(round(pct)))


@torch.no_grad()
def explanation_confidence(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> tuple[Tensor, Tensor]:
    """Probabilities of ``targets`` on the original and on every explanation image.

    The originals and all thresholds of the batch go through ``model`` in one batched forward
    pass, so ``Y`` and ``O`` come from the same computation: an explanation image equal to the
    original (an all-ones map at 100%) gives ``O == Y`` exactly, not a float-noise "increase".

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)``.
        images: ``(B, 3, H, W)`` in [0, 1].
        maps: ``(B, H, W)`` saliency in [0, 1] at image resolution.
        targets: ``(B,)`` class ids.
        thresholds: T fractions of pixels kept.

    Returns:
        ``(Y, O)``: ``(B,)`` and ``(B, T)`` probabilities.
    """
    b, t = images.shape[0], len(thresholds)
    logits = model(torch.cat([images, explanation_images(images, maps, thresholds)], dim=0))
    probs = logits.softmax(dim=1).view(t + 1, b, -1)
    picked = probs.gather(2, targets.view(1, b, 1).expand(t + 1, b, 1)).squeeze(2)  # (T+1, B)
    return picked[0], picked[1:].t()


def drop_increase_per_image(base_probs: Tensor, masked_probs: Tensor, thresholds: Sequence[float]) -> dict[str, Tensor]:
    """Each image's terms of AD and IC, in %: ``AD<t> = 100 max(0, Y - O) / Y``, ``IC<t> = 100 [Y < O]``.

    The means over images of these columns are AD and IC (:class:`AverageDropIncrease`).

    Args:
        base_probs: ``Y`` ``(B,)``; masked_probs: ``O`` ``(B, T)``; thresholds: the ``T`` fractions kept.

    Returns:
        ``{"AD100": (B,), "IC100": (B,), ...}`` float64.
    """
    y = base_probs.detach().double().view(-1, 1)
    o = masked_probs.detach().double()
    drop = 100.0 * (y - o).clamp(min=0) / y.clamp(min=1e-12)
    increase = 100.0 * (y < o).double()
    out: dict[str, Tensor] = {}
    for i, t in enumerate(thresholds):
        out[f"AD{threshold_tag(t)}"] = drop[:, i]
        out[f"IC{threshold_tag(t)}"] = increase[:, i]
    return out


class AverageDropIncrease(Metric):
    """Streaming AD / IC at several thresholds; a torchmetrics ``Metric`` (syncs under DDP).

    ``update(Y, O)`` takes ``Y`` ``(B,)`` and ``O`` ``(B, T)`` probabilities (see
    :func:`explanation_confidence`); ``compute()`` returns ``{"AD100": ..., "IC100": ..., ...}``
    in percent.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = tuple(float(t) for t in thresholds)
        n = len(self.thresholds)
        self.add_state("drop_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("increase_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, base_probs: Tensor, masked_probs: Tensor) -> None:  # type: ignore[override]
        y = base_probs.detach().double().view(-1, 1)
        o = masked_probs.detach().double()
        if o.shape != (y.shape[0], len(self.thresholds)):
            raise ValueError(f"masked_probs must be (B, {len(self.thresholds)}), got {tuple(o.shape)}")
        self.drop_sum += ((y - o).clamp(min=0) / y.clamp(min=1e-12)).sum(0)
        self.increase_sum += (y < o).double().sum(0)
        self.count += y.shape[0]

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        n = self.count.clamp(min=1)
        out: dict[str, Tensor] = {}
        for i, t in enumerate(self.thresholds):
            tag = threshold_tag(t)
            out[f"AD{tag}"] = (100.0 * self.drop_sum[i] / n).float()
            out[f"IC{tag}"] = (100.0 * self.increase_sum[i] / n).float()
        return out
