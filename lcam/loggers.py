"""Weights & Biases logger that runs offline when there are no credentials."""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

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


def wandb_sync_hint(logger: WandbLogger) -> str | None:
    """The ``wandb sync <dir>`` command for an offline run, else None."""
    run = getattr(logger, "_experiment", None)
    if run is None or not getattr(run, "settings", None) or not run.settings._offline:
        return None
    return f"wandb sync {Path(run.dir).parent}"
