"""replay --out's Parquet tables: the CSV tables' rows with typed columns (integers int64,
instants UTC timestamps, ids strings), --format choosing the files, and one clear line when
pyarrow is missing (docs/replay.md, "Outputs"; docs/analysis.md)."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wattmesh.exchange import tables
from wattmesh.exchange.replay import outputs
from wattmesh.exchange.replay import replay as replay_module
from wattmesh.exchange.replay.outputs import write_outputs

UTC_MS = pa.timestamp("ms", tz="UTC")


def sample(mode: str) -> replay_module.ReplayResult:
    return replay_module.replay(None, replay_module.ReplayOptions(mode=mode))


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fp:
        return list(csv.DictReader(fp))


def as_csv_text(value: object) -> str:
    """A Parquet value as the CSV writes it (timestamps as epoch ms)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return str(int(value.timestamp() * 1000))
    return str(value)


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_parquet_tables_hold_the_csv_rows_with_typed_columns(tmp_path: Path, mode: str) -> None:
    write_outputs(sample(mode), tmp_path, "both")
    for name, kinds in (("trades", outputs.TRADE_KINDS), ("intervals", outputs.INTERVAL_KINDS),
                        ("accounts", outputs.ACCOUNT_KINDS)):  # fmt: skip
        table = pq.read_table(tmp_path / f"{name}.parquet")
        rows = csv_rows(tmp_path / f"{name}.csv")
        assert table.column_names == list(rows[0])
        assert table.schema.types == [tables.arrow_type(k) for k in kinds]
        got = [[as_csv_text(v) for v in r.values()] for r in table.to_pylist()]
        assert got == [list(r.values()) for r in rows], name
    trades = pq.read_table(tmp_path / "trades.parquet")
    assert trades.schema.field("ts_ms").type == UTC_MS
    assert trades.schema.field("qty_wh").type == pa.int64()
    assert trades.schema.field("bid").type == pa.string()
    rejects = pq.read_table(tmp_path / "rejects.parquet")
    assert rejects.column_names == ["line", "code", "reason", "text"]


def test_trades_span_several_row_groups_in_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(outputs, "ROWS_PER_BLOCK", 50)  # the sample's 418 fills: 9 groups
    write_outputs(sample("call"), tmp_path, "both")
    meta = pq.ParquetFile(tmp_path / "trades.parquet").metadata
    assert meta.num_row_groups == 9
    table = pq.read_table(tmp_path / "trades.parquet")
    assert table.column("seq").to_pylist() == list(range(1, 419))
    assert table.column("bid").to_pylist() == [r["bid"] for r in csv_rows(tmp_path / "trades.csv")]


def test_refusals_are_a_parquet_table(tmp_path: Path, order_log) -> None:
    bad = order_log.replay(b"not json", order_log.account("a", 1, 1))
    write_outputs(bad, tmp_path, "parquet")
    [row] = pq.read_table(tmp_path / "rejects.parquet").to_pylist()
    assert (row["line"], row["code"], row["text"]) == (1, "bad-json", "not json")


def test_format_chooses_the_files_and_removes_the_other_formats(tmp_path: Path) -> None:
    result = sample("call")
    write_outputs(result, tmp_path, "both")
    both = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    write_outputs(result, tmp_path, "parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accounts.parquet", "intervals.parquet", "rejects.parquet", "summary.json",
        "trades.parquet"]  # fmt: skip
    assert all(both[p.name] == p.read_bytes() for p in tmp_path.iterdir())  # same bytes
    write_outputs(result, tmp_path, "csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accounts.csv", "intervals.csv", "summary.json", "trades.csv"]  # fmt: skip
    assert all(both[p.name] == p.read_bytes() for p in tmp_path.iterdir())


def test_the_cli_default_is_both_and_format_needs_out(console, tmp_path: Path) -> None:
    code, _, err = console("replay", "--out", tmp_path / "out")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"trades.csv", "trades.parquet", "rejects.parquet"} <= names
    code, _, err = console("replay", "--format", "parquet")
    assert code == 2 and err == "wattmesh: error: --format chooses --out's tables: give --out DIR\n"


def test_without_pyarrow_the_default_fails_in_one_line_and_writes_nothing(
    console, tmp_path: Path, monkeypatch
) -> None:
    real = tables.importlib.util.find_spec
    monkeypatch.setattr(tables.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))  # fmt: skip
    out = tmp_path / "out"
    code, stdout, err = console("replay", "--out", out)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "pip install 'wattmesh[analysis]'" in err
    assert "--format csv" in err and not out.exists()
    code, _, err = console("replay", "--out", out, "--format", "csv")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "accounts.csv", "intervals.csv", "summary.json", "trades.csv"]  # fmt: skip
    assert orjson.loads((out / "summary.json").read_bytes())["fills"] == 418


def test_the_sample_with_meters_adds_readings_and_keeps_the_orders() -> None:
    from wattmesh.exchange.replay.sample_log import generate

    plain = list(generate(4, 1))
    metered = list(generate(4, 1, meters=True))
    assert [e for e in metered if e["type"] not in ("meter", "reading")] == plain
    readings = [e for e in metered if e["type"] == "reading"]
    assert len(readings) == 4 * 96 and [e["type"] for e in metered[4:8]] == ["meter"] * 4
    assert all(r["end"] - r["start"] == 900_000 for r in readings)


def test_book_is_each_auctions_depth_and_covers_what_traded(tmp_path: Path) -> None:
    result = replay_module.replay(None, replay_module.ReplayOptions(mode="call", book=True))
    write_outputs(result, tmp_path, "both")
    book = pq.read_table(tmp_path / "book.parquet").to_pylist()
    assert [list(r.values()) for r in csv_rows(tmp_path / "book.csv")] == [
        [as_csv_text(v) for v in r.values()] for r in book]  # fmt: skip
    for stats in result.intervals:
        rows = [r for r in book
                if int(r["interval_start_ms"].timestamp() * 1000) == stats.interval]  # fmt: skip
        for side in ("bid", "ask"):
            levels = [r for r in rows if r["side"] == side]
            assert all(0 <= r["executable_wh"] <= r["qty_wh"] for r in levels)
            assert sum(r["executable_wh"] for r in levels) >= stats.volume
            prices = [r["price_micro_per_kwh"] for r in levels]
            assert prices == sorted(prices, reverse=side == "bid")  # best first
    held = sum(s.orders - s.executable_orders for s in result.intervals)
    assert held > 0 and any(r["executable_wh"] < r["qty_wh"] for r in book)  # caps bound
    plain = replay_module.replay(None, replay_module.ReplayOptions(mode="call"))
    write_outputs(plain, tmp_path, "both")
    assert not (tmp_path / "book.csv").exists() and not (tmp_path / "book.parquet").exists()


def test_a_failed_parquet_writer_process_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    # --format both writes the Parquet tables in a forked child (outputs._parquet_tables);
    # its failure is this process's error, and no file of the run is left.
    def broken(*_args: object) -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(outputs, "_write_parquet_outputs", broken)
    # the forking path, whatever threads this test process runs (pyarrow's pools, trio's
    # thread cache)
    monkeypatch.setattr(outputs, "_only_thread", lambda: True)
    with pytest.raises(OSError, match="writing the Parquet tables: RuntimeError: the disk"):
        write_outputs(sample("call"), tmp_path, "both")
    assert list(tmp_path.iterdir()) == []


def test_with_another_thread_running_both_formats_are_written_here(tmp_path: Path) -> None:
    # Forking a process that runs other threads is not safe: the tables are then written
    # one after the other, with the same bytes.
    import threading

    result = sample("call")
    write_outputs(result, tmp_path / "forked", "both")
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        write_outputs(result, tmp_path / "here", "both")
    finally:
        release.set()
        other.join()
    forked = {p.name: p.read_bytes() for p in (tmp_path / "forked").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "here").iterdir()} == forked
