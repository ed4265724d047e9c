"""mkdocs hook: the Sphinx cross-reference roles of the docstrings, rendered as code.

The package's docstrings are Google style with Sphinx roles (``:func:`build_explainer```,
``:class:`~lcam.backbones.frozen.FrozenClassifier```), which mkdocstrings prints verbatim
(":func:" before the code). This drops the role and, as Sphinx does for a leading ``~``, keeps
only the last component of the name. The docstrings themselves stay as they are.
"""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|const|ref):<code>(~?)([^<]*)</code>")


def _code(match: re.Match) -> str:
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html: str, page, config, files) -> str:
    return ROLE.sub(_code, html)
