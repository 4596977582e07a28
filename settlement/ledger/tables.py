"""A ledger as an analyst's SQLite database: ``wattmesh ledger export --format sqlite``.

One table per entry kind (``trade``, ``reading``, ``grid_export``, …) with the entry's
``ledger_seq`` and ``ledger_ts_ms`` beside the body's fields as columns (a reading's own
``seq`` is its meter's), so a query reads ``SELECT buyer, sum(qty) FROM trade``
instead of parsing JSON; and ``balances`` (account, kind, energy_wh, money_nano) as the
fold gives them. sqlite-utils makes the tables: it types each column from the values and
adds the columns that a kind's later bodies bring (``alter``), which is the job it is
for. Nested values (a genesis's funds) are JSON text. The hash chain is not copied: the
node's own file is the ledger; this is a view of it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .store import Ledger

__all__ = ["export_tables"]

_ROWS_PER_INSERT = 10_000


def export_tables(ledger: Ledger, path: str | os.PathLike[str]) -> dict[str, int]:
    """Write ``ledger`` as tables to a new SQLite file at ``path`` (replacing one that is
    there, whole or not at all); the number of rows per table."""
    import sqlite_utils  # here, not at import: it loads pandas when pandas is installed

    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    counts: dict[str, int] = {}
    try:
        db = sqlite_utils.Database(tmp)
        rows: dict[str, list[dict[str, Any]]] = {}
        for e in ledger.entries():
            batch = rows.setdefault(e.kind, [])
            batch.append({"ledger_seq": e.seq, "ledger_ts_ms": e.ts, **e.body})
            if len(batch) >= _ROWS_PER_INSERT:
                _insert(db, e.kind, batch, counts)
        for kind, batch in rows.items():
            _insert(db, kind, batch, counts)
        balances = [{"account": account, "kind": b["kind"], "energy_wh": b["energy"],
                     "money_nano": b["money"]}
                    for account, b in sorted(ledger.balances().items())]  # fmt: skip
        db["balances"].insert_all(balances, pk="account")
        counts["balances"] = len(balances)
        db.close()
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dict(sorted(counts.items()))


def _insert(db: Any, kind: str, batch: list[dict[str, Any]], counts: dict[str, int]) -> None:
    db[kind].insert_all(batch, pk="ledger_seq", alter=True)
    counts[kind] = counts.get(kind, 0) + len(batch)
    batch.clear()
