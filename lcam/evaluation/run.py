"""The job behind ``evaluate.py``: build the classifier and explainers, test, write the table."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from lcam.backbones import FrozenClassifier, build_backbone
from lcam.evaluation.evaluator import ExplainerEvaluator
from lcam.evaluation.report import to_markdown, write_tables
from lcam.explainers import build_explainer, explainer_settings, missing_settings
from lcam.io import save_image_atomic
from lcam.localisation import boxes_loader, localisation_metrics, write_win_rate
from lcam.tasks import task_wrapper
from lcam.training import instantiate_group
from lcam.viz import comparison_grid

def _run_config(ckpt: Path) -> dict[str, Any]:
    """The resolved config of the run that wrote ``<run>/checkpoints/<ckpt>`` (``<run>/.hydra/config.yaml``)."""
    path = ckpt.parent.parent / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    with contextlib.suppress(Exception):
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        return cfg if isinstance(cfg, dict) else {}
    return {}


def latest_checkpoint(runs_dir: str, backbone: str | None = None) -> str | None:
    """The newest ``<runs_dir>/*/checkpoints/last.ckpt`` of a run made by the demo config (resolver
    ``${latest_checkpoint:DIR,BACKBONE}``): demo data and, when given, the backbone ``BACKBONE``.
    Runs of other configs (a folder of photos, another backbone) are passed over; None if none fits."""
    found = sorted(Path(os.path.expanduser(runs_dir)).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    for ckpt in reversed(found):
        cfg = _run_config(ckpt)
        data = str((cfg.get("data") or {}).get("_target_", ""))
        name = str((cfg.get("backbone") or {}).get("name", ""))
        if data.endswith("DemoDataModule") and (backbone is None or name == backbone):
            return str(ckpt)
    return None


if not OmegaConf.has_resolver("latest_checkpoint"):
    OmegaConf.register_new_resolver("latest_checkpoint", latest_checkpoint)


def method_configs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Display name -> explainer settings: ``explainer=<one>`` if given, else the ``methods`` set.

    Entries that are null are dropped (``methods.rise=null`` removes RISE); an entry whose required
    setting is not set (an ``lcam`` entry without ``ckpt_path``) is skipped with a warning that names
    the key (the demo includes L-CAM only when a demo checkpoint exists or is given).
    """
    if cfg.get("explainer"):
        one = OmegaConf.to_container(cfg.explainer, resolve=True)
        label = str(one.pop("label", None) or one["name"])  # type: ignore[union-attr]
        missing = missing_settings(one)  # type: ignore[arg-type]
        if missing:
            raise ValueError(f"explainer={one['name']} needs explainer.{missing[0]}=... (e.g. explainer.{missing[0]}=/path/to/last.ckpt)")  # type: ignore[index]
        _check_checkpoint_file(one, "explainer", label)  # type: ignore[arg-type]
        return {label: one}  # type: ignore[dict-item]
    out: dict[str, dict[str, Any]] = {}
    for key, node in (cfg.get("methods") or {}).items():
        if node is None:
            continue
        settings = OmegaConf.to_container(node, resolve=True)
        shown = settings.pop("label", None) or key  # type: ignore[union-attr]
        missing = missing_settings(settings)  # type: ignore[arg-type]
        if missing:
            print(f"Skipping {shown}: methods.{key}.{missing[0]} is not set and none was found "
                  f"(give methods.{key}.{missing[0]}=...)", flush=True)
            continue
        _check_checkpoint_file(settings, f"methods.{key}", str(shown))  # type: ignore[arg-type]
        out[str(shown)] = settings  # type: ignore[assignment]
    if not out:
        raise ValueError("Nothing to evaluate: give explainer=<name> or a non-empty methods set (e.g. methods=demo)")
    return out


def _check_checkpoint_file(settings: dict[str, Any], prefix: str, shown: str) -> None:
    """A checkpoint setting that names no file: one message naming the method and its key."""
    setting = explainer_settings(settings)[0].checkpoint_setting
    path = settings.get(setting) if setting else None
    if path and not os.path.isfile(os.path.expandvars(os.path.expanduser(str(path)))):
        raise FileNotFoundError(f"{shown}: checkpoint not found: {path}. Set {prefix}.{setting}=/path/to/last.ckpt "
                                "(written by train.py)")


def build_explainers(cfg: DictConfig) -> tuple[FrozenClassifier, dict[str, Any]]:
    """The shared classifier and every explainer. Methods built from a checkpoint bring their own
    classifier (``checkpoint_setting``), which then serves every method (and must agree with the
    other checkpoints); otherwise ``cfg.backbone`` is built."""
    methods = method_configs(cfg)
    model: FrozenClassifier | None = None
    explainers: dict[str, Any] = {}
    for label, settings in methods.items():
        cls, _ = explainer_settings(settings)
        if cls.checkpoint_setting:
            explainer = build_explainer(settings, model)
            model = explainer.model
            explainers[label] = explainer
            print(f"{label}: {cls.checkpoint_setting}={settings[cls.checkpoint_setting]} "
                  f"({model.spec.name if model.spec else 'classifier'} at layer {explainer.layer})", flush=True)
    if model is None:
        model = build_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))  # type: ignore[arg-type]
    elif cfg.get("backbone") and cfg.backbone.get("name") != model.spec.name:  # type: ignore[union-attr]
        print(f"Note: every method explains the checkpoint's backbone {model.spec.name} ({model.spec.layer})")  # type: ignore[union-attr]
    for label, settings in methods.items():
        if label not in explainers:
            explainers[label] = build_explainer(settings, model)
    ordered = {label: explainers[label] for label in methods}
    return model, ordered


@task_wrapper  # the W&B run is closed at the end, also on failure; skipped images are listed (lcam.tasks)
def run_evaluation(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate, write ``results.md`` / ``results.csv`` / ``methods.png`` into the run directory."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model, explainers = build_explainers(cfg)
    loggers = instantiate_group(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, _convert_="all")
    out = Path(cfg.paths.output_dir)
    datamodule.setup("test")
    loader = boxes_loader(datamodule.test_dataloader(), cfg.get("boxes"))
    per_process = -(-len(loader.dataset) // max(1, trainer.world_size))
    evaluator = ExplainerEvaluator(model, explainers, thresholds=list(cfg.thresholds),
                                   extra_metrics={**_extra_metrics(cfg), **localisation_metrics(cfg)},
                                   keep_maps=int(cfg.figure_images),
                                   progress_total=per_process if cfg.get("progress", True) else 0)
    for _ in evaluator.methods_in_turn():  # one method at a time: one progress bar (name, ETA) each
        trainer.test(evaluator, dataloaders=loader, verbose=False)
    rows = evaluator.results
    if trainer.is_global_zero:
        _write_outputs(cfg, evaluator, rows, out, loggers)
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
