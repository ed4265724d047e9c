"""D-RISE cost: time against its N masked detector passes, peak memory against N, and Microsoft's D-RISE.

    nice -n 10 python -m benchmarks.drise                      # all three parts, YOLOv3-tiny, the cameraman photo
    nice -n 10 python -m benchmarks.drise --parts time --n-time 200
    PYTHONPATH=/path/to/vem python -m benchmarks.drise --parts peer   # with vision-explanation-methods importable

What is measured (one thread by default, ``--threads``; real YOLOv3-tiny weights at 416 px; the
image: scikit-image's cameraman, 512 x 512, or ``--image`` (any photo, e.g. one of
``../shared/data/imagenet-val-1300``); the target: the detector's best detection):

* ``time``: D-RISE with ``N = --n-time`` masks against the same ``N`` masked images (rendered and
  applied before the clock starts) run through ``detector.proposals`` in the same chunks. The two
  are timed alternately (``passes, drise, passes, drise, ...``, ``--reps`` each) and the ratio of
  the medians is reported: what D-RISE adds to its forward passes (mask rendering, masking,
  similarity, the weighted sum). Target: at most 1.15.
* ``memory``: peak resident memory of a fresh process running D-RISE with N = 1000 and 4000 (the
  increase over the same process after a warm-up explanation with one chunk of masks): flat in N
  because masks are rendered and applied one chunk at a time.
* ``peer``: Microsoft's D-RISE (PyPI ``vision-explanation-methods``, ``DRISE_saliency``: one
  forward pass per mask, every mask kept as a 3 x H x W tensor until the end) on the same
  detector (a ``GeneralObjectDetectionModelWrapper`` returning the same proposals), image, target
  and N (``--n-peer``), timed against ours; and its peak memory at two N. Install it with
  ``pip install --no-deps vision-explanation-methods==0.1.1 pandas`` (it pins matplotlib<3.7,
  which this project does not need) or put it on ``PYTHONPATH``. Target: ours at least 5x faster.

Writes the tables to stdout and to ``benchmarks/results/drise.md`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_image(path: str | None) -> torch.Tensor:
    """``(1, 3, H, W)`` in [0, 1]: ``path`` (longer side at most 512), or the cameraman."""
    from PIL import Image

    if path:
        img = Image.open(path).convert("RGB")
        img.thumbnail((512, 512))
        arr = np.asarray(img)
    else:
        from skimage import data

        arr = np.stack([data.camera()] * 3, -1)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def clock(device: str) -> float:
    """``time.perf_counter()`` after the device's queued work is done (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def setup(args: argparse.Namespace) -> tuple[Any, torch.Tensor, Any]:
    from lcam.detection.darknet import YOLOv3Tiny

    torch.set_num_threads(args.threads)
    det = YOLOv3Tiny(input_size=args.input_size, score_threshold=0.25).to(args.device)
    image = load_image(args.image).to(args.device)
    dets = det.detect(image)[0]
    if not len(dets):
        raise SystemExit("no detection on this image: choose another --image")
    return det, image, dets.select(torch.tensor([0]))


def part_time(args: argparse.Namespace) -> dict[str, Any]:
    from lcam.detection.drise import DRISE
    from lcam.explainers.base import chunks

    det, image, target = setup(args)
    drise = DRISE(det, n_masks=args.n_time, s=16, seed=0, batch_size=args.batch_size)
    h, w = image.shape[-2:]
    size = drise.masked_batch_size(image.device)
    grids = drise.grids((h, w), image.device)
    masked = [image[0] * grids.render(part, (h, w)).unsqueeze(1) for part in chunks(args.n_time, size)]

    def passes() -> None:
        for x in masked:
            det.proposals(x)

    def ours() -> None:
        drise(image, [target])

    passes()
    ours()  # warm-up
    tp, td = [], []
    for _ in range(args.reps):
        t0 = clock(args.device)
        passes()
        tp.append(clock(args.device) - t0)
        t0 = clock(args.device)
        ours()
        td.append(clock(args.device) - t0)
    p, d = statistics.median(tp), statistics.median(td)
    return {"n": args.n_time, "chunk": size, "passes_s": p, "drise_s": d, "ratio": d / p, "per_pass_ms": 1000 * p / args.n_time}


def _peak_child(args: argparse.Namespace, which: str, n: int) -> dict[str, Any]:
    """Run one memory measurement in a fresh process (so the peak is its own)."""
    cmd = [sys.executable, "-m", "benchmarks.drise", "--child", which, "--child-n", str(n), "--threads", str(args.threads),
           "--input-size", str(args.input_size), "--device", args.device] + (["--image", args.image] if args.image else []) + \
          (["--batch-size", str(args.batch_size)] if args.batch_size else [])
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    if out.returncode != 0:
        return {"n": n, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    det, image, target = setup(args)
    n = args.child_n
    if args.child == "ours":
        from lcam.detection.drise import DRISE

        warm = DRISE(det, n_masks=DRISE(det, batch_size=args.batch_size).masked_batch_size(image.device), s=16,
                     batch_size=args.batch_size)
        warm(image, [target])
        base = _rss_mb()
        t0 = clock(args.device)
        DRISE(det, n_masks=n, s=16, seed=0, batch_size=args.batch_size)(image, [target])
    else:
        wrapper, record, drise_saliency = peer_setup(det, target)
        drise_saliency(wrapper, image[0], [record], 2, mask_res=(16, 16), device=args.device)
        base = _rss_mb()
        t0 = clock(args.device)
        drise_saliency(wrapper, image[0], [record], n, mask_res=(16, 16), device=args.device)
    seconds = clock(args.device) - t0
    print(json.dumps({"n": n, "base_mb": base, "peak_mb": _rss_mb(), "extra_mb": _rss_mb() - base, "seconds": seconds}))


def peer_setup(det: Any, target: Any) -> tuple[Any, Any, Any]:
    """Microsoft's D-RISE on our detector: a wrapper returning the same proposals."""
    from vision_explanation_methods.explanations.common import DetectionRecord, GeneralObjectDetectionModelWrapper
    from vision_explanation_methods.explanations.drise import DRISE_saliency

    class Wrapper(GeneralObjectDetectionModelWrapper):
        def predict(self, x: torch.Tensor) -> list:
            x = x.unsqueeze(0) if x.dim() == 3 else x
            return [DetectionRecord(p.boxes, p.objectness, p.probs) for p in det.proposals(x)]

    record = DetectionRecord(target.boxes, torch.ones(1, device=target.boxes.device), target.probs)
    return Wrapper(), record, DRISE_saliency


def part_peer(args: argparse.Namespace) -> dict[str, Any]:
    from lcam.detection.drise import DRISE

    det, image, target = setup(args)
    wrapper, record, drise_saliency = peer_setup(det, target)
    ours = DRISE(det, n_masks=args.n_peer, s=16, seed=0, batch_size=args.batch_size)
    ours(image, [target])
    drise_saliency(wrapper, image[0], [record], 2, mask_res=(16, 16), device=args.device)  # warm-up
    to, tm = [], []
    for _ in range(args.reps):
        t0 = clock(args.device)
        ours(image, [target])
        to.append(clock(args.device) - t0)
        t0 = clock(args.device)
        drise_saliency(wrapper, image[0], [record], args.n_peer, mask_res=(16, 16), device=args.device)
        tm.append(clock(args.device) - t0)
    o, m = statistics.median(to), statistics.median(tm)
    return {"n": args.n_peer, "ours_s": o, "peer_s": m, "speedup": m / o}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["time", "memory", "peer"], choices=["time", "memory", "peer"])
    ap.add_argument("--image", default=None)
    ap.add_argument("--input-size", type=int, default=416)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 (the issue's 5x is a GPU figure)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--n-time", type=int, default=200)
    ap.add_argument("--n-memory", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--n-peer", type=int, default=100)
    ap.add_argument("--n-peer-memory", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "drise.md"))
    ap.add_argument("--child", choices=["ours", "peer"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    lines = ["# D-RISE cost (benchmarks/drise.py)", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{args.threads} thread(s); YOLOv3-tiny (official weights) at {args.input_size} px; image "
             f"{args.image or 'scikit-image camera (512 x 512)'}; s = 16, p = 0.5.", ""]
    if "time" in args.parts:
        r = part_time(args)
        lines += ["## Time against its masked forward passes", "",
                  "| N | masked images per pass | N masked passes (s) | D-RISE (s) | ratio | ms per masked pass |",
                  "|---|---|---|---|---|---|",
                  f"| {r['n']} | {r['chunk']} | {r['passes_s']:.2f} | {r['drise_s']:.2f} | **{r['ratio']:.3f}** | {r['per_pass_ms']:.1f} |", ""]
        print("\n".join(lines[-6:]), flush=True)
    if "memory" in args.parts:
        rows = [_peak_child(args, "ours", n) for n in args.n_memory]
        lines += ["## Peak memory against N (fresh process each)", "",
                  "| N | resident after warm-up (MB) | peak (MB) | increase (MB) | seconds |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['n']} | " + (" | ".join(f"{r[k]:.0f}" for k in ("base_mb", "peak_mb", "extra_mb", "seconds"))
                                              if "error" not in r else f"error: {r['error']} | | |") + " |")
        lines.append("")
        print("\n".join(lines[-(len(rows) + 5):]), flush=True)
    if "peer" in args.parts:
        try:
            import vision_explanation_methods  # noqa: F401
        except ImportError:
            lines += ["## Microsoft's D-RISE", "", "vision-explanation-methods is not installed: skipped "
                      "(`pip install --no-deps vision-explanation-methods==0.1.1 pandas`).", ""]
        else:
            r = part_peer(args)
            mem = [_peak_child(args, "peer", n) for n in args.n_peer_memory]
            lines += ["## Microsoft's D-RISE (vision-explanation-methods 0.1.1) on the same detector, image, target", "",
                      "| N | ours (s) | vision-explanation-methods (s) | speed-up |", "|---|---|---|---|",
                      f"| {r['n']} | {r['ours_s']:.2f} | {r['peer_s']:.2f} | **{r['speedup']:.1f}x** |", "",
                      "Its peak memory grows with N (every mask kept as 3 x H x W floats):", "",
                      "| N | increase (MB) | seconds |", "|---|---|---|"]
            lines += [f"| {m['n']} | {m.get('extra_mb', float('nan')):.0f} | {m.get('seconds', float('nan')):.1f} |" for m in mem]
            lines.append("")
            print("\n".join(lines[-(len(mem) + 10):]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
