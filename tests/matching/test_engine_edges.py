"""Engine edge cases found in review: each test failed before its fix."""

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.matching import (
    ASK,
    BID,
    FOK,
    MAX_ACCOUNT_OWNER,
    Accounts,
    Book,
    CallAuction,
    Markets,
)

RICH = 10**12


@pytest.mark.parametrize("side", [-1, 2])
def test_orders_and_depth_refuse_a_side_that_is_neither_bid_nor_ask(side):
    book = Book()
    book.submit(1, ASK, 100, 5)
    for view in (book.orders, book.depth):
        with pytest.raises(ValueError, match="side: must be BID"):
            view(side)


def test_depth_drops_fully_filled_orders():
    book = Book()
    book.submit(1, ASK, 100, 5)
    book.submit(2, ASK, 100, 7)
    book.submit(3, BID, 100, 5)  # fills order 1 completely
    assert book.depth(ASK) == [(100, 7)]


EVENT = st.tuples(
    st.sampled_from(["submit", "cancel", "reduce"]),
    st.sampled_from([BID, ASK]),
    st.integers(95, 105),
    st.integers(1, 20),
    st.integers(1, 30),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(EVENT, max_size=60), st.booleans())
def test_depth_always_sums_the_resting_orders(depth_from_orders, events, caps):
    accounts = None
    if caps:
        accounts = Accounts()
        for owner in range(3):
            accounts.set(owner, 40, RICH, 80)
    book = Book(accounts)
    for n, (kind, side, price, qty, oid) in enumerate(events):
        if kind == "submit" and oid not in book:
            book.submit(oid, side, price, qty, owner=n % 3)
        elif kind == "cancel":
            book.cancel(oid)
        elif kind == "reduce" and oid in book:
            book.reduce(oid, min(qty, book.order(oid).qty))
        for s in (BID, ASK):
            assert book.depth(s) == depth_from_orders(book, s)


def test_fills_of_a_markets_carry_the_event_and_market_that_caused_them():
    accounts = Accounts()
    accounts.set(1, 50, 0, None)  # can sell, cannot pay yet
    accounts.set(2, 0, RICH, None)
    accounts.set(3, 100, 0, None)
    markets = Markets(accounts)
    night, day = markets.add("night"), markets.add("day")
    day.submit(10, BID, 5, 10, owner=1)  # event 1: waits, owner 1 has no money
    day.submit(11, ASK, 5, 10, owner=3)  # event 2
    night.submit(20, ASK, 7, 10, owner=1)  # event 3
    night.submit(21, BID, 7, 10, owner=2)  # event 4: owner 1 is paid; day re-crosses
    event, bid, ask, _price, qty, _buyer, _seller, _aggr, market = markets.take_fill_arrays()
    assert list(event) == [4, 4]
    assert [markets.names[m] for m in market] == ["night", "day"]
    assert list(zip(bid, ask, qty, strict=True)) == [(21, 20, 10), (10, 11, 10)]


def test_a_batch_in_one_market_reports_the_fills_it_caused_in_another():
    accounts = Accounts()
    accounts.set(1, 50, 0, None)
    accounts.set(2, 0, RICH, None)
    accounts.set(3, 100, 0, None)
    markets = Markets(accounts)
    day, night = markets.add("day"), markets.add("night")
    day.submit(10, BID, 5, 10, owner=1)
    day.submit(11, ASK, 5, 10, owner=3)
    res = night.run(
        array("B", [0, 1, 0]), array("B", [ASK, ASK, BID]), array("q", [7, 0, 7]),
        array("q", [10, 0, 10]), array("Q", [20, 99, 21]), array("I", [1, 0, 2]),
        array("B", [0, 0, 0]),
    )  # fmt: skip
    assert list(res.status) == [0, 1, 0]  # the cancel of an unknown order is refused
    assert list(res.event) == [2, 2] and list(res.market) == [1, 0]
    assert list(zip(res.bid, res.ask, strict=True)) == [(21, 20), (10, 11)]


def test_an_outside_deposit_takes_effect_before_the_next_incoming_order():
    accounts = Accounts()
    accounts.set(1, 0, 0, None)  # its bid waits: no money
    accounts.set(3, 100, 0, None)
    accounts.set(4, 100, 0, None)
    book = Book(accounts)
    book.submit(1, BID, 5, 10, owner=1)
    book.submit(2, ASK, 5, 10, owner=3)  # earlier than the incoming ask below
    accounts.set(1, 0, 50, None)  # a deposit: now the bid can pay
    book.submit(3, ASK, 4, 10, owner=4)
    # The resting pair trades first (it had priority); the newcomer then rests.
    [fill] = book.take_fills()
    assert (fill.bid, fill.ask, fill.price) == (1, 2, 5)
    assert [o.oid for o in book.orders(ASK)] == [3]


def test_every_call_is_one_event_refused_or_not():
    book = Book()
    book.submit(1, ASK, 100, 5)  # event 1
    assert book.submit(2, BID, 100, 9, tif=FOK) == 0  # event 2: cannot fill, no change
    with pytest.raises(ValueError):
        book.submit(3, BID, 0, 5)  # event 3: refused (price)
    book.submit(4, BID, 100, 5)  # event 4
    event, *_ = book.take_fill_arrays()
    assert list(event) == [4]


def test_a_refused_batch_after_cancels_leaves_no_order_behind():
    auction = CallAuction()
    auction.add(10, BID, 100, 5)
    auction.add(11, ASK, 90, 5)
    auction.cancel(10)
    auction.cancel(11)
    with pytest.raises(ValueError, match="more than once"):
        auction.clear_arrays(
            array("B", [0, 1, 1]), array("q", [200, 50, 50]), array("q", [3, 3, 3]),
            array("Q", [20, 21, 21]),
        )  # fmt: skip
    assert len(auction) == 0
    auction.add(30, BID, 1, 1)
    result = auction.clear()
    assert result.fills == [] and result.orders == 1


def test_account_handles_are_dense_small_integers():
    accounts = Accounts()
    accounts.set(MAX_ACCOUNT_OWNER - 1, 0, 0, None)
    with pytest.raises(ValueError, match="owner: an account handle must be in"):
        accounts.set(MAX_ACCOUNT_OWNER, 0, 0, None)


def test_call_auction_last_depth_is_the_book_per_level_plain_and_executable() -> None:
    """last_depth: per price level, what the orders asked for and what step 2 committed
    (Bmax headroom per household, in priority order; energy for asks)."""
    from wattmesh.matching import ASK, BID, Accounts, CallAuction

    acc = Accounts()
    acc.set(owner=1, energy=0, money=10**15, bmax=500)  # room for 500 Wh
    acc.set(owner=2, energy=300, money=0, bmax=1_000)  # 300 Wh to sell
    acc.set(owner=3, energy=0, money=10**15, bmax=10_000)
    auction = CallAuction(acc)
    auction.add(oid=1, side=BID, price=250_000, qty=400, owner=1, ts=1)
    auction.add(oid=2, side=BID, price=250_000, qty=400, owner=1, ts=2)  # 100 of it fits
    auction.add(oid=3, side=BID, price=240_000, qty=50, owner=3, ts=3)
    auction.add(oid=4, side=ASK, price=200_000, qty=1_000, owner=2, ts=4)
    assert tuple(map(list, CallAuction(acc).last_depth())) == ([], [], [], [])  # none yet
    result = auction.clear()
    sides, prices, qtys, execs = auction.last_depth()
    assert list(zip(sides, prices, qtys, execs, strict=True)) == [
        (BID, 250_000, 800, 500), (BID, 240_000, 50, 50), (ASK, 200_000, 1_000, 300)]  # fmt: skip
    assert result.volume == 300 and result.executable_orders == 4


def test_a_refused_clear_arrays_keeps_the_last_clearings_depth() -> None:
    """A refused batch changes nothing: not even when it is larger than any clearing
    before it (the keys' buffer must not grow, and drop the last clearing's book, before
    the rows and ids are accepted)."""
    from array import array

    from wattmesh.matching import ASK, BID, CallAuction

    auction = CallAuction()
    auction.clear_arrays(
        array("B", [BID, BID, ASK, ASK]), array("q", [100, 80, 90, 120]),
        array("q", [5, 2, 3, 4]), array("Q", [1, 2, 3, 4]),
    )  # fmt: skip
    depth = [list(c) for c in auction.last_depth()]
    n = 20_001
    for oids, message in (
        (list(range(10, 10 + n - 1)) + [10], "oid: 10 appears more than once"),
        (list(range(10, 10 + n)), "row 20000: bad side, price or quantity"),
    ):
        prices = [100] * (n - 1) + [0 if "row" in message else 100]
        with pytest.raises(ValueError, match=message):
            auction.clear_arrays(array("B", [i % 2 for i in range(n)]), array("q", prices),
                                 array("q", [1] * n), array("Q", oids))  # fmt: skip
        assert [list(c) for c in auction.last_depth()] == depth
