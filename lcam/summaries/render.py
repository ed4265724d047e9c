"""Step 5 of the visual summaries: draw each summary, its parts in red inside their regions."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from lcam.summaries.proposals import Part
from lcam.summaries.regions import Region
from lcam.viz import panel_grid

RED = np.array([1.0, 0.0, 0.0])


def part_panel(image: np.ndarray, region: Region, part: Part, dim: float = 0.35, alpha: float = 0.6) -> np.ndarray:
    """``(H, W, 3)`` in [0, 1]: the image dimmed outside the region, the part (its box inside the
    region) tinted red, the box outlined in red.

    Args:
        image: ``(H, W, 3)`` float in [0, 1].
    """
    out = image * dim
    out[region.mask] = image[region.mask]
    x1, y1, x2, y2 = part.box
    inside = np.zeros(region.mask.shape, dtype=bool)
    inside[y1:y2, x1:x2] = True
    inside &= region.mask
    out[inside] = (1 - alpha) * image[inside] + alpha * RED
    t = max(1, min(image.shape[:2]) // 112)
    for sl in ((slice(y1, min(y1 + t, y2)), slice(x1, x2)), (slice(max(y2 - t, y1), y2), slice(x1, x2)),
               (slice(y1, y2), slice(x1, min(x1 + t, x2))), (slice(y1, y2), slice(max(x2 - t, x1), x2))):
        out[sl] = RED
    return out


def summary_sheet(images: Sequence[np.ndarray], regions: Sequence[Sequence[Region]], parts: Sequence[Part],
                  members: Sequence[int], title: str, names: Sequence[str], columns: int = 6,
                  max_members: int = 18) -> Image.Image:
    """One summary as a contact sheet: a panel per member part (at most ``max_members``).

    Args:
        images: the class's images ``(H, W, 3)`` in [0, 1]; regions: per image, its regions.
        parts: every part of the class; members: the summary's part indices.
        names: image names (panel titles).
    """
    shown = list(members)[:max_members]
    panels = [part_panel(images[parts[m].image], regions[parts[m].image][parts[m].region], parts[m]) for m in shown]
    titles = [names[parts[m].image] for m in shown]
    rows = [panels[i:i + columns] for i in range(0, len(panels), columns)] or [[None]]
    grid_titles = [titles[i:i + columns] for i in range(0, len(titles), columns)]
    return panel_grid(rows, grid_titles, suptitle=title, cell=1.8)
