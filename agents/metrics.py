"""Market outcome measures from unit values and costs: the competitive equilibrium of a
supply and demand schedule, the maximum surplus, allocative efficiency, Smith's alpha and
Gode and Sunder's profit dispersion.

Values and costs are the limit prices of single units (a buyer's value, a seller's cost).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Equilibrium:
    """The competitive equilibrium of one schedule.

    Every price in [price_low, price_high] clears the market. Where the curves overlap on
    an interval, ``price`` is its midpoint (so it may end in .5). ``quantity`` counts the
    units that must trade (those with gains from trade); up to ``quantity_max`` can trade
    when units whose value equals their cost at the equilibrium price trade too. ``surplus``
    is the maximum total surplus (values minus costs of the units that trade).
    """

    price_low: int
    price_high: int
    quantity: int
    quantity_max: int
    surplus: int

    @property
    def price(self) -> float:
        return (self.price_low + self.price_high) / 2


def equilibrium(values: Iterable[int], costs: Iterable[int]) -> Equilibrium:
    """The equilibrium of the schedule where ``values`` are the buyers' units and ``costs``
    the sellers'. Raises ValueError if either side is empty or no unit can trade."""
    demand = sorted(values, reverse=True)
    supply = sorted(costs)
    if not demand or not supply:
        raise ValueError("equilibrium: need at least one buyer's unit and one seller's unit")
    # The k-th unit trades while the k-th highest value still covers the k-th lowest cost.
    q_max = 0
    while q_max < min(len(demand), len(supply)) and demand[q_max] >= supply[q_max]:
        q_max += 1
    if q_max == 0:
        raise ValueError("equilibrium: no unit's value reaches any unit's cost")
    q_min = sum(1 for k in range(q_max) if demand[k] > supply[k])
    # Clearing prices: at least the last traded cost and the first untraded value, at most
    # the last traded value and the first untraded cost (a missing unit bounds nothing).
    low = max(supply[q_max - 1], demand[q_max] if q_max < len(demand) else supply[q_max - 1])
    high = min(demand[q_max - 1], supply[q_max] if q_max < len(supply) else demand[q_max - 1])
    surplus = sum(demand[k] - supply[k] for k in range(q_max))
    return Equilibrium(low, high, q_min, q_max, surplus)


def max_surplus(values: Iterable[int], costs: Iterable[int]) -> int:
    """The largest total surplus any allocation of the units can reach (0 if none trades)."""
    demand = sorted(values, reverse=True)
    supply = sorted(costs)
    return sum(max(0, v - c) for v, c in zip(demand, supply, strict=False))


def allocative_efficiency(realized_surplus: float, maximum_surplus: float) -> float:
    """Realized surplus as a percentage of the maximum surplus."""
    if maximum_surplus <= 0:
        raise ValueError(f"maximum surplus must be positive, got {maximum_surplus}")
    return 100.0 * realized_surplus / maximum_surplus


def rms_deviation(prices: Sequence[float], equilibrium_price: float) -> float | None:
    """Root mean square deviation of trade prices from the equilibrium price; None without
    trades."""
    if not prices:
        return None
    return math.sqrt(sum((p - equilibrium_price) ** 2 for p in prices) / len(prices))


def smiths_alpha(prices: Sequence[float], equilibrium_price: float) -> float | None:
    """Smith's (1962) coefficient of convergence: the RMS deviation of trade prices from the
    equilibrium price as a percentage of that price; None without trades."""
    if equilibrium_price <= 0:
        raise ValueError(f"equilibrium price must be positive, got {equilibrium_price}")
    rms = rms_deviation(prices, equilibrium_price)
    return None if rms is None else 100.0 * rms / equilibrium_price


def equilibrium_profit(limits: Iterable[int], is_buyer: bool, price: float) -> float:
    """One trader's profit if all its units that gain at ``price`` trade at ``price``."""
    if is_buyer:
        return float(sum(max(0.0, v - price) for v in limits))
    return float(sum(max(0.0, price - c) for c in limits))


def profit_dispersion(actual: Sequence[float], at_equilibrium: Sequence[float]) -> float:
    """Gode and Sunder's profit dispersion: the root mean square, over traders, of the
    difference between each trader's actual profit and its equilibrium profit."""
    if len(actual) != len(at_equilibrium) or not actual:
        raise ValueError("profit dispersion: need one equilibrium profit per trader, and traders")
    total = sum((a - e) ** 2 for a, e in zip(actual, at_equilibrium, strict=True))
    return math.sqrt(total / len(actual))
