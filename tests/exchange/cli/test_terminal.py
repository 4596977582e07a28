"""The commands' terminal behaviour: one-line errors, and progress bars that appear on a
terminal's stderr and never in piped output."""

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from wattmesh.exchange.cli.terminal import fail, progress_bar

WATTMESH = str(Path(sys.executable).parent / "wattmesh")


def test_fail_is_one_line_on_stderr_and_exit_code_2(capsys):
    with pytest.raises(typer.Exit) as exc:
        fail("interval: 5 is not the start of a 900000 ms interval")
    assert exc.value.exit_code == 2
    assert capsys.readouterr().err == (
        "wattmesh: error: interval: 5 is not the start of a 900000 ms interval\n"
    )


def test_no_bar_when_stderr_is_not_a_terminal():
    # Under pytest stderr is captured, not a terminal.
    with progress_bar("working", 10) as update:
        assert update is None


def test_no_bar_when_not_asked_for():
    with progress_bar("working", 10, show=False) as update:
        assert update is None


def _run_with_terminal_stderr(*args: str) -> tuple[bytes, bytes]:
    """Run wattmesh with stderr on a pseudo-terminal and stdout on a pipe."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [WATTMESH, *args], stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL
        )
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        return stdout, seen
    finally:
        os.close(controller)


def test_a_long_simulation_draws_its_bar_on_the_terminal_only():
    stdout, terminal = _run_with_terminal_stderr(
        "simulate", "gode-sunder", "--market", "1", "--strategy", "zi-c",
        "--seeds", "4", "--shouts", "10000", "--json",
    )  # fmt: skip
    assert b"simulating" in terminal
    assert b"\x1b[" not in stdout  # no escape codes in the piped JSON
    assert stdout.startswith(b"{")
