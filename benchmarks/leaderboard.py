"""The real-photo leaderboard: every method on real photos, through ``evaluate.py``'s own job and records.

Each method runs once per dataset as an evaluation run of its own (so slow methods can run in the
background, one at a time, and a killed one continues where its records stop); ``--report``
merges the runs (``evaluate.py merge=[...]``: same photos, same settings, checked) and writes the
table, the paired 95 % bootstrap intervals against Grad-CAM, Win%, the rank of every method under
every metric with Kendall's tau between metrics, and a figure of maps side by side, all computed
from the per-image records by :mod:`lcam.evaluation`::

    python -m benchmarks.leaderboard --dataset imagenette --methods gradcam gradcampp \
        --img-ckpt outputs/lcam_img_imagenette/runs/<run>/checkpoints/last.ckpt lcam_img
    python -m benchmarks.leaderboard --dataset imagenette --subset 200 --methods scorecam rise
    python -m benchmarks.leaderboard --dataset imagenette --report

Datasets (``../shared/data``): ``imagenette`` = imagenette-subset/val (1000 photos, 10 classes),
``imagenet1300`` = imagenet-val-1300 (1300 ILSVRC-2012 validation photos, 725 classes),
``heldout`` = the 10 % of imagenette-subset/train held out by ``+experiment=lcam_*_imagenette``.
The classifier is the offline EfficientNet-Lite0; AD/IC explain its top-1 class. ``--subset N``
runs on a seeded subset of N photos (``data.max_val_samples``: the same subset for every method
with the same N); the report lists each subset's rows together, so rows compare like with like.
``--metrics families`` adds faithfulness correlation, max-sensitivity, Gini, entropy and the
random-class check. Run folders: ``outputs/leaderboard/<dataset>[-N]/<key><tag>/``.
"""
from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lcam.evaluation.manifest import read_manifest
from lcam.evaluation.run import run_evaluation

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "outputs" / "leaderboard"

#: key -> (label, explainer config); L-CAM keys take their checkpoint from --img-ckpt / --fm-ckpt
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "lcam_img": ("L-CAM-Img", {"name": "lcam"}),
    "lcam_fm": ("L-CAM-Fm", {"name": "lcam"}),
    "gradcam": ("Grad-CAM", {"name": "gradcam"}),
    "gradcampp": ("Grad-CAM++", {"name": "gradcampp"}),
    "smoothgradcampp": ("Smooth Grad-CAM++", {"name": "smoothgradcampp"}),
    "xgradcam": ("XGrad-CAM", {"name": "xgradcam"}),
    "guidedcam": ("Guidance-map CAM", {"name": "guidedcam"}),
    "hirescam": ("HiResCAM", {"name": "hirescam"}),
    "layercam": ("LayerCAM", {"name": "layercam"}),
    "scorecam": ("Score-CAM", {"name": "scorecam"}),
    "scorecam_prob": ("Score-CAM (prob.)", {"name": "scorecam", "weighting": "probability"}),
    "sscam1": ("SS-CAM (1)", {"name": "sscam1"}),
    "sscam2": ("SS-CAM (2)", {"name": "sscam2"}),
    "rise": ("RISE", {"name": "rise", "n_masks": 4000}),
}
ONE_PASS = ("lcam_img", "lcam_fm", "gradcam", "gradcampp", "xgradcam", "guidedcam")


DATASETS = ("imagenette", "imagenet1300", "heldout")


def dataset_files(name: str) -> list[Path]:
    """The photos of a dataset, in a fixed order.

    ``heldout`` is the 10 % of imagenette-subset/train that ``+experiment=lcam_*_imagenette`` holds
    out for validation (same split, same seed): the photos on which recipes are compared, so the
    evaluation folders are never used for a choice."""
    if name == "heldout":
        from lcam.data import FolderDataModule

        cfg = OmegaConf.load(ROOT / "conf" / "train.yaml")
        data = FolderDataModule(root=str(SHARED / "imagenette-subset" / "train"), val_fraction=0.1, seed=int(cfg.seed))
        return [Path(p) for p in data.scan_val()[0]]
    if name == "imagenette":
        return sorted((SHARED / "imagenette-subset" / "val").glob("*/*.JPEG"))
    if name == "imagenet1300":
        lines = (SHARED / "imagenet-val-1300" / "labels.txt").read_text().split("\n")
        return [SHARED / "imagenet-val-1300" / "images" / ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]
    raise ValueError(f"Unknown dataset {name!r}; valid: {', '.join(DATASETS)}")


def pick(files: list[Path], subset: int | None, seed: int = 0) -> list[Path]:
    """All files, or a seeded subset of ``subset`` of them (in the files' order)."""
    if not subset or subset >= len(files):
        return files
    idx = sorted(random.Random(seed).sample(range(len(files)), subset))
    return [files[i] for i in idx]


def data_overrides(name: str) -> list[str]:
    """``evaluate.py`` data settings of a dataset (``data=folder``, centre crops, labels where known)."""
    if name == "imagenette":
        val = SHARED / "imagenette-subset" / "val"
        return ["data=folder", f"data.root={val}", f"data.val_root={val}"]
    if name == "imagenet1300":
        root = SHARED / "imagenet-val-1300"
        return ["data=folder", f"data.root={root / 'images'}", f"data.val_root={root / 'images'}",
                f"data.val_list={root / 'labels.txt'}"]
    if name == "heldout":
        return ["data=folder", f"data.root={SHARED / 'imagenette-subset' / 'train'}", "data.val_fraction=0.1"]
    raise ValueError(f"Unknown dataset {name!r}; valid: {', '.join(DATASETS)}")


def group_dir(dataset: str, subset: int | None, out: Path = RUNS) -> Path:
    return out / (f"{dataset}-{subset}" if subset else dataset)


def method_overrides(key: str, ckpts: dict[str, str | None], tag: str) -> list[str]:
    """``explainer=...`` overrides of a leaderboard key (its label carries the tag)."""
    label, settings = METHODS[key]
    if settings["name"] == "lcam":
        if not ckpts.get(key):
            raise SystemExit(f"{key} needs its checkpoint: --{key.split('_')[1]}-ckpt PATH")
        settings = {**settings, "ckpt_path": ckpts[key]}
    shown = f"{label} ({tag.strip('_')})" if tag.strip("_") else label
    return [f"explainer={settings['name']}", f"++explainer.label='{shown}'",
            *(f"++explainer.{k}={v}" for k, v in settings.items() if k != "name")]


def evaluate(overrides: list[str], run_dir: Path) -> list[dict[str, Any]]:
    """``python evaluate.py OVERRIDES`` in this process, into ``run_dir`` (``resume=auto``)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, f"paths.output_dir={run_dir}"])
    return run_evaluation(cfg)


def run_methods(args: argparse.Namespace, ckpts: dict[str, str | None]) -> None:
    common = ["logger=csv", f"data.batch_size={args.batch}", "figure_images=6", f"metrics={args.metrics}",
              *data_overrides(args.dataset), *([f"+data.max_val_samples={args.subset}"] if args.subset else [])]
    for key in args.methods:
        run_dir = group_dir(args.dataset, args.subset, Path(args.out)) / f"{key}{args.tag}"
        evaluate([*common, *method_overrides(key, ckpts, args.tag), "resume=auto"], run_dir)


def report(args: argparse.Namespace) -> str:
    """Merge each subset's method runs and write their results into ``leaderboard_<dataset>.md``."""
    out = Path(args.out)
    groups = sorted((p for p in out.glob(f"{args.dataset}*") if p.is_dir() and not p.name.endswith("-report")
                     and p.name.split("-")[0] == args.dataset), key=lambda p: -int(p.name.split("-")[1]) if "-" in p.name else 0)
    if not groups:
        raise SystemExit(f"No runs under {out}/{args.dataset}*; run methods first (--methods ...)")
    lines = [f"## Real-photo leaderboard: {args.dataset}, EfficientNet-Lite0 (offline)", "",
             "Made with (each method once, in the background; then the report):", "", "```bash",
             "python train.py +experiment=lcam_img_imagenette   # -> checkpoints/last.ckpt",
             f"python -m benchmarks.leaderboard --dataset {args.dataset} --methods lcam_img --img-ckpt IMG.ckpt",
             f"python -m benchmarks.leaderboard --dataset {args.dataset} --methods gradcam gradcampp xgradcam guidedcam hirescam layercam",
             f"python -m benchmarks.leaderboard --dataset {args.dataset} --subset 100 --methods scorecam rise gradcam ...",
             f"python -m benchmarks.leaderboard --dataset {args.dataset} --report", "```", "",
             "AD/IC in %, at 100/50/15 % of the map kept (AD lower, IC higher is better); #FW forward passes per "
             "explanation; s/img wall time on a shared 2-core CPU (not comparable across rows run at different loads). "
             "Every number below is computed from the per-image records of the runs by lcam.evaluation.", ""]
    for group in groups:
        runs, unfinished = [], []
        for p in sorted(p for p in group.iterdir() if (p / "evaluation.json").is_file()):
            m = read_manifest(p) or {}
            (runs if set(m.get("complete", [])) >= set(m["identity"]["methods"]) else unfinished).append(p)
        if unfinished:
            lines += ["Not finished (left out; continue with the same --methods command): "
                      + ", ".join(p.name for p in unfinished), ""]
        if not runs:
            continue
        merged = group.with_name(group.name + "-report")
        shutil.rmtree(merged, ignore_errors=True)
        evaluate(["logger=csv", f"merge=[{','.join(map(str, runs))}]", f"title={group.name}"], merged)
        lines += [(merged / "results.md").read_text(), ""]
        if (merged / "methods.png").is_file():
            figure = RESULTS / f"leaderboard_{group.name}_methods.png"
            shutil.copy2(merged / "methods.png", figure)
            lines += [f"![maps of the first photos, every method]({figure.name})", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="imagenette")
    parser.add_argument("--methods", nargs="*", default=[], choices=sorted(METHODS))
    parser.add_argument("--subset", type=int, help="a seeded subset of this many photos")
    parser.add_argument("--img-ckpt")
    parser.add_argument("--fm-ckpt")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--metrics", default="map_statistics",
                        help="the metrics group: none | map_statistics (Gini, entropy: no forward pass) | families")
    parser.add_argument("--tag", default="", help="suffix of the run folder and label (e.g. a training step)")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--out", default=str(RUNS), help="folder of the run folders")
    args = parser.parse_args()
    if args.methods:
        run_methods(args, {"lcam_img": args.img_ckpt, "lcam_fm": args.fm_ckpt})
    if args.report:
        text = report(args)
        (RESULTS / f"leaderboard_{args.dataset}.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
