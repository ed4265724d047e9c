"""mkdocs hook: every benchmarks/results/*.md becomes a page results/<name>.md, every *.png an image beside it.

mkdocs serves only files under docs/; the benchmark reports live (and are rewritten by the benchmark
scripts) in benchmarks/results/. This hook adds them to the site at build time, so nothing is copied
into the repository and a clean checkout builds with `mkdocs build --strict`. The figures a report
names, and those named after it (`leaderboard_imagenette.png`), are shown at the end of its page. A page written by hand
under docs/results/ with the same name wins over the generated one.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _owner(png: Path, stems: list[str]) -> str | None:
    """The report a figure belongs to: the longest report name its own name starts with
    (``drise_demo_folder.png`` -> ``drise_demo_folder``, ``fidelity_two_classes.png`` -> ``fidelity``)."""
    fits = [s for s in stems if png.stem == s or png.stem.startswith(s + "_")]
    return max(fits, key=len) if fits else None


def figures(md: Path) -> list[str]:
    """The figures shown on a report's page: those it names, then those named after it."""
    stems = [p.stem for p in RESULTS.glob("*.md")]
    named = re.findall(r"([\w.-]+\.png)", md.read_text(encoding="utf-8"))
    owned = [p.name for p in sorted(RESULTS.glob("*.png")) if _owner(p, stems) == md.stem]
    return [name for name in dict.fromkeys(named + owned) if (RESULTS / name).is_file()]


def _page(md: Path) -> str:
    text = md.read_text(encoding="utf-8")
    parts = [text.rstrip(), "", "---", "",
             f"*Generated from `benchmarks/results/{md.name}`, written by the benchmark that made it "
             "(see [Benchmark results](index.md)).*"]
    shown = figures(md)
    if shown:
        parts += ["", "## Figures", ""] + [f"![{name}]({name})\n" for name in shown]
    return "\n".join(parts) + "\n"


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.glob("*.md")) + sorted(RESULTS.glob("*.png")):
        uri = f"results/{path.name}"
        if files.get_file_from_path(uri) is not None:
            continue
        if path.suffix == ".md":
            files.append(File.generated(config, uri, content=_page(path)))
        else:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
