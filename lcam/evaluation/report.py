"""The results table (paper Table 1 layout) as Markdown / CSV, and the method-comparison figure."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from lcam.runtime.io import atomic_write

PAPER_COLUMNS = ("AD100", "IC100", "AD50", "IC50", "AD15", "IC15", "#FW", "s/img")


def table_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The paper's columns first, then any extra metric (insertion/deletion ...), then image count."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k != "method"]
    first = [c for c in PAPER_COLUMNS if c in keys]
    rest = [k for k in keys if k not in first and k != "images"]
    return first + rest + (["images"] if "images" in keys else [])


def _fmt(value: Any, column: str) -> str:
    if isinstance(value, float) and value != value:
        return "–"
    if isinstance(value, float):
        if column == "s/img":
            return f"{value:.4f}"
        if column == "#FW":
            return f"{value:.0f}" if abs(value - round(value)) < 1e-6 else f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def to_markdown(rows: Sequence[dict[str, Any]], title: str | None = None) -> str:
    """A Markdown table: one row per method, AD/IC in percent, #FW, seconds per image."""
    cols = table_columns(rows)
    lines = [f"### {title}", ""] if title else []
    lines.append("| method | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for row in rows:
        lines.append(f"| {row['method']} | " + " | ".join(_fmt(row.get(c, ""), c) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    cols = ["method", *table_columns(rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def write_tables(rows: Sequence[dict[str, Any]], out_dir: str | Path, stem: str = "results", title: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` atomically; return their paths."""
    out = Path(out_dir)
    md, cs = out / f"{stem}.md", out / f"{stem}.csv"
    with atomic_write(md, "w") as f:
        f.write(to_markdown(rows, title))
    with atomic_write(cs, "w") as f:
        f.write(to_csv(rows))
    return md, cs


def intervals_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Paired differences against the reference method (``lcam.evaluation.statistics.paired_intervals``)
    as one table: rows = methods, cells = ``diff [low, high]`` per column."""
    if not rows:
        return ""
    reference = rows[0]["reference"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cols = list(dict.fromkeys(r["column"] for r in rows))
    cell = {(r["method"], r["column"]): r for r in rows}
    lines = [f"### Paired differences: method - {reference} (same images; mean [95 % bootstrap interval])", "",
             "AD lower and IC higher is better: a negative AD or positive IC difference whose interval excludes 0 "
             f"is a clear improvement over {reference}.", "",
             "| method | " + " | ".join(cols) + " | images |", "|---|" + "---|" * (len(cols) + 1)]
    for m in methods:
        cells = []
        for c in cols:
            r = cell.get((m, c))
            cells.append("–" if r is None or r["images"] == 0 else f"{r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]")
        n = max((cell[(m, c)]["images"] for c in cols if (m, c) in cell), default=0)
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines) + "\n"


def win_rate_markdown(names: Sequence[str], table: Any) -> str:
    """The Win% matrix (``lcam.evaluation.statistics.win_rates``) as a Markdown table."""
    lines = ["### Win% (row vs column: share of images where the row's confidence drop on x (.) map is lower; "
             "ties count half)", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, n in enumerate(names):
        cells = ["–" if i == j or table[i][j] != table[i][j] else f"{float(table[i][j]):.1f}" for j in range(len(names))]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
