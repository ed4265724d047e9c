"""YOLOv3-tiny (and other small darknet cfgs) as plain PyTorch, loading official darknet weights.

Layers: ``convolutional`` (conv + batch norm + leaky ReLU 0.1, or conv + bias + linear),
``maxpool`` (darknet pads ``size - 1`` on the right/bottom: a stride-2 pool of an odd map rounds
up, the stride-1 pool keeps the size), ``upsample`` (nearest), ``route`` (concatenation),
``shortcut`` and ``yolo`` heads. The network input is the image resized to ``input_size`` (416,
no letterbox, as OpenCV's darknet reader is used); boxes are mapped back to the image's pixels.

Each YOLO cell and anchor gives a proposal: centre ``((sigmoid(tx) + cx) / gw, (sigmoid(ty) + cy) / gh)``,
size ``(exp(tw) * anchor_w / net_w, exp(th) * anchor_h / net_h)`` as fractions of the image,
objectness ``sigmoid(to)`` and independent class probabilities ``sigmoid(tc)`` (80 COCO classes):
exactly D-RISE's detection vector. YOLOv3-tiny at 416 px gives 13*13*3 + 26*26*3 = 2535 proposals.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lcam.detection.base import Detections, Detector
from lcam.detection.weights import DetectorWeightsError, yolov3_tiny_files

#: batch-norm epsilon of OpenCV's darknet reader (1e-6; agrees with it to ~6e-6 where 1e-5 gives ~4e-5)
BN_EPS = 1e-6


def parse_cfg(text: str) -> list[dict[str, str]]:
    """A darknet ``.cfg`` -> ``[{"type": "net", key: value, ...}, ...]`` (comments dropped)."""
    blocks: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            blocks.append({"type": line.strip("[]").strip()})
        elif "=" in line and blocks:
            key, value = line.split("=", 1)
            blocks[-1][key.strip()] = value.strip()
    if not blocks or blocks[0]["type"] not in ("net", "network"):
        raise ValueError("Not a darknet cfg: it must start with a [net] section")
    return blocks


class MaxPoolDarknet(nn.Module):
    """Darknet's max-pool: pads ``size - 1`` pixels on the right and bottom (replicated, which for
    a maximum equals darknet's -inf), so a stride-1 pool keeps the size and a stride-2 pool of an
    odd map rounds up."""

    def __init__(self, size: int, stride: int) -> None:
        super().__init__()
        self.size, self.stride = size, stride

    def forward(self, x: Tensor) -> Tensor:
        pad = self.size - 1
        if pad:
            x = F.pad(x, (0, pad, 0, pad), mode="replicate")
        return F.max_pool2d(x, self.size, self.stride)


class YoloHead(nn.Module):
    """Decodes one YOLO output ``(B, A*(5+C), gh, gw)`` into proposals.

    Returns boxes ``(B, A*gh*gw, 4)`` as fractions of the image (cx, cy, w, h), objectness
    ``(B, A*gh*gw)`` and class probabilities ``(B, A*gh*gw, C)``, ordered (row, column, anchor).
    """

    def __init__(self, anchors: list[tuple[float, float]], num_classes: int, net_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net_size = net_size  # (h, w) the anchors are measured in
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, _, gh, gw = x.shape
        a = self.anchors.shape[0]
        p = x.view(b, a, 5 + self.num_classes, gh, gw).permute(0, 3, 4, 1, 2)  # (B, gh, gw, A, 5+C)
        gy, gx = torch.meshgrid(torch.arange(gh, device=x.device, dtype=x.dtype),
                                torch.arange(gw, device=x.device, dtype=x.dtype), indexing="ij")
        cx = (p[..., 0].sigmoid() + gx.view(1, gh, gw, 1)) / gw
        cy = (p[..., 1].sigmoid() + gy.view(1, gh, gw, 1)) / gh
        w = p[..., 2].exp() * self.anchors[:, 0].to(x.dtype) / self.net_size[1]
        h = p[..., 3].exp() * self.anchors[:, 1].to(x.dtype) / self.net_size[0]
        boxes = torch.stack([cx, cy, w, h], dim=-1).reshape(b, -1, 4)
        return boxes, p[..., 4].sigmoid().reshape(b, -1), p[..., 5:].sigmoid().reshape(b, -1, self.num_classes)


class DarknetNet(nn.Module):
    """The network a darknet cfg describes (conv/maxpool/upsample/route/shortcut/yolo).

    ``forward(x)`` with ``x`` ``(B, 3, net_h, net_w)`` in [0, 1] returns the YOLO heads' outputs
    concatenated: boxes ``(B, P, 4)`` (cx, cy, w, h fractions), objectness ``(B, P)``, class
    probabilities ``(B, P, C)``. :meth:`raw_outputs` gives the heads' raw inputs (for parity checks).
    """

    def __init__(self, blocks: list[dict[str, str]]) -> None:
        super().__init__()
        net = blocks[0]
        self.net_size = (int(net.get("height", 416)), int(net.get("width", 416)))
        self.blocks = blocks[1:]
        self.layers = nn.ModuleList()
        channels: list[int] = []
        c = int(net.get("channels", 3))
        for i, blk in enumerate(self.blocks):
            kind = blk["type"]
            if kind == "convolutional":
                bn = int(blk.get("batch_normalize", 0))
                filters, size, stride = int(blk["filters"]), int(blk["size"]), int(blk.get("stride", 1))
                pad = size // 2 if int(blk.get("pad", 0)) else int(blk.get("padding", 0))
                mod = nn.Sequential()
                mod.add_module("conv", nn.Conv2d(c, filters, size, stride, pad, bias=not bn))
                if bn:
                    mod.add_module("bn", nn.BatchNorm2d(filters, eps=BN_EPS))
                act = blk.get("activation", "linear")
                if act == "leaky":
                    mod.add_module("act", nn.LeakyReLU(0.1))
                elif act != "linear":
                    raise ValueError(f"cfg layer {i}: activation {act!r} is not supported (leaky, linear)")
                c = filters
            elif kind == "maxpool":
                mod = MaxPoolDarknet(int(blk["size"]), int(blk.get("stride", 1)))
            elif kind == "upsample":
                mod = nn.Upsample(scale_factor=int(blk.get("stride", 2)), mode="nearest")
            elif kind == "route":
                idx = [int(v) for v in blk["layers"].split(",")]
                idx = [j if j >= 0 else i + j for j in idx]
                blk["_sources"] = ",".join(map(str, idx))
                c = sum(channels[j] for j in idx)
                mod = nn.Identity()
            elif kind == "shortcut":
                j = int(blk["from"])
                blk["_sources"] = str(j if j >= 0 else i + j)
                mod = nn.Identity()
            elif kind == "yolo":
                mask = [int(v) for v in blk["mask"].split(",")]
                anchors = [float(v) for v in blk["anchors"].split(",")]
                pairs = [(anchors[2 * m], anchors[2 * m + 1]) for m in mask]
                mod = YoloHead(pairs, int(blk["classes"]), self.net_size)
            else:
                raise ValueError(f"cfg layer {i}: [{kind}] is not supported")
            self.layers.append(mod)
            channels.append(c)

    def _run(self, x: Tensor) -> list[Tensor]:
        """Returns the raw input of every YOLO head, in order."""
        outs: list[Tensor] = []
        heads: list[Tensor] = []
        for blk, mod in zip(self.blocks, self.layers):
            kind = blk["type"]
            if kind == "route":
                srcs = [outs[int(j)] for j in blk["_sources"].split(",")]
                x = srcs[0] if len(srcs) == 1 else torch.cat(srcs, dim=1)
            elif kind == "shortcut":
                x = x + outs[int(blk["_sources"])]
            elif kind == "yolo":
                heads.append(x)
            else:
                x = mod(x)
            outs.append(x)
        return heads

    def raw_outputs(self, x: Tensor) -> list[Tensor]:
        """The YOLO heads' raw inputs ``[(B, A*(5+C), gh, gw), ...]``."""
        return self._run(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        heads = [m for blk, m in zip(self.blocks, self.layers) if blk["type"] == "yolo"]
        decoded = [head(raw) for head, raw in zip(heads, self._run(x))]
        return tuple(torch.cat(parts, dim=1) for parts in zip(*decoded))  # type: ignore[return-value]

    def fuse_batchnorm(self) -> "DarknetNet":
        """Fold every batch norm into its convolution (inference only; same outputs up to float
        rounding, ~1e-8 here) and make the leaky ReLUs in-place. Returns ``self``."""
        for mod in self.layers:
            if isinstance(mod, nn.Sequential) and hasattr(mod, "bn"):
                mod.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(mod.conv.eval(), mod.bn.eval())
                del mod.bn
            if isinstance(mod, nn.Sequential) and hasattr(mod, "act"):
                mod.act.inplace = True
        return self

    def load_darknet_weights(self, path: str | os.PathLike) -> None:
        """Load an official darknet ``.weights`` file (header, then per conv layer: BN beta, gamma,
        running mean, running variance, or the bias; then the kernel). The file must be used up
        exactly, or a ``DetectorWeightsError`` says it does not fit this cfg."""
        data = Path(path).read_bytes()
        major, minor, _ = np.frombuffer(data[:12], dtype=np.int32)
        offset = 12 + (8 if major * 10 + minor >= 2 else 4)
        values = np.frombuffer(data[offset:], dtype=np.float32)
        pos = 0

        def take(t: Tensor) -> None:
            nonlocal pos
            n = t.numel()
            if pos + n > values.size:
                raise DetectorWeightsError(f"{path} is too short for this cfg (ran out at {pos} of {values.size} values)")
            with torch.no_grad():
                t.copy_(torch.from_numpy(values[pos:pos + n].copy()).view_as(t))
            pos += n

        for blk, mod in zip(self.blocks, self.layers):
            if blk["type"] != "convolutional":
                continue
            conv = mod.conv
            if hasattr(mod, "bn"):
                bn = mod.bn
                for t in (bn.bias, bn.weight, bn.running_mean, bn.running_var):
                    take(t)
            else:
                take(conv.bias)
            take(conv.weight)
        if pos != values.size:
            raise DetectorWeightsError(f"{path} does not fit this cfg: {values.size - pos} values left over")


def read_class_names(path: str | os.PathLike) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def opencv_darknet_outputs(x: Tensor, cfg: str | os.PathLike | None = None,
                           weights: str | os.PathLike | None = None) -> np.ndarray:
    """OpenCV's darknet reader (``cv2.dnn.readNetFromDarknet``) on ``x`` ``(B, 3, net_h, net_w)`` in
    [0, 1] (already resized, as :meth:`YOLOv3Tiny.prepare` gives it): the YOLO heads' outputs
    ``(B * P, 5 + C)`` (box cx, cy, w, h as fractions, objectness, class probabilities), the
    reference of the parity check. ``cfg`` / ``weights``: the darknet files (default: the official
    YOLOv3-tiny, :func:`~lcam.detection.weights.yolov3_tiny_files`).

    Raises :class:`lcam.runtime.optional.MissingDependency` (naming the pip commands that repair it) when the
    ``cv2`` Python finds has no darknet reader (OpenCV 5, or another wheel shadowing the contrib build).
    """
    from lcam.runtime.optional import require

    require("opencv_darknet")
    import cv2

    if cfg is None or weights is None:
        files = yolov3_tiny_files(weights)
        cfg, weights = cfg or files["cfg"], files["weights"]
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x.detach().cpu().numpy())
    return np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))


class YOLOv3Tiny(Detector):
    """YOLOv3-tiny (COCO, 80 classes), official darknet weights, plain PyTorch.

    Args:
        weights: ``None`` (fetch/cache, see :mod:`lcam.detection.weights`), a path to the official
            ``yolov3-tiny.weights``, or ``"none"`` (random weights; for tests of the plumbing).
        input_size: the network's square input side (a multiple of 32; darknet's 416).
        score_threshold: final detections need ``objectness x class probability`` at least this.
        nms_iou: per-class NMS IoU of the final detections.
        cfg_path, names_path: override the cfg / class names files.
        fuse: fold batch norms into the convolutions after loading (faster, same outputs).
        channels_last: run in channels-last memory layout (faster convolutions on CPU).
    """

    name = "yolov3_tiny"
    has_objectness = True

    def __init__(self, weights: str | os.PathLike | None = None, input_size: int = 416, score_threshold: float = 0.5,
                 nms_iou: float | None = 0.45, max_detections: int | None = 100, cfg_path: str | None = None,
                 names_path: str | None = None, fuse: bool = True, channels_last: bool = True) -> None:
        if int(input_size) % 32 or int(input_size) <= 0:
            raise ValueError(f"input_size must be a positive multiple of 32 (darknet: 416), got {input_size}")
        random_init = isinstance(weights, str) and weights.lower() == "none"
        files: dict[str, Any] = {"cfg": None, "names": None, "weights": None} if random_init else yolov3_tiny_files(weights)
        cfg_file = Path(cfg_path) if cfg_path else files["cfg"]
        names = read_class_names(names_path or files["names"]) if (names_path or files["names"]) else COCO80
        super().__init__(names, score_threshold, nms_iou, max_detections)
        blocks = parse_cfg(Path(cfg_file).read_text() if cfg_file else YOLOV3_TINY_CFG)
        blocks[0]["width"] = blocks[0]["height"] = str(int(input_size))
        self.net = DarknetNet(blocks)
        if files["weights"] is not None:
            self.net.load_darknet_weights(files["weights"])
        self.input_size = int(input_size)
        self.weights_file = None if files["weights"] is None else str(files["weights"])
        self.eval().requires_grad_(False)
        if fuse:
            self.net.fuse_batchnorm()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def prepare(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> the network input ``(B, 3, S, S)`` (bilinear resize, no letterbox)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        s = self.input_size
        if images.shape[-2:] == (s, s):
            return images
        return F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=False)

    @torch.no_grad()
    def proposals(self, images: Tensor) -> list[Detections]:
        h, w = images.shape[-2:]
        x = self.prepare(images)
        boxes, obj, probs = self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)
        scale = boxes.new_tensor([w, h, w, h])
        xyxy = torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], dim=-1) * scale
        xyxy = torch.minimum(xyxy.clamp(min=0), scale)  # clipped to the image
        return [Detections(xyxy[i], probs[i], obj[i]) for i in range(images.shape[0])]


#: the official ``yolov3-tiny.cfg`` without its comments and blank lines (for random weights; with
#: the real weights the cfg shipped beside them is read)
YOLOV3_TINY_CFG = """\
[net]
batch=1
subdivisions=1
width=416
height=416
channels=3
momentum=0.9
decay=0.0005
angle=0
saturation = 1.5
exposure = 1.5
hue=.1
learning_rate=0.001
burn_in=1000
max_batches = 500200
policy=steps
steps=400000,450000
scales=.1,.1
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=64
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=128
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=256
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=512
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=1
[convolutional]
batch_normalize=1
filters=1024
size=3
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=256
size=1
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=512
size=3
stride=1
pad=1
activation=leaky
[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear
[yolo]
mask = 3,4,5
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=80
num=6
jitter=.3
ignore_thresh = .7
truth_thresh = 1
random=1
[route]
layers = -4
[convolutional]
batch_normalize=1
filters=128
size=1
stride=1
pad=1
activation=leaky
[upsample]
stride=2
[route]
layers = -1, 8
[convolutional]
batch_normalize=1
filters=256
size=3
stride=1
pad=1
activation=leaky
[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear
[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=80
num=6
jitter=.3
ignore_thresh = .7
truth_thresh = 1
random=1
"""

#: COCO's 80 class names in darknet order (used with random weights, when no coco.names is at hand)
COCO80 = [
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
