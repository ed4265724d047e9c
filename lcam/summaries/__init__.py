"""Visual summaries of a class: ``python -m lcam.summaries inputs=<folder> output_dir=<dir>``, or
:func:`summarise` from Python (see :mod:`lcam.summaries.pipeline`).
May import: every layer up to lcam.explain; not lcam.detection or lcam.evaluation."""
from __future__ import annotations

from lcam.summaries.pipeline import Settings, SummaryReport, summarise

__all__ = ["Settings", "SummaryReport", "summarise"]
