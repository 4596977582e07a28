"""Settle one delivery interval into a node's ledger: readings, call auction, trades, close.

Every node holds the same set of accepted orders, cancels and meter readings for interval
``t`` (after reconciliation) and must write exactly the same ledger entries for it, so
:func:`settle_interval` depends only on the ledger's state and on the *set* of records:
never on their order in the lists, never on the clock. Everything is written in one
:meth:`Ledger.atomic` block, every entry with ``ts = t``:

1. readings, sorted by (meter, seq, id, sig); one the ledger refuses is skipped and recorded;
2. the call auction of the orders for ``t`` in ``market`` (``matching.CallAuction``, caps
   from the ledger's balances after the readings);
3. one batch of its fills as ``trade`` entries;
4. the storage fees of ``t`` when the genesis sets a ``storage_rate``;
5. the ``interval_close`` of ``t``, whose hash is the interval's digest (it commits to the
   whole history, so two nodes with the same digest hold the same ledger).

Self-trades: the auction runs with ``stp="cancel-resting"`` (docs/matching.md, "Call
auction"): when a household's bid meets its own ask in the walk, its *earlier* order (by
``ts``, then id) leaves the walk and its later one goes on, so the household's latest
intent stands and no self-trade (which the ledger refuses) is ever produced.

Orders are taken as validated by the network (signatures included); here each order's id
must still name its content (``Order.computed_id``), since the id is its engine key and
the ledger's reference to it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wattmesh.exchange.engine_keys import order_key
from wattmesh.matching import ASK, BID, MAX_PRICE, MAX_QTY, Accounts, CallAuction, Quote
from wattmesh.settlement.certificate import Certificate
from wattmesh.settlement.ledger import Ledger, LedgerEntry, LedgerError
from wattmesh.settlement.ledger.bodies import trade_body
from wattmesh.settlement.records import Cancel, Order, Reading
from wattmesh.settlement.refusals import refusal_text

__all__ = ["STP", "IntervalOutcome", "OpenBook", "open_book", "settle_interval"]

STP = "cancel-resting"  # the call auction's self-trade rule (see the module docstring)
_LIMIT = 2**62  # Accounts.set takes balances and bmax below this


@dataclass(frozen=True, slots=True)
class IntervalOutcome:
    """What :func:`settle_interval` wrote for one interval."""

    interval: int
    price: int | None  # the clearing price; None when nothing traded
    volume: int  # Wh traded
    trades: tuple[dict[str, Any], ...]  # the trade bodies written, in ledger order
    orders: int  # orders that entered the auction
    executable_orders: int  # of those, the ones whose owner could execute them at the gate
    readings_applied: int
    refused: tuple[tuple[str, str], ...]  # (record id, reason): readings, then orders by id
    close: LedgerEntry  # the interval_close entry

    @property
    def digest(self) -> str:
        """The interval's digest: the hex hash of its close, which covers all history."""
        return self.close.hash.hex()


def settle_interval(
    ledger: Ledger,
    interval: int,
    orders: Iterable[Order],
    cancels: Iterable[Cancel],
    readings: Iterable[Reading],
    *,
    market: str = "energy",
    certificate: Certificate | None = None,
) -> IntervalOutcome:
    """Apply ``readings``, clear ``orders`` (less ``cancels``) for ``interval`` in
    ``market``, write the trades, the storage fees and the close, all or nothing. With
    ``certificate`` (the majority's votes for the set these records are), the close names
    the certified set and the certificate is stored with it.

    ValueError (nothing written) if ``interval`` is not a multiple of the genesis
    ``interval_ms``, not after the last closed interval, or before the ledger's last
    entry. A LedgerError from the trades, fees or close would be a bug; nothing is written.
    """
    if type(interval) is not int or interval < 0:
        raise ValueError(f"interval must be a non-negative integer (ms), got {interval!r:.40}")
    orders, cancels, readings = list(orders), list(cancels), list(readings)
    for items, cls in ((orders, Order), (cancels, Cancel), (readings, Reading)):
        bad = next((x for x in items if not isinstance(x, cls)), None)
        if bad is not None:
            raise TypeError(f"expected {cls.__name__} records, got {type(bad).__name__}")
    with ledger.atomic():  # holds the write lock: the checks below see the state we write on
        _check_interval(ledger, interval)
        refused: list[tuple[str, str]] = []
        applied = _apply_readings(ledger, interval, readings, refused)
        kept, order_refusals = _auction_orders(ledger, interval, market, orders, cancels)
        refused += order_refusals
        price, volume, executable, trades = _clear(ledger, interval, kept)
        if trades:
            ledger.append_batch([("trade", t) for t in trades], ts=interval)
        if ledger.genesis().get("storage_rate", 0) > 0:  # type: ignore[union-attr]
            ledger.charge_storage(interval, interval)
        close = ledger.close_interval(interval, interval, certificate)
    return IntervalOutcome(
        interval, price, volume, tuple(trades), len(kept), executable, applied,
        tuple(refused), close,
    )  # fmt: skip


def _check_interval(ledger: Ledger, interval: int) -> None:
    g = ledger.genesis()
    if g is None:
        raise ValueError("the ledger has no genesis")
    if interval % g["interval_ms"]:
        raise ValueError(
            f"interval {interval} is not a multiple of the genesis interval_ms {g['interval_ms']}"
        )
    last = ledger.last_interval()
    if last is not None and interval <= last:
        raise ValueError(f"interval {interval} is not after the last closed interval {last}")
    if interval < ledger.last_ts():
        raise ValueError(
            f"interval {interval} is before the ledger's last entry (ts {ledger.last_ts()}); "
            "every entry of the interval is written at ts = interval"
        )


def _apply_readings(
    ledger: Ledger, interval: int, readings: list[Reading], refused: list[tuple[str, str]]
) -> int:
    """Append each reading (its grid entry follows it); skip and record the refused ones.
    Sorted by (meter, seq, id, sig) so every node applies the set in one order; exact
    duplicates are one record of the set."""
    keyed = {(r.meter, r.seq, r.computed_id(), r.sig or ""): r for r in readings}
    applied = 0
    for (_meter, _seq, rid, _sig), r in sorted(keyed.items()):
        try:
            ledger.append_batch([("reading", r.to_dict())], ts=interval)
        except LedgerError as exc:  # its savepoint is rolled back; the block goes on
            refused.append((rid, refusal_text("reading-refused", _reason(exc))))
        else:
            applied += 1
    return applied


def _reason(exc: LedgerError) -> str:
    # The message without append_batch's "batch item 0 (seq N)" prefix.
    return str(LedgerError(exc.problem, exc.field, exc.kind))


def _auction_orders(
    ledger: Ledger, interval: int, market: str, orders: list[Order], cancels: list[Cancel]
) -> tuple[list[Order], list[tuple[str, str]]]:
    """The orders that enter the auction, sorted by id, and the refused ones (by id).

    Orders of other markets or intervals are not for this auction and are left alone.
    """
    g = ledger.genesis()
    assert g is not None
    lo, hi = max(1, g["price_min"]), min(g["price_max"], MAX_PRICE)
    members = ledger.member_caps()
    cancelled = {(c.id, c.owner) for c in cancels}
    refused: dict[str, str] = {}
    by_id: dict[str, Order] = {}
    for o in orders:
        if o.market != market or o.interval != interval:
            continue
        if (o.id, o.owner) in cancelled:
            continue
        if o.id != o.computed_id():  # checked first: every later reason is about the content
            refused[o.id] = refusal_text("bad-signature", "id: does not name the order's content")
        elif o.tif == "fok":
            refused[o.id] = refusal_text("unsupported-tif", "fok has no meaning in a call auction")
        elif o.owner not in members:
            refused[o.id] = refusal_text("not-member", f"owner {o.owner} is not a member")
        elif not lo <= o.price <= hi:
            refused[o.id] = refusal_text("malformed", f"price {o.price} is outside [{lo}, {hi}]")
        elif o.qty > MAX_QTY:
            refused[o.id] = refusal_text(
                "malformed", f"qty {o.qty} is above the engine's maximum {MAX_QTY}"
            )
        else:
            by_id[o.id] = o  # the same id twice is the same content: one record
    # Two orders with one engine key (a crafted 64-bit prefix collision): the smaller id
    # keeps the key, so every node keeps the same one.
    kept: list[Order] = []
    keys: set[int] = set()
    for oid in sorted(by_id):
        key = order_key(oid)
        if key in keys:
            refused[oid] = refusal_text(
                "id-collision", "its engine key (first 16 hex digits) is taken by a smaller id"
            )
        else:
            keys.add(key)
            kept.append(by_id[oid])
    return kept, sorted(refused.items())


def _clear(
    ledger: Ledger, interval: int, kept: list[Order]
) -> tuple[int | None, int, int, list[dict[str, Any]]]:
    """Clear ``kept`` (sorted by id) under the ledger's caps: the price, the volume, the
    number of executable orders and the trade bodies in fill order."""
    owners, accounts = _accounts(ledger, kept)
    handle = {o: h for h, o in enumerate(owners)}
    # Rows in id order: the engine sorts by (price, ts, key), a total order, so this only
    # makes its input canonical as well.
    keys = [order_key(o.id) for o in kept]
    columns = (
        array("B", [BID if o.side == "bid" else ASK for o in kept]),
        array("q", [o.price for o in kept]),
        array("q", [o.qty for o in kept]),
        array("Q", keys),
        array("I", [handle[o.owner] for o in kept]),
        array("q", [o.ts for o in kept]),
    )
    result = CallAuction(accounts, STP).clear_arrays(*columns)
    ids = dict(zip(keys, (o.id for o in kept), strict=True))
    trades = []
    for bid, ask, qty, buyer, seller in zip(
        result.bid, result.ask, result.qty, result.buyer, result.seller, strict=True
    ):
        if buyer == seller:  # STP forbids it; the ledger would refuse it anyway
            raise RuntimeError(f"the call auction paired {owners[buyer]} with itself")
        trades.append(trade_body(
            buyer=owners[buyer], seller=owners[seller], qty=qty, price=result.price,
            bid=ids[bid], ask=ids[ask], interval=interval,
        ))  # fmt: skip
    return result.price, result.volume, result.executable_orders, trades


def _accounts(ledger: Ledger, kept: list[Order]) -> tuple[list[str], Accounts]:
    """The owners of ``kept`` (sorted; an owner's engine handle is its index) and their
    engine accounts from the ledger's balances and caps."""
    owners = sorted({o.owner for o in kept})
    balances = ledger.balances()
    caps = ledger.member_caps()
    accounts = Accounts()
    for h, owner in enumerate(owners):
        b = balances[owner]
        accounts.set(h, *_engine_account(b["energy"], b["money"], caps[owner]))
    return owners, accounts


@dataclass(frozen=True, slots=True)
class OpenBook:
    """An open interval's call auction as it stands: the orders that would enter it (by
    id) and its quote, plain and executable (the Energo overlap: an executable bid's owner
    has money and headroom for it, an executable ask's owner has energy)."""

    interval: int
    orders: tuple[Order, ...]
    quote: Quote


def open_book(
    ledger: Ledger,
    interval: int,
    orders: Iterable[Order],
    cancels: Iterable[Cancel],
    *,
    market: str = "energy",
) -> OpenBook:
    """The auction of ``interval`` if it closed now, under today's ledger: the same order
    rules and caps as :func:`settle_interval`, nothing written (readings still to come
    may change the caps by the gate)."""
    kept, _refused = _auction_orders(ledger, interval, market, list(orders), list(cancels))
    owners, accounts = _accounts(ledger, kept)
    handle = {o: h for h, o in enumerate(owners)}
    auction = CallAuction(accounts, STP)
    for o in kept:
        auction.add(order_key(o.id), BID if o.side == "bid" else ASK, o.price, o.qty,
                    handle[o.owner], o.ts)  # fmt: skip
    return OpenBook(interval, tuple(kept), auction.quotes())


def _engine_account(energy: int, money: int, bmax: int) -> tuple[int, int, int | None]:
    """(energy, money, bmax) for ``Accounts.set``, never allowing more than the ledger.

    The engine takes values below 2**62; larger ones are lowered, which only lowers what
    the household can sell, buy or pay (the ledger's own caps still hold). A bmax of 0
    (no storage) becomes an account with nothing to sell and no money to buy with, since
    the engine's bmax must be positive: the same effect, no order of it can execute.
    """
    if bmax == 0:
        return 0, 0, None
    bmax = min(bmax, _LIMIT - 1)
    return min(energy, bmax), min(money, _LIMIT - 1), bmax
