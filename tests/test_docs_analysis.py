"""docs/analysis.md: every query on the page runs over the outputs of its example
commands (the ``analysis_folder`` fixture) and prints exactly what the page shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysis.md"


def queries() -> list[tuple[str, str]]:
    """(code, printed output) of each ```python block and the ```text block after it."""
    pairs = re.findall(r"```python\n(.*?)```\s*```text\n(.*?)```", DOC.read_text(), re.S)
    return [(code, out) for code, out in pairs]


def test_the_page_has_a_pandas_a_polars_a_sqlite_and_a_duckdb_query() -> None:
    codes = [code for code, _ in queries()]
    assert len(codes) == len(re.findall(r"```python\n", DOC.read_text()))  # each has output
    for library in ("import pandas", "import polars", "import sqlite3", "import duckdb"):
        assert any(library in c for c in codes), library
    assert any("node.db" in c and "duckdb" in c for c in codes)  # the ledger, by DuckDB
    assert any("reading.parquet" in c and "trade.parquet" in c for c in codes)  # the join


@pytest.mark.parametrize("index", range(len(queries())))
def test_each_query_prints_what_the_page_shows(analysis_folder: Path, index: int) -> None:
    code, shown = queries()[index]
    res = subprocess.run([sys.executable, "-c", code], cwd=analysis_folder, text=True,
                         capture_output=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip() == shown.rstrip()


def test_the_report_commands_run_as_printed(analysis_folder: Path, tmp_path: Path) -> None:
    import os
    import shutil

    section = DOC.read_text().split("## Reports", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    folder = tmp_path / "copy"
    shutil.copytree(analysis_folder, folder)  # the session's folder stays as it was
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    commands = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    for cmd in filter(None, commands):
        res = subprocess.run(["bash", "-c", cmd], cwd=folder, env=env, text=True,
                             capture_output=True, timeout=120)  # fmt: skip
        assert res.returncode == 0, f"{cmd}\n{res.stderr}"
    for page in ("results/report.html", "street.html", "busy.html", "gode-sunder/report.html"):
        assert (folder / page).stat().st_size > 10_000, page
