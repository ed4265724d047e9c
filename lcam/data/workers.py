"""How many DataLoader worker processes to start: what the configuration asks, within what the machine has."""
from __future__ import annotations

import os


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: SLURM / container limits), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_num_workers(num_workers: int | None, preferred: int) -> int:
    """``data.num_workers``: an explicit count is kept; ``null`` -> ``min(preferred, available CPUs)``.

    Args:
        num_workers: the configured count, or None for "what the machine has".
        preferred: the data module's useful maximum (8 for ImageNet JPEG decoding, 4 for a folder).

    Returns:
        A count >= 0. (An explicit count above the CPU count is kept: PyTorch then warns, which a
        user can act on.)
    """
    if num_workers is None:
        return min(int(preferred), available_cpus())
    n = int(num_workers)
    if n < 0:
        raise ValueError(f"data.num_workers must be >= 0 or null (null: min({preferred}, CPU cores)), got {n}")
    return n
