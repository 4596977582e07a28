"""The README's replay and ledger command blocks run as printed, in a fresh folder (the
quick start's demo and test commands run in CI and in tests/exchange/demo)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = ("## Replay an order log", "## Settle into a ledger and verify it",
            "## From a live node to analysis")  # fmt: skip


def commands(heading: str) -> list[str]:
    """The command lines of the first bash block under ``heading`` (comments dropped)."""
    section = README.read_text().split(heading + "\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, heading
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_replay_and_ledger_blocks_run_as_printed(tmp_path: Path):
    env = dict(os.environ)  # `wattmesh` and `python` as a reader's activated venv has them
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    ran = 0
    for heading in SECTIONS:
        for cmd in commands(heading):
            res = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, text=True,
                                 capture_output=True, timeout=120)  # fmt: skip
            assert res.returncode == 0, f"{cmd}\n{res.stderr}"
            ran += 1
    assert ran >= 12
    assert (tmp_path / "day.jsonl").is_file() and (tmp_path / "proof.json").is_file()
    assert (tmp_path / "rebuilt.db").is_file() and (tmp_path / "street-results").is_dir()


@pytest.mark.parametrize("heading", SECTIONS)
def test_the_blocks_are_found(heading: str):
    assert all(c.split()[0] in ("wattmesh", "python") for c in commands(heading))
