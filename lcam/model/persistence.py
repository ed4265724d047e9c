"""Checkpoints of an L-CAM model: the head and the backbone's identity are saved, never the frozen weights;
loading rebuilds the backbone from its identity, refuses a mismatch, and never executes code from the file."""
from __future__ import annotations

from typing import Any, TypeVar

BACKBONE_PREFIX = "backbone."

M = TypeVar("M", bound="HeadOnlyCheckpoints")


class HeadOnlyCheckpoints:
    """Mixin of :class:`lcam.model.module.LCAM`: Lightning's checkpoint hooks and the safe ``load_from_checkpoint``."""

    # -- checkpoints without the frozen backbone -----------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(BACKBONE_PREFIX)]:
            del state[key]
        if self.backbone_spec is not None:
            checkpoint["lcam_backbone"] = self.backbone_spec.to_dict()
        checkpoint["lcam_head_calibrated"] = self.calibrated

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("lcam_backbone")
        if saved is not None and self.backbone_spec is not None:
            mine = self.backbone_spec.to_dict()
            keys = ("name", "layer", "source")
            if any(saved.get(k) != mine.get(k) for k in keys):
                raise ValueError(
                    "Checkpoint backbone does not match this model: checkpoint has "
                    f"{ {k: saved.get(k) for k in keys} }, model has { {k: mine.get(k) for k in keys} }. "
                    "Use the same backbone config (e.g. the same +experiment=...) as the run that wrote it."
                )
        # a head saved after its calibration (or by a run without one) is never rescaled again
        self.calibrated = bool(checkpoint.get("lcam_head_calibrated", True))
        state = checkpoint.setdefault("state_dict", {})
        for key, value in self.backbone.state_dict().items():
            state.setdefault(BACKBONE_PREFIX + key, value)

    # -- safe loading (lcam.model.checkpoint) ------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls: type[M], checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,  # type: ignore[override]
                             strict: bool = True, **kwargs: Any) -> M:
        """Load a checkpoint written by ``train.py`` without executing code from it
        (``torch.load(weights_only=True)``); see :func:`lcam.model.checkpoint.load_module`.

        ``map_location=None`` puts the model on the CPU; ``kwargs`` replace hyperparameters
        (``backbone_weights=...`` chooses the frozen backbone's weights).
        """
        from lcam.model.checkpoint import load_module

        return load_module(checkpoint_path, cls, map_location=map_location, hparams_file=hparams_file, strict=strict, **kwargs)
