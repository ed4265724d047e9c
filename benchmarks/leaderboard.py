"""The real-photo leaderboard: the paper's Table-1 layout for every method on real photos.

Each method runs once per dataset and leaves its per-image confidences in
``benchmarks/results/leaderboard/<dataset>/<key>.json`` (so slow methods can run in the
background, one at a time); ``--report`` assembles the table, paired 95 % bootstrap intervals of
the L-CAM rows against Grad-CAM / Grad-CAM++, and a figure of maps side by side::

    python -m benchmarks.leaderboard --dataset imagenette --methods gradcam gradcampp \
        --img-ckpt outputs/lcam_img_imagenette/runs/<run>/checkpoints/last.ckpt lcam_img
    python -m benchmarks.leaderboard --dataset imagenette --subset 200 --methods scorecam rise
    python -m benchmarks.leaderboard --dataset imagenette --report

Datasets (``../shared/data``): ``imagenette`` = imagenette-subset/val (1000 photos, 10 classes),
``imagenet1300`` = imagenet-val-1300 (1300 ILSVRC-2012 validation photos, 725 classes). The
classifier is the offline EfficientNet-Lite0; every method explains its top-1 class. ``--subset N``
runs on a seeded subset of N photos (the same subset for every method with the same N), and the
report lists each subset's rows together, so rows compare like with like. Perturbation methods run
at the paper's counts (Score-CAM on all live channels, SS-CAM N = 10, RISE 4000 masks).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from lcam.backbones import build_backbone
from lcam.data.transforms import eval_transform
from lcam.explainers import build_explainer, missing_settings
from lcam.metrics import DEFAULT_THRESHOLDS, AverageDropIncrease, explanation_confidence

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

#: key -> (label, explainer config); L-CAM keys take their checkpoint from --img-ckpt / --fm-ckpt
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "lcam_img": ("L-CAM-Img", {"name": "lcam"}),
    "lcam_fm": ("L-CAM-Fm", {"name": "lcam"}),
    "gradcam": ("Grad-CAM", {"name": "gradcam"}),
    "gradcampp": ("Grad-CAM++", {"name": "gradcampp"}),
    "smoothgradcampp": ("Smooth Grad-CAM++", {"name": "smoothgradcampp"}),
    "xgradcam": ("XGrad-CAM", {"name": "xgradcam"}),
    "guidedcam": ("Guidance-map CAM", {"name": "guidedcam"}),
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


def run_method(key: str, files: list[Path], model: Any, ckpts: dict[str, str], batch: int) -> dict[str, Any]:
    label, explainer = build(key, model, ckpts)
    cfg = METHODS[key][1]
    tf = eval_transform(256, 224, model.spec.interpolation or "bilinear")
    ys, os_, fws, seconds = [], [], [], 0.0
    for start in range(0, len(files), batch):
        images = torch.stack([tf(Image.open(p).convert("RGB")) for p in files[start:start + batch]])
        with torch.no_grad():
            targets = model(images).argmax(1)
        t0 = time.perf_counter()
        maps = explainer(images, targets)
        seconds += time.perf_counter() - t0
        fws.append(explainer.last_forward_passes)
        y, o = explanation_confidence(model, images, maps, targets, DEFAULT_THRESHOLDS)
        ys += y.tolist()
        os_ += o.tolist()
        print(f"\r{label}: {start + len(images)}/{len(files)}", end="", flush=True)
    print()
    return {"key": key, "label": label, "settings": {k: v for k, v in cfg.items() if k != "ckpt_path"},
            "ckpt": ckpts.get(key), "files": [p.name for p in files], "y": ys, "o": os_,
            "fw": float(np.mean(fws)), "seconds_per_image": seconds / len(files)}


def scores(entry: dict[str, Any]) -> dict[str, float]:
    """AD/IC at every threshold, in %, by the project's metric (:class:`lcam.metrics.AverageDropIncrease`)."""
    metric = AverageDropIncrease(DEFAULT_THRESHOLDS)
    metric.update(torch.tensor(entry["y"]), torch.tensor(entry["o"]))
    return {k: float(v) for k, v in metric.compute().items()}


def paired_ci(a: dict[str, Any], b: dict[str, Any], n: int = 5000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Mean and 95 % bootstrap interval of ``a - b`` per image for AD100 and IC100 (same photos)."""
    assert a["files"] == b["files"], "paired intervals need the same photos"
    ya, oa, yb, ob = (np.array(v) for v in (a["y"], [r[0] for r in a["o"]], b["y"], [r[0] for r in b["o"]]))
    diffs = {"AD100": 100 * (np.clip(ya - oa, 0, None) / ya - np.clip(yb - ob, 0, None) / yb),
             "IC100": 100 * ((oa > ya).astype(float) - (ob > yb).astype(float))}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ya), (n, len(ya)))
    return {k: (float(d.mean()), float(np.percentile(d[idx].mean(1), 2.5)), float(np.percentile(d[idx].mean(1), 97.5)))
            for k, d in diffs.items()}


def load_entries(out_dir: Path) -> list[dict[str, Any]]:
    """Every result file of a dataset; ``name`` = the method's label plus its tag (a recipe or step)."""
    entries = []
    for path in sorted(out_dir.glob("*.json")):
        e = json.loads(path.read_text())
        tag = e.get("tag", path.stem[len(e["key"]):].rsplit("_", 1)[0])
        e["name"] = f"{e['label']} ({tag.strip('_')})" if tag.strip("_") else e["label"]
        entries.append(e)
    return entries


def report(dataset: str, out_dir: Path) -> str:
    groups: dict[int, list[dict[str, Any]]] = {}
    for e in load_entries(out_dir):
        groups.setdefault(len(e["files"]), []).append(e)
    order = list(METHODS)
    lines = [f"## Real-photo leaderboard: {dataset}, EfficientNet-Lite0 (offline), top-1 class", "",
             "Made with (each method once, in the background; then the report):", "", "```bash",
             "python train.py +experiment=lcam_img_imagenette   # and lcam_fm_imagenette -> checkpoints/last.ckpt",
             f"python -m benchmarks.leaderboard --dataset {dataset} --methods lcam_img lcam_fm --img-ckpt IMG.ckpt "
             "--fm-ckpt FM.ckpt --tag _minmax-2ep",
             f"python -m benchmarks.leaderboard --dataset {dataset} --methods gradcam gradcampp guidedcam xgradcam",
             f"python -m benchmarks.leaderboard --dataset {dataset} --subset 200 --methods scorecam gradcam gradcampp lcam_img lcam_fm ...",
             f"python -m benchmarks.leaderboard --dataset {dataset} --report", "```", "",
             "AD/IC in %, at 100/50/15 % of the map kept (AD lower, IC higher is better); #FW forward passes per "
             "explanation; s/img wall time on a shared 2-core CPU (not comparable across rows run at different loads).", ""]
    for n in sorted(groups, reverse=True):
        rows = sorted(groups[n], key=lambda e: (order.index(e["key"]) if e["key"] in order else 99, e["name"]))
        lines += [f"### {n} photos", "", "| method | AD100 | IC100 | AD50 | IC50 | AD15 | IC15 | #FW | s/img |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in rows:
            s = scores(e)
            lines.append(f"| {e['name']} | " + " | ".join(f"{s[k]:.2f}" for k in ("AD100", "IC100", "AD50", "IC50", "AD15", "IC15"))
                         + f" | {e['fw']:.0f} | {e['seconds_per_image']:.3f} |")
        baselines = [e for e in rows if e["key"] in ("gradcam", "gradcampp") and e["name"] == e["label"]]
        pairs = [(a, b) for a in rows if a["key"] in ("lcam_img", "lcam_fm") for b in baselines]
        if pairs:
            lines += ["", ("Paired differences (L-CAM minus baseline, same photos; mean [95 % bootstrap interval]; "
                           "AD100 lower is better, IC100 higher is better):"), ""]
            for a, b in pairs:
                ci = paired_ci(a, b)
                lines.append(f"- {a['name']} - {b['name']}: AD100 {ci['AD100'][0]:+.2f} "
                             f"[{ci['AD100'][1]:+.2f}, {ci['AD100'][2]:+.2f}], IC100 {ci['IC100'][0]:+.2f} "
                             f"[{ci['IC100'][1]:+.2f}, {ci['IC100'][2]:+.2f}]")
        ckpts = {e["name"]: e["ckpt"] for e in rows if e.get("ckpt")}
        if ckpts:
            lines += ["", "Checkpoints: " + ", ".join(f"{k}: `{v}`" for k, v in ckpts.items())]
        lines.append("")
    return "\n".join(lines)


def build(key: str, model: Any, ckpts: dict[str, str]) -> tuple[str, Any]:
    """``(label, explainer)`` of a leaderboard key (L-CAM keys need their checkpoint)."""
    label, cfg = METHODS[key]
    if missing_settings(cfg):  # the L-CAM keys: their checkpoint comes from the command line
        if not ckpts.get(key):
            raise SystemExit(f"{key} needs its checkpoint: --{key.split('_')[1]}-ckpt PATH")
        cfg = {**cfg, "ckpt_path": ckpts[key]}
    return label, build_explainer(cfg, model)


def figure(dataset: str, keys: list[str], model: Any, ckpts: dict[str, str], n: int, path: Path) -> None:
    """Maps side by side: rows = methods, columns = ``n`` seeded photos of ``dataset`` (top-1 class)."""
    from lcam.data import imagenet_synsets  # noqa: PLC0415
    from lcam.viz import comparison_grid  # noqa: PLC0415

    files = pick(dataset_files(dataset), n, seed=1)
    tf = eval_transform(256, 224, model.spec.interpolation or "bilinear")
    images = torch.stack([tf(Image.open(p).convert("RGB")) for p in files])
    with torch.no_grad():
        targets = model(images).argmax(1)
    rows = {}
    for key in keys:
        label, explainer = build(key, model, ckpts)
        rows[label] = explainer(images, targets)
        print(f"figure: {label}", flush=True)
    names = imagenet_synsets()[1]
    comparison_grid(images, rows, [names[int(t)][:18] for t in targets]).save(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="imagenette")
    parser.add_argument("--methods", nargs="*", default=[], choices=sorted(METHODS))
    parser.add_argument("--subset", type=int, help="a seeded subset of this many photos")
    parser.add_argument("--img-ckpt")
    parser.add_argument("--fm-ckpt")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. a training step)")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--figure", nargs="*", choices=sorted(METHODS), metavar="METHOD",
                        help="draw these methods' maps side by side on --figure-photos seeded photos")
    parser.add_argument("--figure-photos", type=int, default=6)
    parser.add_argument("--out", default=str(RESULTS / "leaderboard"))
    args = parser.parse_args()
    out_dir = Path(args.out) / args.dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpts = {"lcam_img": args.img_ckpt, "lcam_fm": args.fm_ckpt}
    if args.methods or args.figure:
        spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "backbone" / "efficientnet_lite0.yaml"))
        model = build_backbone(spec)
    if args.figure:
        figure(args.dataset, args.figure, model, ckpts, args.figure_photos, Path(args.out).parent / f"leaderboard_{args.dataset}.png")
    if args.methods:
        files = pick(dataset_files(args.dataset), args.subset)
        for key in args.methods:
            entry = {**run_method(key, files, model, ckpts, args.batch), "tag": args.tag}
            name = f"{key}{args.tag}_{len(files)}.json"
            (out_dir / name).write_text(json.dumps(entry))
            s = scores(entry)
            print(f"{entry['label']} ({len(files)} photos): AD100 {s['AD100']:.2f} IC100 {s['IC100']:.2f} "
                  f"AD50 {s['AD50']:.2f} IC50 {s['IC50']:.2f} #FW {entry['fw']:.0f} {entry['seconds_per_image']:.3f} s/img")
    if args.report:
        text = report(args.dataset, out_dir)
        (Path(args.out).parent / f"leaderboard_{args.dataset}.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
