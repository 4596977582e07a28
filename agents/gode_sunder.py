"""Gode and Sunder's (1993) double auction markets, run on the CDA engine (``Book``).

Their mechanism (data/gode_sunder_1993.json, ``mechanism``), as we run it:

- Every shout is a one-unit GTC limit order; a crossing order fills at the standing
  (earlier) order's price, which is the engine's own rule.
- A trade cancels all other standing orders.
- Units are traded in order: a trader always shouts for its next unit. A trader with no units
  left gets no turns. Units are restored at the start of each period; ZIP traders keep what
  they learnt across periods.
- Turns: one shout at a time, by a trader drawn uniformly among all traders (buyers and
  sellers pooled) with units left.
- A new shout does not withdraw the trader's earlier standing shouts (``replace_own=False``):
  orders stand until a trade or the end of the period. Since every trade clears the book,
  only the best bid and ask since the last trade can ever trade, so this is the same market
  as the "current bid / current ask, replaced only by a better one" book of most
  replications. ``replace_own=True`` is the other reading: a new shout replaces the trader's
  own standing one.
- A period is a number of turns (shouts). Once no trade can happen any more (a side has no
  units left, or every trader keeps within its limits, none learns, and the highest value
  left is below the lowest cost left), the remaining turns could change nothing, so they are
  skipped (``skip_dead``); each period draws from its own random stream, so skipping changes
  no result.

Determinism: a session's traders are born from ``Random(f"gode-sunder/{seed}")`` and
period ``k`` draws from ``Random(f"gode-sunder/{seed}/{k}")`` (string seeds are hashed with
SHA-512, independent of PYTHONHASHSEED). Several sessions may run in worker processes; the
results come back in seed order, so the output never depends on scheduling.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from random import Random

from wattmesh.agents import metrics

# A session's default size; its home is gode_sunder_defaults (the CLI reads it from there).
from wattmesh.agents.gode_sunder_defaults import PERIODS, SHOUTS
from wattmesh.agents.gode_sunder_defaults import SEEDS as SEEDS  # re-exported
from wattmesh.agents.traders import STRATEGIES, Quote, Trader, make_trader
from wattmesh.matching import ASK, BID, Book

DATA_FILE = "gode_sunder_1993.json"
# Below this many shouts in all, worker processes cost more than they save.
PARALLEL_MIN_SHOUTS = 200_000


@dataclass(frozen=True, slots=True)
class Market:
    """One of Gode and Sunder's markets: each trader's unit values (buyers) or costs
    (sellers), in the order the trader must trade them."""

    number: int
    buyers: tuple[tuple[int, ...], ...]
    sellers: tuple[tuple[int, ...], ...]
    price_min: int
    price_max: int
    note: str = ""
    equilibrium: metrics.Equilibrium = field(init=False, compare=False)
    # Each trader's profit at the equilibrium price (buyers first), for profit dispersion.
    equilibrium_profits: tuple[float, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        eq = metrics.equilibrium(self.values, self.costs)
        object.__setattr__(self, "equilibrium", eq)
        profits = [metrics.equilibrium_profit(b, True, eq.price) for b in self.buyers]
        profits += [metrics.equilibrium_profit(s, False, eq.price) for s in self.sellers]
        object.__setattr__(self, "equilibrium_profits", tuple(profits))

    @property
    def values(self) -> list[int]:
        """All buyers' unit values."""
        return [v for units in self.buyers for v in units]

    @property
    def costs(self) -> list[int]:
        """All sellers' unit costs."""
        return [c for units in self.sellers for c in units]


def load_markets() -> dict[int, Market]:
    """Gode and Sunder's five markets from the package data, by number."""
    text = resources.files("wattmesh.agents").joinpath("data", DATA_FILE).read_text("utf-8")
    data = json.loads(text)
    low, high = data["mechanism"]["price_range"]
    return {
        int(number): Market(
            number=int(number),
            buyers=tuple(tuple(units) for units in spec["buyers"]),
            sellers=tuple(tuple(units) for units in spec["sellers"]),
            price_min=low,
            price_max=high,
            note=spec.get("note", ""),
        )
        for number, spec in data["markets"].items()
    }


def load_market(number: int) -> Market:
    """One market by number (1 to 5)."""
    markets = load_markets()
    if number not in markets:
        raise ValueError(f"market: must be one of {sorted(markets)}, got {number}")
    return markets[number]


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade: ``shout`` is the turn (from 1) in its period; ``buyer`` and ``seller``
    index the market's buyers and sellers."""

    shout: int
    buyer: int
    seller: int
    price: int
    value: int
    cost: int


@dataclass(frozen=True, slots=True)
class PeriodResult:
    """One period's trades and measures. ``shouts`` is the number of turns actually run
    (fewer than asked when the dead tail was skipped)."""

    period: int
    shouts: int
    trades: tuple[Trade, ...]
    surplus: int
    efficiency: float
    alpha: float | None
    dispersion: float


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One session: ``periods`` periods of at most ``shouts`` turns with one seed."""

    market: int
    strategy: str
    seed: int
    shouts: int
    periods: tuple[PeriodResult, ...]


def make_traders(market: Market, strategy: str, rng: Random) -> list[Trader]:
    """One trader of ``strategy`` per buyer, then per seller."""
    low, high = market.price_min, market.price_max
    return [make_trader(strategy, BID, rng, low, high, len(u)) for u in market.buyers] + [
        make_trader(strategy, ASK, rng, low, high, len(u)) for u in market.sellers
    ]


def run_period(
    market: Market,
    traders: Sequence[Trader],
    rng: Random,
    shouts: int,
    *,
    replace_own: bool = False,
    skip_dead: bool = True,
) -> tuple[list[Trade], int]:
    """Run one period of at most ``shouts`` turns; ``traders`` are the market's buyers then
    its sellers. Returns the trades and the number of turns run."""
    n_buyers = len(market.buyers)
    limits = market.buyers + market.sellers
    if len(traders) != len(limits):
        raise ValueError(f"traders: need {len(limits)} (buyers then sellers), got {len(traders)}")
    sides = [BID] * n_buyers + [ASK] * len(market.sellers)
    for t, trader in enumerate(traders):
        if trader.side != sides[t]:
            raise ValueError(f"traders[{t}]: on the wrong side of the market")
    shout_of = [trader.shout for trader in traders]
    learners = [(t, trader.observe) for t, trader in enumerate(traders) if trader.adaptive]
    bounded = all(trader.within_limit for trader in traders)
    # Dead tails may be skipped only when no one learns from the shouts in them.
    may_skip = skip_dead and not learners

    unit = [0] * len(limits)  # each trader's next unit
    current = [units[0] if units else 0 for units in limits]  # that unit's value or cost
    active = [t for t in range(len(limits)) if limits[t]]

    def no_trade_possible() -> bool:
        values = [current[t] for t in active if t < n_buyers]
        costs = [current[t] for t in active if t >= n_buyers]
        return not values or not costs or (bounded and max(values) < min(costs))

    book = Book()
    submit, replace, cancel = book.submit, book.replace, book.cancel
    standing: list[int] = []  # live order ids, to cancel after a trade
    own = [0] * len(limits)  # each trader's standing order id (replace_own only)
    trades: list[Trade] = []
    random = rng.random
    n_active = len(active)
    if not n_active or (may_skip and no_trade_possible()):
        return trades, 0
    oid = 0
    turn = 0
    for turn in range(1, shouts + 1):  # noqa: B007 (the last turn run is returned)
        t = active[int(random() * n_active)]
        price = shout_of[t](limits[t], unit[t], rng)
        if price is None:  # the trader passes; the turn still counts
            continue
        oid += 1
        if replace_own and own[t]:
            fills = replace(own[t], oid, price, 1)
        else:
            fills = submit(oid, sides[t], price, 1, t)
        if fills:
            fill = book.take_fills()[0]
            b, s = fill.buyer, fill.seller
            trades.append(Trade(turn, b, s - n_buyers, fill.price, current[b], current[s]))
            # A trade cancels all other standing orders.
            for live in own if replace_own else standing:
                if live:
                    cancel(live)
            standing.clear()
            own = [0] * len(limits)
            for trader in (b, s):
                unit[trader] += 1
                if unit[trader] < len(limits[trader]):
                    current[trader] = limits[trader][unit[trader]]
                else:
                    active.remove(trader)
            n_active = len(active)
            if not n_active or (may_skip and no_trade_possible()):
                break  # the rest of the period can change nothing (see module docstring)
        elif replace_own:
            own[t] = oid
        else:
            standing.append(oid)
        if not learners:
            continue
        if fills:
            # The accepted quote is the standing one, on the other side from the shout.
            quote = Quote(ASK if sides[t] == BID else BID, fill.price, True)
        else:
            quote = Quote(sides[t], price, False)
        for i, observe in learners:
            observe(quote, limits[i], unit[i], rng)
    return trades, turn


def measure_period(
    market: Market, period: int, trades: Sequence[Trade], shouts: int
) -> PeriodResult:
    """Efficiency, Smith's alpha and profit dispersion of one period's trades."""
    eq = market.equilibrium
    n_buyers = len(market.buyers)
    profits = [0.0] * (n_buyers + len(market.sellers))
    for trade in trades:
        profits[trade.buyer] += trade.value - trade.price
        profits[n_buyers + trade.seller] += trade.price - trade.cost
    surplus = sum(trade.value - trade.cost for trade in trades)
    return PeriodResult(
        period=period,
        shouts=shouts,
        trades=tuple(trades),
        surplus=surplus,
        efficiency=metrics.allocative_efficiency(surplus, eq.surplus),
        alpha=metrics.smiths_alpha([trade.price for trade in trades], eq.price),
        dispersion=metrics.profit_dispersion(profits, market.equilibrium_profits),
    )


def check_session(strategy: str, periods: int, shouts: int) -> None:
    """Raise ValueError naming the first argument :func:`run_session` cannot run with."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if periods < 1 or shouts < 1:
        raise ValueError(f"periods and shouts must be positive, got {periods} and {shouts}")


def run_session(
    market: Market,
    strategy: str,
    seed: int,
    periods: int = PERIODS,
    shouts: int = SHOUTS,
    *,
    replace_own: bool = False,
    skip_dead: bool = True,
) -> SessionResult:
    """One session: the same traders for ``periods`` periods of at most ``shouts`` turns."""
    check_session(strategy, periods, shouts)
    traders = make_traders(market, strategy, Random(f"gode-sunder/{seed}"))
    results = []
    for period in range(1, periods + 1):
        rng = Random(f"gode-sunder/{seed}/{period}")
        trades, used = run_period(
            market, traders, rng, shouts, replace_own=replace_own, skip_dead=skip_dead
        )
        results.append(measure_period(market, period, trades, used))
    return SessionResult(market.number, strategy, seed, shouts, tuple(results))


def default_workers(sessions: int, periods: int, shouts: int) -> int:
    """Worker processes worth starting: one per core (at most one per session) for big runs."""
    if sessions * periods * shouts < PARALLEL_MIN_SHOUTS:
        return 1
    return max(1, min(os.cpu_count() or 1, sessions))


def run_sessions(
    market: Market,
    strategy: str,
    seeds: Sequence[int],
    periods: int = PERIODS,
    shouts: int = SHOUTS,
    *,
    workers: int | None = None,
    on_session: Callable[[SessionResult], None] | None = None,
    replace_own: bool = False,
    skip_dead: bool = True,
) -> list[SessionResult]:
    """One session per seed, in seed order; ``workers`` processes (None: see
    ``default_workers``). ``on_session`` is called as each session's result arrives."""
    if workers is None:
        workers = default_workers(len(seeds), periods, shouts)
    run = partial(
        run_session,
        market,
        strategy,
        periods=periods,
        shouts=shouts,
        replace_own=replace_own,
        skip_dead=skip_dead,
    )
    results: list[SessionResult] = []
    if workers <= 1 or len(seeds) <= 1:
        for seed in seeds:
            results.append(run(seed))
            if on_session is not None:
                on_session(results[-1])
        return results
    # Loaded here: multiprocessing costs every wattmesh command ~12 ms (the CLI imports this).
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, len(seeds) // (4 * workers))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # map() yields in submission order, whatever order the workers finish in.
        for result in pool.map(run, seeds, chunksize=chunk):
            results.append(result)
            if on_session is not None:
                on_session(result)
    return results


@dataclass(frozen=True, slots=True)
class Summary:
    """Measures over seeds. ``*_by_period`` lists are means over seeds, period by period
    (alpha over the sessions that traded in that period; None if none did). Spreads are
    sample standard deviations over seeds (0 for one seed); the overall spread is that of
    each seed's mean efficiency over its periods. ``price_by_period`` is the mean over seeds
    of each session's mean trade price in the period (over the sessions that traded; None if
    none did)."""

    market: int
    strategy: str
    shouts: int
    seeds: int
    efficiency: float
    efficiency_sd: float
    efficiency_by_period: list[float]
    efficiency_sd_by_period: list[float]
    alpha_by_period: list[float | None]
    dispersion_by_period: list[float]
    trades_by_period: list[float]
    price_by_period: list[float | None]


def _sd(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarize(results: Sequence[SessionResult]) -> Summary:
    """Mean and spread over seeds of the sessions' measures (same market, strategy,
    periods and shouts)."""
    if not results:
        raise ValueError("summarize: no sessions")
    first = results[0]
    by_period = list(zip(*(r.periods for r in results), strict=True))
    per_seed = [statistics.fmean(p.efficiency for p in r.periods) for r in results]
    alphas = [[p.alpha for p in ps if p.alpha is not None] for ps in by_period]
    prices = [
        [statistics.fmean(t.price for t in p.trades) for p in ps if p.trades] for ps in by_period
    ]
    return Summary(
        market=first.market,
        strategy=first.strategy,
        shouts=first.shouts,
        seeds=len(results),
        efficiency=statistics.fmean(per_seed),
        efficiency_sd=_sd(per_seed),
        efficiency_by_period=[statistics.fmean(p.efficiency for p in ps) for ps in by_period],
        efficiency_sd_by_period=[_sd([p.efficiency for p in ps]) for ps in by_period],
        alpha_by_period=[statistics.fmean(a) if a else None for a in alphas],
        dispersion_by_period=[statistics.fmean(p.dispersion for p in ps) for ps in by_period],
        trades_by_period=[statistics.fmean(len(p.trades) for p in ps) for ps in by_period],
        price_by_period=[statistics.fmean(x) if x else None for x in prices],
    )


def efficiency_by_shouts(
    market: Market,
    strategy: str,
    shout_counts: Sequence[int],
    seeds: Sequence[int],
    periods: int = PERIODS,
    *,
    workers: int | None = None,
    on_session: Callable[[SessionResult], None] | None = None,
) -> list[tuple[int, float, float]]:
    """Mean efficiency (and its spread over seeds) at each period length, as
    ``(shouts, mean, sd)``."""
    rows = []
    for shouts in shout_counts:
        summary = summarize(
            run_sessions(
                market, strategy, seeds, periods, shouts, workers=workers, on_session=on_session
            )
        )
        rows.append((shouts, summary.efficiency, summary.efficiency_sd))
    return rows
