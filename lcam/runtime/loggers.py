"""Loggers: Weights & Biases (offline when there are no credentials) and a metrics CSV that a
resumed run appends to.

* :func:`wandb_logger` builds Lightning's W&B logger; :func:`finish_wandb` closes the run of this
  process (``lcam.runtime.tasks`` calls it when a run ends, also when it fails) and prints the
  ``wandb sync`` command of an offline run; :func:`continue_wandb_run` makes a resumed run
  log into the same W&B run (same id).
* :class:`MetricsCSVLogger` is Lightning's ``CSVLogger`` without its habit of deleting an
  existing ``metrics.csv``: rows are appended (a new column rewrites the header and keeps every
  row). ``lcam.model.resume`` prepares the file of a resumed run (the history up to its checkpoint).
"""
from __future__ import annotations

import csv
import netrc
import os
import sys
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_info

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_credentials_available() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``~/.netrc`` has an entry for api.wandb.ai."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
        return path.is_file() and netrc.netrc(str(path)).authenticators("api.wandb.ai") is not None
    except (netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """``auto`` -> ``$WANDB_MODE`` if set, else ``online`` with credentials, ``offline`` without."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode must be one of {WANDB_MODES}, got '{mode}'")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if wandb_credentials_available() else "offline"


def wandb_logger(mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """A Lightning :class:`WandbLogger`; offline (with a ``wandb sync`` hint) without credentials."""
    resolved = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("settings", None)
    if kwargs["settings"] is None:
        kwargs.pop("settings")
    logger = WandbLogger(save_dir=save_dir, offline=resolved == "offline", mode=resolved, **kwargs)
    logger._wandb_init.pop("anonymous", None)  # passed even as None, W&B >= 0.19 warns "has no effect"
    return logger


def continue_wandb_run(logger: WandbLogger, run_id: str) -> None:
    """Log into the existing W&B run ``run_id`` (a resumed training run); before the run starts."""
    if getattr(logger, "_experiment", None) is not None:
        raise RuntimeError("continue_wandb_run must be called before the W&B run starts")
    logger._wandb_init.update(id=run_id, resume="allow")
    logger._id = run_id


def finish_wandb(failed: bool = False) -> None:
    """Close this process's W&B run, if one is open, marking it failed when ``failed``; print the
    ``wandb sync`` command of an offline run."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    offline = bool(getattr(run.settings, "_offline", False))
    folder = Path(run.dir).parent if offline else None
    wandb.finish(exit_code=1 if failed else 0)
    if folder is not None:
        parts = sorted(folder.parent.glob(f"offline-run-*-{run.id}"))  # a resumed run has one folder per start
        target = folder if len(parts) <= 1 else " ".join(str(p) for p in parts)
        rank_zero_info(f"W&B ran offline. Upload with: wandb sync {target}")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps an existing ``metrics.csv`` (and its columns)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(header))


class MetricsCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``<save_dir>/<name>/metrics.csv`` instead of deleting it.

    A fresh run finds no file (a new run directory); a resumed run finds the history that
    :func:`lcam.model.resume.keep_metrics_history` left there and continues it.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
