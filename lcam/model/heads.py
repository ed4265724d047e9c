"""The L-CAM attention head: a 1x1 convolution K -> C and per-sample class selection."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class AttentionHead(nn.Module):
    """``A = W * F + b``: one 1x1 convolution from K feature channels to C class maps.

    Args:
        in_channels: K, channels of the explained layer.
        num_classes: C.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=True)

    @property
    def num_classes(self) -> int:
        return self.conv.out_channels

    @torch.no_grad()
    def init_from_linear(self, weight: Tensor, bias: Tensor) -> None:
        """Start every class map as the classifier's class activation map: ``W = weight`` ``(C, K)``,
        ``b = bias`` ``(C,)`` (for a global-average-pooling + linear classifier)."""
        if tuple(weight.shape) != (self.num_classes, self.conv.in_channels):
            raise ValueError(f"Linear readout {tuple(weight.shape)} does not fit a head {self.conv.in_channels} -> {self.num_classes}")
        self.conv.weight.copy_(weight.view_as(self.conv.weight))
        self.conv.bias.copy_(bias)

    @torch.no_grad()
    def rescale_(self, scale: float, shift: float) -> None:
        """``A <- scale * A + shift`` for every class (``W <- scale W``, ``b <- scale b + shift``).

        With ``scale > 0`` every class map keeps its shape: its min-max normalised saliency
        ``minmax(A_c)`` is unchanged; only where ``sigmoid(A_c)`` sits (the training mask) moves."""
        if not scale > 0:
            raise ValueError(f"scale must be > 0 (a map's min-max normalisation must not flip), got {scale}")
        self.conv.weight.mul_(scale)
        self.conv.bias.mul_(scale).add_(shift)

    def forward(self, feats: Tensor) -> Tensor:
        """All class maps: ``(B, K, h, w)`` -> ``(B, C, h, w)`` (pre-sigmoid)."""
        return self.conv(feats)

    def class_maps(self, feats: Tensor, targets: Tensor) -> Tensor:
        """Only the selected class map per sample, ``A_c = w_c . F + b_c``.

        Equal to ``select_class(self(feats), targets)`` but computes one map per sample
        instead of C.

        Args:
            feats: ``(B, K, h, w)``.
            targets: ``(B,)`` class ids in ``[0, C)``.

        Returns:
            ``(B, h, w)`` pre-sigmoid maps.
        """
        w, b = self.rows(targets, feats.dtype)
        return torch.einsum("bk,bkhw->bhw", w, feats) + b.view(-1, 1, 1)

    def block_maps(self, feats: Tensor, targets: Tensor) -> Tensor:
        """Every sample's map for every target of the batch, ``A[:, targets]``: ``(B, K, h, w)``,
        ``(B,)`` -> ``(B, B, h, w)`` pre-sigmoid (the official L-CAM code regularises this block)."""
        w, b = self.rows(targets, feats.dtype)
        return torch.einsum("ck,bkhw->bchw", w, feats) + b.view(1, -1, 1, 1)

    def rows(self, targets: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The head's weights ``(N, K)`` and biases ``(N,)`` of classes ``targets`` ``(N,)``."""
        check_targets(targets, self.num_classes)
        return self.conv.weight[targets, :, 0, 0].to(dtype), self.conv.bias[targets].to(dtype)


def select_class(maps: Tensor, targets: Tensor) -> Tensor:
    """Pick channel ``targets[i]`` of sample ``i``: ``(B, C, h, w), (B,) -> (B, h, w)``."""
    check_targets(targets, maps.shape[1])
    idx = targets.view(-1, 1, 1, 1).expand(-1, 1, *maps.shape[2:])
    return maps.gather(1, idx).squeeze(1)


def check_targets(targets: Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` naming the valid range when a class id is out of ``[0, num_classes)``."""
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        bad = targets[(targets < 0) | (targets >= num_classes)].tolist()
        raise ValueError(f"Class id(s) {bad} out of range: valid class ids are 0..{num_classes - 1}")
