"""Automatic resume for jobs that are restarted in the same run directory (SLURM requeue,
submitit requeue, a crashed job started again by hand).

``resume=auto`` looks in the run directory (``paths.output_dir``) for

* ``checkpoints/last.ckpt``: written after every epoch by the ``last_checkpoint`` callback;
* ``hpc_ckpt_<N>.ckpt``: written by Lightning's SLURM plugin when SLURM signals the job before
  pre-emption or time-out (``#SBATCH --signal=SIGUSR1@90``), mid-epoch;

and resumes from the newer one; a first start finds neither and trains from scratch. The run
directory must be the same on every restart: e.g. ``hydra.run.dir=outputs/<task>/slurm/$SLURM_JOB_ID``
(a requeued SLURM job keeps its id); the default time-stamped run directory is new on every start.

A resumed run keeps its history (:func:`resume_state`, :func:`keep_metrics_history`): its
``csv/metrics.csv`` holds the rows logged up to the checkpoint and the resumed run appends to it
(rows logged after the checkpoint by the interrupted run are dropped: they are logged again);
its W&B logger continues the W&B run of the checkpoint (same id). Resuming from a checkpoint in
another run directory (``ckpt_path=...``) copies that history into the new run directory.
A checkpoint of a finished run (``trainer.max_epochs`` reached) is refused with a message that
says so, instead of a run that does nothing.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_info

from lcam.runtime.errors import UserError
from lcam.runtime.io import atomic_write

RESUME_MODES = ("auto",)
_HPC = re.compile(r"hpc_ckpt_(\d+)\.ckpt$")


def resume_candidates(run_dir: str | os.PathLike) -> list[Path]:
    """``checkpoints/last.ckpt`` and ``hpc_ckpt_<N>.ckpt`` (highest ``N``) that exist in ``run_dir``."""
    run_dir = Path(run_dir)
    found = []
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        found.append(last)
    hpc = [p for p in run_dir.glob("hpc_ckpt_*.ckpt") if _HPC.search(p.name) and p.is_file()]
    if hpc:
        found.append(max(hpc, key=lambda p: int(_HPC.search(p.name).group(1))))
    return found


def find_resume_checkpoint(cfg: Any) -> str | None:
    """The checkpoint to resume from under ``resume=auto`` (see the module doc), else ``None``.

    Args:
        cfg: the run config; reads ``resume`` (``null``/``false`` or ``"auto"``) and ``paths.output_dir``.

    Returns:
        The newest of ``<output_dir>/checkpoints/last.ckpt`` and ``<output_dir>/hpc_ckpt_<N>.ckpt``,
        or ``None`` (resume off, or nothing to resume from yet).
    """
    mode = cfg.get("resume")
    if mode in (None, False, "", "null", "none", "off"):
        return None
    if mode not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES} or null, got '{mode}'. "
                         "To resume from a given file use ckpt_path=/path/to/last.ckpt")
    run_dir = Path(str(cfg.paths.output_dir))
    found = resume_candidates(run_dir)
    if not found:
        rank_zero_info(f"resume=auto: no checkpoint in {run_dir} yet, training from the start")
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    rank_zero_info(f"resume=auto: resuming from {newest}")
    return str(newest)


#: the checkpoint entry written by :class:`lcam.model.callbacks.RunHistory`
RUN_KEY = "lcam_run"


class RunCompleteError(UserError):
    """The checkpoint to resume from has already trained ``trainer.max_epochs`` epochs."""


@dataclass(frozen=True)
class ResumeState:
    """What a checkpoint says about the run that wrote it.

    Attributes:
        epochs_done: epochs completed (the next epoch to train is this one, 0-based).
        step: the loggers' step counter at the checkpoint: the rows logged before it (``step < this``)
            are the history the checkpoint covers; later rows were logged by the interrupted run.
        metrics_csv: that run's metrics CSV, when it is known and exists.
        wandb_id: that run's W&B run id, when it had one.
    """

    epochs_done: int
    step: int
    metrics_csv: Path | None
    wandb_id: str | None


def _run_dir_of(ckpt: Path) -> Path:
    """``<run>/checkpoints/last.ckpt`` and ``<run>/hpc_ckpt_N.ckpt`` -> ``<run>``."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def _wandb_id_in(run_dir: Path) -> str | None:
    """The id of the newest W&B run folder (``wandb/[offline-]run-<date>-<id>``) in ``run_dir``."""
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def resume_state(ckpt_path: str | os.PathLike) -> ResumeState:
    """Read the loop counters and the run's history entry of a checkpoint (without running code from it)."""
    from lcam.model.checkpoint import read_checkpoint

    path = Path(ckpt_path)
    ckpt = read_checkpoint(path)
    epoch = int(ckpt.get("epoch", 0))
    progress = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    epochs_done = int(progress.get("processed", epoch + 1))
    step = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {}).get("_batches_that_stepped")
    step = int(step if step is not None else ckpt.get("global_step", 0))
    info = ckpt.get(RUN_KEY) or {}
    run_dir = _run_dir_of(path)
    csv_path = Path(info["metrics_csv"]) if info.get("metrics_csv") else run_dir / "csv" / "metrics.csv"
    wandb_id = info.get("wandb_id") or _wandb_id_in(run_dir)
    return ResumeState(epochs_done, step, csv_path if csv_path.is_file() else None, wandb_id)


def check_not_finished(state: ResumeState, max_epochs: int | None, ckpt_path: str | os.PathLike) -> None:
    """Raise :class:`RunCompleteError` when the checkpoint has already trained ``max_epochs`` epochs."""
    if max_epochs is not None and int(max_epochs) >= 0 and state.epochs_done >= int(max_epochs):
        raise RunCompleteError(
            f"Nothing to resume: {ckpt_path} ends a finished run ({state.epochs_done} of trainer.max_epochs={max_epochs} epochs done). "
            f"To train further, raise trainer.max_epochs, e.g. trainer.max_epochs={state.epochs_done + max(1, state.epochs_done // 2)}"
        )


def keep_metrics_history(source: Path | None, target: Path, before_step: int) -> int:
    """Write the rows of ``source`` (a metrics CSV) with ``step < before_step`` to ``target``
    (the same file or the new run's), so that the resumed run appends to its history.

    Returns:
        The number of rows kept (0 when there is no history; ``target`` is then left alone).
    """
    if source is None or not source.is_file():
        return 0
    with source.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if _step(r) is None or _step(r) < before_step]  # type: ignore[operator]
    if not header:
        return 0
    with atomic_write(target, "w", durable=True) as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _step(row: dict[str, str]) -> int | None:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None
