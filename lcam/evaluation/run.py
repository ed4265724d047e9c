"""The job behind ``evaluate.py``: build the classifier and explainers, test, write the table."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from lcam.backbones import FrozenClassifier, build_backbone
from lcam.evaluation.evaluator import ExplainerEvaluator
from lcam.evaluation.report import to_markdown, write_tables
from lcam.explainers import build_explainer
from lcam.explainers.learned import LCAMExplainer
from lcam.io import save_image_atomic
from lcam.localisation import boxes_loader, localisation_metrics, write_win_rate
from lcam.training import instantiate_group
from lcam.viz import comparison_grid


def latest_checkpoint(runs_dir: str) -> str | None:
    """The newest ``<runs_dir>/*/checkpoints/last.ckpt`` (resolver ``${latest_checkpoint:DIR}``), or None."""
    found = sorted(Path(os.path.expanduser(runs_dir)).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


if not OmegaConf.has_resolver("latest_checkpoint"):
    OmegaConf.register_new_resolver("latest_checkpoint", latest_checkpoint)


def method_configs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Display name -> explainer settings: ``explainer=<one>`` if given, else the ``methods`` set.

    Entries that are null are dropped (``methods.rise=null`` removes RISE); an ``lcam`` entry whose
    checkpoint is not set is skipped with a warning (the demo includes L-CAM only when a
    checkpoint exists or is given).
    """
    if cfg.get("explainer"):
        one = OmegaConf.to_container(cfg.explainer, resolve=True)
        return {str(one.pop("label", None) or one["name"]): one}  # type: ignore[union-attr]
    out: dict[str, dict[str, Any]] = {}
    for label, node in (cfg.get("methods") or {}).items():
        if node is None:
            continue
        settings = OmegaConf.to_container(node, resolve=True)
        shown = settings.pop("label", None) or label  # type: ignore[union-attr]
        if settings.get("name") == "lcam" and not settings.get("ckpt_path"):  # type: ignore[union-attr]
            warnings.warn(f"methods.{label}: no checkpoint (methods.{label}.ckpt_path) given or found; skipped", stacklevel=2)
            continue
        out[str(shown)] = settings  # type: ignore[assignment]
    if not out:
        raise ValueError("Nothing to evaluate: give explainer=<name> or a non-empty methods set (e.g. methods=demo)")
    return out


def build_explainers(cfg: DictConfig) -> tuple[FrozenClassifier, dict[str, Any]]:
    """The shared classifier and every explainer. L-CAM checkpoints bring their own backbone,
    which then serves every method (and must agree with the other checkpoints)."""
    methods = method_configs(cfg)
    model: FrozenClassifier | None = None
    explainers: dict[str, Any] = {}
    for label, settings in methods.items():
        if settings.get("name") == "lcam":
            explainer = LCAMExplainer(model, ckpt_path=os.path.expanduser(settings["ckpt_path"]))
            model = explainer.model
            explainers[label] = explainer
    if model is None:
        model = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))  # type: ignore[arg-type]
    elif cfg.get("backbone") and cfg.backbone.get("name") != model.spec.name:  # type: ignore[union-attr]
        print(f"Note: every method explains the L-CAM checkpoint's backbone {model.spec.name} ({model.spec.layer})")  # type: ignore[union-attr]
    for label, settings in methods.items():
        if settings.get("name") != "lcam":
            explainers[label] = build_explainer(settings, model)
    ordered = {label: explainers[label] for label in methods}
    return model, ordered


def run_evaluation(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate, write ``results.md`` / ``results.csv`` / ``methods.png`` into the run directory."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model, explainers = build_explainers(cfg)
    evaluator = ExplainerEvaluator(model, explainers, thresholds=list(cfg.thresholds),
                                   extra_metrics={**_extra_metrics(cfg), **localisation_metrics(cfg)}, keep_maps=int(cfg.figure_images))
    loggers = instantiate_group(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, _convert_="all")
    out = Path(cfg.paths.output_dir)
    try:
        datamodule.setup("test")
        trainer.test(evaluator, dataloaders=boxes_loader(datamodule.test_dataloader(), cfg.get("boxes")), verbose=False)
        rows = evaluator.results
        if trainer.is_global_zero:
            _write_outputs(cfg, evaluator, rows, out, loggers)
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
    return rows


def _extra_metrics(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("insertion_deletion"):
        return {}
    from lcam.metrics import InsertionDeletion

    settings = OmegaConf.to_container(cfg.insertion_deletion, resolve=True) if isinstance(cfg.insertion_deletion, DictConfig) else {}
    return {"insdel": lambda model: InsertionDeletion(model, **settings)}


def _write_outputs(cfg: DictConfig, evaluator: ExplainerEvaluator, rows: list[dict[str, Any]], out: Path, loggers: list) -> None:
    title = cfg.get("title") or f"{evaluator.model.spec.name if evaluator.model.spec else 'classifier'}: {rows[0]['images'] if rows else 0} images"
    md, cs = write_tables(rows, out, title=title)
    lines = [to_markdown(rows, title), f"Table: {md}", f"CSV:   {cs}"]
    if win := write_win_rate(evaluator, out):  # Win% method x method when boxes= is given
        lines += [win, f"Win%:  {out / 'win_rate.md'}"]
    fig = evaluator.figure_inputs()
    if fig is not None:
        images, maps, titles = fig
        grid = comparison_grid(images, maps, titles)
        save_image_atomic(grid, out / "methods.png")
        lines.append(f"Figure: {out / 'methods.png'}")
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            cols = ["method", *[k for k in rows[0] if k != "method"]] if rows else []
            logger.log_table(key="results", columns=cols, data=[[r.get(c) for c in cols] for r in rows])
            if fig is not None:
                logger.log_image(key="methods", images=[grid])
    print("\n".join(lines))
