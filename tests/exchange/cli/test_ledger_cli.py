"""``wattmesh ledger ...`` (wattmesh.exchange.cli.ledger), run through the root command."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import orjson
import pytest

from wattmesh.settlement.ledger import Ledger

T0 = 1_718_928_000_000

@pytest.fixture
def ledger_file(tmp_path: Path, street_opening) -> Path:
    path = tmp_path / "node.db"
    with Ledger.open(path) as led:
        led.append_batch(street_opening(money=10**9, bob_energy=1_000), ts=T0)
        led.append_batch(
            [
                ("trade", {"buyer": "alice", "seller": "bob", "qty": 100, "price": 200_000,
                           "bid": "b" * 64, "ask": "a" * 64, "interval": T0}),
                ("fee", {"owner": "alice", "amount": 40, "trade": 7}),
            ],
            ts=T0 + 1,
        )  # fmt: skip
    return path


def test_verify_ok_and_head(cli, ledger_file: Path) -> None:
    code, out, _ = cli("ledger", "head", ledger_file)
    assert code == 0
    head = out.strip()
    seq, h = head.split(":")
    assert seq == "8" and len(h) == 64
    code, out, _ = cli("ledger", "verify", ledger_file)
    assert code == 0 and out.strip() == f"ok: 8 entries, head {head}"
    code, out, _ = cli("ledger", "verify", ledger_file, "--expect-head", head)
    assert code == 0


def test_verify_names_the_first_bad_entry(cli, ledger_file: Path) -> None:
    c = sqlite3.connect(ledger_file, isolation_level=None)
    c.execute("UPDATE entries SET ts = ts + 1 WHERE seq = 5")
    c.close()
    code, out, _ = cli("ledger", "verify", ledger_file)
    assert code == 1
    assert out.startswith("bad entry 5: hash mismatch")


def test_verify_expect_head_catches_truncation(cli, ledger_file: Path) -> None:
    _, head, _ = cli("ledger", "head", ledger_file)
    c = sqlite3.connect(ledger_file, isolation_level=None)
    c.execute("DELETE FROM entries WHERE seq = 8")
    c.close()
    code, out, _ = cli("ledger", "verify", ledger_file, "--expect-head", head.strip())
    assert code == 1 and "truncated" in out


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path, ledger_file: Path) -> None:
    code, _, err = cli("ledger", "verify", tmp_path / "missing.db")
    assert code == 2 and err.startswith("wattmesh: error: no ledger file")
    assert err.count("\n") == 1
    assert not (tmp_path / "missing.db").exists()  # never created by a read command
    code, _, err = cli("ledger", "verify", ledger_file, "--expect-head", "nonsense")
    assert code == 2 and err.startswith("wattmesh: error: --expect-head:")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    code, _, err = cli("ledger", "balances", junk)
    assert code == 2 and err.startswith("wattmesh: error:") and err.count("\n") == 1
    code, _, err = cli("ledger", "show", ledger_file, "--kind", "mint")
    assert code == 2 and "unknown kind 'mint'" in err


def test_balances_table_and_json(cli, ledger_file: Path) -> None:
    code, out, _ = cli("ledger", "balances", ledger_file, "--json")
    assert code == 0
    bal = orjson.loads(out)
    assert bal["alice"] == {"kind": "member", "energy": 100, "money": 10**9 - 20_000_000 - 40}
    assert bal["fund:fees"]["money"] == 40
    assert sum(b["money"] for b in bal.values()) == 0
    code, out, _ = cli("ledger", "balances", ledger_file)
    lines = out.splitlines()
    assert lines[0].split() == ["account", "kind", "energy_wh", "money_nano"]
    assert any(line.split() == ["bob", "member", "900", str(10**9 - 300_000_000 + 20_000_000)]
               for line in lines)  # fmt: skip


def test_show_filters(cli, ledger_file: Path) -> None:
    code, out, _ = cli("ledger", "show", ledger_file)
    rows = [orjson.loads(x) for x in out.splitlines()]
    assert code == 0 and [r["seq"] for r in rows] == list(range(1, 9))
    assert rows[1]["prev"] == rows[0]["hash"]
    _, out, _ = cli("ledger", "show", ledger_file, "--kind", "deposit")
    assert [orjson.loads(x)["seq"] for x in out.splitlines()] == [4, 5]
    _, out, _ = cli("ledger", "show", ledger_file, "--owner", "bob")
    assert [orjson.loads(x)["seq"] for x in out.splitlines()] == [3, 5, 6, 7]
    _, out, _ = cli("ledger", "show", ledger_file, "--owner", "fund:fees")
    assert [orjson.loads(x)["seq"] for x in out.splitlines()] == [1]
    _, out, _ = cli("ledger", "show", ledger_file, "--since", "7", "--owner", "alice")
    assert [orjson.loads(x)["kind"] for x in out.splitlines()] == ["trade", "fee"]


def test_export_csv_and_jsonl(cli, ledger_file: Path) -> None:
    code, out, _ = cli("ledger", "export", ledger_file, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["seq"] for r in rows] == [str(i) for i in range(1, 9)]
    assert orjson.loads(rows[6]["body"])["qty"] == 100
    assert rows[0]["prev"] == "0" * 64 and rows[1]["prev"] == rows[0]["hash"]
    code, out, _ = cli("ledger", "export", ledger_file, "--format", "jsonl")
    lines = [orjson.loads(x) for x in out.splitlines()]
    assert code == 0 and len(lines) == 8 and lines[-1]["kind"] == "fee"
    assert [x["hash"] for x in lines] == [r["hash"] for r in rows]
    code, _, _ = cli("ledger", "export", ledger_file, "--format", "xml")
    assert code == 2


def test_export_sqlite_is_a_table_per_kind(cli, ledger_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables.db"
    out.write_bytes(b"an older export")  # replaced whole
    code, _, err = cli("ledger", "export", ledger_file, "--format", "sqlite", "--out", out)
    assert code == 0, err
    db = sqlite3.connect(out)
    with Ledger.open(ledger_file, create=False) as led:
        kinds: dict[str, int] = {}
        for e in led.entries():
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        balances = led.balances()
    for kind, n in kinds.items():
        assert db.execute(f'SELECT count(*) FROM "{kind}"').fetchone() == (n,)
    assert f"{len(kinds) + 2} tables" in err  # and balances, interval_balances
    # Typed columns: sums are numbers, not text.
    assert db.execute("SELECT buyer, seller, qty * price, ledger_seq FROM trade").fetchall() == [
        ("alice", "bob", 100 * 200_000, 7)
    ]
    got = {a: (k, e, m) for a, k, e, m in db.execute("SELECT * FROM balances")}
    assert got == {a: (b["kind"], b["energy"], b["money"]) for a, b in balances.items()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    code, _, err = cli("ledger", "export", ledger_file, "--format", "sqlite")
    assert code == 2 and "--out goes with --format sqlite (a FILE) or parquet (a DIR)" in err
