"""Evaluate explainers over a dataset with one metric implementation (``evaluate.py``): records, reports, localisation.
May import: every layer up to lcam.explain; not lcam.detection or lcam.summaries."""
from lcam.evaluation.counting import ForwardCounter
from lcam.evaluation.evaluator import ExplainerEvaluator
from lcam.evaluation.report import to_markdown, write_tables

__all__ = ["ExplainerEvaluator", "ForwardCounter", "to_markdown", "write_tables"]

from lcam.evaluation import sanity as _sanity  # noqa: E402,F401 - registers the randomisation checks' report (results.md)
