"""Every ``agora`` command explains itself: ``--help`` works and has a description and an example.

Walks the whole typer app (every group and every command under it, as ``agora --help`` lists
them) and renders each one's help the way a person sees it, so a new command without a
docstring, or with one that never shows how to call it, fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from agora.cli import app

# An example is a line that shows a call: "agora ..." (indented, or after "$ " or "Example:").
EXAMPLE = re.compile(r"^\s*(?:\$ |Examples?:\s*)?agora(?: [a-z-]+)*\b", re.MULTILINE)


def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(get_command(app), ()))


def test_the_walk_finds_the_whole_tree() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    for expected in ("", "up", "status", "dashboard", "node start", "validator start", "miner"):
        assert expected in names, expected
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=["agora " + " ".join(p) for p, _ in COMMANDS]
)
def test_help_has_a_description_and_an_example(path: tuple[str, ...], command: Any) -> None:
    name = " ".join(("agora", *path))
    text = (command.help or "").strip()
    assert text, f"`{name}` has no description: give it a docstring (or help=...)"
    description = text.split("\n\n")[0]
    assert len(description) >= 15 and not EXAMPLE.match(description), (
        f"`{name}` should open with a sentence saying what it does, not {description[:60]!r}"
    )
    assert EXAMPLE.search(text), (
        f"`{name} --help` shows no example: add an indented line such as `    {name} ...`"
    )
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "agora" in result.output
