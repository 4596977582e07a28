"""What the API's reads show (docs/api.md, "Reads").

JSON-ready dicts in the files' units: energy in Wh, money in nano-currency, prices in
micro-currency per kWh, times in ms since the epoch (community time). Reads of the node's
state (status, balance, book, open orders) are functions of the
:class:`~wattmesh.exchange.node.household.HouseholdNode`, quick, on its own trio thread.
Reads that walk the ledger (trades, intervals, readings, savings, verification) are
functions of a :class:`Ledger`, which :class:`LedgerReader` runs in worker threads.
Nothing here changes anything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from wattmesh.exchange import clock as clock_rules
from wattmesh.exchange.demo.accounts import fold_ledger
from wattmesh.exchange.node.household import HouseholdNode
from wattmesh.exchange.node.settle_interval import open_book
from wattmesh.settlement.ledger import Ledger, LedgerEntry
from wattmesh.settlement.records import Cancel, Order

__all__ = [
    "Page",
    "LedgerReader",
    "balance",
    "book",
    "clock",
    "intervals",
    "open_interval",
    "own_orders",
    "readings",
    "savings",
    "status",
    "trades",
    "verification",
]

MAX_PAGE = 500  # items per page of trades, intervals and readings


def open_interval(node: HouseholdNode) -> int:
    """The interval orders go to now: the next one whose gate is still ahead."""
    c = node.community
    now = c.now_ms()
    return max(c.start_ms, clock_rules.open_interval(now, c.interval_ms))


def clock(node: HouseholdNode) -> dict[str, Any]:
    """Community time, the open interval and the wall seconds to its gate."""
    c = node.community
    now = c.now_ms()
    t = open_interval(node)
    return {"now": now, "interval_ms": c.interval_ms, "open_interval": t,
            "gate_in_s": round(c.wall_seconds(max(0, t - now)), 3)}  # fmt: skip


# What a bot needs to know of the community's rules (the community file's fields).
_RULES = ("name", "market", "interval_ms", "grace_ms", "price_min", "price_max",
          "retail_price", "feedin_price", "fee_rate_ppm", "storage_rate", "horizon",
          "max_batch", "max_orders_per_interval", "clock_speed", "currency")  # fmt: skip


def status(node: HouseholdNode) -> dict[str, Any]:
    """The node's status (as ``status.json``), with its peers, the community's market
    rules and the clock."""
    s = node.status.to_dict()
    peers = sorted(node.p2p.peers) if node.p2p is not None else []
    c = node.community
    rules = {k: getattr(c, k) for k in _RULES}
    names = {m.peer_id: m.name for m in c.members if m.name is not None}
    return {**s, "peers": len(peers), "peer_ids": peers, "members": len(c.members),
            "names": names, "community": rules, "clock": clock(node)}  # fmt: skip


def _open_orders(
    node: HouseholdNode, intervals: list[int], signer: str | None = None
) -> tuple[dict[int, list[Order]], dict[int, list[Cancel]]]:
    """Held orders and cancels of the unsettled ``intervals``, by interval; with
    ``signer``, only those it signed (an order and its cancels are signed by its owner),
    so that the others are not read back and parsed."""
    orders: dict[int, list[Order]] = defaultdict(list)
    cancels: dict[int, list[Cancel]] = defaultdict(list)
    for t in intervals:
        for m in node.store.pending(t, signer=signer):
            orders[t].extend(m.orders())
            cancels[t].extend(Cancel(oid, m.signer, m.ts) for oid in m.cancelled())
    return orders, cancels


def _order_dict(o: Order) -> dict[str, Any]:
    return {"id": o.id, "side": o.side, "price": o.price, "qty": o.qty, "owner": o.owner,
            "ts": o.ts, "interval": o.interval, "market": o.market, "tif": o.tif}  # fmt: skip


def own_orders(node: HouseholdNode) -> list[dict[str, Any]]:
    """The household's orders of unsettled intervals that are not cancelled."""
    orders, cancels = _open_orders(node, node.store.open_intervals(), node.peer_id)
    out = []
    for t in sorted(orders):
        gone = {c.id for c in cancels[t] if c.owner == node.peer_id}
        out += [_order_dict(o) for o in sorted(orders[t], key=lambda o: (o.ts, o.id))
                if o.owner == node.peer_id and o.id not in gone]  # fmt: skip
    return out


def balance(node: HouseholdNode) -> dict[str, Any]:
    """E (Wh held), M (money), Bmax, the headroom below it, and what the household's open
    orders commit: energy offered by its asks, money its bids would pay at their limits."""
    me = node.peer_id
    b = node.ledger.balances().get(me, {"energy": 0, "money": 0})
    bmax = node.ledger.member_caps().get(me, 0)
    mine = own_orders(node)
    return {
        "owner": me,
        "energy": b["energy"],
        "money": b["money"],
        "bmax": bmax,
        "headroom": max(0, bmax - b["energy"]),
        "committed_energy": sum(o["qty"] for o in mine if o["side"] == "ask"),
        "committed_money": sum(o["qty"] * o["price"] for o in mine if o["side"] == "bid"),
    }


def book(node: HouseholdNode, interval: int | None = None) -> dict[str, Any]:
    """The call auction of ``interval`` (the open one by default) as it stands: every
    order entering it, depth per side (cumulative Wh at each price level, best first), and
    the plain quote beside the executable one (docs/matching.md, "Call auction")."""
    t = open_interval(node) if interval is None else interval
    orders, cancels = _open_orders(node, [t])
    view = open_book(node.ledger, t, orders.get(t, []), cancels.get(t, []),
                     market=node.community.market)  # fmt: skip
    depth: dict[str, list[dict[str, int]]] = {}
    for side, best_first in (("bid", True), ("ask", False)):
        levels: dict[int, int] = defaultdict(int)
        for o in view.orders:
            if o.side == side:
                levels[o.price] += o.qty
        total, rows = 0, []
        for price in sorted(levels, reverse=best_first):
            total += levels[price]
            rows.append({"price": price, "qty": levels[price], "cumulative": total})
        depth[side] = rows
    q = view.quote
    ranked = sorted(view.orders, key=lambda o: (o.side, -o.price if o.side == "bid" else o.price,
                                                o.ts, o.id))  # fmt: skip
    return {
        "interval": t,
        "quote": {"bid": q.bid, "ask": q.ask},
        "executable_quote": {"bid": q.exec_bid, "ask": q.exec_ask},
        "depth": depth,
        "orders": [_order_dict(o) for o in ranked],
    }


@dataclass(frozen=True)
class Page:
    """Which entries a paged read wants: the oldest ``limit`` after entry ``after``, or,
    with ``latest`` or ``before``, the newest ``limit`` below entry ``before`` (below the
    head with ``latest``). Either way the items come oldest first; ``next`` (forward) or
    ``prev`` (backward) is the cursor of the following page, None when there is none."""

    after: int = 0
    before: int | None = None
    latest: bool = False
    limit: int = 100

    @property
    def backward(self) -> bool:
        return self.latest or self.before is not None


def _select(ledger: Ledger, kind: str, keep: Callable[[LedgerEntry], bool],
            page: Page) -> tuple[list[LedgerEntry], bool]:  # fmt: skip
    """The page's entries of ``kind`` that ``keep`` takes, oldest first, and whether
    there are more beyond them."""
    found: list[LedgerEntry] = []
    if page.backward:
        cursor = page.before
        while len(found) <= page.limit:
            chunk = ledger.entries_before(cursor, kind, 500)
            if not chunk:
                break
            found += [e for e in chunk if keep(e)]
            cursor = chunk[-1].seq
        return found[: page.limit][::-1], len(found) > page.limit
    for e in ledger.entries(since=page.after + 1, kind=kind):
        if keep(e):
            found.append(e)
            if len(found) > page.limit:
                break
    return found[: page.limit], len(found) > page.limit


def _paged(items: list[dict[str, Any]], more: bool, page: Page) -> dict[str, Any]:
    forward = more and items and not page.backward
    backward = more and items and page.backward
    return {"items": items, "next": items[-1]["entry"] if forward else None,
            "prev": items[0]["entry"] if backward else None}  # fmt: skip


# -- reads that walk the ledger: plain functions of a Ledger, run by LedgerReader --------


def trades(ledger: Ledger, page: Page, me: str, *, interval: int | None = None,
           mine: bool = False) -> dict[str, Any]:  # fmt: skip
    """Trade entries of one interval or all, of household ``me`` only with ``mine``."""

    def keep(e: LedgerEntry) -> bool:
        b = e.body
        return (interval is None or b["interval"] == interval) and (
            not mine or me in (b["buyer"], b["seller"]))  # fmt: skip

    found, more = _select(ledger, "trade", keep, page)
    return _paged([{"entry": e.seq, **e.body} for e in found], more, page)


def intervals(ledger: Ledger, page: Page, *, interval: int | None = None,
              mismatched: frozenset[int] = frozenset(),
              disputed: frozenset[int] = frozenset()) -> dict[str, Any]:  # fmt: skip
    """Settled intervals (each paged by its close's entry): price, volume, trades, digest,
    and whether the peers' digests agreed with ours (``mismatched``, ``disputed``: the
    node's status)."""
    closes, more = _select(
        ledger, "interval_close",
        lambda e: interval is None or e.body["interval"] == interval, page)  # fmt: skip
    if not closes:
        return _paged([], False, page)
    # The trades of the selected intervals lie between the close before the first one
    # and the last one (each interval's trades are written just before its close).
    before_first = ledger.entries_before(closes[0].seq, "interval_close", 1)
    start = before_first[0].seq if before_first else 0
    wanted = {e.body["interval"] for e in closes}
    stats = {t: {"price": None, "volume": 0, "trades": 0} for t in wanted}
    for e in ledger.entries(since=start + 1, kind="trade"):
        if e.seq > closes[-1].seq:
            break
        s = stats.get(e.body["interval"])
        if s is not None:
            s["price"] = e.body["price"]
            s["volume"] += e.body["qty"]
            s["trades"] += 1
    items = []
    for e in closes:
        t = e.body["interval"]
        agreement = "mismatch" if t in mismatched else (
            "disputed" if t in disputed else "agreed")  # fmt: skip
        items.append({"entry": e.seq, "interval": t, **stats[t], "digest": e.hash.hex(),
                      "agreement": agreement})  # fmt: skip
    return _paged(items, more, page)


def readings(ledger: Ledger, page: Page, meters: frozenset[str]) -> dict[str, Any]:
    """The readings of ``meters`` (the household's) as the ledger applied them."""
    found, more = _select(ledger, "reading", lambda e: e.body["meter"] in meters, page)
    fields = ("meter", "start", "end", "produced", "consumed", "seq")
    return _paged([{"entry": e.seq, **{k: e.body[k] for k in fields}} for e in found], more,
                  page)  # fmt: skip


def savings(ledger: Ledger, me: str) -> dict[str, Any]:
    """Household ``me`` against its grid-alone twin, from the same statement the demo
    prints (exchange/demo/accounts.py): costs, the value of energy held, the savings."""
    accounts = fold_ledger(ledger.entries())
    h = accounts.households[me]
    price = accounts.value_price
    return {
        "cost": h.cost, "alone_cost": h.alone_cost, "held_value": h.held_value(price),
        "savings": h.savings(price), "value_price": price, "bought": h.bought, "sold": h.sold,
        "paid": h.paid, "received": h.received, "imported": h.imported,
        "exported": h.exported, "fees": h.fees,
    }  # fmt: skip


def verification(ledger: Ledger) -> dict[str, Any]:
    """What verifying the whole ledger finds."""
    result = ledger.verify()
    return {"head": result.head, "ok": result.ok, "entries": result.entries,
            "problem": result.problem or None}  # fmt: skip


class LedgerReader:
    """Runs the reads that walk the ledger in worker threads, each on a connection of its
    own (SQLite in WAL mode lets them read while the node writes), at most two at a
    time, so that the node's loop goes on meanwhile. Whole-ledger results (savings, the
    verification) are kept until the head moves."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger  # the node's: its head, read on the loop
        self.limiter = trio.CapacityLimiter(2)
        self._per_head: dict[str, tuple[str, Any]] = {}
        self._locks: dict[str, trio.Lock] = {}

    async def read(self, work: Callable[[Ledger], Any]) -> Any:
        """``work(ledger)`` in a worker thread, on a connection of its own."""

        def run() -> Any:
            with Ledger.open(self.ledger.path, create=False) as ledger:
                return work(ledger)

        return await trio.to_thread.run_sync(run, limiter=self.limiter)

    async def per_head(self, name: str, work: Callable[[Ledger], Any]) -> Any:
        """``work``'s result for the current head, computed once per head."""
        head = self.ledger.head_text()
        async with self._locks.setdefault(name, trio.Lock()):
            kept = self._per_head.get(name)
            if kept is None or kept[0] != head:
                self._per_head[name] = (head, await self.read(work))
        return self._per_head[name][1]
