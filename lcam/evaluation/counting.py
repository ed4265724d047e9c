"""Count the classifier's forward passes (``#FW``) with a temporary forward hook."""
from __future__ import annotations

from types import TracebackType

from torch import Tensor, nn

from lcam.backbones.frozen import FrozenClassifier


class ForwardCounter:
    """Counts images sent through the classifier's feature extractor while active.

    ``with ForwardCounter(model) as fw: explainer(images)`` then ``fw.images`` is the number of
    image passes (a batch of B counts B); ``fw.per_image(B)`` the ``#FW`` per explained image.
    The hook is removed on exit, also when the explainer raises.
    """

    def __init__(self, model: FrozenClassifier) -> None:
        self.module: nn.Module = model.feature_extractor
        self.images = 0
        self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.images += int(inputs[0].shape[0])

    def __enter__(self) -> "ForwardCounter":
        self.images = 0
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def per_image(self, batch_size: int) -> float:
        return self.images / max(1, batch_size)
