"""Crisp-mask optimisation on a synthetic classifier that looks at one square of a textured image."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers import build_explainer
from lcam.explainers.crisp import CrispMask, blur_drop, blur_stack, perturb

SIZE, LO, HI = 32, 8, 16  # the square the classifier reads: rows and columns 8..15


class SquareTexture(nn.Module):
    """Features: |Laplacian| of channel 0 inside the square, zero elsewhere ``(B, 1, H, W)``."""

    def __init__(self) -> None:
        super().__init__()
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]) / 4.0
        self.register_buffer("kernel", lap.view(1, 1, 3, 3))
        window = torch.zeros(1, 1, SIZE, SIZE)
        window[..., LO:HI, LO:HI] = 1.0
        self.register_buffer("window", window)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x[:, :1], self.kernel, padding=1).abs() * self.window


class TextureHead(nn.Module):
    """Class 0 logit = 10 (texture energy in the square - 0.5); class 1 logit = 0."""

    def forward(self, f: Tensor) -> Tensor:
        energy = f.sum(dim=(1, 2, 3)) / float((HI - LO) ** 2)
        return torch.stack([10.0 * (energy - 0.5), torch.zeros_like(energy)], dim=1)


def square_model() -> FrozenClassifier:
    return FrozenClassifier(SquareTexture(), TextureHead(), mean=[0.0] * 3, std=[1.0] * 3)


def checkerboard(b: int = 2) -> Tensor:
    """Texture everywhere (period 2 px): only the square's texture matters to the classifier."""
    i = torch.arange(SIZE)
    board = ((i.view(-1, 1) + i.view(1, -1)) % 2).float()
    return board.expand(b, 3, SIZE, SIZE).clone()


SETTINGS = dict(iterations=40, sparse_iterations=30, sigma0=3.0, mask_scale=4, blur_levels=4)


def test_perturb_interpolates_between_blur_levels():
    x = checkerboard(1)
    stack = blur_stack(x, sigma0=2.0, levels=3)
    torch.testing.assert_close(perturb(stack, torch.ones(1, SIZE, SIZE)), x)  # keep: sharp
    torch.testing.assert_close(perturb(stack, torch.zeros(1, SIZE, SIZE)), stack[2])  # delete: sigma0
    torch.testing.assert_close(perturb(stack, torch.full((1, SIZE, SIZE), 0.75)), 0.5 * (stack[0] + stack[1]))


def test_crisp_mask_is_nearly_binary_and_covers_the_square():
    model = square_model()
    images = checkerboard(2)
    assert model(images).softmax(1)[:, 0].min() > 0.99
    explainer = build_explainer({"name": "crisp", **SETTINGS}, model)
    saliency = explainer(images)
    assert saliency.shape == (2, SIZE, SIZE)
    deleted = 1 - explainer.last_grid  # (2, 8, 8) cells of 4 px; the square is cells 2..3
    assert deleted.shape == (2, 8, 8)
    assert deleted[:, 2:4, 2:4].min() > 0.9, "the deleted zone should cover the square"
    far = torch.ones(8, 8, dtype=torch.bool)
    far[:5, :5] = False  # the square and a cell around it
    assert deleted[:, far].max() < 0.1
    middle = ((deleted > 0.1) & (deleted < 0.9)).float().mean()
    assert middle < 0.2, f"mask not crisp: {middle:.0%} of cells between 0.1 and 0.9"
    assert saliency[:, LO:HI, LO:HI].mean() > 0.9
    assert explainer.last_drop.min() > 0.9  # the paper's metric: the class is gone
    torch.testing.assert_close(explainer.last_drop, blur_drop(model, images, explainer.last_masks, torch.zeros(2, dtype=torch.long), 3.0, 4))
    with torch.no_grad():  # the paper's drop by hand: max(0, p(x) - p(Phi(x; m))) / p(x), class 0
        p = model(images).softmax(1)[:, 0]
        q = model(perturb(blur_stack(images, 3.0, 4), explainer.last_masks)).softmax(1)[:, 0]
    torch.testing.assert_close(explainer.last_drop, (p - q).clamp(min=0) / p)
    # batched == one image at a time; images of the caller untouched
    single = build_explainer({"name": "crisp", **SETTINGS}, model)(images[:1])
    torch.testing.assert_close(single, saliency[:1], atol=1e-4, rtol=0)
    assert torch.equal(images, checkerboard(2))


def test_smooth_mask_setting_skips_the_sparsity_phase():
    model = square_model()
    smooth = CrispMask(model, sparsity=False, **SETTINGS)
    assert smooth.schedule() == [(40, 0.01, 1e-4, 0.0)]
    assert CrispMask(model, **SETTINGS).schedule()[1] == (30, 0.01, 1.0, 2.0)
    saliency = smooth(checkerboard(1))
    assert saliency[:, LO:HI, LO:HI].mean() > saliency.mean()  # it still points at the square
    assert smooth.last_forward_passes == 40 and len(smooth.last_phase_grids) == 1


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="sigma0 must be > 0"):
        CrispMask(square_model(), sigma0=0)
    with pytest.raises(ValueError, match="valid settings"):
        build_explainer({"name": "crisp", "iters": 3}, square_model())


SQUARES = {0: (slice(4, 12), slice(4, 12)), 1: (slice(20, 28), slice(20, 28))}


class TwoSquares(nn.Module):
    """Features ``(B, 2, H, W)``: |Laplacian| of channel 0 inside square 0 (channel 0) and square 1 (channel 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.texture = SquareTexture()
        windows = torch.zeros(1, 2, SIZE, SIZE)
        for k, (rows, cols) in SQUARES.items():
            windows[0, k, rows, cols] = 1.0
        self.register_buffer("windows", windows)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x[:, :1], self.texture.kernel, padding=1).abs() * self.windows


class TwoSquaresHead(nn.Module):
    """Class k logit = 10 (texture energy in square k - 0.5); class 2 logit = 0."""

    def forward(self, f: Tensor) -> Tensor:
        energy = f.sum(dim=(2, 3)) / 64.0
        return torch.cat([10.0 * (energy - 0.5), torch.zeros_like(energy[:, :1])], dim=1)


def test_crisp_map_changes_with_the_class():
    """Two textured squares, one per class: each class's crisp map deletes its own square, not the other."""
    model = FrozenClassifier(TwoSquares(), TwoSquaresHead(), mean=[0.0] * 3, std=[1.0] * 3)
    image = checkerboard(1)
    explainer = build_explainer({"name": "crisp", **SETTINGS}, model)
    maps = {}
    for target in (0, 1):
        maps[target] = sal = explainer(image, target)[0]
        own, other = SQUARES[target], SQUARES[1 - target]
        assert sal[own].mean() > 0.5 and sal[other].mean() < 0.05, (target, sal[own].mean(), sal[other].mean())
        assert explainer.last_drop[0] > 0.9
    assert (maps[0] - maps[1]).abs().max() > 0.9
