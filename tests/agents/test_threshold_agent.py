"""The Energo threshold agent (wattmesh.agents.threshold): when it posts, what, and when it
withdraws; and, with the engine, a bid held by Bmax that waits until the balance falls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.agents.threshold import ThresholdAgent
from wattmesh.matching import ASK, BID, Accounts, CallAuction

LOWER, UPPER, BMAX = 500, 1500, 2000
BUY, SELL = 250_000, 150_000


def agent(owner: int = 7) -> ThresholdAgent:
    return ThresholdAgent(owner, buy_price=BUY, sell_price=SELL, lower=LOWER, upper=UPPER)


@pytest.mark.parametrize("balance", [LOWER, 1000, UPPER])
def test_between_the_thresholds_it_posts_nothing(balance):
    a = agent()
    step = a.step(balance, ts=1)
    assert step.posted == () and step.withdrawn == ()
    assert a.open_orders() == ()


def test_below_the_lower_threshold_it_bids_at_its_buy_price_up_to_the_upper_threshold():
    a = agent()
    (bid,) = a.step(LOWER - 1, ts=10).posted
    assert (bid.side, bid.price, bid.qty, bid.ts) == (BID, BUY, UPPER - (LOWER - 1), 10)
    assert a.bid is bid and a.ask is None


def test_above_the_upper_threshold_it_asks_its_surplus_at_its_sell_price():
    a = agent()
    (ask,) = a.step(1800, ts=20).posted
    assert (ask.side, ask.price, ask.qty, ask.ts) == (ASK, SELL, 1800 - UPPER, 20)
    assert a.ask is ask and a.bid is None


def test_no_second_bid_while_its_bid_is_open_even_after_a_partial_fill():
    a = agent()
    (bid,) = a.step(100, ts=1).posted
    assert a.step(0, ts=2).posted == ()
    a.filled(bid.oid, 300)
    assert a.bid is bid and bid.qty == 1400 - 300  # still open, with what remains
    assert a.step(50, ts=3).posted == ()
    a.filled(bid.oid, bid.qty)  # traded in full: closed
    assert a.bid is None
    (again,) = a.step(200, ts=4).posted
    assert again.side == BID and again.oid != bid.oid and again.qty == UPPER - 200


def test_no_second_ask_while_its_ask_is_open():
    a = agent()
    (ask,) = a.step(2000, ts=1).posted
    assert a.step(1900, ts=2).posted == ()
    a.filled(ask.oid, ask.qty)
    (again,) = a.step(1600, ts=3).posted
    assert again.side == ASK and again.qty == 100


def test_a_bid_is_withdrawn_once_the_balance_reaches_the_upper_threshold():
    a = agent()
    (bid,) = a.step(0, ts=1).posted
    assert a.step(UPPER - 1, ts=2).withdrawn == ()  # still wants energy: keeps waiting
    step = a.step(UPPER, ts=3)
    assert step.withdrawn == (bid,) and step.posted == ()
    assert a.open_orders() == ()


def test_an_ask_is_withdrawn_at_the_lower_threshold_and_a_bid_replaces_it_below():
    a = agent()
    (ask,) = a.step(1700, ts=1).posted
    assert a.step(LOWER + 1, ts=2).withdrawn == ()
    step = a.step(LOWER - 100, ts=3)
    assert step.withdrawn == (ask,)
    (bid,) = step.posted
    assert bid.side == BID and a.open_orders() == (bid,)


def test_order_ids_are_unique_and_carry_the_owner():
    a = agent(owner=3)
    oids = []
    for _ in range(5):
        (o,) = a.step(0, ts=0).posted
        oids.append(o.oid)
        a.filled(o.oid, o.qty)
    assert len(set(oids)) == 5 and all(oid >> 32 == 3 for oid in oids)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lower": 500, "upper": 500},
        {"lower": 600, "upper": 500},
        {"lower": -1, "upper": 500},
        {"buy_price": 0},
        {"sell_price": -5},
        {"owner": -1},
    ],
)
def test_bad_settings_are_refused(kwargs):
    args = {"owner": 1, "buy_price": BUY, "sell_price": SELL, "lower": LOWER, "upper": UPPER}
    with pytest.raises(ValueError):
        ThresholdAgent(**(args | kwargs))


def test_a_fill_it_does_not_hold_is_refused():
    a = agent()
    (bid,) = a.step(0, ts=0).posted
    with pytest.raises(KeyError):
        a.filled(bid.oid + 1, 10)
    with pytest.raises(ValueError):
        a.filled(bid.oid, bid.qty + 1)
    assert bid.qty == UPPER  # unchanged


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, BMAX), st.integers(0, 100), st.integers(0, 100)),
        min_size=1,
        max_size=60,
    )
)
def test_posts_only_when_it_should(moves):
    """Over any sequence of balances and partial fills: a bid is posted exactly when the
    balance is below the lower threshold and no bid is open, an ask exactly when it is
    above the upper one and no ask is open; at most one side is ever open."""
    a = agent()
    for t, (balance, bid_pct, ask_pct) in enumerate(moves):
        bid_before, ask_before = a.bid, a.ask
        step = a.step(balance, ts=t)
        bid_open = bid_before is not None and balance < UPPER  # not withdrawn
        ask_open = ask_before is not None and balance > LOWER
        want_bid = balance < LOWER and not bid_open
        want_ask = balance > UPPER and not ask_open
        assert [o.side for o in step.posted] == [BID] * want_bid + [ASK] * want_ask
        for o in step.posted:
            assert o.qty > 0 and o.ts == t
            assert o.qty == (UPPER - balance if o.side == BID else balance - UPPER)
        assert not (a.bid is not None and a.ask is not None)
        # The market fills part of whatever is open.
        for order, pct in ((a.bid, bid_pct), (a.ask, ask_pct)):
            if order is not None and order.qty * pct // 100 > 0:
                a.filled(order.oid, order.qty * pct // 100)


def test_a_bid_held_by_bmax_waits_and_trades_when_the_balance_falls():
    """The whitepaper: purchase orders that would exceed Bmax wait until the balance falls.
    The agent keeps its bid open; the engine executes only what the headroom allows."""
    buyer, seller = agent(owner=1), ThresholdAgent(2, 100_000, 100_000, LOWER, UPPER)
    accounts = Accounts()
    money = 10**15

    def clear(buyer_energy: int, seller_energy: int) -> int:
        accounts.set(1, buyer_energy, money, BMAX)
        accounts.set(2, seller_energy, money, BMAX)
        auction = CallAuction(accounts)
        for a in (buyer, seller):
            for o in a.open_orders():
                auction.add(o.oid, o.side, o.price, o.qty, a.owner, o.ts)
        result = auction.clear()
        for f in result.fills:
            buyer.filled(f.bid, f.qty)
            seller.filled(f.ask, f.qty)
        return result.volume

    (bid,) = buyer.step(100, ts=1).posted  # wants 1400 Wh
    seller.step(BMAX, ts=1)  # offers 500 Wh
    # Before the clearing, the buyer's own panels filled its storage to Bmax: no headroom.
    assert clear(BMAX, BMAX) == 0
    assert buyer.bid is bid and bid.qty == 1400  # waiting, untouched
    # Its balance falls (evening); the agent keeps the bid (still below the upper one).
    assert buyer.step(1200, ts=2).posted == ()
    assert clear(1200, BMAX) == 500  # headroom 800, the seller has 500 to sell
    assert bid.qty == 900
