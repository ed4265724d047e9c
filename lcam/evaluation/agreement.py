"""Do the metrics agree? Each method's rank under each metric, and Kendall's tau between metrics' rankings.

Benchmarks of many explainers under many metrics (LATEC, Meta-Rank) find that metrics often
disagree on which method is best. This module measures it on an evaluation's records:

* :func:`rank_table`: for every metric column with a known direction (:data:`DIRECTIONS`; AD
  lower is better, IC higher, ...), each method's rank (1 = best; ties share the mean rank);
* :func:`rank_agreement`: for every pair of metrics, Kendall's tau-b between the two rankings of
  the methods, with a bootstrap interval over images: the images are resampled (the same images
  for every method and metric), each method's mean is recomputed on the resample, and tau is
  recomputed between the resampled rankings. tau = 1: the metrics rank the methods identically;
  0: unrelated; -1: reversed. Needs at least 3 methods.

Only images that every method scored are used (the paired design of the intervals).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from lcam.evaluation.records import OK

#: +1: higher is better; -1: lower is better (columns matched by exact name or by prefix)
DIRECTIONS: dict[str, int] = {
    "AD": -1, "IC": +1, "insertion": +1, "deletion": -1, "PG": +1, "EPG": +1, "IoU": +1, "Dice": +1,
    "ZoneKeep": -1, "ZoneDrop": +1, "FaithCorr": +1, "MaxSens": -1, "Gini": +1, "Entropy": -1, "RandClassRho": -1,
}


def direction(column: str) -> int | None:
    """+1 / -1 for a known metric column (``AD100`` -> -1), else None."""
    if column in DIRECTIONS:
        return DIRECTIONS[column]
    for prefix in ("AD", "IC"):
        if column.startswith(prefix) and column[len(prefix):].replace(".", "").isdigit():
            return DIRECTIONS[prefix]
    return None


def _matrix(records: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(metrics, values)``: values ``(M methods, K metrics, N images)`` on the images every method scored."""
    ok = [r for r in records if r.get("status") == OK]
    by = {m: {int(r["index"]): r for r in ok if r["method"] == m} for m in methods}
    common = sorted(set.intersection(*(set(v) for v in by.values()))) if methods else []
    metrics = [c for c in dict.fromkeys(k for r in ok for k in r) if direction(c) is not None]
    values = np.full((len(methods), len(metrics), len(common)), np.nan)
    for i, m in enumerate(methods):
        for j, c in enumerate(metrics):
            values[i, j] = [by[m][k].get(c) if by[m][k].get(c) is not None else np.nan for k in common]
    keep = [j for j in range(len(metrics)) if not np.isnan(values[:, j]).all(axis=1).any()]
    return [metrics[j] for j in keep], values[:, keep]


#: means closer than this share of the column's largest magnitude tie (float rounding, not a difference)
RANK_TIE_RTOL = 1e-6


def _ranks(means: np.ndarray, metrics: Sequence[str]) -> np.ndarray:
    """``(M, K)`` means -> ``(M, K)`` ranks, 1 = best under each metric's direction.

    Two methods whose maps differ only by float rounding (Grad-CAM and XGrad-CAM on a GAP + linear
    head) get means a few 1e-7 of the column's scale apart: sorted means whose gap is within
    :data:`RANK_TIE_RTOL` of the column's largest magnitude form one tied group (mean rank).
    """
    signs = np.array([direction(c) for c in metrics], dtype=np.float64)
    scores = -signs * means  # lower is better
    out = np.empty_like(scores)
    for k in range(scores.shape[1]):
        col = scores[:, k]
        order = np.argsort(col, kind="stable")
        tol = RANK_TIE_RTOL * max(float(np.nanmax(np.abs(col))) if np.isfinite(col).any() else 0.0, 1e-12)
        gaps = np.diff(col[order]) > tol
        groups = np.empty(len(col))
        groups[order] = np.concatenate([[0], np.cumsum(gaps)])
        out[:, k] = rankdata(groups)
    return out


def kendall_matrix(ranks: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between every pair of columns of ``ranks`` ``(M, K)`` -> ``(K, K)``.

    ``tau_b(a, b) = sum_{i<j} s^a_ij s^b_ij / sqrt(sum s^a_ij^2 * sum s^b_ij^2)`` with
    ``s_ij = sign(r_i - r_j)`` (ties give 0); NaN where a column ties every method.
    """
    m = ranks.shape[0]
    iu = np.triu_indices(m, k=1)
    s = np.sign(ranks[:, None, :] - ranks[None, :, :])[iu]  # (pairs, K)
    num = s.T @ s
    norm = np.sqrt(np.outer((s * s).sum(0), (s * s).sum(0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, num / np.where(norm > 0, norm, 1.0), np.nan)


def rank_table(records: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(metrics, ranks (M, K))`` on the images every method scored."""
    metrics, values = _matrix(records, methods)
    if not metrics or values.shape[2] == 0:
        return [], np.zeros((len(methods), 0))
    return metrics, _ranks(np.nanmean(values, axis=2), metrics)


def rank_agreement(records: Sequence[Mapping[str, Any]], methods: Sequence[str], n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> list[dict[str, Any]]:
    """Kendall's tau-b between every pair of metrics' rankings of ``methods``, with its bootstrap interval.

    Returns:
        Rows ``{"metric_a", "metric_b", "tau", "low", "high", "images"}`` (empty with fewer than 3 methods).
    """
    if len(methods) < 3:
        return []
    metrics, values = _matrix(records, methods)
    n = values.shape[2]
    if n == 0 or len(metrics) < 2:
        return []
    tau = kendall_matrix(_ranks(np.nanmean(values, axis=2), metrics))
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(metrics), len(metrics)))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where a column is all NaN
        for b in range(n_boot):
            boot[b] = kendall_matrix(_ranks(np.nanmean(values[:, :, rng.integers(0, n, n)], axis=2), metrics))
    alpha = (1.0 - level) / 2.0
    rows = []
    for i in range(len(metrics)):
        for j in range(i + 1, len(metrics)):
            taus = boot[:, i, j][~np.isnan(boot[:, i, j])]
            low, high = (float(np.quantile(taus, alpha)), float(np.quantile(taus, 1 - alpha))) if taus.size else (math.nan,) * 2
            rows.append({"metric_a": metrics[i], "metric_b": metrics[j], "tau": float(tau[i, j]),
                         "low": low, "high": high, "images": n})
    return rows


def ranking_report(out: Path, records: list[dict[str, Any]], methods: Mapping[str, Any], n_boot: int = 1000) -> str:
    """The ``results.md`` section: the rank table and the tau of every metric pair with its interval;
    also written as ``ranking.csv`` and ``metric_agreement.csv``."""
    from lcam.runtime.io import write_csv_atomic

    names = list(methods)
    metrics, ranks = rank_table(records, names)
    agreement = rank_agreement(records, names, n_boot=n_boot)
    if len(names) < 3 or not metrics:
        return ""
    write_csv_atomic(out / "ranking.csv", [{"method": m, **{c: ranks[i, j] for j, c in enumerate(metrics)}}
                                           for i, m in enumerate(names)], ["method", *metrics])
    write_csv_atomic(out / "metric_agreement.csv", agreement, ["metric_a", "metric_b", "tau", "low", "high", "images"])
    lines = ["### Rank of each method under each metric (1 = best; ties share the mean rank)", "",
             "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for i, m in enumerate(names):
        lines.append(f"| {m} | " + " | ".join(f"{ranks[i, j]:g}" for j in range(len(metrics))) + " |")
    if agreement:
        lines += ["", f"### Do the metrics agree? Kendall's tau-b between rankings, [95 % bootstrap interval over "
                  f"{agreement[0]['images']} images]", "",
                  "| | " + " | ".join(metrics[1:]) + " |", "|---|" + "---|" * (len(metrics) - 1)]
        cell = {(r["metric_a"], r["metric_b"]): r for r in agreement}
        for i, a in enumerate(metrics[:-1]):
            cells = []
            for j, b in enumerate(metrics[1:], start=1):
                r = cell.get((a, b))
                cells.append("" if j <= i or r is None else
                             ("–" if math.isnan(r["tau"]) else f"{r['tau']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]"))
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
