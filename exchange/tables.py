"""Tables an analyst reads with pandas, polars or DuckDB: the files of one output folder,
written together and whole (exchange/atomic_file.py), as CSV, as Parquet, or both.

CSV files have "\\n" line ends on every platform, so that the same input gives the same
bytes everywhere. Column names carry their units (``qty_wh``, ``price_micro_per_kwh``,
``cost_nano``) and are the same in both formats. Parquet columns are typed: integers are
int64, instants (``*_ms`` columns that hold epoch milliseconds) are UTC timestamps of
millisecond resolution, ids and names are strings. This module is the one home of that
typing and of the ``--format`` rule (which formats exist, the default and why, what
Parquet needs installed); docs/analysis.md describes it.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from wattmesh.exchange.atomic_file import StagedFiles
from wattmesh.settlement.errors import WattmeshError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DEFAULT_FORMAT", "INSTALL_ANALYSIS", "ColumnTable", "MissingPyarrowError",
           "TableFormat", "arrow_array", "arrow_table", "arrow_type", "check_format",
           "string_array", "utf8_array", "write_csv", "write_parquet", "write_table_set",
           "write_tables", "writes_csv", "writes_parquet"]  # fmt: skip


class TableFormat(StrEnum):
    """What an output folder's tables are written as (``--format``)."""

    csv = "csv"
    parquet = "parquet"
    both = "both"


# Both by default: an analyst expects typed tables that pandas, polars and DuckDB read
# without guessing types (Parquet), and whatever already reads the CSV files (scripts,
# spreadsheets, the docs' examples) keeps reading the same bytes. Writing Parquet beside
# the CSV costs little time (benchmarks/replay.py) and needs pyarrow, the `analysis` extra.
DEFAULT_FORMAT = TableFormat.both
INSTALL_ANALYSIS = "pip install 'wattmesh[analysis]'"

# Column kinds: how a column of Python ints, strs, floats, bools or None is typed in
# Parquet. "time": epoch milliseconds, written as a UTC timestamp.
KINDS = ("int", "time", "str", "float", "bool", "json")


class MissingPyarrowError(WattmeshError):
    """Parquet was asked for (or is the default) and pyarrow is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs pyarrow, which is not installed: {INSTALL_ANALYSIS} "
                         "(or --format csv)")  # fmt: skip


def writes_csv(fmt: str) -> bool:
    """Whether ``fmt`` writes the CSV tables."""
    return TableFormat(fmt) in (TableFormat.csv, TableFormat.both)


def writes_parquet(fmt: str) -> bool:
    """Whether ``fmt`` writes the Parquet tables."""
    return TableFormat(fmt) in (TableFormat.parquet, TableFormat.both)


def check_format(fmt: str, what: str = "--format parquet") -> None:
    """Raise :class:`MissingPyarrowError` before any work when ``fmt`` needs pyarrow and it
    is missing (so that nothing is half done)."""
    if writes_parquet(fmt) and importlib.util.find_spec("pyarrow") is None:
        raise MissingPyarrowError(f"{what} (the format {fmt})")


@dataclass(frozen=True, slots=True)
class ColumnTable:
    """A table as named, typed columns of equal length (each a list or an array)."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # one of KINDS per column
    columns: tuple[Sequence[Any], ...]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.kinds) == len(self.columns):
            raise ValueError("ColumnTable: names, kinds and columns differ in number")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"ColumnTable: unknown column kind {bad[0]!r}")

    def rows(self) -> Iterable[Sequence[Any]]:
        """The rows, for CSV (json columns as compact JSON text)."""
        cols = [
            [None if v is None else orjson.dumps(v).decode() for v in c] if k == "json" else c
            for k, c in zip(self.kinds, self.columns, strict=True)
        ]
        return zip(*cols, strict=True)


def arrow_array(kind: str, values: Sequence[Any]) -> pa.Array:
    """A pyarrow array of one column kind, built from buffers: an ``array('q')`` is taken
    as it is, with no Python object per value.

    Not ``pa.array``: pyarrow imports pandas on its first call whenever pandas is installed
    (0.3-0.6 s), which would cost every replay more than writing its Parquet does; and no
    cast or take, which load pyarrow.compute (0.1 s)."""
    import pyarrow as pa

    n = len(values)
    if kind in ("str", "json"):
        if kind == "json":
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        return string_array(values)
    if kind in ("int", "time"):
        if isinstance(values, array) and values.typecode == "q":
            return pa.Array.from_buffers(arrow_type(kind), n, [None, pa.py_buffer(values)])
        valid = _validity(values)
        ints = array("q", [0 if v is None else v for v in values] if valid else values)
        return pa.Array.from_buffers(arrow_type(kind), n, [valid, pa.py_buffer(ints)])
    if kind == "float":
        valid = _validity(values)
        data = array("d", [0.0 if v is None else v for v in values] if valid else values)
        return pa.Array.from_buffers(pa.float64(), n, [valid, pa.py_buffer(data)])
    if kind == "bool":
        return pa.Array.from_buffers(pa.bool_(), n, [_validity(values),
                                                     _bits([bool(v) for v in values])])  # fmt: skip
    raise ValueError(f"unknown column kind {kind!r}")


def string_array(values: Sequence[str | None]) -> pa.Array:
    """A pyarrow string array of ``values`` (None: null), from its buffers."""
    encoded = [b"" if v is None else v.encode("utf-8", "surrogatepass") for v in values]
    lengths = list(map(len, encoded))
    wide = sum(lengths) >= 2**31  # past int32 offsets: a large_string column
    offsets = array("q" if wide else "i", accumulate(lengths, initial=0))
    return utf8_array(offsets, b"".join(encoded), _validity(values))


def utf8_array(
    offsets: array, data: bytes | bytearray, validity: pa.Buffer | None = None
) -> pa.Array:
    """A pyarrow string array from its buffers: ``offsets`` (one more than the rows; int32
    ``i`` for a string column, int64 ``q`` for a large_string one) and the UTF-8 ``data``
    they index."""
    import pyarrow as pa

    kind = pa.string() if offsets.typecode == "i" else pa.large_string()
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(kind, len(offsets) - 1, buffers)


def _validity(values: Sequence[Any]) -> pa.Buffer | None:
    """The validity bitmap of ``values`` (None: null), or None when no value is null."""
    if None not in values:
        return None
    if values.count(None) == len(values):  # all null (cda's interval column)
        import pyarrow as pa

        return pa.py_buffer(bytes((len(values) + 7) // 8 or 1))
    return _bits([v is not None for v in values])


def _bits(flags: Sequence[bool]) -> pa.Buffer:
    """An Arrow bitmap (least significant bit first) of ``flags``."""
    import pyarrow as pa

    packed = int("".join("1" if f else "0" for f in reversed(flags)) or "0", 2)
    return pa.py_buffer(packed.to_bytes((len(flags) + 7) // 8 or 1, "little"))


def arrow_type(kind: str) -> pa.DataType:
    """The Parquet (Arrow) type of a column kind."""
    import pyarrow as pa

    return {"int": pa.int64(), "time": pa.timestamp("ms", tz="UTC"), "str": pa.string(),
            "float": pa.float64(), "bool": pa.bool_(), "json": pa.string()}[kind]  # fmt: skip


def write_parquet(binary: IO[bytes], table: pa.Table) -> None:
    """One Parquet file into ``binary`` (closed when done). Snappy, the readers' common
    default: fast to write, and every reader has it."""
    import pyarrow.parquet as pq

    with binary:
        pq.write_table(table, binary, compression="snappy")


def arrow_table(table: ColumnTable) -> pa.Table:
    """``table`` as a pyarrow Table with typed columns."""
    import pyarrow as pa

    schema = pa.schema([(n, arrow_type(k)) for n, k in zip(table.names, table.kinds, strict=True)])
    arrays = [arrow_array(k, c) for k, c in zip(table.kinds, table.columns, strict=True)]
    return pa.Table.from_batches([pa.record_batch(arrays, schema=schema)], schema=schema)


def write_csv(binary: IO[bytes], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """One CSV table into ``binary`` (closed when done); None is an empty cell."""
    with io.TextIOWrapper(binary, encoding="utf-8", newline="") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_summary(files: StagedFiles, summary: Mapping[str, Any]) -> None:
    with files.open("summary.json") as fp:
        fp.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                 + b"\n")  # fmt: skip


def write_tables(
    folder: str | os.PathLike[str],
    tables: Mapping[str, tuple[Sequence[str], Iterable[Sequence[Any]]]],
    summary: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``name -> (header, rows)`` as CSV ``folder/name`` (and ``summary.json`` when
    given), all renamed into place together; the paths written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with StagedFiles(out) as files:
        for name, (header, rows) in tables.items():
            write_csv(files.open(name), header, rows)
        if summary is not None:
            _write_summary(files, summary)
    return [out / name for name in (*tables, *(["summary.json"] if summary is not None else []))]


def write_table_set(
    folder: str | os.PathLike[str],
    tables: Mapping[str, ColumnTable],
    summary: Mapping[str, Any] | None = None,
    fmt: str = DEFAULT_FORMAT,
    drop: Sequence[str] = (),
) -> list[Path]:
    """Write ``stem -> table`` as ``folder/stem.csv`` and/or ``folder/stem.parquet`` (by
    ``fmt``) and ``summary.json`` when given, all renamed into place together; a format
    not written has its older files removed, so the folder holds one run's outputs. The
    paths written. ``drop`` names more files of ``folder`` to remove with them."""
    check_format(fmt)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    with StagedFiles(out) as files:
        for name in drop:
            files.drop(name)
        for stem, table in tables.items():
            for ext, wanted in (("csv", writes_csv(fmt)), ("parquet", writes_parquet(fmt))):
                name = f"{stem}.{ext}"
                if not wanted:
                    files.drop(name)
                    continue
                names.append(name)
                if ext == "csv":
                    write_csv(files.open(name), table.names, table.rows())
                else:
                    write_parquet(files.open(name), arrow_table(table))
        if summary is not None:
            _write_summary(files, summary)
            names.append("summary.json")
    return [out / n for n in names]
