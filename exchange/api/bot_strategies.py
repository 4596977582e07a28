"""What ``wattmesh bot`` decides, apart from HTTP: which side the household trades in an
interval, how much, and at what price (docs/bots.md, "Strategies").

Every strategy gets the household's balance (``GET balance``) once per interval and
returns the orders to post for it; it hears each settled interval's price and the
household's fills afterwards. Units are the API's: Wh, nano-currency, micro-currency per
kWh (so price times Wh is nano-currency).

**The side rule** (ZI-C and ZIP; the threshold agent has its own, of the same shape): with
``lower < upper`` Wh (default 30% and 60% of Bmax),

- energy not yet offered (``energy - committed_energy``) above ``upper``: an ask for the
  surplus above ``upper``, at most ``qty`` Wh;
- energy below ``lower``: a bid for what brings it up to ``upper``, at most ``qty`` Wh,
  the headroom below Bmax, and what the money not yet committed pays at the bid's price;
- in between: nothing.

So a household with storage to spare sells and one running low buys, never both in one
interval (it would only meet itself). The price: ZI-C draws it uniformly between the
limit and the range's end (Gode and Sunder 1993), ZIP shouts ``limit * (1 + margin)`` and
moves its margin towards each clearing price (Cliff 1997), both from agents/traders.py;
the threshold agent (agents/threshold.py) posts at its two fixed prices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from random import Random
from typing import Any, Protocol

from wattmesh.agents.threshold import ThresholdAgent
from wattmesh.agents.traders import ZIC, ZIP, Quote, ZIPParams
from wattmesh.exchange.units import energy_text, price_text
from wattmesh.matching import ASK, BID, MAX_PRICE, MAX_QTY
from wattmesh.settlement.errors import WattmeshError

__all__ = [
    "DEFAULT_LOWER_PCT",
    "DEFAULT_UPPER_PCT",
    "STRATEGIES",
    "Band",
    "Holdings",
    "Intent",
    "Limits",
    "Strategy",
    "StrategyError",
    "ThresholdStrategy",
    "ZICStrategy",
    "ZIPStrategy",
]

STRATEGIES = ("zi-c", "zip", "threshold")
DEFAULT_LOWER_PCT, DEFAULT_UPPER_PCT = 30, 60  # of Bmax, as `wattmesh demo` sets its bots
# ZIP's absolute step is 5 units on Gode and Sunder's 1..200 scale; prices here are
# micro-currency per kWh, where 1,000 (0.001 per kWh) is a step of the same modesty.
ZIP_PARAMS = ZIPParams(absolute=1_000.0)


class StrategyError(WattmeshError, ValueError):
    """Settings a strategy cannot trade with (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class Holdings:
    """The household's balance as ``GET balance`` gives it."""

    energy: int
    money: int
    bmax: int
    committed_energy: int = 0  # offered by open asks
    committed_money: int = 0  # promised by open bids at their prices

    @classmethod
    def of(cls, balance: Mapping[str, Any]) -> Holdings:
        """From the API's balance answer."""
        get = balance.get
        return cls(balance["energy"], balance["money"], balance["bmax"],
                   get("committed_energy", 0), get("committed_money", 0))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Intent:
    """An order to post: ``side`` "bid" or "ask", price per kWh (micro), qty (Wh)."""

    side: str
    price: int
    qty: int


@dataclass(frozen=True, slots=True)
class Band:
    """The balance thresholds of the side rule, Wh."""

    lower: int
    upper: int

    def __post_init__(self) -> None:
        if not 0 <= self.lower < self.upper <= MAX_QTY:
            raise StrategyError(f"thresholds: need 0 <= --lower-wh < --upper-wh <= {MAX_QTY}, "
                                f"got {self.lower} and {self.upper}")  # fmt: skip

    @classmethod
    def of(cls, bmax: int, lower: int | None = None, upper: int | None = None) -> Band:
        """The given thresholds, each defaulting to its share of ``bmax``."""
        low = bmax * DEFAULT_LOWER_PCT // 100 if lower is None else lower
        high = bmax * DEFAULT_UPPER_PCT // 100 if upper is None else upper
        if high <= low and (lower is None or upper is None):
            raise StrategyError(f"the household's Bmax is {bmax} Wh, too little for default "
                                "thresholds: give --lower-wh and --upper-wh")  # fmt: skip
        return cls(low, high)

    def side(self, h: Holdings, qty: int) -> tuple[str, int] | None:
        """(side, most Wh) by the side rule, or None: hold. A bid's Wh is capped by the
        money later, once its price is known."""
        free = h.energy - h.committed_energy
        if free > self.upper:
            return "ask", min(qty, free - self.upper)
        if h.energy < self.lower:
            most = min(qty, self.upper - h.energy, max(0, h.bmax - h.energy))
            return ("bid", most) if most > 0 else None
        return None


def _affordable(h: Holdings, price: int, qty: int) -> int:
    """What of ``qty`` Wh the money not yet committed pays at ``price`` (nano per Wh)."""
    return max(0, min(qty, (h.money - h.committed_money) // price))


@dataclass(frozen=True, slots=True)
class Limits:
    """ZI-C's and ZIP's prices, micro-currency per kWh: a bid never above ``buy`` (the
    household's value of a kWh), an ask never below ``sell`` (its cost), and every price
    within ``[low, high]``."""

    buy: int
    sell: int
    low: int
    high: int

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high <= MAX_PRICE:
            raise StrategyError(f"price range: need 1 <= --price-min <= --price-max <= "
                                f"{MAX_PRICE}, got {self.low} and {self.high}")  # fmt: skip
        if not self.low <= self.buy <= MAX_PRICE or not 1 <= self.sell <= self.high:
            raise StrategyError(
                f"limits: --limit-buy {self.buy} must be at least --price-min {self.low} "
                f"and --limit-sell {self.sell} at most --price-max {self.high}, or the bot "
                "would never post"
            )

    def of(self, side: str) -> int:
        return self.buy if side == "bid" else self.sell


class Strategy(Protocol):
    """What the bot drives: ``decide`` once per interval, ``posted`` with the ids the node
    gave those orders, ``settled`` when the interval is settled."""

    name: str

    def describe(self) -> str: ...

    def decide(self, interval: int, holdings: Holdings) -> list[Intent]: ...

    def posted(self, interval: int, intents: Sequence[Intent], ids: Sequence[str]) -> None: ...

    def settled(self, interval: int, price: int | None,
                fills: Sequence[Mapping[str, Any]]) -> None: ...  # fmt: skip


class _SideRule:
    """A strategy that trades by the side rule at a price its trader shouts."""

    def __init__(self, limits: Limits, band: Band, qty: int, rng: Random) -> None:
        if not 1 <= qty <= MAX_QTY:
            raise StrategyError(f"--qty: must be in 1..{MAX_QTY} Wh, got {qty}")
        self.limits, self.band, self.qty, self.rng = limits, band, qty, rng

    def _shout(self, side: str) -> int | None:
        raise NotImplementedError

    def decide(self, interval: int, holdings: Holdings) -> list[Intent]:
        """At most one order, by the side rule, at the price the trader shouts."""
        chosen = self.band.side(holdings, self.qty)
        if chosen is None:
            return []
        side, qty = chosen
        price = self._shout(side)
        if price is None:
            return []
        if side == "bid":
            qty = _affordable(holdings, price, qty)
        return [Intent(side, price, qty)] if qty > 0 else []


class ZICStrategy(_SideRule):
    """ZI-C: a bid uniform in [low, buy limit], an ask uniform in [sell limit, high]."""

    name = "zi-c"

    def __init__(self, limits: Limits, band: Band, qty: int, rng: Random) -> None:
        super().__init__(limits, band, qty, rng)
        self.traders = {"bid": ZIC(BID, limits.low, limits.high),
                        "ask": ZIC(ASK, limits.low, limits.high)}  # fmt: skip

    def describe(self) -> str:
        lim, b = self.limits, self.band
        sells = f"{price_text(lim.sell)}..{price_text(lim.high)}"
        buys = f"{price_text(lim.low)}..{price_text(lim.buy)}"
        return (f"sells above {energy_text(b.upper)} at {sells}, buys below "
                f"{energy_text(b.lower)} at {buys} per kWh, at most {energy_text(self.qty)} "
                "an interval")  # fmt: skip

    def _shout(self, side: str) -> int | None:
        return self.traders[side].shout((self.limits.of(side),), 0, self.rng)

    def posted(self, interval: int, intents: Sequence[Intent], ids: Sequence[str]) -> None:
        """ZI-C remembers nothing."""

    def settled(self, interval: int, price: int | None,
                fills: Sequence[Mapping[str, Any]]) -> None:  # fmt: skip
        """ZI-C does not learn."""


class ZIPStrategy(_SideRule):
    """ZIP: a buyer and a seller, each with its margin, which moves after every settled
    interval: towards just beyond the clearing price when there was one (an ask above it
    comes down, one at or below it goes up; a bid the mirror image), and, when nothing
    traded, an unfilled shout of the household becomes keener."""

    name = "zip"

    def __init__(self, limits: Limits, band: Band, qty: int, rng: Random,
                 params: ZIPParams = ZIP_PARAMS) -> None:  # fmt: skip
        super().__init__(limits, band, qty, rng)
        self.zip = {"bid": ZIP(BID, rng, limits.low, limits.high, params),
                    "ask": ZIP(ASK, rng, limits.low, limits.high, params)}  # fmt: skip
        self.shouts: dict[int, Intent] = {}  # interval -> the order posted for it

    def describe(self) -> str:
        lim, b = self.limits, self.band
        return (f"sells above {energy_text(b.upper)} at no less than {price_text(lim.sell)}, buys "
                f"below {energy_text(b.lower)} at no more than {price_text(lim.buy)} per kWh, "
                f"margins learnt from each clearing price, at most {energy_text(self.qty)} an "
                "interval")  # fmt: skip

    def _shout(self, side: str) -> int | None:
        return self.zip[side].shout((self.limits.of(side),), 0, self.rng)

    def posted(self, interval: int, intents: Sequence[Intent], ids: Sequence[str]) -> None:
        """Remember the shout until its interval is settled."""
        if intents:
            self.shouts[interval] = intents[0]

    def settled(self, interval: int, price: int | None,
                fills: Sequence[Mapping[str, Any]]) -> None:  # fmt: skip
        """Cliff's update rules, with the call auction's clearing price as the trade."""
        shout = self.shouts.pop(interval, None)
        for t in [t for t in self.shouts if t < interval]:
            del self.shouts[t]  # an interval whose settlement the bot never heard of
        for side, trader in self.zip.items():
            # One unit, whose limit never changes: unit 0 while the household shouts on
            # this side, 1 (none left) otherwise.
            limits = (self.limits.of(side),)
            active = shout is not None and shout.side == side
            if price is not None:
                other = ASK if side == "bid" else BID
                trader.observe(Quote(other, price, True), limits, 0 if active else 1, self.rng)
            elif active:
                # Its own shout, unaccepted: q is its unrounded price floored for an ask
                # (ceiled for a bid), which the price it shouts always reaches, so the
                # rule for an unaccepted own shout applies as Cliff expects.
                p = trader.price(limits, 0)
                own, q = (BID, math.ceil(p)) if side == "bid" else (ASK, math.floor(p))
                trader.observe(Quote(own, q, False), limits, 0, self.rng)

    def margins(self) -> dict[str, float]:
        """The buyer's and seller's margins now."""
        return {side: t.margins[0] for side, t in self.zip.items()}


class ThresholdStrategy:
    """The Energo threshold agent (agents/threshold.py), as the node's own bot runs it: a
    bid at ``buy_price`` for what brings the balance up to ``upper`` once it is below
    ``lower``, an ask at ``sell_price`` for the surplus above ``upper``; an order is posted
    again each interval for what remains of it until it has traded in full."""

    name = "threshold"

    def __init__(self, buy_price: int, sell_price: int, band: Band) -> None:
        try:
            self.agent = ThresholdAgent(0, buy_price, sell_price, band.lower, band.upper)
        except ValueError as exc:
            raise StrategyError(str(exc)) from None
        self.band = band
        self._decided: dict[int, list[int]] = {}  # interval -> the agent's order ids
        self._orders: dict[int, dict[str, int]] = {}  # interval -> our order id -> agent's

    def describe(self) -> str:
        a, b = self.agent, self.band
        return (f"buys below {energy_text(b.lower)} up to {energy_text(b.upper)} at "
                f"{price_text(a.buy_price)}, sells above {energy_text(b.upper)} at "
                f"{price_text(a.sell_price)} per kWh")  # fmt: skip

    def decide(self, interval: int, holdings: Holdings) -> list[Intent]:
        """The agent's step on the household's energy, then its open orders."""
        self.agent.step(max(0, holdings.energy), interval)
        open_orders = self.agent.open_orders()
        self._decided[interval] = [o.oid for o in open_orders]
        return [Intent("bid" if o.side == BID else "ask", o.price, o.qty) for o in open_orders]

    def posted(self, interval: int, intents: Sequence[Intent], ids: Sequence[str]) -> None:
        """Which of our order ids is which of the agent's orders."""
        oids = self._decided.pop(interval, [])
        self._orders[interval] = dict(zip(ids, oids, strict=False))

    def settled(self, interval: int, price: int | None,
                fills: Sequence[Mapping[str, Any]]) -> None:  # fmt: skip
        """Tell the agent what of its orders traded in ``interval``."""
        ours = self._orders.pop(interval, {})
        for t in [t for t in self._orders if t < interval]:
            del self._orders[t]
        for fill in fills:
            oid = ours.get(fill["order"])
            # An order withdrawn since (the balance crossed over) is no longer the agent's.
            order = next((o for o in self.agent.open_orders() if o.oid == oid), None)
            if order is not None:
                self.agent.filled(order.oid, min(fill["qty"], order.qty))
