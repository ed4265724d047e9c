"""The one error convention of every entry point: which errors are the user's to fix, and how they are shown.

``train.py``, ``evaluate.py``, ``python -m lcam.explain`` (classifiers and detectors) and
``python -m lcam.summaries`` print a user error (a missing dataset, weights file or checkpoint, an
unknown key, a bad value or input) as one ``error: ...`` line that names the fix, with no traceback,
and exit with status 2 (:data:`USER_ERROR_STATUS`; 1 means the run itself failed or explained
nothing). A bug keeps its traceback, and so does every error when ``HYDRA_FULL_ERROR=1`` is set
(``LCAM_TRACEBACK=1``, the explain command's old variable, is the same switch).

A user error is:

* a :class:`UserError`: raised by lcam for bad data and finished runs, and the base of its
  error types for bad input (``lcam.runtime.io.InputError``), unreadable or unsafe checkpoints
  (``lcam.model.checkpoint.CheckpointError``), missing backbone or detector weights, a layer the
  model cannot be split at, a missing optional dependency;
* a missing file or folder (:class:`FileNotFoundError`, e.g. ``lcam.data.DataNotFoundError``);
* a config error of OmegaConf (missing ``???`` value, unknown key, failed interpolation), or a
  ``_target_`` that does not exist;
* a :class:`ValueError` raised by lcam's own code (its messages name the key and the valid values);
  a ``ValueError`` from inside torch or another library is treated as a bug.

Errors raised while Hydra instantiates a config node are judged by their cause.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_LCAM_DIR = Path(__file__).resolve().parents[1]  # the whole lcam package


class UserError(Exception):
    """An error the user fixes; entry points print its message, one line, without a traceback."""


#: the exit status of a user error, at every entry point
USER_ERROR_STATUS = 2
#: the variable that shows every traceback, then its old alias (the explain command's)
TRACEBACK_VARIABLES = ("HYDRA_FULL_ERROR", "LCAM_TRACEBACK")


def full_errors() -> bool:
    """``HYDRA_FULL_ERROR=1`` (or its alias ``LCAM_TRACEBACK=1``): show every traceback."""
    return any(os.environ.get(name, "") not in ("", "0") for name in TRACEBACK_VARIABLES)


def print_user_error(message: str) -> None:
    """The one way a user error is shown: ``error: <message on one line>`` on stderr."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)


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
    try:
        from omegaconf.errors import OmegaConfBaseException

        types.append(OmegaConfBaseException)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
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
