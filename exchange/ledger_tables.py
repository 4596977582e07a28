"""``wattmesh ledger export --format parquet --out DIR``: a ledger's analyst tables
(settlement/ledger/tables.py defines them: one per entry kind, ``balances`` and
``interval_balances``) as one Parquet file each, written together and whole."""

from __future__ import annotations

import os
from pathlib import Path

from wattmesh.exchange.tables import ColumnTable, write_table_set
from wattmesh.settlement.ledger import Ledger

__all__ = ["export_parquet"]


def export_parquet(ledger: Ledger, folder: str | os.PathLike[str]) -> dict[str, int]:
    """Write ``folder/<table>.parquet`` for every table of the ledger; rows per table.
    Tables of an earlier export that this ledger has no rows for are removed."""
    from wattmesh.settlement.ledger.tables import TABLE_NAMES, ledger_tables

    out = Path(folder)
    tables = {}
    counts = {}
    for name, (columns, rows) in ledger_tables(ledger).items():
        names = tuple(c for c, _ in columns)
        kinds = tuple(k for _, k in columns)
        values = tuple(zip(*rows, strict=True)) if rows else tuple(() for _ in names)
        tables[name] = ColumnTable(names, kinds, values)
        counts[name] = len(rows)
    # Only an earlier export's tables: the folder may hold a replay's or a sweep's too.
    stale = [f"{name}.parquet" for name in sorted(TABLE_NAMES - tables.keys())]
    write_table_set(out, tables, None, "parquet", drop=stale)
    return dict(sorted(counts.items()))
