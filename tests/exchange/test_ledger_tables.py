"""``ledger export --format parquet|sqlite``: the same tables from one definition
(settlement/ledger/tables.py), typed, with every account's balances after each interval."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wattmesh.exchange.tables import arrow_type
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.ledger.tables import entry_columns

SQLITE_TYPE = {"int": "INTEGER", "time": "INTEGER", "bool": "INTEGER", "str": "TEXT",
               "json": "TEXT"}  # fmt: skip


@pytest.fixture(scope="module")
def sample_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample day settled into a ledger (replay --ledger), with its closes."""
    from typer.testing import CliRunner

    from wattmesh.exchange.cli.app import app

    path = tmp_path_factory.mktemp("ledger") / "sample.db"
    res = CliRunner().invoke(app, ["replay", "--ledger", str(path)])
    assert res.exit_code == 0, res.stderr
    return path


def test_parquet_and_sqlite_hold_the_same_typed_tables(cli, sample_ledger, tmp_path) -> None:
    code, _, err = cli("ledger", "export", sample_ledger, "--format", "parquet",
                       "--out", tmp_path / "pq")  # fmt: skip
    assert code == 0, err
    code, _, err = cli("ledger", "export", sample_ledger, "--format", "sqlite",
                       "--out", tmp_path / "t.db")  # fmt: skip
    assert code == 0, err
    db = sqlite3.connect(tmp_path / "t.db")
    names = sorted(p.stem for p in (tmp_path / "pq").iterdir())
    assert names == sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                                    "WHERE type = 'table'"))  # fmt: skip
    assert {"trade", "interval_close", "balances", "interval_balances"} <= set(names)
    for name in names:
        table = pq.read_table(tmp_path / "pq" / f"{name}.parquet")
        info = db.execute(f'PRAGMA table_info("{name}")').fetchall()
        assert table.column_names == [c[1] for c in info], name
        for field, col in zip(table.schema, info, strict=True):
            assert SQLITE_TYPE[_kind_of(field.type)] == col[2], (name, field.name)
        rows = db.execute(f'SELECT * FROM "{name}"').fetchall()
        assert table.num_rows == len(rows), name
    trade = pq.read_table(tmp_path / "pq" / "trade.parquet")
    assert [f.name for f in trade.schema] == [c for c, _ in entry_columns("trade")]
    assert trade.schema.field("ledger_ts_ms").type == pa.timestamp("ms", tz="UTC")
    assert trade.schema.field("interval").type == pa.timestamp("ms", tz="UTC")
    assert trade.schema.field("qty").type == pa.int64()
    sql_sum = db.execute("SELECT sum(qty * price) FROM trade").fetchone()[0]
    qty, price = trade.column("qty").to_pylist(), trade.column("price").to_pylist()
    assert sql_sum == sum(q * p for q, p in zip(qty, price, strict=True))


def _kind_of(t: pa.DataType) -> str:
    for kind in ("int", "time", "str", "bool"):
        if t == arrow_type(kind):
            return kind
    raise AssertionError(t)


def test_interval_balances_end_at_the_ledgers_balances(cli, sample_ledger, tmp_path) -> None:
    code, _, err = cli("ledger", "export", sample_ledger, "--format", "parquet",
                       "--out", tmp_path)  # fmt: skip
    assert code == 0 and "interval_balances" in err
    rows = pq.read_table(tmp_path / "interval_balances.parquet").to_pylist()
    closes = pq.read_table(tmp_path / "interval_close.parquet").column("interval").to_pylist()
    assert sorted({r["interval_ms"] for r in rows}) == closes
    with Ledger.open(sample_ledger, create=False) as led:
        head = led.balances()
    last = [r for r in rows if r["interval_ms"] == closes[-1]]
    assert {r["account"]: (r["kind"], r["energy_wh"], r["money_nano"]) for r in last} == {
        a: (b["kind"], b["energy"], b["money"]) for a, b in head.items()}  # fmt: skip
    # energy is conserved at every close: the external accounts balance the members
    for interval in closes[:5]:
        assert sum(r["energy_wh"] for r in rows if r["interval_ms"] == interval) == 0


def test_parquet_export_bad_out_is_one_line(cli, sample_ledger, tmp_path) -> None:
    afile = tmp_path / "x.parquet"
    afile.write_bytes(b"")
    code, _, err = cli("ledger", "export", sample_ledger, "--format", "parquet", "--out", afile)
    assert code == 2 and err.count("\n") == 1 and "is a file" in err
    code, _, err = cli("ledger", "export", sample_ledger, "--format", "parquet")
    assert code == 2 and "--out goes with" in err


def test_an_export_removes_only_an_earlier_exports_tables(cli, sample_ledger, tmp_path) -> None:
    # A folder that also holds a replay's tables and a sweep's: only ledger tables this
    # ledger has no rows for (here grid_export, left by "an earlier export") are removed.
    out = tmp_path / "shared"
    assert cli("replay", "--out", out)[0] == 0
    (out / "sweep.parquet").write_bytes(b"a sweep's table")
    (out / "grid_export.parquet").write_bytes(b"an earlier export's table")
    before = {p.name for p in out.iterdir()} - {"grid_export.parquet"}
    code, _, err = cli("ledger", "export", sample_ledger, "--format", "parquet", "--out", out)
    assert code == 0, err
    after = {p.name for p in out.iterdir()}
    assert before <= after and "grid_export.parquet" not in after
    assert (out / "sweep.parquet").read_bytes() == b"a sweep's table"
