"""Step 1 of the visual summaries: one crisp mask per image, cached on disk (the slow part).

Masks are computed in batches by the registered ``crisp`` explainer
(:class:`lcam.explainers.crisp.CrispMask`) and written one file per image,
``<cache>/<name>.npz`` (the mask ``m`` ``(H, W)`` in [0, 1] as float16, the target class, the
original probability and the paper's blur drop), atomically, right after each batch. A rerun loads
every file that exists and computes only the missing ones, so an interrupted run loses at most
one batch. ``<cache>/settings.json`` records what the masks depend on (classifier, layer-free
crisp settings, image size, target class); a rerun with other settings stops with a message
instead of mixing or overwriting masks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from torch import Tensor

from lcam.runtime.io import InputError, atomic_write

SETTINGS_FILE = "settings.json"


@dataclass
class CrispResult:
    """The crisp mask of one image.

    Attributes:
        mask: ``(H, W)`` float32 in [0, 1]; 1 keeps a pixel, 0 deletes (blurs) it.
        target: the explained class id.
        prob: the target's probability on the unmodified image.
        drop: the paper's metric, the relative drop of that probability on the masked image.
    """

    mask: np.ndarray
    target: int
    prob: float
    drop: float


def cache_name(name: str) -> str:
    """A flat file stem for an input's (possibly nested) name: ``"sub/cat"`` -> ``"sub__cat"``."""
    return name.replace("\\", "/").replace("/", "__")


class MaskCache:
    """A folder of per-image crisp masks that belong to one set of ``settings``."""

    def __init__(self, folder: str | Path, settings: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        self.folder.mkdir(parents=True, exist_ok=True)
        stored = self.folder / SETTINGS_FILE
        if stored.exists():
            old = json.loads(stored.read_text())
            if old != self.settings:
                changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
                raise InputError(
                    f"The masks in {self.folder} were computed with other settings ({', '.join(changed)}); "
                    "they are kept: choose another output_dir, or restore the settings to reuse them")
        else:
            with atomic_write(stored, "w") as f:
                json.dump(self.settings, f, indent=1, sort_keys=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{cache_name(name)}.npz"

    def load(self, name: str) -> CrispResult | None:
        """The cached result for ``name``, or ``None`` (also for a file that cannot be read)."""
        p = self.path(name)
        if not p.exists():
            return None
        try:
            with np.load(p) as z:
                return CrispResult(z["mask"].astype(np.float32), int(z["target"]), float(z["prob"]), float(z["drop"]))
        except (OSError, KeyError, ValueError):
            return None

    def save(self, name: str, result: CrispResult) -> None:
        with atomic_write(self.path(name)) as f:
            np.savez(f, mask=result.mask.astype(np.float16), target=result.target, prob=result.prob, drop=result.drop)


def crisp_masks(explainer: Any, images: Tensor, names: Sequence[str], targets: Tensor, probs: Tensor, cache: MaskCache,
                batch_size: int = 8, report: Callable[[int], None] | None = None) -> list[CrispResult]:
    """Crisp masks for ``images`` ``(N, 3, H, W)`` in [0, 1], computing only those not in ``cache``.

    Args:
        explainer: a :class:`~lcam.explainers.crisp.CrispMask` on the classifier.
        names: ``N`` unique input names (cache keys).
        targets: ``(N,)`` class ids.
        probs: ``(N,)`` each target's probability on its unmodified image (stored with the mask).
        batch_size: images optimised together.
        report: called with the number of images finished (cached ones count at once).

    Returns:
        ``N`` results in input order.
    """
    out: list[CrispResult | None] = [cache.load(n) for n in names]
    todo = [i for i, r in enumerate(out) if r is None or r.target != int(targets[i])]
    if report is not None and len(todo) < len(names):
        report(len(names) - len(todo))
    for start in range(0, len(todo), max(1, int(batch_size))):
        idx = todo[start:start + max(1, int(batch_size))]
        t = targets[idx]
        explainer(images[idx], t)
        for j, i in enumerate(idx):
            res = CrispResult(explainer.last_masks[j].float().cpu().numpy(), int(t[j]), float(probs[i]),
                              float(explainer.last_drop[j]))
            cache.save(names[i], res)
            out[i] = res
        if report is not None:
            report(len(idx))
    return [r for r in out if r is not None]
