"""Fidelity report of the baselines: AD/IC and insertion/deletion per method, and two-class maps.

Run on one code version, then on another, and compare (the issue-8 before/after report)::

    python -m benchmarks.fidelity --label after --images 12
    python -m benchmarks.fidelity --compare benchmarks/results/fidelity_before.json \
        benchmarks/results/fidelity_after.json

* Faithfulness: ``--images`` Imagenette validation photos (``../shared/data/imagenette-subset/val``,
  a seeded pick over every class; or ``--data-root``), the offline EfficientNet-Lite0, the top-1
  class; AD/IC at 100/50/15 % (L-CAM paper protocol) and insertion/deletion AUC (RISE protocol,
  ``--steps`` steps instead of one row of pixels per step, to keep CPU time low). Per-image values
  go to the JSON file, so differences between two runs are paired.
* Class discrimination: on scikit-image's astronaut photo, each method's maps for class 560
  (football helmet, the top-1) and class 812 (space shuttle), their Pearson r, and a figure.

Methods with a setting the running code does not know are reported as skipped.
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

from lcam.backbones import build_backbone
from lcam.data.demo import demo_photos
from lcam.data.transforms import eval_transform
from lcam.explainers import build_explainer
from lcam.metrics import AverageDropIncrease, explanation_confidence, insertion_deletion_curves
from lcam.metrics.insertion_deletion import auc

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TWO_CLASSES = (560, 812)  # football helmet (top-1 on the astronaut), space shuttle

#: key -> (registry name, settings); sample counts reduced for a CPU run (stated in the report)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "gradcam": ("gradcam", {}),
    "gradcampp": ("gradcampp", {}),
    "smoothgradcampp": ("smoothgradcampp", {"n_samples": 4}),
    "xgradcam": ("xgradcam", {}),
    "scorecam": ("scorecam", {}),
    "scorecam_prob": ("scorecam", {"weighting": "probability"}),
    "sscam1": ("sscam1", {"n_samples": 2}),
    "sscam2": ("sscam2", {"n_samples": 2}),
    "rise": ("rise", {"n_masks": 1000}),
}


def photo_paths(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` photos of ``root`` (class sub-folders), a seeded pick spread over the classes."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    rng = random.Random(seed)
    per_class = [sorted(f.glob("*.JPEG")) + sorted(f.glob("*.jpg")) for f in folders]
    for files in per_class:
        rng.shuffle(files)
    picked: list[Path] = []
    i = 0
    while len(picked) < n and any(i < len(f) for f in per_class):
        picked += [f[i] for f in per_class if i < len(f)]
        i += 1
    return picked[:n]


def load_images(paths: list[Path], interpolation: str) -> torch.Tensor:
    from PIL import Image

    tf = eval_transform(256, 224, interpolation)
    return torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp(min=1e-12))


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "backbone" / "efficientnet_lite0.yaml"))
    model = build_backbone(spec)
    torch.manual_seed(0)
    paths = photo_paths(Path(args.data_root), args.images)
    images = load_images(paths, model.spec.interpolation or "bilinear")
    astronaut = dict(demo_photos())["astronaut"]
    astro = eval_transform(256, 224, model.spec.interpolation or "bilinear")(astronaut).unsqueeze(0)
    with torch.no_grad():
        targets = model(images).argmax(1)
    out: dict[str, Any] = {"label": args.label, "images": [p.name for p in paths], "steps": args.steps, "methods": {}}
    keys = args.methods or list(METHODS)
    for key in keys:
        name, settings = METHODS[key]
        try:
            explainer = build_explainer({"name": name, **settings}, model)
        except ValueError as err:
            print(f"{key}: skipped ({err})")
            out["methods"][key] = {"skipped": str(err)}
            continue
        start = time.perf_counter()
        maps = torch.cat([explainer(images[i:i + args.batch], targets[i:i + args.batch])
                          for i in range(0, len(images), args.batch)])
        seconds = (time.perf_counter() - start) / len(images)
        y, o = explanation_confidence(model, images, maps, targets)
        metric = AverageDropIncrease()
        metric.update(y, o)
        adic = {k: float(v) for k, v in metric.compute().items()}
        curves = {}
        for mode in ("deletion", "insertion"):
            x, probs = insertion_deletion_curves(model, images, maps, targets, mode=mode, n_steps=args.steps,
                                                 batch_size=16)
            curves[mode] = [float(auc(x[i], probs[i])) for i in range(len(images))]
        pair = torch.cat([explainer(astro, c) for c in TWO_CLASSES])
        out["methods"][key] = {
            "settings": {"name": name, **settings}, "seconds_per_image": seconds, **adic,
            "drop": (torch.clamp(y.unsqueeze(1) - o, min=0) / y.unsqueeze(1)).t().tolist(),
            "increase": (o > y.unsqueeze(1)).float().t().tolist(),
            "deletion": curves["deletion"], "insertion": curves["insertion"],
            "two_class_r": pearson(pair[0], pair[1]), "two_class_maps": pair.half().tolist(),
        }
        print(f"{key}: AD100 {adic['AD100']:.2f} IC100 {adic['IC100']:.2f} del {np.mean(curves['deletion']):.4f} "
              f"ins {np.mean(curves['insertion']):.4f} r(560,812) {out['methods'][key]['two_class_r']:.3f} "
              f"{seconds:.2f} s/img", flush=True)
    out["astronaut"] = astro[0].half().tolist()
    return out


def bootstrap_ci(diff: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Paired 95 % bootstrap interval of the mean of per-image differences."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(before_path: str, after_path: str, out_dir: Path) -> str:
    """Markdown table of before -> after per method, and the two-class figure (before | after)."""
    before, after = json.loads(Path(before_path).read_text()), json.loads(Path(after_path).read_text())
    lines = [(f"### Fidelity fixes: {before['label']} -> {after['label']} ({len(after['images'])} Imagenette val photos, "
              f"EfficientNet-Lite0; insertion/deletion with {after['steps']} steps)"), "",
             "| method | AD100 | IC100 | AD50 | IC50 | AD15 | IC15 | deletion AUC | insertion AUC | r(helmet, shuttle) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, a in after["methods"].items():
        b = before["methods"].get(key, {})
        if "skipped" in a:
            continue

        def cell(metric: str, b: dict = b, a: dict = a) -> str:
            if metric in ("deletion", "insertion"):
                va = float(np.mean(a[metric]))
                vb = float(np.mean(b[metric])) if metric in b else None
                fmt = "{:.4f}"
            else:
                va, vb, fmt = a[metric], b.get(metric), "{:.2f}"
            return fmt.format(va) if vb is None else f"{fmt.format(vb)} -> {fmt.format(va)}"

        cells = [cell(m) for m in ("AD100", "IC100", "AD50", "IC50", "AD15", "IC15", "deletion", "insertion")]
        r = f"{b['two_class_r']:.3f} -> {a['two_class_r']:.3f}" if "two_class_r" in b else f"{a['two_class_r']:.3f}"
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {r} |")
    lines.append("")
    lines.append("Paired 95 % bootstrap intervals of after - before (per image): AD100 drop (points), "
                 "deletion / insertion AUC.")
    lines.append("")
    for key, a in after["methods"].items():
        b = before["methods"].get(key, {})
        if "skipped" in a or "drop" not in b:
            continue
        parts = []
        d = 100 * (np.array(a["drop"][0]) - np.array(b["drop"][0]))
        lo, hi = bootstrap_ci(d)
        parts.append(f"AD100 {d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]")
        for m in ("deletion", "insertion"):
            d = np.array(a[m]) - np.array(b[m])
            lo, hi = bootstrap_ci(d)
            parts.append(f"{m} {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]")
        lines.append(f"- {key}: " + "; ".join(parts))
    figure(before, after, out_dir / "fidelity_two_classes.png")
    return "\n".join(lines) + "\n"


def figure(before: dict, after: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lcam.viz import overlay

    image = torch.tensor(after["astronaut"]).float()
    keys = [k for k, v in after["methods"].items() if "two_class_maps" in v]
    fig, axes = plt.subplots(len(keys), 4, figsize=(8, 2.1 * len(keys)))
    for row, key in enumerate(keys):
        for col, (run_, tag) in enumerate(((before, before["label"]), (after, after["label"]))):
            entry = run_["methods"].get(key, {})
            for j, cls in enumerate(TWO_CLASSES):
                ax = axes[row, 2 * col + j]
                ax.axis("off")
                if "two_class_maps" not in entry:
                    ax.set_title(f"{tag}: n/a", fontsize=7)
                    continue
                ax.imshow(overlay(image, torch.tensor(entry["two_class_maps"][j]).float()))
                ax.set_title(f"{key} {tag}\n{'helmet' if cls == 560 else 'shuttle'} (r={entry['two_class_r']:.2f})",
                             fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="run")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--methods", nargs="*", choices=sorted(METHODS))
    parser.add_argument("--data-root", default=str(SHARED / "imagenette-subset" / "val"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE_JSON", "AFTER_JSON"))
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.compare:
        text = compare(*args.compare, out_dir)
        (out_dir / "fidelity.md").write_text(text)
        print(text)
        return
    result = run(args)
    path = out_dir / f"fidelity_{args.label}.json"
    path.write_text(json.dumps(result))
    print(f"Written: {path}")


if __name__ == "__main__":
    main()
