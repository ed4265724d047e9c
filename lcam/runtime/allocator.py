"""Keep glibc's malloc from returning large tensors' memory to the kernel after every batch.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (dynamic, at most 32 MiB on 64-bit) with its
own ``mmap`` and gives it back with ``munmap`` when freed. A CPU forward pass allocates activation
tensors of that size for every batch (EfficientNet-Lite0's expanded 112 x 112 stage at 4 images
is ~77 MB), so every masked pass of Score-CAM / RISE maps fresh pages and the kernel zeroes them:
much of the CPU time goes to the kernel, for the same maps (the measured cost is in the README's
performance notes). :func:`tune_cpu_allocator` raises ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to
1 GiB so freed blocks stay in the heap and are reused by the next batch; the process's peak
memory is unchanged, but it keeps its peak until it exits.

It is process-wide, so the library never applies it on its own: the command-line entry points
(``train.py``, ``evaluate.py``, ``python -m lcam.explain``, ``python -m lcam.summaries``, the
benchmarks) call it at start-up; a Python user opts in with ``lcam.tune_cpu_allocator()``.
Nothing happens where malloc is not glibc's (macOS, Windows, musl), when ``LCAM_TUNE_MALLOC=0``,
or when the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: the value both thresholds get
THRESHOLD = 1 << 30

_state: dict[str, bool] = {}


def tune_cpu_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB once per process; True when they are set.

    Returns False (and changes nothing) off glibc, with ``LCAM_TUNE_MALLOC=0``, or when glibc's
    environment variables already choose the thresholds.
    """
    if "done" in _state:
        return _state["done"]
    _state["done"] = False
    if os.environ.get("LCAM_TUNE_MALLOC", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _state["done"] = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    return _state["done"]
