"""Head calibration (``model.calibrate``): on the first training batch of a fresh run, rescale the head so the
class maps sit in the sigmoid's working range (mean/std of the batch's own maps, averaged over processes)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class HeadCalibration:
    """Mixin of :class:`lcam.model.module.LCAM`: :meth:`calibrate_head` (needs ``frozen_forward``,
    ``attention``, ``head``, ``calibration``, ``calibrated``)."""

    @torch.no_grad()
    def calibrate_head(self, images: Tensor) -> tuple[float, float]:
        """Rescale the head so that the class maps of ``images`` ``(B, 3, H, W)`` (for their
        top-1 classes) have the configured mean and std (see ``calibrate``); returns ``(scale, shift)``."""
        feats, logits = self.frozen_forward(images)
        a = self.attention(feats, logits.argmax(dim=1)).float()
        stats = torch.stack([a.mean(), a.pow(2).mean()])
        if self._trainer is not None and self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="mean")
        mean, std = float(stats[0]), float((stats[1] - stats[0] ** 2).clamp_min(1e-12).sqrt())
        scale = float(self.calibration["std"]) / std
        shift = float(self.calibration["mean"]) - scale * mean
        self.head.rescale_(scale, shift)
        self.calibrated = True
        return scale, shift


def _check_calibration(calibrate: Any) -> dict[str, float] | None:
    """``None`` or ``{"mean": float, "std": float > 0}``; anything else is a one-line error."""
    if calibrate is None:
        return None
    try:
        cfg = {"mean": float(calibrate.get("mean", 0.0)), "std": float(calibrate["std"])}
        extra = set(calibrate) - {"mean", "std"}
    except (AttributeError, KeyError, TypeError, ValueError):
        cfg, extra = None, set()
    if cfg is None or extra or not cfg["std"] > 0:
        raise ValueError(f"model.calibrate must be null or {{mean: <float>, std: <float > 0>}}, got {calibrate!r}")
    return cfg
