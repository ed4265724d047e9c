"""Run one training job from a composed Hydra config (``train.py`` is a thin wrapper)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from lcam.model.callbacks import OverlayGrid, RunHistory, UnreadableImagesCount
from lcam.model.resume import ResumeState, check_not_finished, find_resume_checkpoint, keep_metrics_history, resume_state
from lcam.runtime.configs import instantiate_group  # noqa: F401 - re-exported
from lcam.runtime.launch import begin_job, end_job
from lcam.runtime.loggers import MetricsCSVLogger, continue_wandb_run
from lcam.runtime.tasks import task_wrapper


def check_resume_path(ckpt_path: str | None) -> str | None:
    if not ckpt_path:
        return None
    path = Path(os.path.expanduser(str(ckpt_path)))
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint to resume from not found: {path}. Pass an existing file with ckpt_path=.../checkpoints/last.ckpt")
    return str(path)


def build(cfg: DictConfig, resume: ResumeState | None = None) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Data first (missing paths fail in seconds), then the model, callbacks, loggers and trainer.

    ``resume``: the state of the checkpoint a run resumes from; its loggers then continue that
    run's history (:func:`continue_history`).
    """
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    continue_history(loggers, resume)
    callbacks = [*instantiate_group(cfg.get("callbacks")), RunHistory(), UnreadableImagesCount()]
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all")
    return datamodule, model, trainer


def continue_history(loggers: list[Logger], resume: ResumeState | None) -> None:
    """Before the loggers start: a fresh run starts a fresh metrics CSV; a resumed run's CSV holds
    the resumed run's rows up to its checkpoint (appended to from there), and its W&B logger
    continues the resumed run's W&B run (same id)."""
    for logger in loggers:
        if isinstance(logger, MetricsCSVLogger) and rank_zero_only.rank == 0:
            target = logger.metrics_file
            kept = keep_metrics_history(resume.metrics_csv, target, resume.step) if resume else 0
            if not kept and target.is_file():
                target.unlink()  # a fresh run in a reused run directory (Lightning's CSVLogger does the same)
        elif isinstance(logger, WandbLogger) and resume is not None and resume.wandb_id:
            continue_wandb_run(logger, resume.wandb_id)


@task_wrapper
def run_training(cfg: DictConfig) -> dict[str, float]:
    """Train (or resume) and return the final validation metrics as floats.

    Writes into the run directory: ``checkpoints/`` (last + best), ``csv/metrics.csv``,
    ``.hydra/config.yaml`` (resolved by Hydra), ``images/overlays_*.png``, and
    ``unreadable_images.txt`` when image files had to be skipped. The W&B run is closed when it
    ends, also on failure (:func:`lcam.runtime.tasks.task_wrapper`).
    """
    # the frozen backbone is in eval mode on purpose (BatchNorm/Dropout frozen)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # val AD/IC are torchmetrics states, already reduced across processes before they are logged
    warnings.filterwarnings("ignore", message=r".*recommended to use `self.log\('val/(AD|IC|score)")
    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path = check_resume_path(cfg.get("ckpt_path")) or find_resume_checkpoint(cfg)
    resume = resume_state(ckpt_path) if ckpt_path else None
    if resume is not None:
        check_not_finished(resume, cfg.trainer.get("max_epochs"), ckpt_path)
    begin_job()  # in a multirun: DDP children run this job only (lcam.runtime.launch)
    datamodule, model, trainer = build(cfg, resume)
    try:
        if cfg.get("validate_before_fit") and ckpt_path is None:
            untrained = trainer.validate(model, datamodule=datamodule, verbose=False)
            _print_metrics("untrained head", untrained[0] if untrained else {})
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        _report(cfg, trainer, metrics)
    finally:
        end_job(trainer)
    return metrics


@rank_zero_only
def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    shown = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
    print(f"{title}: " + ", ".join(f"{k[4:]}={v:.2f}" for k, v in sorted(shown.items())))


@rank_zero_only
def _report(cfg: DictConfig, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    out = Path(cfg.paths.output_dir)
    lines = [f"Run directory: {out.resolve()}"]
    for ckpt in trainer.checkpoint_callbacks:
        kind = "best" if getattr(ckpt, "monitor", None) else "last"
        if getattr(ckpt, "best_model_path", ""):
            lines.append(f"  {kind} checkpoint:  {ckpt.best_model_path}")
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            lines.append(f"  metrics CSV:      {Path(logger.log_dir) / 'metrics.csv'}")
    resolved = out / ".hydra" / "config.yaml"
    if resolved.is_file():
        lines.append(f"  resolved config:  {resolved}")
    for cb in trainer.callbacks:
        if isinstance(cb, OverlayGrid) and cb.last_path is not None:
            lines.append(f"  overlay grid:     {cb.dirpath / 'overlays_last.png'}")
    shown = {k: v for k, v in metrics.items() if k.startswith("val/")}
    if shown:
        lines.append("  final validation: " + ", ".join(f"{k[4:]}={v:.2f}" for k, v in sorted(shown.items())))
    print("\n".join(lines))


def config_to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
