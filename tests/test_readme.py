"""The documentation's commands name real verbs, config groups and keys; its relative links point to files.

Commands are the lines of ```bash blocks in README.md and docs/ that run ``worldssl`` (directly or as
``.venv/bin/worldssl``). Each is composed the way the CLI composes it before a run
(:func:`worldssl.cli.preflight` with the verb's ``validate``), without running it: an unknown verb, group,
option, key or a bad value fails; a dataset or checkpoint that an earlier command would make is fine.
A section whose heading is followed by ``AGENTS_PENDING`` documents a verb that is still being built and is
skipped until that marker is removed.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from worldssl.cli import POSITIONAL_LIST_KEY, SUBCOMMAND_KEY, VERBS, _positional_list, preflight
from worldssl.runtime.errors import CheckpointError, DataError, WorldsslError

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
AGENTS_PENDING = "<!-- agents quickstart: filled in by the agents work -->"
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def commands(path: Path) -> list[tuple[int, str]]:
    """``(line number, command)`` for each worldssl command in the file's ```bash blocks, continuation lines
    joined, outside sections marked as pending."""
    found: list[tuple[int, str]] = []
    in_bash = in_fence = False
    skip_level: int | None = None
    level = 0
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            in_bash = in_fence and stripped[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if not in_fence:
            heading = HEADING.match(line)
            if heading:
                level = len(heading.group(1))
                if skip_level is not None and level <= skip_level:
                    skip_level = None
            elif stripped == AGENTS_PENDING:
                skip_level = level
            continue
        if not in_bash or skip_level is not None:
            continue
        if pending is not None:
            start, text = pending
            text = f"{text} {stripped}"
        else:
            start, text = number, stripped
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        if text.startswith("worldssl") or ".venv/bin/worldssl" in text or re.match(r"^([A-Z_]+=\S*\s+)+worldssl", text):
            found.append((start, text))
    return found


def split_command(text: str) -> tuple[str, list[str]]:
    """The verb and the overrides of the worldssl call in a shell line (``&&`` chains, env assignments and
    comments allowed), with ``worldssl bench envs`` read as ``what=envs`` as the CLI does."""
    tokens = shlex.split(text, comments=True)
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in ("&&", ";", "||"):
            segments.append([])
        else:
            segments[-1].append(token)
    for segment in segments:
        for i, token in enumerate(segment):
            if token == "worldssl" or token.endswith("/worldssl"):
                rest = segment[i + 1:]
                verb, args = (rest[0], rest[1:]) if rest else ("", [])
                key = SUBCOMMAND_KEY.get(verb)
                if key and args and not args[0].startswith("-") and "=" not in args[0]:
                    args = [f"{key}={args[0]}", *args[1:]]
                if verb in POSITIONAL_LIST_KEY:
                    args = _positional_list(POSITIONAL_LIST_KEY[verb], args)
                return verb, args
    raise AssertionError(f"no worldssl call in {text!r}")


MISSING_FILE = re.compile(r"does not exist|not found|no such file", re.I)


def _lenient(validate):
    """The verb's validate, except that files made by earlier commands (datasets, checkpoints) may be missing."""
    if validate is None:
        return None

    def check(cfg):
        try:
            validate(cfg)
        except WorldsslError as e:
            if not (isinstance(e, (DataError, CheckpointError)) or MISSING_FILE.search(str(e))):
                raise

    return check


CASES = [(f"{_rel(path)}:{number}", text) for path in DOCS for number, text in commands(path)]


def test_the_readme_has_both_commands_and_quickstarts():
    readme = [text for _, text in commands(REPO / "README.md")]
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/worldssl compare" in readme
    text = (REPO / "README.md").read_text()
    assert '```bash\npython3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/pytest -q -n 2\n```' in text
    verbs = {split_command(t)[0] for t in readme}
    assert {"collect", "worldmodel", "pretrain", "eval", "compare"} <= verbs


@pytest.mark.parametrize("where, text", CASES, ids=[where for where, _ in CASES])
def test_documented_command_composes(where, text):
    verb, overrides = split_command(text)
    assert verb in VERBS, f"{where}: unknown verb {verb!r} in {text!r}; valid: {', '.join(VERBS)}"
    validate = getattr(importlib.import_module(VERBS[verb][0]), "validate", None)
    problem = preflight(verb, overrides, _lenient(validate))
    assert problem is None, f"{where}: {text!r}: {problem}"


def test_pending_sections_are_skipped(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# A\n## B\n{AGENTS_PENDING}\n```bash\nworldssl nope x=1\n```\n### B1\n```bash\nworldssl nope\n```\n"
                   "## C\n```bash\nOMP_NUM_THREADS=1 worldssl collect \\\n    episodes=2  # two\n```\n")
    assert commands(doc) == [(13, "OMP_NUM_THREADS=1 worldssl collect episodes=2  # two")]
    assert split_command(commands(doc)[0][1]) == ("collect", ["episodes=2"])
    assert split_command("worldssl bench envs steps=3") == ("bench", ["what=envs", "steps=3"])


def test_a_bad_key_is_caught_and_a_missing_file_is_not():
    assert preflight("collect", ["episodez=3"]) is not None
    assert preflight("worldmodel", ["objective=nope", "data=x"]) is not None
    validate = importlib.import_module(VERBS["compare"][0]).validate
    assert preflight("compare", ["objectives=[nope]"], _lenient(validate)) is not None
    assert preflight("eval", ["what=probe", "encoder.checkpoint=no/such/run", "data=no/such/data"],
                     _lenient(importlib.import_module(VERBS["eval"][0]).validate)) is None


# -- links -------------------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(2)) for m in map(HEADING.match, text.splitlines()) if m}


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [m.group(1) for m in LINK.finditer(text)]


LINKS = [(path, target) for path in DOCS for target in links(path)
         if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not checked


def test_readme_has_relative_links():
    assert any(path.name == "README.md" for path, _ in LINKS)


@pytest.mark.parametrize("path, target", LINKS, ids=[f"{_rel(p)}->{t}" for p, t in LINKS])
def test_relative_link_points_to_a_file(path, target):
    file, _, anchor = target.partition("#")
    dest = (path.parent / file).resolve() if file else path
    assert dest.exists(), f"{_rel(path)} links to {target}, which does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{_rel(path)} links to {target}: no heading with that anchor"
