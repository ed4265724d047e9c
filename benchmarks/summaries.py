"""Visual summaries of Imagenette classes with the two offline classifiers (REFERENCE section 5).

For each classifier and class: the first ``--images`` validation photos of the class folder in
``../shared/data/imagenette-subset``, summarised for the true class with the paper's settings
(:func:`lcam.summaries.summarise`). Masks are cached under ``--work`` (a rerun recomputes
nothing). Writes ``benchmarks/results/summaries.md`` (counts, parts, crisp drop, accuracy, wall
time) and ``summaries.png`` (every class's summaries, one overview per classifier and class)::

    python -m benchmarks.summaries --images 20 --work /tmp/lcam-summaries
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lcam.data.classes import wnid_to_index
from lcam.summaries import summarise

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette-subset" / "val"
RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n03028079": "church"}
BACKBONES = ("efficientnet_lite0", "mobilenet_v2")


def top1_accuracy(backbone: str, files: list[Path], label: int) -> float:
    """Share of ``files`` whose top-1 class is ``label`` (224 px, as the summaries see them)."""
    from lcam.data.transforms import eval_transform
    from lcam.explain.classifier import resolve_classifier

    clf = resolve_classifier(backbone, "cpu").backbone
    x = torch.stack([eval_transform(224, 224)(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        return float((clf(x).argmax(1) == label).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20, help="photos per class")
    ap.add_argument("--work", default="/tmp/lcam-summaries", help="output folders (masks cache, sheets)")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    ap.add_argument("--classes", nargs="+", default=list(CLASSES))
    args = ap.parse_args()
    rows, overviews = [], []
    for backbone in args.backbones:
        for wnid in args.classes:
            files = sorted((DATA / wnid).iterdir())[: args.images]
            label = wnid_to_index()[wnid]
            t = time.perf_counter()
            report = summarise(files, backbone, Path(args.work) / backbone / wnid, target=label, progress=False)
            wall = time.perf_counter() - t
            acc = top1_accuracy(backbone, files, label)
            rows.append((backbone, CLASSES.get(wnid, wnid), len(report.images), acc, report.n_parts, report.n_clusters,
                         report.n_summaries, report.mean_drop, report.seconds.get("masks", 0.0), wall))
            print(rows[-1], flush=True)
            ov = Path(report.output_dir) / "overview.png"
            if ov.exists():
                overviews.append((f"{backbone} / {CLASSES.get(wnid, wnid)}", ov))
    write_report(rows, args)
    write_figure(overviews)


def write_report(rows: list[tuple], args: argparse.Namespace) -> None:
    lines = ["## Visual summaries of Imagenette classes", "",
             f"Command: `python -m benchmarks.summaries --images {args.images}`. The first {args.images} validation "
             "photos of each class (`imagenette-subset/val`), summarised for the true class at 224 px with the paper's "
             "settings (crisp masks 300 + 150 steps; proposals kept when they hold > 75% of a region; area ratio 2; "
             "Affinity Propagation; SSIM filter at 90% of the class median). Accuracy: top-1 on these photos. "
             "Mask time: the crisp optimisation (2-core CPU); wall: the whole class, masks included (0 s masks: cached).", "",
             "| classifier | class | images | top-1 % | parts | clusters | summaries | crisp drop % | mask s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b, c, n, acc, parts, clusters, summaries, drop, mask_s, wall in rows:
        lines.append(f"| {b} | {c} | {n} | {100 * acc:.0f} | {parts} | {clusters} | {summaries} | {100 * drop:.1f} | "
                     f"{mask_s:.0f} | {wall:.0f} |")
    lines.append("")
    for b in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == b]
        lines.append(f"- {b}: {sum(r[6] for r in mine)} summaries over {len(mine)} classes, "
                     f"mean top-1 {100 * np.mean([r[3] for r in mine]):.0f}%.")
    (RESULTS / "summaries.md").write_text("\n".join(lines) + "\n")


def write_figure(overviews: list[tuple[str, Path]]) -> None:
    """Stack the overview sheets (each already titled with its class) into one figure."""
    if not overviews:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ims = [np.asarray(Image.open(p).convert("RGB")) for _, p in overviews]
    fig, axes = plt.subplots(len(ims), 1, figsize=(10, 4.2 * len(ims)), squeeze=False)
    for ax, (title, _), im in zip(axes[:, 0], overviews, ims):
        ax.imshow(im)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(RESULTS / "summaries.png", dpi=80)


if __name__ == "__main__":
    main()
