"""Builders shared by the tests of exchange/'s applications."""

from __future__ import annotations

import textwrap
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
