"""Split any sequential-style CNN into ``features`` (up to a named layer) and ``classify``.

Most torchvision and timm CNNs run their top-level children in order, with a global pooling,
a flatten and a classifier at the end (sometimes the pooling or flatten is functional). We
walk the children, cut at a dotted layer name (``"layer4"``, ``"features.29"``), and try a
few ways of closing the classifier half; a dry run checks that ``classify(features(x))``
reproduces the original model's logits, so a split is never silently wrong.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from lcam.runtime.errors import UserError

Chain = list[tuple[str, nn.Module]]


class SplitError(UserError, ValueError):
    """The model cannot be split at the requested layer."""


def _children(module: nn.Module) -> Chain:
    return list(module.named_children())


def _cut(chain: Chain, path: list[str], prefix: str = "") -> tuple[Chain, Chain]:
    """Cut ``chain`` right after the module addressed by ``path``; recurse into Sequentials."""
    names = [n for n, _ in chain]
    if path[0] not in names:
        raise SplitError(f"No layer '{prefix}{path[0]}'; choices at this level: {names}")
    i = names.index(path[0])
    if len(path) == 1:
        return chain[: i + 1], chain[i + 1 :]
    name, child = chain[i]
    if not isinstance(child, nn.Sequential):
        raise SplitError(f"Cannot cut inside '{prefix}{name}' ({type(child).__name__}); choose a layer at the level above or inside an nn.Sequential")
    head, tail = _cut(_children(child), path[1:], prefix=f"{prefix}{name}.")
    before = chain[:i] + ([(name, nn.Sequential(OrderedDict(head)))] if head else [])
    after = ([(f"{name}_rest", nn.Sequential(OrderedDict(tail)))] if tail else []) + chain[i + 1 :]
    return before, after


def default_layer(model: nn.Module) -> str:
    """The last top-level child before the pooling/classifier: the end of the conv trunk."""
    names = [n for n, m in model.named_children()]
    pool_like = ("avgpool", "global_pool", "pool", "head", "fc", "classifier", "pre_logits", "head_drop")
    trunk = [n for n in names if n not in pool_like]
    if not trunk:
        raise SplitError(f"Cannot guess the feature layer of {type(model).__name__}; give backbone.layer (children: {names})")
    return trunk[-1]


def _closings(tail: Chain) -> list[Callable[[], nn.Module]]:
    """Candidate classifier halves: as is, with a flatten before the last child, or with GAP + flatten."""
    if not tail:
        return []
    mods = [m for _, m in tail]
    return [
        lambda: nn.Sequential(*mods[:-1], nn.Flatten(1), mods[-1]),
        lambda: nn.Sequential(*mods),
        lambda: nn.Sequential(*mods[:-1], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), mods[-1]),
    ]


@torch.no_grad()
def split_model(model: nn.Module, layer: str, probe_size: int = 96) -> tuple[nn.Module, nn.Module]:
    """Split ``model`` (normalised input -> logits) into ``(features, classify)`` at ``layer``.

    Args:
        model: the full classifier, in eval mode.
        layer: dotted name of the explained layer (its output is the feature map).
        probe_size: side of the random probe image used to verify the split.

    Returns:
        ``features``: ``(B, 3, H, W) -> (B, K, h, w)``; ``classify``: ``(B, K, h, w) -> (B, C)``.

    Raises:
        SplitError: no such layer, or no closing reproduces the model's logits.
    """
    model.eval()
    head, tail = _cut(_children(model), layer.split("."))
    features = nn.Sequential(*[m for _, m in head])
    probe = torch.randn(2, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
    probe = probe.to(next(model.parameters()).device) if any(True for _ in model.parameters()) else probe
    expected = model(probe)
    feats = features(probe.clone())
    if feats.ndim != 4:
        raise SplitError(f"Layer '{layer}' gives a {feats.ndim}-D output {tuple(feats.shape)}; the explained layer must give (B, K, h, w)")
    for make in _closings(tail):
        classify = make()
        try:
            out = classify(feats.clone())
        except (RuntimeError, ValueError, TypeError):
            continue
        if out.shape == expected.shape and torch.allclose(out, expected, atol=1e-4, rtol=1e-4):
            return features, classify
    raise SplitError(
        f"Could not split {type(model).__name__} at '{layer}' so that classify(features(x)) == model(x); "
        "its forward() is not a plain chain of children. Choose another backbone.layer, or use the timm version of the model."
    )
