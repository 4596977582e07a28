"""Hand-built examples of each matching rule (docs/design.md "Market rules", docs/matching.md).

Every example runs against the pure-Python reference model and against the Cython engine,
so each one checks both. Owners are small integers; prices are small too, so the money a
buyer needs is easy to read (``qty * price`` nano-currency).
"""

from __future__ import annotations

import random

import pytest

from wattmesh.matching import Accounts, Book, Markets
from wattmesh.matching.reference import (
    ASK,
    BID,
    FOK,
    GTC,
    IOC,
)

RICH = 10**15  # money that never limits

# Owners
S, T, B, C, X = 1, 2, 3, 4, 5


def accounts(impl, **rows: tuple[int, int, int | None]) -> object:
    """Accounts from keyword rows: ``S=(energy, money, bmax)``."""
    acc = impl.Accounts()
    names = {"S": S, "T": T, "B": B, "C": C, "X": X}
    for name, (energy, money, bmax) in rows.items():
        acc.set(names[name], energy, money, bmax)
    return acc


def fills(book: object) -> list[tuple]:
    return [tuple(f) for f in book.take_fills()]


def side(book: object, which: int) -> list[tuple]:
    """(oid, price, qty, owner) of one side in priority order."""
    return [(o.oid, o.price, o.qty, o.owner) for o in book.orders(which)]


def fill(bid: int, ask: int, price: int, qty: int, buyer: int, seller: int, aggr) -> tuple:
    return (bid, ask, price, qty, buyer, seller, aggr)


# ---------------------------------------------------------------------------------------
# Continuous book without caps
# ---------------------------------------------------------------------------------------


def test_reference_constants_are_the_engines() -> None:
    import wattmesh.matching as engine

    assert (BID, ASK, GTC, IOC, FOK) == (engine.BID, engine.ASK, engine.GTC, engine.IOC, engine.FOK)


def test_documented_example(impl) -> None:
    book = impl.Book()
    assert book.submit(oid=1, side=ASK, price=230_000, qty=500, owner=8) == 0
    assert book.submit(oid=2, side=BID, price=240_000, qty=200, owner=7, tif=IOC) == 1
    assert fills(book) == [fill(2, 1, 230_000, 200, 7, 8, BID)]
    assert side(book, ASK) == [(1, 230_000, 300, 8)]
    assert side(book, BID) == []
    assert book.take_fills() == []


def test_priority_price_then_arrival_and_resting_price(impl) -> None:
    book = impl.Book()
    book.submit(1, ASK, 100, 3, S)
    book.submit(2, ASK, 100, 3, T)
    book.submit(3, ASK, 99, 3, C)
    assert side(book, ASK) == [(3, 99, 3, C), (1, 100, 3, S), (2, 100, 3, T)]
    assert book.submit(4, BID, 105, 7, B) == 3
    assert fills(book) == [
        fill(4, 3, 99, 3, B, C, BID),
        fill(4, 1, 100, 3, B, S, BID),
        fill(4, 2, 100, 1, B, T, BID),
    ]
    assert side(book, ASK) == [(2, 100, 2, T)]


def test_incoming_ask_fills_at_each_resting_bid_price(impl) -> None:
    book = impl.Book()
    book.submit(1, BID, 110, 5, B)
    book.submit(2, BID, 120, 5, C)
    book.submit(3, BID, 90, 5, T)
    assert book.submit(4, ASK, 100, 20, S) == 2
    assert fills(book) == [fill(2, 4, 120, 5, C, S, ASK), fill(1, 4, 110, 5, B, S, ASK)]
    # The rest (10) rests as GTC; bid 3 at 90 does not cross.
    assert side(book, ASK) == [(4, 100, 10, S)]
    assert side(book, BID) == [(3, 90, 5, T)]
    assert book.quotes() == (90, 100, 90, 100)


def test_gtc_rests_ioc_drops_and_market_never_rests(impl) -> None:
    book = impl.Book()
    book.submit(1, ASK, 100, 5, S)
    book.submit(2, BID, 100, 8, B, tif=IOC)
    assert side(book, BID) == [] and side(book, ASK) == []
    book.submit(3, ASK, 100, 5, S)
    book.submit(4, BID, 100, 8, B, tif=GTC)
    assert side(book, BID) == [(4, 100, 3, B)]
    book.take_fills()
    # A market ask has no limit: it walks the bids at any price and never rests.
    book.submit(5, BID, 50, 2, C)
    assert book.market(6, ASK, 10, S) == 2
    assert fills(book) == [fill(4, 6, 100, 3, B, S, ASK), fill(5, 6, 50, 2, C, S, ASK)]
    assert len(book) == 0 and 6 not in book


def test_market_on_empty_side_does_nothing(impl) -> None:
    book = impl.Book()
    book.submit(1, BID, 100, 5, B)
    assert book.market(2, BID, 5, C) == 0
    assert side(book, BID) == [(1, 100, 5, B)] and len(book) == 1


def test_reduce_keeps_priority_and_whole_reduce_cancels(impl) -> None:
    book = impl.Book()
    book.submit(1, BID, 100, 10, B)
    book.submit(2, BID, 100, 10, C)
    assert book.reduce(1, 4) is True
    assert side(book, BID) == [(1, 100, 6, B), (2, 100, 10, C)]
    assert book.order(1) == (1, BID, 100, 6, B)
    with pytest.raises(ValueError):
        book.reduce(1, 7)
    with pytest.raises(ValueError):
        book.reduce(1, 0)
    assert book.reduce(99, 1) is False
    assert book.reduce(1, 6) is True
    assert 1 not in book and book.order(1) is None
    assert side(book, BID) == [(2, 100, 10, C)]


def test_replace_loses_priority_and_may_trade(impl) -> None:
    book = impl.Book()
    book.submit(1, BID, 100, 10, B)
    book.submit(2, BID, 100, 10, C)
    assert book.replace(1, 3, 100, 8) == 0
    assert side(book, BID) == [(2, 100, 10, C), (3, 100, 8, B)]
    book.submit(4, ASK, 120, 5, S)
    # The new order keeps side and owner and trades at once at the resting price.
    assert book.replace(3, 5, 125, 8) == 1
    assert fills(book) == [fill(5, 4, 120, 5, B, S, BID)]
    assert side(book, BID) == [(5, 125, 3, B), (2, 100, 10, C)]
    assert book.replace(77, 78, 100, 1) == -1
    assert side(book, BID) == [(5, 125, 3, B), (2, 100, 10, C)]


def test_cancel_and_bad_input_change_nothing(impl) -> None:
    book = impl.Book()
    book.submit(1, BID, 100, 10, B)
    assert book.cancel(1) is True
    assert book.cancel(1) is False
    book.submit(2, BID, 100, 10, B)
    for bad in (
        lambda: book.submit(2, ASK, 100, 1, S),  # duplicate live id
        lambda: book.submit(3, ASK, 100, 0, S),  # no quantity
        lambda: book.submit(3, ASK, 0, 1, S),  # no price
        lambda: book.submit(3, 7, 100, 1, S),  # no side
        lambda: book.market(3, ASK, 1, S, tif=GTC),  # a market order never rests
    ):
        with pytest.raises(ValueError):
            bad()
    assert side(book, BID) == [(2, 100, 10, B)] and side(book, ASK) == []
    assert book.take_fills() == []


def test_quotes_from_all_orders_and_executable_beside(impl) -> None:
    acc = accounts(impl, S=(0, 0, None), T=(10, 0, None), B=(0, 0, 100), C=(0, RICH, 100))
    book = impl.Book(acc)
    assert book.quotes() == (None, None, None, None)
    book.submit(1, ASK, 100, 5, S)  # S has no energy: not executable
    book.submit(2, ASK, 130, 5, T)
    book.submit(3, BID, 120, 5, B)  # B has no money: not executable
    book.submit(4, BID, 90, 5, C)
    assert book.quotes() == (120, 100, 90, 130)
    assert fills(book) == []  # the book overlaps, but only non-executable orders cross


# ---------------------------------------------------------------------------------------
# Caps
# ---------------------------------------------------------------------------------------


def test_seller_energy_caps_and_rest_stays_untouched(impl) -> None:
    acc = accounts(impl, S=(50, 0, None), B=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 80, S)
    assert book.submit(2, BID, 100, 100, B) == 1
    assert fills(book) == [fill(2, 1, 100, 50, B, S, BID)]
    # S has no energy left: its ask stays on the book, with its remaining 30, untouched.
    assert side(book, ASK) == [(1, 100, 30, S)]
    assert side(book, BID) == [(2, 100, 50, B)]
    assert book.quotes() == (100, 100, 100, None)
    assert acc.get(S) == (0, 5_000, None)
    assert acc.get(B) == (50, RICH - 5_000, None)


def test_buyer_bmax_headroom(impl) -> None:
    acc = accounts(impl, S=(100, 0, None), B=(80, RICH, 100))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 50, S)
    assert book.submit(2, BID, 100, 50, B, tif=IOC) == 1
    assert fills(book) == [fill(2, 1, 100, 20, B, S, BID)]
    assert acc.get(B) == (100, RICH - 2_000, 100)
    assert side(book, ASK) == [(1, 100, 30, S)]


def test_buyer_money_counts_at_the_trade_price_not_its_limit(impl) -> None:
    # 1_050 nano pays for 10 Wh at 100 (the ask's price) but only 8 Wh at 120 (the limit).
    acc = accounts(impl, S=(100, 0, None), B=(0, 1_050, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 50, S)
    book.submit(2, BID, 120, 50, B)
    assert fills(book) == [fill(2, 1, 100, 10, B, S, BID)]
    assert acc.get(B) == (10, 50, None)
    # The rest of bid 2 rests but its owner cannot pay for 1 Wh: not executable.
    assert side(book, BID) == [(2, 120, 40, B)]
    assert book.quotes() == (120, 100, None, 100)


def test_bmax_none_still_limited_by_money_and_energy(impl) -> None:
    acc = accounts(impl, S=(7, 0, None), B=(1_000_000, 500, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 50, S)
    book.submit(2, BID, 100, 50, B)  # money pays for 5 Wh
    assert fills(book) == [fill(2, 1, 100, 5, B, S, BID)]
    book.submit(3, BID, 50, 50, C)  # C has no account: no limit; S has 2 Wh left
    book.submit(4, ASK, 50, 10, S)
    assert fills(book) == [fill(3, 4, 50, 2, C, S, ASK)]
    assert acc.get(S) == (0, 600, None)
    assert acc.get(B) == (1_000_005, 0, None)
    assert C not in acc and acc.get(C) is None


def test_owner_without_account_trades_without_limit(impl) -> None:
    acc = accounts(impl, B=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 1_000, S)  # S has no account
    book.submit(2, BID, 100, 600, B)
    assert fills(book) == [fill(2, 1, 100, 600, B, S, BID)]
    assert acc.get(B) == (600, RICH - 60_000, None)
    assert S not in acc


def test_skips_resting_orders_whose_owner_cannot_execute(impl) -> None:
    acc = accounts(impl, S=(0, 0, None), T=(10, 0, None), B=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 10, S)  # best ask, but S has no energy
    book.submit(2, ASK, 101, 10, T)
    # IOC, so the re-crossing loop after the event cannot make up for a wrong walk.
    assert book.submit(3, BID, 105, 10, B, tif=IOC) == 1
    assert fills(book) == [fill(3, 2, 101, 10, B, T, BID)]
    assert side(book, ASK) == [(1, 100, 10, S)]


def test_skips_resting_bids_that_cannot_pay_their_price(impl) -> None:
    acc = accounts(impl, S=(100, 0, None), B=(0, 99, None), C=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, BID, 100, 10, B)  # B cannot pay for 1 Wh at 100
    book.submit(2, BID, 90, 10, C)
    assert book.submit(3, ASK, 80, 5, S, tif=IOC) == 1
    assert fills(book) == [fill(2, 3, 90, 5, C, S, ASK)]
    assert side(book, BID) == [(1, 100, 10, B), (2, 90, 5, C)]


def test_incoming_stops_when_its_own_owner_cannot_execute(impl) -> None:
    acc = accounts(impl, S=(100, 0, None), T=(100, 0, None), B=(0, RICH, 15))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 10, S)
    book.submit(2, ASK, 101, 10, T)
    assert book.submit(3, BID, 110, 30, B) == 2
    assert fills(book) == [fill(3, 1, 100, 10, B, S, BID), fill(3, 2, 101, 5, B, T, BID)]
    # It stops at Bmax: the rest rests (GTC) and ask 2 keeps its remaining 5.
    assert side(book, BID) == [(3, 110, 15, B)]
    assert side(book, ASK) == [(2, 101, 5, T)]
    assert book.quotes() == (110, 101, None, 101)


@pytest.mark.parametrize("stp", ["cancel-resting", "cancel-incoming"])
def test_stopped_incoming_does_not_meet_own_resting_order(impl, stp: str) -> None:
    # X's headroom runs out on ask 1, so the incoming bid stops there and its rest rests:
    # its own ask 2 further on is not met, so self-trade prevention does not act
    # (an engine bug once cancelled ask 2, or dropped the rest under cancel-incoming).
    acc = accounts(impl, X=(5, RICH, 15))
    book = impl.Book(acc, stp=stp)
    book.submit(1, ASK, 100, 10, S)
    book.submit(2, ASK, 101, 5, X)
    assert book.submit(3, BID, 105, 20, X) == 1
    assert fills(book) == [fill(3, 1, 100, 10, X, S, BID)]
    assert side(book, ASK) == [(2, 101, 5, X)]
    assert side(book, BID) == [(3, 105, 10, X)]


def test_incoming_ask_without_energy_trades_nothing_and_rests(impl) -> None:
    acc = accounts(impl, S=(0, 0, None), B=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, BID, 100, 10, B)
    assert book.submit(2, ASK, 90, 10, S) == 0
    assert side(book, ASK) == [(2, 90, 10, S)]
    assert side(book, BID) == [(1, 100, 10, B)]


def test_household_orders_commit_in_priority_order(impl) -> None:
    acc = accounts(impl, S=(15, 0, None), B=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 101, 10, S)
    book.submit(2, ASK, 100, 10, S)  # better price: gets S's energy first
    book.submit(3, BID, 110, 20, B)
    assert fills(book) == [fill(3, 2, 100, 10, B, S, BID), fill(3, 1, 101, 5, B, S, BID)]
    assert side(book, ASK) == [(1, 101, 5, S)]
    assert side(book, BID) == [(3, 110, 5, B)]


def test_money_runs_out_mid_walk_at_rising_prices(impl) -> None:
    # 2_100 nano: 10 Wh at 100 (1_000), then 1_100 // 110 = 10 Wh at 110 (1_100), then 0.
    acc = accounts(impl, B=(0, 2_100, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 10, S)
    book.submit(2, ASK, 110, 20, T)
    book.submit(3, BID, 120, 40, B, tif=IOC)
    assert fills(book) == [fill(3, 1, 100, 10, B, S, BID), fill(3, 2, 110, 10, B, T, BID)]
    assert acc.get(B) == (20, 0, None)
    assert side(book, ASK) == [(2, 110, 10, T)] and side(book, BID) == []


# ---------------------------------------------------------------------------------------
# Self-trade prevention
# ---------------------------------------------------------------------------------------


def test_stp_none_trades_with_itself(impl) -> None:
    acc = accounts(impl, X=(50, 10_000, 100))
    book = impl.Book(acc, stp="none")
    book.submit(1, ASK, 100, 10, X)
    assert book.submit(2, BID, 100, 10, X) == 1
    assert fills(book) == [fill(2, 1, 100, 10, X, X, BID)]
    assert acc.get(X) == (50, 10_000, 100)
    assert len(book) == 0


def test_stp_cancel_resting_cancels_and_goes_on(impl) -> None:
    book = impl.Book(stp="cancel-resting")
    book.submit(1, ASK, 100, 10, S)
    book.submit(2, ASK, 101, 10, X)
    book.submit(3, ASK, 102, 10, T)
    assert book.submit(4, BID, 105, 15, X) == 2
    assert fills(book) == [fill(4, 1, 100, 10, X, S, BID), fill(4, 3, 102, 5, X, T, BID)]
    assert 2 not in book
    assert side(book, ASK) == [(3, 102, 5, T)] and side(book, BID) == []


def test_stp_cancel_incoming_drops_the_rest(impl) -> None:
    book = impl.Book(stp="cancel-incoming")
    book.submit(1, ASK, 100, 10, S)
    book.submit(2, ASK, 101, 10, X)
    book.submit(3, ASK, 102, 10, T)
    assert book.submit(4, BID, 105, 25, X, tif=GTC) == 1
    assert fills(book) == [fill(4, 1, 100, 10, X, S, BID)]
    # The rest of the incoming GTC bid is cancelled, not rested; the resting ask stays.
    assert side(book, BID) == []
    assert side(book, ASK) == [(2, 101, 10, X), (3, 102, 10, T)]


def test_stp_cancel_incoming_drops_a_rest_that_could_not_execute_at_its_own_price(
    impl,
) -> None:
    # X can pay for 1 Wh at 101 but not at its limit 105. Its bid meets its own ask at 101
    # and is cancelled; it must not rest (where, not executable, nothing would remove it).
    acc = accounts(impl, X=(5, 101, None))
    book = impl.Book(acc, stp="cancel-incoming")
    book.submit(1, ASK, 101, 5, X)
    assert book.submit(2, BID, 105, 5, X) == 0
    assert side(book, BID) == []
    assert side(book, ASK) == [(1, 101, 5, X)]


@pytest.mark.parametrize("stp", ["cancel-resting", "cancel-incoming"])
def test_stp_ignores_own_order_that_cannot_execute(impl, stp: str) -> None:
    # A resting order that cannot execute is skipped and stays untouched, so self-trade
    # prevention never acts on it (see matching/reference.py; an engine bug once
    # cancelled ask 1 here, or dropped the incoming bid under cancel-incoming).
    acc = accounts(impl, X=(0, RICH, None), T=(10, 0, None))
    book = impl.Book(acc, stp=stp)
    book.submit(1, ASK, 100, 10, X)  # X has no energy
    book.submit(2, ASK, 101, 10, T)
    assert book.submit(3, BID, 105, 5, X) == 1
    assert fills(book) == [fill(3, 2, 101, 5, X, T, BID)]
    assert side(book, ASK) == [(1, 100, 10, X), (2, 101, 5, T)]


# ---------------------------------------------------------------------------------------
# FOK
# ---------------------------------------------------------------------------------------


def test_fok_fills_whole_or_nothing(impl) -> None:
    book = impl.Book()
    book.submit(1, ASK, 100, 5, S)
    book.submit(2, ASK, 101, 5, T)
    assert book.submit(3, BID, 101, 11, B, tif=FOK) == 0
    assert book.market(4, BID, 11, B, tif=FOK) == 0
    assert side(book, ASK) == [(1, 100, 5, S), (2, 101, 5, T)] and side(book, BID) == []
    assert book.submit(5, BID, 101, 10, B, tif=FOK) == 2
    assert fills(book) == [fill(5, 1, 100, 5, B, S, BID), fill(5, 2, 101, 5, B, T, BID)]
    assert len(book) == 0


def test_fok_under_caps_changes_nothing(impl) -> None:
    acc = accounts(impl, S=(4, 0, None), T=(10, 0, None), B=(0, RICH, 12))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 5, S)  # only 4 Wh executable
    book.submit(2, ASK, 101, 10, T)
    # 13 Wh would be there by quantity, but B's Bmax headroom is 12: nothing happens.
    assert book.submit(3, BID, 110, 13, B, tif=FOK) == 0
    assert acc.get(B) == (0, RICH, 12) and acc.get(S) == (4, 0, None)
    assert side(book, ASK) == [(1, 100, 5, S), (2, 101, 10, T)]
    # 14 Wh on the book but S can sell only 4 of its 5: 4 + 10 = 14 executable.
    acc.set(B, 0, RICH, 100)
    assert book.submit(4, BID, 110, 15, B, tif=FOK) == 0
    assert book.submit(5, BID, 110, 14, B, tif=FOK) == 2
    assert fills(book) == [fill(5, 1, 100, 4, B, S, BID), fill(5, 2, 101, 10, B, T, BID)]
    assert side(book, ASK) == [(1, 100, 1, S)]


def test_failed_fok_does_not_cancel_resting_under_stp(impl) -> None:
    book = impl.Book(stp="cancel-resting")
    book.submit(1, ASK, 100, 5, X)
    book.submit(2, ASK, 101, 5, T)
    assert book.submit(3, BID, 105, 6, X, tif=FOK) == 0  # only 5 Wh not its own
    assert side(book, ASK) == [(1, 100, 5, X), (2, 101, 5, T)]
    # A FOK that fills keeps the cancellation it made on the way.
    assert book.submit(4, BID, 105, 5, X, tif=FOK) == 1
    assert fills(book) == [fill(4, 2, 101, 5, X, T, BID)]
    assert side(book, ASK) == []


def test_fok_meeting_own_order_under_cancel_incoming_changes_nothing(impl) -> None:
    book = impl.Book(stp="cancel-incoming")
    book.submit(1, ASK, 100, 5, S)
    book.submit(2, ASK, 101, 5, X)
    book.submit(3, ASK, 102, 5, T)
    assert book.submit(4, BID, 105, 10, X, tif=FOK) == 0
    assert side(book, ASK) == [(1, 100, 5, S), (2, 101, 5, X), (3, 102, 5, T)]
    assert book.submit(5, BID, 105, 5, X, tif=FOK) == 1  # filled before meeting itself
    assert fills(book) == [fill(5, 1, 100, 5, X, S, BID)]


# ---------------------------------------------------------------------------------------
# Re-crossing after balance changes
# ---------------------------------------------------------------------------------------


def test_recross_after_a_fill_frees_headroom_bid_first(impl) -> None:
    acc = accounts(impl, B=(10, RICH, 10), S=(10, 0, None), C=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, BID, 110, 10, B)  # B is full: not executable
    book.submit(2, ASK, 100, 10, S)  # crosses bid 1, which cannot execute: rests
    book.submit(3, BID, 90, 5, C)
    assert fills(book) == []
    assert book.quotes() == (110, 100, 90, 100)
    # B sells 5 Wh to C; B now has headroom, so bid 1 and ask 2 trade at the price of
    # the earlier order (bid 1), with the later one (ask 2) as aggressor.
    assert book.submit(4, ASK, 90, 5, B) == 2
    assert fills(book) == [fill(3, 4, 90, 5, C, B, ASK), fill(1, 2, 110, 5, B, S, ASK)]
    assert acc.get(B) == (10, RICH + 450 - 550, 10)
    assert acc.get(S) == (5, 550, None)
    assert side(book, BID) == [(1, 110, 5, B)]
    assert side(book, ASK) == [(2, 100, 5, S)]


def test_recross_after_a_fill_ask_first(impl) -> None:
    acc = accounts(impl, B=(10, RICH, 10), S=(10, 0, None), C=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 10, S)
    book.submit(2, BID, 110, 10, B)  # B is full: stops at once and rests
    book.submit(3, BID, 90, 4, C)
    assert side(book, BID) == [(2, 110, 10, B), (3, 90, 4, C)]
    assert book.submit(4, ASK, 90, 4, B) == 2
    assert fills(book) == [fill(3, 4, 90, 4, C, B, ASK), fill(2, 1, 100, 4, B, S, BID)]


def test_account_change_takes_effect_on_uncross(impl) -> None:
    acc = accounts(impl, B=(0, 0, None), S=(10, 0, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 10, S)
    book.submit(2, BID, 120, 10, B)  # B cannot pay
    acc.set(B, 0, 700, None)  # a deposit: 7 Wh at 100
    assert book.uncross() == 1
    assert fills(book) == [fill(2, 1, 100, 7, B, S, BID)]
    assert acc.get(B) == (7, 0, None) and acc.get(S) == (3, 700, None)


def test_account_change_takes_effect_at_next_event(impl) -> None:
    acc = accounts(impl, B=(0, 0, None), S=(10, 0, None))
    book = impl.Book(acc)
    book.submit(1, BID, 120, 10, B)  # B cannot pay
    book.submit(2, ASK, 100, 10, S)
    acc.set(B, 0, 1_200, None)
    # An unrelated event that crosses nothing; afterwards bids 1 and ask 2 trade at the
    # earlier order's price (the bid's).
    assert book.submit(3, BID, 50, 1, C) == 1
    assert fills(book) == [fill(1, 2, 120, 10, B, S, ASK)]


@pytest.mark.parametrize(
    ("stp", "expected_fills", "bids", "asks"),
    [
        ("none", [fill(1, 2, 110, 5, X, X, ASK)], [], []),
        ("cancel-resting", [], [], [(2, 100, 5, X)]),  # the earlier (bid 1) is cancelled
        ("cancel-incoming", [], [(1, 110, 5, X)], []),  # the later (ask 2) is cancelled
    ],
)
def test_recross_between_orders_of_one_owner(
    impl, stp: str, expected_fills: list, bids: list, asks: list
) -> None:
    # X's bid waits on headroom; X's ask arrives and crosses it (the bid cannot execute,
    # so it is skipped). When X sells energy to C, the two cross as executable orders and
    # self-trade prevention treats the later one (ask 2) as incoming.
    acc = accounts(impl, X=(20, RICH, 20), C=(0, RICH, None))
    book = impl.Book(acc, stp=stp)
    book.submit(1, BID, 110, 5, X)
    book.submit(2, ASK, 100, 5, X)
    book.submit(3, BID, 90, 5, C)
    assert fills(book) == []
    book.submit(4, ASK, 90, 5, X)
    assert fills(book) == [fill(3, 4, 90, 5, C, X, ASK), *expected_fills]
    assert side(book, BID) == bids
    assert side(book, ASK) == asks


# ---------------------------------------------------------------------------------------
# Priority corners: the walk stays on a resting order; self-matches; several markets
# ---------------------------------------------------------------------------------------


def test_walk_stays_on_a_resting_order_while_both_owners_can_execute(impl) -> None:
    # Issue 11's first log, under stp none: X's ask meets X's own bid first. The old walk
    # capped that self-match at X's 1 Wh and moved on, so C's worse bid traded while
    # bid 1 could still execute.
    acc = accounts(impl, X=(1, RICH, 2))
    book = impl.Book(acc)
    book.submit(1, BID, 200, 2, X)
    book.submit(2, BID, 190, 5, C)  # C has no account: no limit
    book.submit(3, ASK, 190, 3, X)
    assert fills(book) == [fill(1, 3, 200, 2, X, X, ASK), fill(2, 3, 190, 1, C, X, ASK)]
    assert acc.get(X) == (0, RICH + 190, 2)


@pytest.mark.parametrize("tif", [IOC, FOK])
def test_ioc_and_fok_get_all_that_priority_allows(impl, tif: int) -> None:
    # X's bid meets X's own ask (a self-match, 2 Wh at once), then buys 1 Wh from T with
    # the headroom it has: 3 Wh in all. The old walk got 2, so this FOK failed.
    acc = accounts(impl, X=(1, RICH, 2), T=(10, 0, None))
    book = impl.Book(acc)
    book.submit(1, ASK, 100, 2, X)
    book.submit(2, ASK, 100, 5, T)
    assert book.submit(3, BID, 100, 3, X, tif) == 2
    assert fills(book) == [fill(3, 1, 100, 2, X, X, BID), fill(3, 2, 100, 1, X, T, BID)]
    assert acc.get(X) == (2, RICH - 100, 2)


def test_money_guard_shrinks_fills_and_the_walk_stays(impl) -> None:
    # S sells MAX_QTY at MAX_PRICE, so its money ends 2**32 below 2**63 and the guard
    # that keeps it inside int64 lets it sell at most 2 Wh, then 1 Wh at a time.
    big = (1 << 31) - 1
    acc = accounts(impl, S=(1 << 32, (1 << 62) - 1, None), T=(5, 0, None))
    book = impl.Book(acc)
    book.submit(1, BID, big, big, C)
    book.submit(2, ASK, big, big, S)
    assert fills(book) == [fill(1, 2, big, big, C, S, ASK)]
    assert acc.get(S)[1] == (1 << 63) - (1 << 32)
    book.submit(3, ASK, 1, 5, S)  # earlier than T's ask at the same price
    book.submit(4, ASK, 1, 5, T)
    assert book.submit(5, BID, 1, 10, C) == 5
    got = fills(book)
    assert [(f[1], f[3]) for f in got] == [(3, 2), (3, 1), (3, 1), (3, 1), (4, 5)]


def test_self_match_is_one_fill_of_the_smaller_remaining_quantity(impl) -> None:
    # A self-match moves nothing, so no cap binds it: without this rule the caps
    # (1 Wh of headroom, 1 Wh of energy) made it 1,000 fills of 1 Wh.
    acc = accounts(impl, X=(1, RICH, 2))
    book = impl.Book(acc)
    book.submit(1, BID, 200, 1_000, X)
    assert book.submit(2, ASK, 200, 1_000, X) == 1
    assert fills(book) == [fill(1, 2, 200, 1_000, X, X, ASK)]
    assert acc.get(X) == (1, RICH, 2) and len(book) == 0


def test_self_match_in_a_recross_is_one_fill(impl) -> None:
    # X's bid waits on headroom while X's ask rests (X's own orders cross but the bid
    # cannot execute); X sells to C and both of X's orders become executable: they match
    # once, for the smaller quantity, and move nothing.
    acc = accounts(impl, X=(3, RICH, 3), C=(0, RICH, None))
    book = impl.Book(acc)
    book.submit(1, BID, 110, 50, X)
    book.submit(2, ASK, 100, 40, X)
    book.submit(3, BID, 90, 1, C)
    book.submit(4, ASK, 90, 1, X)
    assert fills(book) == [fill(3, 4, 90, 1, C, X, ASK), fill(1, 2, 110, 40, X, X, ASK)]
    assert side(book, BID) == [(1, 110, 10, X)] and side(book, ASK) == []


def test_a_fill_in_one_market_recrosses_the_others_in_the_same_event(impl) -> None:
    acc = accounts(impl, S=(50, 0, None), T=(0, RICH, None), B=(100, 0, None))
    markets = impl.Markets(acc)
    day, night = markets.add("day"), markets.add("night")
    day.submit(10, BID, 5, 10, S)  # waits: S has no money yet
    day.submit(11, ASK, 5, 10, B)
    assert markets.take_fills() == []
    night.submit(20, ASK, 7, 10, S)
    assert night.submit(21, BID, 7, 10, T) == 2  # S is paid 70 in night; day re-crosses
    assert [(m, tuple(f)) for m, f in markets.take_fills()] == [
        ("night", fill(21, 20, 7, 10, T, S, BID)),
        ("day", fill(10, 11, 5, 10, S, B, ASK)),
    ]
    assert day.quotes() == (None, None, None, None)


def test_markets_recross_by_name_until_none_changes(impl) -> None:
    # A fill in "c" pays X. In the pass by name, "a" cannot trade yet (T has no money)
    # and "b" trades (X buys from T, paying T); a second pass lets "a" trade.
    acc = accounts(impl, X=(5, 0, None), T=(5, 0, None), C=(5, 0, None))
    markets = impl.Markets(acc)
    a, b, c = markets.add("a"), markets.add("b"), markets.add("c")
    a.submit(1, BID, 10, 5, T)  # T has no money
    a.submit(2, ASK, 10, 5, C)
    b.submit(3, BID, 10, 5, X)  # X has no money
    b.submit(4, ASK, 10, 5, T)
    c.submit(5, ASK, 10, 5, X)
    assert markets.take_fills() == []
    assert c.submit(6, BID, 10, 5, B) == 3  # B has no account; it pays X 50
    assert [(m, f.bid, f.ask) for m, f in markets.take_fills()] == [
        ("c", 6, 5),
        ("b", 3, 4),
        ("a", 1, 2),
    ]
    assert acc.get(T) == (5, 0, None) and acc.get(C) == (0, 50, None)


def test_a_refused_cancel_changes_nothing(impl) -> None:
    acc = accounts(impl, S=(50, 0, None), B=(100, 0, None))
    markets = impl.Markets(acc)
    day = markets.add("day")
    day.submit(10, BID, 5, 10, S)  # waits: S has no money
    day.submit(11, ASK, 5, 10, B)
    acc.set(S, 50, 1_000, None)  # outside an event; nothing re-crossed yet
    assert day.cancel(999) is False  # refused: changes nothing
    assert markets.take_fills() == [] and len(day) == 2
    assert day.cancel(10) is True  # accepted: outside changes take effect first
    assert [(m, f.bid, f.ask, f.qty) for m, f in markets.take_fills()] == [("day", 10, 11, 10)]


def test_books_that_share_accounts_belong_to_one_markets() -> None:
    acc = Accounts()
    first = Book(acc)
    with pytest.raises(ValueError, match="belong to one Markets"):
        Book(acc)
    markets_acc = Accounts()
    markets = Markets(markets_acc)
    with pytest.raises(ValueError, match="belong to one Markets"):
        Book(markets_acc)
    markets.add("day")
    with pytest.raises(ValueError, match="already has a book"):
        markets.add("day")
    with pytest.raises(ValueError, match="take the fills from the Markets"):
        markets["day"].take_fills()
    del first  # a book that is gone no longer holds its accounts
    Book(acc)


# ---------------------------------------------------------------------------------------
# Call auction
# ---------------------------------------------------------------------------------------


def cfills(result) -> list[tuple]:
    return [tuple(f) for f in result.fills]


def test_call_documented_example(impl) -> None:
    auction = impl.CallAuction()
    auction.add(oid=1, side=BID, price=250_000, qty=400, owner=7, ts=1_700_000_000_000)
    auction.add(oid=2, side=ASK, price=200_000, qty=300, owner=8, ts=1_700_000_000_500)
    assert auction.quotes() == (250_000, 200_000, 250_000, 200_000)
    result = auction.clear()
    assert result.price == 225_000
    assert cfills(result) == [fill(1, 2, 225_000, 300, 7, 8, None)]
    assert (result.volume, result.orders, result.executable_orders) == (300, 2, 2)
    assert len(auction) == 0


def test_call_price_from_lowest_matched_bid_and_highest_matched_ask(impl) -> None:
    auction = impl.CallAuction()
    auction.add(1, BID, 120, 10, B, ts=1)
    auction.add(2, BID, 110, 10, C, ts=2)
    auction.add(3, BID, 95, 10, C, ts=3)  # does not cross ask 5's 100 when reached
    auction.add(4, ASK, 90, 10, S, ts=4)
    auction.add(5, ASK, 100, 15, T, ts=5)
    result = auction.clear()
    assert result.price == (110 + 100) // 2
    assert cfills(result) == [fill(1, 4, 105, 10, B, S, None), fill(2, 5, 105, 10, C, T, None)]
    assert result.volume == 20


def test_call_price_floors(impl) -> None:
    auction = impl.CallAuction()
    auction.add(1, BID, 101, 10, B)
    auction.add(2, ASK, 100, 10, S)
    assert auction.clear().price == 100


def test_call_priority_is_price_ts_oid_not_arrival(impl) -> None:
    auction = impl.CallAuction()
    auction.add(9, ASK, 100, 10, T, ts=20)
    auction.add(8, ASK, 100, 10, S, ts=10)
    auction.add(3, ASK, 100, 10, C, ts=10)  # same ts as 8, smaller oid: first
    auction.add(1, BID, 100, 15, B, ts=30)
    result = auction.clear()
    assert cfills(result) == [fill(1, 3, 100, 10, B, C, None), fill(1, 8, 100, 5, B, S, None)]


def test_call_executable_quantities_commit_per_household(impl) -> None:
    acc = accounts(impl, S=(15, 0, None), B=(0, RICH, 100))
    auction = impl.CallAuction(acc)
    auction.add(1, ASK, 95, 10, S, ts=1)  # worse price: gets what 2 leaves (5)
    auction.add(2, ASK, 90, 10, S, ts=2)  # better price: gets S's energy first (10)
    auction.add(3, BID, 120, 30, B, ts=3)
    result = auction.clear()
    assert result.price == (120 + 95) // 2
    assert cfills(result) == [fill(3, 2, 107, 10, B, S, None), fill(3, 1, 107, 5, B, S, None)]
    assert acc.get(S) == (0, 15 * 107, None)
    assert acc.get(B) == (15, RICH - 15 * 107, 100)


def test_call_bids_checked_at_their_own_limit(impl) -> None:
    # 1_200 nano pays for 10 Wh at the bid's limit 120, although the clearing price (110)
    # would pay for 10.9: the executable quantity is 10.
    acc = accounts(impl, B=(0, 1_200, None))
    auction = impl.CallAuction(acc)
    auction.add(1, BID, 120, 20, B)
    auction.add(2, ASK, 100, 20, S)
    result = auction.clear()
    assert result.price == 110
    assert cfills(result) == [fill(1, 2, 110, 10, B, S, None)]
    assert acc.get(B) == (10, 100, None)


def test_call_buyer_headroom_and_money_commit_in_priority(impl) -> None:
    acc = accounts(impl, B=(5, RICH, 20), C=(0, 1_000, None))
    auction = impl.CallAuction(acc)
    auction.add(1, BID, 110, 10, B, ts=9)
    auction.add(2, BID, 120, 10, B, ts=8)  # first: 10 of B's 15 headroom
    auction.add(3, BID, 100, 10, C, ts=1)  # C pays for 10 at 100
    auction.add(4, BID, 100, 10, C, ts=2)  # nothing left for C's second bid
    auction.add(5, ASK, 90, 100, S)
    result = auction.clear()
    assert result.executable_orders == 4
    assert cfills(result) == [
        fill(2, 5, 95, 10, B, S, None),
        fill(1, 5, 95, 5, B, S, None),
        fill(3, 5, 95, 10, C, S, None),
    ]
    assert acc.get(C) == (10, 50, None)
    assert acc.get(B) == (20, RICH - 15 * 95, 20)


def test_call_non_executable_orders_do_not_set_the_price(impl) -> None:
    acc = accounts(impl, B=(0, 0, None), S=(0, 0, None), C=(0, RICH, None), T=(50, 0, None))
    auction = impl.CallAuction(acc)
    auction.add(1, BID, 200, 10, B)  # no money
    auction.add(2, ASK, 50, 10, S)  # no energy
    auction.add(3, BID, 120, 10, C)
    auction.add(4, ASK, 100, 10, T)
    assert auction.quotes() == (200, 50, 120, 100)
    result = auction.clear()
    assert result.price == 110
    assert cfills(result) == [fill(3, 4, 110, 10, C, T, None)]
    assert (result.orders, result.executable_orders) == (4, 2)


@pytest.mark.parametrize(
    ("stp", "expected"),
    [
        # Bid 1 (X, ts 5) meets ask 3 (X, ts 1) first.
        # price (105 + 97) // 2
        ("none", [fill(1, 3, 101, 10, X, X, None), fill(2, 4, 101, 10, C, T, None)]),
        # cancel-resting drops the earlier one (ask 3): bid 1 then meets ask 4; (110 + 97) // 2
        ("cancel-resting", [fill(1, 4, 103, 10, X, T, None)]),
        # cancel-incoming drops the later one (bid 1): bid 2 meets ask 3; (105 + 95) // 2
        ("cancel-incoming", [fill(2, 3, 100, 10, C, X, None)]),
    ],
)
def test_call_self_pair_rule(impl, stp: str, expected: list) -> None:
    auction = impl.CallAuction(stp=stp)
    auction.add(1, BID, 110, 10, X, ts=5)
    auction.add(2, BID, 105, 10, C, ts=6)
    auction.add(3, ASK, 95, 10, X, ts=1)
    auction.add(4, ASK, 97, 10, T, ts=2)
    result = auction.clear()
    prices = {f[2] for f in expected}
    assert result.price in prices and len(prices) == 1
    assert cfills(result) == expected


def test_call_no_cross_and_empty(impl) -> None:
    acc = accounts(impl, B=(0, RICH, None), S=(10, 0, None))
    auction = impl.CallAuction(acc)
    assert auction.clear() == (None, [], 0, 0, 0)
    auction.add(1, BID, 90, 10, B)
    auction.add(2, ASK, 100, 10, S)
    assert auction.clear() == (None, [], 0, 2, 2)
    assert acc.get(B) == (0, RICH, None) and len(auction) == 0


def test_call_cancel_and_bad_input(impl) -> None:
    auction = impl.CallAuction()
    auction.add(1, BID, 120, 10, B)
    auction.add(2, ASK, 100, 10, S)
    with pytest.raises(ValueError):
        auction.add(2, BID, 100, 1, C)
    with pytest.raises(ValueError):
        auction.add(3, BID, 100, 0, C)
    assert auction.cancel(2) is True and auction.cancel(2) is False
    assert 1 in auction and 2 not in auction and len(auction) == 1
    assert auction.clear() == (None, [], 0, 1, 1)


def test_call_result_does_not_depend_on_arrival(impl) -> None:
    rows = [
        (1, BID, 120, 10, B, 3),
        (2, BID, 120, 10, C, 1),
        (3, BID, 110, 7, X, 2),
        (4, ASK, 100, 8, S, 4),
        (5, ASK, 100, 8, T, 4),
        (6, ASK, 105, 9, X, 0),
    ]
    results = []
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        acc = accounts(impl, B=(0, RICH, 15), C=(0, 5_000, None), S=(10, 0, None), X=(5, RICH, 9))
        auction = impl.CallAuction(acc, stp="cancel-resting")
        for oid, sd, price, qty, owner, ts in shuffled:
            auction.add(oid, sd, price, qty, owner, ts)
        result = auction.clear()
        results.append((result, [acc.get(o) for o in (B, C, S, T, X)]))
    assert all(r == results[0] for r in results)
    assert results[0][0].volume > 0
