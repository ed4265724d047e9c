"""Cost of batch-independent noise: keyed generators against one generator stream.

    python -m benchmarks.noise_overhead      # -> benchmarks/results/noise_overhead.md

SS-CAM draws one noise tensor per (sample, channel), now each from its own generator seeded with
``keyed_seed(seed, n, k)`` (:func:`lcam.explainers.perturbation.keyed_normal`) instead of one
stream for the whole batch. The extra work is a generator re-seed per draw (and a stack). This
script times, in one run on the same machine, per masked image: a draw from one stream
(``torch.randn`` of the batch), a keyed draw, and the EfficientNet-Lite0 forward pass at 224 px
that every masked image costs anyway (channels-last, ``--batch`` images per pass), for the noise
of SS-CAM type 1 (``H x W``) and type 2 (``3 x H x W``). Medians of ``--repeats``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lcam.backbones import build_backbone
from lcam.explainers.perturbation import keyed_normal

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, timed in turn (a, b, c, a, b, c, ...) so that load changes hit all alike."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "noise_overhead.md"))
    args = parser.parse_args()
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "backbone" / "efficientnet_lite0.yaml"))
    model = build_backbone(spec)
    b = args.batch
    x = torch.rand(b, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    keys = [(0, k) for k in range(b)]
    shapes = {"SS-CAM (1), H x W": (224, 224), "SS-CAM (2), 3 x H x W": (3, 224, 224)}
    fns = {"forward": lambda: model(x)}
    for label, shape in shapes.items():
        fns[f"stream {label}"] = lambda shape=shape: torch.randn((b, *shape), generator=gen)
        fns[f"keyed {label}"] = lambda shape=shape: keyed_normal(shape, 0, keys, "cpu")
    with torch.no_grad():
        med = {name: t / b for name, t in median_seconds(fns, args.repeats).items()}
    forward = med["forward"]
    rows = []
    for label in shapes:
        stream, keyed = med[f"stream {label}"], med[f"keyed {label}"]
        rows.append(f"| {label} | {stream * 1e3:.3f} | {keyed * 1e3:.3f} | {forward * 1e3:.1f} | "
                    f"{100 * (keyed - stream) / forward:+.1f}% | {100 * keyed / forward:.1f}% |")
    text = ("### Batch-independent noise: cost per masked image (CPU, EfficientNet-Lite0 224 px, "
            f"{torch.get_num_threads()} threads, batch {b})\n\n"
            "| noise | one stream (ms) | keyed per draw (ms) | forward pass (ms) | keyed - stream, of a forward | "
            "keyed noise, of a forward |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "Smooth Grad-CAM++ draws one keyed `3 x H x W` tensor per sample for the whole batch (it used to draw "
            "one per image): its noise costs less than before. Command: `python -m benchmarks.noise_overhead`; "
            "timings on a shared 2-core machine are noisy, the ratios in one run are what counts.\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
