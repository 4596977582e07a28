"""Property tests of docs/design.md's matching invariants, for the engine and the reference.

After every event of a random stream (continuous book) and after every clearing (call
auction): balances are exactly the initial balances plus the fills (so energy and money
are conserved), no balance is negative, no energy balance exceeds its Bmax, no executable
bid crosses an executable ask, and every fill pays the buyer at most its limit and the
seller at least its limit. The continuous-book invariants hold across several markets
sharing one set of accounts too: no book of a `Markets` is ever crossed at rest, and a
pair of orders never self-fills more than once.
"""

from __future__ import annotations

from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from wattmesh.matching.reference import (
    ASK,
    BID,
    FOK,
    GTC,
    IOC,
)

# One bug reported per test, shrunk without the (slow) explain phase.
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)

OWNERS = 4
# Money that limits (a few Wh at prices near 100) or that never does, so Bmax binds too.
MONEY = st.one_of(st.integers(0, 4_000), st.just(10**9))
# (energy, money, extra headroom or None for bmax=None), or None: no account.
ACCOUNT = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 40), MONEY, st.one_of(st.none(), st.integers(0, 40))),
)
ROWS = st.lists(ACCOUNT, min_size=OWNERS, max_size=OWNERS)
STP = st.sampled_from(["none", "cancel-resting", "cancel-incoming"])
EVENT = st.tuples(
    st.sampled_from(["submit"] * 6 + ["market", "cancel", "reduce", "replace", "deposit"]),
    st.sampled_from([BID, ASK]),
    st.integers(95, 105),  # price
    st.integers(1, 20),  # qty (reduce: amount)
    st.integers(0, OWNERS - 1),
    st.sampled_from([GTC, GTC, IOC, FOK]),
    st.integers(0, 10_000),  # picks an earlier id
    st.integers(0, 40),  # deposit: energy
    MONEY,  # deposit: money
)


def make_accounts(impl, rows: list) -> Any:
    acc = impl.Accounts()
    for owner, row in enumerate(rows):
        if row is not None:
            energy, money, extra = row
            acc.set(owner, energy, money, None if extra is None else max(1, energy + extra))
    return acc


def balances(acc: Any) -> dict[int, tuple]:
    return {o: acc.get(o) for o in range(OWNERS) if o in acc}


def settle(expected: dict[int, tuple], fills: list) -> None:
    """Fold fills into expected balances (owners without an account are not tracked)."""
    for f in fills:
        assert f.qty > 0
        if f.buyer in expected:
            e, m, b = expected[f.buyer]
            expected[f.buyer] = (e + f.qty, m - f.qty * f.price, b)
        if f.seller in expected:
            e, m, b = expected[f.seller]
            expected[f.seller] = (e - f.qty, m + f.qty * f.price, b)


def check_balances(acc: Any, expected: dict[int, tuple], all_accounted: bool, total: tuple) -> None:
    now = balances(acc)
    assert now == expected
    for energy, money, bmax in now.values():
        assert energy >= 0 and money >= 0
        assert bmax is None or energy <= bmax
    if all_accounted:  # nothing leaves the accounts: totals are conserved exactly
        assert (sum(v[0] for v in now.values()), sum(v[1] for v in now.values())) == total


def can_buy(acc: Any, owner: int, price: int) -> bool:
    if acc is None or owner not in acc:
        return True
    energy, money, bmax = acc.get(owner)
    return money >= price and (bmax is None or energy < bmax)


def can_sell(acc: Any, owner: int) -> bool:
    return acc is None or owner not in acc or acc.get(owner)[0] > 0


def check_uncrossed(book: Any, acc: Any) -> None:
    """No executable bid crosses an executable ask (judged from orders and balances)."""
    bids = [o.price for o in book.orders(BID) if can_buy(acc, o.owner, o.price)]
    asks = [o.price for o in book.orders(ASK) if can_sell(acc, o.owner)]
    if bids and asks:
        assert max(bids) < min(asks)
    quote = book.quotes()
    assert quote.exec_bid == (max(bids) if bids else None)
    assert quote.exec_ask == (min(asks) if asks else None)


@SETTINGS
@given(
    events=st.lists(EVENT, min_size=5, max_size=50),
    rows=ROWS,
    caps=st.booleans(),
    stp=STP,
)
def test_book_invariants_after_every_event(
    impl, events: list, rows: list, caps: bool, stp: str
) -> None:
    acc = make_accounts(impl, rows) if caps else None
    book = impl.Book(acc, stp=stp)
    expected = balances(acc) if caps else {}
    all_accounted = caps and all(r is not None for r in rows)
    total = (sum(v[0] for v in expected.values()), sum(v[1] for v in expected.values()))
    limits: dict[int, tuple[int, int | None]] = {}  # oid -> (side, limit price or None)
    next_oid = 1
    for kind, side, price, qty, owner, tif, pick, energy, money in events:
        ids = list(limits)
        try:
            if kind == "submit":
                limits[next_oid] = (side, price)
                book.submit(next_oid, side, price, qty, owner, tif)
            elif kind == "market":
                limits[next_oid] = (side, None)
                book.market(next_oid, side, qty, owner, IOC if tif == GTC else tif)
            elif kind == "cancel" and ids:
                book.cancel(ids[pick % len(ids)])
            elif kind == "reduce" and ids:
                book.reduce(ids[pick % len(ids)], qty)
            elif kind == "replace" and ids:
                old = ids[pick % len(ids)]
                if old in book:
                    limits[next_oid] = (book.order(old).side, price)
                book.replace(old, next_oid, price, qty)
            elif kind == "deposit" and caps:
                row = acc.get(owner)
                bmax = None if row is None else row[2]
                acc.set(owner, energy if bmax is None else min(energy, bmax), money, bmax)
                expected = balances(acc)
                total = (sum(v[0] for v in expected.values()), sum(v[1] for v in expected.values()))
                book.uncross()
        except ValueError:
            pass  # refused (a reduce larger than the order): must change nothing
        next_oid += 1
        fills = book.take_fills()
        for f in fills:
            bid_limit, ask_limit = limits[f.bid][1], limits[f.ask][1]
            assert bid_limit is None or f.price <= bid_limit
            assert ask_limit is None or f.price >= ask_limit
            assert f.buyer != f.seller or stp == "none"
        if caps:
            settle(expected, fills)
            check_balances(acc, expected, all_accounted, total)
        check_uncrossed(book, acc)


MARKETS = ("spot", "day", "heat")


@SETTINGS
@given(
    events=st.lists(st.tuples(st.integers(0, 2), EVENT), min_size=5, max_size=50),
    rows=ROWS,
    stp=STP,
)
def test_markets_invariants_after_every_event(
    impl, events: list, rows: list, stp: str
) -> None:
    acc = make_accounts(impl, rows)
    markets = impl.Markets(acc, stp=stp)
    for name in MARKETS:
        markets.add(name)
    expected = balances(acc)
    all_accounted = all(r is not None for r in rows)
    total = (sum(v[0] for v in expected.values()), sum(v[1] for v in expected.values()))
    limits: dict[tuple[str, int], int] = {}  # (market, oid) -> limit price
    self_pairs: set[tuple[str, int, int]] = set()
    for n, (m, (kind, side, price, qty, owner, tif, pick, energy, money)) in enumerate(events):
        name = MARKETS[m]
        book = markets[name]
        oid = n + 1
        try:
            if kind in ("submit", "market", "replace") or not len(book):
                limits[(name, oid)] = price
                book.submit(oid, side, price, qty, owner, tif)
            elif kind == "cancel":
                book.cancel(book.orders(side)[0].oid if book.orders(side) else oid)
            elif kind == "reduce" and book.orders(side):
                book.reduce(book.orders(side)[pick % len(book.orders(side))].oid, qty)
            elif kind == "deposit":
                bmax = acc.get(owner)[2] if owner in acc else None
                acc.set(owner, energy if bmax is None else min(energy, bmax), money, bmax)
                expected = balances(acc)
                total = (sum(v[0] for v in expected.values()), sum(v[1] for v in expected.values()))
                markets.uncross()
        except ValueError:
            pass  # refused: must change nothing
        fills = markets.take_fills()
        for market, f in fills:
            assert limits[(market, f.bid)] >= f.price >= limits[(market, f.ask)]
            if f.buyer == f.seller:
                assert stp == "none"
                assert (market, f.bid, f.ask) not in self_pairs  # at most one self-fill
                self_pairs.add((market, f.bid, f.ask))
        settle(expected, [f for _market, f in fills])
        check_balances(acc, expected, all_accounted, total)
        for market in MARKETS:
            check_uncrossed(markets[market], acc)


AUCTION_ORDER = st.tuples(
    st.sampled_from([BID, ASK]),
    st.integers(95, 105),
    st.integers(1, 20),
    st.integers(0, OWNERS - 1),
    st.integers(0, 3),  # ts
)


@SETTINGS
@given(
    rounds=st.lists(st.lists(AUCTION_ORDER, max_size=25), min_size=1, max_size=3),
    rows=ROWS,
    stp=STP,
)
def test_call_auction_invariants_after_every_clearing(
    impl, rounds: list, rows: list, stp: str
) -> None:
    acc = make_accounts(impl, rows)
    auction = impl.CallAuction(acc, stp=stp)
    expected = balances(acc)
    all_accounted = all(r is not None for r in rows)
    total = (sum(v[0] for v in expected.values()), sum(v[1] for v in expected.values()))
    for orders in rounds:  # several intervals on the same accounts
        by_oid = {}
        for oid, (side, price, qty, owner, ts) in enumerate(orders, start=1):
            auction.add(oid, side, price, qty, owner, ts)
            by_oid[oid] = (side, price, qty, owner)
        result = auction.clear()
        assert len(auction) == 0 and result.orders == len(orders)
        assert result.volume == sum(f.qty for f in result.fills)
        filled: dict[int, int] = {}
        for f in result.fills:
            assert f.price == result.price
            assert by_oid[f.bid][0] == BID and by_oid[f.ask][0] == ASK
            assert f.price <= by_oid[f.bid][1]  # the buyer pays at most its limit
            assert f.price >= by_oid[f.ask][1]  # the seller gets at least its limit
            assert (f.buyer, f.seller) == (by_oid[f.bid][3], by_oid[f.ask][3])
            assert f.buyer != f.seller or stp == "none"
            filled[f.bid] = filled.get(f.bid, 0) + f.qty
            filled[f.ask] = filled.get(f.ask, 0) + f.qty
        assert all(q <= by_oid[oid][2] for oid, q in filled.items())
        if result.fills:
            lowest_bid = min(by_oid[f.bid][1] for f in result.fills)
            highest_ask = max(by_oid[f.ask][1] for f in result.fills)
            assert result.price == (lowest_bid + highest_ask) // 2
        else:
            assert result.price is None and result.volume == 0
        settle(expected, result.fills)
        check_balances(acc, expected, all_accounted, total)
