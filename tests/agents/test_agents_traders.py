"""ZI-U, ZI-C and ZIP traders: prices within range, never a loss where promised, Cliff's
margin rules, and determinism under a seed."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.agents import gode_sunder as gs
from wattmesh.agents.traders import ZIC, ZIP, ZIU, Quote, ZIPParams, make_trader
from wattmesh.matching import ASK, BID


def draws(trader, limit: int, n: int, seed: int = 1) -> list[int | None]:
    rng = Random(seed)
    return [trader.shout(limit, rng) for _ in range(n)]


# -- ZI-U and ZI-C prices --------------------------------------------------------------


@pytest.mark.parametrize("side", [BID, ASK])
def test_zi_u_draws_over_the_whole_range_whatever_the_limit(side: int) -> None:
    prices = draws(ZIU(side, 3, 9), limit=5, n=2000)
    assert set(prices) == set(range(3, 10))  # both ends, and above and below the limit


def test_zi_c_buyer_bids_from_the_minimum_up_to_its_value() -> None:
    assert set(draws(ZIC(BID, 1, 200), limit=6, n=2000)) == set(range(1, 7))


def test_zi_c_seller_asks_from_its_cost_up_to_the_maximum() -> None:
    assert set(draws(ZIC(ASK, 1, 200), limit=195, n=2000)) == set(range(195, 201))


def test_zi_c_clamps_a_limit_outside_the_range_and_passes_when_nothing_fits() -> None:
    assert set(draws(ZIC(BID, 1, 5), limit=300, n=500)) == set(range(1, 6))
    assert set(draws(ZIC(ASK, 10, 20), limit=3, n=500)) == set(range(10, 21))
    assert draws(ZIC(BID, 10, 20), limit=9, n=3) == [None] * 3
    assert draws(ZIC(ASK, 10, 20), limit=21, n=3) == [None] * 3


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(1, 100),
    width=st.integers(0, 100),
    limit=st.integers(1, 250),
    side=st.sampled_from([BID, ASK]),
    seed=st.integers(0, 2**32),
)
def test_zi_c_price_is_in_range_and_never_past_its_limit(low, width, limit, side, seed) -> None:
    high = low + width
    price = ZIC(side, low, high).shout(limit, Random(seed))
    if price is None:
        assert (side == BID and limit < low) or (side == ASK and limit > high)
    else:
        assert low <= price <= high
        assert price <= limit if side == BID else price >= limit


def test_bad_side_range_or_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="side"):
        ZIC(7)
    with pytest.raises(ValueError, match="price range"):
        ZIU(BID, 10, 5)
    with pytest.raises(ValueError, match="strategy"):
        make_trader("zi-x", BID, Random(0))


# -- never a loss, in real sessions ----------------------------------------------------


@pytest.mark.parametrize("strategy", ["zi-c", "zip"])
@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_constrained_traders_never_trade_at_a_loss(strategy: str, number: int) -> None:
    market = gs.load_market(number)
    for seed in range(2):
        session = gs.run_session(market, strategy, seed, periods=2, shouts=500)
        trades = [t for p in session.periods for t in p.trades]
        assert trades
        assert all(t.cost <= t.price <= t.value for t in trades)


def test_zi_u_does_trade_at_a_loss_sometimes() -> None:
    # The check above can fail: unconstrained traders do lose money.
    session = gs.run_session(gs.load_market(4), "zi-u", 0, periods=2, shouts=500)
    trades = [t for p in session.periods for t in p.trades]
    assert any(t.price > t.value or t.price < t.cost for t in trades)


# -- ZIP -------------------------------------------------------------------------------


def zip_trader(side: int, margin: float, beta: float = 0.3, gamma: float = 0.0) -> ZIP:
    trader = ZIP(side, Random(0))
    trader.margin, trader.beta, trader.gamma = margin, beta, gamma
    return trader


def test_zip_draws_its_parameters_from_cliffs_ranges() -> None:
    rng = Random(5)
    for _ in range(200):
        seller, buyer = ZIP(ASK, rng), ZIP(BID, rng)
        for t in (seller, buyer):
            assert 0.1 <= t.beta <= 0.5
            assert 0.0 <= t.gamma <= 0.1
        assert 0.05 <= seller.margin <= 0.35
        assert -0.35 <= buyer.margin <= -0.05


def test_zip_shouts_its_limit_times_one_plus_margin() -> None:
    assert zip_trader(ASK, 0.25).shout(80, Random(0)) == 100
    assert zip_trader(BID, -0.25).shout(80, Random(0)) == 60
    assert zip_trader(ASK, 0.5).shout(190, Random(0)) == 200  # clamped into the range
    assert zip_trader(BID, -1.0).shout(80, Random(0)) == 1


def test_zip_seller_raises_its_margin_after_a_trade_at_or_above_its_price() -> None:
    seller = zip_trader(ASK, 0.1)  # price 110 on a cost of 100
    seller.observe(Quote(BID, 130, True), 100, True, Random(1))
    assert seller.margin > 0.1
    assert seller.shout(100, Random(0)) > 110


def test_zip_seller_lowers_after_a_bid_is_accepted_below_its_price_only_if_active() -> None:
    active, inactive = zip_trader(ASK, 0.3), zip_trader(ASK, 0.3)  # price 130
    active.observe(Quote(BID, 110, True), 100, True, Random(1))
    inactive.observe(Quote(BID, 110, True), 100, False, Random(1))
    assert active.margin < 0.3
    assert inactive.margin == 0.3


def test_zip_seller_lowers_after_an_unaccepted_ask_at_or_below_its_price() -> None:
    seller = zip_trader(ASK, 0.3)  # price 130
    seller.observe(Quote(ASK, 120, False), 100, True, Random(1))
    assert seller.margin < 0.3
    unmoved = zip_trader(ASK, 0.3)
    unmoved.observe(Quote(ASK, 140, False), 100, True, Random(1))  # a worse ask: no news
    unmoved.observe(Quote(BID, 120, False), 100, True, Random(1))  # an unaccepted bid
    assert unmoved.margin == 0.3


def test_zip_buyer_mirrors_the_seller() -> None:
    buyer = zip_trader(BID, -0.1)  # price 90 on a value of 100
    buyer.observe(Quote(ASK, 70, True), 100, True, Random(1))  # traded below: bid less
    assert buyer.margin < -0.1
    buyer = zip_trader(BID, -0.3)  # price 70
    buyer.observe(Quote(ASK, 85, True), 100, True, Random(1))  # an ask lifted above it
    assert buyer.margin > -0.3
    buyer = zip_trader(BID, -0.3)
    buyer.observe(Quote(BID, 80, False), 100, True, Random(1))  # outbid: bid more
    assert buyer.margin > -0.3


def test_zip_margins_keep_their_sign_so_it_never_bids_above_value() -> None:
    seller, buyer = zip_trader(ASK, 0.01, beta=0.5), zip_trader(BID, -0.01, beta=0.5)
    for _ in range(20):
        seller.observe(Quote(ASK, 10, False), 100, True, Random(1))
        buyer.observe(Quote(BID, 190, False), 100, True, Random(1))
    assert seller.margin == 0.0 and seller.shout(100, Random(0)) == 100
    assert buyer.margin == 0.0 and buyer.shout(100, Random(0)) == 100


def test_zip_update_is_widrow_hoff_with_momentum() -> None:
    # No perturbation: the target is q itself, so the step is beta * (q - p), smoothed.
    params = ZIPParams(relative=0.0, absolute=0.0)
    seller = ZIP(ASK, Random(0), params=params)
    seller.margin, seller.beta, seller.gamma, seller.momentum = 0.1, 0.5, 0.25, 4.0
    seller.observe(Quote(BID, 130, True), 100, True, Random(1))
    change = 0.25 * 4.0 + 0.75 * 0.5 * (130 - 110)
    assert seller.momentum == pytest.approx(change)
    assert seller.margin == pytest.approx((110 + change) / 100 - 1)


# -- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["zi-u", "zi-c", "zip"])
def test_same_seed_same_shouts(strategy: str) -> None:
    def shouts(seed: int) -> list[int | None]:
        rng = Random(seed)
        trader = make_trader(strategy, BID, rng)
        return [trader.shout(120, rng) for _ in range(50)]

    assert shouts(3) == shouts(3)
    assert shouts(3) != shouts(4)
