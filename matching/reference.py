"""A small pure-Python reference model of the matching rules, used only by tests.

It transcribes docs/design.md "Market rules" and docs/matching.md literally, with the same
per-order API as the Cython engine (`Book`, `Markets`, `CallAuction`, `Accounts`), so that
tests can run the same stream through both and compare every fill, book and quote. It is
written to be read against the docs, not to be fast: each rule is one short method, and
nothing here knows how the engine is built (no cursor, no batching, no version counters).

The rules of the continuous book, as docs/matching.md states them:

- Priority: bids by price descending, asks by price ascending, then arrival.
- An owner "can execute" a resting order when it can trade at least 1 Wh at the order's
  own price: an ask's owner has energy, a bid's owner has Bmax headroom and money for 1 Wh.
- The walk: an incoming order meets resting orders in priority while prices cross, each
  fill at the resting price. At each one, in this order: if its own owner cannot execute
  at that price, it stops; if the resting owner cannot execute, that order is skipped and
  stays untouched; then self-trade prevention looks at the owners. It stays on a resting
  order while prices cross and both owners can still execute.
- A fill between different owners is capped by both owners' limits (energy, headroom,
  money at the trade price). A self-match (under `none`) moves nothing, so no cap binds
  it: one fill of the smaller remaining quantity.
- Re-crossing: while the best executable bid crosses the best executable ask, they trade
  at the price of the earlier one; the later one is the aggressor (and the incoming order
  for self-trade prevention).
- After every accepted event its book re-crosses; in a `Markets`, then every book by
  market name, repeated until a whole pass makes no fill. Before an accepted event,
  changes made with `Accounts.set` take effect the same way. A refused event (bad input,
  an unknown or duplicate id) changes nothing, and a FOK that cannot fill trades nothing.
- `submit`, `market` and `replace` return the number of fills the call produced,
  re-crossing included (in a `Markets`, in every book).
- Events are numbered from 1, every call counting, refused or not; in a `Markets` the
  books share one numbering. (This model keeps the number to compare the fill arrays.)

The call auction:

- In the call auction a household's asks and bids commit independently from the balances
  at the close (selling energy does not add Bmax headroom for its bids in the same
  clearing), and an order dropped from the walk by self-trade prevention does not hand its
  committed quantity to the household's later orders.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from sortedcontainers import SortedKeyList

from .types import Clearing, Fill, Quote, RestingOrder

INT64_MAX = 2**63 - 1
MAX_PRICE = 2**31 - 1  # the engine's price limit (wattmesh.matching.MAX_PRICE)

BID, ASK = 0, 1
GTC, IOC, FOK = 0, 1, 2
STP_MODES = ("none", "cancel-resting", "cancel-incoming")


def _smallest(*limits: int | None) -> int | None:
    """The smallest of the limits that exist; None means no limit at all."""
    present = [x for x in limits if x is not None]
    return min(present) if present else None


class RefAccounts:
    """Balances per owner: energy `E` (Wh), money `M` (nano), cap `bmax` (Wh or None)."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[int, int, int | None]] = {}

    def set(self, owner: int, energy: int, money: int, bmax: int | None = None) -> None:
        """Create or overwrite an owner's account."""
        if energy < 0 or money < 0:
            raise ValueError("balances must not be negative")
        if bmax is not None and (bmax <= 0 or energy > bmax):
            raise ValueError("bmax must be positive and not below the energy balance")
        self.rows[owner] = (energy, money, bmax)

    def get(self, owner: int) -> tuple[int, int, int | None] | None:
        """(energy, money, bmax) of an owner, or None if it has no account."""
        return self.rows.get(owner)

    def owners(self) -> list[int]:
        """Owners that have an account, ascending."""
        return sorted(self.rows)

    def __contains__(self, owner: object) -> bool:
        return owner in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def sell_limit(self, owner: int) -> int | None:
        """Wh the owner can sell now: its energy, and no more than keeps its money within
        int64 at the highest price; None (no limit) without an account."""
        if owner not in self.rows:
            return None
        energy, money, _bmax = self.rows[owner]
        return min(energy, (INT64_MAX - money) // MAX_PRICE)

    def buy_limit(self, owner: int, price: int) -> int | None:
        """Wh the owner can buy now at `price`: Bmax headroom and what its money pays for."""
        if owner not in self.rows:
            return None
        energy, money, bmax = self.rows[owner]
        headroom = INT64_MAX - energy if bmax is None else max(0, bmax - energy)
        return min(headroom, money // price)

    def transfer(self, buyer: int | None, seller: int | None, qty: int, price: int) -> None:
        """Move `qty` Wh from seller to buyer and `qty * price` nano back; owners without
        an account (or None) are skipped."""
        if buyer in self.rows:
            energy, money, bmax = self.rows[buyer]
            self.rows[buyer] = (energy + qty, money - qty * price, bmax)
        if seller in self.rows:
            energy, money, bmax = self.rows[seller]
            self.rows[seller] = (energy - qty, money + qty * price, bmax)


def _limit(accounts: RefAccounts | None, side: int, owner: int, price: int) -> int | None:
    """Executable Wh for an order of `owner` on `side` trading at `price` (None: no limit)."""
    if accounts is None:
        return None
    if side == ASK:
        return accounts.sell_limit(owner)
    return accounts.buy_limit(owner, price)


def _check_order(side: int, price: int | None, qty: int) -> None:
    """Refuse a bad side, a non-positive quantity or a non-positive limit price."""
    if side not in (BID, ASK):
        raise ValueError(f"bad side {side!r}")
    if qty <= 0:
        raise ValueError("qty must be positive")
    if price is not None and price <= 0:
        raise ValueError("price must be positive")


# --------------------------------------------------------------------------------------
# Continuous double auction
# --------------------------------------------------------------------------------------


@dataclass
class _Order:
    oid: int
    side: int
    price: int | None  # None: a market order (no limit; never rests)
    qty: int  # what is left
    owner: int
    seq: int  # arrival number: the last priority key

    def public(self) -> RestingOrder:
        assert self.price is not None
        return RestingOrder(self.oid, self.side, self.price, self.qty, self.owner)


def _crosses(incoming: _Order, resting: _Order) -> bool:
    """True if the incoming order's limit reaches the resting order's price."""
    if incoming.price is None:
        return True
    if incoming.side == BID:
        return incoming.price >= resting.price
    return incoming.price <= resting.price


def _check_tif(tif: int) -> None:
    if tif not in (GTC, IOC, FOK):
        raise ValueError(f"bad tif {tif!r}")


class _Stream:
    """The event counter and the fills of one book, or of all the books of a Markets."""

    def __init__(self) -> None:
        self.event = 0
        self.fills: list[tuple[int, str | None, Fill]] = []  # (event, market, fill)


class RefBook:
    """Continuous double auction: one book, per-order calls, fills at the resting price."""

    def __init__(self, accounts: RefAccounts | None = None, stp: str = "none") -> None:
        if stp not in STP_MODES:
            raise ValueError(f"bad stp mode {stp!r}")
        self.accounts = accounts
        self.stp = stp
        self.name: str | None = None
        self._markets: RefMarkets | None = None
        self._stream = _Stream()
        # Priority: bids by price descending, asks by price ascending, then arrival.
        self._bids = SortedKeyList(key=lambda o: (-o.price, o.seq))
        self._asks = SortedKeyList(key=lambda o: (o.price, o.seq))
        self._live: dict[int, _Order] = {}
        self._seq = 0

    # ---- events ------------------------------------------------------------------------

    def submit(
        self, oid: int, side: int, price: int, qty: int, owner: int = 0, tif: int = GTC
    ) -> int:
        """A limit order: trade what crosses now, then rest (GTC) or drop (IOC) the rest."""
        before = self._count_event()
        _check_order(side, price, qty)
        _check_tif(tif)
        self._check_new(oid)
        self._catch_up()
        self._incoming(oid, side, price, qty, owner, tif)
        return len(self._stream.fills) - before

    def market(self, oid: int, side: int, qty: int, owner: int = 0, tif: int = IOC) -> int:
        """A market order: no price limit, never rests (IOC, or FOK if asked)."""
        if tif == GTC:
            raise ValueError("a market order is IOC or FOK")
        before = self._count_event()
        _check_order(side, None, qty)
        _check_tif(tif)
        self._check_new(oid)
        self._catch_up()
        self._incoming(oid, side, None, qty, owner, tif)
        return len(self._stream.fills) - before

    def cancel(self, oid: int) -> bool:
        """Remove a live order; False (and nothing changes) if it is not live."""
        self._count_event()
        if oid not in self._live:
            return False
        self._catch_up()
        if oid in self._live:  # outside changes may have filled it
            self._remove(self._live[oid])
        self._after_event()
        return True

    def reduce(self, oid: int, by: int) -> bool:
        """Take `by` Wh off a live order, keeping its priority; all of it cancels the order."""
        self._count_event()
        if oid not in self._live:
            return False
        if by <= 0 or by > self._live[oid].qty:
            raise ValueError("reduce amount must be in 1..the remaining quantity")
        self._catch_up()
        order = self._live.get(oid)
        if order is not None:
            order.qty -= min(by, order.qty)
            if order.qty == 0:
                self._remove(order)
        self._after_event()
        return True

    def replace(self, oid: int, new_oid: int, price: int, qty: int) -> int:
        """Cancel `oid` and submit `new_oid` (same side and owner, GTC); -1 if not live."""
        before = self._count_event()
        if oid not in self._live:
            return -1
        old = self._live[oid]
        _check_order(old.side, price, qty)
        if new_oid != oid:
            self._check_new(new_oid)
        self._catch_up()
        if oid in self._live:
            self._remove(old)
        self._incoming(new_oid, old.side, price, qty, old.owner, GTC)
        return len(self._stream.fills) - before

    def uncross(self) -> int:
        """Apply account changes made between events now; returns the number of fills."""
        before = len(self._stream.fills)
        if self._markets is not None:
            self._markets.uncross()
        else:
            self._uncross()
        return len(self._stream.fills) - before

    # ---- reading -----------------------------------------------------------------------

    def take_fills(self) -> list[Fill]:
        """The fills since the last call, oldest first."""
        if self._markets is not None:
            raise ValueError("this book is in a Markets: take the fills from the Markets")
        fills, self._stream.fills = self._stream.fills, []
        return [fill for _event, _market, fill in fills]

    def take_fill_events(self) -> list[tuple[int, Fill]]:
        """The fills since the last call with the number of the event that caused each."""
        if self._markets is not None:
            raise ValueError("this book is in a Markets: take the fills from the Markets")
        fills, self._stream.fills = self._stream.fills, []
        return [(event, fill) for event, _market, fill in fills]

    @property
    def pending_fills(self) -> int:
        return len(self._stream.fills)

    def orders(self, side: int) -> list[RestingOrder]:
        """The live orders of one side in priority order."""
        return [o.public() for o in self._book_side(side)]

    def order(self, oid: int) -> RestingOrder | None:
        """The live order `oid`, or None."""
        order = self._live.get(oid)
        return None if order is None else order.public()

    def quotes(self) -> Quote:
        """Best bid and ask over all orders, and the best executable bid and ask."""
        best_bid = self._bids[0].price if self._bids else None
        best_ask = self._asks[0].price if self._asks else None
        exec_bid = self._best_executable(self._bids)
        exec_ask = self._best_executable(self._asks)
        return Quote(
            best_bid,
            best_ask,
            None if exec_bid is None else exec_bid.price,
            None if exec_ask is None else exec_ask.price,
        )

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, oid: object) -> bool:
        return oid in self._live

    # ---- the rules ---------------------------------------------------------------------

    def _count_event(self) -> int:
        """Every call is one event, refused or not; returns the fills before it."""
        self._stream.event += 1
        return len(self._stream.fills)

    def _check_new(self, oid: int) -> None:
        if oid in self._live:
            raise ValueError(f"order id {oid} is already live")

    def _catch_up(self) -> None:
        """Before an accepted event, changes made with `Accounts.set` take effect."""
        if self._markets is not None:
            self._markets._recross_all()
        else:
            self._uncross()

    def _after_event(self) -> None:
        """After an accepted event: this book re-crosses, then (in a Markets) every book
        by market name until none changes."""
        self._uncross()
        if self._markets is not None:
            self._markets._recross_all()

    def _incoming(
        self, oid: int, side: int, price: int | None, qty: int, owner: int, tif: int
    ) -> None:
        saved = self._snapshot() if tif == FOK else None
        self._seq += 1
        order = _Order(oid, side, price, qty, owner, self._seq)
        cancelled_by_stp = self._walk(order)
        if tif == FOK and (order.qty > 0 or cancelled_by_stp):
            self._restore(saved)  # a FOK that cannot fill changes nothing at all
            return
        if order.qty > 0 and tif == GTC and price is not None and not cancelled_by_stp:
            self._insert(order)
        self._after_event()

    def _walk(self, incoming: _Order) -> bool:
        """Trade `incoming` against the other side in priority, each fill at the resting
        order's price, staying on a resting order while both owners can still execute.
        Returns True if self-trade prevention cancelled the rest of the incoming order."""
        for resting in list(self._book_side(1 - incoming.side)):
            if incoming.qty == 0 or not _crosses(incoming, resting):
                return False
            while incoming.qty > 0 and resting.qty > 0:
                price = resting.price
                own = _limit(self.accounts, incoming.side, incoming.owner, price)
                if own == 0:
                    return False  # its own owner cannot execute more: it stops here
                other = _limit(self.accounts, resting.side, resting.owner, price)
                if other == 0:
                    break  # skipped: stays untouched, and self-trade prevention ignores it
                if resting.owner == incoming.owner:
                    if self.stp == "cancel-resting":
                        self._remove(resting)
                        break
                    if self.stp == "cancel-incoming":
                        return True
                    # a self-match moves nothing, so no cap binds it
                    self._trade(incoming, resting, price, min(incoming.qty, resting.qty), False)
                else:
                    qty = _smallest(incoming.qty, resting.qty, own, other)
                    self._trade(incoming, resting, price, qty, True)
        return False

    def _uncross(self) -> None:
        """While the best executable bid crosses the best executable ask, trade them at
        the earlier order's price; the later one is the aggressor (and, for self-trade
        prevention, the incoming order)."""
        while True:
            bid = self._best_executable(self._bids)
            ask = self._best_executable(self._asks)
            if bid is None or ask is None or bid.price < ask.price:
                return
            earlier, later = (bid, ask) if bid.seq < ask.seq else (ask, bid)
            price = earlier.price
            if bid.owner == ask.owner:
                if self.stp == "cancel-resting":
                    self._remove(earlier)
                elif self.stp == "cancel-incoming":
                    self._remove(later)
                else:
                    self._trade(later, earlier, price, min(bid.qty, ask.qty), False)
                continue
            qty = _smallest(
                bid.qty,
                ask.qty,
                _limit(self.accounts, BID, bid.owner, price),
                _limit(self.accounts, ASK, ask.owner, price),
            )
            self._trade(later, earlier, price, qty, True)

    def _best_executable(self, orders: SortedKeyList) -> _Order | None:
        """The first order in priority whose owner can execute at the order's own price."""
        for order in orders:
            if _limit(self.accounts, order.side, order.owner, order.price) != 0:
                return order
        return None

    def _trade(self, taker: _Order, maker: _Order, price: int, qty: int, moves: bool) -> None:
        """Record a fill (the taker is the aggressor); `moves`: settle it into the accounts
        (a self-match moves nothing)."""
        assert qty > 0, "a fill of nothing: a rule let a non-executable pair through"
        bid, ask = (taker, maker) if taker.side == BID else (maker, taker)
        fill = Fill(bid.oid, ask.oid, price, qty, bid.owner, ask.owner, taker.side)
        self._stream.fills.append((self._stream.event, self.name, fill))
        if moves and self.accounts is not None:
            self.accounts.transfer(bid.owner, ask.owner, qty, price)
        for order in (taker, maker):
            order.qty -= qty
            if order.qty == 0 and self._live.get(order.oid) is order:
                self._remove(order)

    # ---- storage -----------------------------------------------------------------------

    def _book_side(self, side: int) -> SortedKeyList:
        return self._bids if side == BID else self._asks

    def _insert(self, order: _Order) -> None:
        self._live[order.oid] = order
        self._book_side(order.side).add(order)

    def _remove(self, order: _Order) -> None:
        del self._live[order.oid]
        self._book_side(order.side).remove(order)

    def _snapshot(self) -> tuple:
        rows = None if self.accounts is None else dict(self.accounts.rows)
        book = copy.deepcopy((self._bids, self._asks, self._live, self._seq))
        return book, rows, len(self._stream.fills)

    def _restore(self, saved: tuple) -> None:
        (self._bids, self._asks, self._live, self._seq), rows, n_fills = saved
        del self._stream.fills[n_fills:]
        if self.accounts is not None:
            self.accounts.rows = rows


class RefMarkets:
    """The books of several markets over one accounts: one event numbering, one stream
    of fills, and re-crossing across books by market name after every accepted event."""

    def __init__(self, accounts: RefAccounts, stp: str = "none") -> None:
        if stp not in STP_MODES:
            raise ValueError(f"bad stp mode {stp!r}")
        self.accounts = accounts
        self.stp = stp
        self._stream = _Stream()
        self._books: dict[str, RefBook] = {}

    def add(self, name: str) -> RefBook:
        """A new, empty book for market `name`."""
        if not isinstance(name, str) or not name or name in self._books:
            raise ValueError(f"bad or repeated market name {name!r}")
        book = RefBook(self.accounts, self.stp)
        book.name = name
        book._markets = self
        book._stream = self._stream
        self._books[name] = book
        return book

    def __getitem__(self, name: str) -> RefBook:
        return self._books[name]

    @property
    def names(self) -> list[str]:
        return list(self._books)

    def uncross(self) -> int:
        before = len(self._stream.fills)
        self._recross_all()
        return len(self._stream.fills) - before

    def take_fills(self) -> list[tuple[str, Fill]]:
        fills, self._stream.fills = self._stream.fills, []
        return [(market, fill) for _event, market, fill in fills]  # type: ignore[misc]

    def take_fill_events(self) -> list[tuple[int, str, Fill]]:
        fills, self._stream.fills = self._stream.fills, []
        return fills  # type: ignore[return-value]

    def _recross_all(self) -> None:
        """Every book re-crosses, by market name, until a whole pass makes no fill."""
        while True:
            before = len(self._stream.fills)
            for name in sorted(self._books):
                self._books[name]._uncross()
            if len(self._stream.fills) == before:
                return


# --------------------------------------------------------------------------------------
# Call auction
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AuctionOrder:
    oid: int
    side: int
    price: int
    qty: int
    owner: int
    ts: int

    def priority(self) -> tuple[int, int, int]:
        """Bids by price descending, asks by price ascending, then ts, then oid."""
        return (-self.price if self.side == BID else self.price, self.ts, self.oid)


class RefCallAuction:
    """Call auction: collect orders, then clear them all at one price."""

    def __init__(self, accounts: RefAccounts | None = None, stp: str = "none") -> None:
        if stp not in STP_MODES:
            raise ValueError(f"bad stp mode {stp!r}")
        self.accounts = accounts
        self.stp = stp
        self._orders: dict[int, _AuctionOrder] = {}

    def add(self, oid: int, side: int, price: int, qty: int, owner: int = 0, ts: int = 0) -> None:
        """Add a pending order."""
        _check_order(side, price, qty)
        if oid in self._orders:
            raise ValueError(f"order id {oid} is already pending")
        self._orders[oid] = _AuctionOrder(oid, side, price, qty, owner, ts)

    def cancel(self, oid: int) -> bool:
        """Remove a pending order; False if there is none."""
        return self._orders.pop(oid, None) is not None

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, oid: object) -> bool:
        return oid in self._orders

    def orders(self, side: int) -> list[RestingOrder]:
        """Pending orders of one side in priority order."""
        return [RestingOrder(o.oid, o.side, o.price, o.qty, o.owner) for o in self._sorted(side)]

    def quotes(self) -> Quote:
        """Best bid and ask over the pending orders, and the best executable ones."""
        bids, asks = self._sorted(BID), self._sorted(ASK)
        executable = self._executable_quantities(bids, asks)
        exec_bids = [o for o in bids if executable[o.oid] > 0]
        exec_asks = [o for o in asks if executable[o.oid] > 0]
        return Quote(
            bids[0].price if bids else None,
            asks[0].price if asks else None,
            exec_bids[0].price if exec_bids else None,
            exec_asks[0].price if exec_asks else None,
        )

    def clear(self) -> Clearing:
        """Clear all pending orders at one price, apply the fills, empty the auction."""
        bids, asks = self._sorted(BID), self._sorted(ASK)
        executable = self._executable_quantities(bids, asks)
        pairs = self._walk(
            [o for o in bids if executable[o.oid] > 0],
            [o for o in asks if executable[o.oid] > 0],
            executable,
        )
        price = None
        if pairs:
            lowest_bid = min(bid.price for bid, _ask, _qty in pairs)
            highest_ask = max(ask.price for _bid, ask, _qty in pairs)
            price = (lowest_bid + highest_ask) // 2
        fills = []
        for bid, ask, qty in pairs:
            fills.append(Fill(bid.oid, ask.oid, price, qty, bid.owner, ask.owner, None))
            if self.accounts is not None:
                self.accounts.transfer(bid.owner, ask.owner, qty, price)
        result = Clearing(
            price=price,
            fills=fills,
            volume=sum(f.qty for f in fills),
            orders=len(self._orders),
            executable_orders=sum(1 for q in executable.values() if q > 0),
        )
        self._orders = {}
        return result

    def _sorted(self, side: int) -> list[_AuctionOrder]:
        return sorted(
            (o for o in self._orders.values() if o.side == side), key=_AuctionOrder.priority
        )

    def _executable_quantities(
        self, bids: list[_AuctionOrder], asks: list[_AuctionOrder]
    ) -> dict[int, int]:
        """Per order, in priority order: what its household has left uncommitted.

        An ask gets at most the seller's remaining energy; a bid at most the buyer's
        remaining Bmax headroom and what the remaining money pays for at the bid's own
        price. Committing is done as if the order had traded at its own price, on a
        scratch copy of the balances; asks and bids use separate copies (see module doc)."""
        result: dict[int, int] = {}
        for orders in (asks, bids):
            scratch = None
            if self.accounts is not None:
                scratch = RefAccounts()
                scratch.rows = dict(self.accounts.rows)
            for order in orders:
                qty = _smallest(order.qty, _limit(scratch, order.side, order.owner, order.price))
                result[order.oid] = qty
                if scratch is not None and order.side == ASK:
                    scratch.transfer(None, order.owner, qty, order.price)
                elif scratch is not None:
                    scratch.transfer(order.owner, None, qty, order.price)
        return result

    def _walk(
        self,
        bids: list[_AuctionOrder],
        asks: list[_AuctionOrder],
        executable: dict[int, int],
    ) -> list[tuple[_AuctionOrder, _AuctionOrder, int]]:
        """Pair executable bids and asks in priority while bid price >= ask price."""
        left = dict(executable)
        pairs = []
        i = j = 0
        while i < len(bids) and j < len(asks) and bids[i].price >= asks[j].price:
            bid, ask = bids[i], asks[j]
            if bid.owner == ask.owner and self.stp != "none":
                # cancel-resting drops the earlier order (by ts, oid), cancel-incoming the later
                earlier, later = sorted((bid, ask), key=lambda o: (o.ts, o.oid))
                dropped = earlier if self.stp == "cancel-resting" else later
                if dropped is bid:
                    i += 1
                else:
                    j += 1
                continue
            qty = min(left[bid.oid], left[ask.oid])
            pairs.append((bid, ask, qty))
            left[bid.oid] -= qty
            left[ask.oid] -= qty
            if left[bid.oid] == 0:
                i += 1
            if left[ask.oid] == 0:
                j += 1
        return pairs
