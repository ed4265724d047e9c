"""The job behind ``python evaluate.py +experiment=drise_demo`` (a config with a ``detector``).

Runs the detector on the images, explains the chosen detections with D-RISE, and measures:

* the paper's protocol (Fig. 9 of the D-RISE face-detection paper, :mod:`lcam.detection.folder_map`):
  the detector's **mAP over the whole folder** at each fraction of pixels deleted / inserted (every
  image perturbed by the max of its detections' maps), one curve and AUC per explainer (D-RISE and
  the reference maps ``folder_metrics.reference``: ``box``, ``random``), against the ground-truth
  boxes when a list file is given, else (said in the output) against the detector's own detections;
* per detection, the per-image diagnostic (:mod:`lcam.detection.metrics`): deletion / insertion
  AUCs of the target's D-RISE similarity and of ``image_ap``, the AP of its class in its own image
  only (not the paper's number), and the energy in its box.

Written into the run folder:

* ``folder_map.md`` / ``folder_map.csv``: the folder mAP AUCs per explainer / every curve point;
  ``folder_map.png``: the curves;
* ``results.md`` / ``results.csv``: one row per detection (per-image diagnostic), then a ``mean`` row;
* ``detections.png``: every explained detection's map over its image, with its box, class and score;
* ``curves.png``: the mean per-image diagnostic curves;

logged to W&B (table, figure, mean metrics) like the classifier evaluation.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lcam.detection.api import iter_explanations, make_drise, parse_targets
from lcam.detection.folder_map import AGAINST_GT, REFERENCE_MAPS, FolderDeletionInsertion
from lcam.detection.groundtruth import read_ground_truth
from lcam.detection.metrics import DetectionInsertionDeletion
from lcam.detection.registry import build_detector, require_detector_features
from lcam.runtime.io import atomic_write, save_image_atomic, write_csv_atomic

COLUMNS = ["image", "detection", "class", "score", "energy_in_box", "deletion_similarity", "deletion_image_ap",
           "insertion_similarity", "insertion_image_ap", "drise_s"]
FOLDER_COLUMNS = ["explainer", "deletion_map_auc", "insertion_map_auc", "map_unperturbed"]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) or OmegaConf.is_list(value) else value


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_results(rows: list[dict[str, Any]], out: Path, title: str) -> tuple[Path, Path]:
    """``results.md`` and ``results.csv`` (atomically)."""
    lines = [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    md, cs = out / "results.md", out / "results.csv"
    with atomic_write(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    write_csv_atomic(cs, rows, COLUMNS)
    return md, cs


def detections_figure(panels: list[np.ndarray], titles: list[str], columns: int = 4) -> Any:
    """A grid of overlay panels ``(H, W, 3)`` in [0, 1] with titles (PIL image)."""
    from lcam.viz import panel_grid

    rows = [panels[i:i + columns] for i in range(0, len(panels), columns)]
    names = [titles[i:i + columns] for i in range(0, len(titles), columns)]
    return panel_grid(rows, names, cell=2.6)


def curves_figure(curves: dict[str, torch.Tensor]) -> Any:
    """Mean per-image diagnostic deletion / insertion curves of both scores (PIL image)."""
    import matplotlib.pyplot as plt

    from lcam.viz import figure_to_pil

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, score in zip(axes, ("similarity", "image_ap")):
        for key, y in curves.items():
            if key.endswith(score):
                x = np.linspace(0, 1, len(y))
                ax.plot(x, y.numpy(), label=key.split("_")[0])
        ax.set_xlabel("fraction of pixels changed")
        ax.set_title("D-RISE similarity" if score == "similarity" else "per-image AP (diagnostic)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_to_pil(fig)


def folder_curves_figure(curves: dict[tuple[str, str], torch.Tensor], x: torch.Tensor, against: str) -> Any:
    """The folder mAP curves, deletion and insertion, one line per explainer (PIL image)."""
    import matplotlib.pyplot as plt

    from lcam.viz import figure_to_pil

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, mode in zip(axes, ("deletion", "insertion")):
        for (m, name), y in curves.items():
            if m == mode:
                ax.plot(x.numpy(), y.numpy(), label=name)
        ax.set_xlabel(f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("mAP over the folder")
        ax.set_title(f"{mode} (vs {'ground truth' if against == AGAINST_GT else 'own detections'})", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_to_pil(fig)


def write_folder_results(folder: FolderDeletionInsertion, out: Path, n_images: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``folder_map.md`` / ``.csv`` / ``.png`` from the folder protocol; returns its table rows and
    the lines to print."""
    curves = folder.curves()
    x = folder.fractions()
    rows = []
    for name in folder.explainers:
        row: dict[str, Any] = {"explainer": name}
        for mode in folder.modes:
            row[f"{mode}_map_auc"] = float(torch.trapezoid(curves[(mode, name)], x))
        first = curves.get(("deletion", name), curves.get(("insertion", name)))
        row["map_unperturbed"] = float(first[0] if ("deletion", name) in curves else first[-1])
        rows.append(row)
    against = folder.against or AGAINST_GT
    n_gt = folder.n_reference_boxes()
    note = (f"against {n_gt} ground-truth boxes" if against == AGAINST_GT else f"against {against}: {n_gt} reference detections")
    title = (f"Detection deletion / insertion, the paper's protocol (Fig. 9): mAP over the folder of {n_images} images "
             f"at each fraction of pixels perturbed (blur kernel {folder.blur_kernel}, sigma {folder.blur_sigma:g}; "
             f"AP at IoU {folder.iou_threshold:g}, all-point interpolation), {note}; "
             f"an image's map: the {folder.combine} of its detections' maps")
    lines = [f"### {title}", "", "| " + " | ".join(FOLDER_COLUMNS) + " |", "|" + "---|" * len(FOLDER_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in FOLDER_COLUMNS) + " |" for r in rows]
    md, cs = out / "folder_map.md", out / "folder_map.csv"
    with atomic_write(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    points = [{"explainer": name, "mode": mode, "fraction": round(float(xi), 6), "map": float(yi)}
              for (mode, name), y in curves.items() for xi, yi in zip(x, y)]
    write_csv_atomic(cs, points, ["explainer", "mode", "fraction", "map"])
    save_image_atomic(folder_curves_figure(curves, x, against), out / "folder_map.png")
    return rows, ["\n".join(lines), f"Folder mAP: {md}, {cs}, {out / 'folder_map.png'}"]


def run_detection_evaluation(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate D-RISE on a detector; returns the per-image diagnostic table rows (per detection,
    then the mean); the folder protocol's results are written to ``folder_map.*``."""
    from lcam.explain.inputs import collect_inputs

    require_detector_features(_plain(cfg.detector))
    torch.manual_seed(int(cfg.get("seed", 0)))
    out = Path(str(cfg.paths.output_dir))
    data = _plain(cfg.get("detection_data")) or {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cfg.get("device", "auto") == "auto" else torch.device(cfg.device)
    detector = build_detector(_plain(cfg.detector), device)
    spec = parse_targets(data.get("targets"), detector)
    drise = make_drise(detector, _plain(cfg.get("drise")) or {})
    items = collect_inputs(data.get("inputs", "demo"))
    if data.get("max_images"):
        items = items[: int(data["max_images"])]
    gt = read_ground_truth(data["ground_truth"], detector) if data.get("ground_truth") else None
    metric_cfg = _plain(cfg.get("detection_metrics")) or {}
    metric = DetectionInsertionDeletion(detector, **metric_cfg)
    folder_cfg = dict(_plain(cfg.get("folder_metrics")) or {})
    reference = list(folder_cfg.pop("reference", ["box", "random"]) or [])
    bad = sorted(set(reference) - set(REFERENCE_MAPS))
    if bad:
        raise ValueError(f"Unknown reference map(s) {bad}; valid: {sorted(REFERENCE_MAPS)}")
    seed = int(cfg.get("seed", 0))
    folder = FolderDeletionInsertion(detector, explainers=["drise", *reference], seed=seed, **folder_cfg)
    n_images = 0
    loggers = _loggers(cfg)
    rows: list[dict[str, Any]] = []
    panels: list[np.ndarray] = []
    titles: list[str] = []
    max_panels = int(cfg.get("figure_detections", 16))
    t_all = time.perf_counter()
    try:
        for item, result, error in iter_explanations(detector, items, spec, drise, data.get("max_size", 640)):
            if result is None:
                print(f"skipped {item.file}: {error}")
                continue
            truth = None
            if gt is not None:
                boxes, labels = gt.get(item, result.scale)
                truth = [(boxes, labels)]
            size = tuple(result.image.shape[-2:])
            maps = {"drise": result.maps, **{r: REFERENCE_MAPS[r](result.targets.boxes, size, seed + n_images) for r in reference}}
            folder.update(n_images, result.image.to(device), {k: v.to(device) for k, v in maps.items()},
                          None if truth is None else truth[0])
            n_images += 1
            if not len(result):
                rows.append({"image": item.name, "detection": "", "class": "no detections"})
                continue
            seconds = drise.last_seconds
            before = metric.per_target.shape[0]
            metric.update(result.image.unsqueeze(0).to(device), [result.maps.to(device)], [result.targets.to(device)], truth)
            aucs = metric.per_target[before:]
            for t, (rec, energy) in enumerate(zip(result.records(), result.energy())):
                row = {"image": item.name, "detection": t, "class": rec["class_name"], "score": float(result.scores[t]),
                       "energy_in_box": energy, "drise_s": seconds / max(1, len(result))}
                row.update({k: float(v) for k, v in zip(metric.keys, aucs[t].tolist())})
                rows.append(row)
                if len(panels) < max_panels:
                    panels.append(np.asarray(result.overlay(t, float(cfg.get("alpha", 0.5)))) / 255.0)
                    titles.append(f"{item.name}: {result.title(t)}")
        scored = [r for r in rows if "energy_in_box" in r]
        mean = {"image": "mean", "detection": len(scored), "class": "", "score": ""}
        for key in ["energy_in_box", *metric.keys, "drise_s"]:
            vals = [r[key] for r in scored if key in r]
            mean[key] = float(np.mean(vals)) if vals else ""
        rows.append(mean)
        title = cfg.get("title") or (f"D-RISE on {detector.name}: {len(scored)} detections in {len(items)} images "
                                     f"(per-image diagnostic: image_ap is each detection's class in its own image, not the paper's folder mAP)")
        md, cs = write_results(rows, out, title)
        lines = [Path(md).read_text().rstrip(), f"Table: {md}", f"CSV:   {cs}"]
        folder_rows: list[dict[str, Any]] = []
        if n_images:
            folder_rows, folder_lines = write_folder_results(folder, out, n_images)
            lines += folder_lines
        images = {}
        if panels:
            images["detections"] = detections_figure(panels, titles)
            save_image_atomic(images["detections"], out / "detections.png")
            lines.append(f"Figure: {out / 'detections.png'}")
        if scored:
            images["curves"] = curves_figure(metric.mean_curves())
            save_image_atomic(images["curves"], out / "curves.png")
            lines.append(f"Curves: {out / 'curves.png'}")
        lines.append(f"Total {time.perf_counter() - t_all:.1f} s; D-RISE {drise.n_masks} masks per image, s={drise.s}, p={drise.p}")
        _log(loggers, rows, mean, metric.keys, images, folder_rows)
        print("\n".join(lines), flush=True)
    finally:
        _finish(loggers)
    return rows


def _loggers(cfg: DictConfig) -> list[Any]:
    if not cfg.get("logger"):
        return []
    from lcam.runtime.configs import instantiate_group

    return instantiate_group(cfg.logger)


def _log(loggers: list[Any], rows: list[dict[str, Any]], mean: dict[str, Any], keys: list[str], images: dict[str, Any],
         folder_rows: list[dict[str, Any]]) -> None:
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        metrics = {f"drise/{k}": float(mean[k]) for k in ["energy_in_box", *keys] if isinstance(mean.get(k), float)}
        metrics.update({f"folder_map/{k}/{r['explainer']}": float(r[k]) for r in folder_rows
                        for k in FOLDER_COLUMNS[1:] if isinstance(r.get(k), float)})
        if metrics:
            logger.log_metrics(metrics)
        if isinstance(logger, WandbLogger):
            logger.log_table(key="results", columns=COLUMNS, data=[[r.get(c, "") if r.get(c, "") != "" else None for c in COLUMNS] for r in rows])
            for key, img in images.items():
                logger.log_image(key=key, images=[img])
        if hasattr(logger, "save"):
            logger.save()


def _finish(loggers: list[Any]) -> None:
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
