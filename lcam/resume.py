"""Automatic resume for jobs that are restarted in the same run directory (SLURM requeue,
submitit requeue, a crashed job started again by hand).

``resume=auto`` looks in the run directory (``paths.output_dir``) for

* ``checkpoints/last.ckpt``: written after every epoch by the ``last_checkpoint`` callback;
* ``hpc_ckpt_<N>.ckpt``: written by Lightning's SLURM plugin when SLURM signals the job before
  pre-emption or time-out (``#SBATCH --signal=SIGUSR1@90``), mid-epoch;

and resumes from the newer one; a first start finds neither and trains from scratch. The run
directory must be the same on every restart: e.g. ``hydra.run.dir=outputs/<task>/slurm/$SLURM_JOB_ID``
(a requeued SLURM job keeps its id); the default time-stamped run directory is new on every start.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_info

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
