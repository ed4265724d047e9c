"""When does SS-CAM become class-discriminative? Two classes, N = 2, 10, 35, sigma = 2, with and without the baseline.

    python -m benchmarks.sscam_classes --check           # -> benchmarks/results/sscam_classes.md
    python -m benchmarks.sscam_classes --samples 2 10    # fewer N (the largest N sets the cost)
    python -m benchmarks.sscam_classes --sigma 2         # the paper's sigma only

Offline EfficientNet-Lite0 (``bn2``, 1280 x 7 x 7), eval transform (resize 256, centre crop 224),
the astronaut photo; the maps of its top-1 class (560, football helmet) and of the space shuttle
(812). For SS-CAM type 1 and type 2 at the paper's ``sigma = 2`` (and smaller ones) the Pearson r of the two classes'
maps is measured at each N, with ``baseline="paper"`` (CIC ``p_c(noisy) - p_c(X_b)``, Eq. 10/13)
and ``baseline="none"`` (the authors' code). r near 1: the map does not depend on the class.

Cost. SS-CAM's noise is keyed by ``(seed, sample n, channel k)`` (see
:mod:`lcam.explainers.perturbation`), so the first N samples of a run with 35 samples are exactly
a run with N samples, and the masked noisy images do not depend on the class: every (sample,
channel) image is run once, through the explainer's own :meth:`masked_inputs`, and both classes'
probabilities are read from that pass. The weights of every (N, baseline, class) are then means
of these scores, minus ``p_c(X_b)`` for the paper's baseline, and the maps come from
:meth:`ScoreCAM.weighted_map`. ``--check`` also runs the explainer itself (type 2, N = 1, paper
baseline, top-1 class) and reports its largest difference from this assembly. Per-sample scores
are cached (``--cache``), so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from lcam.backbones import build_backbone
from lcam.data.demo import demo_photos
from lcam.data.transforms import eval_transform
from lcam.explainers import SSCAM1, SSCAM2, ScoreCAM
from lcam.explainers.base import chunks

ROOT = Path(__file__).resolve().parents[1]
TYPES = {"sscam1": SSCAM1, "sscam2": SSCAM2}
SHUTTLE = 812


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().flatten().numpy(), b.double().flatten().numpy())[0, 1])


@torch.no_grad()
def sample_scores(explainer, image: torch.Tensor, acts: torch.Tensor, classes: list[int], sample: int,
                  batch: int) -> torch.Tensor:
    """``(K, len(classes))`` probabilities of noisy sample ``sample`` of every live channel (0 for dead ones)."""
    substrate = explainer.substrate_for(image)
    live = acts[0].flatten(1).ne(0).any(1).nonzero().flatten()
    out = torch.zeros(acts.shape[1], len(classes))
    for part in chunks(live.numel(), batch):
        k = live[part]
        n = k.numel()
        inputs = explainer.masked_inputs(image.expand(n, -1, -1, -1), substrate.expand(n, -1, -1, -1), acts[0, k], k, sample)
        probs = explainer.model(inputs.contiguous(memory_format=torch.channels_last)).softmax(1)
        out[k] = probs[:, classes].float()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", nargs="+", type=int, default=[2, 10, 35])
    parser.add_argument("--sigma", nargs="+", type=float, default=[2.0, 0.5, 0.2],
                        help="noise std (the paper's 2 first); one table each")
    parser.add_argument("--batch", type=int, default=16, help="masked images per forward pass")
    parser.add_argument("--cache", default="/tmp/lcam_sscam_classes",
                        help="folder of the per-sample scores, one file per sigma (an interrupted run resumes)")
    parser.add_argument("--check", action="store_true",
                        help="also run the explainer (type 2, N = 1, paper baseline) and compare with the assembly")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sscam_classes.md"))
    args = parser.parse_args()
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "backbone" / "efficientnet_lite0.yaml"))
    model = build_backbone(spec)
    image = eval_transform(256, 224, model.spec.interpolation or "bilinear")(dict(demo_photos())["astronaut"]).unsqueeze(0)
    size = tuple(image.shape[-2:])
    with torch.no_grad():
        acts = model.features(image)
        top1 = int(model.classify(acts.clone()).argmax())
    classes = [top1, SHUTTLE]
    n_max = max(args.samples)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    tables: list[str] = []
    for sigma in args.sigma:
        cache = Path(args.cache) / f"sigma{sigma:g}.pt"
        state = torch.load(cache, weights_only=True) if cache.exists() else {}
        if state and (state.get("classes") != classes or state.get("sigma") != sigma):
            state = {}
        state.update({"classes": classes, "sigma": sigma})
        explainers = {name: cls(model, n_samples=n_max, sigma=sigma, baseline="none") for name, cls in TYPES.items()}
        with torch.no_grad():
            base = model(explainers["sscam1"].substrate_for(image).contiguous()).softmax(1)[0, classes].float()  # p_c(X_b)
        t0 = time.perf_counter()
        for n in range(n_max):
            for name, explainer in explainers.items():
                key = f"{name}/{n}"
                if key not in state:
                    state[key] = sample_scores(explainer, image, acts, classes, n, args.batch)
                    torch.save(state, cache)
            print(f"sigma {sigma:g}: sample {n + 1}/{n_max} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        check = None
        if args.check:
            ref = SSCAM2(model, n_samples=1, sigma=sigma, baseline="paper")(image, top1)[0]
            w = (state["sscam2/0"][:, 0] - base[0]).view(1, -1)
            check = float((ref - ScoreCAM.weighted_map(w, acts, size)[0]).abs().max())
            print(f"explainer (type 2, N = 1, paper baseline) - assembly: max abs {check:.1e}")
        tables.append(table(state, acts, base, classes, sorted(args.samples), size, check))
        write(tables, Path(args.out))


def table(state: dict, acts: torch.Tensor, base: torch.Tensor, classes: list[int], samples: list[int],
          size: tuple[int, int], check: float | None) -> str:
    """One sigma's table: r of the two classes' maps per N, type and baseline."""
    lines = ["| N | SS-CAM (1), paper baseline | SS-CAM (1), no baseline | SS-CAM (2), paper baseline | SS-CAM (2), no baseline |",
             "|---|---|---|---|---|"]
    for n in samples:
        cells = []
        for name in TYPES:
            mean = torch.stack([state[f"{name}/{i}"] for i in range(n)]).mean(0)  # (K, 2)
            for baseline in ("paper", "none"):
                w = mean - base if baseline == "paper" else mean
                maps = [ScoreCAM.weighted_map(w[:, j].view(1, -1), acts, size)[0] for j in range(2)]
                empty = [c for c, m in zip(classes, maps) if not bool(m.gt(0).any())]
                # a map that is all zero (ReLU of a sum that is negative everywhere) has no correlation
                cells.append(f"map of {', '.join(map(str, empty))} all zero" if empty else f"{pearson(*maps):.3f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    text = (f"### sigma = {state['sigma']:g}\n\n" + "\n".join(lines) + "\n\n"
            f"p_c(X_b) (the fully masked image, mean substrate): {base[0]:.4f} (class {classes[0]}), "
            f"{base[1]:.2e} (class {classes[1]}).\n")
    if check is not None:
        text += (f"\nCheck: the explainer itself (type 2, N = 1, paper baseline, top-1) differs from the assembly by at "
                 f"most {check:.1e}.\n")
    return text


def write(tables: list[str], out: Path) -> None:
    text = ("## SS-CAM: Pearson r of the maps of class 560 (top-1, football helmet) and 812 (space shuttle), astronaut "
            "photo, EfficientNet-Lite0\n\n"
            "r near 1: the two classes get the same map (class-agnostic); lower is more class-discriminative. "
            "Command: `python -m benchmarks.sscam_classes --check` (maps assembled from one set of masked passes per "
            "(sample, channel); see the module docstring).\n\n" + "\n".join(tables))
    out.write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
