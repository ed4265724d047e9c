"""Table-1 layout on real photos with an offline real classifier (EfficientNet-Lite0 by default).

Evaluates trained L-CAM-Img / L-CAM-Fm heads and every baseline on the same images through the
same code path as ``evaluate.py`` and writes ``benchmarks/results/faithfulness_<dataset>.md``.

    python -m benchmarks.faithfulness --dataset imagenette --img-ckpt A.ckpt --fm-ckpt B.ckpt
    python -m benchmarks.faithfulness --dataset imagenet1300 --img-ckpt A.ckpt --fm-ckpt B.ckpt --max-images 300

Datasets (see ../shared/data/*/README.md): ``imagenette`` = imagenette-subset/val (1000 photos,
10 classes); ``imagenet1300`` = imagenet-val-1300 (1300 ILSVRC-2012 validation photos, 725 classes).
Perturbation methods run at reduced sample counts unless ``--paper-counts`` is given; the counts
used are printed in the table title.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from lcam.evaluation.report import to_markdown
from lcam.evaluation.run import run_evaluation

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {
    "imagenette": ["data=folder", f"data.root={SHARED / 'imagenette-subset' / 'val'}",
                   f"data.val_root={SHARED / 'imagenette-subset' / 'val'}"],
    "imagenet1300": ["data=imagenet", f"data.root={SHARED / 'imagenet-val-1300'}", "data.val_dir=images",
                     f"data.val_list={SHARED / 'imagenet-val-1300' / 'labels.txt'}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="imagenette")
    parser.add_argument("--data-root", help="override the dataset folder (default: ../shared/data/...)")
    parser.add_argument("--img-ckpt", help="L-CAM-Img checkpoint")
    parser.add_argument("--fm-ckpt", help="L-CAM-Fm checkpoint")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--max-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rise-masks", type=int, default=1000)
    parser.add_argument("--smooth-samples", type=int, default=4)
    parser.add_argument("--sscam-samples", type=int, default=2)
    parser.add_argument("--paper-counts", action="store_true", help="RISE 4000, SS-CAM N=10, Smooth Grad-CAM++ 10")
    parser.add_argument("--skip", nargs="*", default=[], help="method keys to leave out (e.g. sscam1 sscam2)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.paper_counts:
        args.rise_masks, args.sscam_samples, args.smooth_samples = 4000, 10, 10

    data = list(DATASETS[args.dataset])
    if args.data_root:
        data = [d for d in data if not d.startswith(("data.root", "data.val_root"))] + [f"data.root={args.data_root}"]
    overrides = [f"backbone={args.backbone}", *data, f"data.max_val_samples={args.max_images}",
                 f"data.batch_size={args.batch_size}", "logger=csv", "figure_images=8",
                 f"methods.rise.n_masks={args.rise_masks}", f"methods.sscam1.n_samples={args.sscam_samples}",
                 f"methods.sscam2.n_samples={args.sscam_samples}", f"methods.smoothgradcampp.n_samples={args.smooth_samples}",
                 f"methods.lcam_img.ckpt_path={args.img_ckpt or 'null'}",
                 f"+methods.lcam_fm={{name: lcam, label: L-CAM-Fm, ckpt_path: {args.fm_ckpt or 'null'}}}",
                 f"paths.output_dir={Path(args.out) / ('run_' + args.dataset)}",
                 *[f"methods.{k}=null" for k in args.skip]]
    title = (f"{args.backbone} on {args.dataset} ({args.max_images} images); RISE N={args.rise_masks}, "
             f"SS-CAM N={args.sscam_samples}, Smooth Grad-CAM++ N={args.smooth_samples}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, f"title='{title}'"])
    start = time.perf_counter()
    rows = run_evaluation(cfg)
    wall = time.perf_counter() - start
    text = to_markdown(rows, title) + f"\nWall time: {wall:.0f} s for the whole table on this machine.\n"
    out = Path(args.out) / f"faithfulness_{args.dataset}.md"
    out.write_text(text)
    print(text)
    print(f"Written: {out}")


if __name__ == "__main__":
    main()
