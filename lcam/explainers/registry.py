"""The registry of explainers: each method registers itself with ``@register_explainer`` on its class
(as timm's ``@register_model``), and :data:`EXPLAINERS` maps the class's ``name`` to it."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from lcam.explainers.base import Explainer

E = TypeVar("E", bound="type[Explainer]")

#: registry name -> explainer class, in registration order (the order commands list the methods in)
EXPLAINERS: dict[str, type[Explainer]] = {}


def register_explainer(cls: E) -> E:
    """Class decorator: add ``cls`` to :data:`EXPLAINERS` under ``cls.name`` (lower case, unique)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"{cls.__name__}: an explainer registers under a lower-case `name` class attribute, got {name!r}")
    if EXPLAINERS.get(name, cls) is not cls:
        raise ValueError(f"{cls.__name__}: the explainer name {name!r} is taken by {EXPLAINERS[name].__name__}")
    EXPLAINERS[name] = cls
    return cls
