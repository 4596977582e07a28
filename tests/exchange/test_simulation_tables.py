"""``simulate gode-sunder|community --out DIR``: per-period and per-household tables as
CSV and Parquet (exchange/simulation_tables.py), the same --format rule as replay."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

GS = ("simulate", "gode-sunder", "--market", "1", "--strategy", "zi-c", "--seeds", "2",
      "--shouts", "300", "--workers", "1")  # fmt: skip
COMMUNITY = ("simulate", "community", "--households", "4", "--prosumers", "2", "--days", "1")


def test_gode_sunder_out_writes_periods_trades_and_schedule(cli, tmp_path: Path) -> None:
    code, out, err = cli(*GS, "--json")
    assert code == 0, err
    report = orjson.loads(out)
    code, _, err = cli(*GS, "--out", tmp_path)
    assert code == 0, err
    periods = pq.read_table(tmp_path / "periods.parquet")
    assert periods.num_rows == 2 * 6
    assert periods.schema.field("efficiency_pct").type == pa.float64()
    assert periods.schema.field("surplus").type == pa.int64()
    rows = periods.to_pylist()
    for k, mean in enumerate(report["efficiency_by_period"]):
        got = [r["efficiency_pct"] for r in rows if r["period"] == k + 1]
        assert round(sum(got) / len(got), 4) == mean
    trades = pq.read_table(tmp_path / "trades.parquet").to_pylist()
    assert len(trades) == sum(r["trades"] for r in rows)
    assert all(t["value"] >= t["price"] >= t["cost"] for t in trades)  # ZI-C never loses
    with open(tmp_path / "trades.csv", newline="") as fp:
        assert [int(r["price"]) for r in csv.DictReader(fp)] == [t["price"] for t in trades]
    schedule = pq.read_table(tmp_path / "schedule.parquet").to_pylist()
    assert {r["role"] for r in schedule} == {"buyer", "seller"}
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["simulation"] == "gode-sunder" and summary["equilibrium"]["quantity"] > 0
    assert summary["efficiency"] == report["efficiency"]


def test_community_out_parquet_has_typed_columns_and_the_csv_rows(cli, tmp_path: Path) -> None:
    code, _, err = cli(*COMMUNITY, "--out", tmp_path)
    assert code == 0, err
    intervals = pq.read_table(tmp_path / "intervals.parquet")
    assert intervals.schema.field("interval_start_ms").type == pa.timestamp("ms", tz="UTC")
    with open(tmp_path / "intervals.csv", newline="") as fp:
        rows = list(csv.DictReader(fp))
    assert intervals.column("volume_wh").to_pylist() == [int(r["volume_wh"]) for r in rows]
    starts = [int(t.timestamp() * 1000) for t in intervals.column("interval_start_ms").to_pylist()]
    assert starts == [int(r["interval_start_ms"]) for r in rows]
    households = pq.read_table(tmp_path / "households.parquet")
    assert households.schema.field("name").type == pa.string()
    assert households.column("name").to_pylist() == ["p001", "p002", "c001", "c002"]


def test_format_csv_writes_no_parquet_and_format_needs_out(cli, tmp_path: Path) -> None:
    code, _, err = cli(*COMMUNITY, "--out", tmp_path, "--format", "csv")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "households.csv", "intervals.csv", "summary.json"]  # fmt: skip
    code, _, err = cli(*GS, "--format", "parquet")
    assert code == 2 and "--format chooses --out's tables: give --out DIR" in err
