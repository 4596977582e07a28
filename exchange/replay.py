"""Replay an order log through the matching engine: the analysts' first tool.

An order log is JSON Lines, one event per line in the order the events happened:
``account`` lines (opening balances), ``order`` lines and ``cancel`` lines (docs/replay.md).
:func:`replay` applies them to the engine in one of two modes and returns a
:class:`ReplayResult`: the fills, the per-interval statistics, the final balances and every
refused line with its line number and reason. The ``write_*`` functions turn a result into
files. Nothing here prints; the command line lives in ``wattmesh.exchange.cli``.

- ``cda``: a continuous double auction, events applied in order, one ``Book`` per market,
  all sharing one ``Accounts``.
- ``call``: a call auction per delivery interval and market. The gate of interval ``t`` is
  ``t``; an order or cancel at or after its gate is late. Before an event with ``ts`` is
  applied, every pending interval whose gate is ``<= ts`` clears, in ascending order; the
  rest clear at the end of the log.

The engine speaks integers, so owners map to ``uint32`` handles (in order of first
appearance) and order ids to ``uint64`` keys (:func:`order_key`).

Speed: the hot loop validates an order with inline checks that accept only what
``settlement.records`` accepts; anything unusual (a missing optional field, a new owner, a
non-hex id, a cancel, an account line) takes the slow path through ``records`` itself, which
also writes the refusal reasons.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import os
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from wattmesh.exchange.clock import check_interval, interval_start, is_late
from wattmesh.matching import (
    ASK,
    BID,
    FOK,
    GTC,
    IOC,
    MAX_QTY,
    Accounts,
    Book,
    CallAuction,
)
from wattmesh.settlement.records import (
    Account,
    Cancel,
    MarketSpec,
    Order,
    RecordError,
    parse_record,
    verify_signature,
)

__all__ = [
    "BAD_LINE_CODES",
    "DEFAULT_INTERVAL_MS",
    "MODES",
    "STP_RULES",
    "BadLineError",
    "IntervalStats",
    "Reject",
    "ReplayOptions",
    "ReplayResult",
    "bundled_sample",
    "order_key",
    "replay",
    "write_outputs",
    "write_trades",
]

MODES = ("cda", "call")
STP_RULES = ("none", "cancel-resting", "cancel-incoming")
DEFAULT_INTERVAL_MS = 900_000  # 15 minutes (DESIGN.md)
CHUNK_BYTES = 8 << 20
SAMPLE_RESOURCE = "data/sample_day.jsonl"

# Refusal codes. The first three make a line *bad* (it is not a valid, authentic event);
# --strict stops at the first bad line. The others refuse a valid event under the market
# rules, which is a normal outcome of a replay, so --strict goes on past them.
BAD_JSON = "bad-json"
BAD_RECORD = "bad-record"
BAD_SIGNATURE = "bad-signature"
DUPLICATE_ID = "duplicate-id"
ID_COLLISION = "id-collision"
NO_INTERVAL = "no-interval"
UNSUPPORTED_TIF = "unsupported-tif"
LATE = "late"
NOT_OWNER = "not-owner"
NOT_LIVE = "not-live"
ACCOUNT_REFUSED = "account-refused"
BAD_LINE_CODES = frozenset({BAD_JSON, BAD_RECORD, BAD_SIGNATURE})

_SIDE_CODES = {"bid": BID, "ask": ASK}
_TIF_CODES = {"gtc": GTC, "ioc": IOC, "fok": FOK}
_MARKET = MarketSpec()  # records.from_dict applies these default bounds to every market
_MIN_PRICE = _MARKET.min_price
_MAX_PRICE = _MARKET.max_price
_I64 = 2**63 - 1
_BALANCE_LIMIT = 2**62  # Accounts.set refuses balances at or above this
_NEVER = 2**63  # "no pending interval": above every valid ts
# An order line in its usual shape (all fields present); 10 keys, or 11 with a sig.
_ORDER_FIELDS = itemgetter(
    "type", "market", "side", "price", "qty", "owner", "ts", "interval", "tif", "id"
)
_is_hex64 = re.compile("[0-9a-f]{64}").fullmatch
_is_sig_hex = re.compile("[0-9a-f]{128}").fullmatch


def order_key(order_id: str) -> int:
    """The engine's uint64 key of an order id.

    A 64-hex id (a SHA-256) maps to the integer of its first 16 hex digits, so ordering by
    key is ordering by id, which the call auction uses to break ties; any other id string
    maps to the first 8 bytes of its SHA-256, big-endian.
    """
    if _is_hex64(order_id):
        return int(order_id[:16], 16)
    digest = hashlib.sha256(order_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


class Reject(NamedTuple):
    """A refused line: its 1-based line number, refusal code, reason and text."""

    line: int
    code: str
    reason: str
    text: str


class BadLineError(ValueError):
    """Raised under ``strict`` for the first bad line (bad JSON, record or signature)."""

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        super().__init__(f"line {reject.line}: {reject.code}: {reject.reason}")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay: mechanism, interval length, self-trade rule, strictness, signatures."""

    mode: str = "call"
    interval_ms: int = DEFAULT_INTERVAL_MS
    stp: str = "none"
    strict: bool = False
    verify_signatures: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}; got {self.mode!r}")
        if type(self.interval_ms) is not int or self.interval_ms <= 0:
            raise ValueError(f"interval_ms: must be a positive integer, got {self.interval_ms!r}")
        if self.stp not in STP_RULES:
            raise ValueError(f"stp: must be one of {', '.join(STP_RULES)}; got {self.stp!r}")


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


@dataclass(slots=True)
class Trades:
    """The fills in engine order, as columns (``seq`` is the row number + 1)."""

    interval: list[int | None] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    market: list[str] = field(default_factory=list)
    buyer: list[int] = field(default_factory=list)  # owner handles
    seller: list[int] = field(default_factory=list)
    bid: list[str] = field(default_factory=list)  # order ids
    ask: list[str] = field(default_factory=list)
    qty: list[int] = field(default_factory=list)
    price: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.qty)


@dataclass(slots=True)
class ReplayResult:
    """Everything a replay produced; the ``write_*`` functions turn it into files."""

    options: ReplayOptions
    events: int  # non-blank lines
    accepted: dict[str, int]  # "accounts", "orders", "cancels"
    rejects: list[Reject]
    trades: Trades
    intervals: list[IntervalStats]
    owners: list[str]  # handle -> owner
    opening: dict[int, tuple[int, int, int | None]]  # handle -> (energy, money, bmax)
    closing: dict[int, tuple[int, int, int | None]]
    first_ts: int | None
    last_ts: int | None

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
        counts: dict[str, int] = {}
        for r in self.rejects:
            counts[r.code] = counts.get(r.code, 0) + 1
        return dict(sorted(counts.items()))

    def trade_rows(self) -> Iterator[dict[str, Any]]:
        """The fills as dicts with the fields of ``--trades`` (and records.Trade)."""
        t = self.trades
        owners = self.owners
        mode = self.options.mode
        for i in range(len(t)):
            yield {
                "seq": i + 1,
                "mode": mode,
                "interval": t.interval[i],
                "ts": t.ts[i],
                "buyer": owners[t.buyer[i]],
                "seller": owners[t.seller[i]],
                "bid": t.bid[i],
                "ask": t.ask[i],
                "qty": t.qty[i],
                "price": t.price[i],
            }

    def summary(self) -> dict[str, Any]:
        """The content of summary.json: counts, volume, prices and refusals."""
        refused = self.refused()
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
            "volume_wh": self.volume,
            "turnover_nano": self.turnover,
            "vwap": self.vwap,
            "intervals": len(self.intervals),
            "owners": len(self.owners),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def bundled_sample() -> resources.abc.Traversable:
    """The sample day shipped with the package (docs/replay.md, "The sample")."""
    return resources.files("wattmesh.exchange").joinpath(SAMPLE_RESOURCE)


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
    run = _Replay(options)
    # A replay keeps millions of small objects alive and makes no reference cycles; the
    # cyclic collector would only rescan them again and again, so it pauses meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if log is None:
            with bundled_sample().open("rb") as fp:
                run.consume(fp, on_progress)
        elif isinstance(log, (str, os.PathLike)):
            with open(log, "rb") as fp:
                run.consume(fp, on_progress)
        else:
            run.consume(log, on_progress)
        return run.finish()
    finally:
        if collecting:
            gc.enable()


def _read_lines(fp: IO[bytes], chunk_bytes: int) -> Iterator[tuple[list[bytes], int]]:
    """Yield (complete lines, bytes consumed so far), reading large chunks."""
    tail = b""
    done = 0
    first = True
    while True:
        block = fp.read(chunk_bytes)
        if not block:
            break
        done += len(block)
        if first:
            block = block.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM some editors add
            first = False
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        yield lines, done
    if tail:
        yield [tail], done


class _Auction:
    """The orders of one pending call auction (an interval of one market).

    One tuple per order, appended by the hot loop, is cheaper than an engine call per
    order; the rows become the engine's columns in one ``CallAuction.clear_arrays`` call
    when the gate passes.
    """

    __slots__ = ("rows", "cancelled")

    def __init__(self) -> None:
        # One row per order: (side, price, qty, key, owner, ts).
        self.rows: list[tuple[int, int, int, int, int, int]] = []
        self.cancelled: set[int] = set()  # keys of withdrawn orders

    def columns(self) -> tuple[array, ...]:
        """The live orders as the engine's columns: sides, prices, qtys, keys, owners, ts."""
        rows = self.rows
        if self.cancelled:
            gone = self.cancelled
            rows = [r for r in rows if r[3] not in gone]
        if not rows:
            return tuple(array(code) for code in "BqqQIq")
        return tuple(
            array(code, col) for code, col in zip("BqqQIq", zip(*rows, strict=True), strict=True)
        )


class _Replay:
    """The state of one replay: engine objects, id and owner maps, collected results."""

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        self.call = options.mode == "call"
        self.interval_ms = options.interval_ms
        self.verify = options.verify_signatures
        self.strict = options.strict
        self.accounts = Accounts()
        self.handles: dict[str, int] = {}  # owner -> handle
        self.owners: list[str] = []  # handle -> owner
        self.account_lines: dict[int, int] = {}  # handle -> line of its account line
        self.opening: dict[int, tuple[int, int, int | None]] = {}
        # Every accepted order by engine key: key -> (id, owner handle, market, interval).
        # One map serves duplicates, collisions, cancels and the ids of fills.
        self.by_key: dict[int, tuple[str, int, str, int | None]] = {}
        self.retired: set[str] = set()  # ids whose key another order took over
        # cda: market -> Book. call: market -> market (a known, valid name).
        self.venues: dict[str, Any] = {}
        self.market_of_book: dict[int, str] = {}  # id(book) -> market
        # call: interval -> market -> _Auction; next_gate is the smallest pending interval.
        self.pending: dict[int, dict[str, _Auction]] = {}
        self.next_gate = _NEVER
        self.auctioneer = CallAuction(self.accounts, options.stp)
        self.clock = -1  # the largest ts of any valid order or cancel so far
        self.first_ts: int | None = None
        # cda: (book, ts, number of fills) per event that filled, until _collect_fills.
        self.fill_events: list[tuple[Book, int, int]] = []
        self.trades = Trades()
        self.intervals: list[IntervalStats] = []
        self.rejects: list[Reject] = []
        self.accepted = {"accounts": 0, "orders": 0, "cancels": 0}
        self.lineno = 0
        self.blank = 0

    # -- reading ------------------------------------------------------------------------
    def consume(self, fp: IO[bytes], on_progress: Callable[[int], None] | None) -> None:
        for lines, done in _read_lines(fp, CHUNK_BYTES):
            self.feed(lines)
            if on_progress is not None:
                on_progress(done)

    def feed(self, lines: list[bytes]) -> None:
        """Validate and apply consecutive lines (the hot loop)."""
        # Everything the loop touches is a local: attribute and global lookups cost. State
        # the slow methods also change (clock, lineno) is written back before calling them
        # and read again after.
        loads = orjson.loads
        json_error = orjson.JSONDecodeError
        fields = _ORDER_FIELDS
        side_codes = _SIDE_CODES
        tif_codes = _TIF_CODES
        is_hex64 = _is_hex64
        is_sig = _is_sig_hex
        handles = self.handles
        venues = self.venues
        by_key = self.by_key
        fill_events = self.fill_events
        call = self.call
        interval_ms = self.interval_ms
        fast = not self.verify
        lo, hi, max_qty, i64 = _MIN_PRICE, _MAX_PRICE, MAX_QTY, _I64
        # call: where the previous order went (orders come grouped by interval).
        last_interval = last_market = None
        add_row = _no_auction
        accepted = 0
        clock = self.clock
        lineno = self.lineno
        for raw in lines:
            lineno += 1
            try:
                d = loads(raw)
            except json_error as exc:
                self.lineno = lineno
                self._bad_json(raw, exc)
                continue
            # Fast path: an order line in its usual shape whose owner and market are known.
            # Every check here is at least as strict as records.Order.from_dict; a KeyError
            # (a missing field, a new owner or market, a bad side or tif) or a TypeError (not
            # an object, an unhashable value) sends the line down the slow path.
            try:
                typ, market, side, price, qty, owner, ts, interval, tif, oid = fields(d)
                side_c = side_codes[side]
                tif_c = tif_codes[tif]
                h = handles[owner]
                venue = venues[market]
                n = len(d)
            except (KeyError, TypeError):
                typ = None
            if (
                fast
                and typ == "order"
                and (n == 10 or (n == 11 and type(sig := d.get("sig")) is str and is_sig(sig)))
                and type(price) is int
                and lo <= price <= hi
                and type(qty) is int
                and 0 < qty <= max_qty
                and type(ts) is int
                and 0 <= ts <= i64
                and (interval is None or (type(interval) is int and 0 <= interval <= i64))
                and type(oid) is str
                and is_hex64(oid)
            ):
                key = int(oid[:16], 16)
            else:
                self.lineno = lineno
                self.clock = clock
                event = self._slow(d, raw)
                clock = self.clock
                if event is None:  # refused, or a cancel or account line already applied
                    last_interval = None  # a cancel may have cleared intervals
                    continue
                side_c, price, qty, h, ts, interval, tif_c, oid, key, venue, market = event
            # Apply an order.
            if ts > clock:
                clock = ts
                if call and ts >= self.next_gate:
                    self._clear_until(ts)
                    last_interval = None
            # The gate rule of exchange/clock.py (check_interval, is_late), inline for speed:
            # the interval is closed once the log's clock has reached its gate.
            if call and (
                interval is None or interval % interval_ms or tif_c == FOK or interval <= clock
            ):
                self.lineno = lineno
                self._refuse_call_order(raw, ts, interval, tif_c, clock)
                continue
            if key in by_key:  # the same id again, or another id with the same key
                self.lineno = lineno
                if not self._may_take_key(key, oid, raw):
                    continue
            by_key[key] = (oid, h, market, interval)
            if call:
                if interval != last_interval or market != last_market:
                    add_row = self._auction(interval, market).rows.append  # type: ignore[arg-type]
                    last_interval, last_market = interval, market
                add_row((side_c, price, qty, key, h, ts))
            else:
                filled = venue.submit(key, side_c, price, qty, h, tif_c)
                if filled:
                    fill_events.append((venue, ts, filled))
            accepted += 1
        self.lineno = lineno
        self.clock = clock
        self.accepted["orders"] += accepted
        if fill_events:
            self._collect_fills()

    # -- the slow path ------------------------------------------------------------------
    def _slow(self, d: Any, raw: bytes) -> tuple | None:
        """Validate a line through settlement.records and apply cancels and account lines.

        Returns an order as the tuple the hot loop applies, or None when the line was
        refused or fully applied here.
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
        venue = self.venues.get(order.market)
        if venue is None:
            if self.call:
                venue = order.market
            else:
                venue = Book(self.accounts, self.options.stp)
                self.market_of_book[id(venue)] = order.market
            self.venues[order.market] = venue
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
            venue,
            order.market,
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
        h = self.handles.get(owner)
        if h is None:
            h = self.handles[owner] = len(self.owners)
            self.owners.append(owner)
        return h

    def _apply_account(self, account: Account, raw: bytes) -> None:
        h = self.handles.get(account.owner)
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
        if not self.call and self.venues:
            # The owner has no orders, so no book can change; uncross anyway so the books
            # see the new accounts version now rather than at their next event.
            for book in self.venues.values():
                filled = book.uncross()
                if filled:
                    self.fill_events.append((book, max(self.clock, 0), filled))
            self._collect_fills()

    def _apply_cancel(self, cancel: Cancel, raw: bytes) -> None:
        ts = cancel.ts
        if ts > self.clock:
            self.clock = ts
            if self.call and ts >= self.next_gate:
                self._clear_until(ts)
        key = order_key(cancel.id)
        entry = self.by_key.get(key)
        if entry is None or entry[0] != cancel.id:
            known = cancel.id in self.retired
            self._reject(
                NOT_LIVE, f"order {cancel.id} is {'no longer live' if known else 'unknown'}", raw
            )
            return
        _oid, h, market, interval = entry
        if self.owners[h] != cancel.owner:
            self._reject(NOT_OWNER, f"order {cancel.id} belongs to {self.owners[h]}", raw)
            return
        if self.call:
            assert interval is not None  # call mode accepts no order without one
            if is_late(ts, interval):
                self._reject(
                    LATE, f"cancel at ts {ts} is at or after the gate of interval {interval}", raw
                )
                return
            if interval <= self.clock:
                self._reject(
                    LATE,
                    f"interval {interval} already cleared (the log had reached ts {self.clock})",
                    raw,
                )
                return
            auction = self.pending.get(interval, {}).get(market)
            live = auction is not None and key not in auction.cancelled
            if live:
                auction.cancelled.add(key)  # type: ignore[union-attr]
        else:
            live = self.venues[market].cancel(key)
        if not live:
            self._reject(NOT_LIVE, f"order {cancel.id} is no longer live", raw)
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

    def _may_take_key(self, key: int, oid: str, raw: bytes) -> bool:
        """``key`` is held already: refuse a reused id, or another id while the holder is
        live; otherwise the new order takes the key over."""
        holder, _h, market, interval = self.by_key[key]
        if oid == holder or oid in self.retired:
            self._reject(DUPLICATE_ID, f"order id {oid} was already used", raw)
            return False
        if self.call:
            auction = self.pending.get(interval, {}).get(market)  # type: ignore[arg-type]
            live = auction is not None and key not in auction.cancelled
        else:
            live = key in self.venues[market]
        if live:
            self._reject(
                ID_COLLISION, f"id {oid} has the same engine key as live order {holder}", raw
            )
            return False
        # Fills not yet collected may name the old holder of the key: collect them first.
        self._collect_fills()
        self.retired.add(holder)
        return True

    def _auction(self, interval: int, market: str) -> _Auction:
        auctions = self.pending.get(interval)
        if auctions is None:
            auctions = self.pending[interval] = {}
            if interval < self.next_gate:
                self.next_gate = interval
        auction = auctions.get(market)
        if auction is None:
            auction = auctions[market] = _Auction()
        return auction

    # -- results ------------------------------------------------------------------------
    def _collect_fills(self) -> None:
        """Move the fills waiting in the books into self.trades, in event order."""
        events = self.fill_events
        if not events:
            return
        t = self.trades
        by_key = self.by_key
        books = {id(book): book for book, _ts, _n in events}
        if len(books) == 1:
            # One market (the usual case): the book's fills are exactly these events' fills.
            ((k, book),) = books.items()
            _ev, bid, ask, price, qty, buyer, seller, _aggr = book.take_fill_arrays()
            if len(qty) != sum(n for _b, _ts, n in events):
                raise RuntimeError("the book reported a different number of fills")
            for _b, ts, n in events:
                t.ts += [ts] * n
            columns = [(self.market_of_book[k], bid, ask, price, qty, buyer, seller)]
        else:
            taken = {k: b.take_fill_arrays() for k, b in books.items()}
            offsets = dict.fromkeys(taken, 0)
            columns = []
            for book, ts, n in events:
                k = id(book)
                start = offsets[k]
                end = offsets[k] = start + n
                _ev, bid, ask, price, qty, buyer, seller, _aggr = taken[k]
                t.ts += [ts] * n
                columns.append(
                    (
                        self.market_of_book[k],
                        bid[start:end],
                        ask[start:end],
                        price[start:end],
                        qty[start:end],
                        buyer[start:end],
                        seller[start:end],
                    )
                )
            if any(offsets[k] != len(taken[k][0]) for k in taken):
                raise RuntimeError("a book reported a different number of fills")
        for market, bid, ask, price, qty, buyer, seller in columns:
            n = len(qty)
            t.interval += [None] * n
            t.market += [market] * n
            t.bid += [by_key[k][0] for k in bid]
            t.ask += [by_key[k][0] for k in ask]
            t.price += price
            t.qty += qty
            t.buyer += buyer
            t.seller += seller
        events.clear()

    def _clear_until(self, ts: int) -> None:
        """Clear every pending interval whose gate is <= ts, in ascending order."""
        pending = self.pending
        while self.next_gate <= ts:
            interval = self.next_gate
            auctions = pending.pop(interval)
            for market in sorted(auctions):
                self._clear(interval, market, auctions[market])
            self.next_gate = min(pending) if pending else _NEVER

    def _clear(self, interval: int, market: str, auction: _Auction) -> None:
        result = self.auctioneer.clear_arrays(*auction.columns())
        t = self.trades
        by_key = self.by_key
        n = len(result.qty)
        t.interval += [interval] * n
        t.ts += [interval] * n  # a call fill happens at the gate
        t.market += [market] * n
        t.bid += [by_key[k][0] for k in result.bid]
        t.ask += [by_key[k][0] for k in result.ask]
        t.price += [result.price] * n
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
        text = raw.decode("utf-8", "replace").rstrip("\r")
        reject = Reject(self.lineno, code, reason, text)
        self.rejects.append(reject)
        if self.strict and code in BAD_LINE_CODES:
            raise BadLineError(reject)

    def _bad_json(self, raw: bytes, exc: Exception) -> None:
        if not raw.strip():
            self.blank += 1
            return
        self._reject(BAD_JSON, f"not JSON: {exc}", raw)

    def finish(self) -> ReplayResult:
        """Clear what is still pending and hand back the result."""
        if self.call:
            self._clear_until(_NEVER - 1)
        else:
            self._collect_fills()
            self.intervals = _cda_intervals(self.trades, self.interval_ms)
        closing = {}
        for h in self.opening:
            state = self.accounts.get(h)
            assert state is not None
            closing[h] = state
        return ReplayResult(
            options=self.options,
            events=self.lineno - self.blank,
            accepted=dict(self.accepted),
            rejects=self.rejects,
            trades=self.trades,
            intervals=self.intervals,
            owners=self.owners,
            opening=self.opening,
            closing=closing,
            first_ts=self.first_ts,
            last_ts=self.clock if self.clock >= 0 else None,
        )


def _no_auction(_row: tuple) -> None:
    raise AssertionError("an order reached the call auction columns before an auction")


def _cda_intervals(trades: Trades, length: int) -> list[IntervalStats]:
    """Bucket cda fills by market and the interval in which their causing event happened."""
    # (interval, market) -> [volume, turnover, fills]
    buckets: dict[tuple[int, str], list[int]] = {}
    for ts, market, qty, price in zip(
        trades.ts, trades.market, trades.qty, trades.price, strict=True
    ):
        slot = (interval_start(ts, length), market)
        b = buckets.get(slot)
        if b is None:
            b = buckets[slot] = [0, 0, 0]
        b[0] += qty
        b[1] += qty * price
        b[2] += 1
    return [
        IntervalStats(start, market, turnover // volume, volume, fills, None, None)
        for (start, market), (volume, turnover, fills) in sorted(buckets.items())
    ]


# -- writing --------------------------------------------------------------------------------
TRADE_COLUMNS = ("seq", "mode", "interval", "ts", "buyer", "seller", "bid", "ask", "qty", "price")
INTERVAL_COLUMNS = ("interval", "market", "price", "volume", "fills", "orders", "executable_orders")
ACCOUNT_COLUMNS = (
    "owner", "bmax", "energy_start", "energy", "money_start", "money", "bought", "sold"
)  # fmt: skip
_ROWS_PER_WRITE = 65_536
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
    bids, asks = _json_inner(t.bid), _json_inner(t.ask)
    for start in range(0, len(t), _ROWS_PER_WRITE):
        end = min(start + _ROWS_PER_WRITE, len(t))
        lines = [
            f'{{"seq":{i + 1},"mode":"{mode}","interval":{"null" if iv is None else iv},'
            f'"ts":{ts},"buyer":"{owners[b]}","seller":"{owners[s]}","bid":"{bid}",'
            f'"ask":"{ask}","qty":{q},"price":{p}}}\n'
            for i, iv, ts, b, s, bid, ask, q, p in zip(
                range(start, end),
                t.interval[start:end],
                t.ts[start:end],
                t.buyer[start:end],
                t.seller[start:end],
                bids[start:end],
                asks[start:end],
                t.qty[start:end],
                t.price[start:end],
                strict=True,
            )
        ]
        fp.write("".join(lines).encode())


def write_outputs(result: ReplayResult, out_dir: str | os.PathLike[str]) -> None:
    """Write trades.csv, intervals.csv, accounts.csv, rejects.jsonl and summary.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = result.trades
    owners = _csv_fields(result.owners)
    mode = result.options.mode
    bids, asks = _csv_fields(t.bid), _csv_fields(t.ask)
    with open(out / "trades.csv", "wb") as fp:
        fp.write((",".join(TRADE_COLUMNS) + "\n").encode())
        for start in range(0, len(t), _ROWS_PER_WRITE):
            end = min(start + _ROWS_PER_WRITE, len(t))
            lines = [
                f"{i + 1},{mode},{'' if iv is None else iv},{ts},{owners[b]},{owners[s]},"
                f"{bid},{ask},{q},{p}\n"
                for i, iv, ts, b, s, bid, ask, q, p in zip(
                    range(start, end),
                    t.interval[start:end],
                    t.ts[start:end],
                    t.buyer[start:end],
                    t.seller[start:end],
                    bids[start:end],
                    asks[start:end],
                    t.qty[start:end],
                    t.price[start:end],
                    strict=True,
                )
            ]
            fp.write("".join(lines).encode())
    _write_csv(
        out / "intervals.csv",
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
    _write_csv(out / "accounts.csv", ACCOUNT_COLUMNS, rows)
    with open(out / "rejects.jsonl", "wb") as fp:
        fp.writelines(orjson.dumps(r._asdict()) + b"\n" for r in result.rejects)
    with open(out / "summary.json", "wb") as fp:
        fp.write(orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2) + b"\n")


def _write_csv(path: Path, header: tuple[str, ...], rows: Any) -> None:
    # "\n" line ends on every platform, so the same log gives the same bytes everywhere.
    with open(path, "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
