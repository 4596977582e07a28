"""A sweep's points merged into one Parquet table (pyarrow, the ``analysis`` extra).

One row per point, sorted by ``point``: the point's key, every parameter of the target
(typed as the target takes it), every metric (null for a failed point), ``status`` ("ok"
or "failed") and ``error`` (the failed point's exception, else null). Built from columns,
so the same points give the same bytes whoever ran them and in whatever order.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from wattmesh.exchange.atomic_file import write_atomic
from wattmesh.exchange.sweep.targets import Target
from wattmesh.exchange.tables import INSTALL_ANALYSIS
from wattmesh.settlement.errors import WattmeshError

__all__ = [
    "TARGET_KEY",
    "PyarrowMissing",
    "require_pyarrow",
    "sweep_table",
    "write_table",
]

# The table's schema metadata names the target (for `wattmesh report` and readers).
TARGET_KEY = b"wattmesh.sweep.target"


class PyarrowMissing(WattmeshError):
    """pyarrow is not installed; the message says how to install it."""


def require_pyarrow() -> None:
    """Raise PyarrowMissing when pyarrow cannot be imported."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise PyarrowMissing(f"pyarrow is not installed: {INSTALL_ANALYSIS}") from None


def sweep_table(target: Target, records: list[dict[str, Any]]) -> Any:
    """The ``pyarrow.Table`` of a sweep's stored points (``store.SweepFolder.records``)."""
    import pyarrow as pa

    types = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    rows = sorted(records, key=lambda r: r["point"])
    fields, columns = [pa.field("point", pa.int64(), nullable=False)], [[r["point"] for r in rows]]
    for p in target.parameters:
        fields.append(pa.field(p.name, types[p.kind]))
        columns.append([r["params"][p.name] for r in rows])
    for name, kind in target.metrics:
        fields.append(pa.field(name, types[kind]))
        columns.append([(r["metrics"] or {}).get(name) for r in rows])
    fields += [pa.field("status", pa.string(), nullable=False), pa.field("error", pa.string())]
    columns += [[r["status"] for r in rows], [r["error"] for r in rows]]
    schema = pa.schema(fields, metadata={TARGET_KEY: target.name.encode()})
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, fields, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(path: str | Path, target: Target, records: list[dict[str, Any]]) -> None:
    """Write the table to ``path`` (Parquet), whole or not at all."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(sweep_table(target, records), buffer)
    write_atomic(path, buffer.getvalue())
