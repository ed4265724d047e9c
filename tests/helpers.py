"""Helpers for tests that compose the real Hydra configs."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

#: shrink the demo: 9 photos once per epoch, 96 px crops, CSV logger only
TINY = ["logger=csv", "data.repeats=1", "data.resize=110", "data.crop=96", "data.batch_size=4",
        "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=[*overrides, f"paths.output_dir={output_dir}"])


class KillAtEpochStart:
    """A Lightning callback that kills its own process (SIGKILL, no clean-up of any kind) when
    epoch ``epoch`` starts: after the previous epoch's checkpoint, as a crash or ``kill -9`` would.
    Added on the command line: ``+callbacks.crash._target_=tests.helpers.KillAtEpochStart``."""

    def __new__(cls, epoch: int = 1):
        import os
        import signal

        import pytorch_lightning as pl

        class _Kill(pl.Callback):
            def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                if trainer.current_epoch == epoch:
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Kill()


class KillInMethod:
    """A Lightning callback that kills its own process (SIGKILL) after ``batches`` test batches of the
    evaluated method ``method``: in the middle of that method, after its first records were written.
    Added on the command line: ``+trainer.callbacks=[{_target_: tests.helpers.KillInMethod, method: RISE}]``."""

    def __new__(cls, method: str, batches: int = 3):
        import os
        import signal

        import pytorch_lightning as pl

        class _Kill(pl.Callback):
            seen = 0

            def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
                if pl_module.active == method:
                    self.seen += 1
                    if self.seen >= batches:
                        os.kill(os.getpid(), signal.SIGKILL)

        return _Kill()
