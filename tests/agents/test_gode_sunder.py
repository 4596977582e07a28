"""Gode and Sunder's markets on the CDA engine: the data, the measures on hand-built trades,
each rule of the mechanism, determinism, and the ``gode-sunder`` command."""

from __future__ import annotations

import json
import math
from random import Random

import pytest

from wattmesh.agents import gode_sunder as gs
from wattmesh.agents import metrics
from wattmesh.matching import ASK, BID

# -- test doubles ---------------------------------------------------------------------


class Scripted:
    """A trader that shouts a fixed list of prices (then passes) and records the limits it
    was given."""

    adaptive = False
    within_limit = False

    def __init__(self, side: int, prices: list[int | None] = ()) -> None:
        self.side = side
        self.prices = list(prices)
        self.limits: list[int] = []

    def shout(self, limits: tuple[int, ...], unit: int, rng: object) -> int | None:
        self.limits.append(limits[unit])
        return self.prices.pop(0) if self.prices else None

    def observe(self, *args: object) -> None:
        pass


class Turns:
    """A stand-in random generator that picks given positions in the list of traders with
    units left: ``(position, how many are left)`` per turn."""

    def __init__(self, picks: list[tuple[int, int]]) -> None:
        self.picks = list(picks)

    def random(self) -> float:
        position, left = self.picks.pop(0)
        return (position + 0.5) / left


def small_market(buyers, sellers) -> gs.Market:
    return gs.Market(0, tuple(map(tuple, buyers)), tuple(map(tuple, sellers)), 1, 200)


def test_a_trader_without_units_only_watches_under_every_strategy() -> None:
    # One buyer has an empty schedule: ZI-U, ZI-C and ZIP sessions all run, and every
    # trade is between the others.
    market = small_market([[150, 120], []], [[40, 60], [50]])
    for strategy in gs.STRATEGIES:
        session = gs.run_session(market, strategy, seed=3, periods=2, shouts=200)
        assert all(t.buyer == 0 for p in session.periods for t in p.trades), strategy
        assert sum(len(p.trades) for p in session.periods) > 0, strategy


# -- the data ----------------------------------------------------------------------------


def test_five_markets_of_six_buyers_and_six_sellers_on_prices_1_to_200() -> None:
    markets = gs.load_markets()
    assert sorted(markets) == [1, 2, 3, 4, 5]
    for market in markets.values():
        assert len(market.buyers) == len(market.sellers) == 6
        assert (market.price_min, market.price_max) == (1, 200)


def test_package_data_is_a_copy_of_the_shared_file() -> None:
    from importlib import resources
    from pathlib import Path

    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "gode_sunder_1993.json"
    if not shared.is_file():
        pytest.skip("shared data folder not present")
    packaged = resources.files("wattmesh.agents").joinpath("data", gs.DATA_FILE).read_bytes()
    assert packaged == shared.read_bytes()


def test_equilibria_match_what_the_data_file_states() -> None:
    markets = gs.load_markets()
    assert markets[2].equilibrium.price == 69
    assert markets[4].equilibrium.price == 170
    assert markets[3].equilibrium.quantity == 6
    # Market 5's reconstruction: 18 intramarginal units, extramarginal ones at 127 and 131.
    eq5 = markets[5].equilibrium
    assert (eq5.quantity, eq5.price_low, eq5.price_high, eq5.price) == (18, 127, 131, 129)


# -- measures on hand-built schedules and trades -------------------------------------------


def test_equilibrium_of_a_single_crossing() -> None:
    eq = metrics.equilibrium(values=[100, 80, 60], costs=[50, 70, 90])
    # Two units trade; any price in [70, 80] clears (the 2nd cost, the 2nd value).
    assert (eq.quantity, eq.quantity_max, eq.price_low, eq.price_high) == (2, 2, 70, 80)
    assert eq.price == 75.0
    assert eq.surplus == (100 - 50) + (80 - 70)


def test_equilibrium_bounded_by_the_first_units_left_out() -> None:
    # The third seller (cost 74) would sell above 74, the third buyer (60) buy below 60.
    eq = metrics.equilibrium(values=[100, 76, 60], costs=[50, 70, 74])
    assert (eq.quantity, eq.price_low, eq.price_high) == (2, 70, 74)  # not [70, 76]
    eq = metrics.equilibrium(values=[100, 76, 72], costs=[50, 70, 90])
    assert (eq.quantity, eq.price_low, eq.price_high) == (2, 72, 76)  # not [70, 76]


def test_equilibrium_with_zero_gain_units_and_when_nothing_can_trade() -> None:
    eq = metrics.equilibrium(values=[100, 60, 60], costs=[40, 60, 60])
    assert (eq.quantity, eq.quantity_max, eq.price) == (1, 3, 60)
    assert metrics.max_surplus([100, 60, 60], [40, 60, 60]) == eq.surplus == 60
    with pytest.raises(ValueError):
        metrics.equilibrium([10], [20])
    assert metrics.max_surplus([10], [20]) == 0


def test_efficiency_alpha_and_dispersion_on_hand_built_trades() -> None:
    # One buyer (values 100, 80) and two sellers (costs 50; 70); equilibrium [70, 80] -> 75.
    market = small_market([[100, 80]], [[50], [70]])
    assert market.equilibrium.surplus == 60
    assert market.equilibrium_profits == (25 + 5, 25, 5)
    trades = [gs.Trade(1, 0, 0, 90, 100, 50), gs.Trade(2, 0, 1, 60, 80, 70)]
    result = gs.measure_period(market, 1, trades, shouts=2)
    assert result.surplus == 60 and result.efficiency == 100.0
    assert result.alpha == pytest.approx(100 * math.sqrt((15**2 + 15**2) / 2) / 75)
    # Actual profits: buyer 10 + 20 = 30, seller 0: 40, seller 1: -10.
    assert result.dispersion == pytest.approx(math.sqrt((0**2 + 15**2 + 15**2) / 3))
    only_one = gs.measure_period(market, 1, trades[:1], shouts=1)
    assert only_one.efficiency == pytest.approx(100 * 50 / 60)
    nothing = gs.measure_period(market, 1, [], shouts=5)
    assert nothing.efficiency == 0.0 and nothing.alpha is None


def test_summary_mean_price_per_period_is_over_seeds_of_each_sessions_mean() -> None:
    market = small_market([[100, 80]], [[50], [70]])

    def session(seed: int, *periods: list[int]) -> gs.SessionResult:
        results = [
            gs.measure_period(market, k + 1, [gs.Trade(1, 0, 0, p, 100, 50) for p in prices], 9)
            for k, prices in enumerate(periods)
        ]
        return gs.SessionResult(0, "zip", seed, 9, tuple(results))

    # Seed 0's period 1 averages 80 (two trades), seed 1's 70; in period 2 only seed 1 trades;
    # in period 3 nobody does.
    summary = gs.summarize([session(0, [90, 70], [], []), session(1, [70], [60], [])])
    assert summary.price_by_period == [75.0, 60.0, None]


def test_smiths_alpha_is_rms_deviation_over_the_equilibrium_price() -> None:
    assert metrics.rms_deviation([90, 110], 100) == 10.0
    assert metrics.smiths_alpha([90, 110], 100) == 10.0
    assert metrics.smiths_alpha([100, 100], 100) == 0.0
    assert metrics.smiths_alpha([], 100) is None


@pytest.mark.parametrize("number, efficiency", [(1, 90.0), (2, 90.0), (3, 76.74), (4, 48.78)])
def test_zi_u_trades_every_unit_given_time(number: int, efficiency: float) -> None:
    # Every unit trades, so the surplus is all values minus all costs, whatever the prices:
    # the same ZI-U efficiencies as Gode and Sunder's table (90.0, 90.0, 76.7, 48.8).
    market = gs.load_market(number)
    session = gs.run_session(market, "zi-u", 0, periods=2, shouts=2000)
    for period in session.periods:
        assert len(period.trades) == len(market.values)
        assert period.efficiency == pytest.approx(efficiency, abs=0.01)


# -- the mechanism, rule by rule -------------------------------------------------------


def test_a_trade_is_at_the_price_of_the_earlier_order() -> None:
    market = small_market([[150]], [[50]])
    bid_first = [Scripted(BID, [120]), Scripted(ASK, [80])]
    trades, _ = gs.run_period(market, bid_first, Turns([(0, 2), (1, 2)]), shouts=2)
    assert [t.price for t in trades] == [120]
    ask_first = [Scripted(BID, [120]), Scripted(ASK, [80])]
    trades, _ = gs.run_period(market, ask_first, Turns([(1, 2), (0, 2)]), shouts=2)
    assert [t.price for t in trades] == [80]


def test_every_order_is_for_one_unit() -> None:
    # A buyer with two units bids once; two sellers ask below it: one unit trades.
    market = small_market([[150, 140]], [[50], [50]])
    traders = [Scripted(BID, [120]), Scripted(ASK, [80]), Scripted(ASK, [90])]
    trades, _ = gs.run_period(market, traders, Turns([(0, 3), (1, 3), (1, 3)]), shouts=3)
    assert [(t.seller, t.price) for t in trades] == [(0, 120)]


def test_a_trade_cancels_all_other_standing_orders() -> None:
    market = small_market([[150], [150]], [[50], [50]])
    # Buyer 0 bids 100, buyer 1 bids 110; seller 0 asks 105 and trades with buyer 1.
    # Buyer 0's bid of 100 is then gone: seller 1's ask of 95 does not trade.
    traders = [
        Scripted(BID, [100]),
        Scripted(BID, [110]),
        Scripted(ASK, [105]),
        Scripted(ASK, [95]),
    ]
    turns = Turns([(0, 4), (1, 4), (2, 4), (1, 2)])
    trades, _ = gs.run_period(market, traders, turns, shouts=4)
    assert [(t.buyer, t.seller, t.price) for t in trades] == [(1, 0, 110)]


def test_a_new_shout_leaves_the_traders_earlier_one_standing() -> None:
    market = small_market([[150]], [[50]])
    # The buyer bids 90, then 50; an ask of 80 still meets the bid of 90.
    turns = [(0, 2), (0, 2), (1, 2)]
    traders = [Scripted(BID, [90, 50]), Scripted(ASK, [80])]
    trades, _ = gs.run_period(market, traders, Turns(turns), shouts=3)
    assert [t.price for t in trades] == [90]
    # The other reading (replace_own): the bid of 50 replaced the 90, so nothing trades.
    traders = [Scripted(BID, [90, 50]), Scripted(ASK, [80])]
    trades, _ = gs.run_period(market, traders, Turns(turns), shouts=3, replace_own=True)
    assert trades == []


def test_units_trade_in_order_and_a_trader_without_units_gets_no_turns() -> None:
    market = small_market([[150, 140]], [[50], [60]])
    buyer, seller0, seller1 = Scripted(BID, [100, 100]), Scripted(ASK, [90]), Scripted(ASK, [95])
    # Seller 0 trades its only unit, then only the buyer and seller 1 are left.
    turns = Turns([(0, 3), (1, 3), (0, 2), (1, 2)])
    trades, used = gs.run_period(market, [buyer, seller0, seller1], turns, shouts=10)
    assert [(t.value, t.cost, t.seller) for t in trades] == [(150, 50, 0), (140, 60, 1)]
    assert buyer.limits == [150, 140]  # each shout is for the next unit in order
    assert seller0.limits == [50]
    assert used == 4  # nobody has units left: the period is over


def test_turns_are_uniform_over_buyers_and_sellers_pooled() -> None:
    market = gs.load_market(1)
    traders = [Scripted(BID) for _ in market.buyers] + [Scripted(ASK) for _ in market.sellers]
    _, used = gs.run_period(market, traders, Random(7), shouts=12_000, skip_dead=False)
    assert used == 12_000
    counts = [len(t.limits) for t in traders]
    assert all(880 <= c <= 1120 for c in counts), counts  # 1000 each, binomial sd about 30


def test_units_are_restored_each_period() -> None:
    market = gs.load_market(1)
    session = gs.run_session(market, "zi-u", 3, periods=3, shouts=2000)
    for period in session.periods:
        first_by_buyer = {}
        for t in period.trades:
            first_by_buyer.setdefault(t.buyer, t.value)
        assert first_by_buyer == {b: 102 for b in range(6)}


def test_a_period_runs_at_most_its_shouts() -> None:
    market = gs.load_market(3)
    session = gs.run_session(market, "zi-c", 1, periods=2, shouts=40, skip_dead=False)
    assert [p.shouts for p in session.periods] == [40, 40]
    assert all(t.shout <= 40 for p in session.periods for t in p.trades)


@pytest.mark.parametrize("strategy", ["zi-u", "zi-c"])
def test_skipping_a_dead_tail_changes_no_result(strategy: str) -> None:
    for number in (1, 5):
        market = gs.load_market(number)
        fast = gs.run_session(market, strategy, 2, periods=3, shouts=1500)
        full = gs.run_session(market, strategy, 2, periods=3, shouts=1500, skip_dead=False)
        assert [p.trades for p in fast.periods] == [p.trades for p in full.periods]
        assert [p.efficiency for p in fast.periods] == [p.efficiency for p in full.periods]
    assert any(p.shouts < 1500 for p in fast.periods)  # and it did skip something


def test_traders_on_the_wrong_side_are_refused() -> None:
    market = small_market([[150]], [[50]])
    with pytest.raises(ValueError, match="wrong side"):
        gs.run_period(market, [Scripted(ASK), Scripted(ASK)], Random(0), shouts=1)
    with pytest.raises(ValueError, match="traders"):
        gs.run_period(market, [Scripted(BID)], Random(0), shouts=1)


# -- ZIP converges -------------------------------------------------------------------------


@pytest.mark.parametrize("number", [1, 2])
def test_zip_converges_to_the_equilibrium_price(number: int) -> None:
    # 4 seeds x 6 periods x 300 shouts (about a second). Per-unit margins end at a
    # last-period alpha of 2.5 (market 1) and 3.3 (market 2); the single margin shared by
    # a trader's units (before issue 19) ended at 11.8 and 20.6, its prices stuck near the
    # ZI-C level (79 and 79 against 82 and 69).
    market = gs.load_market(number)
    summary = gs.summarize(gs.run_sessions(market, "zip", range(4), 6, 300, workers=1))
    first, last = summary.alpha_by_period[0], summary.alpha_by_period[-1]
    assert last is not None and first is not None
    assert last <= 7.0
    assert last < first / 2  # it learns: period 1 starts from random margins
    assert summary.efficiency >= 99.0


# -- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["zi-u", "zi-c", "zip"])
def test_same_seed_same_session(strategy: str) -> None:
    market = gs.load_market(2)
    one = gs.run_session(market, strategy, 11, periods=2, shouts=300)
    assert one == gs.run_session(market, strategy, 11, periods=2, shouts=300)
    assert one != gs.run_session(market, strategy, 12, periods=2, shouts=300)


def test_worker_processes_give_the_same_results_in_seed_order() -> None:
    market = gs.load_market(4)
    serial = gs.run_sessions(market, "zi-c", [5, 1, 3], periods=2, shouts=200, workers=1)
    parallel = gs.run_sessions(market, "zi-c", [5, 1, 3], periods=2, shouts=200, workers=2)
    assert [r.seed for r in parallel] == [5, 1, 3]
    assert parallel == serial


# -- the command ---------------------------------------------------------------------------


COMMAND = ("simulate", "gode-sunder")


def test_json_output_has_the_documented_keys_and_is_reproducible(cli) -> None:
    args = [
        "--market",
        "3",
        "--strategy",
        "zi-c",
        "--shouts",
        "300",
        "--seeds",
        "3",
        "--json",
    ]
    code, out, err = cli(*COMMAND, *args)
    assert code == 0, err
    assert cli(*COMMAND, *args)[1] == out
    data = json.loads(out)
    assert list(data) == [
        "market",
        "strategy",
        "shouts",
        "seeds",
        "efficiency",
        "efficiency_by_period",
        "alpha",
        "dispersion",
        "trades",
    ]
    assert (data["market"], data["strategy"], data["shouts"], data["seeds"]) == (3, "zi-c", 300, 3)
    assert len(data["efficiency_by_period"]) == len(data["alpha"]) == 6
    # efficiency is the mean over seeds and periods (equal periods per seed).
    assert data["efficiency"] == pytest.approx(sum(data["efficiency_by_period"]) / 6, abs=1e-3)
    results = gs.run_sessions(gs.load_market(3), "zi-c", [0, 1, 2], 6, 300)
    mean = sum(p.efficiency for r in results for p in r.periods) / 18
    assert data["efficiency"] == pytest.approx(mean, abs=1e-4)


def test_text_output_reports_each_period_and_overall(cli) -> None:
    code, out, err = cli(
        *COMMAND,
        "--market",
        "1",
        "--strategy",
        "zi-u",
        "--seeds",
        "2",
        "--periods",
        "3",
        "--shouts",
        "2000",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert "equilibrium price 82" in lines[0]
    rows = [line.split() for line in lines if line[:1].isdigit() or line.startswith("overall")]
    assert [row[0] for row in rows] == ["1", "2", "3", "overall"]
    assert all(row[1] == "90.00" for row in rows)


def test_plot_writes_the_three_pngs(cli, tmp_path) -> None:
    code, out, err = cli(
        *COMMAND,
        "--market",
        "2",
        "--strategy",
        "zi-c",
        "--seeds",
        "2",
        "--periods",
        "1",
        "--shouts",
        "100",
        "--plot",
        str(tmp_path / "img"),
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert names == [
        "gode-sunder-market2-efficiency-by-shouts.png",
        "gode-sunder-market2-schedules.png",
        "gode-sunder-market2-zi-c-prices.png",
    ]
    assert all((tmp_path / "img" / n).read_bytes()[:4] == b"\x89PNG" for n in names)


def test_plot_for_zip_adds_its_mean_price_per_period_beside_zi_c(cli, tmp_path) -> None:
    args = ["--market", "1", "--seeds", "2", "--periods", "2", "--shouts", "100"]
    code, _out, err = cli(*COMMAND, *args, "--strategy", "zip", "--plot", str(tmp_path / "a"))
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [
        "gode-sunder-market1-convergence.png",
        "gode-sunder-market1-efficiency-by-shouts.png",
        "gode-sunder-market1-schedules.png",
        "gode-sunder-market1-zip-prices.png",
    ]
    assert (tmp_path / "a" / names[0]).read_bytes()[:4] == b"\x89PNG"
    # The same options write the same bytes.
    code, _out, err = cli(*COMMAND, *args, "--strategy", "zip", "--plot", str(tmp_path / "b"))
    assert code == 0, err
    assert all(
        (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--market", "6", "--strategy", "zi-c"],
        ["--market", "1", "--strategy", "zz"],
        ["--market", "1", "--strategy", "zi-c", "--shouts", "0"],
    ],
)
def test_bad_options_are_refused_with_exit_code_2(cli, args: list[str]) -> None:
    code, _out, _err = cli(*COMMAND, *args)
    assert code == 2
