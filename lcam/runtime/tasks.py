"""The wrapper every run goes through (``train.py``, ``evaluate.py``; :func:`lcam.model.training.run_training`).

:func:`task_wrapper` (around a run):

* starts with an empty list of skipped unreadable images and, when the run ends, lists the ones
  it met (``unreadable_images.txt`` in the run directory, a printed summary, the W&B summary);
* always closes the W&B run, also when the run fails (marked failed), and prints the
  ``wandb sync`` command of an offline run.

:func:`entry_point` (around a ``@hydra.main`` function) does the same and prints a user error
(:mod:`lcam.runtime.errors`: data, weights, checkpoints, keys, values) as one ``error: ...`` line
naming the key to set, exit status 2, without a traceback; a run folder that holds nothing but
Hydra's own files is removed. Bugs keep their traceback, and so does everything with
``HYDRA_FULL_ERROR=1``. :func:`run_for_status` is the same convention for the ``python -m`` commands. Inside a multirun the error is raised on (after the message) so the
sweeper sees a failed trial.
"""
from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from omegaconf import DictConfig

from lcam.runtime.errors import USER_ERROR_STATUS, full_errors, print_user_error, user_error_message
from lcam.runtime.io import SKIPPED
from lcam.runtime.loggers import finish_wandb

T = TypeVar("T")
#: how many wrapped calls are running (the outermost one reports and closes)
_depth = [0]
#: files a fresh Hydra run folder holds before the run writes anything
_HYDRA_ONLY = (".hydra",)
REPORT_FILE = "unreadable_images.txt"
_SHOWN = 10


def output_dir(cfg: DictConfig | None) -> Path | None:
    """The run directory: Hydra's (inside a Hydra job), else ``cfg.paths.output_dir``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        pass
    try:
        value = cfg.paths.output_dir if cfg is not None else None  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no paths group, or an interpolation that needs Hydra
        value = None
    return Path(str(value)) if value else None


def report_unreadable(out: Path | None) -> Path | None:
    """List the skipped unreadable images (see the module doc); returns the list file, if written."""
    if not len(SKIPPED):
        return None
    from pytorch_lightning.utilities import rank_zero_only

    rank = getattr(rank_zero_only, "rank", 0) or 0
    path = None
    if out is not None:
        path = out / (REPORT_FILE if rank == 0 else f"unreadable_images_rank{rank}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{f}\t{e}\n" for f, e in SKIPPED.files.items()))
    items = list(SKIPPED.files.items())
    lines = [f"{len(items)} unreadable image(s) were skipped" + (f" (list: {path})" if path else "") + ":"]
    lines += [f"  {f}  ({e})" for f, e in items[:_SHOWN]]
    if len(items) > _SHOWN:
        lines.append(f"  ... {len(items) - _SHOWN} more in {path}")
    print("\n".join(lines), file=sys.stderr)
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is not None:
        run.summary["data/unreadable_images"] = len(items)
        run.summary["data/unreadable_files"] = [f for f, _ in items[:1000]]
    return path


def task_wrapper(task: Callable[..., T]) -> Callable[..., T]:
    """Wrap a run function ``task(cfg, ...)``: skipped-image report and W&B closed at its end, also on failure."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig, *args: Any, **kwargs: Any) -> T:
        outermost = _depth[0] == 0
        if outermost:
            SKIPPED.clear()
        _depth[0] += 1
        failed = True
        try:
            result = task(cfg, *args, **kwargs)
            failed = False
            return result
        finally:
            _depth[0] -= 1
            if outermost:
                try:
                    report_unreadable(output_dir(cfg))
                finally:
                    finish_wandb(failed=failed)

    return wrapped


def _only_hydra_files(folder: Path) -> bool:
    entries = list(folder.iterdir()) if folder.is_dir() else []
    return bool(entries) and all(p.name in _HYDRA_ONLY or (p.is_file() and p.suffix == ".log") for p in entries)


def _in_multirun() -> bool:
    from lcam.runtime.launch import hydra_multirun

    return hydra_multirun()


def entry_point(main: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Wrap the ``@hydra.main`` function of an entry point (see the module doc)."""
    wrapped_task = task_wrapper(main)

    @functools.wraps(main)
    def wrapped(cfg: DictConfig) -> T:
        try:
            return wrapped_task(cfg)
        except Exception as err:
            message = user_error_message(err)
            if message is None or full_errors():
                raise
            print_user_error(message)
            if _in_multirun():
                raise
            out = output_dir(cfg)
            if out is not None and _only_hydra_files(out):
                shutil.rmtree(out, ignore_errors=True)
            sys.exit(USER_ERROR_STATUS)

    return wrapped


def run_for_status(run: Callable[[DictConfig], Any], cfg: DictConfig) -> int:
    """``run(cfg)`` (returning a summary with ``explained``, ``failed``, ``csv``) as the exit status of a
    command (``python -m lcam.explain``, its ``detect`` form, ``python -m lcam.summaries``): 0 when something
    was explained, 1 when every input failed, :data:`~lcam.runtime.errors.USER_ERROR_STATUS` on a user error
    (one ``error: ...`` line; :func:`~lcam.runtime.errors.full_errors` raises it instead)."""
    try:
        summary = run(cfg)
    except Exception as err:
        message = user_error_message(err)
        if message is None or full_errors():
            raise
        print_user_error(message)
        return USER_ERROR_STATUS
    if summary["explained"] == 0:
        print_user_error(f"nothing could be explained: all {summary['failed']} input file(s) failed (see {summary['csv']})")
        return 1
    return 0
