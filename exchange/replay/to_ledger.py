"""Settle a replay into a ledger: ``wattmesh replay LOG --ledger FILE`` (docs/replay.md).

:func:`settle_into_ledger` turns a :class:`~wattmesh.exchange.replay.replay.ReplayResult` into a
fresh ledger file (``wattmesh.settlement.ledger``, docs/ledger.md), so an auditor can rebuild
a ledger from an order log. Everything written is a function of the log and the replay
options (no clock, no randomness), so the same log gives the same entry hashes.

What is written, in order:

1. One batch: ``genesis`` (with the replay's grid prices), then per owner with an account
   line a ``member`` and an ``opening`` with its energy (from ``@meters``) and money (from
   ``@bank``): the ledger's kind for balances held before the first trade; then a
   ``meter`` per meter line.
2. call mode: per cleared interval, in clearing order, the readings applied before it
   cleared (one batch), one batch of its fills (``trade``, ts = the gate) and then an
   ``interval_close`` (``Ledger.close_interval``).
   cda mode: the fills bucketed by ``interval_ms`` (15 minutes by default) of their ts, one
   batch per bucket (each entry at its fill's ts, readings between the fills they came
   between) and then an ``interval_close``.
3. Readings after the last fill, in one batch (covered by no close).

Each ``reading`` is followed by the ``grid_export`` or ``grid_import`` the ledger derives
from its own balances (docs/ledger.md, "Readings"); since the replay applied the same rule
at the same point, the ledger's balances equal the replay's closing balances.

Storage fees (``--storage-rate N``, nano per kWh stored per interval; default 0): with N > 0
the genesis gets ``storage_rate`` N and the funds ``education`` and ``network``, the members
whose account line has a ``bmax`` are the storage providers (``storage`` true, weighted by
that bmax; a line without bmax holds no storage of its own), and in call mode each
interval's trades batch is followed by ``Ledger.charge_storage`` (every member holding
energy pays; 80/10/10 split) before its close. With N = 0 the file is byte for byte what it
was before storage fees existed. cda mode with N > 0 is refused: its buckets exist only
where fills are, so intervals without fills would go uncharged.

Refused, nothing written: a fill by an owner without an account line (such owners trade
without caps in a replay, so the ledger would have to invent their money or energy), and a
file that exists and is not empty. Not booked: self-fills (buyer = seller, possible with
``--stp none``), which move nothing and which the ledger refuses; they are counted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wattmesh.exchange.replay.replay import ReplayResult
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.ledger.bodies import Opening, opening_items, trade_body
from wattmesh.settlement.ledger.bodies import genesis_body as ledger_genesis
from wattmesh.settlement.records import MarketSpec

__all__ = [
    "COMMUNITY",
    "NO_BMAX",
    "LedgerSummary",
    "ReplayLedgerError",
    "genesis_body",
    "settle_into_ledger",
]

COMMUNITY = "wattmesh-replay"
NO_BMAX = 2**63 - 1  # an account line without bmax: no storage cap (the ledger's largest int)
_MARKET = MarketSpec()


class ReplayLedgerError(WattmeshError, ValueError):
    """The replay cannot be settled into a ledger (the message says why)."""


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """What :func:`settle_into_ledger` wrote."""

    path: Path
    entries: int
    head: str  # SEQ:HASH of the last entry
    members: int
    trades: int
    closes: int
    self_fills: int  # fills with buyer = seller, not booked
    left_out: tuple[str, ...]  # owners without an account line and without fills
    fees: int = 0  # storage fee entries (0 without --storage-rate)

    def line(self) -> str:
        extra = f", {self.fees} storage fees" if self.fees else ""
        extra += f", {self.self_fills} self-fills not booked" if self.self_fills else ""
        return (
            f"ledger {self.path}: {self.entries} entries ({self.members} members, "
            f"{self.trades} trades, {self.closes} closes{extra}), head {self.head}"
        )


def genesis_body(result: ReplayResult, storage_rate: int = 0) -> dict:
    """The genesis of a replay ledger: the replay's interval length, the markets' default
    price bounds and the replay's grid prices (for its readings); no trade fees. With
    ``storage_rate`` > 0 also that rate and the education and network funds."""
    return ledger_genesis(
        community=COMMUNITY,
        interval_ms=result.options.interval_ms,
        price_min=_MARKET.min_price,
        price_max=_MARKET.max_price,
        fee_rate_ppm=0,
        retail_price=result.options.retail_price,
        feedin_price=result.options.feedin_price,
        storage_rate=storage_rate,
    )


def _check_owners(result: ReplayResult) -> tuple[str, ...]:
    """Refuse fills by uncapped owners; return the uncapped owners that never filled."""
    t = result.trades
    opening = result.opening
    uncapped = sorted({h for h in (*t.buyer, *t.seller) if h not in opening})
    if uncapped:
        names = [result.owners[h] for h in uncapped]
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise ReplayLedgerError(
            f"owner {names[0]}{more} traded without an account line (no caps, no balances);"
            " a ledger cannot book those fills without inventing money or energy: give every"
            " trading owner an account line"
        )
    return tuple(o for h, o in enumerate(result.owners) if h not in opening)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(str(path) + suffix)
        except FileNotFoundError:
            pass


def settle_into_ledger(
    result: ReplayResult, path: str | os.PathLike[str], storage_rate: int = 0
) -> LedgerSummary:
    """Write ``result`` into a new ledger at ``path`` (see the module docstring).

    Raises :class:`ReplayLedgerError` (nothing written) when ``path`` exists and is not
    empty, an owner without an account line has fills, or ``storage_rate`` > 0 in cda
    mode or with no account line giving a bmax (no storage provider); a
    :class:`LedgerError` from the ledger (the file is removed again) would be a bug in the
    replay or here.
    """
    if isinstance(storage_rate, bool) or not isinstance(storage_rate, int) or storage_rate < 0:
        raise ReplayLedgerError(f"storage rate must be an integer >= 0, got {storage_rate!r}")
    if storage_rate:
        if result.options.mode != "call":
            raise ReplayLedgerError(
                "a storage rate needs call mode (cda has no per-interval closes to charge at)"
            )
        if not any(bmax for _e, _m, bmax in result.opening.values()):
            raise ReplayLedgerError(
                "a storage rate needs at least one storage provider: an account line with a "
                "bmax > 0"
            )
    p = Path(path)
    if p.exists() and (not p.is_file() or p.stat().st_size > 0):
        raise ReplayLedgerError(
            f"{p} exists and is not empty; a replay ledger starts at genesis in a new file"
        )
    left_out = _check_owners(result)
    try:
        with Ledger.open(p) as led:
            summary = _write(led, result, p, left_out, storage_rate)
    except BaseException:
        _remove(p)
        raise
    return summary


def _write(
    led: Ledger, result: ReplayResult, p: Path, left_out: tuple[str, ...], storage_rate: int
) -> LedgerSummary:
    t = result.trades
    owners = result.owners
    call = result.options.mode == "call"
    length = result.options.interval_ms
    ts0 = result.first_ts if result.first_ts is not None else (min(t.ts) if len(t) else 0)
    if len(t):
        ts0 = min(ts0, t.ts[0])
    items: list = [("genesis", genesis_body(result, storage_rate))]
    items += opening_items(
        Opening(
            owners[h],
            NO_BMAX if bmax is None else bmax,
            bool(storage_rate) and bool(bmax),
            energy,
            money,
        )
        for h, (energy, money, bmax) in sorted(result.opening.items())
    )
    for m in result.meters:  # the ledger's meter entry is the meter line without its type
        items.append(("meter", {k: v for k, v in m.to_dict().items() if k != "type"}))
    led.append_batch(items, ts=ts0)
    clock = ts0
    trades = closes = self_fills = fees = 0
    readings = result.readings
    r = 0  # the next reading to write

    def reading_item(k: int) -> tuple:
        nonlocal clock
        clock = max(clock, readings[k].ts)
        return ("reading", readings[k].reading.to_dict(), clock)

    def book(rows: range, interval: int, ts_of: Sequence[int] | None) -> None:
        """Append the fills ``rows`` as one batch (at ``ts_of[i]`` each, or the gate)."""
        nonlocal clock, trades, self_fills
        nonlocal r
        batch = []
        bids, asks = t.bid[rows.start : rows.stop], t.ask[rows.start : rows.stop]  # as str
        for i in rows:
            while ts_of is not None and r < len(readings) and readings[r].fills_before <= i:
                batch.append(reading_item(r))
                r += 1
            b, s = t.buyer[i], t.seller[i]
            if b == s:
                self_fills += 1
                continue
            if ts_of is not None:
                clock = max(clock, ts_of[i])
            body = trade_body(
                buyer=owners[b], seller=owners[s], qty=t.qty[i], price=t.price[i],
                bid=bids[i - rows.start], ask=asks[i - rows.start], interval=interval,
            )  # fmt: skip
            batch.append(("trade", body, clock))
        led.append_batch(batch)
        trades += len(batch)

    n = len(t)
    i = 0
    if call:
        # result.intervals lists each cleared (interval, market) in clearing order, and the
        # fills follow the same order: one batch and one close per interval.
        seen: list[int] = []
        first_clear: dict[int, int] = {}  # interval -> index of its first cleared auction
        for k, s in enumerate(result.intervals):
            if not seen or seen[-1] != s.interval:
                seen.append(s.interval)
                first_clear[s.interval] = k
        for interval in seen:
            before = []
            while r < len(readings) and readings[r].clears_before <= first_clear[interval]:
                before.append(reading_item(r))
                r += 1
            if before:
                led.append_batch(before)
            j = i
            while j < n and t.interval[j] == interval:
                j += 1
            clock = max(clock, interval)  # a call fill happens at the gate
            book(range(i, j), interval, None)
            i = j
            if storage_rate:
                fees += sum(e.kind == "fee" for e in led.charge_storage(interval, clock))
            led.close_interval(interval, clock)
            closes += 1
        if i != n:
            raise RuntimeError("replay fills are not in the order of the cleared intervals")
    else:
        while i < n:
            bucket_ts = max(clock, t.ts[i])
            bucket = bucket_ts - bucket_ts % length
            j = i
            while j < n and max(bucket_ts, t.ts[j]) < bucket + length:
                j += 1
            book(range(i, j), bucket, t.ts)
            i = j
            led.close_interval(bucket, clock)
            closes += 1
    if r < len(readings):
        led.append_batch([reading_item(k) for k in range(r, len(readings))])
    seq, _h = led.head()
    return LedgerSummary(
        path=p,
        entries=seq,
        head=led.head_text(),
        members=len(result.opening),
        trades=trades,
        closes=closes,
        self_fills=self_fills,
        left_out=left_out,
        fees=fees,
    )
