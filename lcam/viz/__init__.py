"""Pictures of maps: overlays and boxes (overlays.py), grids and panels (grids.py), for the CLI, notebooks and loggers.
May import: lcam.runtime and lcam.maps; nothing that computes a map or a metric."""
from lcam.viz.grids import comparison_grid, figure_to_pil, panel_grid, saliency_grid
from lcam.viz.overlays import colorize, draw_box, overlay, overlay_pil, to_numpy_image

__all__ = ["colorize", "draw_box", "overlay", "overlay_pil", "to_numpy_image",
           "comparison_grid", "figure_to_pil", "panel_grid", "saliency_grid"]
