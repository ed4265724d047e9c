"""``model.mask``: the mask the L-CAM loss sees (sigmoid of the paper, or the min-max map that the
explanation and its AD/IC evaluation use)."""
from __future__ import annotations

import pytest
import torch

from lcam.maps import upsample
from lcam.model.losses import LCAMLoss
from lcam.model.module import LCAM


@pytest.mark.parametrize("variant", ["img", "fm"])
def test_minmax_mask_is_the_explanation_map_and_the_loss_sees_it(effnet, variant):
    model = LCAM(backbone=effnet, variant=variant, init="classifier", mask="minmax")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    terms, a, logits0, targets = model._step((images, torch.tensor([-1, -1])))
    # independent: per-sample (A - min) / (max - min) on the h x w map
    flat = a.detach().flatten(1)
    mask = ((flat - flat.min(1, keepdim=True).values) / (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values)).view_as(a)
    torch.testing.assert_close(model.training_mask(a.detach()), mask)
    assert mask.amin(dim=(1, 2)).eq(0).all() and mask.amax(dim=(1, 2)).eq(1).all()
    with torch.no_grad():
        feats = model.backbone.features(images)
        masked = model.backbone.classify(feats * mask.unsqueeze(1)) if variant == "fm" else \
            model.backbone(images * upsample(mask, (64, 64)).unsqueeze(1))
    expected = LCAMLoss()(masked, targets, mask)
    torch.testing.assert_close(terms.total.detach(), expected.total, atol=1e-4, rtol=1e-4)
    terms.total.backward()
    assert model.head.conv.weight.grad.abs().sum() > 0  # gradients flow through the min-max
    sig = LCAM(backbone=effnet, variant=variant, init="classifier")
    torch.testing.assert_close(sig.training_mask(a.detach()), torch.sigmoid(a.detach()))


def test_unknown_mask_is_refused_with_the_choices(effnet):
    with pytest.raises(ValueError, match=r"model.mask must be one of \['sigmoid', 'minmax'\]"):
        LCAM(backbone=effnet, mask="softmax")
