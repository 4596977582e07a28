"""The Energo community: households with meters, threshold agents and a call auction every
15 minutes under Bmax caps, against the same households trading with the grid alone.

    result = simulate(CommunityConfig(days=7, seed=1))
    result.summary()          # one JSON-able dict: scenario, totals, bids, intervals, households

The model (docs/community.md has the reasoning and the numbers):

- Household `h` has an energy balance `E` (Wh) in the community storage, capped at `Bmax`,
  and a money balance `M` (nano-currency). `Bmax` comes from the target storage cost per
  user `Cu` by the Energo whitepaper's formula (`bmax_wh`).
- Each 15-minute interval `t`:
  1. every agent looks at its balance and posts or withdraws orders for `t`;
  2. the meter reading of `t` arrives: the interval's production first covers its
     consumption (behind the meter), the net raises the balance up to `Bmax` (the rest
     is exported at the feed-in price) or lowers it down to 0 (the rest is imported at the
     retail price);
  3. at the close of `t`, one `CallAuction` clears every open order under the caps, with
     the balances after the reading; fills move energy and money between households.
- The grid-alone twin of each household has the same meter and the same `Bmax` storage,
  and no market: its storage only shifts its own production to its own later consumption.

Everything is an integer (Wh, micro-currency per kWh, nano-currency, ms); nothing is
printed; the same config gives the same result, bit for bit.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from wattmesh.agents.threshold import OpenOrder, ThresholdAgent
from wattmesh.matching import ASK, BID, MAX_PRICE, Accounts, CallAuction
from wattmesh.meters.profiles import INTERVALS_PER_DAY, household_days, weather
from wattmesh.settlement.readings import (
    DEFAULT_FEEDIN_PRICE,
    DEFAULT_RETAIL_PRICE,
    net_to_balance,
)

__all__ = [
    "CONSUMER",
    "DEPOSIT",
    "INTERVAL_MS",
    "PROSUMER",
    "STORAGE_PRICE_PER_KWH",
    "BidStats",
    "CommunityConfig",
    "CommunityResult",
    "Household",
    "Intervals",
    "bmax_wh",
    "simulate",
]

INTERVAL_MS = 15 * 60 * 1000

# The whitepaper's storage sizing: capacity is 150% (3/2) of the community's average
# balance, the average balance is half of Bmax, and capacity costs 200 $/kWh.
STORAGE_PRICE_PER_KWH = 200
SIZING = (3, 2)
AVERAGE_SHARE = (1, 2)

# Each household's opening deposit (nano-currency: one million currency units). Large
# enough that money never limits a bid or a grid bill in any run the CLI allows, so the
# market is limited by energy and Bmax only, as in the whitepaper.
DEPOSIT = 10**15

# Where a household's target prices sit between the feed-in price (0) and the retail
# price (1000), in permille: a buyer gains on any price below retail, a seller on any
# price above feed-in. Drawn uniformly per household.
BUY_TARGET = (500, 950)
SELL_TARGET = (100, 600)
# The agents act at their own second in each interval (a bot's timer), within a minute.
WAKE_MS = (0, 59_999)

PROSUMER = "prosumer"
CONSUMER = "consumer"


def bmax_wh(cost: int, storage_price_per_kwh: int = STORAGE_PRICE_PER_KWH) -> int:
    """Bmax (Wh) for a target storage cost per user `cost` (currency units).

    Energo: `Cu = price * 1.5 * Bmax / 2` with Bmax in kWh and price in currency per kWh,
    so `Bmax = 4 * Cu / (3 * price)` kWh. Rounded down to a whole Wh; 300 $ at 200 $/kWh
    gives 2000 Wh.
    """
    if cost <= 0 or storage_price_per_kwh <= 0:
        raise ValueError("the storage cost per user and the storage price must be positive")
    num = 1000 * cost * SIZING[1] * AVERAGE_SHARE[1]
    den = storage_price_per_kwh * SIZING[0] * AVERAGE_SHARE[0]
    return num // den


@dataclass(frozen=True, slots=True)
class CommunityConfig:
    """A community run. Energies per household are expected kWh per 30-day month.

    Defaults: the Gabrich scenario (130 households: 50 prosumers using 360 kWh/month with
    panels making as much, 80 consumers using 1125 kWh/month), 30 days, Cu = 300 $.
    Prices are micro-currency per kWh; thresholds are permille of Bmax.
    """

    households: int = 130
    prosumers: int = 50
    days: int = 30
    seed: int = 0
    bmax_cost: int = 300
    retail: int = DEFAULT_RETAIL_PRICE
    feed_in: int = DEFAULT_FEEDIN_PRICE
    prosumer_consumption: int = 360
    consumer_consumption: int = 1125
    prosumer_production: int = 360
    lower_permille: int = 250
    upper_permille: int = 750
    start_ms: int = 1_704_067_200_000  # 2024-01-01T00:00Z; the profiles' day starts here

    @property
    def consumers(self) -> int:
        return self.households - self.prosumers

    @property
    def bmax(self) -> int:
        return bmax_wh(self.bmax_cost)

    @property
    def thresholds(self) -> tuple[int, int]:
        """The agents' (lower, upper) balance thresholds in Wh."""
        b = self.bmax
        return b * self.lower_permille // 1000, b * self.upper_permille // 1000

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.households < 1:
            raise ValueError(f"households: need at least 1, got {self.households}")
        if not 0 <= self.prosumers <= self.households:
            raise ValueError(f"prosumers: need 0..{self.households}, got {self.prosumers}")
        if self.days < 1:
            raise ValueError(f"days: need at least 1, got {self.days}")
        if self.bmax_cost < 1:
            raise ValueError(f"bmax_cost: need a positive cost, got {self.bmax_cost}")
        if not 0 < self.feed_in < self.retail <= MAX_PRICE:
            raise ValueError(
                f"prices: need 0 < feed-in < retail <= {MAX_PRICE}, "
                f"got feed-in {self.feed_in} and retail {self.retail}"
            )
        for name in ("prosumer_consumption", "consumer_consumption", "prosumer_production"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lower_permille < self.upper_permille <= 1000:
            raise ValueError("thresholds: need 0 <= lower < upper <= 1000 permille of Bmax")
        lower, upper = self.thresholds
        if not lower < upper:
            raise ValueError(
                f"bmax_cost: Bmax of {self.bmax} Wh is too small to set thresholds apart"
            )
        # The profiles' noise factors multiply to less than 2, so no household consumes
        # more than twice its monthly figure per 30 days: bound its grid bill by that.
        months = self.days // 30 + 1
        most = max(self.prosumer_consumption, self.consumer_consumption)
        if self.retail * 2 * most * 1000 * months > DEPOSIT:
            raise ValueError(
                "consumption, days and retail price together could exhaust a household's "
                f"deposit of {DEPOSIT} nano-currency: choose smaller ones"
            )


@dataclass(frozen=True, slots=True)
class Household:
    """One household's totals over the run (Wh, micro-currency/kWh, nano-currency)."""

    index: int
    name: str
    kind: str
    buy_price: int
    sell_price: int
    produced: int
    consumed: int
    imported: int
    exported: int
    bought: int
    sold: int
    paid: int
    received: int
    energy: int  # balance at the end
    money: int  # money balance at the end (the deposit, less bills, plus income)
    grid_imported: int  # the grid-alone twin (same storage, no market)
    grid_exported: int
    cost: int  # retail * imported - feed-in * exported + paid - received
    grid_cost: int  # retail * grid_imported - feed-in * grid_exported

    @property
    def savings(self) -> int:
        """What the market saved against the grid alone (nano-currency; may be < 0)."""
        return self.grid_cost - self.cost


@dataclass(frozen=True, slots=True)
class Intervals:
    """Per-interval columns (`array('q')`, one entry per interval). `price` is -1 where no
    trade cleared; balances are taken after the clearing."""

    start: array
    price: array
    volume: array
    orders: array
    fills: array
    held_bids: array  # bids whose remaining quantity exceeded the owner's Bmax headroom
    balance: array  # the community's total balance
    prosumer_balance: array  # the prosumers' part of it
    max_balance: array  # the largest household balance
    produced: array
    consumed: array
    imported: array
    exported: array


@dataclass(frozen=True, slots=True)
class BidStats:
    """How the agents' orders fared.

    A bid is *held by the cap* at a clearing when its remaining quantity exceeds its
    owner's Bmax headroom (Bmax less the balance), so the engine cannot execute all of it
    whatever the asks; it *executed later* if it traded at a later clearing.
    """

    bids_posted: int
    bids_withdrawn: int
    asks_posted: int
    asks_withdrawn: int
    bids_held: int
    bids_held_then_executed: int
    bought_after_hold: int  # Wh those bids bought at clearings after they were first held


@dataclass(frozen=True, slots=True)
class CommunityResult:
    """A community run: the config, Bmax, per-household totals, per-interval columns, the
    agents' order statistics and, if asked, every balance after every clearing."""

    config: CommunityConfig
    bmax: int
    lower: int
    upper: int
    households: list[Household]
    intervals: Intervals
    bids: BidStats
    # With record_balances: row-major, balances[t * households + h], Wh after interval t.
    balances: array | None

    def balance(self, t: int, h: int) -> int:
        """Household `h`'s balance (Wh) after interval `t` (needs `record_balances`)."""
        if self.balances is None:
            raise ValueError("balances were not recorded (simulate(record_balances=True))")
        return self.balances[t * self.config.households + h]

    def summary(self) -> dict:
        """The report as one JSON-able dict of ints, strings, nulls, lists and dicts."""
        cfg, hs, iv = self.config, self.households, self.intervals
        traded = sum(iv.volume)
        money = sum(v * p for v, p in zip(iv.volume, iv.price, strict=True) if v)
        cost = sum(h.cost for h in hs)
        grid_cost = sum(h.grid_cost for h in hs)
        by_kind = {}
        for kind in (PROSUMER, CONSUMER):
            group = [h for h in hs if h.kind == kind]
            savings = [h.savings for h in group]
            by_kind[kind] = {
                "households": len(group),
                "cost_nano": sum(h.cost for h in group),
                "grid_alone_cost_nano": sum(h.grid_cost for h in group),
                "savings_nano": sum(savings),
                "min_savings_nano": min(savings) if group else None,
                "max_savings_nano": max(savings) if group else None,
                "bought_wh": sum(h.bought for h in group),
                "sold_wh": sum(h.sold for h in group),
            }
        return {
            "scenario": {
                "households": cfg.households,
                "prosumers": cfg.prosumers,
                "consumers": cfg.consumers,
                "days": cfg.days,
                "seed": cfg.seed,
                "prosumer_consumption_kwh_month": cfg.prosumer_consumption,
                "consumer_consumption_kwh_month": cfg.consumer_consumption,
                "prosumer_production_kwh_month": cfg.prosumer_production,
                "bmax_cost": cfg.bmax_cost,
                "storage_price_per_kwh": STORAGE_PRICE_PER_KWH,
                "bmax_wh": self.bmax,
                "lower_threshold_wh": self.lower,
                "upper_threshold_wh": self.upper,
                "retail": cfg.retail,
                "feed_in": cfg.feed_in,
                "deposit_nano": DEPOSIT,
                "start_ms": cfg.start_ms,
                "interval_ms": INTERVAL_MS,
                "intervals": len(iv.start),
            },
            "totals": {
                "produced_wh": sum(iv.produced),
                "consumed_wh": sum(iv.consumed),
                "traded_wh": traded,
                "traded_nano": money,
                "vwap": money // traded if traded else None,
                "intervals_with_trades": sum(1 for v in iv.volume if v),
                "fills": sum(iv.fills),
                "imported_wh": sum(iv.imported),
                "exported_wh": sum(iv.exported),
                "grid_alone_imported_wh": sum(h.grid_imported for h in hs),
                "grid_alone_exported_wh": sum(h.grid_exported for h in hs),
                "community_balance_cap_wh": self.bmax * cfg.households,
                "cost_nano": cost,
                "grid_alone_cost_nano": grid_cost,
                "savings_nano": grid_cost - cost,
            },
            "by_kind": by_kind,
            "orders": asdict(self.bids),
            "intervals": {
                "start_ms": list(iv.start),
                "price": [p if p >= 0 else None for p in iv.price],
                "volume_wh": list(iv.volume),
                "held_bids": list(iv.held_bids),
                "balance_wh": list(iv.balance),
                "prosumer_balance_wh": list(iv.prosumer_balance),
                "max_balance_wh": list(iv.max_balance),
                "imported_wh": list(iv.imported),
                "exported_wh": list(iv.exported),
            },
            "households": [
                {
                    "name": h.name,
                    "kind": h.kind,
                    "buy_price": h.buy_price,
                    "sell_price": h.sell_price,
                    "produced_wh": h.produced,
                    "consumed_wh": h.consumed,
                    "imported_wh": h.imported,
                    "exported_wh": h.exported,
                    "bought_wh": h.bought,
                    "sold_wh": h.sold,
                    "paid_nano": h.paid,
                    "received_nano": h.received,
                    "end_balance_wh": h.energy,
                    "cost_nano": h.cost,
                    "grid_alone_cost_nano": h.grid_cost,
                    "savings_nano": h.savings,
                }
                for h in hs
            ],
        }


def _agent(cfg: CommunityConfig, h: int) -> tuple[ThresholdAgent, int]:
    """Household h's agent and the ms into each interval at which it acts."""
    rng = random.Random(f"wattmesh-agent:{cfg.seed}:{h}")
    spread = cfg.retail - cfg.feed_in

    def between(bounds: tuple[int, int]) -> int:
        lo, hi = bounds
        return lo + int(rng.random() * (hi - lo + 1))

    buy = cfg.feed_in + spread * between(BUY_TARGET) // 1000
    sell = cfg.feed_in + spread * between(SELL_TARGET) // 1000
    lower, upper = cfg.thresholds
    return ThresholdAgent(h, buy, sell, lower, upper), between(WAKE_MS)


def _name(cfg: CommunityConfig, h: int) -> str:
    return f"p{h + 1:03d}" if h < cfg.prosumers else f"c{h - cfg.prosumers + 1:03d}"


def simulate(
    config: CommunityConfig,
    on_progress: Callable[[int, int], None] | None = None,
    record_balances: bool = False,
) -> CommunityResult:
    """Run the community.

    `on_progress(done, total)` is called after each simulated day, in intervals.
    `record_balances` keeps every household's balance after every interval in
    `CommunityResult.balances` (8 bytes each: 3 MB for the default month).
    """
    cfg = config
    cfg.validate()
    n, days = cfg.households, cfg.days
    total = days * INTERVALS_PER_DAY
    bmax = cfg.bmax
    retail, feed_in = cfg.retail, cfg.feed_in
    prosumers = cfg.prosumers

    sky = weather(cfg.seed, days)
    meters = [
        household_days(
            cfg.seed,
            h,
            cfg.prosumer_consumption if h < prosumers else cfg.consumer_consumption,
            cfg.prosumer_production if h < prosumers else 0,
            sky,
        )
        for h in range(n)
    ]
    made = [_agent(cfg, h) for h in range(n)]
    agents = [a for a, _ in made]
    wake = [w for _, w in made]

    accounts = Accounts()
    auction = CallAuction(accounts)
    energy = [0] * n
    money = [DEPOSIT] * n
    grid_energy = [0] * n  # the grid-alone twins' storage
    produced, consumed = [0] * n, [0] * n
    imported, exported = [0] * n, [0] * n
    grid_imported, grid_exported = [0] * n, [0] * n
    bought, sold, paid, received = [0] * n, [0] * n, [0] * n, [0] * n

    iv = Intervals(*(array("q") for _ in fields(Intervals)))
    balances = array("q") if record_balances else None
    posted = {BID: 0, ASK: 0}
    withdrawn = {BID: 0, ASK: 0}
    first_held: dict[int, int] = {}  # bid oid -> the interval it was first held by the cap
    held_then_executed: set[int] = set()
    bought_after_hold = 0

    for d in range(days):
        today = [next(m) for m in meters]
        for q in range(INTERVALS_PER_DAY):
            t = d * INTERVALS_PER_DAY + q
            start = cfg.start_ms + t * INTERVAL_MS
            q_imported = q_exported = q_produced = q_consumed = 0
            for h in range(n):
                # 1. The agent acts on the balance it sees as the interval opens.
                step = agents[h].step(energy[h], start + wake[h])
                if step.posted or step.withdrawn:
                    for o in step.posted:
                        posted[o.side] += 1
                    for o in step.withdrawn:
                        withdrawn[o.side] += 1
                # 2. The meter reading: production covers consumption first; the net
                # moves the balance within [0, Bmax]; the grid takes or gives the rest.
                p, c = today[h].produced[q], today[h].consumed[q]
                produced[h] += p
                consumed[h] += c
                q_produced += p
                q_consumed += c
                # (settlement/readings.py: the rule the ledger applies to real readings)
                energy[h], out, into = net_to_balance(energy[h], bmax, p - c)
                exported[h] += out
                q_exported += out
                imported[h] += into
                q_imported += into
                money[h] += out * feed_in - into * retail
                if money[h] < 0:
                    raise RuntimeError(f"household {h}: the deposit ran out")
                grid_energy[h], out, into = net_to_balance(grid_energy[h], bmax, p - c)
                grid_exported[h] += out
                grid_imported[h] += into

            # 3. The call auction of interval t, under the caps, with the balances after
            # the reading. Open orders carry their remaining quantity and first `ts`.
            book: list[OpenOrder] = []
            owners = array("I")
            held = 0
            for h in range(n):
                agent = agents[h]
                if agent.bid is None and agent.ask is None:
                    continue
                accounts.set(h, energy[h], money[h], bmax)
                for o in (agent.bid, agent.ask):
                    if o is not None:
                        book.append(o)
                        owners.append(h)
                        if o.side == BID and o.qty > bmax - energy[h]:
                            held += 1
                            first_held.setdefault(o.oid, t)
            sides = array("B", [o.side for o in book])
            prices = array("q", [o.price for o in book])
            qtys = array("q", [o.qty for o in book])
            oids = array("Q", [o.oid for o in book])
            stamps = array("q", [o.ts for o in book])
            clearing = auction.clear_arrays(sides, prices, qtys, oids, owners, stamps)
            price = clearing.price if clearing.volume else -1
            for k in range(len(clearing.qty)):
                qty, b, s = clearing.qty[k], clearing.buyer[k], clearing.seller[k]
                bid_oid = clearing.bid[k]
                agents[b].filled(bid_oid, qty)
                agents[s].filled(clearing.ask[k], qty)
                bought[b] += qty
                sold[s] += qty
                paid[b] += qty * price
                received[s] += qty * price
                if first_held.get(bid_oid, t) < t:
                    held_then_executed.add(bid_oid)
                    bought_after_hold += qty
            if clearing.volume:
                # The engine settled the fills: its balances are the market's truth.
                for h in set(clearing.buyer) | set(clearing.seller):
                    energy[h], money[h], _ = accounts.get(h)

            iv.start.append(start)
            iv.price.append(price)
            iv.volume.append(clearing.volume)
            iv.orders.append(clearing.orders)
            iv.fills.append(len(clearing.qty))
            iv.held_bids.append(held)
            iv.balance.append(sum(energy))
            iv.prosumer_balance.append(sum(energy[:prosumers]))
            iv.max_balance.append(max(energy))
            iv.produced.append(q_produced)
            iv.consumed.append(q_consumed)
            iv.imported.append(q_imported)
            iv.exported.append(q_exported)
            if balances is not None:
                balances.extend(energy)
        if on_progress is not None:
            on_progress((d + 1) * INTERVALS_PER_DAY, total)

    households = [
        Household(
            index=h,
            name=_name(cfg, h),
            kind=PROSUMER if h < prosumers else CONSUMER,
            buy_price=agents[h].buy_price,
            sell_price=agents[h].sell_price,
            produced=produced[h],
            consumed=consumed[h],
            imported=imported[h],
            exported=exported[h],
            bought=bought[h],
            sold=sold[h],
            paid=paid[h],
            received=received[h],
            energy=energy[h],
            money=money[h],
            grid_imported=grid_imported[h],
            grid_exported=grid_exported[h],
            cost=imported[h] * retail - exported[h] * feed_in + paid[h] - received[h],
            grid_cost=grid_imported[h] * retail - grid_exported[h] * feed_in,
        )
        for h in range(n)
    ]
    stats = BidStats(
        bids_posted=posted[BID],
        bids_withdrawn=withdrawn[BID],
        asks_posted=posted[ASK],
        asks_withdrawn=withdrawn[ASK],
        bids_held=len(first_held),
        bids_held_then_executed=len(held_then_executed),
        bought_after_hold=bought_after_hold,
    )
    lower, upper = cfg.thresholds
    return CommunityResult(cfg, bmax, lower, upper, households, iv, stats, balances)
