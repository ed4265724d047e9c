"""Silence start-up messages a user of ``train.py`` / ``evaluate.py`` / ``python -m lcam.explain``
cannot act on; keep everything they can act on.

Silenced (each matched narrowly, so a new message of the same library still shows):

* Lightning's advertising tips (``💡 Tip: ... litlogger`` / ``litmodels``) and the
  ``TPU available`` / ``HPU available`` lines (the ``GPU available: ..., used: ...`` line stays:
  it tells a user with a GPU that it is not used);
* torch's ``isinstance(treespec, LeafSpec)`` deprecation warning, raised inside Lightning;
* alembic's INFO lines (``Context impl SQLiteImpl``, ``Running upgrade ...``) when Optuna opens
  a database, and timm's duplicate ``Loaded  from checkpoint`` line.

Kept: warnings about the user's data, config and hardware (e.g. too many DataLoader workers,
which the ``data.num_workers: null`` default avoids), progress bars, W&B's sync hints.
Set ``LCAM_VERBOSE=1`` to see everything.
"""
from __future__ import annotations

import logging
import os
import warnings

#: (logger name, message prefixes) dropped from that logger's records
_DROPPED_PREFIXES: dict[str, tuple[str, ...]] = {
    "pytorch_lightning.utilities.rank_zero": ("💡 Tip:", "TPU available:", "HPU available:"),
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:", "TPU available:", "HPU available:"),
    "lightning_fabric.utilities.rank_zero": ("💡 Tip:",),
}
#: loggers whose INFO records say nothing a user can act on
_WARNING_ONLY = ("alembic", "timm.models._helpers")


class _DropPrefixes(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(self.prefixes)


def silence_known_noise() -> None:
    """Install the filters above (idempotent; a no-op with ``LCAM_VERBOSE=1``)."""
    if os.environ.get("LCAM_VERBOSE", "") not in ("", "0"):
        return
    for name, prefixes in _DROPPED_PREFIXES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(prefixes))
    for name in _WARNING_ONLY:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
