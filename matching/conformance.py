"""tracebook conformance adapter for the continuous double auction (``Book``).

``python -m wattmesh.matching.conformance`` speaks tracebook's NDJSON stdio protocol
(version 1) and translates each event onto one ``Book`` per symbol. Matching is left
entirely to the engine: this module maps ids, owners and numbers, validates inputs, and
reports outcomes, trades and book state the way tracebook expects (docs/conformance.md).
Needs the dev dependency ``tracebook-conformance``.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from fractions import Fraction
from importlib import metadata

from tracebook.conformance import (
    BookState,
    ConformanceConfig,
    EngineMetadata,
    Observation,
    Outcome,
    TradeFill,
    canonical_decimal,
    serve_stdio,
)
from tracebook.core.order import NO_OWNER, OrderSide, OrderType, SelfTradePolicy
from tracebook.events import MarketEvent

from . import ASK, BID, FOK, GTC, IOC, MAX_PRICE, MAX_QTY, Book

ENGINE_NAME = "wattmesh-matching"

_STP = {
    SelfTradePolicy.NONE: "none",
    SelfTradePolicy.CANCEL_RESTING: "cancel-resting",
    SelfTradePolicy.CANCEL_INCOMING: "cancel-incoming",
}
_TIF = {OrderType.LIMIT: GTC, OrderType.IOC: IOC, OrderType.FOK: FOK}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT32_MAX = 2**32 - 1
# tracebook's reference treats anything at or below this as no quantity at all.
_QTY_EPSILON = 1e-12


class Rejected(Exception):
    """An event tracebook expects to be rejected, with its stable reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Symbol:
    """One symbol: its book and quantity scale, the id maps, its cached snapshot entry."""

    __slots__ = ("name", "book", "scale", "source_of", "active", "state", "count")

    def __init__(self, name: str, book: Book) -> None:
        self.name = name
        self.book = book
        self.scale = 1  # engine quantity units per tracebook quantity unit
        self.source_of: dict[int, int] = {}  # engine key -> source order id
        self.active: dict[int, int] = {}  # resting source order id -> engine key
        self.state: dict = {"symbol": name, "bids": [], "asks": []}
        self.count = 0


def _price_places(tick_size: float) -> int:
    exponent = Decimal(str(tick_size)).normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def engine_version() -> str:
    """The installed wattmesh version, reported as the candidate engine's version."""
    try:
        return metadata.version("wattmesh")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class WattmeshAdapter:
    """tracebook ``EngineAdapter`` over ``wattmesh.matching.Book`` (caps off)."""

    def __init__(self, config: ConformanceConfig) -> None:
        if config.matching_algorithm != "fifo":
            raise ValueError(f"wattmesh Book matches FIFO only, not {config.matching_algorithm}")
        self.config = config
        self.metadata = EngineMetadata(ENGINE_NAME, engine_version(), "Cython")
        self._stp = _STP[config.self_trade_policy]
        self._tick = config.tick_size
        self._places = _price_places(config.tick_size)
        self._qty_places = config.quantity_decimal_places
        self._symbols: dict[str, _Symbol] = {}
        self._next_key = 1
        self._next_handle = 1
        self._handles: dict[int, int] = {}  # source owner -> uint32 handle
        self._owners: dict[int, int] = {}  # handle -> source owner (anonymous: absent)
        self._price_text: dict[int, str] = {}

    # -- protocol -------------------------------------------------------------------

    def apply(self, event: MarketEvent, index: int) -> Observation:
        """Apply one event and report its outcome, trades and state digest."""
        trades: list[TradeFill] = []
        try:
            self._dispatch(event, trades)
            outcome = Outcome("applied")
        except Rejected as exc:
            outcome = Outcome("rejected", exc.reason, str(exc))
        symbol = self._symbols.get(event.symbol)
        if symbol is not None:
            self._refresh(symbol)
        state = self._state()
        digest = hashlib.sha256(
            json.dumps(
                state, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode("utf-8")
        ).hexdigest()
        count = sum(symbol.count for symbol in self._symbols.values())
        return Observation(index, outcome, tuple(trades), digest, count)

    def snapshot(self) -> BookState:
        """Every resting order, per symbol, in matching priority."""
        return BookState.from_dict(self._state())

    def close(self) -> None:
        """Nothing to release: the books live in this process."""

    # -- operations -----------------------------------------------------------------

    def _dispatch(self, event: MarketEvent, trades: list[TradeFill]) -> None:
        if event.op == "new":
            self._new(event, trades)
        elif event.op == "cancel":
            self._cancel(event)
        elif event.op == "reduce":
            self._reduce(event)
        elif event.op == "replace":
            self._replace(event, trades)
        elif event.op == "clear":
            symbol = self._symbol(event.symbol)
            symbol.book = self._new_book()
            symbol.scale = 1
            symbol.source_of.clear()
            symbol.active.clear()
        else:  # MarketEvent admits no other op
            raise ValueError(f"unsupported op {event.op!r}")

    def _new(self, event: MarketEvent, trades: list[TradeFill]) -> None:
        # tracebook creates the symbol's book before it validates anything.
        symbol = self._symbol(event.symbol)
        if event.order_id in symbol.active:
            raise Rejected("DUPLICATE_ORDER_ID", f"Order {event.order_id} is already active")
        market = event.order_type is OrderType.MARKET
        ticks = None if market else self._ticks(event.price, "INVALID_ORDER")
        qty = event.quantity
        if qty is None or not math.isfinite(qty) or qty <= _QTY_EPSILON:
            raise Rejected("INVALID_ORDER", f"Order quantity must be positive: {qty!r}")
        if not _INT64_MIN <= event.owner <= _INT64_MAX:
            raise Rejected("INVALID_ORDER", f"Order owner id is out of range: {event.owner}")
        units = self._units(symbol, qty, "INVALID_ORDER")
        key = self._key(symbol, event.order_id)
        side = BID if event.side is OrderSide.BUY else ASK
        owner = self._handle(event.owner)
        try:
            if market:
                symbol.book.market(oid=key, side=side, qty=units, owner=owner)
            else:
                symbol.book.submit(
                    oid=key,
                    side=side,
                    price=ticks,
                    qty=units,
                    owner=owner,
                    tif=_TIF[event.order_type],
                )
        except ValueError as exc:  # the engine's own validation has the last word
            raise Rejected("INVALID_ORDER", str(exc)) from exc
        self._collect(symbol, trades)

    def _cancel(self, event: MarketEvent) -> None:
        symbol, key = self._resting(event)
        if not symbol.book.cancel(key):
            raise Rejected("ORDER_NOT_ACTIVE", f"Order {event.order_id} is not active")

    def _reduce(self, event: MarketEvent) -> None:
        symbol, key = self._resting(event)
        qty = event.quantity
        if qty is None or not math.isfinite(qty) or qty <= 0:
            raise Rejected("INVALID_ORDER", f"reduce requires a positive quantity: {qty!r}")
        units = self._units(symbol, qty, "INVALID_ORDER")
        try:
            live = symbol.book.reduce(key, units)
        except ValueError as exc:  # more than the remainder: the engine refuses
            raise Rejected("INVALID_ORDER", str(exc)) from exc
        if not live:
            raise Rejected("ORDER_NOT_ACTIVE", f"Order {event.order_id} is not active")

    def _replace(self, event: MarketEvent, trades: list[TradeFill]) -> None:
        symbol, key = self._resting(event)
        ticks = None
        if event.price is not None:
            ticks = self._ticks(event.price, "INVALID_REPLACEMENT")
        units = None
        if event.quantity is not None:
            qty = event.quantity
            if not math.isfinite(qty) or qty <= 0:
                raise Rejected("INVALID_REPLACEMENT", f"Order quantity must be positive: {qty}")
            units = self._units(symbol, qty, "INVALID_REPLACEMENT")
        # Missing fields default to the current price and remaining quantity (read after
        # _units, which may have rescaled the book).
        current = symbol.book.order(key)
        if current is None:
            raise Rejected("ORDER_NOT_ACTIVE", f"Order {event.order_id} is not active")
        ticks = current.price if ticks is None else ticks
        units = current.qty if units is None else units
        # A replacement is a new engine order under the same source id.
        new_key = self._key(symbol, event.order_id)
        try:
            fills = symbol.book.replace(key, new_key, ticks, units)
        except ValueError as exc:
            raise Rejected("INVALID_REPLACEMENT", str(exc)) from exc
        if fills < 0:
            raise Rejected("ORDER_NOT_ACTIVE", f"Order {event.order_id} is not active")
        self._collect(symbol, trades)

    # -- translation ----------------------------------------------------------------

    def _new_book(self) -> Book:
        return Book(accounts=None, stp=self._stp)

    def _symbol(self, name: str) -> _Symbol:
        symbol = self._symbols.get(name)
        if symbol is None:
            symbol = self._symbols[name] = _Symbol(name, self._new_book())
        return symbol

    def _resting(self, event: MarketEvent) -> tuple[_Symbol, int]:
        symbol = self._symbols.get(event.symbol)
        key = symbol.active.get(event.order_id) if symbol is not None else None
        if symbol is None or key is None:
            raise Rejected("ORDER_NOT_ACTIVE", f"Order {event.order_id} is not active")
        return symbol, key

    def _key(self, symbol: _Symbol, source_id: int) -> int:
        # Fresh keys, never reused: a replacement needs a new one while its source id
        # stays, and fills must map back even for orders that never rest.
        key = self._next_key
        self._next_key += 1
        symbol.source_of[key] = source_id
        return key

    def _handle(self, owner: int) -> int:
        handle = None if owner == NO_OWNER else self._handles.get(owner)
        if handle is None:
            if self._next_handle > _UINT32_MAX:
                raise RuntimeError("owner handles exhausted")
            handle = self._next_handle
            self._next_handle += 1
            # Anonymous orders get a fresh handle each, so they never self-match.
            if owner != NO_OWNER:
                self._handles[owner] = handle
                self._owners[handle] = owner
        return handle

    def _ticks(self, price: float | None, reason: str) -> int:
        if price is None or not math.isfinite(price) or price <= 0:
            raise Rejected(reason, f"Order price must be positive: {price!r}")
        # tracebook snaps in binary64 with ties to even (1.015 -> 1.01 at tick 0.01).
        ticks = round(price / self._tick)
        if ticks <= 0:
            raise Rejected(reason, "Order price snaps to a non-positive tick")
        if ticks > MAX_PRICE:
            raise Rejected(reason, f"Order price {price} is above the engine's MAX_PRICE ticks")
        return ticks

    def _units(self, symbol: _Symbol, qty: float, reason: str) -> int:
        """``qty`` in the symbol's engine units, rescaling the book if it needs a finer unit."""
        # The decimal the trace meant (shortest repr), at tracebook's output precision.
        exact = Fraction(canonical_decimal(qty, self._qty_places))
        if exact <= 0:
            raise Rejected(reason, f"quantity {qty!r} rounds to zero")
        if symbol.scale % exact.denominator:
            self._rescale(symbol, exact, reason)
        units = exact * symbol.scale
        if units > MAX_QTY:
            raise Rejected(reason, f"quantity {qty!r} is above the engine's MAX_QTY units")
        return int(units)

    def _rescale(self, symbol: _Symbol, incoming: Fraction, reason: str) -> None:
        """Move the book to the smallest scale that makes every quantity an integer.

        The engine caps quantities at MAX_QTY (2**31 - 1), too few for a fixed
        10**quantity_decimal_places grid, so each book gets the coarsest unit its live
        orders and the incoming quantity allow. Resting orders are resubmitted into a
        fresh book in priority order: the book is never crossed between events, so this
        trades nothing and keeps every queue position.
        """
        orders = [(side, symbol.book.orders(side)) for side in (BID, ASK)]
        old = symbol.scale
        scale = incoming.denominator
        for _side, rows in orders:
            for order in rows:
                scale = math.lcm(scale, Fraction(order.qty, old).denominator)
        if any(Fraction(o.qty * scale, old) > MAX_QTY for _s, rows in orders for o in rows):
            raise Rejected(reason, "quantities too fine for the engine's MAX_QTY units")
        book = self._new_book()
        for side, rows in orders:
            for order in rows:
                book.submit(
                    oid=order.oid,
                    side=side,
                    price=order.price,
                    qty=order.qty * scale // old,
                    owner=order.owner,
                    tif=GTC,
                )
        if book.take_fills() or len(book) != len(symbol.book):
            raise RuntimeError("rescaling the book changed it")
        symbol.book, symbol.scale = book, scale

    def _price_str(self, ticks: int) -> str:
        text = self._price_text.get(ticks)
        if text is None:
            # The reference's canonical grid price for this tick, digit for digit.
            text = canonical_decimal(round(ticks * self._tick, self._places))
            self._price_text[ticks] = text
        return text

    def _qty_str(self, units: int, scale: int) -> str:
        # scale is 2**a * 5**b, so the quotient is an exact decimal.
        return canonical_decimal(Decimal(units) / scale, self._qty_places)

    def _collect(self, symbol: _Symbol, trades: list[TradeFill]) -> None:
        for fill in symbol.book.take_fills():
            trades.append(
                TradeFill(
                    symbol=symbol.name,
                    buy_order_id=symbol.source_of[fill.bid],
                    sell_order_id=symbol.source_of[fill.ask],
                    price=self._price_str(fill.price),
                    quantity=self._qty_str(fill.qty, symbol.scale),
                )
            )

    def _refresh(self, symbol: _Symbol) -> None:
        """Rebuild the symbol's id maps and snapshot entry from what the engine holds."""
        source_of: dict[int, int] = {}
        sides = []
        for side in (BID, ASK):
            rows = []
            for order in symbol.book.orders(side):
                source_id = symbol.source_of[order.oid]
                source_of[order.oid] = source_id
                rows.append(
                    {
                        "order_id": source_id,
                        "price": self._price_str(order.price),
                        "remaining_quantity": self._qty_str(order.qty, symbol.scale),
                        "owner": self._owners.get(order.owner, NO_OWNER),
                        "order_type": "LIMIT",
                    }
                )
            sides.append(rows)
        symbol.source_of = source_of
        symbol.active = {source_id: key for key, source_id in source_of.items()}
        symbol.state = {"symbol": symbol.name, "bids": sides[0], "asks": sides[1]}
        symbol.count = len(source_of)

    def _state(self) -> dict:
        return {"books": [self._symbols[name].state for name in sorted(self._symbols)]}


def main() -> None:
    """Serve the adapter on stdin/stdout until tracebook sends ``finish``."""
    raise SystemExit(serve_stdio(WattmeshAdapter))


if __name__ == "__main__":
    main()
