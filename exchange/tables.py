"""Tables an analyst reads with pandas, polars or DuckDB: CSV files of one folder, written
together and whole (exchange/atomic_file.py), with "\\n" line ends on every platform so
that the same input gives the same bytes everywhere. Column names carry their units
(``qty_wh``, ``price_micro_per_kwh``, ``cost_nano``)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from wattmesh.exchange.atomic_file import StagedFiles

__all__ = ["write_csv", "write_tables"]


def write_csv(binary: IO[bytes], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """One CSV table into ``binary`` (closed when done); None is an empty cell."""
    with io.TextIOWrapper(binary, encoding="utf-8", newline="") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_tables(
    folder: str | os.PathLike[str],
    tables: Mapping[str, tuple[Sequence[str], Iterable[Sequence[Any]]]],
    summary: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``name -> (header, rows)`` as ``folder/name`` (and ``summary.json`` when
    given), all renamed into place together; the paths written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with StagedFiles(out) as files:
        for name, (header, rows) in tables.items():
            write_csv(files.open(name), header, rows)
        if summary is not None:
            with files.open("summary.json") as fp:
                fp.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                         + b"\n")  # fmt: skip
    return [out / name for name in (*tables, *(["summary.json"] if summary is not None else []))]
