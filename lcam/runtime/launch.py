"""Glue between Hydra (runs, multiruns, sweepers, launchers) and Lightning's DDP.

* ``${sweep_group:PREFIX}`` (an OmegaConf resolver): in a Hydra multirun, ``PREFIX-<sweep dir
  name>``, the same for every job of the sweep (every trial becomes its own W&B run in one W&B
  group); ``None`` in a single run.
* :func:`begin_job` / :func:`end_job`: make Lightning's ``ddp`` launcher start the DDP children
  of *one multirun job*. Lightning re-runs the script with the parent's ``sys.argv`` for ranks
  1..N-1; inside a multirun that argv holds ``-m`` and the whole sweep, so every child would run
  a sweep of its own (its own Optuna study, its own time-stamped sweep folder) and only stays in
  step with the parent by luck. Here, before the launch, the children get this job's overrides
  in run mode with ``hydra.run.dir`` set to the job's folder; after the job, the parent waits for
  them and closes the process group so the next job starts a fresh one.

Nothing here acts in a single run, under SLURM (``srun`` starts every rank), under
``torchrun``, or in a process that Lightning itself started as a DDP child.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, read_write

#: the command line and DDP variables this process started with
_ORIGINAL_ARGV: list[str] = list(sys.argv)
_DDP_ENV_KEYS = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_INITIAL_ENV: dict[str, str | None] = {k: os.environ.get(k) for k in _DDP_ENV_KEYS}
#: Hydra's own flags that take a value and must reach the children unchanged
_VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
#: hydra.* overrides that only concern the sweep, or that the children get from Lightning
_SWEEP_ONLY = ("hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher",
               "hydra.run.dir", "hydra.output_subdir", "hydra.job.name", "hydra.job.id", "hydra.job.num")

_state: dict[str, Any] = {"active": False}


def hydra_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        return False
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group(prefix: str | None = None) -> str | None:
    """W&B group of a multirun: ``"<prefix>-<sweep dir name>"`` (``None`` outside a multirun)."""
    if not hydra_multirun():
        return None
    from hydra.core.hydra_config import HydraConfig

    name = Path(str(HydraConfig.get().sweep.dir)).name
    return f"{prefix}-{name}" if prefix else name


if not OmegaConf.has_resolver("sweep_group"):
    OmegaConf.register_new_resolver("sweep_group", sweep_group)


def _launched_externally() -> bool:
    """Ranks are started by someone else: SLURM (srun), torchrun, or this is a Lightning child."""
    if _INITIAL_ENV["LOCAL_RANK"] is not None:
        return True
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def _child_argv(overrides: list[str]) -> list[str]:
    """``sys.argv`` for the DDP children of one multirun job: Hydra's config flags, no ``-m``,
    the job's overrides (Lightning appends ``hydra.run.dir``, ``hydra.job.name``, ``hydra.output_subdir``)."""
    argv, keep, rest = [_ORIGINAL_ARGV[0]], [], _ORIGINAL_ARGV[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in _VALUE_FLAGS and i + 1 < len(rest):
            keep += [arg, rest[i + 1]]
            i += 2
            continue
        if arg.split("=", 1)[0] in _VALUE_FLAGS:
            keep.append(arg)
        i += 1
    return argv + keep + overrides


def begin_job() -> None:
    """Call before the Trainer is built. In a multirun job (and only when Lightning will start
    the DDP children itself): forget the previous job's DDP variables, and point the children's
    command line at this job alone (its overrides, run mode, its output folder)."""
    _state["active"] = False
    if not hydra_multirun() or _launched_externally():
        return
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    for key, value in _INITIAL_ENV.items():  # left behind by the previous job's launcher
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    hydra_overrides = [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_SWEEP_ONLY)]
    # hydra.mode=RUN: a config may ask for a multirun itself (hparams_search sets hydra.mode)
    sys.argv[:] = _child_argv([*hc.overrides.task, *hydra_overrides, "hydra.mode=RUN"])
    # Lightning passes `hydra.run.dir=<HydraConfig run.dir>` to the children: make it this job's folder
    with read_write(hc.run):
        hc.run.dir = str(hc.runtime.output_dir)
    _state["active"] = True


def end_job(trainer: Any = None) -> None:
    """Call when the job is over, from a ``finally:`` block: wait for the DDP children this job
    started (or kill them when the job is failing, so that a sweep that tolerates failed trials
    goes on), close the process group, restore ``sys.argv``. A no-op outside :func:`begin_job`'s case."""
    if not _state.pop("active", False):
        return
    _state["active"] = False
    failing = sys.exc_info()[0] is not None
    try:
        launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
        for proc in getattr(launcher, "procs", None) or []:
            if failing:
                proc.kill()
            proc.wait()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    finally:
        sys.argv[:] = _ORIGINAL_ARGV
