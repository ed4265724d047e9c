"""Parity of the per-image metric families with Quantus, on the demo photos.

Quantus is not a dependency; install it without its dependencies (it would pull another torch)::

    pip install quantus --no-deps
    nice python -m benchmarks.metric_families_parity     # -> benchmarks/results/metric_families_parity.md

EfficientNet-Lite0 (offline), the 9 demo photos at 112 px, Grad-CAM maps of the top-1 class.

1. ``Gini`` / ``Entropy`` against ``quantus.Sparseness`` / ``quantus.Complexity`` (deterministic).
2. ``FaithCorr`` against ``quantus.FaithfulnessCorrelation`` (softmax, baseline 0, 100 subsets of
   224 pixels: Quantus' defaults). Quantus draws (channel, pixel) elements, we draw pixels, so the
   photos are made gray and given to Quantus with one channel (a wrapper repeats it). First with
   *the same* subsets (Quantus' ``np.random.choice`` answered with ours): the formula alone; then
   with Quantus' own draws, against the spread of our value over seeds (the sampling noise).
3. ``MaxSens`` against ``quantus.MaxSensitivity`` with the same noise (``np.random.uniform``
   answered with ours), 10 samples, radius 0.02.
"""
from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import Tensor, nn

from lcam.backbones import build_backbone
from lcam.data import demo_photos
from lcam.explainers import GradCAM
from lcam.explainers.base import make_generator
from lcam.metrics import FaithfulnessCorrelation, MaxSensitivity, ball_noise, gini_index, map_entropy, random_subsets

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "metric_families_parity.md"
SIZE = 112


class _Gray(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.expand(-1, 3, -1, -1))


def main() -> None:
    import quantus

    t0 = time.time()
    model = build_backbone({"name": "tf_efficientnet_lite0", "source": "timm", "weights": "imagenet"})
    arrays = [np.asarray(img.resize((SIZE, SIZE)), dtype=np.float32) / 255.0 for _, img in demo_photos()]
    photos = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    gray = photos.mean(1, keepdim=True)
    rgb_gray = gray.expand(-1, 3, -1, -1).contiguous()
    gradcam = GradCAM(model)
    with torch.no_grad():
        targets = model(rgb_gray).argmax(1)
    maps = gradcam(rgb_gray, targets)
    y, a = targets.numpy(), maps[:, None].numpy()
    lines = ["# Per-image metric families: parity with Quantus 0.6.0", "",
             f"EfficientNet-Lite0, the {len(photos)} demo photos at {SIZE} px (gray), Grad-CAM, top-1 class.", ""]

    # 1. complexity
    q_gini = np.asarray(quantus.Sparseness(disable_warnings=True)(model=None, x_batch=gray.numpy(), y_batch=y, a_batch=a.copy()))
    q_ent = np.asarray(quantus.Complexity(disable_warnings=True)(model=None, x_batch=gray.numpy(), y_batch=y, a_batch=a.copy()))
    d_gini = np.abs(gini_index(maps).numpy() - q_gini).max()
    d_ent = np.abs(map_entropy(maps).numpy() - q_ent).max()
    lines += ["| quantity | max abs difference | note |", "|---|---|---|",
              f"| Gini vs Sparseness | {d_gini:.1e} | Quantus adds 1e-7 to the max-normalised map |",
              f"| Entropy vs Complexity | {d_ent:.1e} | Quantus computes in the map's float32 (1e-12 inside the log) |"]

    # 2. faithfulness correlation
    n, k = 100, 224
    ours = FaithfulnessCorrelation(model, n_samples=n, subset_size=k, seed=0).per_image(rgb_gray, maps, targets)["FaithCorr"]
    subsets = random_subsets(SIZE * SIZE, n, k, seed=0)
    answers = iter([np.flatnonzero(s.numpy()) for s in subsets for _ in range(len(gray))])

    def quantus_faithcorr() -> np.ndarray:
        metric = quantus.FaithfulnessCorrelation(nr_runs=n, subset_size=k, perturb_baseline=0.0,
                                                 disable_warnings=True, return_aggregate=False)
        return np.asarray(metric(model=_Gray(model).eval(), x_batch=gray.numpy(), y_batch=y, a_batch=a,
                                 softmax=True, channel_first=True, device="cpu"))

    with mock.patch.object(np.random, "choice", lambda *args, **kwargs: next(answers)):
        shared = quantus_faithcorr()
    np.random.seed(0)
    own = quantus_faithcorr()
    seeds = torch.stack([FaithfulnessCorrelation(model, n_samples=n, subset_size=k, seed=s).per_image(
        rgb_gray, maps, targets)["FaithCorr"] for s in (1, 2, 3)] + [ours])
    lines += [f"| FaithCorr, same subsets | {np.abs(ours.numpy() - shared).max():.1e} | float32 forward passes |",
              f"| FaithCorr, Quantus' own subsets, per image | {np.abs(ours.numpy() - own).max():.3f} "
              f"(mean {np.abs(ours.numpy() - own).mean():.3f}) | our own 4 seeds spread by up to "
              f"{(seeds.max(0).values - seeds.min(0).values).max().item():.3f} per image (std "
              f"{seeds.std(0).mean().item():.3f}) |",
              f"| FaithCorr, mean over the photos | ours {ours.mean().item():.3f}, Quantus {own.mean():.3f} | |"]

    # 3. max-sensitivity
    ns, radius = 10, 0.02
    ours_ms = MaxSensitivity(model, gradcam, n_samples=ns, radius=radius, seed=0).per_image(photos, gradcam(photos, targets),
                                                                                           targets)["MaxSens"]
    noise = ball_noise(make_generator(0, torch.device("cpu")), ns, tuple(photos.shape[1:]), radius, "cpu")
    steps = iter([np.broadcast_to(d.reshape(1, -1).double().numpy(), (len(photos), d.numel())) for d in noise])

    def explain(model, inputs, targets, **kwargs):  # noqa: ARG001 - Quantus' explain_func signature
        return gradcam(torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets)).detach()[:, None].numpy()

    with mock.patch.object(np.random, "uniform", lambda *args, **kwargs: next(steps)):
        q_ms = np.asarray(quantus.MaxSensitivity(nr_samples=ns, lower_bound=radius, disable_warnings=True)(
            model=model, x_batch=photos.numpy(), y_batch=y, a_batch=gradcam(photos, targets)[:, None].numpy(),
            explain_func=explain, channel_first=True, device="cpu"))
    rel = np.abs(ours_ms.numpy() - q_ms) / np.abs(q_ms)
    lines += [f"| MaxSens, same noise (colour photos) | {np.abs(ours_ms.numpy() - q_ms).max():.1e} "
              f"(relative {rel.max():.1e}) | values {ours_ms.min().item():.3f}..{ours_ms.max().item():.3f} |",
              "", f"{time.time() - t0:.0f} s on the 2-core CPU (shared)."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
