"""What an evaluation leaves in its run folder, all computed from the per-image records.

``results.md`` (the table in the paper's layout, the paired intervals against the reference
method and the Win% table), ``results.csv``, ``intervals.csv``, ``win_rate.csv``, ``methods.png``
(the maps of the first images, every method), and with the W&B logger the same tables plus a
``records`` table (one row per image and method, overlays of the figure's images) in the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from lcam.evaluation.agreement import ranking_report
from lcam.evaluation.records import UNREADABLE, method_dir, read_records
from lcam.evaluation.report import intervals_markdown, table_columns, to_markdown, win_rate_markdown
from lcam.evaluation.statistics import paired_intervals, table_rows, win_rates
from lcam.runtime.io import atomic_write, save_image_atomic, write_csv_atomic

#: more sections of ``results.md``: ``report(out, records, methods) -> markdown`` ("" for nothing),
#: each computed from the records (e.g. the sanity checks' table and figure, the metric ranking)
REPORTS: list[Callable[[Path, list[dict[str, Any]], Mapping[str, Mapping[str, Any]]], str]] = [ranking_report]


def reference_method(compare_to: str | None, methods: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The display name of ``compare_to`` (a display name or a registry name such as ``gradcam``);
    by default Grad-CAM when it was evaluated; None with fewer than two methods."""
    if len(methods) < 2:
        return None
    if compare_to:
        for label, settings in methods.items():
            if compare_to in (label, settings.get("name")):
                return label
        raise ValueError(f"compare_to={compare_to!r} is not an evaluated method; give one of {list(methods)}")
    return next((label for label, s in methods.items() if s.get("name") == "gradcam"), None)


def figure_maps(run_dir: Path, methods: Sequence[str]) -> tuple[list[int], torch.Tensor, dict[str, torch.Tensor]] | None:
    """The figure's images ``(N, 3, H, W)`` and each method's maps ``(N, H, W)``, for the first indices
    that every method kept (files ``figure-*.pt`` of any process, attempt or shard)."""
    kept: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    for m in methods:
        kept[m] = {}
        for path in sorted(method_dir(run_dir, m).glob("figure-*.pt")):
            data = torch.load(path, weights_only=True)
            for i, img, mp in zip(data["indices"], data["images"], data["maps"]):
                kept[m].setdefault(int(i), (img, mp))
    common = sorted(set.intersection(*(set(k) for k in kept.values()))) if kept else []
    if not common:
        return None
    first = kept[methods[0]]
    return common, torch.stack([first[i][0] for i in common]), {m: torch.stack([kept[m][i][1] for i in common]) for m in methods}


def write_outputs(cfg: DictConfig, out: Path, methods: Mapping[str, Mapping[str, Any]], loggers: Sequence[Any],
                  title: str) -> list[dict[str, Any]]:
    """Tables, intervals, Win% and the figure from the records of ``out``; returns the table rows."""
    names = list(methods)
    records = read_records(out)
    rows = table_rows(records, names)
    text = [to_markdown(rows, title)]
    reference = reference_method(cfg.get("compare_to"), methods)
    intervals = paired_intervals(records, reference, names, n_boot=int(cfg.get("bootstrap", 5000)), seed=int(cfg.seed)) \
        if reference else []
    if intervals:
        text.append(intervals_markdown(intervals))
        write_csv_atomic(out / "intervals.csv", intervals, ["method", "reference", "column", "images", "diff", "low", "high"])
    win_names, win = win_rates(records, names) if len(names) > 1 else ([], None)
    if win is not None:
        text.append(win_rate_markdown(win_names, win))
        write_csv_atomic(out / "win_rate.csv", [{"method": a, **{b: win[i][j] for j, b in enumerate(win_names) if i != j}}
                                                for i, a in enumerate(win_names)], ["method", *win_names])
    for report in REPORTS:
        section = report(out, records, methods)
        if section:
            text.append(section)
    with atomic_write(out / "results.md", "w") as f:
        f.write("\n".join(text))
    write_csv_atomic(out / "results.csv", rows, ["method", *table_columns(rows)])
    lines = ["\n".join(text), f"Table: {out / 'results.md'}", f"CSV:   {out / 'results.csv'}",
             f"Records (one JSON line per image and method): {out / 'records'}"]
    fig = figure_maps(out, names)
    grid = None
    if fig is not None:
        from lcam.viz import comparison_grid

        indices, images, maps = fig
        by_index = {(r["method"], int(r["index"])): r for r in records}
        titles = [f"{by_index[(names[0], i)]['target_name'][:18]} ({by_index[(names[0], i)]['Y']:.2f})"
                  if (names[0], i) in by_index else str(i) for i in indices]
        grid = comparison_grid(images, maps, titles)
        save_image_atomic(grid, out / "methods.png")
        lines.append(f"Figure: {out / 'methods.png'}")
    bad = sorted({r["image"] for r in records if r.get("status") == UNREADABLE})
    if bad:
        lines.append(f"{len(bad)} unreadable image(s) (records with status 'unreadable'): " + ", ".join(bad[:10])
                     + (" ..." if len(bad) > 10 else ""))
    for logger in loggers:
        log_to(logger, rows, records, fig, grid)
    print("\n".join(lines), flush=True)
    return rows


def log_to(logger: Any, rows: list[dict[str, Any]], records: list[dict[str, Any]], fig: Any, grid: Any) -> None:
    """The table's numbers as ``test/<method>/<column>``; with W&B also the results and records tables."""
    logger.log_metrics({f"test/{r['method']}/{k}": float(v) for r in rows for k, v in r.items()
                        if k != "method" and isinstance(v, (int, float))})
    if not isinstance(logger, WandbLogger):
        return
    cols = ["method", *[k for k in rows[0] if k != "method"]] if rows else []
    logger.log_table(key="results", columns=cols, data=[[r.get(c) for c in cols] for r in rows])
    import wandb

    overlays: dict[tuple[str, int], Any] = {}
    if fig is not None:
        from lcam.viz import overlay_pil

        indices, images, maps = fig
        overlays = {(m, i): wandb.Image(overlay_pil(images[k], maps[m][k])) for m in maps for k, i in enumerate(indices)}
    keys = [k for k in dict.fromkeys(k for r in records for k in r)]
    data = [[overlays.get((r["method"], int(r["index"]))), *[r.get(k) for k in keys]] for r in records]
    logger.experiment.log({"records": wandb.Table(columns=["overlay", *keys], data=data)})
    if grid is not None:
        logger.log_image(key="methods", images=[grid])
