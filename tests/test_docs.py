"""The documentation site under ``docs/`` is held to the README's standard (``tests/test_readme.py``):
every ``python train.py`` / ``python evaluate.py`` / ``python -m lcam.explain`` / ``python -m lcam.summaries``
command of a page composes with the real Hydra configs (placeholders replaced by local paths), and every
Python snippet compiles and uses only names it defines. ``mkdocs.yml``'s navigation names only pages that
exist (hand-written under ``docs/`` or a benchmark report added by ``docs/hooks/results.py``), and every
hand-written page is in it. Building the site (``mkdocs build --strict``: links, anchors, API references)
is ``.ci/run``'s last step, not a test (mkdocs is in ``docs/requirements.txt``, not ``requirements.txt``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.test_readme import (  # noqa: F401 - ``local`` is a fixture used below
    Command,
    compose_command,
    local,
    python_snippets,
    readme_commands,
    undefined_names,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


COMMANDS: list[tuple[str, Command]] = [(_rel(p), c) for p in PAGES for c in readme_commands(p.read_text())]
SNIPPETS: list[tuple[str, int, str]] = [(_rel(p), line, code) for p in PAGES for line, code in python_snippets(p.read_text())]


def test_docs_have_commands_for_every_entry_point():
    assert {c.config for _, c in COMMANDS} == {"train", "evaluate", "explain", "summaries"}
    assert len(COMMANDS) >= 60


@pytest.mark.parametrize("page, cmd", COMMANDS, ids=[f"{p.removeprefix('docs/')}:L{c.line}-{c.config}" for p, c in COMMANDS])
def test_docs_command_composes(page: str, cmd: Command, local):
    try:
        assert compose_command(cmd, local) is not None
    except AssertionError as err:  # the README test names README.md; name the page instead
        raise AssertionError(str(err).replace(f"README.md:{cmd.line}", f"{page}:{cmd.line}", 1)) from None


@pytest.mark.parametrize("page, line, code", SNIPPETS, ids=[f"{p.removeprefix('docs/')}:L{line}" for p, line, _ in SNIPPETS])
def test_docs_python_snippet_defines_what_it_uses(page: str, line: int, code: str):
    compile(code, f"{page}:{line}", "exec")
    assert not undefined_names(code), f"{page}:{line}: the snippet uses {sorted(undefined_names(code))} without defining them"


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return [p for item in nav for p in _nav_pages(item)]


def _mkdocs_config() -> dict:
    class Loader(yaml.SafeLoader):  # mkdocs.yml may use !!python/name tags (material's emoji); none needed here
        pass

    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_nav_names_existing_pages_and_every_written_page():
    nav = _nav_pages(_mkdocs_config()["nav"])
    generated = {f"results/{p.name}" for p in RESULTS.glob("*.md")}
    written = {str(p.relative_to(DOCS)) for p in PAGES}
    missing = [p for p in nav if p not in written and p not in generated]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"
    assert not written - set(nav), f"pages under docs/ missing from mkdocs.yml's nav: {sorted(written - set(nav))}"


def test_hook_adds_every_report_and_its_figures(tmp_path):
    """``docs/hooks/results.py`` turns each report into a page and shows the figures it names."""
    import importlib.util

    pytest.importorskip("mkdocs", reason="the docs requirements (pip install -r docs/requirements.txt); CI builds the site")

    spec = importlib.util.spec_from_file_location("results_hook", DOCS / "hooks" / "results.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)  # type: ignore[union-attr]
    report = RESULTS / "leaderboard_imagenette.md"
    page = hook._page(report)
    assert page.startswith(report.read_text().rstrip())
    assert "![leaderboard_imagenette.png](leaderboard_imagenette.png)" in page
    assert set(hook.figures(RESULTS / "drise_demo.md")) == {"drise_demo_curves.png", "drise_demo_detections.png"}
    assert hook.figures(RESULTS / "drise_demo_folder.md") == ["drise_demo_folder.png"]  # the longer name owns it
    shown = {name for md in RESULTS.glob("*.md") for name in hook.figures(md)}
    assert shown == {p.name for p in RESULTS.glob("*.png")}, "a figure in benchmarks/results/ belongs to no report"


def test_docstring_roles_render_as_code():
    """``docs/hooks/docstrings.py``: ``:func:`x``` and ``:class:`~a.b.C``` as Sphinx shows them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docstrings_hook", DOCS / "hooks" / "docstrings.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)  # type: ignore[union-attr]
    html = "see :func:<code>build_explainer</code> and :class:<code>~lcam.backbones.frozen.FrozenClassifier</code>."
    assert hook.on_page_content(html, None, None, None) == "see <code>build_explainer</code> and <code>FrozenClassifier</code>."
