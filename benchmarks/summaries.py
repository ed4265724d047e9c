"""Visual summaries of Imagenette classes with the two offline classifiers ("Understanding Deep Architectures by Visual
Summaries", https://arxiv.org/abs/1801.09103).

For each classifier and class: the first ``--images`` validation photos of the class folder in
``../shared/data/imagenette-subset``, summarised for the true class with the paper's settings
(:func:`lcam.summaries.summarise`), once per ``--contexts`` value of ``matching.context``
(``image``: proposals matched in the whole images' context, then kept in crisp regions, the
default; ``parts``: kept first, matched alone, the pipeline before it). The crisp
masks are computed once per classifier and class under ``--masks`` and shared by every context
(a rerun recomputes nothing). Writes ``benchmarks/results/summaries.md`` (counts, parts, SSIM,
crisp drop, accuracy, wall time) and ``summaries.png`` (every class's summaries of the first
context, one overview per classifier and class)::

    python -m benchmarks.summaries --images 16 --masks /tmp/summaries_cache --work /tmp/summaries_runs
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
    ap.add_argument("--work", default="/tmp/lcam-summaries", help="output folders (sheets, tables), one per context")
    ap.add_argument("--masks", default=None, help="crisp-mask cache, <masks>/<classifier>/<wnid>/masks "
                    "(default: the first context's output folder)")
    ap.add_argument("--contexts", nargs="+", default=["image", "parts"], choices=["image", "parts"])
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    ap.add_argument("--classes", nargs="+", default=list(CLASSES))
    args = ap.parse_args()
    rows, overviews = [], []
    for backbone in args.backbones:
        for wnid in args.classes:
            files = sorted((DATA / wnid).iterdir())[: args.images]
            label = wnid_to_index()[wnid]
            acc = top1_accuracy(backbone, files, label)
            masks = Path(args.masks or Path(args.work) / args.contexts[0]) / backbone / wnid / "masks"
            for context in args.contexts:
                t = time.perf_counter()
                report = summarise(files, backbone, Path(args.work) / context / backbone / wnid, target=label,
                                   settings={"matching": {"context": context}}, progress=False, mask_dir=masks)
                wall = time.perf_counter() - t
                ssims = [s["ssim"] for s in report.summaries]
                rows.append({"classifier": backbone, "class": CLASSES.get(wnid, wnid), "context": context,
                             "images": len(report.images), "top1": acc, "proposals": report.n_proposals,
                             "parts": report.n_parts, "clusters": report.n_clusters, "summaries": report.n_summaries,
                             "ssim": float(np.median(ssims)) if ssims else float("nan"),
                             "ssim_min": min(ssims, default=float("nan")), "ssim_max": max(ssims, default=float("nan")),
                             "class_ssim": report.global_ssim, "drop": report.mean_drop,
                             "mask_s": report.seconds.get("masks", 0.0),
                             "match_s": report.seconds.get("matching", 0.0), "wall": wall})
                print(rows[-1], flush=True)
                ov = Path(report.output_dir) / "overview.png"
                if context == args.contexts[0] and ov.exists():
                    overviews.append((f"{backbone} / {CLASSES.get(wnid, wnid)}", ov))
    write_report(rows, args)
    write_figure(overviews)


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    lines = ["## Visual summaries of Imagenette classes", "",
             f"Command: `python -m benchmarks.summaries --images {args.images} --masks <cache> --work <dir>` "
             f"(contexts: {', '.join(args.contexts)}). The first {args.images} validation "
             "photos of each class (`imagenette-subset/val`), summarised for the true class at 224 px with the paper's "
             "settings (crisp masks 300 + 150 steps; proposals kept when they hold > 75% of a region; area ratio 2; "
             "Affinity Propagation, preference = the median cross-image similarity; SSIM filter at 90% of the class "
             "median). Context `image`: the top 500 selective-search proposals of each image matched in context, then "
             "kept in regions; `parts`: kept first, matched alone (the earlier pipeline). Accuracy: top-1 on these photos. "
             "SSIM: per summary the median pairwise SSIM of its parts (64-px grey patches); the table gives the median "
             "over the class's summaries [min-max], and the class's median SSIM (the filter's reference). "
             "Mask time: the crisp optimisation (2-core CPU; 0 s: cached); match: the matching step; wall: the whole "
             "class.", "",
             "| classifier | class | context | images | top-1 % | proposals | parts | clusters | summaries | "
             "SSIM median [min-max] | class SSIM | crisp drop % | mask s | match s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ssim = f"{r['ssim']:.3f} [{r['ssim_min']:.3f}-{r['ssim_max']:.3f}]" if r["summaries"] else "-"
        lines.append(f"| {r['classifier']} | {r['class']} | {r['context']} | {r['images']} | {100 * r['top1']:.0f} | "
                     f"{r['proposals']} | {r['parts']} | {r['clusters']} | {r['summaries']} | {ssim} | "
                     f"{r['class_ssim']:.3f} | {100 * r['drop']:.1f} | {r['mask_s']:.0f} | {r['match_s']:.1f} | "
                     f"{r['wall']:.0f} |")
    lines.append("")
    for b in sorted({r["classifier"] for r in rows}):
        for context in args.contexts:
            mine = [r for r in rows if r["classifier"] == b and r["context"] == context]
            if mine:
                lines.append(f"- {b}, context {context}: {sum(r['summaries'] for r in mine)} summaries over "
                             f"{len(mine)} classes, mean top-1 {100 * np.mean([r['top1'] for r in mine]):.0f}%.")
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
