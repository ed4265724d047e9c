"""``LCAM.explain`` and ``LCAM.as_explainer``: the model handed to the explain layer. The one place where
lcam.model reaches up (late, at call time) into lcam.explainers and lcam.explain (declared in tests/test_layering.py)."""
from __future__ import annotations

from typing import Any


class ExplainFrontDoor:
    """Mixin of :class:`lcam.model.module.LCAM` (needs ``backbone``, ``head``, ``variant``)."""

    def as_explainer(self) -> Any:
        """This model as a registered ``lcam`` explainer (:class:`lcam.explainers.LCAMExplainer`)
        sharing its backbone and head: what :func:`lcam.explain` uses for an L-CAM model."""
        from lcam.explainers.learned import LCAMExplainer

        return LCAMExplainer(self.backbone, head=self.head, variant=self.variant)

    def explain(self, images: Any, targets: Any = None, k: int = 3, method: Any = None, **kwargs: Any) -> Any:
        """Saliency maps for PIL images, files, folders or a ``(B, 3, H, W)`` tensor in [0, 1]
        (``targets``: ``None``, a class, one per image or ``"topk"``); returns an
        :class:`lcam.explain.Explanation`. ``method=None``: this model's own explainer (L-CAM);
        any registered method otherwise. See :func:`lcam.explain.api.explain`. The model itself is
        left as it was (mode, parameters' flags, hooks)."""
        from lcam.explain.api import explain

        return explain(self, images, targets=targets, k=k, method=method, **kwargs)
