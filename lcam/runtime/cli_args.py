"""Command-line overrides as a user types them, made acceptable to Hydra.

The shell leaves ``~`` alone in ``data.root=~/photos`` (``data.root`` is not a shell variable
name), and Hydra's override grammar cannot lex a value that starts with ``~``: the run stops with
``LexerNoViableAltException`` before doing anything. :func:`expand_home` replaces such a leading
``~`` (also of each element of a sweep ``a=~/x,~/y`` or a list ``a=[~/x,~/y]``) with the home
directory before Hydra parses ``sys.argv``. Quoted Hydra strings (``"data.root='~/photos'"``)
are left as typed; the code that opens a path expands ``~`` itself.

Used by ``train.py``, ``evaluate.py`` and ``python -m lcam.explain`` through :func:`prepare_cli`.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Sequence

# "~" right after "=", "," or "[" (never inside quotes: a quote character would precede it),
# followed by "/", the end of the value, "," or "]".
_HOME_VALUE = re.compile(r"(?<=[=,\[])~(?=/|,|\]|$)")
# key=value overrides, optionally prefixed with +, ++ or ~ (Hydra's add / force-add / delete)
_OVERRIDE = re.compile(r"^(?:\+\+|\+|~)?[A-Za-z_][\w.\-/@]*=")


def expand_home(argv: Sequence[str], home: str | None = None) -> list[str]:
    """``argv`` with a leading ``~`` of override values replaced by ``home`` (default: ``~``'s expansion).

    Args:
        argv: command-line arguments (without the program name), e.g. ``["data.root=~/photos"]``.
        home: the directory to put in place of ``~`` (tests); default ``os.path.expanduser("~")``.

    Returns:
        A new list; arguments that are not ``key=value`` overrides (``-m``, ``--cfg``, ``job``)
        are unchanged, and so is the key (``~key`` deletes a key in Hydra).
    """
    home = os.path.expanduser("~") if home is None else home
    out = []
    for arg in argv:
        m = _OVERRIDE.match(arg)
        if m is None or "~" not in arg[m.end():]:
            out.append(arg)
            continue
        key, value = arg[:m.end()], arg[m.end():]
        out.append(key + _HOME_VALUE.sub(lambda _: home.replace("\\", "/"), "=" + value)[1:])
    return out


def prepare_cli(argv: list[str] | None = None) -> None:
    """Call before a ``@hydra.main`` function: expand ``~`` in ``sys.argv`` (in place, it is the
    process's own list), silence start-up noise a user cannot act on (:mod:`lcam.runtime.quiet`) and keep
    glibc from unmapping every batch's tensors (:mod:`lcam.runtime.allocator`)."""
    from lcam.runtime.allocator import tune_cpu_allocator
    from lcam.runtime.quiet import silence_known_noise

    tune_cpu_allocator()
    args = sys.argv if argv is None else argv
    args[1:] = expand_home(args[1:])
    silence_known_noise()
