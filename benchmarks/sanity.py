"""Cost of the model parameter randomisation checks as a ratio to their floor (issue 21, point 6).

The floor of ``ModelRandomisation`` is one explanation per image per step: ``steps x`` the time of
the method on the intact classifier. Measured on EfficientNet-Lite0 (offline weights), the demo
photos at 224 px, in one process (ratios of times taken in the same run):

* ``explain``: the steps' explanations, including setting the working copy per step (the metric's
  ``step_maps``), steady state (the copy and the random values already made);
* ``first call``: the same on a fresh classifier, with the working copy and every unit's random
  values made (once per classifier and device, shared by all methods);
* ``total``: ``per_image`` (explanations + the three similarities, SSIM and HOG on the CPU);
* ``naive``: a fresh deepcopy of the classifier re-initialised per step (what the shared copy avoids).

    nice python -m benchmarks.sanity            # writes benchmarks/results/sanity.md
"""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch

from lcam.backbones import build_backbone
from lcam.explainers import LCAMExplainer, build_explainer
from lcam.metrics.parameter_randomisation import ModelRandomisation, random_parameters, rebind, _param_modules
from lcam.model.heads import AttentionHead

OUT = Path(__file__).resolve().parent / "results" / "sanity.md"


def photos(n: int, size: int = 224) -> torch.Tensor:
    import torchvision.transforms.functional as TF
    from PIL import Image

    from lcam.data.demo import demo_photos

    return torch.stack([TF.to_tensor(TF.center_crop(TF.resize(p, size, interpolation=Image.BICUBIC), size))
                        for _, p in demo_photos()[:n]])


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive(model, explainer, metric, images, targets) -> None:
    """A deepcopy of the classifier per step, re-initialised from scratch (the cost the shared copy avoids)."""
    for step in metric.steps:
        if step.kind == "head":
            continue
        work = copy.deepcopy(model)
        with torch.no_grad():
            for unit in step.units:
                for name, m in _param_modules(work, unit.modules):
                    for k, v in random_parameters(m, name, "default", 0.01, 0).items():
                        getattr(m, k).copy_(v)
        rebind(explainer, model=work)(images, targets)


def main() -> None:
    torch.manual_seed(0)
    images = photos(4)
    model = build_backbone({"name": "tf_efficientnet_lite0", "source": "timm", "weights": "imagenet"})
    targets = model(images).argmax(1)
    head = AttentionHead(model.feature_channels, model.num_classes)
    head.init_from_linear(*model.linear_readout())
    methods = {"Grad-CAM": build_explainer("gradcam", model), "L-CAM (CAM-initialised head)": LCAMExplainer(model, head=head),
               "RISE (50 masks)": build_explainer({"name": "rise", "n_masks": 50}, model)}
    lines = ["# Sanity checks: cost against the floor (steps x one explanation per image)", "",
             f"EfficientNet-Lite0, {images.shape[0]} demo photos at 224 px, CPU ({torch.get_num_threads()} threads), "
             "cascade + independent over the top 4 units (8 steps; L-CAM: + its random head = 9); medians of 3.", "",
             "| method | steps | one explanation (s) | floor (s) | explain (s) | explain / floor | first call / floor | "
             "total / floor | naive / floor |", "|---|---|---|---|---|---|---|---|---|"]
    for label, explainer in methods.items():
        maps = explainer(images, targets)
        fresh = copy.deepcopy(model)  # a classifier without a shared working copy yet: the first call's set-up
        first_metric = ModelRandomisation(fresh, rebind(explainer, model=fresh), max_steps=4)
        t0 = time.perf_counter()
        first_metric.step_maps(images, targets)
        first = time.perf_counter() - t0
        metric = ModelRandomisation(model, explainer, max_steps=4)
        metric.step_maps(images, targets)  # warm: the copy and the random values exist
        one = timed(lambda: explainer(images, targets))
        steps = len(metric.steps)
        floor = steps * one
        explain = timed(lambda: metric.step_maps(images, targets))
        total = timed(lambda: metric.per_image(images, maps, targets), repeats=2)
        slow = timed(lambda: naive(model, explainer, metric, images, targets), repeats=1)
        naive_steps = sum(s.kind != "head" for s in metric.steps)
        lines.append(f"| {label} | {steps} | {one:.3f} | {floor:.2f} | {explain:.2f} | {explain / floor:.2f} | "
                     f"{first / floor:.2f} | {total / floor:.2f} | {slow / (naive_steps * one):.2f} |")
        print(lines[-1], flush=True)
    lines += ["", "explain: the steps' explanations incl. setting the working copy; first call: the same with the "
              "working copy and the random values made; total: per_image (explanations + Spearman, SSIM, HOG); "
              "naive: a deepcopy re-initialised per step (over its own steps)."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
