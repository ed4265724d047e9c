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

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lcam.data.files import resolve_device
from lcam.explain.analysis import DEMO_LABELS, ComparisonSheets, MisclassificationSheets, class_sheet, comparison_engines
from lcam.explain.engine import Engine, check_method, make_engine
from lcam.explain.inputs import DEMO, InputError, InputItem
from lcam.explain.result import Explanation
from lcam.explain.stream import Source, explain_batches
from lcam.explainers.targets import TargetPlan, parse_targets
from lcam.runtime.io import save_image_atomic, write_csv_atomic
from lcam.runtime.tasks import run_for_status  # noqa: F401 - shared by every python -m command

log = logging.getLogger("lcam.explain")

COLUMNS = ["file", "image", "method", "layer", "rank", "class_id", "class_name", "probability", "predicted_id", "predicted_name",
           "predicted_probability", "label_id", "map_max", "map_mean", "map_area50", "overlay", "status", "error"]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def build_engine(cfg: DictConfig, method: str | None, device: Any) -> tuple[Any, Engine]:
    """The classifier (an L-CAM checkpoint, or a backbone for the other methods) and the main engine."""
    backbone_cfg = _plain(cfg.get("backbone"))
    settings = dict(_plain(cfg.get("settings")) or {})
    if cfg.get("ckpt_path"):
        model: Any = str(cfg.ckpt_path)
        own = {"backbone": backbone_cfg, "backbone_weights": cfg.get("backbone_weights")}
        own = {k: v for k, v in own.items() if v is not None}
    elif backbone_cfg:
        model, own = backbone_cfg, None
    else:
        raise InputError("Give ckpt_path=.../last.ckpt (an L-CAM checkpoint), or backbone=NAME "
                         "(e.g. backbone=efficientnet_lite0) to run another method without one")
    engine = make_engine(model, method, device, cfg.get("layer"), checkpoint_settings=own, **settings)
    return engine.classifier.explainer or engine.backbone, engine


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
        write_csv_atomic(self.path, self.rows, COLUMNS)


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
    method = check_method(cfg.method) if cfg.get("method") else None
    analysis = cfg.get("analysis") or {}
    compare = [check_method(m) for m in (_plain(analysis.get("compare")) or [])]
    labels = cfg.get("labels")
    inputs = _plain(cfg.inputs)
    source = Source.of(inputs, labels=labels, exclude=[out])
    if labels is None and inputs == DEMO:
        for it in source.items:
            it.label = DEMO_LABELS.get(it.name, it.label)
    device = resolve_device(cfg.get("device"))
    t_load = time.perf_counter()
    model, engine = build_engine(cfg, method, device)
    load_s = time.perf_counter() - t_load
    method = engine.method

    plans = [parse_targets(_plain(cfg.get("targets")), engine.classes, len(source), int(cfg.get("k", 3)))]
    class_list = _plain(analysis.get("classes"))
    if class_list:
        plans.append(parse_targets([class_list if isinstance(class_list, list) else [class_list]], engine.classes, len(source)))
    mis = MisclassificationSheets(int(analysis.get("per_page", 8)), not analysis.get("all_labelled", False), cfg.alpha, cfg.cmap) \
        if analysis.get("misclassified") else None
    if mis is not None:
        plans.append(TargetPlan("label_pred"))
    cmp = None
    if compare:
        methods = [method] + [m for m in compare if m != method]
        cmp = ComparisonSheets([engine] + comparison_engines(engine, methods[1:], _plain(analysis.get("settings"))),
                               per_page=int(analysis.get("per_page", 8)))

    table = ResultsTable(out / "results.csv")
    ana = out / "analysis"
    n_ok = n_failed = n_rows = 0
    pages = {"misclassified": 0, "comparison": 0, "classes": 0}
    csv_every = max(1, int(cfg.get("csv_every", 20)))
    t0 = time.perf_counter()
    print(f"Explaining {len(source)} image(s) with {method} at layer {engine.layer} of "
          f"{engine.backbone.spec.name if engine.backbone.spec else 'the classifier'}", flush=True)
    try:
        with logging_redirect_tqdm():  # warnings print above the progress bar, once
            stream = explain_batches(engine, source, plans, resize=cfg.get("resize"), crop=cfg.get("crop"),
                                     batch_size=int(cfg.batch_size), num_workers=int(cfg.get("num_workers", 0)),
                                     bad_files="skip", progress=bool(cfg.get("progress", True)), delay=0.0)
            for n_batch, batch in enumerate(stream, 1):
                for item, err in batch.failed:
                    table.add_failed(item, method, err)
                    n_failed += 1
                if batch.results:
                    main, rest = batch.results[0], batch.results[1:]
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
                        for page in cmp.add(batch.images, main.predicted, main.names, titles):
                            pages["comparison"] += 1
                            save_image_atomic(page, ana / f"comparison_p{pages['comparison']:03d}.png")
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
        table.write()
    seconds = time.perf_counter() - t0
    summary = {"explained": n_ok, "failed": n_failed, "rows": n_rows, "seconds": seconds, "load_seconds": load_s,
               "images_per_second": n_ok / seconds if seconds > 0 else 0.0, "csv": out / "results.csv", "output_dir": out,
               "method": method, "layer": engine.layer, "pages": pages}
    _report(summary, mis)
    return summary


def _report(s: dict[str, Any], mis: MisclassificationSheets | None) -> None:
    lines = [f"Explained {s['explained']} image(s) with {s['method']} at layer {s['layer']} ({s['rows']} map(s)) in {s['seconds']:.1f} s "
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


def exit_status(cfg: DictConfig) -> int:
    """Run the command: 0 when at least one image was explained, 1 when none could be, 2 on bad input
    (one ``error: ...`` line: :func:`lcam.runtime.tasks.run_for_status`)."""
    return run_for_status(run_explain, cfg)
