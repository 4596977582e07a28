"""A ledger as an analyst's tables: ``wattmesh ledger export --format sqlite|parquet``.

One table per entry kind (``trade``, ``reading``, ``grid_export``, …) with the entry's
``ledger_seq`` and ``ledger_ts_ms`` beside the body's fields as columns (a reading's own
``seq`` is its meter's), so a query reads ``SELECT buyer, sum(qty) FROM trade`` instead
of parsing JSON; ``balances`` (account, kind, energy_wh, money_nano) as the fold gives
them at the head; and ``interval_balances``, every account's balances after each
interval's close (interval_ms, account, kind, energy_wh, money_nano), folded here.

This module is the one home of those tables' definitions: their names, columns and the
kind of each column (``int``, ``time`` for epoch milliseconds, ``str``, ``bool``, ``json``
for nested values, written as JSON text), which both writers follow: SQLite here
(sqlite-utils makes the typed tables; ``time`` is an INTEGER of ms there) and Parquet in
``wattmesh.exchange.ledger_tables`` (``time`` is a UTC timestamp there). The hash chain
is not copied: the node's own file is the ledger; this is a view of it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .fold import LedgerState
from .schema import KINDS, OPTIONAL
from .store import Ledger

__all__ = ["BALANCE_COLUMNS", "INTERVAL_BALANCE_COLUMNS", "ENTRY_COLUMNS", "TABLE_NAMES",
           "entry_columns", "export_tables", "ledger_tables"]  # fmt: skip

_ROWS_PER_INSERT = 10_000

# The kind of each body field (the same name has the same kind in every entry kind).
_FIELD_KINDS = {
    "community": "str", "funds": "json", "auditors": "json", "owner": "str", "storage": "bool",
    "meter": "str", "type": "str", "start": "time", "end": "time", "sig": "str",
    "buyer": "str", "seller": "str", "bid": "str", "ask": "str", "interval": "time",
    "fund": "str", "shares": "json", "adjustments": "json", "authorised_by": "str",
    "reason": "str", "digest": "str", "merkle_root": "str", "set": "str",
}  # fmt: skip  # every other field is an integer (Wh, nano, micro per kWh, seq, count)
ENTRY_COLUMNS = (("ledger_seq", "int"), ("ledger_ts_ms", "time"))


def entry_columns(kind: str) -> tuple[tuple[str, str], ...]:
    """The columns of entry kind ``kind``'s table: (name, column kind), the entry's seq
    and time first, then the body's fields, then its optional fields."""
    fields = (*KINDS[kind], *OPTIONAL.get(kind, ()))
    return ENTRY_COLUMNS + tuple((f, _FIELD_KINDS.get(f, "int")) for f in fields)


BALANCE_COLUMNS = (("account", "str"), ("kind", "str"), ("energy_wh", "int"),
                   ("money_nano", "int"))  # fmt: skip
INTERVAL_BALANCE_COLUMNS = (("interval_ms", "time"), *BALANCE_COLUMNS)
# Every table an export can hold: an entry kind's, the balances, the interval balances.
TABLE_NAMES = frozenset({*KINDS, "balances", "interval_balances"})


def ledger_tables(ledger: Ledger) -> dict[str, tuple[tuple[tuple[str, str], ...], list[tuple]]]:
    """Every table as (columns, rows): the entry kinds present (in KINDS order), then
    ``balances`` and ``interval_balances``. An absent optional field is None."""
    rows: dict[str, list[tuple]] = {}
    state = LedgerState()
    by_interval: list[tuple] = []
    for e in ledger.entries():
        fields = entry_columns(e.kind)[2:]
        body = e.body
        rows.setdefault(e.kind, []).append((e.seq, e.ts, *(body.get(name) for name, _ in fields)))
        state.apply(e.seq, e.ts, e.kind, body, check_sig=False)
        if e.kind == "interval_close":
            by_interval.extend(_balance_rows(state, (body["interval"],)))
    tables = {k: (entry_columns(k), rows[k]) for k in KINDS if k in rows}
    balances = [(account, b["kind"], b["energy"], b["money"])
                for account, b in sorted(ledger.balances().items())]  # fmt: skip
    tables["balances"] = (BALANCE_COLUMNS, balances)
    tables["interval_balances"] = (INTERVAL_BALANCE_COLUMNS, by_interval)
    return tables


def _balance_rows(state: LedgerState, prefix: tuple) -> Iterator[tuple]:
    for account, (energy, money) in sorted(state.bal.items()):
        yield (*prefix, account, state.kind_of(account), energy, money)


_SQLITE_TYPES = {"int": int, "time": int, "str": str, "bool": int, "json": str}


def export_tables(ledger: Ledger, path: str | os.PathLike[str]) -> dict[str, int]:
    """Write ``ledger`` as tables to a new SQLite file at ``path`` (replacing one that is
    there, whole or not at all); the number of rows per table."""
    import orjson
    import sqlite_utils  # here, not at import: it loads pandas when pandas is installed

    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    counts: dict[str, int] = {}
    try:
        db = sqlite_utils.Database(tmp)
        for name, (columns, rows) in sorted(ledger_tables(ledger).items()):
            names = [c for c, _ in columns]
            jsons = [i for i, (_, k) in enumerate(columns) if k == "json"]
            pk = {"balances": "account", "interval_balances": ("interval_ms", "account")}
            db[name].create({c: _SQLITE_TYPES[k] for c, k in columns},
                            pk=pk.get(name, "ledger_seq"))  # fmt: skip
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                batch = []
                for row in rows[start : start + _ROWS_PER_INSERT]:
                    values = list(row)
                    for i in jsons:
                        if values[i] is not None:
                            values[i] = orjson.dumps(values[i]).decode()
                    batch.append(dict(zip(names, values, strict=True)))
                db[name].insert_all(batch)
            counts[name] = len(rows)
        db.close()
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dict(sorted(counts.items()))
