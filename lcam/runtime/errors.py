"""Which errors are the user's to fix, and the one short message an entry point prints for them.

``train.py``, ``evaluate.py`` and ``python -m lcam.explain`` print a user error (a missing dataset,
weights file or checkpoint, an unknown key, a bad value) as one ``Error: ...`` message that names
the key to set, with no traceback; a bug keeps its traceback, and so does every error when
``HYDRA_FULL_ERROR=1`` is set.

A user error is:

* a :class:`UserError` (raised by lcam for bad data, finished runs, ...);
* a missing file or folder (:class:`FileNotFoundError`, e.g. ``lcam.data.DataNotFoundError``),
  an unreadable or unsafe checkpoint (``lcam.model.checkpoint.CheckpointError``), missing backbone
  weights (``lcam.backbones.BackboneWeightsError``), bad input to the explain layer
  (``lcam.runtime.io.InputError``);
* a config error of OmegaConf (missing ``???`` value, unknown key, failed interpolation), or a
  ``_target_`` that does not exist;
* a :class:`ValueError` raised by lcam's own code (its messages name the key and the valid values);
  a ``ValueError`` from inside torch or another library is treated as a bug.

Errors raised while Hydra instantiates a config node are judged by their cause.
"""
from __future__ import annotations

import os
from pathlib import Path

_LCAM_DIR = Path(__file__).resolve().parents[1]  # the whole lcam package


class UserError(Exception):
    """An error the user fixes; entry points print its message, one line, without a traceback."""


def full_errors() -> bool:
    """``HYDRA_FULL_ERROR=1``: show every traceback."""
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def _raised_in_lcam(err: BaseException) -> bool:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    try:
        return _LCAM_DIR in Path(last.tb_frame.f_code.co_filename).resolve().parents
    except (OSError, ValueError):
        return False


def _user_error_types() -> tuple[type, ...]:
    types: list[type] = [UserError, FileNotFoundError, NotADirectoryError]
    for module, name in (("lcam.model.checkpoint", "CheckpointError"), ("lcam.backbones", "BackboneWeightsError"),
                         ("lcam.runtime.io", "InputError"), ("omegaconf.errors", "OmegaConfBaseException")):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def user_error_message(err: BaseException) -> str | None:
    """The message to print for a user error (see the module doc), or ``None`` for a bug."""
    try:
        from hydra.errors import InstantiationException
    except ImportError:  # pragma: no cover - hydra is a dependency
        InstantiationException = ()  # type: ignore[assignment] # noqa: N806
    if isinstance(err, InstantiationException):
        cause = err.__cause__ or err.__context__
        if cause is not None and not isinstance(cause, (ImportError, AttributeError)):
            return user_error_message(cause)
        text = " ".join(str(err).split())
        if text.startswith("Error locating target"):  # a _target_ that does not exist
            return text.replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception.", ".")
        return None
    if isinstance(err, _user_error_types()) or (isinstance(err, ValueError) and _raised_in_lcam(err)):
        text = str(err).strip()
        if isinstance(err, KeyError) and len(err.args) == 1:
            text = str(err.args[0])
        return text or type(err).__name__
    return None
