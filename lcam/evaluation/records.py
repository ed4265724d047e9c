"""Per-image records of an evaluation: one JSON line per (image, method), written as batches finish.

Layout inside a run folder::

    records/<method-slug>/part-<attempt>-r<rank>.jsonl   # one file per method, process and attempt
    records/<method-slug>/figure-<attempt>-r<rank>.pt    # maps of the figure's images (first few)

Every process appends to files of its own, flushes and ``fsync``s after every batch, so a job
killed at any moment keeps every finished batch; a line torn by the kill is the last line of its
file and is ignored on reading (:func:`read_records`). A resumed run (``attempt`` is new on every
start) writes new files beside the old ones and never rewrites them. The lines are plain JSON
objects, so pandas and polars read a file directly::

    pd.read_json("records/grad-cam/part-....jsonl", lines=True)
    pd.DataFrame(lcam.evaluation.read_records("outputs/evaluate/runs/<run>"))   # all of them

A record holds (see :func:`image_record`): ``index`` (position in the evaluated dataset), ``image``
(file name), ``method``, ``status`` (``ok`` or ``unreadable``, with ``error``), ``label`` (the
dataset's class, -1 if unknown), ``target`` and ``target_name`` (the class explained for AD/IC:
the top-1 prediction), ``Y`` (its probability on the image), ``O<t>`` (its probability on the
explanation image at each threshold), ``AD<t>`` / ``IC<t>`` (per-image drop and increase in %),
every extra metric's per-image value (insertion/deletion AUC, PG, EPG, IoU, Dice, zones, ...),
``#FW`` and ``seconds``.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

RECORDS_DIR = "records"
OK, UNREADABLE = "ok", "unreadable"


def method_slug(name: str) -> str:
    """A folder name for a method's display name: ``"SS-CAM (1)" -> "ss-cam-1"``, ``"Grad-CAM++" -> "grad-campp"``
    (the evaluator refuses two methods with one slug)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("+", "p")).strip("-")
    return slug or "method"


def method_dir(run_dir: str | os.PathLike, method: str) -> Path:
    return Path(run_dir) / RECORDS_DIR / method_slug(method)


def _clean(value: Any) -> Any:
    """JSON-safe: floats stay exact (``repr`` round-trips), NaN / inf become ``null``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


class RecordWriter:
    """Appends records of one method for one process; durable after every :meth:`write`.

    Args:
        run_dir: the run folder.
        method: the method's display name.
        attempt: a token unique to this start of the job (shared by its processes).
        rank: the process's global rank.
    """

    def __init__(self, run_dir: str | os.PathLike, method: str, attempt: str, rank: int) -> None:
        self.path = method_dir(run_dir, method) / f"part-{attempt}-r{rank}.jsonl"
        self._file: IO[str] | None = None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` (one line each), then flush and fsync."""
        lines = "".join(json.dumps({k: _clean(v) for k, v in r.items()}, allow_nan=False) + "\n" for r in records)
        if not lines:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across batches
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if n < len(lines) - 1:  # only the last line may be torn (a kill mid-write)
                warnings.warn(f"{path}:{n + 1}: unreadable record line skipped", stacklevel=2)


def record_files(run_dir: str | os.PathLike, method: str | None = None) -> list[Path]:
    root = Path(run_dir) / RECORDS_DIR
    pattern = f"{method_slug(method)}/part-*.jsonl" if method is not None else "*/part-*.jsonl"
    return sorted(root.glob(pattern))


def read_records(run_dir: str | os.PathLike, method: str | None = None) -> list[dict[str, Any]]:
    """Every record of a run folder (or of one method), one per (method, image), sorted by method
    file and image index. A torn last line is ignored; should an image appear twice for a method
    (it cannot in a run made by lcam), the first record is kept."""
    seen: set[tuple[str, int]] = set()
    out: list[dict[str, Any]] = []
    for path in record_files(run_dir, method):
        for rec in _read_lines(path):
            key = (str(rec.get("method")), int(rec.get("index", -1)))
            if key in seen:
                continue
            seen.add(key)
            out.append(rec)
    out.sort(key=lambda r: (str(r.get("method")), int(r.get("index", -1))))
    return out


def done_indices(run_dir: str | os.PathLike, method: str) -> set[int]:
    """Dataset indices that already have a record of ``method`` (any status)."""
    return {int(r["index"]) for r in read_records(run_dir, method)}
