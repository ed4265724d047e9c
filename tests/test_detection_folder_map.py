"""The paper's detection deletion / insertion: mAP over the whole folder (lcam.detection.folder_map)."""
from __future__ import annotations

import pytest
import torch

from lcam.detection.folder_map import (
    AGAINST_DETECTIONS,
    AGAINST_GT,
    FolderDeletionInsertion,
    box_maps,
    folder_average_precision,
    image_saliency,
)
from lcam.detection.metrics import DetectionInsertionDeletion
from lcam.detection.synthetic import BrightSquareDetector, squares_image

E = torch.zeros(0, 4)


def _dets(*rows):
    """(boxes, scores, labels) from (x1, y1, x2, y2, score, label) rows."""
    if not rows:
        return E, torch.zeros(0), torch.zeros(0, dtype=torch.long)
    t = torch.tensor(rows, dtype=torch.float64)
    return t[:, :4].float(), t[:, 4], t[:, 5].long()


def _crafted(any_class_in_image1: bool = False):
    A, B, C, D, Ebox = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 10, 10], [5, 5, 15, 15]
    gt = [
        (torch.tensor([A, B, C], dtype=torch.float32), torch.tensor([0, 0, 1])),          # image 0: three objects
        (torch.tensor([D], dtype=torch.float32), torch.tensor([-1 if any_class_in_image1 else 0])),  # image 1: missed
        (E, torch.zeros(0, dtype=torch.long)),                                             # image 2: no object
        (torch.tensor([Ebox], dtype=torch.float32), torch.tensor([0])),                    # image 3
    ]
    dets = [
        _dets((*A, 0.9, 0), (20, 20, 30, 31, 0.6, 0), (*C, 0.8, 1)),    # TP (A), TP (B, IoU 10/11), TP (class 1)
        _dets(),                                                         # no detections
        _dets((0, 0, 10, 10, 0.7, 0)),                                   # a false positive
        _dets((*Ebox, 0.95, 0), (*Ebox, 0.5, 0), (60, 60, 70, 70, 0.99, 2)),  # TP, duplicate FP, class 2 (no GT of it)
    ]
    return dets, gt


def test_folder_ap_by_hand():
    dets, gt = _crafted()
    m, per_class = folder_average_precision(dets, gt)
    # class 0, 4 boxes (A, B, D, E), detections by score over the folder:
    #   0.95 TP, 0.90 TP, 0.70 FP, 0.60 TP, 0.50 FP -> precision 1, 1, 2/3, 3/4, 3/5 at recall 1/4, 1/2, 1/2, 3/4, 3/4
    #   envelope 1, 1, 3/4, 3/4, 3/5 -> AP = 1/4 + 1/4 + 1/4 * 3/4 = 0.6875 (D, missed, caps the recall at 3/4)
    # class 1: its one box found first -> 1.0; class 2 has no ground truth: not scored (VOC/COCO)
    assert per_class == pytest.approx({0: 0.6875, 1: 1.0})
    assert m == pytest.approx((0.6875 + 1.0) / 2)
    # a box without a class makes the folder class-agnostic: 5 boxes, 7 detections by score:
    #   FP (class 2), TP, TP, TP, FP, TP, FP -> precision 0, 1/2, 2/3, 3/4, 3/5, 2/3, 4/7 at recall 0, .2, .4, .6, .6, .8, .8
    #   envelope 3/4, 3/4, 3/4, 3/4, 2/3, 2/3, 4/7 -> AP = 3 * 0.2 * 3/4 + 0.2 * 2/3
    dets, gt = _crafted(any_class_in_image1=True)
    m, per_class = folder_average_precision(dets, gt)
    assert list(per_class) == [0] and m == pytest.approx(0.45 + 0.2 * 2 / 3)
    # no ground truth anywhere: undefined
    assert torch.isnan(torch.tensor(folder_average_precision([_dets()], [(E, torch.zeros(0, dtype=torch.long))])[0]))
    # one image, the per-image AP agrees
    from lcam.detection.metrics import average_precision

    d, g = _crafted()
    assert folder_average_precision([d[0]], [g[0]])[1][0] == pytest.approx(
        average_precision(d[0][0][d[0][2] == 0], d[0][1][d[0][2] == 0], g[0][0][:2]))


def test_image_saliency_max_keeps_each_objects_peak_first():
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[1, 3, 3] = 1.0, 1.0  # each object's own peak
    maps[:, 1, 1] = 0.6  # a pixel both maps find somewhat salient (shared context)
    before = maps.clone()
    top = lambda sal: set(sal.reshape(-1).argsort(descending=True, stable=True)[:2].tolist())  # noqa: E731
    assert top(image_saliency(maps, "max")) == {0, 15}  # both peaks first
    assert 5 in top(image_saliency(maps, "sum"))  # the shared pixel (1.2) before a peak (1.0)
    assert torch.equal(maps, before)  # the caller's maps are not changed
    single = image_saliency(maps[:1], "max")
    assert torch.equal(single, image_saliency(maps[:1], "sum"))
    with pytest.raises(ValueError, match=r"valid: \['max', 'sum', 'mean'\]"):
        image_saliency(maps, "median")
    b = box_maps(torch.tensor([[4.0, 4, 8, 8]]), (12, 12))
    assert b.shape == (1, 12, 12) and b[0, 5:7, 5:7].min() == b[0].max()  # the four pixels around the centre (6, 6) first


SQ0, SQ1 = (4, 4, 20, 20), (36, 36, 52, 52)


def _folder():
    """Image 0: square 0 (found); image 1: square 1 is in the ground truth but dim (missed)."""
    det = BrightSquareDetector([SQ0, SQ1])
    img0 = squares_image(64, [SQ0])[0]
    img1 = squares_image(64, [])[0]
    gt0 = (torch.tensor([SQ0], dtype=torch.float32), torch.tensor([0]))
    gt1 = (torch.tensor([SQ1], dtype=torch.float32), torch.tensor([1]))
    good = torch.zeros(1, 64, 64)
    good[0, 4:20, 4:20] = 1.0 + torch.rand(16, 16)  # the square first
    return det, img0, img1, gt0, gt1, good


def test_folder_protocol_end_to_end_and_streaming():
    det, img0, img1, gt0, gt1, good = _folder()
    target = det.detect(img0.unsqueeze(0))[0]
    det.seen = 0
    metric = FolderDeletionInsertion(det, explainers=["good", "bad"], n_steps=16, batch_size=5)
    metric.update(0, img0, {"good": good, "bad": 1.0 - good}, gt0)
    metric.update(1, img1, {"good": torch.zeros(0, 64, 64), "bad": torch.zeros(0, 64, 64)}, gt1)  # no map: random order
    # streaming: (n_steps + 1) x modes x explainers passes per image, and only detection rows are kept
    assert det.seen == 2 * 17 * 2 * 2
    assert all(r.shape[1] == 9 for r in metric.det_rows)
    assert metric.against == AGAINST_GT
    curves = metric.curves()
    # the square is 1/16 of the pixels; class 0 found in image 0 (AP 1), class 1 missed in image 1 (AP 0)
    assert curves[("deletion", "good")][0] == pytest.approx(0.5)  # the missed object counts
    assert curves[("deletion", "good")][1:].max() == 0.0  # deleted first: gone at the first step
    assert curves[("deletion", "bad")][:15].min() == pytest.approx(0.5)  # deleted last
    assert curves[("insertion", "good")][0] == 0.0 and curves[("insertion", "good")][1:].min() == pytest.approx(0.5)
    out = metric.compute()
    assert set(out) == {"deletion/good", "deletion/bad", "insertion/good", "insertion/bad"}
    assert out["deletion/good"] == pytest.approx(0.5 * 0.5 / 16)  # trapezoid: 0.5 -> 0 over the first 1/16
    assert out["deletion/good"] < out["deletion/bad"] and out["insertion/good"] > out["insertion/bad"]
    with pytest.raises(ValueError, match="for every image of the folder or for none"):
        metric.update(2, img0, {"good": good, "bad": good}, None)
    # without ground truth: against the detector's own detections, mAP(0) = 1 by construction
    own = FolderDeletionInsertion(det, explainers=["good"], modes=["deletion"], n_steps=4)
    own.update(0, img0, {"good": good})
    assert own.against == AGAINST_DETECTIONS and own.curves()[("deletion", "good")][0] == 1.0
    assert torch.equal(target.boxes, det.detect(img0.unsqueeze(0))[0].boxes)


def test_the_folder_protocol_and_the_per_image_diagnostic_differ():
    """The per-image AP sees only the explained detection's class in its own image: the missed
    object of image 1 never enters it, and a false positive elsewhere does not lower it. The folder
    mAP counts both."""
    det, img0, img1, gt0, gt1, good = _folder()
    target = det.detect(img0.unsqueeze(0))[0]
    per_image = DetectionInsertionDeletion(det, modes=["deletion"], n_steps=16)
    per_image.update(img0.unsqueeze(0), [good], [target], [gt0])
    per_image.update(img1.unsqueeze(0), [torch.zeros(0, 64, 64)], [det.detect(img1.unsqueeze(0))[0]], [gt1])  # no target
    folder = FolderDeletionInsertion(det, explainers=["drise"], modes=["deletion"], n_steps=16)
    folder.update(0, img0, {"drise": good}, gt0)
    folder.update(1, img1, {"drise": torch.zeros(0, 64, 64)}, gt1)
    image_ap = per_image.mean_curves()["deletion_image_ap"]
    folder_map = folder.curves()[("deletion", "drise")]
    assert image_ap[0] == 1.0 and folder_map[0] == pytest.approx(0.5)
    assert per_image.compute()["deletion_image_ap"] == pytest.approx(0.5 / 16)
    assert folder.compute()["deletion/drise"] == pytest.approx(0.25 / 16)
    # same two images, the missed square now in the ground truth of image 0 instead: per image, the
    # target's class (0) ignores the class-1 box; the folder mAP still halves
    both = (torch.tensor([SQ0, SQ1], dtype=torch.float32), torch.tensor([0, 1]))
    per_image.reset()
    per_image.update(img0.unsqueeze(0), [good], [target], [both])
    assert per_image.mean_curves()["deletion_image_ap"][0] == 1.0
    f2 = FolderDeletionInsertion(det, explainers=["drise"], modes=["deletion"], n_steps=2)
    f2.update(0, img0, {"drise": good}, both)
    assert f2.curves()[("deletion", "drise")][0] == pytest.approx(0.5)
