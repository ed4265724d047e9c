"""ROAD parity with pytorch-grad-cam: the same Grad-CAM maps and photos through both implementations.

pytorch-grad-cam is not a dependency; install it outside the project's environment, e.g.::

    pip install --no-deps --target /tmp/pgc grad-cam opencv-python-headless ttach
    PYTHONPATH=/tmp/pgc python -m benchmarks.road_parity      # -> benchmarks/results/localisation_road_parity.md

Checks (EfficientNet-Lite0, offline; scikit-image photos; top-1 class; softmax probability):

1. the imputation alone: for the same removal mask, without noise, our sparse solve on the image in
   [0, 1] against its ``NoisyLinearImputer`` on the normalised tensor (ours normalised afterwards);
2. the metric: its ``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage`` /
   ``ROADCombined`` against :class:`lcam.metrics.ROAD`, without noise (exact up to its percentile
   thresholding) and with ROAD's noise (0.01 in normalised units; different random draws).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from skimage import data as skdata

from lcam.backbones import build_backbone
from lcam.explainers import build_explainer
from lcam.metrics.road import ROAD, ROAD_PERCENTILES, noisy_linear_impute, removal_masks

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "localisation_road_parity.md"


def photos(size: int = 224) -> torch.Tensor:
    from torchvision.transforms.functional import center_crop, resize

    imgs = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()]
    out = [center_crop(resize(torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1).float() / 255, size, antialias=True), size)
           for i in imgs]
    return torch.stack(out)


class Normalised(torch.nn.Module):
    """The classifier on normalised tensors, as pytorch-grad-cam feeds it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.classify(self.model.features(x * self.model.std + self.model.mean))


def main() -> None:
    import pytorch_grad_cam.metrics.road as pgc_road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.set_num_threads(1)
    model = build_backbone("tf_efficientnet_lite0")
    images = photos()
    with torch.no_grad():
        targets = model(images).argmax(1)
    maps = build_explainer("gradcam", model)(images, targets)
    norm = model.normalize(images)
    lines = ["## ROAD: lcam vs pytorch-grad-cam (same Grad-CAM maps, EfficientNet-Lite0, 3 scikit-image photos)", ""]

    # 1. imputation alone, no noise
    removed = removal_masks(maps, [30, 70], "morf").reshape(-1, *maps.shape[1:])
    ours = model.normalize(noisy_linear_impute(images.repeat_interleave(2, 0).double(), removed).float())
    theirs = torch.stack([pgc_road.NoisyLinearImputer(noise=0.0)(norm[i // 2], (~removed[i]).float())
                          for i in range(removed.shape[0])])
    diff = (ours - theirs).abs().max().item()
    lines += [f"Imputation, same masks (30% and 70% removed), no noise: max |difference| = {diff:.2e} "
              "(normalised units; float32 rounding).", ""]

    # 2. the metric
    pgc_targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    cams = maps.numpy()
    wrapped = Normalised(model).eval()
    rows = []
    for noise in (0.0, 0.01):
        pgc_road.NoisyLinearImputer.__init__.__defaults__ = (noise, pgc_road.neighbors_weights)
        t0 = time.perf_counter()
        morf = pgc_road.ROADMostRelevantFirstAverage(list(ROAD_PERCENTILES))(norm, cams, pgc_targets, wrapped)
        lerf = pgc_road.ROADLeastRelevantFirstAverage(list(ROAD_PERCENTILES))(norm, cams, pgc_targets, wrapped)
        t_pgc = time.perf_counter() - t0
        t0 = time.perf_counter()
        metric = ROAD(model, noise=noise)
        metric.update(images, maps, targets)
        ours_scores = {k: float(v) for k, v in metric.compute().items()}
        t_ours = time.perf_counter() - t0
        theirs_scores = {"ROAD-MoRF": float(np.mean(morf)), "ROAD-LeRF": float(np.mean(lerf)),
                         "ROAD": float(np.mean((lerf - morf) / 2))}
        for key in ("ROAD-MoRF", "ROAD-LeRF", "ROAD"):
            rows.append(f"| {noise} | {key} | {ours_scores[key]:.4f} | {theirs_scores[key]:.4f} | "
                        f"{ours_scores[key] - theirs_scores[key]:+.4f} |")
        rows.append(f"| {noise} | seconds (3 photos, 2 x 9 solves each) | {t_ours:.1f} | {t_pgc:.1f} | |")
    lines += ["| noise | score | lcam | pytorch-grad-cam | difference |", "|---|---|---|---|---|", *rows, "",
              "pytorch-grad-cam removes pixels by `np.percentile` thresholds (`map < threshold` kept, so its "
              "'percentile p' removes 100 - p %, and ties/interpolation move a pixel or so); lcam removes exactly "
              "round(p% x H x W) pixels by rank. With noise the two draw different random numbers."]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
