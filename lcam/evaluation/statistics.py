"""The evaluation's table, intervals and Win%, computed from the per-image records only.

* :func:`table_rows`: one row per method; each metric column is the mean of its per-image values
  over the method's readable images where it is defined (AD/IC, insertion/deletion, PG, ...; NaN
  values, e.g. the pointing game of an image without boxes, are left out), ``#FW`` and ``s/img``
  are means per image, ``images`` counts readable images and ``unreadable`` the others.
* :func:`paired_intervals`: for each method against a reference method, the mean per-image
  difference of a column on the images both scored, with its paired 95 % bootstrap interval
  (percentile method, seeded; the same resampled images for both methods).
* :func:`win_rates`: Win% (SS-CAM paper) of every pair of methods on the images both scored: the
  share of images where the row's confidence drop ``(Y - O100) / Y`` on ``x (.) map`` is lower
  than the column's (ties, within ``tie_tolerance``, count half).

Records are dicts as written by :mod:`lcam.evaluation.records` (or rows of a pandas frame).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from lcam.evaluation.records import OK
from lcam.metrics.localisation import WinRate

#: record fields that are not metric columns
ID_FIELDS = ("index", "image", "method", "status", "error", "label", "target", "target_name", "loc_target", "Y",
             "seconds", "#FW")
#: paired-interval columns by default: AD/IC at each threshold
DEFAULT_INTERVAL_PREFIXES = ("AD", "IC")


def by_method(records: Iterable[Mapping[str, Any]], methods: Sequence[str] | None = None) -> dict[str, list[Mapping[str, Any]]]:
    """Records grouped by method, in ``methods`` order (else first appearance), each sorted by image index."""
    groups: dict[str, list[Mapping[str, Any]]] = {m: [] for m in (methods or [])}
    for r in records:
        groups.setdefault(str(r["method"]), []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: int(r["index"]))
    return groups


def metric_columns(records: Iterable[Mapping[str, Any]], grouped: bool = False) -> list[str]:
    """The metric columns present in the records, in first-seen order. Left out: the ``O<t>``
    probabilities and grouped columns ``<group>/<...>`` (e.g. the sanity checks' ``Rand/<step>/<measure>``,
    which their own report tabulates) unless ``grouped``."""
    cols: list[str] = []
    for r in records:
        for k in r:
            if k not in cols and k not in ID_FIELDS and (grouped or "/" not in k) and not (k.startswith("O") and k[1:].replace(".", "").isdigit()):
                cols.append(k)
    return cols


def _mean(values: Iterable[Any]) -> float:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(v) / len(v) if v else math.nan


def table_rows(records: Iterable[Mapping[str, Any]], methods: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per method: metric means, ``#FW``, ``s/img``, ``images`` (readable) and ``unreadable`` counts."""
    records = list(records)
    cols = metric_columns(r for r in records if r.get("status") == OK)
    rows = []
    for method, recs in by_method(records, methods).items():
        ok = [r for r in recs if r.get("status") == OK]
        row: dict[str, Any] = {"method": method}
        for c in cols:
            row[c] = _mean(r.get(c) for r in ok)
        row["#FW"] = _mean(r.get("#FW") for r in ok)
        row["s/img"] = _mean(r.get("seconds") for r in ok)
        row["images"] = len(ok)
        bad = len(recs) - len(ok)
        if bad:
            row["unreadable"] = bad
        rows.append(row)
    return rows


def paired_bootstrap(diffs: np.ndarray, n_boot: int = 5000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-image differences and its bootstrap interval (percentile method).

    Args:
        diffs: ``(N,)`` per-image differences ``a_i - b_i`` of two methods on the same images.
        n_boot: bootstrap resamples of the N images (with replacement).
        seed: seeds the resampling (same seed, same images -> same interval).
        level: the interval's coverage.

    Returns:
        ``(mean, low, high)``; NaNs for no images.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 500):  # chunks: memory O(500 N), not O(n_boot N)
        stop = min(n_boot, start + 500)
        means[start:stop] = d[rng.integers(0, d.size, (stop - start, d.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def _paired(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``column`` for the images both methods scored (readable, not NaN), by image index."""
    va = {int(r["index"]): r.get(column) for r in a if r.get("status") == OK}
    vb = {int(r["index"]): r.get(column) for r in b if r.get("status") == OK}
    common = sorted(i for i in va.keys() & vb.keys()
                    if va[i] is not None and vb[i] is not None and not math.isnan(va[i]) and not math.isnan(vb[i]))
    return np.array([va[i] for i in common], dtype=np.float64), np.array([vb[i] for i in common], dtype=np.float64)


def paired_intervals(records: Iterable[Mapping[str, Any]], reference: str, methods: Sequence[str] | None = None,
                     columns: Sequence[str] | None = None, n_boot: int = 5000, seed: int = 0) -> list[dict[str, Any]]:
    """For each method other than ``reference`` and each column: ``method - reference`` on the same
    images, mean and paired 95 % bootstrap interval.

    Args:
        columns: the columns compared; default every ``AD<t>`` and ``IC<t>`` column.

    Returns:
        Rows ``{"method", "reference", "column", "images", "diff", "low", "high"}``.
    """
    records = list(records)
    groups = by_method(records, methods)
    if reference not in groups:
        raise ValueError(f"compare_to={reference!r} is not an evaluated method; methods: {list(groups)}")
    cols = list(columns) if columns is not None else [
        c for c in metric_columns(r for r in records if r.get("status") == OK) if c.startswith(DEFAULT_INTERVAL_PREFIXES)]
    out = []
    for method, recs in groups.items():
        if method == reference:
            continue
        for c in cols:
            a, b = _paired(recs, groups[reference], c)
            mean, low, high = paired_bootstrap(a - b, n_boot, seed)
            out.append({"method": method, "reference": reference, "column": c, "images": int(a.size),
                        "diff": mean, "low": low, "high": high})
    return out


def confidence_drops(recs: Sequence[Mapping[str, Any]], threshold: str = "100") -> dict[int, float]:
    """Per image index: the signed confidence drop ``(Y - O<t>) / Y`` of readable records."""
    return {int(r["index"]): (float(r["Y"]) - float(r[f"O{threshold}"])) / max(float(r["Y"]), 1e-12)
            for r in recs if r.get("status") == OK and r.get(f"O{threshold}") is not None}


def win_rates(records: Iterable[Mapping[str, Any]], methods: Sequence[str] | None = None, threshold: str = "100",
              tie_tolerance: float = 1e-5) -> tuple[list[str], np.ndarray]:
    """Win% matrix ``(M, M)``: entry ``[a, b]`` = percent of the images both scored where ``a``'s
    drop is lower than ``b``'s (ties count half, so ``[a, b] + [b, a] = 100``); NaN on the diagonal."""
    groups = by_method(records, methods)
    names = list(groups)
    drops = {m: confidence_drops(groups[m], threshold) for m in names}
    table = np.full((len(names), len(names)), math.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            common = drops[a].keys() & drops[b].keys()
            if not common:
                continue
            # the project's one Win% rule (ties count half); local: rank 0 alone writes the tables under DDP
            pair = WinRate(2, tie_tolerance=tie_tolerance, sync_on_compute=False)
            pair.update(torch.tensor([[drops[a][k], drops[b][k]] for k in sorted(common)], dtype=torch.float64))
            table[i, j] = float(pair.compute()[0, 1])
    return names, table
