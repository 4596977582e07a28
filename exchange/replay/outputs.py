"""What ``wattmesh replay`` writes: the trades as JSON Lines or CSV, and ``--out DIR``'s
tables (trades, intervals, accounts and refusals as CSV/JSON Lines and/or Parquet, and
summary.json), written from the result's columns, whole or not at all (docs/replay.md,
"Outputs")."""

from __future__ import annotations

import os
import re
import signal
import sys
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

import orjson

from wattmesh.exchange.atomic_file import StagedFiles
from wattmesh.exchange.replay.replay import ROWS_PER_BLOCK, ReplayResult
from wattmesh.exchange.tables import (
    DEFAULT_FORMAT,
    ColumnTable,
    arrow_array,
    arrow_table,
    arrow_type,
    check_format,
    utf8_array,
    write_csv,
    write_parquet,
    writes_csv,
    writes_parquet,
)

__all__ = ["ACCOUNT_COLUMNS", "INTERVAL_COLUMNS", "REJECT_COLUMNS", "TRADE_COLUMNS",
           "TRADE_FIELDS", "write_outputs", "write_trades"]  # fmt: skip


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
REJECT_COLUMNS = ("line", "code", "reason", "text")  # rejects.jsonl's fields, in order
# book (with --book): each auction's orders per price level, asked and executable.
BOOK_COLUMNS = ("interval_start_ms", "market", "side", "price_micro_per_kwh", "qty_wh",
                "executable_wh")  # fmt: skip
BOOK_KINDS = ("time", "str", "str", "int", "int", "int")
# The Parquet kind of each column (exchange/tables.py): instants are UTC timestamps.
TRADE_KINDS = ("int", "str", "time", "time", "str", "str", "str", "str", "int", "int")
INTERVAL_KINDS = ("time", "str", "int", "int", "int", "int", "int")
ACCOUNT_KINDS = ("str", "int", "int", "int", "int", "int", "int", "int")
REJECT_KINDS = ("int", "str", "str", "str")
# Fills formatted as text at a time (trades.csv, --trades): a block's lines are held three
# times over (the str of each, joined, encoded), about 1 KB a fill, so 8,192 rows keep that
# near 8 MB where ROWS_PER_BLOCK (65,536; still the Parquet row group) made it 60 MB.
TEXT_ROWS_PER_BLOCK = 8_192
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


def _trade_blocks(t: Any, text: Callable[[list[str]], list[str]]) -> Iterator[Iterator[tuple]]:
    """The trades' columns, a block of rows at a time: (index, interval, ts, buyer handle,
    seller handle, bid text, ask text, qty, price), so each writer formats only. The ids
    become str here, a block at a time (``text`` escapes them for the format), so a
    million fills never hold a million id strings at once."""
    for start in range(0, len(t), TEXT_ROWS_PER_BLOCK):
        end = min(start + TEXT_ROWS_PER_BLOCK, len(t))
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


def write_outputs(
    result: ReplayResult, out_dir: str | os.PathLike[str], fmt: str = DEFAULT_FORMAT
) -> None:
    """Write the tables (by ``fmt``, exchange/tables.py: csv writes trades.csv,
    intervals.csv, accounts.csv and rejects.jsonl (only when a line was refused); parquet
    writes trades, intervals, accounts and rejects as .parquet) and summary.json, each
    whole or not at all: they are written under temporary names and renamed into place
    together at the end (exchange/atomic_file.py). Files of a format not written, left by
    an earlier run, are removed."""
    check_format(fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with StagedFiles(out) as files:
        accounts = _account_rows(result)
        book = _book_table(result) if result.book is not None else None
        if writes_parquet(fmt):
            parquet = _parquet_tables(result, accounts, book, files, writes_csv(fmt))
        else:
            parquet = nullcontext()
            for name in PARQUET_NAMES:
                files.drop(name)
        with parquet:
            if writes_csv(fmt):
                _write_csv_outputs(result, accounts, files)
                if book is not None:
                    write_csv(files.open("book.csv"), book.names, book.rows())
            else:
                for name in ("trades.csv", "intervals.csv", "accounts.csv", "rejects.jsonl"):
                    files.drop(name)
        for ext in ("csv", "parquet"):
            if result.book is None or not (writes_csv if ext == "csv" else writes_parquet)(fmt):
                files.drop(f"book.{ext}")
        with files.open("summary.json") as fp:
            fp.write(orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2) + b"\n")


def _book_table(result: ReplayResult) -> ColumnTable:
    b = result.book
    assert b is not None
    sides = [("bid", "ask")[s] for s in b.side]
    return ColumnTable(BOOK_COLUMNS, BOOK_KINDS,
                       (b.interval, b.market, sides, b.price, b.qty, b.executable))  # fmt: skip


def _account_rows(result: ReplayResult) -> list[tuple]:
    """accounts.csv's rows: each owner's opening and closing balances, bought and sold."""
    t = result.trades
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
    return rows


def _interval_rows(result: ReplayResult) -> list[tuple]:
    return [(s.interval, s.market, s.price, s.volume, s.fills, s.orders, s.executable_orders)
            for s in result.intervals]  # fmt: skip


def _write_csv_outputs(result: ReplayResult, accounts: list[tuple], files: StagedFiles) -> None:
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
    write_csv(files.open("intervals.csv"), INTERVAL_COLUMNS, _interval_rows(result))
    write_csv(files.open("accounts.csv"), ACCOUNT_COLUMNS, accounts)
    if result.rejects:
        with files.open("rejects.jsonl") as fp:
            fp.writelines(orjson.dumps(r._asdict()) + b"\n" for r in result.rejects)
    else:  # an empty file is no valid NDJSON to pandas or polars: none at all
        files.drop("rejects.jsonl")


PARQUET_NAMES = ("trades.parquet", "intervals.parquet", "accounts.parquet", "rejects.parquet")


@contextmanager
def _parquet_tables(
    result: ReplayResult,
    accounts: list[tuple],
    book: ColumnTable | None,
    files: StagedFiles,
    beside_csv: bool,
) -> Iterator[None]:
    """The Parquet tables, written when the block (the CSV files) is done, or, with
    ``beside_csv`` (``--format both``), by a forked child process while the block writes
    the CSV files, so that the second format costs the other core and not the wait (a
    1M-event replay: +0.6 s one after the other; the CSV's formatting holds the GIL, so a
    thread does not help). The staged files are opened here, before the fork: the child
    writes into them and exits; they are renamed into place with the others only when it
    succeeded. Where forking is not safe (another thread is running, or not Linux), the
    tables are written here, after the block."""
    names = PARQUET_NAMES + (("book.parquet",) if book is not None else ())
    if not beside_csv or not _only_thread():
        yield
        _write_parquet_tables(result, accounts, book, files.open)
        return
    opened = {name: files.open(name) for name in names}
    read_end, write_end = os.pipe()
    # Ctrl-C held over the fork, so that the child cannot raise KeyboardInterrupt into the
    # parent's cleanup (which would remove the files the parent is writing).
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = os.fork()
    if pid == 0:  # the child: write, flush, and leave without running the parent's cleanup
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it; the parent cleans up
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.close(read_end)
            _write_parquet_tables(result, accounts, book, opened.__getitem__)
            for fp in opened.values():
                if not fp.closed:
                    fp.flush()
            code = 0
        except BaseException as exc:  # noqa: BLE001 (reported to the parent, which raises)
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[:4096])
        finally:
            os._exit(code)
    waited = False
    try:  # a Ctrl-C held over the fork arrives here, where the child is killed for it
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(write_end)
        yield
        _, status = os.waitpid(pid, 0)
        waited = True
        with os.fdopen(read_end, "rb") as pipe:
            problem = pipe.read().decode(errors="replace")
        read_end = -1
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError(f"writing the Parquet tables: {problem or 'the writer process died'}")
    finally:
        if not waited:  # an error or Ctrl-C here: the child's files are removed with ours
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if read_end >= 0:
            os.close(read_end)


def _only_thread() -> bool:
    """Whether forking is safe here: on Linux, and this process runs one thread, native
    ones included (pyarrow's pools, say, which threading does not count)."""
    if sys.platform != "linux":
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _write_parquet_tables(
    result: ReplayResult,
    accounts: list[tuple],
    book: ColumnTable | None,
    open_file: Callable[[str], IO[bytes]],
) -> None:
    """The Parquet tables, into the files ``open_file(name)`` gives: the four of
    :func:`_write_parquet_outputs`, and the book's when there is one."""
    _write_parquet_outputs(result, accounts, open_file)
    if book is not None:
        write_parquet(open_file("book.parquet"), arrow_table(book))


def _write_parquet_outputs(
    result: ReplayResult, accounts: list[tuple], open_file: Callable[[str], IO[bytes]]
) -> None:
    """The four Parquet tables, from the columns: the trades a row group of
    ROWS_PER_BLOCK fills at a time (numbers through the arrays' buffers, owners by their
    handles, ids made text a block at a time), so memory stays that of one block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = result.trades
    n = len(t)
    whole = {  # whole columns, zero-copy over the arrays; sliced per row group below
        "ts_ms": arrow_array("time", t.ts),
        "qty_wh": arrow_array("int", t.qty),
        "price_micro_per_kwh": arrow_array("int", t.price),
    }
    from wattmesh.exchange.replay._logscan import utf8_take

    names = [o.encode("utf-8", "surrogatepass") for o in result.owners]
    owner_offsets = array("i", accumulate(map(len, names), initial=0))
    owner_bytes = b"".join(names)

    def owner_column(handles: array) -> pa.Array:
        """The owners of a block's fills from their handles, gathered in C."""
        return utf8_array(*utf8_take(handles, owner_offsets, owner_bytes))

    mode = result.options.mode.encode()
    schema = pa.schema(list(zip(TRADE_COLUMNS, map(arrow_type, TRADE_KINDS), strict=True)))
    fp = open_file("trades.parquet")
    # Dictionary pages only where values repeat: the ids are unique, and encoding them
    # into a dictionary that Parquet then abandons costs a fifth of the writing.
    with fp, pq.ParquetWriter(fp, schema, compression="snappy",
                              use_dictionary=["mode", "buyer", "seller"]) as w:  # fmt: skip
        for start in range(0, n, ROWS_PER_BLOCK):
            end = min(start + ROWS_PER_BLOCK, n)
            size = end - start
            cols = {k: v.slice(start, size) for k, v in whole.items()}
            w.write_batch(pa.record_batch([
                arrow_array("int", array("q", range(start + 1, end + 1))),
                utf8_array(array("i", range(0, (size + 1) * len(mode), len(mode))), mode * size),
                arrow_array("time", t.interval[start:end]),
                cols["ts_ms"],
                owner_column(t.buyer[start:end]),
                owner_column(t.seller[start:end]),
                utf8_array(*t.bid.utf8(start, end)),
                utf8_array(*t.ask.utf8(start, end)),
                cols["qty_wh"],
                cols["price_micro_per_kwh"],
            ], schema=schema))  # fmt: skip

    def table(names: tuple[str, ...], kinds: tuple[str, ...], rows: list[tuple]) -> ColumnTable:
        columns = tuple(zip(*rows, strict=True)) if rows else tuple(() for _ in names)
        return ColumnTable(names, kinds, columns)

    rejects = [tuple(r) for r in result.rejects]
    for name, tab in (
        ("intervals", table(INTERVAL_COLUMNS, INTERVAL_KINDS, _interval_rows(result))),
        ("accounts", table(ACCOUNT_COLUMNS, ACCOUNT_KINDS, accounts)),
        ("rejects", table(REJECT_COLUMNS, REJECT_KINDS, rejects)),
    ):
        write_parquet(open_file(f"{name}.parquet"), arrow_table(tab))
