"""The job behind ``evaluate.py``: build the classifier and explainers, explain every image, write the tables.

:func:`run_evaluation` evaluates a dataset (or one shard of it) into a run folder of per-image
records (:mod:`lcam.evaluation.records`), continuing a killed run with ``resume=auto``;
:func:`merge_runs` (``evaluate.py merge=[DIR,...]``) joins the records of shards. Both end in
:func:`lcam.evaluation.outputs.write_outputs`, which computes every table from the records.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from lcam.backbones import FrozenClassifier, build_backbone
from lcam.evaluation.evaluator import ExplainerEvaluator, MetricSpec
from lcam.evaluation.localisation import boxed_dataset, localisation_metrics
from lcam.evaluation.manifest import RunFolder, open_run_folder
from lcam.evaluation.outputs import write_outputs
from lcam.evaluation.sampling import EvaluationSamples, collate_samples, parse_shard
from lcam.explainers import build_explainer, explainer_settings, missing_settings
from lcam.runtime.configs import instantiate_group
from lcam.runtime.tasks import task_wrapper


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


#: data settings that change how fast images load, not which images or how they look
DATA_SPEED_KEYS = ("batch_size", "num_workers", "pin_memory", "persistent_workers", "max_bad_fraction", "shard")
#: explainer settings that change speed only (chunk sizes, memory layout, skipped dead channels)
METHOD_SPEED_KEYS = ("batch_size", "channels_last", "prune")


def run_identity(cfg: DictConfig, model: FrozenClassifier, methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides an evaluation's numbers (compared on resume and merge): the classifier,
    the data settings and the methods' settings (speed-only keys left out), thresholds, metrics, seed."""
    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in DATA_SPEED_KEYS}  # type: ignore[union-attr]
    spec = model.spec
    def plain(key: str) -> Any:
        node = cfg.get(key)
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {
        "classifier": {"name": spec.name, "layer": spec.layer} if spec is not None else str(type(model).__name__),
        "data": data,
        "methods": {label: {k: v for k, v in settings.items() if k not in METHOD_SPEED_KEYS} for label, settings in methods.items()},
        "thresholds": [float(t) for t in cfg.thresholds],
        "insertion_deletion": plain("insertion_deletion"),
        "boxes": cfg.get("boxes"),
        "localisation": plain("localisation") if cfg.get("boxes") else None,
        "metrics": plain("metrics") or None,
        "seed": cfg.seed,
    }


def metric_specs(cfg: DictConfig) -> list[MetricSpec]:
    """The extra metrics of ``cfg``: ``insertion_deletion``, ``metrics.<name>`` entries (``_target_``
    classes built with the classifier, and the explainer when they need it), the localisation
    columns (``boxes=``)."""
    specs: list[MetricSpec] = []
    if cfg.get("insertion_deletion"):
        from lcam.metrics import InsertionDeletion

        node = cfg.insertion_deletion
        settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}
        InsertionDeletion(lambda x: x, **settings)  # bad settings fail before any image is explained
        specs.append(MetricSpec("insdel", lambda model, explainer: InsertionDeletion(model, **settings)))
    for key, node in (cfg.get("metrics") or {}).items():
        if node is None:
            continue
        specs.append(MetricSpec(str(key), _metric_builder(str(key), node)))
    for key, build in localisation_metrics(cfg).items():
        specs.append(MetricSpec(key, lambda model, explainer, build=build: build(model), localisation=True))
    return specs


def _metric_builder(key: str, node: DictConfig) -> Any:
    if "_target_" not in node:
        raise ValueError(f"metrics.{key} needs a _target_ (a lcam.metrics class), e.g. metrics.{key}._target_=lcam.metrics.Sparseness")
    target = hydra.utils.get_class(node._target_)

    def build(model: FrozenClassifier, explainer: Any) -> Any:
        extra = {"explainer": explainer} if getattr(target, "needs_explainer", False) else {}
        return hydra.utils.instantiate(node, model, _convert_="all", **extra)

    return build


def evaluation_loader(cfg: DictConfig, datamodule: Any) -> tuple[type, EvaluationSamples, dict[str, Any]]:
    """``(loader class, samples, loader settings)`` for the test loader over :class:`EvaluationSamples`
    (boxes when ``boxes=`` is set): the data module's own loader class and settings, so unreadable
    images are skipped and counted as in training; the evaluator's to-do sampler feeds it."""
    datamodule.setup("test")
    base = datamodule.test_dataloader()
    samples = EvaluationSamples(base.dataset, boxed_dataset(base.dataset, cfg.get("boxes")))
    kwargs: dict[str, Any] = dict(batch_size=base.batch_size, num_workers=base.num_workers, pin_memory=base.pin_memory,
                                  persistent_workers=base.persistent_workers, collate_fn=collate_samples)
    if hasattr(base, "max_bad_fraction"):
        kwargs["max_bad_fraction"] = base.max_bad_fraction
    return type(base), samples, kwargs  # type: ignore[return-value]


@task_wrapper  # the W&B run is closed at the end, also on failure; skipped images are listed (lcam.runtime.tasks)
def run_evaluation(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate into the run folder; write ``results.md`` / ``results.csv`` / intervals / Win% / ``methods.png``."""
    if cfg.get("merge"):
        return merge_runs(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    shard = parse_shard(cfg.data.get("shard"))
    data_cfg = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "shard"}  # type: ignore[union-attr]
    datamodule = hydra.utils.instantiate(data_cfg, _convert_="all")
    loader_cls, samples, loader_kwargs = evaluation_loader(cfg, datamodule)
    model, explainers = build_explainers(cfg)
    methods = method_configs(cfg)
    identity = run_identity(cfg, model, methods)
    folder: RunFolder = open_run_folder(cfg, identity, shard, samples.names)
    loggers = instantiate_group(cfg.get("logger")) if folder.is_rank_zero else []
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, use_distributed_sampler=False, _convert_="all")
    localisation = cfg.get("localisation") or {}
    evaluator = ExplainerEvaluator(model, explainers, run_dir=str(folder.path), n_images=len(samples), shard=shard,
                                   thresholds=list(cfg.thresholds), metrics=metric_specs(cfg),
                                   localisation_cue=str(localisation.get("target", "label")),
                                   figure_images=int(cfg.figure_images), progress=bool(cfg.get("progress", True)),
                                   attempt=folder.attempt)
    evaluator.sampler.batch_size = int(loader_kwargs["batch_size"])  # it deals the loader's batches whole
    loader = loader_cls(samples, sampler=evaluator.sampler, **loader_kwargs)
    for name in evaluator.methods_in_turn():  # one method at a time: one progress bar (name, ETA) each
        if folder.is_complete(name):
            print(f"{name}: every image has a record (resumed run): not run again", flush=True)
            continue
        trainer.test(evaluator, dataloaders=loader, verbose=False)
        trainer.strategy.barrier("lcam-evaluate-method")  # every process's records of the method are on disk
        if trainer.is_global_zero:
            folder.check_complete(name)
    if not trainer.is_global_zero:
        return []
    return write_outputs(cfg, folder.path, methods, loggers, title=_title(cfg, model, shard, len(samples)))


def _title(cfg: DictConfig, model: FrozenClassifier, shard: Any, n: int) -> str:
    if cfg.get("title"):
        return str(cfg.title)
    name = model.spec.name if model.spec else "classifier"
    return f"{name}: {len(shard.indices(n))} images" + (f" (shard {shard} of {n})" if shard.count > 1 else "")


def merge_runs(cfg: DictConfig) -> list[dict[str, Any]]:
    """``evaluate.py merge=[DIR1,DIR2,...]``: check the shards' runs and write their combined tables
    into this run's folder (see :func:`lcam.evaluation.manifest.merge_folders`)."""
    from lcam.evaluation.manifest import merge_folders

    out = Path(cfg.paths.output_dir)
    methods = merge_folders([str(p) for p in cfg.merge], out)  # display name -> settings
    loggers = instantiate_group(cfg.get("logger"))
    return write_outputs(cfg, out, methods, loggers, title=cfg.get("title") or f"merged: {len(cfg.merge)} shards")
