"""torchvision detection adapters (random weights: no downloads)."""
from __future__ import annotations

import pytest
import torch
import torchvision

from lcam.detection.torchvision_models import (
    FasterRCNNDetector,
    TorchvisionDetector,
    build_torchvision_model,
    torchvision_detector,
)
from lcam.detection.weights import DetectorWeightsError

SMALL = dict(min_size=96, max_size=128)


@pytest.fixture(scope="module")
def frcnn():
    torch.manual_seed(0)
    return torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None,
                                        num_classes=5, **SMALL).eval()


def test_faster_rcnn_proposals_carry_full_vectors_and_match_torchvision(frcnn):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 80, 112)
    det = FasterRCNNDetector(frcnn, class_names=["__background__", "a", "b", "c", "d"])
    props = det.proposals(images)
    assert len(props) == 2 and props[0].objectness is None
    p = props[0]
    assert p.probs.shape == (len(p), 5) and torch.allclose(p.probs.sum(1), torch.ones(len(p)), atol=1e-5)
    assert (p.boxes[:, 0] >= 0).all() and (p.boxes[:, 2] <= 112 + 1e-3).all() and (p.boxes[:, 3] <= 80 + 1e-3).all()
    # torchvision's own output with no threshold and no NMS holds every (proposal, class) pair:
    # each proposal's top foreground class, box and probability must be among them
    ref = FasterRCNNDetector(frcnn).model  # a private copy: the fixture stays untouched
    ref.roi_heads.score_thresh, ref.roi_heads.nms_thresh, ref.roi_heads.detections_per_img = 0.0, 1.0, 100000
    out = ref([images[0]])[0]
    fg = p.probs[:, 1:].max(1)
    for k in range(0, len(p), max(1, len(p) // 20)):
        same = (out["labels"] == fg.indices[k] + 1) & ((out["scores"] - fg.values[k]).abs() < 1e-6)
        assert ((out["boxes"][same] - p.boxes[k]).abs().max(1).values < 1e-3).any()
    assert frcnn.roi_heads.score_thresh == 0.05 and not frcnn.training  # the caller's model is unchanged


def test_faster_rcnn_detect_drops_background(frcnn):
    det = FasterRCNNDetector(frcnn, class_names=["__background__", "a", "b", "c", "d"], score_threshold=0.0)
    dets = det.detect(torch.rand(1, 3, 64, 64))[0]
    assert len(dets) > 0 and (dets.labels > 0).all()
    assert torch.allclose(dets.scores, dets.probs[:, 1:].max(1).values)
    assert (dets.scores[:-1] >= dets.scores[1:]).all()


def test_retinanet_top_class_vectors():
    det = torchvision_detector("retinanet_resnet50_fpn", weights="none", score_threshold=0.0, proposal_threshold=0.0,
                               proposal_limit=50, **SMALL)
    assert isinstance(det, TorchvisionDetector) and det.full_vectors is False and det.num_classes == 91
    p = det.proposals(torch.rand(1, 3, 64, 96))[0]
    assert 0 < len(p) <= 50 and p.probs.shape == (len(p), 91)
    assert torch.allclose(p.probs.sum(1), torch.ones(len(p)), atol=1e-5)
    assert torch.allclose(p.probs.max(1).values, p.scores)


def test_unknown_detector_and_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="valid: .*fasterrcnn_resnet50_fpn"):
        build_torchvision_model("yolov9")
    with pytest.raises(DetectorWeightsError, match="detector.weights=/path/to/file.pth"):
        build_torchvision_model("ssdlite320_mobilenet_v3_large", weights=tmp_path / "nope.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there: offline
    with pytest.raises(DetectorWeightsError, match=r"detector.weights=/path/to/ssdlite320_mobilenet_v3_large_coco-a79551df\.pth"):
        build_torchvision_model("ssdlite320_mobilenet_v3_large", weights="coco")
