"""Model parameter randomisation: the sanity checks of Adebayo et al. (2018), one value per image and step.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018
(https://arxiv.org/abs/1810.03292). A map that explains the *model* must change when the model's
learned parameters are replaced by random ones; a map that stays the same (an edge detector, a
method that mostly reflects the image) fails the check. For every image and every randomisation
step, :class:`ModelRandomisation` explains the image again (same class) with the classifier's
parameters partly re-initialised and compares that map with the method's map on the intact model,
by the paper's three similarities (:mod:`lcam.metrics.similarity`): Spearman rank correlation, SSIM
and the Pearson correlation of the maps' HOG features.

**Units.** The classifier's parameterised modules grouped into blocks (:func:`randomisation_units`):
for a :class:`~lcam.backbones.frozen.FrozenClassifier`, the ``classify`` head and the blocks of the
feature extractor. Plain containers (``nn.Sequential`` / ``ModuleList`` / ``ModuleDict``) are opened
``depth`` levels deep (default 1: EfficientNet-Lite0 gives its stem, its 7 stages and its head
conv; VGG-16 its 13 convolutions; ResNet-50 its bottlenecks) and a unit made only of normalisation
layers joins the unit below it (a BatchNorm goes with its convolution). Units are ordered top down
(the output first); ``max_steps`` keeps the top ones.

**Steps** (their labels name the record columns ``Rand/<step>/<measure>``):

* ``cascade:<unit>``: every unit from the top down to and including ``<unit>`` is random (the
  paper's cascading randomisation);
* ``independent:<unit>``: only ``<unit>`` is random (the paper's independent randomisation);
* ``head``: for a method with a learned head of its own (L-CAM, ``explainer.head``): the head is
  random and the classifier intact. The cascade and independent steps of such a method randomise
  the frozen classifier and keep the trained head.

**Re-initialisation** (``init``): ``"default"`` re-draws every learned parameter as the layer's own
``reset_parameters()`` would (PyTorch's default init: Kaiming-uniform convolutions and linear
layers, BatchNorm scale 1 and shift 0; the same as Quantus' ``MPRT``); ``"normal"`` draws every
parameter from ``N(0, std^2)``. Buffers (BatchNorm running statistics) keep their trained values.
Each module's draw is seeded from ``(seed, module name)`` alone, on the CPU: a unit gets the same
random weights at every step, batch, device and process, whichever other units are random.

**Copies (where and how many).** The caller's classifier and explainer are never changed (not
their parameters, modes, ``requires_grad`` flags or attributes). One working copy of the
classifier is made per (classifier, device, randomisation settings) and shared by the metrics of
every method; the random values of every unit are drawn once and kept. A step copies the values
of the units whose state changes into the working copy (cascade steps add one unit each,
independent steps swap two), so each step of each batch costs one explanation and a ``memcpy`` of
a few blocks, not a model copy. Memory: two extra copies of the classifier's parameters (the
working copy and the random values); the alternative, re-drawing a unit's values at every step of
every batch, saves one copy and costs an initialisation of the whole model twice per batch
(benchmarks/sanity.py). The explainer is re-bound to the working copy once
(:func:`rebind`): a shallow copy of the explainer with its ``model`` (and for the head step its
``head``) replaced, so it keeps every setting of the original (equal to
``build_explainer(settings, copy)``, tested) and reuses its model-independent caches (RISE's masks).

**Similarity of a map to a constant one.** A rank correlation of a constant map is undefined. When
the randomised model's map is constant (typically all zero: a gradient CAM's ReLU leaves nothing)
and the intact one is not, the map changed completely: Spearman and HOG similarity are 0. When the
intact map is constant there is nothing to compare: NaN (left out of the means). SSIM is defined
for constant maps and kept as computed.

Example::

    metric = ModelRandomisation(model, GradCAM(model), max_steps=4)
    values = metric.per_image(images, maps, targets)    # {"Rand/cascade:classify/spearman": (B,), ...}
"""
from __future__ import annotations

import copy
import hashlib
import os
import uuid
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lcam.metrics._settings import check_choice, check_float, check_int, check_optional_int
from lcam.metrics.per_image import PerImageMetric
from lcam.metrics.similarity import hog_similarity, spearman, ssim_similarity

#: the step kinds, in column order
KINDS = ("cascade", "independent", "head")
#: the similarity measures (Adebayo et al.'s three), in column order
MEASURES = ("spearman", "ssim", "hog")
#: re-initialisations
INITS = ("default", "normal")
#: record column prefix
PREFIX = "Rand"

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def column_name(step: str, measure: str) -> str:
    """The record column of a step and a measure: ``Rand/<step>/<measure>``."""
    return f"{PREFIX}/{step}/{measure}"


@dataclass(frozen=True)
class Unit:
    """A block randomised as a whole: its label and the qualified names of its modules in the model."""

    label: str
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One randomisation step: ``kind`` (:data:`KINDS`), its label, the units it makes random."""

    kind: str
    label: str
    units: tuple[Unit, ...] = ()


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _blocks(module: nn.Module, prefix: str, depth: int) -> list[tuple[str, nn.Module]]:
    """Parameterised children in forward order, plain containers opened ``depth`` levels deep."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if not _has_params(child):
            continue
        full = f"{prefix}.{name}" if prefix else name
        if depth > 0 and isinstance(child, _CONTAINERS) and sum(_has_params(c) for c in child.children()) > 1:
            out += _blocks(child, full, depth - 1)
        else:
            out.append((full, child))
    return out


def _only_norms(module: nn.Module) -> bool:
    return all(isinstance(m, _NORMS) for m in module.modules() if next(m.parameters(recurse=False), None) is not None)


def _group(blocks: list[tuple[str, nn.Module]], shown: Any) -> list[Unit]:
    """Units in forward order; a normalisation-only block joins the block before it."""
    units: list[list[str]] = []
    for name, module in blocks:
        if units and _only_norms(module):
            units[-1].append(name)
        else:
            units.append([name])
    return [Unit(shown(u[0]), tuple(u)) for u in units]


def randomisation_units(model: nn.Module, depth: int = 1) -> list[Unit]:
    """The classifier's units, **top down** (the output's unit first).

    For a :class:`~lcam.backbones.frozen.FrozenClassifier` (``feature_extractor`` + ``classifier_head``):
    the head's units (labelled ``classify`` when there is one, else ``classify.<path>``) above the
    feature extractor's (``features.<path>``); any other module: its own blocks, by their names.

    Args:
        model: the classifier (read only).
        depth: levels of plain containers opened (0: the direct children only).
    """
    features, head = getattr(model, "feature_extractor", None), getattr(model, "classifier_head", None)
    if isinstance(features, nn.Module) and isinstance(head, nn.Module):
        feat = _group(_blocks(features, "feature_extractor", depth),
                      lambda n: "features." + n.split(".", 1)[1])
        head_blocks = _blocks(head, "classifier_head", depth)
        top = _group(head_blocks, lambda n: "classify." + n.split(".", 1)[1])
        if len(top) == 1:
            top = [Unit("classify", top[0].modules)]
        units = feat + top
    else:
        units = _group(_blocks(model, "", depth), str)
    if not units:
        raise ValueError(f"{type(model).__name__} has no parameterised modules to randomise")
    return units[::-1]


def randomisation_steps(units: Sequence[Unit], kinds: Iterable[str] = ("cascade", "independent"),
                        head: bool = False) -> list[Step]:
    """The steps of ``kinds`` over ``units`` (top down), then ``head`` when ``head`` is true and asked for."""
    kinds = list(kinds)
    steps: list[Step] = []
    if "cascade" in kinds:
        steps += [Step("cascade", f"cascade:{u.label}", tuple(units[: k + 1])) for k, u in enumerate(units)]
    if "independent" in kinds:
        steps += [Step("independent", f"independent:{u.label}", (u,)) for u in units]
    if head and "head" in kinds:
        steps.append(Step("head", "head"))
    return steps


def _seed_of(seed: int, name: str) -> int:
    return zlib.crc32(f"{int(seed)}:{name}".encode()) & 0x7FFFFFFF


def random_parameters(module: nn.Module, name: str, init: str = "default", std: float = 0.01,
                      seed: int = 0) -> dict[str, Tensor]:
    """Seeded random values of ``module``'s own parameters (not its children's), on the CPU.

    Args:
        module: read only; a CPU copy is re-initialised.
        name: the module's qualified name (part of the seed).
        init: ``"default"``: ``module.reset_parameters()`` (``"normal"`` where it has none);
            ``"normal"``: ``N(0, std^2)``.

    Returns:
        parameter name -> float tensor of the parameter's shape (CPU).
    """
    own = dict(module.named_parameters(recurse=False))
    if init == "default" and hasattr(module, "reset_parameters"):
        with torch.inference_mode(False), torch.no_grad(), torch.random.fork_rng(devices=[]):
            clone = copy.deepcopy(module).cpu()
            torch.manual_seed(_seed_of(seed, name))
            clone.reset_parameters()
            return {k: v.detach().clone() for k, v in clone.named_parameters(recurse=False) if k in own}
    out = {}
    for k, p in own.items():
        g = torch.Generator().manual_seed(_seed_of(seed, f"{name}.{k}"))
        with torch.inference_mode(False):
            out[k] = torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(std).to(p.dtype)
    return out


def _param_modules(root: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """The modules with parameters of their own inside the named modules of ``root``."""
    out = []
    for name in names:
        sub = root.get_submodule(name) if name else root
        for rel, m in sub.named_modules():
            if next(m.parameters(recurse=False), None) is not None:
                out.append((f"{name}.{rel}".strip(".") if rel else name, m))
    return out


class RandomisedCopy:
    """One working copy of a classifier whose units are set to random or trained values per step.

    Made outside inference mode (its tensors can be saved for backward, as gradient CAMs need),
    on ``device``; the caller's ``model`` is only read. :meth:`apply` sets the copy so that exactly
    ``units`` are random, copying only the units whose state changes.
    """

    def __init__(self, model: nn.Module, device: torch.device, init: str, std: float, seed: int) -> None:
        with torch.inference_mode(False), torch.no_grad():
            self.model = copy.deepcopy(model).to(device)
        self.source = weakref.ref(model)
        self.init, self.std, self.seed = init, std, seed
        self._random: dict[str, dict[str, dict[str, Tensor]]] = {}  # unit label -> module -> param -> values
        self._state: set[Unit] = set()

    def _values(self, unit: Unit) -> dict[str, dict[str, Tensor]]:
        if unit.label not in self._random:
            device = next(self.model.parameters()).device
            with torch.inference_mode(False), torch.no_grad():
                self._random[unit.label] = {
                    name: {k: v.to(device) for k, v in random_parameters(m, name, self.init, self.std, self.seed).items()}
                    for name, m in _param_modules(self.model, unit.modules)}
        return self._random[unit.label]

    def apply(self, units: Iterable[Unit]) -> nn.Module:
        """The working copy with exactly ``units`` random (the others as trained); returns it."""
        wanted = set(units)
        source = self.source()
        if source is None:
            raise RuntimeError("the classifier of this randomised copy no longer exists")
        with torch.inference_mode(False), torch.no_grad():
            for unit in self._state - wanted:  # back to the trained values, read from the caller's model
                for name, _ in _param_modules(self.model, unit.modules):
                    mine, theirs = self.model.get_submodule(name), source.get_submodule(name)
                    for k, p in mine.named_parameters(recurse=False):
                        p.copy_(getattr(theirs, k))
            for unit in wanted - self._state:
                for name, values in self._values(unit).items():
                    mine = self.model.get_submodule(name)
                    for k, v in values.items():
                        getattr(mine, k).copy_(v)
        self._state = wanted
        return self.model


#: (classifier) -> {(device, init, std, seed): RandomisedCopy}, shared by the metrics of every method
_COPIES: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, RandomisedCopy]]" = weakref.WeakKeyDictionary()


def randomised_copy(model: nn.Module, device: torch.device, init: str = "default", std: float = 0.01,
                    seed: int = 0) -> RandomisedCopy:
    """The shared working copy of ``model`` for these settings on ``device`` (made on first use)."""
    per_model = _COPIES.setdefault(model, {})
    key = (str(torch.device(device)), init, float(std), int(seed))
    if key not in per_model:
        per_model[key] = RandomisedCopy(model, torch.device(device), init, std, seed)
    return per_model[key]


def rebind(explainer: nn.Module, **modules: nn.Module) -> nn.Module:
    """A shallow copy of ``explainer`` with the named submodules replaced (``model=...``, ``head=...``).

    Every setting and attribute of the original is kept; containers (its submodule, parameter,
    buffer and hook tables, caches such as RISE's masks) are copied one level deep, so the copy
    reuses the cached tensors but nothing done to or by the copy reaches the original.

    Raises:
        ValueError: a name that is not a submodule of ``explainer``.
    """
    unknown = sorted(set(modules) - set(explainer._modules))
    if unknown:
        raise ValueError(f"{type(explainer).__name__} has no submodule(s) {unknown}; it has {sorted(explainer._modules)}")
    clone = copy.copy(explainer)
    for key, value in list(vars(explainer).items()):
        if isinstance(value, (dict, list, set)):
            vars(clone)[key] = copy.copy(value)
    for name, module in modules.items():
        setattr(clone, name, module)
    return clone


def _fingerprint(t: Tensor) -> str:
    return hashlib.sha1(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _constant(maps: Tensor) -> Tensor:
    flat = maps.reshape(maps.shape[0], -1)
    return (flat == flat[:, :1]).all(dim=1)


def similarities(intact: Tensor, randomised: Tensor, measures: Sequence[str] = MEASURES) -> dict[str, Tensor]:
    """``{measure: (B,)}`` float64 similarity of ``randomised`` ``(B, H, W)`` to ``intact`` ``(B, H, W)``.

    Spearman and HOG: 0 where the randomised map is constant and the intact one is not, NaN where
    the intact one is constant (module docstring); SSIM as :func:`~lcam.metrics.similarity.ssim_similarity`.
    """
    out: dict[str, Tensor] = {}
    a_const, b_const = _constant(intact).to(intact.device), _constant(randomised).to(intact.device)
    for m in measures:
        if m == "ssim":
            out[m] = ssim_similarity(intact, randomised).to(intact.device)
            continue
        v = (spearman if m == "spearman" else hog_similarity)(intact, randomised).to(intact.device)
        v = torch.where(b_const & ~a_const, torch.zeros_like(v), v)
        out[m] = torch.where(a_const, torch.full_like(v, float("nan")), v)
    return out


class ModelRandomisation(PerImageMetric):
    """Similarity of each image's map to its map under parameter randomisation; columns
    ``Rand/<step>/<measure>`` (module docstring), each ``(B,)`` float64.

    ``per_image(images, maps, targets)``: images ``(B, 3, H, W)`` in [0, 1], ``maps`` ``(B, H, W)``
    (the explainer's maps on the intact classifier for ``targets``), targets ``(B,)``. Each step
    runs the explainer once on the batch (same targets) on the randomised classifier; nothing else
    is explained. Values are near 1 for a method that ignores the model and fall towards 0 for one
    that depends on it. The pass criterion (``pass_threshold``, ``pass_step``) is applied to the
    records by the report (:mod:`lcam.evaluation.sanity`): a method passes when the upper end of
    the 95 % bootstrap interval of its mean Spearman similarity is below ``pass_threshold`` at one
    of the first ``pass_step`` cascade steps (step 1: only the top unit random; 2: the top two).

    Args:
        model: the classifier (read only).
        explainer: the method (read only; re-bound to the randomised copy, :func:`rebind`).
        kinds: step kinds among ``cascade``, ``independent``, ``head`` (``head`` only applies to an
            explainer with a learned ``head``, L-CAM).
        max_steps: keep the top ``max_steps`` units (``None``: all).
        depth: levels of plain containers opened when listing units (:func:`randomisation_units`).
        measures: among ``spearman``, ``ssim``, ``hog``.
        init: ``default`` (the layers' ``reset_parameters``) or ``normal`` (``N(0, std^2)``).
        std: the ``normal`` init's standard deviation.
        seed: seeds every random value (per module name).
        pass_threshold, pass_step: the report's pass criterion (above).
        figure_images: keep every step's map of the first ``figure_images`` images this metric
            sees, for the report's figure, in ``figure_dir`` (``None``: ``<Hydra run dir>/sanity``
            when running under Hydra, else nothing is written).
        figure_size: side of the kept maps (pixels).
    """

    needs_explainer: ClassVar[bool] = True
    higher_is_better = False

    def __init__(self, model: nn.Module, explainer: nn.Module, kinds: Sequence[str] = KINDS,
                 max_steps: int | None = None, depth: int = 1, measures: Sequence[str] = MEASURES,
                 init: str = "default", std: float = 0.01, seed: int = 0, pass_threshold: float = 0.5,
                 pass_step: int = 2, figure_images: int = 0, figure_dir: str | None = None,
                 figure_size: int = 112) -> None:
        for k in kinds:
            check_choice("kind", k, KINDS)
        for m in measures:
            check_choice("measure", m, MEASURES)
        if not measures or not kinds:
            raise ValueError("kinds and measures must not be empty")
        self.init = check_choice("init", init, INITS)
        self.std = check_float("std", std, 0.0)
        self.seed = check_int("seed", seed, 0)
        self.max_steps = check_optional_int("max_steps", max_steps, 1)
        self.depth = check_int("depth", depth, 0)
        self.pass_threshold = check_float("pass_threshold", pass_threshold, -1.0)
        self.pass_step = check_int("pass_step", pass_step, 1)
        self.figure_images = check_int("figure_images", figure_images, 0)
        self.figure_size = check_int("figure_size", figure_size, 8)
        units = randomisation_units(model, self.depth)[: self.max_steps]
        head = getattr(explainer, "head", None)
        self.steps = randomisation_steps(units, kinds, head=isinstance(head, nn.Module) and _has_params(head))
        if not self.steps:
            raise ValueError(f"no randomisation steps: kinds={list(kinds)} (head applies only to a learned head)")
        self.measures = tuple(measures)
        super().__init__(columns=[column_name(s.label, m) for s in self.steps for m in self.measures])
        self.__dict__["model"] = model          # not submodules: the metric's state is its sums
        self.__dict__["explainer"] = explainer
        self.__dict__["_bound"] = {}            # device -> (randomised copy, explainer on it, explainer with a random head)
        self.figure_dir = figure_dir
        self._token = uuid.uuid4().hex[:8]
        self._figure: list[dict[str, Any]] = []

    # -- the randomised explainers -------------------------------------------------------------
    def _explainers(self, device: torch.device) -> tuple[RandomisedCopy, nn.Module, nn.Module | None]:
        key = str(device)
        if key not in self._bound:
            work = randomised_copy(self.model, device, self.init, self.std, self.seed)
            on_copy = rebind(self.explainer, model=work.model)
            with_head = None
            if any(s.kind == "head" for s in self.steps):
                with torch.inference_mode(False), torch.no_grad():
                    head = copy.deepcopy(self.explainer.head).to(device)
                    for name, m in _param_modules(head, [""]):
                        for k, v in random_parameters(m, f"head.{name}".rstrip("."), self.init, self.std, self.seed).items():
                            getattr(m, k).copy_(v)
                with_head = rebind(self.explainer, head=head)
            self._bound[key] = (work, on_copy, with_head)
        return self._bound[key]

    def step_maps(self, images: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Each step's maps ``(B, H, W)`` for images ``(B, 3, H, W)`` and targets ``(B,)``: step label -> maps."""
        work, on_copy, with_head = self._explainers(images.device)
        out = {}
        for step in self.steps:
            if step.kind == "head":
                explainer = with_head
            else:
                work.apply(step.units)
                explainer = on_copy
            out[step.label] = explainer(images, targets).detach().float()  # type: ignore[misc]
        return out

    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor, *extra: Any) -> dict[str, Tensor]:
        """``{"Rand/<step>/<measure>": (B,)}`` float64 (see the class docstring)."""
        targets = targets.to(images.device).long()
        randomised = self.step_maps(images, targets)
        out: dict[str, Tensor] = {}
        for label, rmaps in randomised.items():
            for m, v in similarities(maps.float(), rmaps, self.measures).items():
                out[column_name(label, m)] = v
        self._keep_for_figure(images, maps, randomised)
        return out

    # -- the figure's maps ---------------------------------------------------------------------
    def _figure_path(self) -> Path | None:
        folder = self.figure_dir
        if folder is None:
            try:
                from hydra.core.hydra_config import HydraConfig

                folder = os.path.join(HydraConfig.get().runtime.output_dir, "sanity")
            except Exception:  # noqa: BLE001 - not under Hydra: no figure files
                return None
        name = "".join(c if c.isalnum() else "_" for c in (getattr(self.explainer, "name", "") or type(self.explainer).__name__))
        return Path(folder) / f"{name}-{self._token}-{os.getpid()}.pt"

    def _keep_for_figure(self, images: Tensor, maps: Tensor, randomised: dict[str, Tensor]) -> None:
        room = self.figure_images - len(self._figure)
        if room <= 0:
            return
        path = self._figure_path()
        if path is None:
            return
        s = self.figure_size
        small = lambda t: F.interpolate(t.float().unsqueeze(1), size=(s, s), mode="area").squeeze(1)  # noqa: E731
        shrunk = {k: small(v).cpu() for k, v in randomised.items()}
        intact = small(maps).cpu()
        thumbs = (F.interpolate(images.float(), size=(s, s), mode="area").clamp(0, 1) * 255).round().byte().cpu()
        for j in range(min(room, images.shape[0])):
            self._figure.append({"image_sha1": _fingerprint(images[j]), "map_sha1": _fingerprint(maps[j]),
                                 "image": thumbs[j], "intact": intact[j].half(),
                                 "maps": {k: v[j].half() for k, v in shrunk.items()}})
        from lcam.runtime.io import atomic_write

        with atomic_write(path) as f:
            torch.save({"explainer": getattr(self.explainer, "name", ""), "steps": [s.label for s in self.steps],
                        "images": self._figure}, f)
