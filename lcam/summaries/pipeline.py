"""The visual-summaries pipeline of one class ("Understanding Deep Architectures by Visual Summaries").

    from lcam.summaries import summarise
    report = summarise("photos/tench/", "efficientnet_lite0", output_dir="summaries/tench")
    report.n_summaries, report.summaries[0]["members"]

Steps ("Understanding Deep Architectures by Visual Summaries", https://arxiv.org/abs/1801.09103;
one module each): crisp masks per image (:mod:`.masks`, cached and
resumable) -> regions (:mod:`.regions`) -> selective-search proposals of the whole image, the top
``proposals.top_k`` of each (:mod:`.proposals`) -> those matched in context, every pair of images
(:mod:`.matching`) -> the matched proposals kept inside regions (the paper's 75% and area-ratio-2
rules), their similarity matrix read from the in-context scores -> Affinity Propagation and the SSIM
filter (:mod:`.clustering`) -> one sheet per summary (:mod:`.render`). ``matching.context: parts``
restores the earlier order (keep the parts first, match only them).

Written to ``output_dir``: ``masks/`` (one ``.npz`` per image), ``summary_<k>.png``,
``overview.png`` (a row per summary), ``summaries.json`` (class, settings, timings, every summary
with its members) and ``summaries.csv`` (one row per member part).
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lcam.data.transforms import eval_transform
from lcam.explain.classifier import resolve_classifier
from lcam.explain.inputs import Images, collect_inputs, iter_batches
from lcam.explain.state import borrowed
from lcam.explain.stream import progress_bar
from lcam.explainers import build_explainer
from lcam.explainers.targets import ClassSpace
from lcam.runtime.io import InputError, atomic_write, save_image_atomic, write_csv_atomic
from lcam.summaries.clustering import affinity_clusters, filter_clusters, global_median_ssim
from lcam.summaries.masks import MaskCache, crisp_masks
from lcam.summaries.matching import part_patch, similarity_matrix
from lcam.summaries.proposals import Part, parts_in_regions, selective_search, top_proposals
from lcam.summaries.regions import find_regions
from lcam.summaries.render import part_panel, summary_sheet
from lcam.viz import panel_grid

log = logging.getLogger(__name__)

CSV_COLUMNS = ["summary", "part", "file", "x1", "y1", "x2", "y2", "region", "exemplar", "summary_ssim"]


@dataclass
class Settings:
    """Every setting of the pipeline (``conf/summaries.yaml`` holds the same keys and defaults).

    Attributes:
        crisp: settings of the ``crisp`` explainer (300 + 150 iterations by default).
        region_threshold, min_region_area: see :func:`~lcam.summaries.regions.find_regions`.
        proposals: ``mode`` (fast | quality), ``max_proposals``, ``top_k`` (proposals per image matched
            in context, :func:`~lcam.summaries.proposals.top_proposals`) and the filters of
            :func:`~lcam.summaries.proposals.parts_in_regions`.
        matching: ``context`` (``image``: match the top-K proposals of the whole images, then keep
            the parts; ``parts``: keep the parts, then match only them, the earlier pipeline,
            which ignores ``top_k``), ``patch``, ``neighbours``, ``sigma`` (:mod:`~lcam.summaries.matching`).
        clustering: ``damping``, ``preference``, ``min_images``, ``ssim_ratio``, ``ssim_patch``.
        min_agreement: the smallest share of images whose top-1 class is the summarised class
            when ``target`` is not given (below it the folder is "mixed classes").
        min_images: the fewest readable images a class needs.
    """

    crisp: dict[str, Any] = field(default_factory=dict)
    region_threshold: float = 0.3
    min_region_area: float = 0.005
    proposals: dict[str, Any] = field(default_factory=lambda: {
        "mode": "fast", "max_proposals": 2000, "top_k": 500, "min_overlap": 0.75, "area_ratio": 2.0, "duplicate_overlap": 0.5,
        "min_side": 8, "max_area": 0.5, "max_parts": 20})
    matching: dict[str, Any] = field(default_factory=lambda: {
        "context": "image", "patch": 32, "neighbours": 5, "sigma": 0.15})
    clustering: dict[str, Any] = field(default_factory=lambda: {
        "damping": 0.7, "preference": None, "min_images": 2, "ssim_ratio": 0.9, "ssim_patch": 64})
    min_agreement: float = 0.5
    min_images: int = 3

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "Settings":
        """Defaults updated by ``values`` (nested dicts merge); unknown keys are an error naming the valid ones."""
        s = cls()
        for key, value in dict(values or {}).items():
            if not hasattr(s, key):
                raise InputError(f"Unknown summaries setting {key!r}; valid: {sorted(asdict(s))}")
            current = getattr(s, key)
            if isinstance(current, dict):
                unknown = set(value or {}) - set(current) if key != "crisp" else set()
                if unknown:
                    raise InputError(f"Unknown {key} setting(s) {sorted(unknown)}; valid: {sorted(current)}")
                current.update(dict(value or {}))
            else:
                setattr(s, key, type(current)(value))
        return s


@dataclass
class SummaryReport:
    """What :func:`summarise` found for one class.

    Attributes:
        class_id, class_name: the summarised class.
        images: names of the images used (readable ones); skipped: ``(file, error)`` of the others.
        summaries: per surviving summary, ``{"index", "members": [{"file", "box", "region"}], "images",
            "ssim", "figure"}``.
        n_parts, n_clusters: parts clustered, clusters before the filters; global_ssim: the class median.
        n_proposals: proposals matched (in context: at most ``top_k`` per image with parts; with
            ``matching.context: parts``: the parts).
        mean_drop: mean crisp-mask drop (the paper's metric); seconds: wall time per step.
    """

    class_id: int
    class_name: str
    images: list[str]
    summaries: list[dict[str, Any]]
    n_parts: int
    n_clusters: int
    global_ssim: float
    mean_drop: float
    seconds: dict[str, float]
    output_dir: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_proposals: int = 0

    @property
    def n_summaries(self) -> int:
        return len(self.summaries)


def _load(items: list, resize: int | None, crop: int | None, interpolation: str | None) -> tuple[list, torch.Tensor, list]:
    """Readable items, their images ``(N, 3, H, W)`` and ``(file, error)`` of unreadable ones."""
    keep, xs, bad = [], [], []
    for loaded, failed in iter_batches(items, eval_transform(resize, crop, interpolation), batch_size=16):
        for i, err in failed:
            log.warning("skipped %s: %s", items[i].file, err)
            bad.append((items[i].file, err))
        for i, x in loaded:
            keep.append(items[i])
            xs.append(x)
    if not xs:
        raise InputError("None of the images could be read")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise InputError(f"Images of different sizes {sorted(shapes)}: set crop=<pixels> so they share one size")
    return keep, torch.stack(xs), bad


def _choose_class(probs: torch.Tensor, classes: ClassSpace, target: Any, min_agreement: float) -> int:
    """The summarised class: ``target`` (id or name), else the majority top-1 (refused below ``min_agreement``)."""
    if target is not None:
        return classes.index(target)
    top1 = probs.argmax(1).tolist()
    counts = Counter(top1)
    best, n = counts.most_common(1)[0]
    if n / len(top1) < min_agreement:
        label = (lambda c: classes.names[c] if classes.names else str(c))
        shares = ", ".join(f"{label(c)} {k / len(top1):.0%}" for c, k in counts.most_common(3))
        raise InputError(f"Images of mixed classes: the classifier's top-1 is {shares} of {len(top1)} images; "
                         "summarise one class per folder, or name it with target=<class id or name>")
    return int(best)


def summarise(inputs: Images, model: Any = "efficientnet_lite0", output_dir: str | Path = "summaries",
              target: Any = None, settings: Settings | Mapping[str, Any] | None = None, device: Any = None,
              resize: int | None = 224, crop: int | None = 224, batch_size: int = 8, seed: int = 0,
              progress: bool = True, mask_dir: str | Path | None = None) -> SummaryReport:
    """Visual summaries of one class from a folder (or list) of its images.

    Args:
        inputs: a folder, files, a glob (see :func:`lcam.explain.inputs.collect_inputs`).
        model: a backbone preset or name, a config, a :class:`~lcam.backbones.FrozenClassifier` or a
            classifier ``nn.Module`` (left unchanged).
        output_dir: where masks, sheets and tables go; a rerun reuses the masks found there.
        target: the class (id or name); ``None``: the classifier's majority top-1 over the images.
        settings: :class:`Settings` or a mapping of its fields.
        resize, crop: shorter side and centre crop of every image (pixels).
        batch_size: images whose crisp masks are optimised together.
        seed: selective search's ranking's, Affinity Propagation's and the SSIM sampling's seed.
        mask_dir: where the crisp masks are cached (default ``output_dir/masks``); runs that differ only
            after the masks (e.g. ``matching.context``) can share one.

    Raises:
        InputError: too few readable images, mixed classes, masks cached with other settings.
    """
    s = settings if isinstance(settings, Settings) else Settings.from_mapping(settings)
    _context_mode(s.matching["context"])  # before the minutes of crisp masks
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    items = collect_inputs(inputs, exclude=[out])
    if len(items) < s.min_images:
        raise InputError(f"Found {len(items)} image(s) in {inputs}; the clustering needs at least {s.min_images} "
                         "images of one class")
    resolved = resolve_classifier(model, device)
    with borrowed(*resolved.caller_modules):
        backbone = resolved.backbone
        keep, images, skipped = _load(items, resize, crop, backbone.spec.interpolation if backbone.spec else None)
        if len(keep) < s.min_images:
            raise InputError(f"Only {len(keep)} of {len(items)} images could be read; the clustering needs at least "
                             f"{s.min_images}")
        names = [it.name for it in keep]
        dev = next(backbone.parameters()).device
        images = images.to(dev)
        classes = ClassSpace.of(backbone.num_classes, backbone.class_names)
        with torch.no_grad():
            probs = torch.cat([backbone(images[i:i + 32]).softmax(1) for i in range(0, len(images), 32)])
        cls = _choose_class(probs, classes, target, s.min_agreement)
        class_name = classes.names[cls] if classes.names else str(cls)
        spec = backbone.spec.to_dict() if backbone.spec is not None else {"model": type(backbone.model).__name__}
        cache = MaskCache(Path(mask_dir).expanduser() if mask_dir is not None else out / "masks", {"backbone": spec, "class": cls, "size": list(images.shape[-2:]),
                                          "crisp": s.crisp})
        explainer = build_explainer({"name": "crisp", **s.crisp}, backbone)
        seconds["load"] = time.perf_counter() - t0
        t = time.perf_counter()
        bar = progress_bar(len(keep), f"crisp masks ({class_name})", progress, delay=0.0)
        try:
            results = crisp_masks(explainer, images, names, torch.full((len(keep),), cls, device=dev), probs[:, cls],
                                  cache, batch_size, report=bar.update)
        finally:
            bar.close()
        seconds["masks"] = time.perf_counter() - t
    return _summaries_from_masks(keep, images.cpu(), results, cls, class_name, s, out, seed, seconds, skipped)


def _summaries_from_masks(keep: list, images: torch.Tensor, results: list, cls: int, class_name: str, s: Settings,
                          out: Path, seed: int, seconds: dict[str, float], skipped: list) -> SummaryReport:
    """Steps 2-5 on computed masks; writes the sheets and tables."""
    t = time.perf_counter()
    rgb = [x.permute(1, 2, 0).numpy().astype(np.float64) for x in images]  # (H, W, 3) in [0, 1]
    gray = [im @ np.array([0.299, 0.587, 0.114]) for im in rgb]
    prop = dict(s.proposals)
    mode, max_props, top_k = prop.pop("mode"), prop.pop("max_proposals"), prop.pop("top_k")
    match = dict(s.matching)
    in_context = _context_mode(match.pop("context")) == "image"
    regions, parts, context = [], [], {}
    for i, (im, res) in enumerate(zip(rgb, results)):
        regs = find_regions(res.mask, i, s.region_threshold, s.min_region_area)
        regions.append(regs)
        if regs:
            boxes = selective_search((im * 255).round().astype(np.uint8), mode, max_props, seed=seed)
            if in_context:
                boxes = top_proposals(boxes, im.shape[:2], top_k, prop["min_side"], prop["max_area"])
            kept_here = parts_in_regions(boxes, regs, **prop)
            if kept_here:
                context[i] = boxes
            parts.extend(kept_here)
    seconds["proposals"] = time.perf_counter() - t
    t = time.perf_counter()
    sim = similarity_matrix(gray, parts, context=context if in_context else None, **match)
    n_proposals = sum(len(b) for b in context.values()) if in_context else len(parts)
    seconds["matching"] = time.perf_counter() - t
    t = time.perf_counter()
    part_images = np.array([p.image for p in parts], dtype=np.int64)
    c = dict(s.clustering)
    clusters = affinity_clusters(sim, part_images, c["preference"], c["damping"], seed=seed)
    patches = np.stack([part_patch(gray[p.image], p, int(c["ssim_patch"])) for p in parts]) if parts else np.zeros((0, 1, 1))
    global_ssim = global_median_ssim(patches, part_images, seed=seed)
    kept = filter_clusters(clusters, patches, global_ssim, int(c["min_images"]), float(c["ssim_ratio"]), seed=seed)
    seconds["clustering"] = time.perf_counter() - t
    names = [it.name for it in keep]
    summaries = _write(out, rgb, regions, parts, kept, names, class_name, [it.file for it in keep])
    report = SummaryReport(cls, class_name, names, summaries, len(parts), len(clusters), global_ssim,
                           float(np.mean([r.drop for r in results])), seconds, str(out), skipped, n_proposals)
    with atomic_write(out / "summaries.json", "w") as f:
        json.dump({**asdict(report), "settings": asdict(s), "n_summaries": report.n_summaries,
                   "clusters_dropped": [{"members": len(k.members), "images": len(k.images), "reason": k.reason}
                                        for k in clusters if not k.kept]}, f, indent=1, default=float)
    return report


def _context_mode(value: Any) -> str:
    """``matching.context``, checked."""
    if value not in ("image", "parts"):
        raise InputError(f"Unknown matching context {value!r}; valid: ['image', 'parts']")
    return str(value)


def _write(out: Path, rgb: list, regions: list, parts: list[Part], kept: list, names: list[str], class_name: str,
           files: list[str]) -> list[dict[str, Any]]:
    """Sheets, overview and CSV of the kept clusters; returns their JSON records."""
    records, rows, overview, overview_titles = [], [], [], []
    for k, cl in enumerate(kept):
        figure = f"summary_{k}.png"
        title = f"{class_name}: summary {k} ({len(cl.members)} parts, {len(cl.images)} images, SSIM {cl.ssim:.2f})"
        save_image_atomic(summary_sheet(rgb, regions, parts, cl.members, title, names), out / figure)
        members = [{"file": files[parts[m].image], "box": list(parts[m].box), "region": parts[m].region} for m in cl.members]
        records.append({"index": k, "members": members, "images": len(cl.images), "ssim": cl.ssim, "figure": figure})
        for j, m in enumerate(cl.members):
            rows.append({"summary": k, "part": j, "file": files[parts[m].image], **dict(zip(("x1", "y1", "x2", "y2"), parts[m].box)),
                         "region": parts[m].region, "exemplar": int(m == cl.exemplar), "summary_ssim": round(cl.ssim, 4)})
        shown = cl.members[:6]
        overview.append([part_panel(rgb[parts[m].image], regions[parts[m].image][parts[m].region], parts[m]) for m in shown])
        overview_titles.append([f"summary {k}" if j == 0 else "" for j in range(len(shown))])
    write_csv_atomic(out / "summaries.csv", rows, CSV_COLUMNS)
    if overview:
        save_image_atomic(panel_grid(overview, overview_titles, suptitle=f"{class_name}: {len(kept)} summaries", cell=1.6),
                          out / "overview.png")
    return records
