"""Data flows one way through lcam's folders: every import points down this list, never up, never in a loop.

Read bottom-up, the layers follow a run: plumbing and config (runtime) -> map math and pictures (maps, viz) ->
builders (data, backbones) -> metrics -> the L-CAM model and its training (model) -> every explainer (explainers,
L-CAM's among them) -> the explain layer (explain) -> the applications (detection, evaluation, summaries). A layer
calls the layers below it and hands its results up; metrics take maps and models as arguments, so they sit below
what they measure and never import it. Checked over ``ast`` (no import runs), every import inside a function included.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lcam"

#: bottom first; a folder may import its own modules and any folder of a LOWER level, nothing else
LAYERS: list[tuple[str, ...]] = [
    ("runtime",),
    ("maps",),
    ("viz",),
    ("data",),
    ("backbones",),
    ("metrics",),
    ("model",),
    ("explainers",),
    ("explain",),
    ("detection", "evaluation", "summaries"),  # peers: none imports another
]
LEVEL = {folder: level for level, folders in enumerate(LAYERS) for folder in folders}

#: the only imports that point up, each inside a function (bound when called) and said why
LATE_UPWARD = {
    ("model/explaining.py", "explainers"): "LCAM.as_explainer(): the model as a registered explainer",
    ("model/explaining.py", "explain"): "LCAM.explain(): the one-call explain API as a method",
}

#: ``python -m lcam.<folder>`` entry points stand above every layer, like train.py and evaluate.py
ENTRY_POINT = "__main__.py"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts)


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(imported lcam module, inside a function, line)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, late: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = late or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, late, child.lineno))
            elif isinstance(child, ast.ImportFrom) and child.level > 0:
                pytest.fail(f"{path}:{child.lineno}: relative import; lcam imports absolutely (lcam.<folder>...)")
            elif isinstance(child, ast.Import):
                found.extend((alias.name, late, child.lineno) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return [(m, late, line) for m, late, line in found if m == "lcam" or m.startswith("lcam.")]


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else None


def _is_shim(path: Path) -> bool:
    """An old root path kept working: a docstring, then ``sys.modules[__name__]`` set to the moved module."""
    body = ast.parse(path.read_text()).body
    return (len(body) == 4 and isinstance(body[0], ast.Expr) and isinstance(body[1], ast.Import)
            and isinstance(body[2], ast.ImportFrom) and isinstance(body[3], ast.Assign)
            and "lives in lcam." in ast.get_docstring(ast.parse(path.read_text())).split("\n")[0])


def test_every_folder_is_a_declared_layer_and_says_what_it_may_import() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LEVEL), f"folders not in LAYERS: {sorted(folders - set(LEVEL))}; gone: {sorted(set(LEVEL) - folders)}"
    for folder in folders:
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and "may import" in doc.lower(), f"lcam/{folder}/__init__.py: say what lives there and what it may import"


def test_package_root_holds_only_the_public_api_and_old_path_shims() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py" and not _is_shim(p)]
    assert not loose, f"modules at the package root (move them into the folder of their concern): {loose}"


def test_imports_point_down_the_layers() -> None:
    upward = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) == 1 or rel.name == ENTRY_POINT:
            continue  # the public API, old-path shims, ``python -m`` entry points: above every layer
        src = rel.parts[0]
        for module, late, line in _imports(path):
            dst = _folder(module)
            if dst is None:
                if module in ("lcam",) or len(module.split(".")) == 2:
                    upward.append(f"lcam/{rel}:{line} imports {module} (the package root: import the folder's module)")
                continue
            if dst == src or LEVEL[dst] < LEVEL[src]:
                continue
            if late and (rel.as_posix(), dst) in LATE_UPWARD:
                continue
            upward.append(f"lcam/{rel}:{line} ({src}, level {LEVEL[src]}) imports {module} ({dst}, level {LEVEL[dst]})")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_declared_exceptions_are_still_needed() -> None:
    seen = set()
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        seen |= {(rel, _folder(m)) for m, late, _ in _imports(path) if late}
    stale = set(LATE_UPWARD) - seen
    assert not stale, f"LATE_UPWARD lists imports that no longer exist: {sorted(stale)}"


def test_no_cycle_between_folders() -> None:
    """Implied by the strict order above; checked on its own so a loosened order cannot hide one."""
    edges: dict[str, set[str]] = {}
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) == 1 or rel.name == ENTRY_POINT:
            continue
        for module, late, _ in _imports(path):
            dst = _folder(module)
            if dst and dst != rel.parts[0] and not (late and (rel.as_posix(), dst) in LATE_UPWARD):
                edges.setdefault(rel.parts[0], set()).add(dst)
    state: dict[str, int] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("folders import each other in a loop: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                walk(nxt, trail + [nxt])
        state[node] = 2

    for folder in sorted(edges):
        if folder not in state:
            walk(folder, [folder])
