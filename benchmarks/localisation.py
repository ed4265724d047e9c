"""The localisation table: pointing game, energy pointing game, IoU/Dice, zone tests and Win% on real photos.

imagenet-val-1300 (``../shared/data/imagenet-val-1300``: 1300 ILSVRC-2012 validation photos with
their official boxes) through EfficientNet-Lite0 (offline), the one-pass methods built with
:func:`lcam.explainers.build_explainer`, and two baselines that need no model: a uniformly random
point (its exact expected pointing game, :func:`lcam.metrics.random_point_hit_rate`) and a
centred Gaussian map (the "centre prior")::

    nice -n 10 python -m benchmarks.localisation                     # all 1300 photos -> results/localisation.md
    python -m benchmarks.localisation --subset 100 --methods gradcam # a quick look

Every method explains the ground-truth class (``--target top1``: the classifier's top-1). Images
go through the evaluation transform (shorter side 256, centre crop 224; ``--no-crop`` resizes the
whole 227 px photo to 224 x 224) and the boxes follow them (:class:`lcam.data.boxes.BoxedDataset`).
Per-method results land in ``benchmarks/results/localisation/<key>.json``; the table is written
from all of them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from torchmetrics import MetricCollection
from torchvision import transforms as T

from benchmarks.leaderboard import METHODS as LEADERBOARD_METHODS
from benchmarks.leaderboard import pick
from lcam.backbones import build_backbone
from lcam.data.boxes import BoxedDataset
from lcam.data.datasets import ImageListDataset, read_list_file
from lcam.data.transforms import eval_transform
from lcam.explainers import build_explainer
from lcam.metrics import (
    EnergyPointingGame,
    LocalisationMetrics,
    MaskOverlap,
    PointingGame,
    random_point_hit_rate,
    win_rate_table,
)
from lcam.metrics.localisation import has_boxes, pointing_hits

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "imagenet-val-1300"
RESULTS = ROOT / "benchmarks" / "results"
ONE_PASS = ("gradcam", "gradcampp", "xgradcam", "guidedcam")
CENTRE = "centre"
#: the leaderboard's methods and the crisp mask (the paper's 300 + 150 steps)
METHODS = {**LEADERBOARD_METHODS, "crisp": ("crisp mask", {"name": "crisp"})}


def dataset(crop: bool, subset: int | None) -> tuple[Any, BoxedDataset, torch.Tensor]:
    """The photos (all or a seeded subset), the boxed dataset, and each photo's scale (crop px per stored px)."""
    files, labels = read_list_file(DATA / "labels.txt", DATA / "images")
    # the evaluation transform, or the whole photo squashed to 224 x 224
    tf = eval_transform(256, 224) if crop else T.Compose([T.Resize((224, 224), antialias=True), T.ToTensor()])
    base = ImageListDataset(files, labels, tf, names=[f.name for f in files])
    boxed = BoxedDataset(base, DATA / "boxes.txt")
    if subset:
        keep = sorted(set(pick(list(range(len(files))), subset)))
        return Subset(boxed, keep), boxed, boxed.scales[keep]
    return boxed, boxed, boxed.scales


def centre_maps(b: int, h: int, w: int, sigma: float = 0.25) -> torch.Tensor:
    """``(B, H, W)`` Gaussians centred on the image, sigma = ``sigma`` x the side."""
    ys = (torch.arange(h) + 0.5 - h / 2) / (sigma * h)
    xs = (torch.arange(w) + 0.5 - w / 2) / (sigma * w)
    g = torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))
    return (g / g.max()).expand(b, h, w).clone()


def run(key: str, data: Any, scales: torch.Tensor, model: Any, target: str, batch: int, box_only: bool = False,
        settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One method over ``data``; PG15's 15 px are pixels of the stored photo (``scales``: crop px per stored px)."""
    label = "centre prior" if key == CENTRE else METHODS[key][0]
    explainer = None if key == CENTRE else build_explainer({**METHODS[key][1], **(settings or {})}, model)
    if settings and "n_masks" in settings:
        label += f" (N = {settings['n_masks']})"
    # box_only: the box columns alone (no zone tests / Win%, which cost 4 forward passes per image)
    loc = MetricCollection([PointingGame(), EnergyPointingGame(), MaskOverlap()]) if box_only else LocalisationMetrics(model)
    random0 = random15 = boxed_images = hits15 = 0.0
    seconds, start = 0.0, time.perf_counter()
    seen = 0
    for images, labels, boxes in DataLoader(data, batch_size=batch, num_workers=0):
        if target == "label":
            targets = labels
        else:
            with torch.no_grad():
                targets = model(images).argmax(1)
        t0 = time.perf_counter()
        maps = centre_maps(*images.shape[:1], *images.shape[2:]) if explainer is None else explainer(images, targets)
        seconds += time.perf_counter() - t0
        loc.update(images, maps, targets, boxes)
        ok = has_boxes(boxes)
        tol15 = 15.0 * scales[seen:seen + images.shape[0]][ok]  # 15 stored-image px, in crop px
        hits15 += float(pointing_hits(maps[ok], boxes[ok], tol15).sum())
        size = tuple(images.shape[-2:])
        random0 += float(random_point_hit_rate(boxes[ok], size, 0.0).sum())
        random15 += float(random_point_hit_rate(boxes[ok], size, tol15).sum())
        boxed_images += float(ok.sum())
        seen += images.shape[0]
        print(f"\r{label}: {seen}/{len(data)}", end="", flush=True)
    print(f"  ({time.perf_counter() - start:.0f} s)")
    row = {k: float(v) for k, v in loc.compute().items()}
    row["PG15"] = 100 * hits15 / max(boxed_images, 1)
    drops = [] if box_only else loc.image_drops().tolist()
    return {"key": key, "label": label, "row": row, "drops": drops, "images": seen,
            "boxed_images": int(boxed_images), "random_pg": 100 * random0 / max(boxed_images, 1),
            "random_pg15": 100 * random15 / max(boxed_images, 1), "seconds_per_image": seconds / max(seen, 1),
            "wall_s": time.perf_counter() - start, "target": target, "pg15_pixels": "stored"}


COLUMNS = ("PG", "PG15", "EPG", "IoU", "Dice", "ZoneKeep", "ZoneDrop")


def report(out_dir: Path, title: str) -> str:
    entries = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    order = ["lcam_img", "lcam_fm", *ONE_PASS, "smoothgradcampp", "scorecam", "scorecam_prob", "sscam1", "sscam2", "rise",
             "crisp", CENTRE]
    entries.sort(key=lambda e: order.index(e["key"]) if e["key"] in order else 99)
    if not entries:
        raise SystemExit(f"No results under {out_dir}; run the methods first")
    e0 = entries[0]
    old = [e for e in entries if e.get("pg15_pixels") != "stored"]  # saved when PG15 was 15 px of the crop
    if len(old) == len(entries):
        pg15 = "within 15 px of the 224 px crop (results saved before the tolerance was measured in stored-photo pixels)"
    else:
        pg15 = "within 15 px of the stored photo (pointing-game paper; here the 227 px copies, not the originals)" + (
            " (†: 15 px of the 224 px crop, a row saved before the tolerance was measured in stored-photo pixels)"
            if old else "")
    mark = "†" if old and len(old) < len(entries) else ""
    rnd = next((e for e in entries if e.get("pg15_pixels") == "stored"), e0)  # the random point, in the rows' unit
    lines = [f"## {title}", "",
             f"{e0['images']} photos, {e0['boxed_images']} with usable boxes; EfficientNet-Lite0 (offline); target: "
             f"{'ground-truth class' if e0['target'] == 'label' else 'top-1 class'}. Percent. PG: maximum inside a box; "
             f"PG15: {pg15}; "
             "EPG: share of the map's energy in the boxes; IoU/Dice: map >= 0.5 "
             "vs the boxes' union; ZoneKeep: confidence drop keeping only the map >= 0.5 zone (lower is better); "
             "ZoneDrop: drop with that zone removed (higher is better).", "",
             "| method | " + " | ".join(COLUMNS) + " | s/img |", "|---|" + "---|" * (len(COLUMNS) + 1)]
    for e in entries:
        cells = [f"{e['row'][c]:.1f}" if c in e["row"] else "–" for c in COLUMNS]
        if e in old and mark:
            cells[COLUMNS.index("PG15")] += mark
        lines.append(f"| {e['label']} | " + " | ".join(cells) + f" | {e['seconds_per_image']:.3f} |")
    lines.append(f"| random point (exact expectation) | {rnd['random_pg']:.1f} | {rnd['random_pg15']:.1f} | | | | | | |")
    same = [e for e in entries if len(e["drops"]) == e0["images"]]
    if len(same) > 1:
        names, table = win_rate_table({e["label"]: torch.tensor(e["drops"]) for e in same})
        lines += ["", "Win% (row beats column: share of photos where the row's confidence drop on `x * map` is "
                  "lower; ties count half):", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for i, n in enumerate(names):
            lines.append(f"| {n} | " + " | ".join("–" if i == j else f"{float(table[i, j]):.1f}" for j in range(len(names))) + " |")
    walls = ", ".join(f"{e['label']} {e['wall_s']:.0f} s" for e in entries)
    lines += ["", f"Wall time per method (whole pass incl. the metrics' passes, {e0.get('threads', 1)} CPU thread(s)): {walls}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=[*ONE_PASS, CENTRE], choices=[*ONE_PASS, CENTRE, *METHODS])
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--target", choices=["label", "top1"], default="label")
    ap.add_argument("--no-crop", action="store_true", help="resize the whole photo to 224 x 224 instead of 256 + centre crop")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the results folder and table (e.g. _top1)")
    ap.add_argument("--box-only", action="store_true", help="only the box columns (PG, PG15, EPG, IoU, Dice): no zone tests, no Win%%")
    ap.add_argument("--report", action="store_true", help="only assemble the table from the saved results")
    ap.add_argument("--ckpt", nargs="+", default=[], metavar="KEY=PATH",
                    help="L-CAM checkpoints for lcam_img / lcam_fm (trained on this backbone), e.g. lcam_img=last.ckpt")
    ap.add_argument("--n-masks", type=int, default=None, help="RISE masks (default: the paper's 4000)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tag = args.tag or ("" if args.target == "label" and not args.no_crop else
                       ("_top1" if args.target == "top1" else "") + ("_nocrop" if args.no_crop else ""))
    tag += ("_boxes" if args.box_only else "") + (f"_{args.subset}" if args.subset else "")
    out_dir = RESULTS / f"localisation{tag}"
    title = (f"Localisation on imagenet-val-1300{' (subset ' + str(args.subset) + ')' if args.subset else ''}"
             f"{', whole photo resized to 224' if args.no_crop else ', shorter side 256 + centre crop 224'}")
    if not args.report:
        out_dir.mkdir(parents=True, exist_ok=True)
        data, boxed, scales = dataset(not args.no_crop, args.subset)
        print(f"boxes: {boxed.counts()}")
        model = build_backbone("tf_efficientnet_lite0")
        ckpts = dict(item.split("=", 1) for item in args.ckpt)
        for key in args.methods:
            settings: dict[str, Any] = {}
            if key.startswith("lcam"):
                if key not in ckpts:
                    raise SystemExit(f"{key} needs --ckpt {key}=/path/to/last.ckpt")
                settings["ckpt_path"] = ckpts[key]
            if key == "rise" and args.n_masks:
                settings["n_masks"] = args.n_masks
            entry = run(key, data, scales, model, args.target, args.batch, args.box_only, settings)
            entry["threads"] = args.threads
            (out_dir / f"{key}.json").write_text(json.dumps(entry))
    text = report(out_dir, title)
    (RESULTS / f"localisation{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
