"""Score-CAM against pytorch-grad-cam's ScoreCAM, reconciled one change at a time.

    pip install grad-cam ttach --no-deps      # --no-deps: its opencv-python-headless breaks the project's OpenCV
    python -m benchmarks.scorecam_parity      # -> benchmarks/results/scorecam_parity.md

Offline EfficientNet-Lite0 (explained at ``bn2``, 1280 x 7 x 7), eval transform (resize 256,
centre crop 224), the astronaut and coffee photos, each photo's top-1 class (and the space shuttle,
812, on the astronaut: the weak class of ``benchmarks/results/peer_parity.md``).

Score-CAM's cost is the masked forward passes; every map variant below is assembled from the same
passes. For each photo the script scores every channel's masked image once with our masks
(``align_corners=False``, :meth:`ScoreCAM.masks`) and once with the peer's
(``torch.nn.UpsamplingBilinear2d``: ``align_corners=True``, ``/(max - min + 1e-8)``), keeping
all 1000 logits; the peer itself runs once per (photo, class) (its logits are recorded through
its target callable and must equal ours with its masks). Then the Pearson r against the peer's
map is measured for:

* our explainer (checked equal to the assembly from the cached logits),
* each single change from ours: the peer's masks, normalising the low-resolution map before
  resizing it (torch bilinear), the peer's final step (min-max, OpenCV ``cv2.resize``, min-max
  again), the peer's epsilons, no pruning, probability weights (the authors' code), the authors'
  order (every channel upsampled, summed, then ReLU and min-max),
* the changes accumulated, ending at the peer's own assembly from our passes.

Results and the differences (which side follows the Score-CAM authors' code) are written to
``benchmarks/results/scorecam_parity.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from benchmarks.peer_parity import NormalisedInput
from lcam.backbones import build_backbone
from lcam.data.demo import demo_photos
from lcam.data.transforms import eval_transform
from lcam.explainers import ScoreCAM
from lcam.explainers.base import apply_masks, chunks
from lcam.maps import minmax_normalize, upsample, upsample_then_normalize

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee")
EXTRA_CLASSES = {"astronaut": (812,)}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel())[0, 1])


def peer_masks(acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's masks: ``UpsamplingBilinear2d`` (``align_corners=True``), ``/(max - min + 1e-8)``."""
    up = F.interpolate(acts.unsqueeze(1), size=size, mode="bilinear", align_corners=True).squeeze(1)
    lo = up.flatten(1).min(1).values.view(-1, 1, 1)
    hi = up.flatten(1).max(1).values.view(-1, 1, 1)
    return (up - lo) / (hi - lo + 1e-8)


@torch.no_grad()
def all_logits(model, image: torch.Tensor, masks: torch.Tensor, batch: int) -> torch.Tensor:
    """``(K, C)`` logits of ``image`` masked by each of ``masks`` ``(K, H, W)`` on the mean substrate."""
    substrate = model.mean.to(image.dtype).expand_as(image)
    out = []
    for part in chunks(masks.shape[0], batch):
        inputs = apply_masks(image, substrate, masks[part]).contiguous(memory_format=torch.channels_last)
        out.append(model(inputs).float())
    return torch.cat(out)


class RecordingTarget:
    """pytorch-grad-cam target: the class logit, recording every output row it sees."""

    def __init__(self, category: int) -> None:
        self.category = category
        self.rows: list[torch.Tensor] = []

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        self.rows.append(output.detach().clone())
        return output[..., self.category]


def cv2_final(cam: np.ndarray, size: tuple[int, int], eps: bool = True) -> np.ndarray:
    """The peer's last step: ``scale_cam_image`` (min-max, ``cv2.resize``) and again after resizing."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    if eps:
        return scale_cam_image(scale_cam_image(cam[None], (size[1], size[0])))[0]
    import cv2

    norm = minmax_normalize(torch.from_numpy(cam)[None])[0].numpy()
    return minmax_normalize(torch.from_numpy(cv2.resize(np.float32(norm), (size[1], size[0])))[None])[0].numpy()


def assemble(weights: torch.Tensor, acts: torch.Tensor, size: tuple[int, int], final: str) -> np.ndarray:
    """A map from channel weights ``(K,)`` and activations ``(K, h, w)``.

    ``final``: ``ours`` (ReLU, upsample, min-max: :meth:`ScoreCAM.weighted_map`), ``norm_up`` (ReLU,
    min-max, torch upsample), ``cv2`` (the peer: ReLU, min-max + 1e-7, cv2.resize, min-max + 1e-7),
    ``cv2_noeps`` (the same without the epsilons), ``authors`` (the Score-CAM authors' code: each
    channel upsampled, weighted sum, ReLU, min-max).
    """
    w, a = weights.double(), acts.double()
    cam = torch.einsum("k,khw->hw", w, a)
    if final == "ours":
        return ScoreCAM.weighted_map(weights[None], acts[None], size)[0].numpy()
    if final == "norm_up":
        return upsample(minmax_normalize(cam.clamp(min=0)[None].float()), size)[0].numpy()
    if final in ("cv2", "cv2_noeps"):
        return cv2_final(cam.clamp(min=0).float().numpy(), size, eps=final == "cv2")
    if final == "authors":
        return minmax_normalize(upsample(cam[None].float(), size).clamp(min=0))[0].numpy()
    raise ValueError(final)


def weights_of(logits: torch.Tensor, c: int, live: torch.Tensor, weighting: str, prune: bool,
               substrate_logits: torch.Tensor) -> torch.Tensor:
    """``(K,)`` channel weights from the cached ``(K, C)`` logits (dead channels: the substrate score when pruned)."""
    if weighting == "probability":
        return logits.softmax(1)[:, c] * live  # a dead channel multiplies an all-zero map
    scores = logits[:, c].clone()
    if prune:
        scores[~live] = substrate_logits[c]
    return scores.softmax(0)


def run_photo(model, peer_model, name: str, batch: int, cache_dir: Path, check_explainer: bool) -> list[dict]:
    from pytorch_grad_cam import ScoreCAM as PeerScoreCAM

    image = eval_transform(256, 224, model.spec.interpolation or "bilinear")(dict(demo_photos())[name]).unsqueeze(0)
    size = tuple(image.shape[-2:])
    with torch.no_grad():
        acts = model.features(image)
        logits = model.classify(acts.clone())
    top1 = int(logits.argmax())
    classes = (top1, *EXTRA_CLASSES.get(name, ()))
    a = acts[0].float()
    live = a.flatten(1).ne(0).any(1)
    cache = cache_dir / f"scorecam_parity_{name}.pt"
    if cache.exists():
        cached = torch.load(cache, weights_only=True)
    else:
        t0 = time.perf_counter()
        cached = {
            "ours": all_logits(model, image, ScoreCAM.masks(a, size), batch),
            "peer_masks": all_logits(model, image, peer_masks(a, size), batch),
        }
        with torch.no_grad():
            cached["substrate"] = model(model.mean.expand_as(image).contiguous())[0].float()
        cached["seconds"] = time.perf_counter() - t0
        torch.save(cached, cache)
    rows = []
    z = model.normalize(image)
    for c in classes:
        peer_cache = cache_dir / f"scorecam_parity_{name}_peer_{c}.pt"
        if peer_cache.exists():
            loaded = torch.load(peer_cache, weights_only=True)
            peer_map, peer_logits = loaded["map"].numpy(), loaded["logits"]
        else:
            target = RecordingTarget(c)
            with PeerScoreCAM(model=peer_model, target_layers=[peer_model.features]) as peer:
                peer.batch_size = batch
                peer_map = peer(input_tensor=z, targets=[target])[0]
            peer_logits = torch.cat([r.view(1, -1) for r in target.rows])
            torch.save({"map": torch.from_numpy(peer_map), "logits": peer_logits}, peer_cache)
        logit_gap = float((peer_logits - cached["peer_masks"]).abs().max())
        sub = cached["substrate"]

        def r_of(logits_key: str, final: str, weighting: str = "logit_softmax", prune: bool = True) -> tuple[float, float]:
            """(Pearson r, max abs difference) of a variant against the peer's map."""
            variant = assemble(weights_of(cached[logits_key], c, live, weighting, prune, sub), a, size, final)
            return pearson(variant, peer_map), float(np.abs(variant - peer_map).max())

        ours_cached = assemble(weights_of(cached["ours"], c, live, "logit_softmax", True, sub), a, size, "ours")
        row = {"photo": name, "class": c, "top1": c == top1, "peer_logit_gap": logit_gap}
        if check_explainer and c == top1:
            ours = ScoreCAM(model, batch_size=batch)(image, c)[0].numpy()
            row["explainer_vs_cached"] = float(np.abs(ours - ours_cached).max())
        else:
            ours = ours_cached
        authors = assemble(weights_of(cached["ours"], c, live, "probability", True, sub), a, size, "authors")
        row.update({
            "ours": (pearson(ours, peer_map), float(np.abs(ours - peer_map).max())),
            # single changes from ours
            "masks_align_corners_true": r_of("peer_masks", "ours"),
            "normalise_then_upsample": r_of("ours", "norm_up"),
            "peer_final_cv2": r_of("ours", "cv2"),
            "peer_final_cv2_no_eps": r_of("ours", "cv2_noeps"),
            "no_pruning": r_of("ours", "ours", prune=False),
            "probability_weights": r_of("ours", "ours", weighting="probability"),
            "authors_relu_after_upsampling": r_of("ours", "authors"),
            # accumulated
            "acc_masks_norm_up": r_of("peer_masks", "norm_up"),
            "acc_masks_cv2_no_eps": r_of("peer_masks", "cv2_noeps"),
            "acc_masks_cv2": r_of("peer_masks", "cv2"),
            "acc_masks_cv2_no_pruning": r_of("peer_masks", "cv2", prune=False),
            # the authors' code against ours and the peer
            "authors_vs_ours": pearson(authors, ours),
            "authors_vs_peer": pearson(authors, peer_map),
        })
        rows.append(row)
        print(row, flush=True)
    return rows


CHANGES = [
    ("ours", "our Score-CAM (`align_corners=False` masks, logit softmax, pruning, ReLU -> upsample -> min-max)"),
    ("masks_align_corners_true", "only: masks upsampled with `align_corners=True` (peer's `UpsamplingBilinear2d`)"),
    ("normalise_then_upsample", "only: ReLU -> min-max -> upsample (torch bilinear)"),
    ("peer_final_cv2", "only: the peer's last step (min-max + 1e-7, `cv2.resize`, min-max + 1e-7)"),
    ("peer_final_cv2_no_eps", "only: that step without the epsilons"),
    ("no_pruning", "only: no channel pruning (every channel its own pass)"),
    ("probability_weights", "only: probability weights, no softmax (the authors' code)"),
    ("authors_relu_after_upsampling", "only: the authors' final order (upsample every channel, sum, ReLU, min-max)"),
    ("acc_masks_norm_up", "peer's masks + min-max before upsampling (torch)"),
    ("acc_masks_cv2_no_eps", "peer's masks + the peer's `cv2.resize` step, no epsilons"),
    ("acc_masks_cv2", "peer's masks + the peer's last step (= the peer's assembly from our passes)"),
    ("acc_masks_cv2_no_pruning", "... + no pruning"),
]


def write(rows: list[dict], out: Path) -> None:
    cols = [f"{r['photo']} {r['class']}{' (top-1)' if r['top1'] else ''}" for r in rows]
    lines = ["| change (Pearson r / max abs difference against pytorch-grad-cam's map) | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(rows)]
    for key, label in CHANGES:
        lines.append(f"| {label} | " + " | ".join(f"{r[key][0]:.4f} / {r[key][1]:.3f}" for r in rows) + " |")
    extra = ["", "| check | " + " | ".join(cols) + " |", "|---|" + "---|" * len(rows)]
    extra.append("| r(authors' code, ours) | " + " | ".join(f"{r['authors_vs_ours']:.4f}" for r in rows) + " |")
    extra.append("| r(authors' code, peer) | " + " | ".join(f"{r['authors_vs_peer']:.4f}" for r in rows) + " |")
    extra.append("| peer's recorded logits - ours with its masks (max abs) | "
                 + " | ".join(f"{r['peer_logit_gap']:.1e}" for r in rows) + " |")
    if any("explainer_vs_cached" in r for r in rows):
        extra.append("| our explainer - assembly from the cached passes (max abs) | "
                     + " | ".join(f"{r['explainer_vs_cached']:.1e}" if "explainer_vs_cached" in r else "-" for r in rows) + " |")
    text = ("### Score-CAM vs pytorch-grad-cam 1.5 ScoreCAM, one change at a time "
            "(EfficientNet-Lite0 `bn2`, resize 256 + centre crop 224)\n\n" + "\n".join(lines + extra) + "\n\n"
            "Command: `python -m benchmarks.scorecam_parity`. \"only\": one change from ours; the rows below them "
            "accumulate changes. Pearson r is blind to a per-map affine change (min-max normalisation, and its order with a "
            "linear resize, when the map is non-negative); the max abs difference is not. \"authors' code\": the Score-CAM authors' public code (`align_corners=False` masks, "
            "probability weights, every channel upsampled before the sum, ReLU, min-max).\n")
    out.write_text(text)
    print(f"Written: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--batch", type=int, default=16, help="masked images per forward pass")
    parser.add_argument("--cache", default="/tmp", help="folder for the cached masked logits")
    parser.add_argument("--check-photos", nargs="*", default=["astronaut"],
                        help="photos whose top-1 map is also computed by our explainer (its own passes) and compared")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scorecam_parity.md"))
    args = parser.parse_args()
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "backbone" / "efficientnet_lite0.yaml"))
    model = build_backbone(spec)
    peer_model = NormalisedInput(model).eval()
    rows = []
    for name in args.photos:
        rows += run_photo(model, peer_model, name, args.batch, Path(args.cache), name in args.check_photos)
    write(rows, Path(args.out))


if __name__ == "__main__":
    main()
