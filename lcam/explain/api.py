"""Explain images with L-CAM or any baseline explainer, from Python.

    from lcam import LCAM
    model = LCAM.load_from_checkpoint("run/checkpoints/last.ckpt")
    result = model.explain(images)                 # PIL images, paths, a folder, or (B, 3, H, W) in [0, 1]
    result.maps, result.classes, result.probs      # (N, H, W) in [0, 1], class ids (N,), probabilities (N,)
    model.explain(images, targets=[281, 285])      # one class per image; or targets="topk", k=3
    result.overlays(); result.save("out/")

    import lcam
    lcam.explain("vgg16", images, method="gradcam")   # baselines on any supported classifier

One row of a result is one (image, class) pair: ``N = B`` for ``targets=None``, an int or one class
per image, and ``N = B * k`` for ``targets="topk"`` (rows image-major: image 0's top-1..top-k, then
image 1's ...); ``result.image_index`` maps rows to images.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from lcam.backbones import FrozenClassifier, build_backbone
from lcam.explain.inputs import (
    Images,
    InputError,
    InputItem,
    collect_inputs,
    group_by_shape,
    iter_batches,
    make_transform,
)
from lcam.io import save_image_atomic
from lcam.maps import normalize_then_upsample

LCAM_METHOD = "lcam"
TOPK = "topk"
ClassRef = Union[int, str]
Targets = Union[None, int, str, Sequence[ClassRef], Tensor]
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


# --------------------------------------------------------------------------------------------
# classifiers and methods
# --------------------------------------------------------------------------------------------
def method_choices() -> list[str]:
    """Every method name accepted by ``method=``: ``lcam`` and the registered baselines."""
    from lcam.explainers import EXPLAINERS

    return [LCAM_METHOD, *sorted(n for n in EXPLAINERS if n != LCAM_METHOD)]


def check_method(method: str | Mapping[str, Any]) -> str:
    """The method's name, or :class:`InputError` listing the valid choices."""
    name = method.get("name") if isinstance(method, Mapping) else method
    if not isinstance(name, str) or name.lower() not in method_choices():
        raise InputError(f"Unknown method {name!r}; valid choices: {', '.join(method_choices())}")
    return name.lower()


def backbone_config(name: str) -> dict[str, Any]:
    """The backbone identity for ``name``: the file ``conf/backbone/<name>.yaml`` when there is one
    (e.g. ``vgg16`` -> conv5_3 after its ReLU, the paper's layer), else ``{"name": name}``."""
    path = CONF_DIR / "backbone" / f"{name}.yaml"
    if not path.is_file():
        return {"name": name}
    from omegaconf import OmegaConf

    cfg: dict[str, Any] = {}
    raw = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(raw, dict)
    for parent in raw.pop("defaults", []) or []:
        if isinstance(parent, str) and parent != "_self_":
            cfg.update(backbone_config(parent))
    cfg.update(raw)
    return cfg


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _wrap_module(model: nn.Module) -> FrozenClassifier:
    """A plain classifier module (normalised input -> logits, ImageNet mean/std) -> FrozenClassifier."""
    from lcam.backbones.builders import IMAGENET_MEAN, IMAGENET_STD, imagenet_class_names
    from lcam.backbones.split import SplitError, default_layer, split_model

    model.eval()
    names = [n for n, _ in model.named_children()]
    try:
        candidates = [default_layer(model)]
    except SplitError:
        candidates = []
    candidates += [n for n in reversed(names) if n not in candidates]
    first_error: SplitError | None = None
    for layer in candidates:  # the deepest top-level child that gives (B, K, h, w) maps
        try:
            features, classify = split_model(model, layer)
            break
        except SplitError as err:
            first_error = first_error or err
    else:
        raise SplitError(f"Cannot find a feature layer in {type(model).__name__}: {first_error}; "
                         "wrap it with lcam.backbones.split_model and FrozenClassifier yourself")
    wrapped = FrozenClassifier(features, classify, IMAGENET_MEAN, IMAGENET_STD)
    if wrapped.num_classes == 1000:
        wrapped.class_names = imagenet_class_names()
    return wrapped


def resolve_classifier(model: Any, device: str | torch.device | None = None) -> tuple[Any, FrozenClassifier]:
    """``(lcam_model or None, frozen classifier)`` from anything :func:`explain` accepts.

    Args:
        model: an :class:`~lcam.module.LCAM`; a :class:`FrozenClassifier`; a path to an L-CAM
            checkpoint (``.ckpt``); a backbone name (``"vgg16"``, ``"resnet50"``,
            ``"efficientnet_lite0"``: a ``conf/backbone`` file, or any torchvision/timm model name);
            a backbone identity dict; or a plain ``nn.Module`` classifier that expects ImageNet-normalised
            input (split at its last conv stage).
        device: where to run; modules given are moved there, built ones are created there
            (default: the module's own device; for names and paths, CUDA when available).
    """
    from lcam.checkpoint import load_lcam_checkpoint
    from lcam.module import LCAM

    if isinstance(model, LCAM):
        if device is not None:
            model.to(device)
        return model, model.backbone
    if isinstance(model, FrozenClassifier):
        if device is not None:
            model.to(device)
        return None, model
    if isinstance(model, (str, os.PathLike)):
        text = os.path.expanduser(str(model))
        if text.endswith(".ckpt") or os.path.isfile(text):
            loaded = load_lcam_checkpoint(text, map_location=device or _default_device())
            return loaded, loaded.backbone
        return None, build_backbone(backbone_config(text), device=device or _default_device())
    if isinstance(model, Mapping):
        return None, build_backbone(dict(model), device=device or _default_device())
    if isinstance(model, nn.Module):
        wrapped = _wrap_module(model)
        if device is not None:
            wrapped.to(device)
        return None, wrapped
    raise TypeError(f"Cannot explain with a {type(model).__name__}: pass an LCAM model, a checkpoint path, a backbone name "
                    "or config, a FrozenClassifier or a classifier nn.Module")


class Engine:
    """One method bound to one classifier: logits and maps for batches of images on its device.

    L-CAM reuses the feature maps of its single forward pass for every class it explains; a
    baseline explainer runs its own passes per call.
    """

    def __init__(self, backbone: FrozenClassifier, method: str, lcam_model: Any = None, explainer: Any = None) -> None:
        self.backbone, self.method, self.lcam, self.explainer = backbone, method, lcam_model, explainer
        self.shares_features = lcam_model is not None or _plain_gradient_cam(explainer)

    @property
    def device(self) -> torch.device:
        return self.backbone.mean.device

    @property
    def num_classes(self) -> int:
        return self.lcam.num_classes if self.lcam is not None else self.backbone.num_classes

    @property
    def interpolation(self) -> str:
        spec = self.backbone.spec
        return (spec.interpolation if spec is not None else None) or "bilinear"

    def class_name(self, index: int) -> str:
        return self.backbone.class_name(int(index))

    def prepare(self, images: Tensor) -> Tensor | None:
        """State shared by the logits and every map of a batch: the feature maps (L-CAM and the
        one-pass gradient CAMs), else nothing."""
        if not self.shares_features:
            return None
        with torch.no_grad():
            return self.backbone.features(images)

    def logits(self, images: Tensor, state: Tensor | None) -> Tensor:
        """``(B, C)`` logits of the unmodified images."""
        with torch.no_grad():
            return self.backbone.classify(state) if state is not None else self.backbone(images)

    def maps(self, images: Tensor, state: Tensor | None, targets: Tensor) -> Tensor:
        """``(B, H, W)`` maps in [0, 1] for class ids ``targets`` ``(B,)``."""
        if self.lcam is not None:
            with torch.no_grad():
                return normalize_then_upsample(self.lcam.attention(state, targets), images.shape[-2:]).float()
        if state is not None:  # a one-pass gradient CAM on the features already computed
            with torch.inference_mode(False), torch.enable_grad():
                acts = state.detach().clone().requires_grad_(True)
                score = self.backbone.classify(acts).gather(1, targets.view(-1, 1)).sum()
                (grads,) = torch.autograd.grad(score, acts)
            cam = self.explainer.low_res_map(acts.detach(), grads)
            return normalize_then_upsample(cam, images.shape[-2:]).float().clamp_(0.0, 1.0)
        return self.explainer(images, targets)


def _plain_gradient_cam(explainer: Any) -> bool:
    """Whether ``explainer`` is a one-pass gradient CAM that only redefines its weights (Grad-CAM,
    Grad-CAM++, XGrad-CAM, guidance-map CAM): its map is ``low_res_map(A, dY/dA)`` of one pass, so
    the engine can reuse the features of the pass that gave the logits (one forward pass in all)."""
    try:
        from lcam.explainers.gradient import GradientCAM
    except ImportError:  # pragma: no cover
        return False
    return isinstance(explainer, GradientCAM) and type(explainer).explain is GradientCAM.explain \
        and callable(getattr(explainer, "low_res_map", None))


def make_engine(model: Any, method: str | Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                **settings: Any) -> Engine:
    """Bind a method (``lcam`` or a baseline name / config dict with ``name``) to a classifier.

    ``method=None`` means ``lcam`` for an L-CAM model or checkpoint, ``gradcam`` otherwise.
    ``settings`` go to the baseline explainer (e.g. ``n_masks=1000`` for RISE).
    """
    if method is not None:
        check_method(method)
    lcam_model, backbone = resolve_classifier(model, device)
    name = check_method(method) if method is not None else (LCAM_METHOD if lcam_model is not None else "gradcam")
    if name == LCAM_METHOD:
        if lcam_model is None:
            raise InputError("method 'lcam' needs a trained L-CAM model: pass an LCAM or a checkpoint path "
                             f"(or choose a baseline: {', '.join(method_choices()[1:])})")
        if settings:
            raise InputError(f"method 'lcam' takes no settings, got {sorted(settings)}")
        lcam_model.eval()
        return Engine(backbone, LCAM_METHOD, lcam_model=lcam_model)
    from lcam.explainers import build_explainer

    cfg = dict(method) if isinstance(method, Mapping) else name
    try:
        explainer = build_explainer(cfg, backbone, **settings)
    except ValueError as err:
        raise InputError(str(err)) from None
    return Engine(backbone, name, explainer=explainer)


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------
def class_index(ref: ClassRef, engine: Engine) -> int:
    """A class id from an int or a class name (case-insensitive), range-checked (one-line errors)."""
    n = engine.num_classes
    if isinstance(ref, str) and not ref.strip().lstrip("-").isdigit():
        names = engine.backbone.class_names or []
        lowered = {c.lower(): i for i, c in enumerate(names)}
        if ref.strip().lower() in lowered:
            return lowered[ref.strip().lower()]
        import difflib

        close = difflib.get_close_matches(ref.lower(), list(lowered), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; give a class id 0..%d" % (n - 1)
        raise InputError(f"Unknown class name {ref!r}{hint}")
    value = int(ref)
    if not 0 <= value < n:
        raise InputError(f"Class id {value} out of range: valid class ids are 0..{n - 1}")
    return value


@dataclass
class TargetPlan:
    """Which classes to explain per image; one ``(B,)`` tensor of class ids per row of an image.

    kinds: ``top1``; ``topk`` (``k`` rows); ``fixed`` (``ids[0]`` for every image); ``per_image``
    (``ids[i]`` for image ``i``); ``classes`` (every id of ``ids`` for every image);
    ``label_pred`` (the label where known, else the prediction; then the prediction).
    """

    kind: str = "top1"
    ids: Tensor | None = None
    k: int = 1

    @property
    def rows_per_image(self) -> int:
        return {"topk": self.k, "classes": 0 if self.ids is None else len(self.ids), "label_pred": 2}.get(self.kind, 1)

    def resolve(self, logits: Tensor, positions: Tensor, labels: Tensor) -> list[Tensor]:
        """Class ids per row: ``logits`` ``(B, C)``, ``positions`` ``(B,)`` indices into the whole input,
        ``labels`` ``(B,)`` (-1 unknown) -> ``rows_per_image`` tensors ``(B,)``."""
        dev = logits.device
        pred = logits.argmax(dim=1)
        if self.kind == "top1":
            return [pred]
        if self.kind == "topk":
            top = logits.topk(self.k, dim=1).indices
            return [top[:, r] for r in range(self.k)]
        if self.kind == "label_pred":
            lab = labels.to(dev)
            return [torch.where(lab >= 0, lab, pred), pred]
        assert self.ids is not None
        ids = self.ids.to(dev)
        if self.kind == "fixed":
            return [ids[0].expand(len(pred)).contiguous()]
        if self.kind == "per_image":
            return [ids[positions.to(dev)]]
        if self.kind == "classes":
            return [c.expand(len(pred)).contiguous() for c in ids]
        raise ValueError(f"unknown target plan {self.kind!r}")


def plan_targets(targets: Targets, engine: Engine, num_images: int | None, k: int = 3) -> TargetPlan:
    """Parse ``targets`` (see :func:`explain`) into a :class:`TargetPlan`; one-line errors.

    ``num_images=None`` (a stream of unknown length) accepts no per-image list.
    """
    n = engine.num_classes
    if targets is None:
        return TargetPlan("top1")
    if isinstance(targets, str) and targets.lower() == TOPK:
        if not (isinstance(k, int) and 1 <= k <= n):
            raise InputError(f"k must be an integer in 1..{n} for targets='topk', got {k!r}")
        return TargetPlan("topk", k=int(k))
    if isinstance(targets, (int, str)) or (isinstance(targets, Tensor) and targets.ndim == 0):
        ref = targets.item() if isinstance(targets, Tensor) else targets
        return TargetPlan("fixed", ids=torch.tensor([class_index(ref, engine)]))
    refs = targets.reshape(-1).tolist() if isinstance(targets, Tensor) else list(targets)
    if not refs:
        raise InputError("targets is empty: pass None (top-1), a class id or name, one per image, or 'topk'")
    if len(refs) == 1:
        return TargetPlan("fixed", ids=torch.tensor([class_index(refs[0], engine)]))
    if num_images is None or len(refs) != num_images:
        count = "an unknown number of" if num_images is None else str(num_images)
        raise InputError(f"Got {len(refs)} targets for {count} images: pass one class per image, a single class for all, "
                         "None (top-1) or 'topk'")
    return TargetPlan("per_image", ids=torch.tensor([class_index(r, engine) for r in refs]))


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe form of a class name: ``"tiger cat"`` -> ``"tiger_cat"``."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return (s[:max_len].rstrip("_") or "class").lower()


def map_stats(saliency: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Summary of one ``(H, W)`` map: max, mean and the fraction of pixels above ``threshold``."""
    m = saliency.float()
    return {"map_max": float(m.max()), "map_mean": float(m.mean()), f"map_area{int(threshold * 100)}": float((m > threshold).float().mean())}


def _stack_or_list(items: list[Tensor]) -> Tensor | list[Tensor]:
    if items and all(t.shape == items[0].shape for t in items):
        return torch.stack(items)
    return items


@dataclass
class Explanation:
    """Saliency maps of one method for some images; one row per (image, class) pair.

    Attributes:
        maps: ``(N, H, W)`` float in [0, 1] (a list of ``(H_i, W_i)`` maps when uncropped images of
            different sizes were explained).
        classes: ``(N,)`` explained class ids (the top-1 prediction for ``targets=None``).
        probs: ``(N,)`` softmax probability of the explained class.
        image_index: ``(N,)`` which image each row belongs to.
        ranks: ``(N,)`` position of the row among its image's rows (``targets="topk"``: 0 = top-1).
        images: ``(B, 3, H, W)`` the images as explained, in [0, 1] (or a list, as for ``maps``).
        predicted, predicted_probs: ``(B,)`` the classifier's top-1 class and its probability.
        labels: ``(B,)`` ground-truth ids where known, else -1.
        names: ``B`` image names (file stems / relative paths); files: ``B`` source files.
        class_names: ``N`` names of the explained classes; predicted_names: ``B``.
        method: ``"lcam"``, ``"gradcam"``, ...
    """

    maps: Tensor | list[Tensor]
    classes: Tensor
    probs: Tensor
    image_index: Tensor
    ranks: Tensor
    images: Tensor | list[Tensor]
    predicted: Tensor
    predicted_probs: Tensor
    labels: Tensor
    names: list[str]
    files: list[str]
    class_names: list[str]
    predicted_names: list[str]
    method: str
    positions: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    # -- sizes and rows --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.classes.numel())

    @property
    def num_images(self) -> int:
        return len(self.names)

    def map(self, row: int) -> Tensor:
        """The ``(H, W)`` map of ``row``."""
        return self.maps[row]

    def image(self, row: int) -> Tensor:
        """The ``(3, H, W)`` image of ``row``."""
        return self.images[int(self.image_index[row])]

    def title(self, row: int) -> str:
        """``"<image>: <class> (<prob>)"``."""
        return f"{self.names[int(self.image_index[row])]}: {self.class_names[row]} ({float(self.probs[row]):.2f})"

    def filename(self, row: int) -> str:
        """``<image>_<class id>_<class name>_<method>.png`` (sub-folders of the input are kept)."""
        return f"{self.names[int(self.image_index[row])]}_{int(self.classes[row])}_{slug(self.class_names[row])}_{self.method}.png"

    def stats(self, threshold: float = 0.5) -> list[dict[str, float]]:
        """Per row: ``map_max``, ``map_mean`` and ``map_area50`` (fraction of pixels above ``threshold``)."""
        return [map_stats(self.map(r), threshold) for r in range(len(self))]

    def records(self) -> list[dict[str, Any]]:
        """One dict per row (the CLI's ``results.csv`` columns, without ``status``/``overlay``)."""
        out = []
        for r, st in enumerate(self.stats()):
            b = int(self.image_index[r])
            label = int(self.labels[b])
            out.append({
                "file": self.files[b], "image": self.names[b], "method": self.method, "rank": int(self.ranks[r]) + 1,
                "class_id": int(self.classes[r]), "class_name": self.class_names[r], "probability": round(float(self.probs[r]), 6),
                "predicted_id": int(self.predicted[b]), "predicted_name": self.predicted_names[b],
                "predicted_probability": round(float(self.predicted_probs[b]), 6),
                "label_id": label if label >= 0 else "", **{k: round(v, 6) for k, v in st.items()},
            })
        return out

    # -- pictures ----------------------------------------------------------------------------
    def overlays(self, alpha: float = 0.5, cmap: str = "jet") -> list[Image.Image]:
        """One PIL overlay (image blended with its coloured map) per row."""
        from lcam.viz import overlay_pil

        return [overlay_pil(self.image(r), self.map(r), alpha, cmap) for r in range(len(self))]

    def grid(self, max_rows: int | None = 16) -> Image.Image:
        """image | map | overlay per row (at most ``max_rows``), titled with image, class and probability."""
        from lcam.viz import colorize, overlay, panel_grid, saliency_grid, to_numpy_image

        rows = range(min(len(self), max_rows or len(self)))
        if isinstance(self.maps, Tensor) and isinstance(self.images, Tensor):
            idx = torch.as_tensor(list(rows), dtype=torch.long)
            return saliency_grid(self.images[self.image_index[idx]], self.maps[idx], [self.title(r) for r in rows])
        panels = [[to_numpy_image(self.image(r)), colorize(self.map(r)), overlay(self.image(r), self.map(r))] for r in rows]
        return panel_grid(panels, [[self.title(r), "map", "overlay"] for r in rows])

    def _repr_png_(self) -> bytes:  # shown by Jupyter
        import io

        buf = io.BytesIO()
        self.grid().save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        shape = tuple(self.maps.shape) if isinstance(self.maps, Tensor) else f"{len(self.maps)} maps"
        return f"Explanation(method={self.method!r}, images={self.num_images}, rows={len(self)}, maps={shape})"

    def save(self, directory: str | os.PathLike, alpha: float = 0.5, cmap: str = "jet", maps: bool = False) -> list[Path]:
        """Write one overlay PNG per row into ``directory`` (named by :meth:`filename`), atomically.

        Args:
            maps: also write the raw map as an 8-bit grayscale ``..._map.png``.

        Returns:
            The overlay paths, one per row.
        """
        from lcam.viz import overlay_pil

        out = Path(directory)
        paths = []
        for r in range(len(self)):
            path = out / self.filename(r)
            save_image_atomic(overlay_pil(self.image(r), self.map(r), alpha, cmap), path)
            if maps:
                gray = Image.fromarray((self.map(r).float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8), mode="L")
                save_image_atomic(gray, path.with_name(path.stem + "_map.png"))
            paths.append(path)
        return paths

    # -- assembling ----------------------------------------------------------------------------
    @staticmethod
    def concat(parts: Sequence["Explanation"]) -> "Explanation":
        """Join batch results, ordering images by their position in the input."""
        if not parts:
            raise InputError("Nothing was explained")
        if len(parts) == 1 and bool((parts[0].positions.diff() >= 0).all()):
            return parts[0]
        per_image: list[tuple[int, dict[str, Any]]] = []
        for p in parts:
            for b in range(p.num_images):
                rows = (p.image_index == b).nonzero().flatten().tolist()
                per_image.append((int(p.positions[b]), {
                    "image": p.images[b], "pred": p.predicted[b], "pred_p": p.predicted_probs[b], "label": p.labels[b],
                    "name": p.names[b], "file": p.files[b], "pred_name": p.predicted_names[b],
                    "maps": [p.maps[r] for r in rows], "classes": p.classes[rows], "probs": p.probs[rows], "ranks": p.ranks[rows],
                    "class_names": [p.class_names[r] for r in rows],
                }))
        per_image.sort(key=lambda t: t[0])
        recs = [rec for _, rec in per_image]
        maps = [m for rec in recs for m in rec["maps"]]
        return Explanation(
            maps=_stack_or_list(maps),
            classes=torch.cat([rec["classes"] for rec in recs]),
            probs=torch.cat([rec["probs"] for rec in recs]),
            image_index=torch.cat([torch.full((len(rec["maps"]),), b, dtype=torch.long) for b, rec in enumerate(recs)]),
            ranks=torch.cat([rec["ranks"] for rec in recs]),
            images=_stack_or_list([rec["image"] for rec in recs]),
            predicted=torch.stack([rec["pred"] for rec in recs]),
            predicted_probs=torch.stack([rec["pred_p"] for rec in recs]),
            labels=torch.stack([rec["label"] for rec in recs]),
            names=[rec["name"] for rec in recs], files=[rec["file"] for rec in recs],
            class_names=[c for rec in recs for c in rec["class_names"]],
            predicted_names=[rec["pred_name"] for rec in recs],
            method=parts[0].method,
            positions=torch.tensor([pos for pos, _ in per_image], dtype=torch.long),
        )


def run_batch(engine: Engine, images: Tensor, plans: Sequence[TargetPlan], items: Sequence[InputItem],
              positions: Sequence[int]) -> list[Explanation]:
    """Explain one batch ``(B, 3, H, W)`` in [0, 1] for each plan, sharing one forward pass.

    Results are on the CPU.
    """
    x = images.to(engine.device, non_blocking=True)
    state = engine.prepare(x)
    logits = engine.logits(x, state).float()
    probs_all = logits.softmax(dim=1)
    pred_p, pred = probs_all.max(dim=1)
    pos = torch.as_tensor(list(positions), dtype=torch.long)
    labels = torch.tensor([it.label for it in items], dtype=torch.long)
    b = x.shape[0]
    pred_cpu = pred.cpu()
    pred_names = [engine.class_name(int(c)) for c in pred_cpu]
    x_cpu = x.detach().cpu()
    results = []
    for plan in plans:
        per_rank = plan.resolve(logits, pos, labels)
        r = len(per_rank)
        maps = torch.stack([engine.maps(x, state, t) for t in per_rank], dim=1)  # (B, R, H, W)
        cls = torch.stack(per_rank, dim=1)  # (B, R)
        p = probs_all.gather(1, cls)
        classes = cls.reshape(-1).cpu()
        results.append(Explanation(
            maps=maps.reshape(b * r, *maps.shape[-2:]).detach().float().cpu(),
            classes=classes, probs=p.reshape(-1).detach().cpu(),
            image_index=torch.arange(b).repeat_interleave(r), ranks=torch.arange(r).repeat(b),
            images=x_cpu, predicted=pred_cpu, predicted_probs=pred_p.detach().cpu(), labels=labels,
            names=[it.name for it in items], files=[it.file for it in items],
            class_names=[engine.class_name(int(c)) for c in classes], predicted_names=pred_names,
            method=engine.method, positions=pos,
        ))
    return results


def _tensor_items(images: Tensor) -> tuple[Tensor, list[InputItem]]:
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"An image tensor must be (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if not images.is_floating_point():
        raise InputError(f"An image tensor must be float in [0, 1] (or uint8), got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"Image tensors must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]: pass unnormalised images "
                         "(the backbone normalises them)")
    return images, [InputItem(f"image{i}", Image.new("RGB", (1, 1))) for i in range(images.shape[0])]


def explain_with(engine: Engine, images: Images, targets: Targets = None, k: int = 3, *, resize: int | None = 256,
                 crop: int | None = 224, batch_size: int = 16, labels: Mapping[str, int] | str | None = None,
                 num_workers: int = 0) -> Explanation:
    """:func:`explain` with a ready :class:`Engine` (reuse it across calls)."""
    if isinstance(images, Tensor):
        tensor, items = _tensor_items(images)
        plan = plan_targets(targets, engine, len(items), k)
        parts = []
        for start in range(0, len(items), batch_size):
            chunk = list(range(start, min(start + batch_size, len(items))))
            parts += run_batch(engine, tensor[chunk[0]:chunk[-1] + 1], [plan], [items[i] for i in chunk], chunk)
        result = Explanation.concat(parts)
        result.names = [f"image{i}" for i in range(result.num_images)]
        result.files = [""] * result.num_images
        return result
    items = collect_inputs(images, labels=labels)
    plan = plan_targets(targets, engine, len(items), k)
    transform = make_transform(resize, crop, engine.interpolation)
    parts = []
    for loaded, failed in iter_batches(items, transform, batch_size, num_workers):
        if failed:
            i, err = failed[0]
            raise InputError(f"Cannot read image {items[i].file}: {err}")
        for idx, x in group_by_shape(loaded):
            parts += run_batch(engine, x, [plan], [items[i] for i in idx], idx)
    return Explanation.concat(parts)


def explain(model: Any, images: Images, targets: Targets = None, k: int = 3, method: str | Mapping[str, Any] | None = None, *,
            resize: int | None = 256, crop: int | None = 224, batch_size: int = 16, device: str | torch.device | None = None,
            labels: Mapping[str, int] | str | None = None, **settings: Any) -> Explanation:
    """Saliency maps of ``images`` for a classifier, with L-CAM or a baseline explainer.

    Args:
        model: an L-CAM model or checkpoint path, or any classifier for the baselines: a backbone
            name (``"vgg16"``, ``"resnet50"``, ``"efficientnet_lite0"``, any torchvision/timm name),
            a backbone config dict, a :class:`~lcam.backbones.FrozenClassifier` or an ``nn.Module``
            (see :func:`resolve_classifier`).
        images: a ``(B, 3, H, W)`` (or ``(3, H, W)``) tensor in [0, 1], used as is; or PIL images,
            image files, folders, glob patterns or ``"demo"`` (one, a list, or a mapping
            ``name -> image`` whose names are used in outputs), which are resized so
            their shorter side is ``resize``, centre-cropped to ``crop`` (the backbone's evaluation
            transform and interpolation). ``crop=None`` keeps the whole image (shorter side
            ``resize``); ``resize=None, crop=None`` keeps the file's own size.
        targets: ``None`` (top-1 class), a class id or name for every image, one id/name per image,
            or ``"topk"`` (the ``k`` most probable classes of each image, ``k`` rows per image).
        method: ``"lcam"`` (default for L-CAM models) or a baseline: ``gradcam`` (default for plain
            classifiers), ``gradcampp``, ``smoothgradcampp``, ``xgradcam``, ``guidedcam``,
            ``scorecam``, ``sscam1``, ``sscam2``, ``rise``; or a dict with ``name`` and settings.
        batch_size: images per forward pass.
        device: where to run (see :func:`resolve_classifier`).
        labels: ground-truth ids by image name, or a ``name label`` list file (fills ``.labels``).
        **settings: baseline settings (e.g. ``n_masks=2000`` for RISE).

    Returns:
        An :class:`Explanation`.

    Raises:
        InputError (a ``ValueError``): unknown method, class id out of range, no images, an
        unreadable file, ... with a one-line message.
    """
    engine = make_engine(model, method, device, **settings)
    return explain_with(engine, images, targets, k, resize=resize, crop=crop, batch_size=batch_size, labels=labels)

