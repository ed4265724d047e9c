"""mkdocs hook: every benchmarks/results/*.md becomes a page results/<name>.md, every *.png an image beside it.

mkdocs serves only files under docs/; the benchmark reports live (and are rewritten by the benchmark
scripts) in benchmarks/results/. This hook adds them to the site at build time, so nothing is copied
into the repository and a clean checkout builds with `mkdocs build --strict`. A figure a report names
in a code span (`leaderboard_imagenette.png`) is shown at the end of its page. A page written by hand
under docs/results/ with the same name wins over the generated one.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _page(md: Path) -> str:
    text = md.read_text(encoding="utf-8")
    figures = [name for name in dict.fromkeys(re.findall(r"`([\w.-]+\.png)`", text)) if (RESULTS / name).is_file()]
    parts = [text.rstrip(), "", "---", "",
             f"*Generated from `benchmarks/results/{md.name}`, written by the benchmark that made it "
             "(see [Benchmark results](index.md)).*"]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{name}]({name})\n" for name in figures]
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
