"""The L-CAM loss terms against hand-computed values, and class selection."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lcam.model.heads import AttentionHead, select_class
from lcam.model.losses import LCAMLoss, area_term, total_variation


def test_total_variation_hand_computed():
    # one 3x3 mask; diffs: rows (dx) and columns (dy)
    m = torch.tensor([[[0.0, 1.0, 0.0],
                       [0.0, 0.5, 0.0],
                       [1.0, 1.0, 1.0]]])
    dx = (1 + 1) + (0.25 + 0.25) + (0 + 0)  # horizontal neighbours, per row
    dy = (0 + 0.25 + 0) + (1 + 0.25 + 1)  # vertical neighbours, per column pair
    border = (0 + 1 + 0) + (1 + 1 + 1) + (0 + 0 + 1) + (0 + 0 + 1)  # top, bottom, left, right lines
    expected = (dx + dy + 0.3 * border) / (2 * 1)
    assert total_variation(m).item() == pytest.approx(expected)


def test_total_variation_divides_by_twice_batch():
    m = torch.rand(1, 5, 4)
    assert total_variation(torch.cat([m, m])).item() == pytest.approx(total_variation(m).item())
    assert total_variation(m, border_coef=0.0).item() < total_variation(m).item()


def test_area_term_power_and_epsilon():
    m = torch.tensor([[[0.0, 1.0], [0.25, 0.0]]])
    expected = ((0 + 5e-4) ** 0.3 * 2 + (1 + 5e-4) ** 0.3 + (0.25 + 5e-4) ** 0.3) / 4
    assert area_term(m, 0.3, 5e-4).item() == pytest.approx(expected, rel=1e-6)
    # the epsilon keeps the gradient finite at 0
    z = torch.zeros(1, 2, 2, requires_grad=True)
    area_term(z, 0.3, 5e-4).backward()
    assert torch.isfinite(z.grad).all() and (z.grad > 0).all()


def test_loss_combines_weighted_terms():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 5), torch.tensor([0, 4, 2])
    mask = torch.rand(3, 4, 4)
    loss = LCAMLoss(ce_coef=1.5, area_coef=2.0, tv_coef=0.01, area_power=0.3)
    terms = loss(logits, targets, mask)
    assert terms.ce.item() == pytest.approx(F.cross_entropy(logits, targets).item())
    expected = 1.5 * terms.ce + 2.0 * terms.area + 0.01 * terms.tv
    assert terms.total.item() == pytest.approx(expected.item())
    ce_only = LCAMLoss(area_coef=0.0, tv_coef=0.0)(logits, targets, mask)
    assert ce_only.total.item() == pytest.approx(1.5 * terms.ce.item())
    assert math.isfinite(ce_only.tv.item())  # terms are still reported for logging


def test_select_class_picks_the_channel_of_each_sample():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    out = select_class(maps, torch.tensor([2, 0]))
    assert torch.equal(out[0], maps[0, 2]) and torch.equal(out[1], maps[1, 0])


def test_head_class_maps_equal_full_maps_selection():
    torch.manual_seed(0)
    head = AttentionHead(8, 10)
    feats, targets = torch.randn(4, 8, 5, 5), torch.tensor([9, 0, 3, 3])
    assert torch.allclose(head.class_maps(feats, targets), select_class(head(feats), targets), atol=1e-5)


def test_out_of_range_class_names_valid_range():
    with pytest.raises(ValueError, match=r"0\.\.9"):
        AttentionHead(8, 10).class_maps(torch.randn(1, 8, 2, 2), torch.tensor([10]))


def test_batch_regularisation_is_the_official_block_of_maps():
    """regularize=batch: area and TV over A[:, targets] (B x B maps), TV divided by 2 B (official code)."""
    torch.manual_seed(0)
    head = AttentionHead(6, 5)
    feats = torch.randn(3, 6, 4, 4)
    targets = torch.tensor([4, 1, 1])
    full = torch.sigmoid(head(feats))  # (B, C, h, w)
    block = torch.sigmoid(head.block_maps(feats, targets))
    torch.testing.assert_close(block, full[:, targets])
    dx = ((block[..., :, 1:] - block[..., :, :-1]) ** 2).sum()
    dy = ((block[..., 1:, :] - block[..., :-1, :]) ** 2).sum()
    border = (block[..., 0, :] ** 2 + block[..., -1, :] ** 2).sum() + (block[..., :, 0] ** 2 + block[..., :, -1] ** 2).sum()
    torch.testing.assert_close(total_variation(block), (dx + dy + 0.3 * border) / (2 * 3))
    torch.testing.assert_close(area_term(block), ((block + 5e-4) ** 0.3).mean())
    with pytest.raises(ValueError, match="regularize"):
        LCAMLoss(regularize="all")
