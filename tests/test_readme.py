"""Every ``python train.py`` / ``python evaluate.py`` / ``python -m lcam.explain`` / ``python -m lcam.summaries`` command of README.md
composes (what ``--cfg job`` does), with its placeholders replaced by real local paths, so a
wrong key, group or override syntax in the README fails here. Python snippets of the README
compile and use only names they define.

Commands are taken from ``bash`` blocks (with ``\\`` continuations) and from inline code spans.
Placeholders: ``/data/imagenet``, ``/path/to/...``, ``~/...`` and ``$HOME/...``,
``outputs/.../<date>/...``, ``...`` (a value or a whole argument). A ``<placeholder>`` this test
does not know fails with its name: add it to :func:`substitute`.
"""
from __future__ import annotations

import builtins
import re
import shlex
import symtable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from lcam.runtime.cli_args import expand_home
from tests.helpers import CONF_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
ENTRY_POINTS = {("train.py",): "train", ("evaluate.py",): "evaluate", ("-m", "lcam.explain"): "explain",
                ("-m", "lcam.summaries"): "summaries"}


@dataclass(frozen=True)
class Command:
    line: int  # README line number (1-based) where the command starts
    text: str  # as written, continuations joined
    config: str  # train | evaluate | explain
    args: tuple[str, ...]  # shell words after the entry point, comments removed


def _parse(text: str, line: int) -> Command | None:
    try:
        words = shlex.split(text, comments=True)
    except ValueError as err:
        raise AssertionError(f"README.md:{line}: not valid shell ({err}): {text}") from None
    for i, word in enumerate(words):  # "srun python train.py ..." counts too
        if word != "python":
            continue
        for head, config in ENTRY_POINTS.items():
            if tuple(words[i + 1:i + 1 + len(head)]) == head:
                return Command(line, text, config, tuple(words[i + 1 + len(head):]))
    return None


def readme_commands(text: str) -> list[Command]:
    """The entry-point commands of a README: bash-block lines and inline code spans."""
    found: list[Command] = []
    lines = text.splitlines()
    in_bash, i = False, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            in_bash = (not in_bash) and line.strip() in ("```bash", "```sh", "```shell")
            if not in_bash and line.strip() != "```":
                in_bash = False
            i += 1
            continue
        if in_bash:
            start, joined = i, line
            while joined.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                joined = joined.rstrip()[:-1] + " " + lines[i].strip()
            cmd = _parse(joined, start + 1)
            if cmd:
                found.append(cmd)
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith(("python train.py", "python evaluate.py", "python -m lcam.explain", "python -m lcam.summaries")):
                    found.append(_parse(span, i + 1))
        i += 1
    return found


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, Path]:
    """Real local stand-ins for the README's placeholders."""
    root = tmp_path_factory.mktemp("readme")
    imagenet = root / "imagenet"
    for sub in ("train/n01440764", "val/n01440764"):
        (imagenet / sub).mkdir(parents=True)
    home = root / "home"
    for sub in ("photos", "photos_val"):
        (home / sub).mkdir(parents=True)
    ckpt = root / "runs" / "2026-01-01_00-00-00" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    return {"root": root, "imagenet": imagenet, "home": home, "ckpt": ckpt}


def _path_to(rest: str, local: dict[str, Path]) -> str:
    """``/path/to/<rest>``: a real file (a name with a suffix) or folder under the temp root."""
    p = local["root"] / "given" / rest
    if Path(rest).suffix:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    else:
        p.mkdir(parents=True, exist_ok=True)
    return str(p)


def substitute(cmd: Command, local: dict[str, Path]) -> list[str]:
    """The command's overrides with placeholders replaced by real local values."""
    out = []
    for word in expand_home([w.replace("$HOME", str(local["home"])) for w in cmd.args], home=str(local["home"])):
        if word == "...":  # "python evaluate.py +experiment=table1_resnet50 ..." (the rest as above)
            continue
        word = word.replace("/data/imagenet", str(local["imagenet"]))
        word = re.sub(r"(?<==)outputs/\S*?<date>/checkpoints/last\.ckpt", str(local["ckpt"]), word)
        word = re.sub(r"(?<==)\.\.\.(/last\.ckpt)?$", str(local["ckpt"]), word)
        word = re.sub(r"/path/to/([^\s,\]]+)", lambda m: _path_to(m.group(1), local), word)
        left = re.findall(r"<[^<>\s]+>|\.\.\.|/path/to", word)
        assert not left, f"README.md:{cmd.line}: placeholder {left} in '{word}' has no local value in tests/test_readme.py: {cmd.text}"
        out.append(word)
    return out


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """Sweep overrides (``a=1,2,4``) -> their first value, as the first job of the multirun gets."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else o.input_line
            for o in parsed]


COMMANDS = readme_commands(README.read_text())


def test_readme_has_commands_for_every_entry_point():
    # the README is a short front page (the demo, the tour); the documentation site's commands
    # (dozens) are composed by tests/test_docs.py with this module's parser
    assert {c.config for c in COMMANDS} == {"train", "evaluate", "explain", "summaries"}
    assert len(COMMANDS) >= 8


def test_parser_finds_continued_and_inline_commands():
    text = ("```bash\npython train.py a=1 \\\n    b=2   # comment 'x'\nwandb agent x\n```\n"
            "Resume: `python train.py ckpt_path=.../last.ckpt` or `python -m lcam.explain inputs=demo`.\n"
            "```python\npython train.py not=bash\n```\n")
    assert [(c.line, c.config, c.args) for c in readme_commands(text)] == [
        (2, "train", ("a=1", "b=2")), (6, "train", ("ckpt_path=.../last.ckpt",)), (6, "explain", ("inputs=demo",))]


def compose_command(cmd: Command, local: dict[str, Path]):
    """The job config the command would run with (``--cfg job``); AssertionError naming the README line."""
    args = [a for a in substitute(cmd, local) if a not in ("-m", "--multirun")]
    assert not [a for a in args if a.startswith("-")], f"README.md:{cmd.line}: unexpected flag in {cmd.text}"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        try:
            return compose(cmd.config, overrides=first_of_sweeps(args))
        except Exception as err:  # noqa: BLE001 - re-raised with the README line
            raise AssertionError(f"README.md:{cmd.line}: {cmd.text}\n  -> {type(err).__name__}: {err}") from None


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"L{c.line}-{c.config}" for c in COMMANDS])
def test_readme_command_composes(cmd: Command, local):
    assert compose_command(cmd, local) is not None


def test_wrong_keys_values_and_syntax_fail(local):
    good = readme_commands("```bash\npython train.py -m data=folder data.root=~/photos model.loss.area_coef=1,2,4\n```")[0]
    cfg = compose_command(good, local)
    assert cfg.data.root == str(local["home"] / "photos") and cfg.model.loss.area_coef == 1
    for bad in ("python train.py data=folder data.vall_root=~/photos", "python evaluate.py explainer=gradcamm",
                "python -m lcam.explain inputs=[a,", "python train.py backbone.weights=/path/to/<file>"):
        with pytest.raises(AssertionError, match="README.md:2: "):
            compose_command(readme_commands(f"```bash\n{bad}\n```")[0], local)


# -- Python snippets ------------------------------------------------------------------------

def python_snippets(text: str) -> list[tuple[int, str]]:
    return [(text[:m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def undefined_names(code: str) -> set[str]:
    """Global names a snippet reads but neither assigns nor imports (nor are builtins)."""
    table = symtable.symtable(code, "<readme>", "exec")
    defined, used = set(), set()

    def walk(t: symtable.SymbolTable) -> None:
        for s in t.get_symbols():
            if t.get_type() == "module" and (s.is_assigned() or s.is_imported()):
                defined.add(s.get_name())
            if s.is_referenced() and (s.is_global() or t.get_type() == "module"):
                used.add(s.get_name())
        for child in t.get_children():
            walk(child)

    walk(table)
    return used - defined - set(dir(builtins))


SNIPPETS = python_snippets(README.read_text())


@pytest.mark.parametrize("line, code", SNIPPETS, ids=[f"L{line}" for line, _ in SNIPPETS])
def test_readme_python_snippet_defines_what_it_uses(line, code):
    compile(code, f"README.md:{line}", "exec")
    assert not undefined_names(code), f"README.md:{line}: the snippet uses {sorted(undefined_names(code))} without defining them"
