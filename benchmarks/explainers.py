"""Cost of every explainer, as ratios to one plain forward pass of the same model in the same run.

    python -m benchmarks.explainers                       # MobileNetV2, ResNet-50, VGG-16; batch 1 and 8
    python -m benchmarks.explainers --quick               # MobileNetV2 only, reduced counts (a few minutes)
    python -m benchmarks.explainers --peers               # + pytorch-grad-cam and torchcam, side by side
    python -m benchmarks.explainers --models vgg16 --batch-sizes 1 --threads 1

(or ``PYTHONPATH=. python benchmarks/explainers.py ...`` from the repository root).

What is measured (224 px images, the offline demo photos; random weights, ``weights=none``: the
cost of a pass does not depend on the weights):

* ``forward``: ``model(images)`` under ``torch.no_grad()``, the 1.00x reference. Every method's
  ratio divides the median of its timed calls by the median of plain forward passes timed
  alternately with them (``fwd, method, fwd, method, ...``), so a change of machine load during
  the run moves both. One warm-up call of each first.
* every registered method (``lcam.explainers.EXPLAINERS``), L-CAM with an untrained head (it costs
  the same as a trained one), with ``targets=None`` (each method finds the top-1 class itself).
* ``#FW``: images through the classifier per explained image, counted by
  :class:`lcam.evaluation.ForwardCounter` (a hook on the feature extractor): the evaluation's own
  count, including the pass on the unmodified image.
* perturbation methods at reduced counts for the CPU (printed with the table): Score-CAM at its
  full ``K`` masked passes but one image at batch 1, timed once; SS-CAM at ``n_samples`` 1
  (its cost is ``n_samples`` times that); RISE at a few hundred masks, after a sweep of the chunk
  size (masked images per forward pass) over plain forward passes of pre-built masked images in
  the layout RISE uses; the RISE row then runs at the best chunk, and the target compares RISE
  with those ``N`` plain masked passes.
* ``--peers``: pytorch-grad-cam (``grad-cam``) and torchcam Grad-CAM, Grad-CAM++, XGrad-CAM and
  ScoreCAM at their defaults, on a copy of the same model whose parameters require gradients
  (both libraries need that), hooked at the module whose output is our explained layer (VGG-16:
  ``features.29``, the in-place ReLU after conv5_3, not the conv before it). The maps are
  compared with ours (max abs difference at 224 px) to show the layer is the same. torchcam
  returns feature-grid maps: its timing includes their upsampling to 224 px. Then Score-CAM on
  real trained weights (EfficientNet-Lite0, MobileNetV2 offline), where all-zero channels are
  skipped.

Writes the tables to stdout and to ``benchmarks/results/explainers.md``
(``explainers_quick.md`` with ``--quick``; ``--out`` to choose).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's ScoreCAM prints a progress bar per image

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from lcam.backbones import FrozenClassifier, build_backbone  # noqa: E402
from lcam.evaluation import ForwardCounter  # noqa: E402
from lcam.explainers import EXPLAINERS, build_explainer, missing_settings  # noqa: E402
from lcam.maps import minmax_normalize  # noqa: E402
from lcam.model.heads import AttentionHead  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: random-weight models and their explained layers (the configs' layers: conf/backbone/*.yaml)
MODELS: dict[str, dict[str, Any]] = {
    "mobilenet_v2": {"name": "mobilenet_v2", "layer": "features", "source": "torchvision"},
    "resnet50": {"name": "resnet50", "layer": "layer4", "source": "torchvision"},
    "vgg16": {"name": "vgg16", "layer": "features.29", "source": "torchvision"},
}
#: trained offline models for the Score-CAM comparison (pruning pays off only on trained weights)
REAL_MODELS: dict[str, dict[str, Any]] = {
    "efficientnet_lite0": {"name": "tf_efficientnet_lite0", "layer": "bn2", "source": "timm", "weights": "imagenet"},
    "mobilenet_v2": {"name": "mobilenet_v2", "layer": "features", "source": "torchvision", "weights": "imagenet"},
}
LABELS = {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet-50", "vgg16": "VGG-16", "efficientnet_lite0": "EfficientNet-Lite0"}
CHEAP = ("gradcam", "gradcampp", "xgradcam", "guidedcam", "smoothgradcampp", "lcam")
PERTURBATION = ("scorecam", "sscam1", "sscam2", "rise")
METHOD_LABELS = {
    "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "smoothgradcampp": "Smooth Grad-CAM++", "xgradcam": "XGrad-CAM",
    "guidedcam": "guidance-map CAM", "scorecam": "Score-CAM", "sscam1": "SS-CAM (1)", "sscam2": "SS-CAM (2)",
    "rise": "RISE", "lcam": "L-CAM (explanation)",
}
PEER_METHODS = {  # ours -> (pytorch-grad-cam class, torchcam class)
    "gradcam": ("GradCAM", "GradCAM"),
    "gradcampp": ("GradCAMPlusPlus", "GradCAMpp"),
    "xgradcam": ("XGradCAM", "XGradCAM"),
    "scorecam": ("ScoreCAM", "ScoreCAM"),
}
TARGET_LCAM, TARGET_SCORECAM, TARGET_RISE = 1.10, 1.5, 1.10


# -- timing ------------------------------------------------------------------------------------
def clock(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Timing:
    """Seconds of a method's calls and of the plain forward passes timed alternately with them."""

    method: list[float] = field(default_factory=list)
    forward: list[float] = field(default_factory=list)
    fw_per_image: float = float("nan")
    out: Any = None

    @property
    def seconds(self) -> float:
        return median(self.method)

    @property
    def ratio(self) -> float:
        return median(self.method) / median(self.forward)


def timed(fn: Callable[[], Any], forward: Callable[[], Any], repeats: int, counter: ForwardCounter | None,
          batch: int, warmup: bool = True) -> Timing:
    """``repeats`` calls of ``fn``, each after one plain ``forward``; ``#FW`` counted on the first call.

    With ``warmup`` the first call is not timed (and the counted one); without, the single call is
    timed and counted, between plain forward passes (for methods that cost hundreds of passes).
    """
    t = Timing()
    forward()
    if warmup:
        with counter or contextlib.nullcontext():
            t.out = fn()
    for i in range(repeats):
        t.forward.append(clock(forward))
        if not warmup and i == 0:
            with counter or contextlib.nullcontext():
                start = time.perf_counter()
                t.out = fn()
                t.method.append(time.perf_counter() - start)
        else:
            t.method.append(clock(fn))
    t.forward.append(clock(forward))
    if counter is not None:
        t.fw_per_image = counter.per_image(batch)
    return t


# -- inputs and models -------------------------------------------------------------------------
def load_images(n: int, size: int = 224) -> Tensor:
    """``n`` demo photos ``(n, 3, size, size)`` in [0, 1] (cycled), or seeded noise without them."""
    try:
        from lcam.data.demo import demo_photos
        from lcam.data.transforms import eval_transform

        tf = eval_transform(resize=int(size * 256 / 224), crop=size)
        photos = [tf(p) for _, p in demo_photos()]
    except Exception as err:  # noqa: BLE001 - the benchmark still runs without the photo wheels
        warnings.warn(f"demo photos unavailable ({err}); timing on seeded noise images", stacklevel=2)
        return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return torch.stack([photos[i % len(photos)] for i in range(n)])


def peer_copy(model: FrozenClassifier) -> FrozenClassifier:
    """A copy whose parameters require gradients: both peer libraries differentiate through them."""
    peer = copy.deepcopy(model)
    for p in peer.parameters():
        p.requires_grad_(True)
    return peer


def explained_module(model: nn.Module) -> tuple[str, nn.Module]:
    """Dotted name and module whose output *is* the explained feature map ``F``: the last leaf of the
    feature extractor's chain of ``nn.Sequential``s (VGG-16: the in-place ReLU ``features.29``)."""
    name, module = "feature_extractor", model.feature_extractor
    while isinstance(module, nn.Sequential) and len(module) > 0:
        child_name, module = list(module.named_children())[-1]
        name = f"{name}.{child_name}"
    return name, module


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# -- peers ---------------------------------------------------------------------------------------
def peer_runners(peer: FrozenClassifier, images: Tensor) -> dict[str, dict[str, Callable[[], Tensor]]]:
    """``{our method: {"pytorch-grad-cam": fn, "torchcam": fn}}`` for the installed peers; each ``fn``
    explains ``images`` for the top-1 classes and returns ``(B, H, W)`` maps."""
    runners: dict[str, dict[str, Callable[[], Tensor]]] = {m: {} for m in PEER_METHODS}
    layer_name, layer = explained_module(peer)
    size = images.shape[-2:]
    try:
        import pytorch_grad_cam as pgc

        for ours, (cls_name, _) in PEER_METHODS.items():
            cls = getattr(pgc, cls_name)

            def run_pgc(cls: Any = cls) -> Tensor:
                with cls(model=peer, target_layers=[layer]) as cam:
                    return torch.from_numpy(cam(input_tensor=images, targets=None))

            runners[ours]["pytorch-grad-cam"] = run_pgc
    except ImportError:
        pass
    try:
        import torchcam.methods as tcm

        for ours, (_, cls_name) in PEER_METHODS.items():
            cls = getattr(tcm, cls_name)
            score_cam = ours == "scorecam"

            def run_tc(cls: Any = cls, score_cam: bool = score_cam) -> Tensor:
                with cls(peer, target_layer=layer_name) as cam:
                    if score_cam:
                        with torch.no_grad():
                            scores = peer(images)
                        maps = cam(class_idx=scores.argmax(1).tolist())[0]
                    else:
                        scores = peer(images)
                        maps = cam(class_idx=scores.argmax(1).tolist(), scores=scores)[0]
                    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)

            runners[ours]["torchcam"] = run_tc
    except ImportError:
        pass
    return {m: r for m, r in runners.items() if r}


def map_difference(theirs: Tensor, ours: Tensor) -> float:
    """Max abs difference of two ``(B, H, W)`` map batches after per-sample min-max (torchcam divides
    by ``max + 1e-8``, which shrinks the tiny CAMs of random-weight models)."""
    return float((minmax_normalize(theirs.float()) - minmax_normalize(ours.float())).abs().max())


def peer_versions() -> str:
    out = []
    for dist in ("grad-cam", "torchcam"):
        try:
            from importlib.metadata import version

            out.append(f"{dist} {version(dist)}")
        except Exception:  # noqa: BLE001
            out.append(f"{dist} not installed")
    return ", ".join(out)


# -- the benchmark ---------------------------------------------------------------------------------
@dataclass
class Row:
    model: str
    method: str
    settings: str
    fw: float
    per_batch: dict[int, tuple[float, float]] = field(default_factory=dict)  # batch -> (s/img, ratio)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[Row] = []
        self.peer_rows: list[dict[str, Any]] = []
        self.rise_rows: list[dict[str, Any]] = []
        self.real_rows: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} load {load()}] {msg}", file=sys.stderr, flush=True)

    def settings_for(self, method: str, model_key: str) -> dict[str, Any]:
        a = self.args
        if method == "smoothgradcampp":
            return {"n_samples": a.smooth_samples}
        if method in ("sscam1", "sscam2"):
            return {"n_samples": a.sscam_samples}
        return {}

    def row(self, model_key: str, method: str, settings: str, fw: float) -> Row:
        for r in self.rows:
            if r.model == model_key and r.method == method:
                return r
        r = Row(model_key, method, settings, fw)
        self.rows.append(r)
        return r

    # one model ------------------------------------------------------------------------------
    def run_model(self, key: str) -> None:
        a = self.args
        self.log(f"building {key} (random weights)")
        model = build_backbone({**MODELS[key], "weights": "none"}).eval()
        counter = ForwardCounter(model)
        images_all = load_images(max(a.batch_sizes))
        peer = peer_copy(model) if a.peers else None
        for b in a.batch_sizes:
            images = images_all[:b].contiguous()

            def forward(images: Tensor = images) -> Tensor:
                with torch.no_grad():
                    return model(images)

            for _ in range(2):
                forward()
            ref = timed(forward, forward, a.repeats, None, b)
            self.row(key, "forward", "`model(x)`, no_grad", 1).per_batch[b] = (ref.seconds / b, 1.0)
            for method in a.methods:
                if method in PERTURBATION and b not in a.perturbation_batch_sizes:
                    continue
                if method in PERTURBATION and key not in a.perturbation_models:
                    continue
                if method in ("sscam1", "sscam2") and key not in a.sscam_models:
                    continue
                if method == "rise":
                    self.run_rise(key, model, counter, images, ref.seconds)
                    continue
                cfg = self.settings_for(method, key)
                own = {"head": AttentionHead(model.feature_channels, model.num_classes)} if missing_settings({"name": method}) else {}
                explainer = build_explainer({"name": method, **cfg, **own}, model)  # a checkpoint's method: an untrained head

                def fn(explainer: Any = explainer, images: Tensor = images) -> Tensor:
                    return explainer(images)

                settings = ", ".join(f"{k}={v}" for k, v in cfg.items()) or ("untrained head" if own else "")
                self.log(f"{key} b={b} {method}")
                expensive = method in PERTURBATION
                t = timed(fn, forward, 1 if expensive else a.repeats, counter, b, warmup=not expensive)
                if expensive:  # one call: compare with every plain pass of this batch, not just its two neighbours
                    t.forward += ref.forward
                    settings = ", ".join(filter(None, [settings, f"batch_size={explainer.masked_batch_size(images.device)}"
                                                       + (" (default)" if explainer.batch_size is None else "")]))
                self.row(key, method, settings, t.fw_per_image).per_batch[b] = (t.seconds / b, t.ratio)
                if peer is not None and method in PEER_METHODS and (not expensive or key in a.peer_scorecam_models):
                    self.run_peers(key, method, peer, images, forward, t, expensive)
        del peer

    def run_peers(self, key: str, method: str, peer: FrozenClassifier, images: Tensor, forward: Callable[[], Any],
                  ours: Timing, expensive: bool) -> None:
        a = self.args
        b = images.shape[0]
        runners = peer_runners(peer, images).get(method, {})
        entry: dict[str, Any] = {"model": key, "method": method, "batch": b, "ours": ours.seconds, "layer": explained_module(peer)[0]}
        for lib, fn in runners.items():
            if expensive and b > 1:
                continue
            self.log(f"{key} b={b} {lib} {method}")
            t = timed(fn, forward, 1 if expensive else a.repeats, ForwardCounter(peer), b, warmup=not expensive)
            entry[lib] = (t.seconds, t.ratio, t.fw_per_image, map_difference(t.out, ours.out))
        if len(entry) > 5:
            self.peer_rows.append(entry)

    def run_rise(self, key: str, model: FrozenClassifier, counter: ForwardCounter, images: Tensor,
                 plain_forward: float) -> None:
        """Sweep the chunk size over the ``B x N`` plain passes of pre-built masked images (once per
        chunk), then time RISE at the best chunk alternately with those passes."""
        a = self.args
        b = images.shape[0]
        n = self.rise_masks(key)
        probe = build_explainer({"name": "rise", "n_masks": n}, model)
        masks = probe.masks(tuple(images.shape[-2:]), images.device)
        layout = torch.channels_last if probe.channels_last else torch.contiguous_format

        def floor_at(chunk: int) -> Callable[[], None]:
            # the B x N masked images RISE builds, in its layout, built before timing
            masked = (images.unsqueeze(1) * masks.unsqueeze(1).unsqueeze(0)).flatten(0, 1).contiguous(memory_format=layout)

            def passes() -> None:
                with torch.no_grad():
                    for start in range(0, masked.shape[0], chunk):
                        model(masked[start:start + chunk])
            return passes

        sweep: dict[int, float] = {}
        for chunk in [c for c in a.rise_chunks if c <= n]:
            passes = floor_at(chunk)
            with torch.no_grad():
                model(images[:1].expand(chunk, -1, -1, -1).contiguous(memory_format=layout))  # warm-up at this shape
            self.log(f"{key} RISE sweep: {n} masked passes in chunks of {chunk}")
            sweep[chunk] = clock(passes)
        best = min(sweep, key=sweep.__getitem__)
        explainer = build_explainer({"name": "rise", "n_masks": n, "batch_size": best}, model)
        explainer._masks = probe._masks  # the same masks (same seed): not generated again
        self.log(f"{key} b={b} RISE N={n} at chunk {best}, alternating with the {n} plain masked passes")
        t = timed(lambda: explainer(images), floor_at(best), a.rise_repeats, counter, b, warmup=False)
        self.row(key, "rise", f"n_masks={n}, batch_size={best} (best chunk)", t.fw_per_image).per_batch[b] = (
            t.seconds / b, t.seconds / plain_forward)
        for chunk, seconds in sweep.items():
            self.rise_rows.append({"model": key, "n": n, "chunk": chunk, "sweep": seconds, "best": chunk == best,
                                   "floor": median(t.forward) if chunk == best else None,
                                   "rise": t.seconds if chunk == best else None})

    def rise_masks(self, key: str) -> int:
        return self.args.rise_masks or (256 if key == "mobilenet_v2" else 64) // (2 if self.args.quick else 1)

    # Score-CAM on trained weights -----------------------------------------------------------------
    def run_real(self, key: str) -> None:
        a = self.args
        spec = REAL_MODELS[key]
        try:
            model = build_backbone(spec).eval()
        except Exception as err:  # noqa: BLE001 - weights missing offline: say so and go on
            self.notes.append(f"Score-CAM on trained {LABELS[key]} skipped: {type(err).__name__}: {err}")
            return
        peer = peer_copy(model)
        images_all = load_images(a.real_images)
        for i in range(a.real_images):
            images = images_all[i:i + 1].contiguous()

            def forward(images: Tensor = images) -> Tensor:
                with torch.no_grad():
                    return model(images)

            for _ in range(2):
                forward()
            with torch.no_grad():
                acts = model.features(images)
            live = int(acts.flatten(2).ne(0).any(dim=2).sum())
            entry: dict[str, Any] = {"model": key, "image": i, "live": live, "k": int(acts.shape[1])}
            variants = {"ours": {}, "ours, before": {"channels_last": False, "batch_size": 32}}
            for label, extra in variants.items():
                explainer = build_explainer({"name": "scorecam", **extra}, model)
                self.log(f"trained {key} image {i}: Score-CAM {label}")
                t = timed(lambda e=explainer, x=images: e(x), forward, 1, ForwardCounter(model), 1, warmup=False)
                entry[label] = (t.seconds, t.ratio, t.fw_per_image, t.out)
            for lib, fn in peer_runners(peer, images).get("scorecam", {}).items():
                self.log(f"trained {key} image {i}: {lib} ScoreCAM")
                t = timed(fn, forward, 1, ForwardCounter(peer), 1, warmup=False)
                entry[lib] = (t.seconds, t.ratio, t.fw_per_image, map_difference(t.out, entry["ours"][3]))
            self.real_rows.append(entry)

    # output --------------------------------------------------------------------------------------
    def markdown(self, header: list[str]) -> str:
        a = self.args
        lines = [*header, ""]
        bs = a.batch_sizes
        lines.append("### Cost per explained image (ratio = seconds / one plain forward pass of the same batch)")
        lines.append("")
        cols = " | ".join(f"b={b} s/img | b={b} x fwd" for b in bs)
        lines.append(f"| model | method | settings | #FW/img | {cols} |")
        lines.append("|---|---|---|---:|" + "---:|---:|" * len(bs))
        for r in self.rows:
            cells = []
            for b in bs:
                if b in r.per_batch:
                    s, ratio = r.per_batch[b]
                    cells += [f"{s:.4f}", f"{ratio:.2f}"]
                else:
                    cells += ["-", "-"]
            fw = "1" if r.method == "forward" else (f"{r.fw:.0f}" if r.fw == r.fw else "-")
            lines.append(f"| {LABELS[r.model]} | {METHOD_LABELS.get(r.method, r.method)} | {r.settings} | {fw} | "
                         + " | ".join(cells) + " |")
        if self.rise_rows:
            lines += ["", "### RISE: N plain masked forward passes per chunk size (per image, RISE's memory layout)", "",
                      "Sweep: each chunk timed once. At the best chunk, RISE and the N plain passes are timed "
                      f"alternately ({a.rise_repeats} each, medians).", "",
                      "| model | N | chunk | sweep: N passes s | N passes s (median) | RISE s (median) | RISE / N passes |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for r in self.rise_rows:
                best = r["rise"] is not None
                floor = f"{r['floor']:.3f}" if best else ""
                rise = f"{r['rise']:.3f}" if best else ""
                ratio = f"**{r['rise'] / r['floor']:.3f}**" if best else ""
                chunk = f"**{r['chunk']}**" if r["best"] else str(r["chunk"])
                lines.append(f"| {LABELS[r['model']]} | {r['n']} | {chunk} | {r['sweep']:.3f} | {floor} | {rise} | {ratio} |")
        if self.peer_rows:
            lines += ["", "### Peers on the same model, layer and batch (ours / theirs < 1: ours is faster)", "",
                      "| model | layer hooked by peers | method | batch | ours s | pytorch-grad-cam s | ours / pgc | "
                      "torchcam s | ours / torchcam | #FW/img pgc, torchcam | max abs map diff pgc, torchcam (min-max) |",
                      "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
            for e in self.peer_rows:
                cells, fws, diffs = [], [], []
                for lib in ("pytorch-grad-cam", "torchcam"):
                    if lib in e:
                        s, _, fw, diff = e[lib]
                        cells += [f"{s:.4f}", f"{e['ours'] / s:.2f}"]
                        fws.append(f"{fw:.0f}")
                        diffs.append(f"{diff:.3f}")
                    else:
                        cells += ["-", "-"]
                        fws.append("-")
                        diffs.append("-")
                lines.append(f"| {LABELS[e['model']]} | `{e['layer']}` | {METHOD_LABELS[e['method']]} | {e['batch']} | "
                             f"{e['ours']:.4f} | " + " | ".join(cells) + f" | {', '.join(fws)} | {', '.join(diffs)} |")
        if self.real_rows:
            lines += ["", "### Score-CAM on trained weights (batch 1, one photo per row, each timed once)", "",
                      "Ours at its defaults (all-zero channels skipped, channels-last masked passes, device-default "
                      "chunk), and with this change's two speed-ups off (32 per pass, default layout); "
                      "pytorch-grad-cam at its defaults (16 per pass), torchcam at its defaults (32 per pass).", "",
                      "| model | photo | live / K channels | ours s (#FW) | ours before: batch 32, NCHW s | pytorch-grad-cam s (#FW) | "
                      "pgc / ours | torchcam s (#FW) | torchcam / ours | max abs map diff pgc, torchcam (min-max) |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            for e in self.real_rows:
                ours = e["ours"][0]
                cells = [f"{ours:.2f} ({e['ours'][2]:.0f})", f"{e['ours, before'][0]:.2f}"]
                diffs = []
                for lib in ("pytorch-grad-cam", "torchcam"):
                    if lib in e:
                        s, _, fw, diff = e[lib]
                        cells += [f"{s:.2f} ({fw:.0f})", f"**{s / ours:.2f}**"]
                        diffs.append(f"{diff:.3f}")
                    else:
                        cells += ["-", "-"]
                        diffs.append("-")
                lines.append(f"| {LABELS[e['model']]} | {e['image']} | {e['live']} / {e['k']} | " + " | ".join(cells)
                             + f" | {', '.join(diffs)} |")
        lines += ["", "### Targets", "", "| target | measured | holds |", "|---|---|---|"]
        lines += self.targets()
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def targets(self) -> list[str]:
        out = []
        for r in self.rows:
            if r.method == "lcam" and 8 in r.per_batch:
                ratio = r.per_batch[8][1]
                out.append(f"| L-CAM explanation <= {TARGET_LCAM:.2f}x forward at batch 8, {LABELS[r.model]} | "
                           f"{ratio:.3f}x | {'yes' if ratio <= TARGET_LCAM else 'NO'} |")
        for e in self.peer_rows:
            if e["method"] != "scorecam" and "pytorch-grad-cam" in e:
                ratio = e["ours"] / e["pytorch-grad-cam"][0]
                out.append(f"| {METHOD_LABELS[e['method']]} no slower than pytorch-grad-cam, {LABELS[e['model']]} b={e['batch']} | "
                           f"ours/pgc {ratio:.2f} | {'yes' if ratio <= 1.0 else 'NO'} |")
        score = [(e["model"] + " (random weights)", e["pytorch-grad-cam"][0] / e["ours"]) for e in self.peer_rows
                 if e["method"] == "scorecam" and "pytorch-grad-cam" in e]
        score += [(f"{e['model']} (trained, photo {e['image']})", e["pytorch-grad-cam"][0] / e["ours"][0])
                  for e in self.real_rows if "pytorch-grad-cam" in e]
        for name, speedup in score:
            model, rest = name.split(" ", 1)
            out.append(f"| Score-CAM >= {TARGET_SCORECAM}x faster than pytorch-grad-cam's (defaults), {LABELS[model]} {rest} | "
                       f"{speedup:.2f}x | {'yes' if speedup >= TARGET_SCORECAM else 'NO'} |")
        for r in self.rise_rows:
            if r["rise"] is not None:
                ratio = r["rise"] / r["floor"]
                out.append(f"| RISE within {TARGET_RISE:.2f}x of N masked passes at its best chunk, {LABELS[r['model']]} "
                           f"(N={r['n']}, chunk {r['chunk']}) | {ratio:.3f}x | {'yes' if ratio <= TARGET_RISE else 'NO'} |")
        return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), help="default: all (--quick: mobilenet_v2)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", choices=list(EXPLAINERS), help="default: every registered method (lcam with an untrained head)")
    p.add_argument("--skip", nargs="*", default=[], help="methods to leave out")
    p.add_argument("--quick", action="store_true", help="MobileNetV2 only, reduced counts, fewer repeats")
    p.add_argument("--peers", action="store_true", help="time pytorch-grad-cam / torchcam equivalents and Score-CAM on trained weights")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--repeats", type=int, help="timed calls per cheap method (default 5, --quick 3)")
    p.add_argument("--perturbation-batch-sizes", nargs="+", type=int, default=[1],
                   help="batch sizes for Score-CAM, SS-CAM, RISE (their per-image cost does not depend on it)")
    p.add_argument("--perturbation-models", nargs="+", choices=sorted(MODELS), help="models for Score-CAM / SS-CAM / RISE (default: all timed)")
    p.add_argument("--smooth-samples", type=int, help="Smooth Grad-CAM++ n_samples (default 4, --quick 2)")
    p.add_argument("--sscam-samples", type=int, default=1, help="SS-CAM n_samples (cost scales linearly)")
    p.add_argument("--sscam-models", nargs="*", choices=sorted(MODELS),
                   help="models for SS-CAM (full K x n_samples masked passes; default mobilenet_v2, --quick none)")
    p.add_argument("--peer-scorecam-models", nargs="*", choices=sorted(MODELS), default=["mobilenet_v2"],
                   help="random-weight models on which the peers' ScoreCAM is timed too (--peers; default mobilenet_v2)")
    p.add_argument("--rise-masks", type=int, help="RISE N (default 256 MobileNetV2, 64 ResNet-50 / VGG-16; halved with --quick)")
    p.add_argument("--rise-chunks", nargs="+", type=int, help="chunk sizes swept for RISE (default 4 8 16 32 64)")
    p.add_argument("--rise-repeats", type=int, default=3, help="RISE calls timed at the best chunk")
    p.add_argument("--real-models", nargs="*", choices=sorted(REAL_MODELS), help="trained models for the Score-CAM comparison (--peers)")
    p.add_argument("--real-images", type=int, default=1, help="photos (one at a time) for the trained-weights Score-CAM")
    p.add_argument("--out", help="Markdown file (default benchmarks/results/explainers.md, --quick: explainers_quick.md)")
    args = p.parse_args(argv)
    q = args.quick
    args.models = args.models or (["mobilenet_v2"] if q else list(MODELS))
    args.methods = [m for m in (args.methods or list(EXPLAINERS)) if m not in args.skip]
    args.repeats = args.repeats or (3 if q else 5)
    args.smooth_samples = args.smooth_samples or (2 if q else 4)
    args.rise_chunks = args.rise_chunks or ([4, 16, 64] if q else [4, 8, 16, 32, 64])
    args.perturbation_models = args.perturbation_models or args.models
    if args.sscam_models is None:
        args.sscam_models = [] if q else ["mobilenet_v2"]
    if args.real_models is None:
        args.real_models = (["efficientnet_lite0"] if q else list(REAL_MODELS)) if args.peers else []
    default_out = "explainers_quick.md" if q else "explainers.md"
    args.out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / default_out
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    start, load_start = time.perf_counter(), load()
    bench = Bench(args)
    for key in args.models:
        bench.run_model(key)
    for key in args.real_models:
        bench.run_real(key)
    wall = time.perf_counter() - start
    header = [
        "## Explainer cost benchmark (`benchmarks/explainers.py`)",
        "",
        f"- command: `python -m benchmarks.explainers {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- {time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"`torch.set_num_threads` = {torch.get_num_threads()}, 224 px, random weights unless stated",
        f"- load average (1/5/15 min) at start {load_start}, at end {load()}; wall time {wall / 60:.1f} min",
        f"- peers: {peer_versions() if args.peers else 'not timed (--peers)'}",
        f"- reduced counts: Smooth Grad-CAM++ n_samples={args.smooth_samples}, "
        + (f"SS-CAM n_samples={args.sscam_samples} (on {', '.join(LABELS[m] for m in args.sscam_models)}), "
           if args.sscam_models else "SS-CAM not timed, ")
        + "RISE N as in its row; "
        f"Score-CAM / SS-CAM / RISE at batch {' '.join(map(str, args.perturbation_batch_sizes))} only (their cost per image "
        "does not depend on the batch), Score-CAM and SS-CAM timed once on one photo with all its live channels; "
        f"other methods: median of {args.repeats} calls after a warm-up",
    ]
    text = bench.markdown(header)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"Written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
