"""Lightning callbacks: the validation overlay grid (PNG in the run directory + logger image),
the run's history entry in each checkpoint (for resuming), the count of skipped unreadable images."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from lcam.data.unreadable import SKIPPED, Unreadable
from lcam.model.resume import RUN_KEY
from lcam.runtime.io import save_image_atomic
from lcam.viz import saliency_grid


class OverlayGrid(pl.Callback):
    """After each validation, draw image | map | overlay for the first ``num_images`` validation
    images, titled with the explained class and its probability.

    Writes ``<dirpath>/overlays_epoch<E>.png`` and ``<dirpath>/overlays_last.png`` (rank 0 only)
    and logs the grid to W&B as ``val/overlays`` when a W&B logger is attached.
    """

    def __init__(self, dirpath: str, num_images: int = 8, every_n_epochs: int = 1) -> None:
        self.dirpath = Path(dirpath)
        self.num_images, self.every_n_epochs = int(num_images), max(1, int(every_n_epochs))
        self.last_path: Path | None = None

    def _batch(self, trainer: pl.Trainer) -> torch.Tensor | None:
        dm = trainer.datamodule
        dataset = getattr(dm, "val_set", None)
        if dataset is None or len(dataset) == 0:
            return None
        samples = [s for s in (dataset[i] for i in range(min(self.num_images, len(dataset)))) if not isinstance(s, Unreadable)]
        return torch.stack([s[0] for s in samples]) if samples else None

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        images = self._batch(trainer)
        if images is None:
            return
        images = images.to(pl_module.device)
        maps, logits, targets = pl_module.saliency(images)
        probs = logits.softmax(1).gather(1, targets.view(-1, 1)).squeeze(1)
        titles = [f"{pl_module.backbone.class_name(int(t))} ({float(p):.2f})" for t, p in zip(targets, probs)]
        grid = saliency_grid(images.cpu(), maps.cpu(), titles)
        path = self.dirpath / f"overlays_epoch{trainer.current_epoch:03d}.png"
        save_image_atomic(grid, path)
        save_image_atomic(grid, self.dirpath / "overlays_last.png")
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/overlays", images=[grid], step=trainer.global_step, caption=[f"epoch {trainer.current_epoch}"])


class RunHistory(pl.Callback):
    """Writes where this run's history lives into every checkpoint (``checkpoint["lcam_run"]``:
    the metrics CSV and the W&B run id), so that a resumed run continues both (:mod:`lcam.model.resume`)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        info: dict[str, str] = {}
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                info["metrics_csv"] = str(Path(logger.log_dir).resolve() / "metrics.csv")
            elif isinstance(logger, WandbLogger) and logger.version:
                info["wandb_id"] = str(logger.version)
        checkpoint[RUN_KEY] = info


class UnreadableImagesCount(pl.Callback):
    """Logs ``data/unreadable_images`` (unreadable files skipped so far, summed over processes)
    after every training epoch: a column of the metrics CSV, a W&B chart."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("data/unreadable_images", float(len(SKIPPED)), reduce_fx="sum", sync_dist=True)
