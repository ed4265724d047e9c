"""The job behind ``python evaluate.py +experiment=drise_demo`` (a config with a ``detector``).

Runs the detector on the images, explains the chosen detections with D-RISE, measures the
detection deletion/insertion AUCs (D-RISE similarity and AP; ground truth when a list file is
given, else the original detections) and the energy in each box, and writes into the run folder:

* ``results.md`` / ``results.csv``: one row per detection, then a ``mean`` row;
* ``detections.png``: every explained detection's map over its image, with its box, class and score;
* ``curves.png``: the mean deletion / insertion curves;

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
from lcam.detection.groundtruth import read_ground_truth
from lcam.detection.metrics import DetectionInsertionDeletion
from lcam.detection.registry import build_detector
from lcam.io import atomic_write, save_image_atomic, write_csv_atomic

COLUMNS = ["image", "detection", "class", "score", "energy_in_box", "deletion_similarity", "deletion_ap",
           "insertion_similarity", "insertion_ap", "drise_s"]


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
    """Mean deletion / insertion curves of both scores (PIL image)."""
    import matplotlib.pyplot as plt

    from lcam.viz import figure_to_pil

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, score in zip(axes, ("similarity", "ap")):
        for key, y in curves.items():
            if key.endswith(score):
                x = np.linspace(0, 1, len(y))
                ax.plot(x, y.numpy(), label=key.split("_")[0])
        ax.set_xlabel("fraction of pixels changed")
        ax.set_title(f"D-RISE {score}" if score == "similarity" else "AP")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_to_pil(fig)


def run_detection_evaluation(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate D-RISE on a detector; returns the table rows (per detection, then the mean)."""
    from lcam.explain.inputs import collect_inputs

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
            if not len(result):
                rows.append({"image": item.name, "detection": "", "class": "no detections"})
                continue
            seconds = drise.last_seconds
            truth = None
            if gt is not None:
                boxes, labels = gt.get(item, result.scale)
                truth = [(boxes, labels)]
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
        title = cfg.get("title") or f"D-RISE on {detector.name}: {len(scored)} detections in {len(items)} images"
        md, cs = write_results(rows, out, title)
        lines = [Path(md).read_text().rstrip(), f"Table: {md}", f"CSV:   {cs}"]
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
        _log(loggers, rows, mean, metric.keys, images)
        print("\n".join(lines), flush=True)
    finally:
        _finish(loggers)
    return rows


def _loggers(cfg: DictConfig) -> list[Any]:
    if not cfg.get("logger"):
        return []
    from lcam.training import instantiate_group

    return instantiate_group(cfg.logger)


def _log(loggers: list[Any], rows: list[dict[str, Any]], mean: dict[str, Any], keys: list[str], images: dict[str, Any]) -> None:
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        metrics = {f"drise/{k}": float(mean[k]) for k in ["energy_in_box", *keys] if isinstance(mean.get(k), float)}
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
