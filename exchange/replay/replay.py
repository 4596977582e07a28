"""Replay an order log through the matching engine: the analysts' first tool.

An order log is JSON Lines, one event per line in the order the events happened:
``account`` lines (opening balances), ``order`` lines, ``cancel`` lines, ``meter`` lines
(a meter registered to a household) and ``reading`` lines (signed meter readings, applied
as docs/design.md says: up to Bmax, the rest exported or imported at grid prices;
docs/replay.md).
:func:`replay` applies them to the engine in one of two modes and returns a
:class:`ReplayResult`: the fills, the per-interval statistics, the final balances and every
refused line with its line number and reason. The ``write_*`` functions turn a result into
files. Nothing here prints; the command line lives in ``wattmesh.exchange.cli.app``.

- ``cda``: a continuous double auction, events applied in order, one ``Book`` per market,
  all in one ``Markets`` over one ``Accounts`` (a fill in one market re-crosses the
  others within the same event).
- ``call``: a call auction per delivery interval and market. The gate of interval ``t`` is
  ``t``; an order or cancel at or after its gate is late. Before an event with ``ts`` is
  applied, every pending interval whose gate is ``<= ts`` clears, in ascending order; the
  rest clear at the end of the log.

The engine speaks integers, so owners map to ``uint32`` handles (in order of first
appearance) and order ids to ``uint64`` keys (:func:`order_key`).

Speed: ``wattmesh.exchange.replay._logscan.Scanner`` (Cython) applies order and cancel lines in
their usual canonical shape straight from the bytes, keeping the id, owner and market
tables, call mode's pending auctions and cda mode's ``Book.run`` batches in C. Anything
unusual (an account line, a new owner or market, escapes or whitespace, a non-hex id, a
line that will be refused, ``verify_signatures``) comes back to the Python path here,
which validates through ``settlement.records`` itself and writes the refusal reasons; it
is the reference the scanner is tested against (tests/exchange/replay/test_logscan.py).
The log is read in chunks; while one is applied, the scanner's reader thread reads the next
(a file given by path: its bytes too) and finds, parses and keys its lines (``consume``).
"""

from __future__ import annotations

import io
import os
import stat
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate, groupby
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import orjson

from wattmesh.exchange.clock import DEFAULT_INTERVAL_MS, check_interval, is_late
from wattmesh.exchange.engine_keys import order_key
from wattmesh.exchange.replay._logscan import (
    CLEAR,
    DONE,
    FLUSH,
    Scanner,
    cda_buckets,
    map_large_blocks,
    new_buffer,
    volume_turnover,
)
from wattmesh.exchange.replay.rejects import (
    ACCOUNT_REFUSED,
    BAD_JSON,
    BAD_LINE_CODES,
    BAD_RECORD,
    BAD_SIGNATURE,
    DUPLICATE_ID,
    ID_COLLISION,
    LATE,
    LATE_CANCEL,
    METER_REFUSED,
    NO_INTERVAL,
    NOT_LIVE,
    NOT_LIVE_ID,
    NOT_OWNER,
    READING_REFUSED,
    UNSUPPORTED_TIF,
    Reject,
    Rejects,
    late_cancel_reason,
    line_text,
    not_live_reason,
)
from wattmesh.matching import (
    ASK,
    BID,
    FOK,
    GTC,
    IOC,
    MAX_QTY,
    Accounts,
    CallAuction,
    Markets,
)
from wattmesh.meters.validate import ReadingRefused, ReadingValidator
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.gc_pause import cyclic_gc_paused
from wattmesh.settlement.readings import (
    DEFAULT_FEEDIN_PRICE,
    DEFAULT_RETAIL_PRICE,
    apply_reading,
)
from wattmesh.settlement.records import (
    Account,
    Cancel,
    MarketSpec,
    Meter,
    Order,
    Reading,
    RecordError,
    parse_record,
    verify_signature,
)

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "BAD_LINE_CODES",
    "DEFAULT_INTERVAL_MS",
    "MODES",
    "ROWS_PER_BLOCK",
    "STP_RULES",
    "BadLineError",
    "BookLevels",
    "IntervalStats",
    "Reject",
    "ReplayOptions",
    "ReplayResult",
    "bundled_sample",
    "order_key",
    "replay",
]

MODES = ("cda", "call")
STP_RULES = ("none", "cancel-resting", "cancel-incoming")
# Bytes read at a time (the buffer is twice this): 1 MiB reads as fast as 8 MiB did, and
# the buffer is 14 MiB less of a replay's peak, small logs' too.
CHUNK_BYTES = 1 << 20
# A chunk at least this long has its lines read on a second thread (Scanner.parse) while
# the chunk before is applied; a smaller one (a small log, or its last chunk) is read in
# this thread, since starting a thread costs more than the lines of a few kB.
PARSE_THREAD_BYTES = 64 << 10
# Fills made into text (ids, output lines) at a time: bounds what a writer holds at once.
ROWS_PER_BLOCK = 65_536
SAMPLE_RESOURCE = "data/sample_day.jsonl"


# The codes of the refusals the scanner writes into the rejects (rejects.py's table)
_LATE_CODE = Rejects.code_index(LATE)
_NOT_LIVE_CODE = Rejects.code_index(NOT_LIVE)
_SIDE_CODES = {"bid": BID, "ask": ASK}
_TIF_CODES = {"gtc": GTC, "ioc": IOC, "fok": FOK}
_MARKET = MarketSpec()  # records.from_dict applies these default bounds to every market
_MIN_PRICE = _MARKET.min_price
_MAX_PRICE = _MARKET.max_price
_BALANCE_LIMIT = 2**62  # Accounts.set refuses balances at or above this
_NEVER = 2**63  # "no pending interval": above every valid ts
# False sends every line down the Python path (the reference; tests compare the two).
_FAST_SCAN = True


class BadLineError(WattmeshError, ValueError):
    """Raised under ``strict`` for the first bad line (bad JSON, record or signature)."""

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        super().__init__(f"line {reject.line}: {reject.code}: {reject.reason}")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay: mechanism, interval length, self-trade rule, strictness, signatures,
    and the grid's prices for meter readings (micro-currency per kWh)."""

    mode: str = "call"
    interval_ms: int = DEFAULT_INTERVAL_MS
    stp: str = "none"
    strict: bool = False
    verify_signatures: bool = False
    retail_price: int = DEFAULT_RETAIL_PRICE
    feedin_price: int = DEFAULT_FEEDIN_PRICE
    book: bool = False  # call mode: keep each auction's depth (ReplayResult.book)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}; got {self.mode!r}")
        if type(self.interval_ms) is not int or self.interval_ms <= 0:
            raise ValueError(f"interval_ms: must be a positive integer, got {self.interval_ms!r}")
        if self.stp not in STP_RULES:
            raise ValueError(f"stp: must be one of {', '.join(STP_RULES)}; got {self.stp!r}")
        for name in ("retail_price", "feedin_price"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= _MAX_PRICE:
                raise ValueError(f"{name}: must be an integer in 0..{_MAX_PRICE}, got {v!r}")


@dataclass(slots=True)
class IntervalStats:
    """One row of intervals.csv.

    call: one cleared auction (``price`` is the clearing price, None if nothing matched).
    cda: the fills whose causing event falls in the interval (``price`` is their VWAP,
    floored; ``orders`` and ``executable_orders`` are None, the book has no such count).
    """

    interval: int
    market: str
    price: int | None
    volume: int
    fills: int
    orders: int | None
    executable_orders: int | None


class OrderIds:
    """A column of order ids, kept as 8-byte references and made into str only when read.

    A replay's fills reference the ids in its scanner's id arena (``Scanner.id_refs``),
    so a million fills hold no str objects until an output is written, a block at a time
    (``ids[start:end]``). Without a scanner (``append``), the column keeps its own list.
    """

    __slots__ = ("refs", "_texts", "_utf8", "_own")

    def __init__(
        self,
        texts: Callable[[array], list[str]] | None = None,
        utf8: Callable[[array], tuple[array, bytearray]] | None = None,
    ) -> None:
        self.refs = array("Q")
        self._texts = texts  # references -> str; None: references index self._own
        self._utf8 = utf8  # references -> (int64 offsets, UTF-8 bytes): Arrow's buffers
        self._own: list[str] = []

    def append(self, oid: str) -> None:
        """Add one id (a column without a scanner)."""
        if self._texts is not None:
            raise TypeError("this column takes the scanner's references (extend)")
        self.refs.append(len(self._own))
        self._own.append(oid)

    def extend(self, refs: array) -> None:
        """Add the scanner's references of some fills' ids."""
        self.refs += refs

    def _decode(self, refs: array) -> list[str]:
        if self._texts is not None:
            return self._texts(refs)
        own = self._own
        return [own[r] for r in refs]

    def utf8(self, start: int, end: int) -> tuple[array, bytes | bytearray]:
        """Rows ``start:end`` (a block) as an Arrow string column's buffers: int32 offsets
        and the UTF-8 bytes joined, made in C from the scanner's arena when there is one."""
        refs = self.refs[start:end]
        if self._utf8 is not None:
            return self._utf8(refs)
        encoded = [t.encode("utf-8", "surrogatepass") for t in self._decode(refs)]
        return array("i", accumulate(map(len, encoded), initial=0)), b"".join(encoded)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return self._decode(self.refs[i])
        return self._decode(array("Q", [self.refs[i]]))[0]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self.refs), ROWS_PER_BLOCK):
            yield from self._decode(self.refs[start : start + ROWS_PER_BLOCK])


class Runs:
    """A column whose values come in runs, kept as each run's first row and value: the
    fills' interval and market (a call auction's fills share both; cda's have no interval
    and mostly one market), so a million fills hold a few runs instead of 16 MB of
    references. Reads like a list (``len``, index, slice, iteration)."""

    __slots__ = ("starts", "values", "_n")

    def __init__(self) -> None:
        self.starts = array("q")  # the first row of each run, ascending
        self.values: list[Any] = []
        self._n = 0

    def extend(self, value: Any, count: int) -> None:
        """Add ``count`` rows of ``value``."""
        if count <= 0:
            return
        values = self.values
        if not values or values[-1] != value or type(values[-1]) is not type(value):
            self.starts.append(self._n)
            values.append(value)
        self._n += count

    def append(self, value: Any) -> None:
        """Add one row."""
        self.extend(value, 1)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step != 1:
                return list(self)[i]
            out: list[Any] = []
            run = bisect_right(self.starts, start) - 1
            starts, values = self.starts, self.values
            while start < stop:
                end = min(stop, starts[run + 1] if run + 1 < len(starts) else self._n)
                out += [values[run]] * (end - start)
                start = end
                run += 1
            return out
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("Runs index out of range")
        return self.values[bisect_right(self.starts, i) - 1]

    def __iter__(self) -> Iterator[Any]:
        bounds = [*self.starts, self._n]
        for k, value in enumerate(self.values):
            for _ in range(bounds[k + 1] - bounds[k]):
                yield value


@dataclass(slots=True)
class BookLevels:
    """Call mode, with ``ReplayOptions.book``: each cleared auction's book per price level
    (``CallAuction.last_depth``): what the orders at a price asked for (``qty``) and what
    the Energo caps let them commit (``executable``), bids best first, then asks."""

    interval: array = field(default_factory=lambda: array("q"))
    market: list[str] = field(default_factory=list)
    side: array = field(default_factory=lambda: array("B"))  # BID 0, ASK 1
    price: array = field(default_factory=lambda: array("q"))
    qty: array = field(default_factory=lambda: array("q"))
    executable: array = field(default_factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.price)


@dataclass(slots=True)
class Trades:
    """The fills in engine order, as columns (``seq`` is the row number + 1): numbers in
    arrays (8 bytes a value), ids as :class:`OrderIds` references, the interval and
    market as :class:`Runs`, so a fill costs about 56 bytes."""

    interval: Runs = field(default_factory=Runs)  # int, or None (cda)
    ts: array = field(default_factory=lambda: array("q"))
    market: Runs = field(default_factory=Runs)
    buyer: array = field(default_factory=lambda: array("I"))  # owner handles
    seller: array = field(default_factory=lambda: array("I"))
    bid: OrderIds = field(default_factory=OrderIds)  # order ids
    ask: OrderIds = field(default_factory=OrderIds)
    qty: array = field(default_factory=lambda: array("q"))
    price: array = field(default_factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.qty)


class ReadingEvent(NamedTuple):
    """An applied reading and where it happened: after ``fills_before`` fills and (call
    mode) ``clears_before`` cleared auctions, at the log's clock ``ts``."""

    fills_before: int
    clears_before: int
    ts: int
    reading: Reading
    owner: int  # handle
    exported_wh: int
    imported_wh: int
    billed: int  # import charge the money could not pay (nano)


@dataclass(slots=True)
class ReplayResult:
    """Everything a replay produced; the ``write_*`` functions turn it into files."""

    options: ReplayOptions
    events: int  # non-blank lines
    accepted: dict[str, int]  # "accounts", "orders", "cancels"
    rejects: Rejects  # in line order; rows are made when read
    trades: Trades
    intervals: list[IntervalStats]
    owners: list[str]  # handle -> owner
    opening: dict[int, tuple[int, int, int | None]]  # handle -> (energy, money, bmax)
    closing: dict[int, tuple[int, int, int | None]]
    first_ts: int | None
    last_ts: int | None
    meters: list[Meter] = field(default_factory=list)
    readings: list[ReadingEvent] = field(default_factory=list)
    # Lines the C scanner handed to the Python path, by why (docs/replay.md, "Performance")
    python_path: dict[str, int] = field(default_factory=dict)
    book: BookLevels | None = None  # call mode with ReplayOptions.book

    @property
    def volume(self) -> int:
        """Energy traded, Wh."""
        return sum(self.trades.qty)

    @property
    def turnover(self) -> int:
        """Money that changed hands, nano-currency."""
        return sum(map(int.__mul__, self.trades.qty, self.trades.price))

    @property
    def vwap(self) -> int | None:
        """Volume-weighted average fill price (floored), or None without fills."""
        volume = self.volume
        return self.turnover // volume if volume else None

    def refused(self) -> dict[str, int]:
        """Refused lines per code, codes sorted."""
        return self.rejects.counts()

    def trade_rows(self) -> Iterator[dict[str, Any]]:
        """The fills as dicts with the fields of ``--trades`` (and records.Trade)."""
        t = self.trades
        owners = self.owners
        mode = self.options.mode
        for start in range(0, len(t), ROWS_PER_BLOCK):
            end = min(start + ROWS_PER_BLOCK, len(t))
            bids, asks = t.bid[start:end], t.ask[start:end]
            intervals = t.interval[start:end]
            for i in range(start, end):
                yield {
                    "seq": i + 1,
                    "mode": mode,
                    "interval": intervals[i - start],
                    "ts": t.ts[i],
                    "buyer": owners[t.buyer[i]],
                    "seller": owners[t.seller[i]],
                    "bid": bids[i - start],
                    "ask": asks[i - start],
                    "qty": t.qty[i],
                    "price": t.price[i],
                }

    def summary(self) -> dict[str, Any]:
        """The content of summary.json: counts, volume, prices and refusals."""
        refused = self.refused()
        volume, turnover = volume_turnover(self.trades.qty, self.trades.price)  # in C
        return {
            "mode": self.options.mode,
            "interval_ms": self.options.interval_ms,
            "stp": self.options.stp,
            "verify_signatures": self.options.verify_signatures,
            "events": self.events,
            "accepted": dict(self.accepted),
            "refused": sum(refused.values()),
            "refused_by_code": refused,
            "fills": len(self.trades),
            "volume_wh": volume,
            "turnover_nano": turnover,
            "vwap": turnover // volume if volume else None,  # = self.vwap
            "intervals": len(self.intervals),
            "owners": len(self.owners),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "readings": len(self.readings),
            "exported_wh": sum(r.exported_wh for r in self.readings),
            "imported_wh": sum(r.imported_wh for r in self.readings),
            "python_path_lines": sum(self.python_path.values()),
            "python_path_by_reason": dict(sorted(self.python_path.items())),
        }


def bundled_sample() -> Traversable:
    """The sample day shipped with the package (docs/replay.md, "The sample")."""
    from importlib import resources  # 2-3 ms of start-up a replay of a file does not need

    return resources.files("wattmesh.exchange.replay").joinpath(SAMPLE_RESOURCE)


def replay(
    log: str | os.PathLike[str] | IO[bytes] | None = None,
    options: ReplayOptions | None = None,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay an order log (a path, a binary file, or None for the bundled sample).

    ``on_progress(n)`` is called with the number of bytes consumed so far, once per chunk.
    Raises :class:`BadLineError` under ``options.strict`` at the first bad line.
    """
    options = options or ReplayOptions()
    map_large_blocks()  # tables and fill columns grow in place, not copied (_logscan)
    run = _Replay(options)
    # A replay keeps millions of small objects alive and makes no reference cycles.
    with cyclic_gc_paused():
        if log is None:
            with bundled_sample().open("rb") as fp:
                run.consume(fp, on_progress)
        elif isinstance(log, (str, os.PathLike)):
            with open(log, "rb", buffering=0) as fp:  # FileIO: read by its descriptor
                run.consume(fp, on_progress)
        else:
            run.consume(log, on_progress)
        return run.finish()


def _chunks(fp: IO[bytes], chunk_bytes: int) -> Iterator[tuple[bytearray, int, int, int]]:
    """Yield (buffer, start, end, bytes read so far): ``buffer[start:end]`` holds complete
    lines (each ending in ``\n``, except a last line without one at the end of the file).

    Two buffers take turns (``readinto``), the unfinished line at the end of one copied to
    the start of the other, so a big log costs no fresh memory per chunk, and a chunk's
    buffer is not written while the next chunk is read and parsed: the caller must be done
    with a buffer only before asking for the chunk after next.
    """
    bufs = [new_buffer(2 * chunk_bytes), new_buffer(2 * chunk_bytes)]  # not zeroed: cheap
    turn = 0
    tail = b""  # an unfinished line, from the other buffer
    done = 0
    readinto = getattr(fp, "readinto", None)
    first = True
    while True:
        buf = bufs[turn]
        have = len(tail)
        if have + chunk_bytes > len(buf):  # a line longer than the buffer: grow it
            buf.extend(bytes(have + chunk_bytes - len(buf)))
        with memoryview(buf) as view:
            view[:have] = tail
            if readinto is not None:
                n = readinto(view[have : have + chunk_bytes])
            else:  # a file object with read() only
                data = fp.read(chunk_bytes)
                n = len(data) if data else 0
                view[have : have + n] = data or b""
        if not n:
            break
        done += n
        start = 0
        if first:
            if buf.startswith(b"\xef\xbb\xbf") and n >= 3:  # a UTF-8 BOM some editors add
                start = 3
            first = False
        end = have + n
        cut = max(buf.rfind(b"\n", start, end) + 1, start)
        yield buf, start, cut, done
        tail = bytes(buf[cut:end])
        turn ^= 1
    if tail:  # not into the other buffer: it may be the last chunk's, not applied yet
        yield bytearray(tail), 0, len(tail), done


def _parsed_ahead(
    chunks: Iterator[tuple[bytearray, int, int, int]], scan: Scanner
) -> Iterator[tuple[bytearray, int, int, int]]:
    """``chunks`` (of :func:`_chunks`), each handed to ``scan.parse`` as it is read and
    yielded one chunk later: its lines are read on the reader thread while the chunk
    before it is applied."""
    pending = None
    for chunk in chunks:
        buf, start, end, _done = chunk
        scan.parse(buf, start, end, end - start >= PARSE_THREAD_BYTES)
        if pending is not None:
            yield pending
        pending = chunk
    if pending is not None:
        yield pending


def _file_chunks(
    fd: int, chunk_bytes: int, scan: Scanner
) -> Iterator[tuple[bytearray, int, int, int]]:
    """:func:`_chunks` of a regular file, read by its descriptor on the scanner's reader
    thread (``Scanner.read_ahead``): each chunk is read, and its lines read ahead, while
    the one before is applied, so this thread neither reads nor parses. The first chunk
    (it is waited for at once) and those after a chunk under PARSE_THREAD_BYTES are read
    in this thread. A chunk's buffer is written again once the caller asks for the chunk
    after it.
    """
    bufs = [new_buffer(2 * chunk_bytes), new_buffer(2 * chunk_bytes)]
    turn = 0
    tail = b""
    done = 0
    scan.read_ahead(bufs[0], 0, fd, chunk_bytes, True, False)
    while True:
        n, start, cut, end = scan.read_done()
        if not n:
            break
        done += n
        buf = bufs[turn]
        tail = bytes(buf[cut:end])
        turn ^= 1
        after = bufs[turn]  # the chunk before this one's: applied
        if len(tail) + chunk_bytes > len(after):  # a line longer than the buffer: grow it
            after.extend(bytes(len(tail) + chunk_bytes - len(after)))
        after[: len(tail)] = tail
        thread = cut - start >= PARSE_THREAD_BYTES
        scan.read_ahead(after, len(tail), fd, chunk_bytes, False, thread)
        yield buf, start, cut, done
    if tail:
        yield bytearray(tail), 0, len(tail), done


def _file_size(fp: IO[bytes]) -> int | None:
    """The size of the regular file ``fp`` reads, or None (a pipe, a stream, no file)."""
    try:
        st = os.fstat(fp.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


# At most this many orders are reserved from an estimate: the slots for them are 2**22
# of 8 bytes, 32 MiB, all written when reserved. A log estimated at more grows its table
# as it fills, as it would without an estimate.
MAX_RESERVED_ORDERS = (1 << 21) - 1


def _expected_orders(size: int, buf: bytes | bytearray, start: int, end: int) -> int:
    """About how many orders a log of ``size`` bytes holds, from its first chunk
    (``buf[start:end]``): its size times the chunk's order lines (those that say
    ``"order"``) per byte. The order table is sized once for them (Scanner.reserve). On
    the 1M-event benchmark log that is 843k of 965k orders, the table its growth ends at;
    counting every line instead sized a log of readings or cancels for orders it never
    holds."""
    if end <= start:
        return 0
    orders = buf.count(b'"order"', start, end)
    return min(size * orders // (end - start), MAX_RESERVED_ORDERS)


class _Replay:
    """The state of one replay: engine objects, the scanner's tables, collected results.

    The id, owner and market tables, the clock, the line count, call mode's pending
    auctions and cda mode's batch live in the C scanner (``_logscan.Scanner``), which
    applies ordinary order and cancel lines itself and hands every other line to
    :meth:`_slow_line`, the reference path, which works on the same tables.
    """

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        self.call = options.mode == "call"
        self.interval_ms = options.interval_ms
        self.verify = options.verify_signatures
        self.strict = options.strict
        fast = _FAST_SCAN and not options.verify_signatures  # signatures need Python
        self.scan = Scanner(self.call, options.interval_ms, fast, _MIN_PRICE, _MAX_PRICE)
        self.accounts = Accounts()
        self.owners: list[str] = []  # handle -> owner
        self.account_lines: dict[int, int] = {}  # handle -> line of its account line
        self.opening: dict[int, tuple[int, int, int | None]] = {}
        self.retired: set[str] = set()  # ids whose key another order took over
        # Markets by scanner index: name, and the venue (cda: a Book; call: the name).
        self.market_index: dict[str, int] = {}
        self.market_names: list[str] = []
        self.venues: list[Any] = []
        self.auctioneer = CallAuction(self.accounts, options.stp)
        self.markets = None if self.call else Markets(self.accounts, options.stp)
        self.clock = -1  # the largest ts of any valid order or cancel so far
        self.first_ts: int | None = None
        # cda: (ts, number of fills) per slow-path event that filled, in order.
        self.fill_events: list[tuple[int, int]] = []
        texts, utf8 = self.scan.id_texts, self.scan.id_utf8
        self.trades = Trades(bid=OrderIds(texts, utf8), ask=OrderIds(texts, utf8))
        self.intervals: list[IntervalStats] = []
        self.book = BookLevels() if options.book and self.call else None
        self.rejects = Rejects(self.scan.id_texts)
        self.accepted = {"accounts": 0, "orders": 0, "cancels": 0, "meters": 0, "readings": 0}
        self.validator = ReadingValidator()
        self.meters: list[Meter] = []
        self.readings: list[ReadingEvent] = []
        self.lineno = 0
        self.blank = 0
        self.python_path: dict[str, int] = {}

    # -- reading ------------------------------------------------------------------------
    def consume(self, fp: IO[bytes], on_progress: Callable[[int], None] | None) -> None:
        """Apply the log's lines chunk by chunk. Each chunk's lines are read (found,
        parsed, keyed) by the scanner on a second thread while the chunk before is applied
        here (``Scanner.read_ahead`` for a regular file, bytes too; ``Scanner.parse`` for
        a stream; a chunk under PARSE_THREAD_BYTES is read in this thread)."""
        size = _file_size(fp)
        scan = self.scan
        if size is not None and isinstance(fp, io.FileIO):  # unbuffered: read by its fd
            chunks = _file_chunks(fp.fileno(), CHUNK_BYTES, scan)
        else:
            chunks = _parsed_ahead(_chunks(fp, CHUNK_BYTES), scan)
        try:
            for buf, start, end, done in chunks:
                if size is not None:  # the first chunk: size the order table once
                    scan.reserve(_expected_orders(size, buf, start, end))
                    size = None
                self.feed(buf, start, end)
                if on_progress is not None:
                    on_progress(done)
        finally:
            scan.stop()  # no worker outlives the log's reading, an exception's either

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """Apply the lines of ``buf[start:end]``: the scanner applies what it can, this loop
        does what it asks for (clear intervals, run the cda batch, a line for Python)."""
        scan = self.scan
        pos = start
        while True:
            status = scan.scan(buf, pos, end)
            pos = scan.pos
            if scan.late_count:  # call: late cancels read and refused in C, before pos
                scan.take_late(self.rejects, buf, _LATE_CODE, LATE_CANCEL)
            if status == DONE:
                break
            if status == CLEAR:
                self._clear_until(scan.gate_ts)
                continue
            self._run_batch(buf)
            if status == FLUSH:
                continue
            # SLOW: the line scan.line_start:line_end, number scan.lineno.
            self.lineno = scan.lineno
            self.clock = scan.clock
            before = self._python_path_state()
            self._slow_line(bytes(buf[scan.line_start : scan.line_end]))
            self._count_python_path(before)
            scan.clock = self.clock
            if self.fill_events:
                self._collect_fills()
            if self.first_ts is not None:
                scan.have_first_ts = True
        self._run_batch(buf)

    def _run_batch(self, buf: bytes | bytearray) -> None:
        """cda: run the scanner's batch of events through its book and collect the fills
        (the scanner adds the refused cancels to the rejects)."""
        scan = self.scan
        if not scan.batch_size:
            return
        m = scan.batch_market
        res, fill_ts, bid_refs, ask_refs = scan.run_batch(
            self.venues[m], self.rejects, buf, _NOT_LIVE_CODE, NOT_LIVE_ID
        )
        n = len(res.qty)
        if n:
            t = self.trades
            names = self.market_names
            t.interval.extend(None, n)
            t.ts += fill_ts
            _add_market_names(t.market, names, res.market)  # other markets' fills too
            t.bid.extend(bid_refs)
            t.ask.extend(ask_refs)
            t.price += res.price
            t.qty += res.qty
            t.buyer += res.buyer
            t.seller += res.seller

    # -- the slow path ------------------------------------------------------------------
    def _python_path_state(self) -> tuple[int, int, int, int, bool]:
        a = self.accepted
        return (len(self.rejects), a["accounts"] + a["meters"] + a["readings"],
                len(self.owners), len(self.market_names), self.first_ts is None)  # fmt: skip

    def _count_python_path(self, before: tuple[int, int, int, int, bool]) -> None:
        """Why the scanner handed the line just applied to Python: a refusal (refusals
        are written here), a kind of line it never takes, the log's first order or
        cancel, an owner's or market's first line (the tables learn them here),
        signatures to check, or a shape it cannot read (whitespace, escapes, a missing
        id, a float...)."""
        after = self._python_path_state()
        if after[0] != before[0]:
            why = "refused"
        elif after[1] != before[1]:
            why = "account, meter or reading line"
        elif after[4] != before[4]:
            why = "the log's first order or cancel"
        elif after[2:4] != before[2:4]:
            why = "first line of an owner or market"
        elif self.verify:
            why = "signature checked"
        else:
            why = "a shape the scanner does not read"
        self.python_path[why] = self.python_path.get(why, 0) + 1

    def _slow_line(self, raw: bytes) -> None:
        """One line the scanner did not apply: parse, validate and apply it here."""
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._bad_json(raw, exc)
            return
        event = self._slow(d, raw)
        if event is not None:
            self._apply_order(raw, *event)

    def _apply_order(
        self,
        raw: bytes,
        side_c: int,
        price: int,
        qty: int,
        h: int,
        ts: int,
        interval: int | None,
        tif_c: int,
        oid: str,
        key: int,
        m: int,
    ) -> None:
        if ts > self.clock:
            self.clock = ts
            if self.call and ts >= self.scan.next_gate:
                self._clear_until(ts)
        # The gate rule of exchange/clock.py (check_interval, is_late): the interval is
        # closed once the log's clock has reached its gate.
        if self.call and (
            interval is None
            or interval % self.interval_ms
            or tif_c == FOK
            or interval <= self.clock
        ):
            self._refuse_call_order(raw, ts, interval, tif_c, self.clock)
            return
        holder = self.scan.entry(key)
        if holder is not None:  # the same id again, or another id with the same key
            if not self._may_take_key(key, oid, holder, raw):
                return
        self.scan.put_order(key, oid, h, m, interval, side_c, price, qty, ts)
        if not self.call:
            filled = self.venues[m].submit(key, side_c, price, qty, h, tif_c)
            if filled:
                self.fill_events.append((ts, filled))
        self.accepted["orders"] += 1

    def _slow(self, d: Any, raw: bytes) -> tuple | None:
        """Validate a line through settlement.records and apply cancels and account lines.

        Returns an order as the arguments of :meth:`_apply_order`, or None when the line
        was refused or fully applied here.
        """
        try:
            record = parse_record(d)
        except RecordError as exc:
            self._reject(BAD_RECORD, str(exc), raw)
            return None
        kind = type(record)
        if kind is Account:
            self._apply_account(record, raw)  # type: ignore[arg-type]
            return None
        if kind is Meter:
            self._apply_meter(record, raw)  # type: ignore[arg-type]
            return None
        if kind is Reading:
            self._apply_reading(record, raw)  # type: ignore[arg-type]
            return None
        if self.verify and not self._authentic(record, raw):  # type: ignore[arg-type]
            return None
        if self.first_ts is None:
            self.first_ts = record.ts  # type: ignore[union-attr]
        if kind is Cancel:
            self._apply_cancel(record, raw)  # type: ignore[arg-type]
            return None
        order: Order = record  # type: ignore[assignment]
        if order.qty > MAX_QTY:
            self._reject(
                BAD_RECORD, f"qty: {order.qty} is above the engine's largest {MAX_QTY}", raw
            )
            return None
        h = self._handle(order.owner)
        m = self.market_index.get(order.market)
        if m is None:
            m = self.market_index[order.market] = self.scan.add_market(order.market)
            self.market_names.append(order.market)
            self.venues.append(order.market if self.call else self.markets.add(order.market))
        return (
            _SIDE_CODES[order.side],
            order.price,
            order.qty,
            h,
            order.ts,
            order.interval,
            _TIF_CODES[order.tif],
            order.id,
            order_key(order.id),
            m,
        )

    def _authentic(self, record: Order | Cancel, raw: bytes) -> bool:
        """--verify-signatures: the id must name the body and the owner must have signed it."""
        if type(record) is Order and record.id != record.computed_id():
            self._reject(
                BAD_SIGNATURE,
                f"id: does not match the order's content, {record.computed_id()}",
                raw,
            )
            return False
        if record.sig is None:
            self._reject(BAD_SIGNATURE, "sig: missing (required by --verify-signatures)", raw)
            return False
        if not verify_signature(record):
            self._reject(BAD_SIGNATURE, f"sig: not a valid signature by {record.owner}", raw)
            return False
        return True

    def _handle(self, owner: str) -> int:
        h = self.scan.owner_handle(owner)
        if h is None:
            h = self.scan.add_owner(owner)
            self.owners.append(owner)
        return h

    def _apply_account(self, account: Account, raw: bytes) -> None:
        h = self.scan.owner_handle(account.owner)
        if h is not None and h in self.account_lines:
            self._reject(
                ACCOUNT_REFUSED,
                f"owner {account.owner} already has an account (line {self.account_lines[h]})",
                raw,
            )
            return
        if h is not None:
            # The owner has appeared in an order line. Opening balances must come before
            # that: changing them mid-stream would make the result depend on fill timing.
            self._reject(
                ACCOUNT_REFUSED,
                f"owner {account.owner} already has orders; an account line must come first",
                raw,
            )
            return
        for name in ("energy", "money", "bmax"):
            value = getattr(account, name)
            if value is not None and value >= _BALANCE_LIMIT:
                self._reject(BAD_RECORD, f"{name}: {value} is not below 2**62", raw)
                return
        h = self._handle(account.owner)
        self.accounts.set(h, account.energy, account.money, account.bmax)
        self.account_lines[h] = self.lineno
        self.opening[h] = (account.energy, account.money, account.bmax)
        self.accepted["accounts"] += 1
        if not self.call:
            # The owner has no orders, so no book can change; uncross anyway, as after
            # every balance change made outside an event.
            self._uncross_markets()

    def _apply_meter(self, meter: Meter, raw: bytes) -> None:
        h = self.scan.owner_handle(meter.owner)
        if h is None or h not in self.account_lines:
            self._reject(
                METER_REFUSED,
                f"owner {meter.owner} has no account line; a meter's household needs one first",
                raw,
            )
            return
        if meter.meter in self.validator.meters:
            self._reject(METER_REFUSED, f"meter {meter.meter} is already registered", raw)
            return
        self.validator.register(meter)
        self.meters.append(meter)
        self.accepted["meters"] += 1

    def _apply_reading(self, reading: Reading, raw: bytes) -> None:
        """Apply a reading to its household's balances (settlement.readings), as the ledger
        will: the grid takes what is above Bmax and gives what the balance lacks."""
        try:
            self.validator.check(reading, now_ms=None)  # a replay has no wall clock
        except ReadingRefused as exc:
            self._reject(READING_REFUSED, str(exc), raw)
            return
        h = self.scan.owner_handle(self.validator.meters[reading.meter].owner)
        energy, money, bmax = self.accounts.get(h)  # type: ignore[misc]
        o = self.options
        eff = apply_reading(energy, bmax, reading.produced, reading.consumed,
                            o.retail_price, o.feedin_price)  # fmt: skip
        paid = min(eff.import_charge, money)
        money += eff.export_credit - paid
        if eff.balance >= _BALANCE_LIMIT or money >= _BALANCE_LIMIT:
            self._reject(READING_REFUSED, "a balance would reach 2**62", raw)
            return
        self.accounts.set(h, eff.balance, money, bmax)
        self.readings.append(
            ReadingEvent(len(self.trades), len(self.intervals), max(self.clock, 0), reading, h,
                         eff.exported_wh, eff.imported_wh, eff.import_charge - paid)
        )  # fmt: skip
        self.accepted["readings"] += 1
        if not self.call:
            # The new balance may make resting orders executable: re-cross now.
            self._uncross_markets()

    def _apply_cancel(self, cancel: Cancel, raw: bytes) -> None:
        ts = cancel.ts
        if ts > self.clock:
            self.clock = ts
            if self.call and ts >= self.scan.next_gate:
                self._clear_until(ts)
        key = order_key(cancel.id)
        entry = self.scan.entry(key)
        if entry is None or entry[0] != cancel.id:
            known = cancel.id in self.retired
            self._reject(NOT_LIVE, not_live_reason(cancel.id, known), raw)
            return
        _oid, h, m, interval = entry
        if self.owners[h] != cancel.owner:
            self._reject(NOT_OWNER, f"order {cancel.id} belongs to {self.owners[h]}", raw)
            return
        if self.call:
            assert interval is not None  # call mode accepts no order without one
            late = late_cancel_reason(ts, interval, self.clock)
            if late is not None:
                self._reject(LATE, late, raw)
                return
            live = self.scan.call_cancel(key)  # pending, not cancelled: now cancelled
        else:
            # Every book is uncrossed at rest, so an accepted cancel fills nothing and a
            # refused one changes nothing (docs/replay.md).
            live = self.venues[m].cancel(key)
        if not live:
            self._reject(NOT_LIVE, not_live_reason(cancel.id), raw)
            return
        self.accepted["cancels"] += 1

    def _refuse_call_order(
        self, raw: bytes, ts: int, interval: int | None, tif: int, clock: int
    ) -> None:
        if interval is None:
            self._reject(NO_INTERVAL, "interval: a call auction needs the delivery interval", raw)
            return
        try:
            check_interval(interval, self.interval_ms)
        except ValueError as exc:
            self._reject(NO_INTERVAL, str(exc), raw)
            return
        if tif == FOK:
            self._reject(UNSUPPORTED_TIF, "tif: fok has no meaning in a call auction", raw)
        elif is_late(ts, interval):
            self._reject(LATE, f"ts {ts} is at or after the gate of interval {interval}", raw)
        else:
            self._reject(
                LATE, f"interval {interval} already cleared (the log had reached ts {clock})", raw
            )

    def _may_take_key(self, key: int, oid: str, entry: tuple, raw: bytes) -> bool:
        """``key`` is held already (``entry``): refuse a reused id, or another id while the
        holder is live; otherwise the new order takes the key over."""
        holder, _h, m, _interval = entry
        if oid == holder or oid in self.retired:
            self._reject(DUPLICATE_ID, f"order id {oid} was already used", raw)
            return False
        if self.call and self.scan.call_pending(key):
            # Even a cancelled holder keeps its key until its interval clears.
            self._reject(
                ID_COLLISION,
                f"id {oid} has the same engine key as order {holder}, whose interval has"
                " not cleared yet",
                raw,
            )
            return False
        if not self.call and key in self.venues[m]:
            self._reject(
                ID_COLLISION, f"id {oid} has the same engine key as live order {holder}", raw
            )
            return False
        # Fills not yet collected may name the old holder of the key: collect them first.
        self._collect_fills()
        self.retired.add(holder)
        return True

    # -- results ------------------------------------------------------------------------
    def _uncross_markets(self) -> None:
        """cda, after a balance change outside any event (an account line, a reading):
        every book re-crosses by market name until none changes; the fills are stamped
        with the log's clock."""
        assert self.markets is not None
        filled = self.markets.uncross()
        if filled:
            self.fill_events.append((max(self.clock, 0), filled))
        self._collect_fills()

    def _collect_fills(self) -> None:
        """Move the fills waiting in the Markets into self.trades, in event order, each
        with the ts of the event that caused it."""
        events = self.fill_events
        if not events:
            return
        assert self.markets is not None
        _ev, bid, ask, price, qty, buyer, seller, _aggr, market = self.markets.take_fill_arrays()
        if len(qty) != sum(n for _ts, n in events):
            raise RuntimeError("the books reported a different number of fills")
        t = self.trades
        for ts, n in events:
            t.ts += array("q", [ts]) * n
        names = self.market_names
        t.interval.extend(None, len(qty))
        _add_market_names(t.market, names, market)
        t.bid.extend(self.scan.id_refs(bid))
        t.ask.extend(self.scan.id_refs(ask))
        t.price += price
        t.qty += qty
        t.buyer += buyer
        t.seller += seller
        events.clear()

    def _clear_until(self, ts: int) -> None:
        """Clear every pending interval whose gate is <= ts, in ascending order."""
        scan = self.scan
        names = self.market_names
        while scan.next_gate <= ts:
            interval = scan.next_gate
            taken = scan.take_interval(interval)
            for m, columns in sorted(taken, key=lambda mc: names[mc[0]]):
                self._clear(interval, names[m], columns)

    def _clear(self, interval: int, market: str, columns: tuple[array, ...]) -> None:
        """Clear one auction: columns (sides, prices, qtys, keys, owners, ts) of its live
        orders, in arrival order."""
        result = self.auctioneer.clear_arrays(*columns)
        if self.book is not None:
            sides, prices, qtys, execs = self.auctioneer.last_depth()
            b = self.book
            b.interval += array("q", [interval]) * len(prices)
            b.market += [market] * len(prices)
            b.side += sides
            b.price += prices
            b.qty += qtys
            b.executable += execs
        t = self.trades
        scan = self.scan
        n = len(result.qty)
        t.interval.extend(interval, n)
        t.ts += array("q", [interval]) * n  # a call fill happens at the gate
        t.market.extend(market, n)
        t.bid.extend(scan.id_refs(result.bid))
        t.ask.extend(scan.id_refs(result.ask))
        if n:
            t.price += array("q", [result.price]) * n
        t.qty += result.qty
        t.buyer += result.buyer
        t.seller += result.seller
        self.intervals.append(
            IntervalStats(
                interval,
                market,
                result.price,
                result.volume,
                n,
                result.orders,
                result.executable_orders,
            )
        )

    def _reject(self, code: str, reason: str, raw: bytes) -> None:
        reject = self.rejects.add(self.lineno, code, reason, line_text(raw))
        if self.strict and code in BAD_LINE_CODES:
            raise BadLineError(reject)

    def _bad_json(self, raw: bytes, exc: Exception) -> None:
        if not raw.strip():
            self.blank += 1
            return
        self._reject(BAD_JSON, f"not JSON: {exc}", raw)

    def finish(self) -> ReplayResult:
        """Clear what is still pending and hand back the result."""
        scan = self.scan
        self.clock = scan.clock
        if self.call:
            self._clear_until(_NEVER - 1)
        else:
            self._collect_fills()
            self.intervals = _cda_intervals(self.trades, self.interval_ms)
        scan.release_tables()  # the fills keep only their id references into the arena
        closing = {}
        for h in self.opening:
            state = self.accounts.get(h)
            assert state is not None
            closing[h] = state
        return ReplayResult(
            options=self.options,
            events=scan.lineno - self.blank - scan.blank,
            accepted={
                "accounts": self.accepted["accounts"],
                "orders": self.accepted["orders"] + scan.accepted_orders,
                "cancels": self.accepted["cancels"] + scan.accepted_cancels,
                "meters": self.accepted["meters"],
                "readings": self.accepted["readings"],
            },
            rejects=self.rejects,
            trades=self.trades,
            intervals=self.intervals,
            owners=self.owners,
            opening=self.opening,
            closing=closing,
            first_ts=self.first_ts,
            last_ts=self.clock if self.clock >= 0 else None,
            meters=self.meters,
            readings=self.readings,
            python_path=self.python_path,
            book=self.book,
        )


def _add_market_names(column: Runs, names: list[str], market: array) -> None:
    """Add the market name of each fill from its `Markets` index (one market: one run)."""
    if len(names) == 1:
        column.extend(names[0], len(market))
        return
    for k, run in groupby(market):
        column.extend(names[k], sum(1 for _ in run))


def _cda_intervals(trades: Trades, length: int) -> list[IntervalStats]:
    """Bucket cda fills by market and the interval in which their causing event happened."""
    # (interval, market) -> [volume, turnover, fills], summed in C
    m = trades.market
    buckets = cda_buckets(trades.ts, m.starts, m.values, trades.qty, trades.price, length)
    return [
        IntervalStats(start, market, turnover // volume, volume, fills, None, None)
        for (start, market), (volume, turnover, fills) in sorted(buckets.items())
    ]
