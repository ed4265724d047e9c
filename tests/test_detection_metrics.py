"""Detection insertion/deletion, AP and energy in box."""
from __future__ import annotations

import pytest
import torch

from lcam.detection.metrics import (
    DetectionInsertionDeletion,
    average_precision,
    detection_curves,
    energy_in_box,
)
from lcam.detection.synthetic import BrightSquareDetector, squares_image


def test_average_precision_hand_computed():
    gt = torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60], [20.0, 20, 30, 31], [0.0, 0, 10, 11]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # TP, FP, TP (IoU 10/11), FP (GT 0 taken): precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    # envelope 1, 2/3, 2/3, 1/2 -> AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision(boxes, scores, gt) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(boxes[:0], scores[:0], gt) == 0.0
    assert average_precision(boxes[:0], scores[:0], gt[:0]) == 1.0
    assert average_precision(boxes, scores, gt, iou_threshold=0.95) == pytest.approx(0.5 * 1.0)


def test_energy_in_box():
    sal = torch.zeros(10, 20)
    sal[2:4, 5:10] = 1.0
    sal[8, 19] = 2.0
    assert energy_in_box(sal, (5, 2, 10, 4)) == pytest.approx(10 / 12)
    assert energy_in_box(sal, (-5, -5, 100, 100)) == pytest.approx(1.0)
    assert energy_in_box(torch.zeros(4, 4), (0, 0, 2, 2)) == 0.0


def _setup():
    square = (20, 12, 36, 28)
    detector = BrightSquareDetector([square])
    image = squares_image(64, [square])[0]
    target = detector.detect(image.unsqueeze(0))[0]
    good = torch.zeros(1, 64, 64)
    good[0, 12:28, 20:36] = 1.0 + torch.rand(16, 16)  # the square first
    bad = 1.0 - good  # the square last
    return detector, image, target, good, bad


def test_deletion_and_insertion_curves_of_a_known_answer():
    detector, image, target, good, bad = _setup()
    d_good = detection_curves(detector, image, good, target, "deletion", n_steps=16)
    d_bad = detection_curves(detector, image, bad, target, "deletion", n_steps=16)
    assert d_good["x"][0] == 0 and d_good["x"][-1] == 1 and d_good["similarity"].shape == (1, 17)
    # the untouched image: the target matches itself (IoU 1, cosine 1, objectness 1); AP 1
    assert d_good["similarity"][0, 0] == pytest.approx(1.0) and d_good["image_ap"][0, 0] == 1.0
    # the square is 1/16 of the pixels: deleting it first kills the detection at step 1
    assert d_good["similarity"][0, 1:].max() == 0.0 and d_good["image_ap"][0, 1:].max() == 0.0
    assert d_bad["similarity"][0, :15].min() == pytest.approx(1.0)  # still there until the last step
    i_good = detection_curves(detector, image, good, target, "insertion", n_steps=16)
    assert i_good["similarity"][0, 0] == 0.0 and i_good["similarity"][0, 1:].min() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid: \\['deletion', 'insertion'\\]"):
        detection_curves(detector, image, good, target, "both")


def test_metric_class_averages_targets_and_uses_ground_truth():
    detector, image, target, good, bad = _setup()
    metric = DetectionInsertionDeletion(detector, n_steps=16)
    metric.update(image.unsqueeze(0), [good], [target])
    metric.update(image.unsqueeze(0), [bad], [target])
    out = metric.compute()
    assert list(out) == ["deletion_similarity", "deletion_image_ap", "insertion_similarity", "insertion_image_ap"]
    per = metric.per_target
    assert per.shape == (2, 4)
    # trapezoid areas by hand: good deletion 1 -> 0 after the first 1/16; bad deletion drops at the end
    assert per[0, 0] == pytest.approx(0.5 / 16) and per[1, 0] == pytest.approx(15 / 16 + 0.5 / 16)
    assert per[0, 2] == pytest.approx(1 - 0.5 / 16)
    assert out["deletion_similarity"] == pytest.approx(float(per[:, 0].mean()))
    # ground truth elsewhere: AP is 0 throughout
    gt = [(torch.tensor([[40.0, 40, 60, 60]]), torch.tensor([0]))]
    other = DetectionInsertionDeletion(detector, modes=["deletion"], n_steps=4)
    other.update(image.unsqueeze(0), [good], [target], gt)
    assert other.compute()["deletion_image_ap"] == 0.0
    with pytest.raises(ValueError, match="Invalid modes"):
        DetectionInsertionDeletion(detector, modes=["sideways"])
