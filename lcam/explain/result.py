"""The result of explaining: :class:`Explanation`, one row per (image, class) pair, with pictures and files."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lcam.runtime.io import InputError, save_image_atomic


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe form of a class name: ``"tiger cat"`` -> ``"tiger_cat"``."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return (s[:max_len].rstrip("_") or "class").lower()


def map_stats(saliency: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Summary of one ``(H, W)`` map: max, mean and the fraction of pixels above ``threshold``."""
    m = saliency.float()
    return {"map_max": float(m.max()), "map_mean": float(m.mean()), f"map_area{int(threshold * 100)}": float((m > threshold).float().mean())}


def _stack_or_list(items: list[Tensor]) -> Tensor | list[Tensor]:
    if items and all(t.shape == items[0].shape for t in items):
        return torch.stack(items)
    return items


@dataclass
class Explanation:
    """Saliency maps of one method for some images; one row per (image, class) pair.

    Attributes:
        maps: ``(N, H, W)`` float in [0, 1] (a list of ``(H_i, W_i)`` maps when uncropped images of
            different sizes were explained).
        classes: ``(N,)`` explained class ids (the top-1 prediction for ``targets=None``).
        probs: ``(N,)`` softmax probability of the explained class.
        image_index: ``(N,)`` which image each row belongs to.
        ranks: ``(N,)`` position of the row among its image's rows (``targets="topk"``: 0 = top-1).
        images: ``(B, 3, H, W)`` the images as explained, in [0, 1] (or a list, as for ``maps``).
        predicted, predicted_probs: ``(B,)`` the classifier's top-1 class and its probability.
        labels: ``(B,)`` ground-truth ids where known, else -1.
        names: ``B`` image names (file stems / relative paths); files: ``B`` source files.
        class_names: ``N`` names of the explained classes; predicted_names: ``B``.
        method: ``"lcam"``, ``"gradcam"``, ...
        layer: the classifier layer the maps explain (``"features.29"``, ``"layer4"``...).
        positions: ``(B,)`` each image's index in the whole input (for joining batches).
    """

    maps: Tensor | list[Tensor]
    classes: Tensor
    probs: Tensor
    image_index: Tensor
    ranks: Tensor
    images: Tensor | list[Tensor]
    predicted: Tensor
    predicted_probs: Tensor
    labels: Tensor
    names: list[str]
    files: list[str]
    class_names: list[str]
    predicted_names: list[str]
    method: str
    layer: str | None = None
    positions: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    # -- sizes and rows --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.classes.numel())

    @property
    def num_images(self) -> int:
        return len(self.names)

    def map(self, row: int) -> Tensor:
        """The ``(H, W)`` map of ``row``."""
        return self.maps[row]

    def image(self, row: int) -> Tensor:
        """The ``(3, H, W)`` image of ``row``."""
        return self.images[int(self.image_index[row])]

    def title(self, row: int) -> str:
        """``"<image>: <class> (<prob>)"``."""
        return f"{self.names[int(self.image_index[row])]}: {self.class_names[row]} ({float(self.probs[row]):.2f})"

    def filename(self, row: int) -> str:
        """``<image>_<class id>_<class name>_<method>.png`` (sub-folders of the input are kept)."""
        return f"{self.names[int(self.image_index[row])]}_{int(self.classes[row])}_{slug(self.class_names[row])}_{self.method}.png"

    def stats(self, threshold: float = 0.5) -> list[dict[str, float]]:
        """Per row: ``map_max``, ``map_mean`` and ``map_area50`` (fraction of pixels above ``threshold``)."""
        return [map_stats(self.map(r), threshold) for r in range(len(self))]

    def records(self) -> list[dict[str, Any]]:
        """One dict per row (the CLI's ``results.csv`` columns, without ``status``/``overlay``)."""
        out = []
        for r, st in enumerate(self.stats()):
            b = int(self.image_index[r])
            label = int(self.labels[b])
            out.append({
                "file": self.files[b], "image": self.names[b], "method": self.method, "layer": self.layer or "",
                "rank": int(self.ranks[r]) + 1,
                "class_id": int(self.classes[r]), "class_name": self.class_names[r], "probability": round(float(self.probs[r]), 6),
                "predicted_id": int(self.predicted[b]), "predicted_name": self.predicted_names[b],
                "predicted_probability": round(float(self.predicted_probs[b]), 6),
                "label_id": label if label >= 0 else "", **{k: round(v, 6) for k, v in st.items()},
            })
        return out

    # -- pictures ----------------------------------------------------------------------------
    def overlays(self, alpha: float = 0.5, cmap: str = "jet") -> list[Image.Image]:
        """One PIL overlay (image blended with its coloured map) per row."""
        from lcam.viz import overlay_pil

        return [overlay_pil(self.image(r), self.map(r), alpha, cmap) for r in range(len(self))]

    def grid(self, max_rows: int | None = 16) -> Image.Image:
        """image | map | overlay per row (at most ``max_rows``), titled with image, class and probability."""
        from lcam.viz import colorize, overlay, panel_grid, saliency_grid, to_numpy_image

        rows = range(min(len(self), max_rows or len(self)))
        if isinstance(self.maps, Tensor) and isinstance(self.images, Tensor):
            idx = torch.as_tensor(list(rows), dtype=torch.long)
            return saliency_grid(self.images[self.image_index[idx]], self.maps[idx], [self.title(r) for r in rows])
        panels = [[to_numpy_image(self.image(r)), colorize(self.map(r)), overlay(self.image(r), self.map(r))] for r in rows]
        return panel_grid(panels, [[self.title(r), "map", "overlay"] for r in rows])

    def _repr_png_(self) -> bytes:  # shown by Jupyter
        import io

        buf = io.BytesIO()
        self.grid().save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        shape = tuple(self.maps.shape) if isinstance(self.maps, Tensor) else f"{len(self.maps)} maps"
        return f"Explanation(method={self.method!r}, layer={self.layer!r}, images={self.num_images}, rows={len(self)}, maps={shape})"

    def save(self, directory: str | os.PathLike, alpha: float = 0.5, cmap: str = "jet", maps: bool = False) -> list[Path]:
        """Write one overlay PNG per row into ``directory`` (named by :meth:`filename`), atomically.

        Args:
            maps: also write the raw map as an 8-bit grayscale ``..._map.png``.

        Returns:
            The overlay paths, one per row.
        """
        from lcam.viz import overlay_pil

        out = Path(directory)
        paths = []
        for r in range(len(self)):
            path = out / self.filename(r)
            save_image_atomic(overlay_pil(self.image(r), self.map(r), alpha, cmap), path)
            if maps:
                gray = Image.fromarray((self.map(r).float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8), mode="L")
                save_image_atomic(gray, path.with_name(path.stem + "_map.png"))
            paths.append(path)
        return paths

    # -- assembling ----------------------------------------------------------------------------
    @staticmethod
    def concat(parts: Sequence["Explanation"]) -> "Explanation":
        """Join batch results, ordering images by their position in the input."""
        if not parts:
            raise InputError("Nothing was explained")
        if len(parts) == 1 and bool((parts[0].positions.diff() >= 0).all()):
            return parts[0]
        per_image: list[tuple[int, dict[str, Any]]] = []
        for p in parts:
            for b in range(p.num_images):
                rows = (p.image_index == b).nonzero().flatten().tolist()
                per_image.append((int(p.positions[b]), {
                    "image": p.images[b], "pred": p.predicted[b], "pred_p": p.predicted_probs[b], "label": p.labels[b],
                    "name": p.names[b], "file": p.files[b], "pred_name": p.predicted_names[b],
                    "maps": [p.maps[r] for r in rows], "classes": p.classes[rows], "probs": p.probs[rows], "ranks": p.ranks[rows],
                    "class_names": [p.class_names[r] for r in rows],
                }))
        per_image.sort(key=lambda t: t[0])
        recs = [rec for _, rec in per_image]
        maps = [m for rec in recs for m in rec["maps"]]
        return Explanation(
            maps=_stack_or_list(maps),
            classes=torch.cat([rec["classes"] for rec in recs]),
            probs=torch.cat([rec["probs"] for rec in recs]),
            image_index=torch.cat([torch.full((len(rec["maps"]),), b, dtype=torch.long) for b, rec in enumerate(recs)]),
            ranks=torch.cat([rec["ranks"] for rec in recs]),
            images=_stack_or_list([rec["image"] for rec in recs]),
            predicted=torch.stack([rec["pred"] for rec in recs]),
            predicted_probs=torch.stack([rec["pred_p"] for rec in recs]),
            labels=torch.stack([rec["label"] for rec in recs]),
            names=[rec["name"] for rec in recs], files=[rec["file"] for rec in recs],
            class_names=[c for rec in recs for c in rec["class_names"]],
            predicted_names=[rec["pred_name"] for rec in recs],
            method=parts[0].method,
            layer=parts[0].layer,
            positions=torch.tensor([pos for pos, _ in per_image], dtype=torch.long),
        )
