"""Grids and panels of images, maps and overlays as PIL images (matplotlib, no display needed)."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

from lcam.viz.overlays import colorize, overlay, to_numpy_image  # noqa: E402


def figure_to_pil(fig: plt.Figure) -> Image.Image:
    fig.canvas.draw()
    img = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return img


def saliency_grid(images: Tensor, maps: Tensor, titles: Sequence[str], cell: float = 2.2) -> Image.Image:
    """One row per image: image | map | overlay, titled with ``titles[i]`` (e.g. class name).

    Args:
        images: ``(B, 3, H, W)`` in [0, 1]. maps: ``(B, H, W)`` in [0, 1].
    """
    b = images.shape[0]
    fig, axes = plt.subplots(b, 3, figsize=(3 * cell, b * cell), squeeze=False)
    for i in range(b):
        panels = (to_numpy_image(images[i]), colorize(maps[i]), overlay(images[i], maps[i]))
        for ax, panel in zip(axes[i], panels):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(titles[i], fontsize=8)
    for ax, name in zip(axes[0], ("image", "map", "overlay")):
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    return figure_to_pil(fig)


def comparison_grid(images: Tensor, maps_by_row: dict[str, Tensor], column_titles: Sequence[str] | None = None,
                    cell: float = 1.8) -> Image.Image:
    """Rows = methods (or classes), columns = images, overlays in every cell (paper Fig. 3 / Fig. 4).

    Args:
        images: ``(N, 3, H, W)`` in [0, 1]. maps_by_row: row label -> ``(N, H, W)`` maps.
    """
    rows = list(maps_by_row)
    n = images.shape[0]
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(n * cell, (len(rows) + 1) * cell), squeeze=False)
    for j in range(n):
        axes[0][j].imshow(to_numpy_image(images[j]))
        if column_titles is not None:
            axes[0][j].set_title(column_titles[j], fontsize=7)
        for i, row in enumerate(rows, 1):
            axes[i][j].imshow(overlay(images[j], maps_by_row[row][j]))
    for i, row in enumerate(["image", *rows]):
        axes[i][0].set_ylabel(row, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_to_pil(fig)


def panel_grid(panels: Sequence[Sequence[np.ndarray | None]], titles: Sequence[Sequence[str]] | None = None,
               row_labels: Sequence[str] | None = None, suptitle: str | None = None, cell: float = 2.2) -> Image.Image:
    """A grid of titled panels (class-specific maps, misclassification contact sheets).

    Args:
        panels: rows of ``(H, W, 3)`` float arrays in [0, 1] (e.g. from :func:`overlay`); ``None``
            leaves a cell blank, and rows may differ in length.
        titles: per-cell titles, same layout as ``panels``.
        row_labels: one label per row, written left of its first cell.
        suptitle: a title over the whole sheet.
    """
    n_rows = max(1, len(panels))
    n_cols = max([len(r) for r in panels] + [1])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * cell, n_rows * cell + (0.3 if suptitle else 0.0)), squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            panel = panels[i][j] if i < len(panels) and j < len(panels[i]) else None
            if panel is None:
                ax.axis("off")
                continue
            ax.imshow(np.clip(panel, 0, 1))
            if titles is not None and i < len(titles) and j < len(titles[i]) and titles[i][j]:
                ax.set_title(titles[i][j], fontsize=7)
        if row_labels is not None and i < len(row_labels):
            axes[i][0].axis("on")
            axes[i][0].set_ylabel(row_labels[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return figure_to_pil(fig)
