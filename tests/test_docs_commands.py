"""Every ``wattmesh`` command line shown in the README and docs/ names a command that
exists and only options that command has (docs are the contract: a renamed option must
not live on in them). Read from the Markdown code blocks; each command's --help answers."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import typer

from wattmesh.exchange.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown text (any language), in order."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def command_lines() -> list[tuple[str, str]]:
    """(where, command line) for each ``wattmesh ...`` line in a fenced code block."""
    found = []
    for doc in DOCS:
        for block in code_blocks(doc.read_text()):
            joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
            for line in joined.splitlines():
                line = re.sub(r"^\$ ", "", line.strip())
                line = re.sub(r"^(\S*/)?(\.venv/bin/)?wattmesh ", "wattmesh ", line)
                if line.startswith("wattmesh ") and not re.match(r"wattmesh [\w-]+:", line):
                    # (not "wattmesh bot: ..." or "wattmesh: error: ...": output shown)
                    found.append((doc.name, line.split("  #")[0].split(" # ")[0]))
    return found


def is_group(cmd: object) -> bool:
    return hasattr(cmd, "commands")  # typer's groups are click's in shape, not in type


@cache
def command_of(path: tuple[str, ...]) -> Any:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        if not is_group(cmd) or name not in cmd.commands:
            return None
        cmd = cmd.commands[name]
    return cmd


def test_the_docs_show_wattmesh_commands():
    assert len(command_lines()) > 30  # the walk found the docs' examples


def test_every_documented_command_and_option_exists():
    problems = []
    for where, line in command_lines():
        try:
            words = shlex.split(line.split("|")[0].split(" > ")[0])[1:]
        except ValueError:
            continue  # an example with a shell construct shlex does not take
        path: list[str] = []
        cmd = command_of(())
        while words and is_group(cmd) and not words[0].startswith("-"):
            if words[0] not in cmd.commands:
                problems.append(f"{where}: {line}: no command {words[0]!r}")
                break
            path.append(words.pop(0))
            cmd = command_of(tuple(path))
        else:
            if cmd is None:
                continue
            known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            known |= {"--help", "-h"}
            for word in words:
                option = word.split("=")[0]
                if option.startswith("--") and option not in known:
                    problems.append(f"{where}: {line}: no option {option} of "
                                    f"wattmesh {' '.join(path)}")  # fmt: skip
    assert problems == []


# The sample replays whose printed output the docs show whole: they must print just that.
_SAMPLE_RUNS = ("wattmesh replay", "wattmesh replay --mode cda")


def shown_output(command: str) -> list[str]:
    """The lines docs/replay.md shows under ``$ <command>`` in a console block."""
    for block in code_blocks((ROOT / "docs" / "replay.md").read_text()):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line == f"$ {command}":
                shown = []
                for out in lines[i + 1 :]:
                    if out.startswith("$ "):
                        break
                    shown.append(out)
                return shown
    raise AssertionError(f"docs/replay.md shows no output of {command}")


def test_the_sample_replays_print_what_the_docs_show(cli) -> None:
    for command in _SAMPLE_RUNS:
        code, out, _ = cli(*command.split()[1:])
        assert code == 0 and out.splitlines() == shown_output(command), command
