"""One registered explainer bound to one classifier: logits and maps for a batch of images.

Every method goes through the registry (:func:`lcam.explainers.build_explainer`); a model that
brings its own explainer (an L-CAM model or checkpoint: ``as_explainer()``) supplies it. A one-pass
method (``shares_features``) gets the activations of the pass that gave the logits, so explaining
costs one forward pass in all. Each call borrows the caller's modules (:func:`lcam.explain.state.borrowed`):
they are in eval mode with frozen parameters during the call and exactly as before after it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from lcam.explain.classifier import Classifier, resolve_classifier
from lcam.explain.inputs import InputItem
from lcam.explain.result import Explanation
from lcam.explain.state import borrowed
from lcam.explainers.targets import ClassSpace, TargetPlan
from lcam.runtime.io import InputError

#: ``progress(images done)``: a float in [0, B] within one batch of B images
BatchProgress = Callable[[float], None]


def method_choices() -> list[str]:
    """Every method name accepted by ``method=``, in registry order."""
    from lcam.explainers import EXPLAINERS

    return list(EXPLAINERS)


def check_method(method: str | Mapping[str, Any]) -> str:
    """The method's name, or :class:`InputError` listing the valid choices."""
    name = method.get("name") if isinstance(method, Mapping) else method
    if not isinstance(name, str) or name.lower() not in method_choices():
        raise InputError(f"Unknown method {name!r}; valid choices: {', '.join(method_choices())}")
    return name.lower()


class Engine:
    """A registered explainer bound to a resolved classifier.

    Attributes:
        classifier: the resolved model (:class:`~lcam.explain.classifier.Classifier`).
        explainer: the explainer (``explainer(images, targets)``, ``shares_features``...).
        method: its registry name.
    """

    def __init__(self, classifier: Classifier, explainer: Any, method: str) -> None:
        self.classifier, self.explainer, self.method = classifier, explainer, method

    # -- identity ---------------------------------------------------------------------------
    @property
    def backbone(self) -> Any:
        return self.classifier.backbone

    @property
    def layer(self) -> str | None:
        """The explained layer (reported in every result and by the CLI)."""
        return self.classifier.layer

    @property
    def device(self) -> torch.device:
        return self.backbone.mean.device

    @property
    def num_classes(self) -> int:
        return int(getattr(self.explainer, "num_classes", None) or self.backbone.num_classes)

    @property
    def classes(self) -> ClassSpace:
        """The classes targets may name (ids, names, synonyms)."""
        return ClassSpace.of(self.num_classes, self.backbone.class_names)

    @property
    def interpolation(self) -> str:
        spec = self.backbone.spec
        return (spec.interpolation if spec is not None else None) or "bilinear"

    def class_name(self, index: int) -> str:
        return self.backbone.class_name(int(index))

    # -- computing ----------------------------------------------------------------------------
    def _forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """The pass on the unmodified images: activations (one-pass methods) and logits ``(B, C)``."""
        with torch.no_grad():
            if self.explainer.shares_features:
                feats = self.backbone.features(x)
                return feats, self.backbone.classify(feats.clone())
            return None, self.backbone(x)

    def _maps(self, x: Tensor, feats: Tensor | None, targets: Tensor, report: Callable[[float], None] | None) -> Tensor:
        with self.explainer.reporting(report):
            if feats is not None:
                return self.explainer.maps_from_features(x, feats, targets)
            return self.explainer(x, targets)

    def maps_for(self, images: Tensor, targets: Tensor) -> Tensor:
        """``(B, H, W)`` maps in [0, 1] (on the CPU) of ``images`` ``(B, 3, H, W)`` for class ids ``(B,)``."""
        with borrowed(*self.classifier.caller_modules):
            x = images.to(self.device)
            feats, _ = self._forward(x)
            return self._maps(x, feats, targets.to(self.device), None).detach().float().cpu()

    def run(self, images: Tensor, plans: Sequence[TargetPlan], items: Sequence[InputItem], positions: Sequence[int],
            progress: BatchProgress | None = None) -> list[Explanation]:
        """Explain one batch ``(B, 3, H, W)`` in [0, 1] for each plan, sharing one forward pass.

        Returns one :class:`Explanation` per plan, on the CPU; ``progress(images done)`` is called
        during the work (per chunk of masked passes for the perturbation methods).
        """
        with borrowed(*self.classifier.caller_modules):
            return self._run(images, plans, items, positions, progress)

    def _run(self, images: Tensor, plans: Sequence[TargetPlan], items: Sequence[InputItem], positions: Sequence[int],
             progress: BatchProgress | None) -> list[Explanation]:
        x = images.to(self.device, non_blocking=True)
        feats, logits = self._forward(x)
        logits = logits.float()
        probs_all = logits.softmax(dim=1)
        pred_p, pred = probs_all.max(dim=1)
        b = x.shape[0]
        labels = torch.tensor([it.label for it in items], dtype=torch.long)
        per_plan = [plan.resolve(logits, positions, labels) for plan in plans]
        for rows in per_plan:
            if any(not isinstance(t, int) for row in rows for t in row):
                raise InputError("Box targets need a detector explainer (lcam.detection); a classifier explains class ids or names")
        work = sum(len(row) for rows in per_plan for row in rows)
        done = 0
        pred_cpu, x_cpu = pred.cpu(), x.detach().cpu()
        pred_names = [self.class_name(int(c)) for c in pred_cpu]
        results = []
        for rows in per_plan:
            maps: list[list[Tensor]] = [[] for _ in range(b)]
            for rank in range(max(len(r) for r in rows)):
                idx = [i for i in range(b) if len(rows[i]) > rank]
                t = torch.tensor([rows[i][rank] for i in idx], dtype=torch.long, device=self.device)
                sel = torch.tensor(idx, device=self.device)
                report = None
                if progress is not None:
                    report = (lambda f, d=done, n=len(idx): progress(b * (d + f * n) / work))  # noqa: E731
                out = self._maps(x[sel], None if feats is None else feats[sel], t, report).detach().float().cpu()
                for j, i in enumerate(idx):
                    maps[i].append(out[j])
                done += len(idx)
                if progress is not None:
                    progress(b * done / work)
            classes = torch.tensor([c for row in rows for c in row], dtype=torch.long)
            image_index = torch.tensor([i for i, row in enumerate(rows) for _ in row], dtype=torch.long)
            results.append(Explanation(
                maps=torch.stack([m for per_image in maps for m in per_image]),
                classes=classes, probs=probs_all.cpu()[image_index, classes],
                image_index=image_index, ranks=torch.tensor([r for row in rows for r in range(len(row))], dtype=torch.long),
                images=x_cpu, predicted=pred_cpu, predicted_probs=pred_p.detach().cpu(), labels=labels,
                names=[it.name for it in items], files=[it.file for it in items],
                class_names=[self.class_name(int(c)) for c in classes], predicted_names=pred_names,
                method=self.method, layer=self.layer, positions=torch.as_tensor(list(positions), dtype=torch.long),
            ))
        return results


def make_engine(model: Any, method: str | Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                layer: str | None = None, checkpoint_settings: Mapping[str, Any] | None = None, **settings: Any) -> Engine:
    """Bind a method (a registry name, or a config dict with ``name`` and settings) to a classifier.

    ``method=None`` means the model's own explainer when it brings one (an L-CAM model or
    checkpoint: ``lcam``), ``gradcam`` otherwise. ``settings`` go to the explainer (e.g.
    ``n_masks=1000`` for RISE). ``layer`` names the explained layer (see
    :func:`~lcam.explain.classifier.resolve_classifier`, as ``checkpoint_settings``).
    """
    if method is not None:
        check_method(method)
    return bind(resolve_classifier(model, device, layer, checkpoint_settings), method, **settings)


def bind(classifier: Classifier, method: str | Mapping[str, Any] | None = None, **settings: Any) -> Engine:
    """An engine for ``method`` on an already resolved classifier (several methods, one classifier)."""
    own = classifier.explainer
    name = check_method(method) if method is not None else (own.name if own is not None else "gradcam")
    if own is not None and name == own.name and not isinstance(method, Mapping):
        if settings:
            raise InputError(f"method {name!r} of this model takes no settings, got {sorted(settings)}")
        return Engine(classifier, own, name)
    from lcam.explainers import EXPLAINERS, build_explainer, missing_settings

    cfg = {**dict(method), **settings} if isinstance(method, Mapping) else {"name": name, **settings}
    try:
        missing = missing_settings(cfg)
        if missing:
            hint = EXPLAINERS[name].requirement_hint
            raise InputError(f"method {name!r} needs {', '.join(missing)}" + (f": pass {hint}" if hint else "")
                             + f" (or choose another method: {', '.join(m for m in method_choices() if m != name)})")
        explainer = build_explainer(cfg, classifier.backbone)
    except InputError:
        raise
    except ValueError as err:
        raise InputError(" ".join(str(err).split())) from None
    return Engine(classifier, explainer, name)
