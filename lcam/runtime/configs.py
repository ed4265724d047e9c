"""Where the Hydra configs are, in a checkout and in an installed package, the backbone presets, and
instantiating a config group.

In a checkout the configs are ``conf/`` beside the package; ``pip install .`` ships the same files
inside the package as ``lcam/conf`` (see ``pyproject.toml``), so ``python -m lcam.explain`` and the
backbone presets (``lcam.explain("vgg16", ...)``) work from any directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from omegaconf import DictConfig

_PACKAGE = Path(__file__).resolve().parents[1]  # lcam/
_PACKAGED = _PACKAGE / "conf"
_CHECKOUT = _PACKAGE.parent / "conf"


def config_dir() -> Path:
    """The folder of the Hydra configs (``explain.yaml``, ``backbone/``...): the installed copy when
    there is one, else the checkout's ``conf/``."""
    for candidate in (_PACKAGED, _CHECKOUT):
        if (candidate / "explain.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"lcam's configs are missing: neither {_PACKAGED} nor {_CHECKOUT} holds explain.yaml; "
                            "reinstall the package (pip install .)")


def backbone_presets() -> list[str]:
    """The names of the backbone presets (``conf/backbone/<name>.yaml``)."""
    return sorted(p.stem for p in (config_dir() / "backbone").glob("*.yaml"))


def backbone_preset(name: str) -> dict[str, Any] | None:
    """The backbone identity of preset ``name`` (``vgg16`` -> conv5_3 after its ReLU, the paper's
    layer), following its ``defaults`` list; ``None`` when there is no such preset."""
    path = config_dir() / "backbone" / f"{name}.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(raw, dict)
    cfg: dict[str, Any] = {}
    for parent in raw.pop("defaults", []) or []:
        if isinstance(parent, str) and parent != "_self_":
            cfg.update(backbone_preset(parent) or {})
    cfg.update(raw)
    return cfg


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (``callbacks``, ``logger``).

    The project's resolvers (``${sweep_group:...}`` in the logger configs) are registered first, so
    any job that builds its loggers here resolves them, whatever it imported before.
    """
    from hydra.utils import instantiate

    import lcam.runtime.launch  # noqa: F401 - registers ${sweep_group:...}

    if not group:
        return []
    return [instantiate(node, _convert_="all") for node in group.values() if node and "_target_" in node]
