"""The ``python -m lcam.explain`` command (Hydra config ``conf/explain.yaml``).

Streams the inputs through a ``DataLoader`` in batches with a progress bar and writes, into the
output folder:

* one overlay PNG per (image, class): ``<image>_<class id>_<class name>_<method>.png`` (input
  sub-folders are mirrored);
* ``results.csv``: one row per (image, class) with the probability and map statistics, plus one
  ``status=failed`` row per file that could not be read (each also gets one warning line);
* with ``analysis.*`` flags: class-specific sheets, misclassification contact sheets and method
  comparison grids under ``analysis/``.

Every file is written atomically (temporary file + rename), and ``results.csv`` is rewritten every
``csv_every`` batches, so an interrupted run leaves complete files for what it finished.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from lcam.analysis import DEMO_LABELS, ComparisonSheets, MisclassificationSheets, class_sheet, comparison_engines
from lcam.explain.api import (
    Engine,
    Explanation,
    TargetPlan,
    check_method,
    class_index,
    make_engine,
    plan_targets,
    run_batch,
)
from lcam.explain.inputs import DEMO, InputError, InputItem, collect_inputs, group_by_shape, iter_batches, make_transform
from lcam.io import atomic_write, save_image_atomic

log = logging.getLogger("lcam.explain")

COLUMNS = ["file", "image", "method", "rank", "class_id", "class_name", "probability", "predicted_id", "predicted_name",
           "predicted_probability", "label_id", "map_max", "map_mean", "map_area50", "overlay", "status", "error"]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def resolve_device(name: str | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device (checked)."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(str(name))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return dev


def cli_plan(targets: Any, engine: Engine, k: int) -> TargetPlan:
    """CLI targets: ``null`` (top-1), one class id/name, a list (every image for each class) or ``topk``."""
    targets = _plain(targets)
    if isinstance(targets, (list, tuple)) and len(targets) > 1:
        return TargetPlan("classes", ids=torch.tensor([class_index(t, engine) for t in targets]))
    return plan_targets(targets, engine, None, k)


def build_engine(cfg: DictConfig, method: str, device: torch.device) -> tuple[Any, Engine]:
    """The classifier (an L-CAM checkpoint, or a backbone for baselines) and the main engine."""
    from lcam.backbones import build_backbone
    from lcam.checkpoint import load_lcam_checkpoint

    backbone_cfg = _plain(cfg.get("backbone"))
    settings = dict(_plain(cfg.get("settings")) or {})
    if cfg.get("ckpt_path"):
        overrides = {"backbone": backbone_cfg} if backbone_cfg else {}
        model: Any = load_lcam_checkpoint(cfg.ckpt_path, map_location=device, backbone_weights=cfg.get("backbone_weights"), **overrides)
    elif backbone_cfg:
        model = build_backbone(backbone_cfg, device=device)
    else:
        raise InputError("Give ckpt_path=.../last.ckpt (an L-CAM checkpoint), or backbone=NAME "
                         "(e.g. backbone=efficientnet_lite0) to run a baseline method without one")
    return model, make_engine(model, method, **settings)


class ResultsTable:
    """Rows of ``results.csv``, rewritten atomically on :meth:`write`."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []  # type: ignore[var-annotated]

    def add_ok(self, result: Explanation, overlays: list[str]) -> None:
        for rec, ov in zip(result.records(), overlays):
            self.rows.append({**rec, "overlay": ov, "status": "ok", "error": ""})

    def add_failed(self, item: InputItem, method: str, error: str) -> None:
        self.rows.append({"file": item.file, "image": item.name, "method": method, "status": "failed", "error": error})

    def write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_write(self.path, "w") as f:
            f.write(buf.getvalue())


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="explain", disable=not enabled, dynamic_ncols=True)


def run_explain(cfg: DictConfig) -> dict[str, Any]:
    """Run the explain command from a composed config; returns a summary dict.

    Raises:
        InputError / CheckpointError / FileNotFoundError / BackboneWeightsError / ValueError for
        bad input (one-line messages); reading errors of single files are not raised.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    if OmegaConf.is_missing(cfg, "inputs") or cfg.inputs in (None, "", []):
        raise InputError(f"No inputs: give inputs=path (an image file, a folder, a glob such as 'photos/*.jpg', or {DEMO})")
    out = Path(str(cfg.paths.output_dir))
    method = check_method(cfg.method) if cfg.get("method") else ("lcam" if cfg.get("ckpt_path") else "gradcam")
    analysis = cfg.get("analysis") or {}
    compare = [check_method(m) for m in (_plain(analysis.get("compare")) or [])]
    labels = cfg.get("labels")
    inputs = _plain(cfg.inputs)
    items = collect_inputs(inputs, labels=labels, exclude=[out])
    if labels is None and inputs == DEMO:
        for it in items:
            it.label = DEMO_LABELS.get(it.name, it.label)
    device = resolve_device(cfg.get("device"))
    t_load = time.perf_counter()
    model, engine = build_engine(cfg, method, device)
    load_s = time.perf_counter() - t_load

    plans = [cli_plan(cfg.get("targets"), engine, int(cfg.get("k", 3)))]
    class_list = _plain(analysis.get("classes"))
    if class_list:
        class_list = class_list if isinstance(class_list, list) else [class_list]
        plans.append(TargetPlan("classes", ids=torch.tensor([class_index(c, engine) for c in class_list])))
    mis = MisclassificationSheets(int(analysis.get("per_page", 8)), not analysis.get("all_labelled", False), cfg.alpha, cfg.cmap) \
        if analysis.get("misclassified") else None
    if mis is not None:
        plans.append(TargetPlan("label_pred"))
    cmp = None
    if compare:
        methods = [method] + [m for m in compare if m != method]
        cmp = ComparisonSheets([engine] + comparison_engines(model, methods[1:], _plain(analysis.get("settings"))),
                               per_page=int(analysis.get("per_page", 8)))

    transform = make_transform(cfg.get("resize"), cfg.get("crop"), engine.interpolation)
    table = ResultsTable(out / "results.csv")
    ana = out / "analysis"
    n_ok = n_failed = n_rows = 0
    pages = {"misclassified": 0, "comparison": 0, "classes": 0}
    csv_every = max(1, int(cfg.get("csv_every", 20)))
    t0 = time.perf_counter()
    bar = _progress(len(items), bool(cfg.get("progress", True)))
    try:
        with logging_redirect_tqdm():  # warnings print above the progress bar, once
            for n_batch, (loaded, failed) in enumerate(iter_batches(items, transform, int(cfg.batch_size), int(cfg.get("num_workers", 0))), 1):
                for i, err in failed:
                    log.warning("skipped %s: %s", items[i].file, err)
                    table.add_failed(items[i], method, err)
                    n_failed += 1
                for idx, x in group_by_shape(loaded):
                    batch_items = [items[i] for i in idx]
                    results = run_batch(engine, x, plans, batch_items, idx)
                    main, rest = results[0], results[1:]
                    overlays = []
                    if cfg.get("save_overlays", True):
                        for path in main.save(out, cfg.alpha, cfg.cmap, maps=bool(cfg.get("save_maps", False))):
                            overlays.append(path.relative_to(out).as_posix())
                    else:
                        overlays = [""] * len(main)
                    table.add_ok(main, overlays)
                    n_ok += main.num_images
                    n_rows += len(main)
                    if class_list:
                        sheet_result = rest.pop(0)
                        for b in range(sheet_result.num_images):
                            save_image_atomic(class_sheet(sheet_result, b, cfg.alpha, cfg.cmap), ana / "classes" / f"{sheet_result.names[b]}.png")
                            pages["classes"] += 1
                    if mis is not None:
                        for page in mis.add(rest.pop(0)):
                            pages["misclassified"] += 1
                            save_image_atomic(page, ana / f"misclassified_p{pages['misclassified']:03d}.png")
                    if cmp is not None:
                        titles = [f"{n} ({float(p):.2f})" for n, p in zip(main.predicted_names, main.predicted_probs)]
                        for page in cmp.add(x, main.predicted, main.names, titles):
                            pages["comparison"] += 1
                            save_image_atomic(page, ana / f"comparison_p{pages['comparison']:03d}.png")
                bar.update(len(loaded) + len(failed))
                if n_batch % csv_every == 0:
                    table.write()
            if mis is not None:
                for page in mis.flush(method):
                    pages["misclassified"] += 1
                    save_image_atomic(page, ana / f"misclassified_p{pages['misclassified']:03d}.png")
                if mis.labelled == 0:
                    log.warning("analysis.misclassified: no labelled images (give labels=list.txt or use ImageNet synset folders)")
            if cmp is not None:
                for page in cmp.flush():
                    pages["comparison"] += 1
                    save_image_atomic(page, ana / f"comparison_p{pages['comparison']:03d}.png")
    finally:
        bar.close()
        table.write()
    seconds = time.perf_counter() - t0
    summary = {"explained": n_ok, "failed": n_failed, "rows": n_rows, "seconds": seconds, "load_seconds": load_s,
               "images_per_second": n_ok / seconds if seconds > 0 else 0.0, "csv": out / "results.csv", "output_dir": out,
               "method": method, "pages": pages}
    _report(summary, mis)
    return summary


def _report(s: dict[str, Any], mis: MisclassificationSheets | None) -> None:
    lines = [f"Explained {s['explained']} image(s) with {s['method']} ({s['rows']} map(s)) in {s['seconds']:.1f} s "
             f"({s['images_per_second']:.2f} images/s; model load {s['load_seconds']:.1f} s)"
             + (f"; {s['failed']} file(s) failed (listed in results.csv)" if s["failed"] else "")]
    lines.append(f"  results: {s['csv']}")
    if s["rows"]:
        lines.append(f"  overlays: {s['output_dir']}{os.sep}")
    for kind, n in s["pages"].items():
        if n:
            lines.append(f"  {kind} sheets: {n} in {Path(s['output_dir']) / 'analysis'}")
    if mis is not None and mis.labelled:
        lines.append(f"  misclassified: {mis.errors} of {mis.labelled} labelled image(s)")
    print("\n".join(lines), flush=True)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the input (reported as one line), as opposed to bugs (tracebacks)."""
    from lcam.backbones import BackboneWeightsError, SplitError
    from lcam.checkpoint import CheckpointError

    return (InputError, CheckpointError, FileNotFoundError, BackboneWeightsError, SplitError, ValueError)


def exit_status(cfg: DictConfig) -> int:
    """Run the command; print ``error: ...`` (one line) on bad input. Returns the exit status:
    0 when at least one image was explained, 1 when none could be, 2 on bad input."""
    try:
        summary = run_explain(cfg)
    except user_errors() as err:
        if os.environ.get("LCAM_TRACEBACK") == "1":
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        return 2
    if summary["explained"] == 0:
        print(f"error: nothing could be explained: all {summary['failed']} input file(s) failed (see {summary['csv']})",
              file=sys.stderr, flush=True)
        return 1
    return 0
