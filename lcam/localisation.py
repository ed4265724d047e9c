"""``evaluate.py ... boxes=FILE``: boxes for the test images, the localisation columns and the Win% table.

The evaluation job calls three hooks (REFERENCE section 3; metrics in :mod:`lcam.metrics.localisation`):

* :func:`boxes_loader` wraps the test loader's dataset in :class:`lcam.data.boxes.BoxedDataset`, so
  batches become ``(images, labels, boxes)`` with the boxes moved through the evaluation transform;
* :func:`localisation_metrics` adds :class:`lcam.metrics.LocalisationMetrics` per method, whose
  columns ``PG, EPG, IoU, Dice, ZoneKeep, ZoneDrop`` join ``results.md`` / ``results.csv``;
* :func:`write_win_rate` writes ``win_rate.md`` / ``win_rate.csv`` beside them: method x method,
  the share of images where the row's confidence drop on ``x (.) map`` is lower than the column's.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from lcam.data.boxes import BoxedDataset
from lcam.io import atomic_write
from lcam.metrics.localisation import LocalisationMetrics, win_rate_table

#: the name of the extra metric in the evaluator (``<method>__localisation``)
METRIC = "localisation"


def boxes_loader(loader: DataLoader, boxes: str | None) -> DataLoader:
    """``loader`` itself without a boxes file; else the same loader over ``(image, label, boxes)`` samples."""
    if not boxes:
        return loader
    boxed = BoxedDataset(loader.dataset, boxes)
    counts = ", ".join(f"{n} {status}" for status, n in boxed.counts().items())
    print(f"Boxes: {boxed.box_file.path} ({len(boxed.box_file)} boxes): {counts}", flush=True)
    # the same loader class and collate (e.g. the data modules' loader that skips unreadable images)
    kwargs: dict[str, Any] = dict(batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                                  pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers,
                                  collate_fn=loader.collate_fn)
    if hasattr(loader, "max_bad_fraction"):
        kwargs["max_bad_fraction"] = loader.max_bad_fraction
    return type(loader)(boxed, **kwargs)


def localisation_metrics(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Callable[[Any], LocalisationMetrics]]:
    """``{"localisation": model -> LocalisationMetrics}`` when ``cfg.boxes`` is set, else ``{}``.

    Settings come from ``cfg.localisation`` (``tolerance``, ``threshold``, ``keep_top``).
    """
    if not cfg.get("boxes"):
        return {}
    node = cfg.get("localisation") or {}
    settings = dict(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node)
    LocalisationMetrics(lambda x: x, **settings)  # bad settings fail before any image is explained
    return {METRIC: lambda model: LocalisationMetrics(model, **settings)}


def win_rate_markdown(names: list[str], table: Any) -> str:
    lines = ["### Win% (row vs column: share of images where the row's confidence drop is lower; ties count half)", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, n in enumerate(names):
        cells = ["–" if math.isnan(float(table[i, j])) else f"{float(table[i, j]):.1f}" for j in range(len(names))]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_win_rate(evaluator: Any, out_dir: str | Path) -> str:
    """Write ``win_rate.md`` / ``win_rate.csv`` from the evaluator's localisation metrics; returns the markdown ("" if none)."""
    extra = getattr(evaluator, "extra", {})
    drops = {m: extra[f"{m}__{METRIC}"].image_drops() for m in evaluator.method_names if f"{m}__{METRIC}" in extra}
    if len(drops) < 2:
        return ""
    names, table = win_rate_table(drops)
    text = win_rate_markdown(names, table)
    out = Path(out_dir)
    with atomic_write(out / "win_rate.md", "w") as f:
        f.write(text)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", *names])
    for i, n in enumerate(names):
        writer.writerow([n, *("" if i == j else f"{float(table[i, j]):.4f}" for j in range(len(names)))])
    with atomic_write(out / "win_rate.csv", "w") as f:
        f.write(buf.getvalue())
    return text
