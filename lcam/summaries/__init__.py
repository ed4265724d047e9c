"""Visual summaries of a class: ``python -m lcam.summaries inputs=<folder> output_dir=<dir>``, or
:func:`summarise` from Python (see :mod:`lcam.summaries.pipeline`)."""
from __future__ import annotations

from lcam.summaries.pipeline import Settings, SummaryReport, summarise

__all__ = ["Settings", "SummaryReport", "summarise"]
