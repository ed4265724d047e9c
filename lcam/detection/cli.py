"""``python -m lcam.explain detector=yolov3_tiny inputs=photos/ output_dir=out/`` (detectors).

Writes into the output folder, per image and per explained detection, an overlay PNG
``<image>_<k>_<class>.png`` (the D-RISE map, the box, class and score; input sub-folders are
mirrored) and one ``detections.csv`` with the columns ``file, detection, class_id, class_name,
score, x1, y1, x2, y2, energy_in_box, status``: boxes in the pixels of the original file,
``energy_in_box`` the share of the map's sum inside the box, ``status`` ``ok``, ``no detections``
or ``failed: <error>`` (unreadable files are skipped and listed, with a warning each). Files are
written atomically and ``detections.csv`` is rewritten every ``csv_every`` images, so what is
written survives a later failure.

With ``+ground_truth=boxes.txt`` (``name x1 y1 x2 y2 [class]`` lines, file pixels) the paper's
analyses follow: each detection's status is ``true positive`` or ``false positive`` (greedy
matching at IoU 0.5), every missed ground-truth box is explained as a target box (rows with status
``missed``, overlays ``<image>_missed<k>_<class>.png``), and ``analysis/`` gets the average
saliency map over all detections (each map cropped to its box, resized, normalised, averaged:
``average_map.png`` / ``.npy``) and contact sheets of false positives and missed objects.

Settings: ``detector=NAME`` (a ``conf/detector`` file; ``detector.weights=...`` etc.), ``targets=``
(see :mod:`lcam.detection.api`), D-RISE settings with ``+settings.n_masks=500`` (``s``, ``p``,
``seed``, ``batch_size``...), ``max_size`` (``+max_size=800``; default 640), ``device``, ``alpha``,
``cmap``, ``progress``, ``csv_every``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lcam.detection.analysis import AverageMap, match_detections
from lcam.detection.api import COLUMNS, TargetSpec, explain_one, iter_explanations, make_drise, parse_targets
from lcam.detection.registry import build_detector, require_detector_features
from lcam.explainers.targets import Box
from lcam.runtime.io import atomic_write, save_image_atomic, write_csv_atomic

log = logging.getLogger("lcam.detection")

#: D-RISE settings of the command line when not given (the paper's s; N sized for a CPU)
DEFAULT_SETTINGS = {"n_masks": 1000, "s": 16, "p": 0.5}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_")[:40] or "x"


class DetectionsTable:
    """Rows of ``detections.csv``, rewritten atomically on :meth:`write`."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []  # type: ignore[var-annotated]

    def write(self) -> None:
        write_csv_atomic(self.path, self.rows, COLUMNS)


def _device(name: Any) -> Any:
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(str(name))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return dev


def run_detection_explain(cfg: DictConfig) -> dict[str, Any]:
    """Run the command from a composed config; returns a summary dict (raises on bad input)."""
    from lcam.explain.inputs import InputError, collect_inputs
    from lcam.explain.stream import progress_bar

    if OmegaConf.is_missing(cfg, "inputs") or cfg.get("inputs") in (None, "", []):
        raise InputError("No inputs: give inputs=path (an image file, a folder, a glob such as 'photos/*.jpg', or demo)")
    method = cfg.get("method")
    if method not in (None, "drise"):
        raise InputError(f"method={method}: detectors are explained with D-RISE; use method=drise or leave it out")
    require_detector_features(_plain(cfg.detector))  # a shadowed / missing optional dependency: fail now
    out = Path(str(cfg.paths.output_dir))
    settings = {**DEFAULT_SETTINGS, **(_plain(cfg.get("settings")) or {})}
    items = collect_inputs(_plain(cfg.inputs), exclude=[out])
    t_load = time.perf_counter()
    detector = build_detector(_plain(cfg.detector), _device(cfg.get("device")))  # weights fail here, before any image is read
    load_s = time.perf_counter() - t_load
    spec: TargetSpec = parse_targets(_plain(cfg.get("targets")), detector)
    drise = make_drise(detector, settings)
    gt = None
    if cfg.get("ground_truth"):
        from lcam.detection.groundtruth import read_ground_truth

        gt = read_ground_truth(str(cfg.ground_truth), detector)
    average, sheets = AverageMap(), {"false_positives": [], "missed": []}
    table = DetectionsTable(out / "detections.csv")
    alpha, cmap = float(cfg.get("alpha", 0.5)), str(cfg.get("cmap", "jet"))
    csv_every = max(1, int(cfg.get("csv_every", 20)))
    n_ok = n_failed = n_maps = 0
    t0 = time.perf_counter()
    bar = progress_bar(len(items), "drise", bool(cfg.get("progress", True)), delay=0.0)
    try:
        for k, (item, result, error) in enumerate(iter_explanations(detector, items, spec, drise, cfg.get("max_size", 640)), 1):
            if result is None:
                log.warning("skipped %s: %s", item.file, error)
                table.rows.append({"file": item.file, "status": f"failed: {error}"})
                n_failed += 1
            else:
                for t in range(len(result)):
                    name = f"{item.name}_{t}_{_slug(result.class_names[int(result.targets.labels[t])])}.png"
                    save_image_atomic(result.overlay(t, alpha, cmap), out / name)
                rows = result.records()
                if gt is not None:
                    rows += _ground_truth_analysis(gt, detector, drise, item, result, rows, average, sheets, out, alpha, cmap)
                table.rows.extend(rows)
                n_ok += 1
                n_maps += len(result)
            bar.update(1)
            if k % csv_every == 0:
                table.write()
    finally:
        bar.close()
        table.write()
        if gt is not None:
            _write_analysis(out / "analysis", average, sheets)
    seconds = time.perf_counter() - t0
    summary = {"explained": n_ok, "failed": n_failed, "maps": n_maps, "seconds": seconds, "load_seconds": load_s,
               "csv": out / "detections.csv", "output_dir": out, "detector": detector.name}
    print(f"Explained {n_maps} detection(s) in {n_ok} image(s) with D-RISE on {detector.name} ({drise.n_masks} masks) in "
          f"{seconds:.1f} s (model load {load_s:.1f} s)" + (f"; {n_failed} file(s) failed (listed in detections.csv)" if n_failed else "")
          + f"\n  detections: {summary['csv']}\n  overlays: {out}{os.sep}", flush=True)
    return summary


def _ground_truth_analysis(gt: Any, detector: Any, drise: Any, item: Any, result: Any, rows: list[dict[str, Any]],
                           average: AverageMap, sheets: dict[str, list], out: Path, alpha: float, cmap: str) -> list[dict[str, Any]]:
    """Mark ``rows`` true/false positive, explain the missed ground-truth boxes; returns their rows."""
    import numpy as np
    import torch

    gboxes, glabels = gt.get(item, result.scale)
    h, w = result.image.shape[-2:]
    gboxes = torch.minimum(gboxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=gboxes.dtype))  # boxes past the border
    det_ok, gt_ok = match_detections(result.targets.boxes, result.targets.labels, result.scores, gboxes, glabels)
    if len(result):
        average.add(result.maps, result.targets.boxes)
        for t, row in enumerate(rows):
            row["status"] = "true positive" if det_ok[t] else "false positive"
            if not det_ok[t]:
                sheets["false_positives"].append((np.asarray(result.overlay(t, alpha, cmap)) / 255.0, f"{item.name}: {result.title(t)}"))
    area = (gboxes[:, 2] - gboxes[:, 0]) * (gboxes[:, 3] - gboxes[:, 1])
    missed = torch.nonzero(~gt_ok & (area > 0)).flatten().tolist()
    if not missed:
        return []
    sx, sy = result.scale
    spec = TargetSpec(boxes=[Box(*(float(v) for v in (gboxes[j] * torch.tensor([sx, sy, sx, sy])).tolist()),
                                 int(glabels[j]) if glabels[j] >= 0 else None) for j in missed])
    found = explain_one(detector, drise, spec, item, result.image, result.scale)
    extra = found.records()
    for k, row in enumerate(extra):
        row.update(detection=f"missed{k}", status="missed")
        label = _slug(found.class_names[int(found.targets.labels[k])])
        panel = found.overlay(k, alpha, cmap)
        save_image_atomic(panel, out / f"{item.name}_missed{k}_{label}.png")
        sheets["missed"].append((np.asarray(panel) / 255.0, f"{item.name}: missed {found.title(k)}"))
    return extra


def _write_analysis(folder: Path, average: AverageMap, sheets: dict[str, list], per_sheet: int = 24) -> None:
    import numpy as np

    from lcam.detection.evaluate import detections_figure

    if average.count:
        save_image_atomic(average.image(), folder / "average_map.png")
        with atomic_write(folder / "average_map.npy", "wb") as f:
            np.save(f, average.value().numpy())
    for kind, panels in sheets.items():
        if panels:
            shown = panels[:per_sheet]
            save_image_atomic(detections_figure([p for p, _ in shown], [t for _, t in shown]), folder / f"{kind}.png")


def exit_status(cfg: DictConfig) -> int:
    """Run the command: 0 when something was explained, 1 when every file failed, 2 on bad input (one
    ``error: ...`` line: :func:`lcam.runtime.tasks.run_for_status`)."""
    from lcam.runtime.tasks import run_for_status

    return run_for_status(run_detection_explain, cfg)
