"""What ``wattmesh replay`` writes: the trades as JSON Lines or CSV, and ``--out DIR``'s
tables (trades.csv, intervals.csv, accounts.csv, rejects.jsonl, summary.json), written
from the result's columns, whole or not at all (docs/replay.md, "Outputs")."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from wattmesh.exchange.atomic_file import StagedFiles
from wattmesh.exchange.replay.replay import ROWS_PER_BLOCK, ReplayResult
from wattmesh.exchange.tables import write_csv

__all__ = ["ACCOUNT_COLUMNS", "INTERVAL_COLUMNS", "TRADE_COLUMNS", "TRADE_FIELDS",
           "write_outputs", "write_trades"]  # fmt: skip


# -- writing --------------------------------------------------------------------------------
# The tables name each column's unit (the JSON Lines files keep the log's field names,
# whose units docs/replay.md gives): Wh, micro-currency per kWh, nano-currency, epoch ms.
TRADE_COLUMNS = ("seq", "mode", "interval_start_ms", "ts_ms", "buyer", "seller", "bid", "ask",
                 "qty_wh", "price_micro_per_kwh")  # fmt: skip
# The fields of the --trades JSON Lines file the same columns hold, in the same order.
TRADE_FIELDS = ("seq", "mode", "interval", "ts", "buyer", "seller", "bid", "ask", "qty", "price")
INTERVAL_COLUMNS = ("interval_start_ms", "market", "price_micro_per_kwh", "volume_wh", "fills",
                    "orders", "executable_orders")  # fmt: skip
ACCOUNT_COLUMNS = (
    "owner", "bmax_wh", "energy_start_wh", "energy_wh", "money_start_nano", "money_nano",
    "bought_wh", "sold_wh",
)  # fmt: skip
# Characters that make a str need escaping: in JSON (orjson's rule) and in CSV (RFC 4180).
_json_special = re.compile(r'[\x00-\x1f"\\]').search
_csv_special = re.compile(r'[",\r\n]').search


def _json_inner(values: list[str]) -> list[str]:
    """JSON string bodies (no quotes) of ``values``: the values themselves unless one needs
    escaping, checked once over all of them, since ids and owners almost never do."""
    if not _json_special("".join(values)):
        return values
    return [orjson.dumps(v).decode()[1:-1] for v in values]


def _csv_fields(values: list[str]) -> list[str]:
    """CSV fields of ``values``, quoted only where needed (like csv.QUOTE_MINIMAL)."""
    if not _csv_special("".join(values)):
        return values
    return [
        '"' + v.replace('"', '""') + '"' if _csv_special(v) else v for v in values
    ]  # fmt: skip


def write_trades(result: ReplayResult, fp: IO[bytes]) -> None:
    """Write the fills as JSON Lines (the ``--trades`` file): seq, mode, interval, ts,
    buyer, seller, bid, ask, qty, price; the same bytes orjson writes for trade_rows()."""
    t = result.trades
    owners = _json_inner(result.owners)
    mode = result.options.mode
    for rows in _trade_blocks(t, _json_inner):
        lines = [
            f'{{"seq":{i + 1},"mode":"{mode}","interval":{"null" if iv is None else iv},'
            f'"ts":{ts},"buyer":"{owners[b]}","seller":"{owners[s]}","bid":"{bid}",'
            f'"ask":"{ask}","qty":{q},"price":{p}}}\n'
            for i, iv, ts, b, s, bid, ask, q, p in rows
        ]
        fp.write("".join(lines).encode())


def _trade_blocks(
    t: Any, text: Callable[[list[str]], list[str]]
) -> Iterator[Iterator[tuple]]:
    """The trades' columns, a block of rows at a time: (index, interval, ts, buyer handle,
    seller handle, bid text, ask text, qty, price), so each writer formats only. The ids
    become str here, a block at a time (``text`` escapes them for the format), so a
    million fills never hold a million id strings at once."""
    for start in range(0, len(t), ROWS_PER_BLOCK):
        end = min(start + ROWS_PER_BLOCK, len(t))
        yield zip(
            range(start, end),
            t.interval[start:end],
            t.ts[start:end],
            t.buyer[start:end],
            t.seller[start:end],
            text(t.bid[start:end]),
            text(t.ask[start:end]),
            t.qty[start:end],
            t.price[start:end],
            strict=True,
        )


def write_outputs(result: ReplayResult, out_dir: str | os.PathLike[str]) -> None:
    """Write trades.csv, intervals.csv, accounts.csv, rejects.jsonl (only when a line was
    refused) and summary.json, each whole or not at all: they are written under temporary
    names and renamed into place together at the end (exchange/atomic_file.py)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with StagedFiles(out) as files:
        _write_outputs(result, files)


def _write_outputs(result: ReplayResult, files: StagedFiles) -> None:
    t = result.trades
    owners = _csv_fields(result.owners)
    mode = result.options.mode
    with files.open("trades.csv") as fp:
        fp.write((",".join(TRADE_COLUMNS) + "\n").encode())
        for rows in _trade_blocks(t, _csv_fields):
            lines = [
                f"{i + 1},{mode},{'' if iv is None else iv},{ts},{owners[b]},{owners[s]},"
                f"{bid},{ask},{q},{p}\n"
                for i, iv, ts, b, s, bid, ask, q, p in rows
            ]
            fp.write("".join(lines).encode())
    write_csv(
        files.open("intervals.csv"),
        INTERVAL_COLUMNS,
        (
            (s.interval, s.market, s.price, s.volume, s.fills, s.orders, s.executable_orders)
            for s in result.intervals
        ),
    )
    bought = [0] * len(result.owners)
    sold = [0] * len(result.owners)
    for buyer, seller, qty in zip(t.buyer, t.seller, t.qty, strict=True):
        bought[buyer] += qty
        sold[seller] += qty
    rows = []
    for h, owner in enumerate(result.owners):
        start = result.opening.get(h, (None, None, None))
        end = result.closing.get(h, (None, None, None))
        rows.append((owner, start[2], start[0], end[0], start[1], end[1], bought[h], sold[h]))
    write_csv(files.open("accounts.csv"), ACCOUNT_COLUMNS, rows)
    if result.rejects:
        with files.open("rejects.jsonl") as fp:
            fp.writelines(orjson.dumps(r._asdict()) + b"\n" for r in result.rejects)
    else:  # an empty file is no valid NDJSON to pandas or polars: none at all
        files.drop("rejects.jsonl")
    with files.open("summary.json") as fp:
        fp.write(orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2) + b"\n")

