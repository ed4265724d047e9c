"""Lightning callbacks: the validation overlay grid (PNG in the run directory + logger image)."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from lcam.io import save_image_atomic
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
        n = min(self.num_images, len(dataset))
        return torch.stack([dataset[i][0] for i in range(n)])

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
