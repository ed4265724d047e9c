"""D-RISE: similarity, masks, chunking, shared passes, a synthetic and a real detector."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lcam.detection.base import Detections
from lcam.detection.drise import DRISE, drise_similarity, mask_weights
from lcam.detection.synthetic import BrightSquareDetector, squares_image


def test_similarity_hand_computed():
    target_boxes = torch.tensor([[0.0, 0, 10, 10]])
    target_probs = torch.tensor([[1.0, 0, 0]])
    boxes = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10], [0, 0, 20, 20]])
    probs = torch.tensor([[0.6, 0.8, 0], [0, 1, 0], [2.0, 0, 0]])
    obj = torch.tensor([0.5, 1.0, 0.3])
    # IoU: 50 / 150 = 1/3, 1, 100 / 400 = 1/4; cosine: 0.6, 0, 1 (scale-free); objectness 0.5, 1, 0.3
    expected = torch.tensor([[1 / 3 * 0.6 * 0.5, 0.0, 0.25 * 1.0 * 0.3]])
    assert torch.allclose(drise_similarity(target_boxes, target_probs, boxes, probs, obj), expected)
    assert torch.allclose(drise_similarity(target_boxes, target_probs, boxes, probs, None), torch.tensor([[0.2, 0.0, 0.25]]))
    # a zero class vector: cosine 0, not NaN
    assert drise_similarity(target_boxes, target_probs, boxes[:1], torch.zeros(1, 3), None).item() == 0.0


def test_mask_weights_take_the_best_proposal_of_each_mask():
    targets = Detections(torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), torch.tensor([[1.0, 0], [0, 1.0]]))
    mask0 = Detections(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20]]), torch.tensor([[1.0, 0], [1.0, 0]]), torch.tensor([0.4, 0.9]))
    empty = Detections(torch.zeros(0, 4), torch.zeros(0, 2), torch.zeros(0))
    mask2 = Detections(torch.tensor([[20.0, 20, 30, 30]]), torch.tensor([[0.6, 0.8]]), torch.tensor([1.0]))
    w = mask_weights(targets, [mask0, empty, mask2])
    # target 0 in mask 0: max(1 * 1 * 0.4, 0.5 * 1 * 0.9) = 0.45; target 1 in mask 2: 1 * 0.8 * 1
    assert torch.allclose(w, torch.tensor([[0.45, 0.0, 0.0], [0.0, 0.0, 0.8]]))
    assert torch.allclose(mask_weights(targets, [mask0], use_objectness=False), torch.tensor([[1.0], [0.0]]))


def test_masks_are_rise_grids():
    drise = DRISE(BrightSquareDetector([(0, 0, 4, 4)]), n_masks=400, s=4, p=0.3, seed=1)
    grids = drise.grids((30, 50), torch.device("cpu"))
    masks = grids.render(slice(0, 400), (30, 50))
    assert masks.shape == (400, 30, 50) and masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.3) < 0.03
    assert grids.cell == (math.ceil(30 / 4), math.ceil(50 / 4))
    # mask 0 by hand: upsample its grid to (s + 1) * cell, shift, crop
    g = grids.grids[0].float().view(1, 1, 4, 4)
    up = F.interpolate(g, size=(5 * 8, 5 * 13), mode="bilinear", align_corners=False)[0, 0]
    dy, dx = grids.shifts[0].tolist()
    assert torch.allclose(masks[0], up[dy:dy + 30, dx:dx + 50].clamp(0, 1))
    again = DRISE(BrightSquareDetector([(0, 0, 4, 4)]), n_masks=400, s=4, p=0.3, seed=1).grids((30, 50), torch.device("cpu"))
    assert torch.equal(again.grids, grids.grids) and torch.equal(again.shifts, grids.shifts)


def test_synthetic_detector_map_peaks_inside_the_square():
    square = (20, 12, 36, 28)
    detector = BrightSquareDetector([square])
    image = squares_image(64, [square])
    target = detector.detect(image)
    assert torch.equal(target[0].boxes, torch.tensor([[20.0, 12, 36, 28]]))
    sal = DRISE(detector, n_masks=300, s=8, seed=0)(image, target)[0]
    assert sal.shape == (1, 64, 64) and float(sal.max()) == 1.0 and float(sal.min()) == 0.0
    y, x = divmod(int(sal[0].argmax()), 64)
    assert 12 <= y < 28 and 20 <= x < 36
    inside = sal[0, 12:28, 20:36].mean()
    outside = (sal[0].sum() - sal[0, 12:28, 20:36].sum()) / (64 * 64 - 16 * 16)
    assert inside > 2 * outside


def test_batched_equals_one_mask_at_a_time():
    squares = [(4, 4, 14, 14), (30, 20, 44, 34)]
    detector = BrightSquareDetector(squares)
    image = squares_image(48, squares).expand(2, -1, -1, -1).clone()
    image[1, :, 20:34, 30:44] = 0.2  # the second image has only the first square
    targets = detector.detect(image)
    assert [len(t) for t in targets] == [2, 1]
    one = DRISE(detector, n_masks=40, s=6, batch_size=1, seed=3)(image, targets)
    many = DRISE(detector, n_masks=40, s=6, batch_size=16, seed=3)(image, targets)
    for a, b in zip(one, many):
        assert torch.allclose(a, b, atol=1e-6)


def test_several_targets_share_one_pass_and_equal_separate_runs():
    squares = [(4, 4, 14, 14), (30, 20, 44, 34)]
    detector = BrightSquareDetector(squares)
    image = squares_image(48, squares)
    both = detector.detect(image)[0]
    drise = DRISE(detector, n_masks=60, s=6, batch_size=8, seed=5)
    detector.seen = 0
    together = drise(image, [both])[0]
    assert detector.seen == 60  # one pass per mask for both targets
    for k in range(2):
        alone = drise(image, [both.select(torch.tensor([k]))])[0]
        assert torch.allclose(together[k], alone[0], atol=1e-6)
    assert not torch.allclose(together[0], together[1])
    # no target: no masked pass at all, an empty (0, H, W) result
    detector.seen = 0
    empty = drise(image, [both.select(torch.tensor([], dtype=torch.long))])[0]
    assert empty.shape == (0, 48, 48) and detector.seen == 0


def test_settings_errors():
    det = BrightSquareDetector([(0, 0, 4, 4)])
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\)"):
        DRISE(det, p=1.0)
    with pytest.raises(ValueError, match="valid: \\['black', 'blur'\\]"):
        DRISE(det, substrate="mean")
    with pytest.raises(ValueError, match="one targets entry per image"):
        DRISE(det, n_masks=2)(torch.rand(2, 3, 8, 8), [])


def test_real_yolo_person_map_energy_in_its_box():
    """YOLOv3-tiny (real weights) on scikit-image's cameraman: most of the person's map lies in its box."""
    from skimage import data

    from lcam.detection.darknet import YOLOv3Tiny

    photo = torch.from_numpy(np.stack([data.camera()] * 3, -1)).permute(2, 0, 1).float().div(255).unsqueeze(0)
    image = F.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    yolo = YOLOv3Tiny(input_size=224, score_threshold=0.25)
    dets = yolo.detect(image)[0]
    person = dets.select(torch.tensor([0]))
    assert yolo.class_names[int(person.labels[0])] == "person" and float(person.scores[0]) > 0.9
    # few masks (test time): coarse cells, and the coverage bias removed (see DRISE's debias)
    sal = DRISE(yolo, n_masks=48, s=6, seed=0, debias=True)(image, [person])[0][0]
    x1, y1, x2, y2 = person.boxes[0].clamp(0, 224).round().int().tolist()
    energy = float(sal[y1:y2, x1:x2].sum() / sal.sum())
    area = (x2 - x1) * (y2 - y1) / 224**2  # about 0.58: the man fills the left half
    y, x = divmod(int(sal.argmax()), 224)
    assert x1 <= x < x2 and y1 <= y < y2
    assert energy > 0.6 and energy > area
