"""Training and validation steps: the three loss terms (logged as ``train/*`` and ``val/*``), validation AD/IC
(``val/AD*``, ``val/IC*``, ``val/score``), each validation sample counted once under DDP, and the optimiser."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lcam.maps import normalize_then_upsample
from lcam.metrics import explanation_confidence
from lcam.model.losses import LossTerms
from lcam.model.optim import build_optimizer, build_scheduler
from lcam.runtime.distributed import RealSampleCounter, real_samples, val_sampler


class TrainingSteps:
    """Mixin of :class:`lcam.model.module.LCAM`: Lightning's step and epoch hooks and ``configure_optimizers``."""

    # -- training ----------------------------------------------------------------------------
    def _step(self, batch: tuple[Tensor, Tensor]) -> tuple[LossTerms, Tensor, Tensor, Tensor]:
        images, labels = batch
        feats, logits0 = self.frozen_forward(images)
        targets = self.resolve_targets(logits0, labels)
        a = self.attention(feats, targets)
        mask = self.training_mask(a)
        regularized = mask if self.loss_fn.regularize == "own" else self.training_mask(self.head.block_maps(feats, targets))
        terms = self.loss_fn(self.masked_logits(images, feats, mask), targets, regularized)
        return terms, a, logits0, targets

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.calibration is not None and not self.calibrated:
            scale, shift = self.calibrate_head(batch[0])
            self.log_dict({"calibration/scale": scale, "calibration/shift": shift}, rank_zero_only=True)
        terms, _, _, _ = self._step(batch)
        bs = batch[0].shape[0]
        self.log_dict({"train/ce": terms.ce.detach(), "train/area": terms.area.detach(), "train/tv": terms.tv.detach()}, batch_size=bs)
        self.log("train/loss", terms.total.detach(), prog_bar=True, batch_size=bs)
        return terms.total

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        # under DDP the sampler pads the set with repeats at the end of the shards: drop them, so
        # every validation sample counts exactly once (lcam.runtime.distributed)
        counter = getattr(self, "_val_counter", None)
        keep = counter.take(batch[0].shape[0]) if counter is not None else batch[0].shape[0]
        if keep == 0:
            return
        batch = (batch[0][:keep], batch[1][:keep])
        images = batch[0]
        with torch.no_grad():
            terms, a, logits0, targets = self._step(batch)
            maps = normalize_then_upsample(a, images.shape[-2:])
            y, o = explanation_confidence(self.backbone, images, maps, targets, self.thresholds)
        self.val_confidence.update(y, o)
        for key, value in (("ce", terms.ce), ("area", terms.area), ("tv", terms.tv), ("loss", terms.total)):
            self.val_terms[key].update(value.detach().float(), weight=images.shape[0])

    def on_validation_epoch_start(self) -> None:
        # reset here, in the mode the updates run in: a reset inside trainer.validate()'s
        # inference mode would leave inference tensors that fit's validation cannot update
        self.val_confidence.reset()
        for metric in self.val_terms.values():
            metric.reset()
        self._val_counter = RealSampleCounter(real_samples(val_sampler(getattr(self, "_trainer", None))))

    def on_validation_epoch_end(self) -> None:
        values = self.val_confidence.compute()  # synced across processes by torchmetrics
        terms = {key: metric.compute() for key, metric in self.val_terms.items()}  # batch-size weighted means
        # (already equal on every rank; sync_dist=True only spares Lightning's "use sync_dist" warning)
        self.log_dict({f"val/{k}": v for k, v in terms.items() if k != "loss"}, sync_dist=True)
        self.log("val/loss", terms["loss"], prog_bar=True, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=False)
        if "AD100" in values and "IC100" in values:
            # one number to minimise (checkpoints, sweeps): drop minus increase at 100%, in points
            self.log("val/score", values["AD100"] - values["IC100"], prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        """``model.optimizer`` / ``model.scheduler`` by ``_target_`` (default: the paper's SGD, biases at
        ``lr * bias_lr_mult``, per-epoch exponential decay); see :mod:`lcam.model.optim`."""
        opt = build_optimizer(self.optimizer_cfg, [self.head.conv.weight], [self.head.conv.bias])
        sched = build_scheduler(self.scheduler_cfg, opt)
        return {"optimizer": opt, "lr_scheduler": sched} if sched else {"optimizer": opt}
