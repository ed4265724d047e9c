"""Parity with pytorch-grad-cam: our maps against its maps on a real photo and a real classifier.

    pip install grad-cam ttach --no-deps   # not a project requirement; --no-deps: its opencv-python-headless
                                           # would replace the project's OpenCV contrib build
    python -m benchmarks.peer_parity

Offline EfficientNet-Lite0 explained at its last conv stage, scikit-image's astronaut photo, two
classes (560 football helmet = top-1, 812 space shuttle). For every method both libraries share,
prints the Pearson r and the largest absolute difference of the two [0, 1] maps, and writes
``benchmarks/results/peer_parity.md``. pytorch-grad-cam gets a copy of the classifier that takes
the normalised tensor (so its Score-CAM masks the normalised input, as ours does with
``substrate=mean``) and has trainable parameters (it needs them to hook gradients).

HiResCAM, LayerCAM, EigenCAM and Ablation-CAM are compared the same way. EigenCAM is
compared twice: ours as the paper (``center=False``, the SVD of the raw activations) and ours with
``center=True`` (pytorch-grad-cam centres every channel before its SVD); pytorch-grad-cam also leaves
SVD's sign to LAPACK (ours: positive where the layer is active), so a negative r means a flipped
sign. On EfficientNet-Lite0 (global average pooling + linear after the explained layer) the
gradient is spatially constant, so HiResCAM equals Grad-CAM and LayerCAM equals Grad-CAM wherever
the weights are positive; the closed-form tests (``tests/test_more_cams.py``) cover a classifier
with fully connected layers, where they differ.

Known, deliberate differences: pytorch-grad-cam min-max normalises every map and then resizes it
with OpenCV (Grad-CAM order; our Score-CAM upsamples first, then normalises, as the Score-CAM
paper does), and upsamples Score-CAM's masks with ``align_corners=True`` (ours: ``False``, as
``torch.nn.functional.interpolate``'s default and every other map here).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from lcam.backbones import build_backbone
from lcam.data.demo import demo_photos
from lcam.data.transforms import eval_transform
from lcam.explainers import build_explainer

ROOT = Path(__file__).resolve().parents[1]
CLASSES = (560, 812)


class NormalisedInput(nn.Module):
    """The classifier on the normalised tensor, with trainable parameters (peer libraries need them)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features = copy.deepcopy(model.feature_extractor)
        self.head = copy.deepcopy(model.classifier_head)
        for p in self.parameters():
            p.requires_grad_(True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(z))


def astronaut(model: nn.Module) -> torch.Tensor:
    """scikit-image's astronaut photo as ``model`` sees it: ``(1, 3, 224, 224)`` in [0, 1]."""
    return eval_transform(256, 224, model.spec.interpolation or "bilinear")(dict(demo_photos())["astronaut"]).unsqueeze(0)


def main() -> None:
    from pytorch_grad_cam import (
        AblationCAM,
        EigenCAM,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "backbone" / "efficientnet_lite0.yaml"))
    model = build_backbone(spec)
    image = astronaut(model)
    peer_model = NormalisedInput(model).eval()
    z = model.normalize(image)
    peers = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "scorecam": ScoreCAM,
             "hirescam": HiResCAM, "layercam": LayerCAM, "eigencam": EigenCAM, "eigencam center=true": EigenCAM,
             "ablationcam": AblationCAM}
    lines = ["| method | class | Pearson r | max abs diff |", "|---|---|---|---|"]
    for name, peer_cls in peers.items():
        ours = build_explainer(name.split()[0], model, **({"center": True} if "center=true" in name else {}))
        with peer_cls(model=peer_model, target_layers=[peer_model.features]) as peer:
            if name in ("scorecam", "ablationcam"):
                peer.batch_size = 32
            for c in CLASSES:
                a = ours(image, c)[0].numpy()
                b = peer(input_tensor=z, targets=[ClassifierOutputTarget(c)])[0]
                r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
                line = f"| {name} | {c} | {r:.4f} | {np.abs(a - b).max():.3f} |"
                lines.append(line)
                print(line, flush=True)
    text = ("### Parity with pytorch-grad-cam 1.5 (EfficientNet-Lite0, astronaut photo)\n\n" + "\n".join(lines) + "\n\n"
            "Command: `python -m benchmarks.peer_parity`. Differences come from the order of normalisation and "
            "resizing and from OpenCV's resize, and for EigenCAM from centring and SVD's sign (see the module "
            "docstring). EigenCAM ignores the class: both rows of a variant show the same maps.\n")
    out = ROOT / "benchmarks" / "results" / "peer_parity.md"
    out.write_text(text)
    print(f"Written: {out}")


if __name__ == "__main__":
    main()
