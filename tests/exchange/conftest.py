"""Builders shared by the tests of exchange/'s applications."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# A small Gode–Sunder grid: 2 strategies x 3 seeds, short periods (a second or so).
SMALL_SWEEP = """
target = "simulate gode-sunder"

[fixed]
market = 1
periods = 2
shouts = 100

[grid]
strategy = ["zi-u", "zi-c"]
seed = [0, 1, 2]
"""


@pytest.fixture
def sweep_spec(tmp_path: Path) -> Callable[..., Path]:
    """``sweep_spec(text=SMALL_SWEEP, name="spec.toml")`` -> the path of a sweep spec
    written into the test's folder (text dedented); without text, a 6-point Gode–Sunder
    grid of 2 strategies x 3 seeds."""

    def write(text: str = SMALL_SWEEP, name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def interrupt_when() -> Callable[[list[str], Callable[[], bool]], tuple[int, str]]:
    """Run a command, press Ctrl-C (SIGINT) once ``ready()`` holds or it has ended, and
    give back its exit code and stderr. Bounded: a minute to get ready, a minute to end;
    a process still running after that is killed."""

    def run(command: list[str], ready: Callable[[], bool]) -> tuple[int, str]:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready() and proc.poll() is None:
                assert time.monotonic() < deadline, f"{command[3]} never got ready"
                time.sleep(0.001)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, err.decode()

    return run
