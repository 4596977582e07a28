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
    return [trader.shout((limit,), 0, rng) for _ in range(n)]


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
    price = ZIC(side, low, high).shout((limit,), 0, Random(seed))
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
    with pytest.raises(ValueError, match="units"):
        ZIP(ASK, Random(0), units=-1)


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

UNIT = (100,)  # one unit of limit 100, for the rule tests


def zip_trader(side: int, margin: float, beta: float = 0.3, gamma: float = 0.0) -> ZIP:
    trader = ZIP(side, Random(0))
    trader.margins[0], trader.beta, trader.gamma = margin, beta, gamma
    return trader


def test_zip_draws_its_parameters_from_cliffs_ranges() -> None:
    rng = Random(5)
    for _ in range(200):
        seller, buyer = ZIP(ASK, rng, units=3), ZIP(BID, rng, units=3)
        for t in (seller, buyer):
            assert 0.1 <= t.beta <= 0.5
            assert 0.0 <= t.gamma <= 0.1
            assert len(t.margins) == len(t.momenta) == 3
        assert all(0.05 <= m <= 0.35 for m in seller.margins)
        assert all(-0.35 <= m <= -0.05 for m in buyer.margins)
    assert len(set(seller.margins)) == 3  # each unit draws its own
    made = make_trader("zip", BID, Random(0), units=6)
    assert isinstance(made, ZIP) and len(made.margins) == 6


def test_zip_shouts_its_limit_times_one_plus_margin() -> None:
    assert zip_trader(ASK, 0.25).shout((80,), 0, Random(0)) == 100
    assert zip_trader(BID, -0.25).shout((80,), 0, Random(0)) == 60
    assert zip_trader(ASK, 0.5).shout((190,), 0, Random(0)) == 200  # clamped into the range
    assert zip_trader(BID, -1.0).shout((80,), 0, Random(0)) == 1


def test_zip_seller_raises_its_margin_after_a_trade_at_or_above_its_price() -> None:
    seller = zip_trader(ASK, 0.1)  # price 110 on a cost of 100
    seller.observe(Quote(BID, 130, True), UNIT, 0, Random(1))
    assert seller.margins[0] > 0.1
    assert seller.shout(UNIT, 0, Random(0)) > 110


def test_zip_seller_lowers_after_a_bid_is_accepted_below_its_price_only_if_active() -> None:
    active, inactive = zip_trader(ASK, 0.3), zip_trader(ASK, 0.3)  # price 130
    active.observe(Quote(BID, 110, True), UNIT, 0, Random(1))
    inactive.observe(Quote(BID, 110, True), UNIT, 1, Random(1))  # its unit has traded
    assert active.margins[0] < 0.3
    assert inactive.margins[0] == 0.3
    lifted = zip_trader(ASK, 0.3)
    lifted.observe(Quote(ASK, 110, True), UNIT, 0, Random(1))  # an ask lifted: Cliff's rule
    assert lifted.margins[0] == 0.3  # lowers only after an accepted bid


def test_zip_seller_lowers_after_an_unaccepted_ask_at_or_below_its_price() -> None:
    seller = zip_trader(ASK, 0.3)  # price 130
    seller.observe(Quote(ASK, 120, False), UNIT, 0, Random(1))
    assert seller.margins[0] < 0.3
    unmoved = zip_trader(ASK, 0.3)
    unmoved.observe(Quote(ASK, 140, False), UNIT, 0, Random(1))  # a worse ask: no news
    unmoved.observe(Quote(BID, 120, False), UNIT, 0, Random(1))  # an unaccepted bid
    assert unmoved.margins[0] == 0.3


def test_zip_compares_the_price_it_shouts_not_the_unrounded_one() -> None:
    # 128.6 is shouted as 129: an ask at 129 is at its price, so it lowers; a buyer at
    # 126.4 bids 126 and raises after seeing a bid of 126. Unrounded, neither would move.
    seller = zip_trader(ASK, 0.286)
    seller.observe(Quote(ASK, 129, False), UNIT, 0, Random(1))
    assert seller.margins[0] < 0.286
    buyer = zip_trader(BID, -0.736)
    buyer.observe(Quote(BID, 26, False), UNIT, 0, Random(1))  # price 26.4, shouted 26
    assert buyer.margins[0] > -0.736


def test_zip_buyer_mirrors_the_seller() -> None:
    buyer = zip_trader(BID, -0.1)  # price 90 on a value of 100
    buyer.observe(Quote(ASK, 70, True), UNIT, 0, Random(1))  # traded below: bid less
    assert buyer.margins[0] < -0.1
    buyer = zip_trader(BID, -0.3)  # price 70
    buyer.observe(Quote(ASK, 85, True), UNIT, 0, Random(1))  # an ask lifted above it
    assert buyer.margins[0] > -0.3
    buyer = zip_trader(BID, -0.3)
    buyer.observe(Quote(BID, 80, False), UNIT, 0, Random(1))  # outbid: bid more
    assert buyer.margins[0] > -0.3


def test_zip_margins_keep_their_sign_so_it_never_bids_above_value() -> None:
    seller, buyer = zip_trader(ASK, 0.01, beta=0.5), zip_trader(BID, -0.01, beta=0.5)
    for _ in range(20):
        seller.observe(Quote(ASK, 10, False), UNIT, 0, Random(1))
        buyer.observe(Quote(BID, 190, False), UNIT, 0, Random(1))
    assert seller.margins[0] == 0.0 and seller.shout(UNIT, 0, Random(0)) == 100
    assert buyer.margins[0] == 0.0 and buyer.shout(UNIT, 0, Random(0)) == 100


def test_zip_update_is_widrow_hoff_with_momentum() -> None:
    # No perturbation: the target is q itself, so the step is beta * (q - p), smoothed.
    params = ZIPParams(relative=0.0, absolute=0.0)
    seller = ZIP(ASK, Random(0), params=params)
    seller.margins[0], seller.beta, seller.gamma, seller.momenta[0] = 0.1, 0.5, 0.25, 4.0
    seller.observe(Quote(BID, 130, True), UNIT, 0, Random(1))
    change = 0.25 * 4.0 + 0.75 * 0.5 * (130 - 110)
    assert seller.momenta[0] == pytest.approx(change)
    assert seller.margins[0] == pytest.approx((110 + change) / 100 - 1)


def test_zip_units_have_independent_margins() -> None:
    # A seller with three units (costs 60, 80, 100), on its second: each unit shouts its
    # own cost times its own margin, and an event moves only the units it concerns.
    limits = (60, 80, 100)
    seller = ZIP(ASK, Random(0), units=3)
    seller.margins[:] = [0.5, 0.25, 0.1]
    assert [seller.shout(limits, k, Random(0)) for k in range(3)] == [90, 100, 110]
    # An unaccepted ask at 95: the current unit (100 >= 95) lowers; the traded first unit
    # is inactive and may not lower; the third has not come up, so it does not learn.
    seller.observe(Quote(ASK, 95, False), limits, 1, Random(1))
    assert seller.margins[0] == 0.5 and seller.margins[2] == 0.1
    assert seller.margins[1] < 0.25
    assert seller.momenta[0] == seller.momenta[2] == 0.0
    # A trade at 120: the current unit (price <= 120) and the traded one (90) both raise,
    # each by its own step; the third still does not learn.
    before = list(seller.margins)
    seller.observe(Quote(BID, 120, True), limits, 1, Random(2))
    assert seller.margins[0] > before[0] and seller.margins[1] > before[1]
    assert seller.margins[2] == 0.1
    assert seller.momenta[0] != seller.momenta[1]


def test_zip_with_every_unit_traded_still_raises_its_margins() -> None:
    buyer = ZIP(BID, Random(0), units=2)
    buyer.margins[:] = [-0.2, -0.1]
    limits = (150, 100)  # prices 120 and 90
    buyer.observe(Quote(ASK, 80, True), limits, 2, Random(1))  # traded below both
    assert buyer.margins[0] < -0.2 and buyer.margins[1] < -0.1
    learnt = list(buyer.margins)
    buyer.observe(Quote(ASK, 200, True), limits, 2, Random(1))  # above both: inactive
    buyer.observe(Quote(BID, 190, False), limits, 2, Random(1))  # outbid: inactive
    assert buyer.margins == learnt  # no unit left to trade, so none raises its price


# -- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["zi-u", "zi-c", "zip"])
def test_same_seed_same_shouts(strategy: str) -> None:
    def shouts(seed: int) -> list[int | None]:
        rng = Random(seed)
        trader = make_trader(strategy, BID, rng)
        return [trader.shout((120,), 0, rng) for _ in range(50)]

    assert shouts(3) == shouts(3)
    assert shouts(3) != shouts(4)
