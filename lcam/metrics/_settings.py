"""Setting checks and small helpers shared by the per-image metric families (internal)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or ``ValueError`` naming the setting unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_optional_int(name: str, value: Any, minimum: int) -> int | None:
    """``None`` or :func:`check_int`."""
    return None if value is None else check_int(name, value, minimum)


def check_float(name: str, value: Any, minimum: float, inclusive: bool = False) -> float:
    """``value`` as a float, or ``ValueError`` naming the setting unless it is a number > (or >=) ``minimum``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = value >= minimum if inclusive else value > minimum
    if not ok:
        raise ValueError(f"{name} must be a number {'>=' if inclusive else '>'} {minimum}, got {value!r}")
    return value


def check_choice(name: str, value: Any, valid: Sequence[str]) -> str:
    """``value``, or ``ValueError`` naming the setting and listing the valid choices."""
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid: {list(valid)}")
    return str(value)


def check_bool(name: str, value: Any) -> bool:
    """``value``, or ``ValueError`` naming the setting unless it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def class_probability(model: Any, inputs: Tensor, targets: Tensor) -> Tensor:
    """Softmax probability of ``targets`` ``(N,)`` for ``inputs`` ``(N, 3, H, W)`` -> ``(N,)`` float64."""
    return model(inputs).double().softmax(dim=1).gather(1, targets.view(-1, 1)).squeeze(1)


@contextlib.contextmanager
def untouched(explainer: Any) -> Iterator[None]:
    """Run a metric's own explainer calls without leaving a trace on the explainer: its
    ``last_forward_passes`` (the evaluator's #FW of the method) is restored afterwards."""
    had = hasattr(explainer, "last_forward_passes")
    previous = getattr(explainer, "last_forward_passes", None)
    try:
        yield
    finally:
        if had:
            explainer.last_forward_passes = previous


def num_classes_of(model: Any, images: Tensor) -> int:
    """``model.num_classes`` when it has one, else the width of its logits on one image."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with torch.no_grad():
        return int(model(images[:1]).shape[1])
