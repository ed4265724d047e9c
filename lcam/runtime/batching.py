"""How work is cut and seeded: consecutive slices of a batch, and a seeded ``torch.Generator`` on a device."""
from __future__ import annotations

from typing import Iterator

import torch


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` items covering ``range(total)``."""
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))
