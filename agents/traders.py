"""Trading strategies for one-unit double auctions: ZI-U and ZI-C (Gode and Sunder 1993) and
ZIP (Cliff 1997).

A trader is a buyer (side ``BID``) or a seller (side ``ASK``) with a schedule of units to trade
in order: ``limits``, each unit's limit price (a buyer's value, a seller's cost). The market
gives it a turn with its schedule, the index of the unit it must trade next, and a random
generator; the trader answers with a price for that one unit, or None to pass:

    price = trader.shout(limits, unit, rng)

A trader whose ``adaptive`` flag is set learns: after every turn the market tells it what
happened, with its schedule and the index of its next unit (``len(limits)`` once it has no
units left):

    trader.observe(Quote(side, price, accepted), limits, unit, rng)

``within_limit`` says the trader never bids above its value nor asks below its cost, so it
never trades at a loss; the market uses it to end a period early once no trade is possible.

Traders keep no random generator of their own: every draw comes from the ``rng`` they are
handed, so a session with one seed always makes the same draws in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from random import Random
from typing import NamedTuple, Protocol

from wattmesh.matching import ASK, BID

# Gode and Sunder's price range (both ends allowed).
PRICE_MIN = 1
PRICE_MAX = 200


class Quote(NamedTuple):
    """What every trader sees after a turn.

    For a trade, ``side`` and ``price`` are those of the accepted (standing) quote, so
    ``price`` is the trade price; otherwise they are the new shout's.
    """

    side: int
    price: int
    accepted: bool


class Trader(Protocol):
    """The interface the market drives (see the module docstring)."""

    side: int
    adaptive: bool
    within_limit: bool

    def shout(self, limits: Sequence[int], unit: int, rng: Random) -> int | None: ...

    def observe(self, quote: Quote, limits: Sequence[int], unit: int, rng: Random) -> None: ...


def _check_side(side: int) -> int:
    if side != BID and side != ASK:
        raise ValueError(f"side: must be BID ({BID}) or ASK ({ASK}), got {side!r}")
    return side


def _check_range(low: int, high: int) -> None:
    if not 1 <= low <= high:
        raise ValueError(f"price range: need 1 <= low <= high, got [{low}, {high}]")


class ZIU:
    """Zero intelligence, unconstrained: a price uniform over the whole range, whatever the
    unit's value or cost (so it can trade at a loss)."""

    adaptive = False
    within_limit = False

    def __init__(self, side: int, low: int = PRICE_MIN, high: int = PRICE_MAX) -> None:
        _check_range(low, high)
        self.side = _check_side(side)
        self.low = low
        self.high = high
        self._span = high - low + 1

    def shout(self, limits: Sequence[int], unit: int, rng: Random) -> int:
        # One random() per shout, floored onto the integers: cheaper than randint and the
        # same on every Python version.
        return self.low + int(rng.random() * self._span)

    def observe(self, quote: Quote, limits: Sequence[int], unit: int, rng: Random) -> None:
        """ZI-U does not learn."""

    def __repr__(self) -> str:
        return f"ZIU({'BID' if self.side == BID else 'ASK'}, {self.low}, {self.high})"


class ZIC:
    """Zero intelligence, constrained: a buyer bids uniform in [low, value], a seller asks
    uniform in [cost, high]; it never trades at a loss. Passes (None) when no price in the
    range respects its limit."""

    adaptive = False
    within_limit = True

    def __init__(self, side: int, low: int = PRICE_MIN, high: int = PRICE_MAX) -> None:
        _check_range(low, high)
        self.side = _check_side(side)
        self.low = low
        self.high = high

    def shout(self, limits: Sequence[int], unit: int, rng: Random) -> int | None:
        limit = limits[unit]
        if self.side == BID:
            top = limit if limit < self.high else self.high
            if top < self.low:
                return None
            return self.low + int(rng.random() * (top - self.low + 1))
        bottom = limit if limit > self.low else self.low
        if bottom > self.high:
            return None
        return bottom + int(rng.random() * (self.high - bottom + 1))

    def observe(self, quote: Quote, limits: Sequence[int], unit: int, rng: Random) -> None:
        """ZI-C does not learn."""

    def __repr__(self) -> str:
        return f"ZIC({'BID' if self.side == BID else 'ASK'}, {self.low}, {self.high})"


@dataclass(frozen=True, slots=True)
class ZIPParams:
    """ZIP's constants, as read from Cliff (1997); docs/gode-sunder.md gives the reading.

    Each trader draws its learning rate ``beta`` and momentum ``gamma`` once, and an initial
    margin for each of its units, uniformly from these ranges. Each margin update draws a
    fresh target perturbation: relative R in [1, 1 + relative] (raise the price) or
    [1 - relative, 1] (lower it), and absolute A in [0, absolute] or [-absolute, 0], in
    price units. ``relative`` and ``absolute`` are Cliff's c_r and c_a, the same for every
    trader.
    """

    beta: tuple[float, float] = (0.1, 0.5)
    gamma: tuple[float, float] = (0.0, 0.1)
    initial_margin: tuple[float, float] = (0.05, 0.35)
    relative: float = 0.05
    # Cliff's 0.05 is in his dollars; with Gode and Sunder's 1..200 scale read as cents
    # that is 5 price units (see docs/gode-sunder.md).
    absolute: float = 5.0


class ZIP:
    """Zero intelligence plus (Cliff 1997) with a margin and a momentum per unit: unit ``k``
    shouts ``limits[k] * (1 + margins[k])``. After every quote and trade it observes, each
    unit that has come up this period learns as one of Cliff's one-unit traders would: the
    current unit as an active trader, the units already traded as inactive ones (they may
    only raise their margins). Units not yet come up do not learn. The update is
    Widrow-Hoff with momentum towards a target just beyond the observed price.

    A seller's margins are >= 0, a buyer's in [-1, 0], so it never trades at a loss.
    """

    adaptive = True
    within_limit = True

    def __init__(
        self,
        side: int,
        rng: Random,
        low: int = PRICE_MIN,
        high: int = PRICE_MAX,
        params: ZIPParams = ZIPParams(),  # noqa: B008 (frozen, so sharing it is safe)
        units: int = 1,
    ) -> None:
        _check_range(low, high)
        if units < 0:  # a trader with no units (an empty schedule) only watches
            raise ValueError(f"units: need at least 0, got {units}")
        self.side = _check_side(side)
        self.low = low
        self.high = high
        self.params = params
        self.beta = rng.uniform(*params.beta)
        self.gamma = rng.uniform(*params.gamma)
        sign = -1.0 if side == BID else 1.0
        # Keyed by the unit's index in the trader's schedule.
        self.margins = [sign * rng.uniform(*params.initial_margin) for _ in range(units)]
        self.momenta = [0.0] * units  # Cliff's Gamma: each unit's smoothed last change

    def price(self, limits: Sequence[int], unit: int) -> float:
        """Unit ``unit``'s unrounded shout price."""
        return limits[unit] * (1.0 + self.margins[unit])

    def shout(self, limits: Sequence[int], unit: int, rng: Random) -> int | None:
        limit = limits[unit]
        price = round(limit * (1.0 + self.margins[unit]))
        # Rounding never crosses the integer limit; clamping keeps the price in range, and
        # the trader passes only when no price in range respects its limit.
        if self.side == BID:
            if price > self.high:
                return self.high
            if price < self.low:
                return self.low if limit >= self.low else None
            return price
        if price < self.low:
            return self.low
        if price > self.high:
            return self.high if limit <= self.high else None
        return price

    def observe(self, quote: Quote, limits: Sequence[int], unit: int, rng: Random) -> None:
        """Cliff's update rules, for the current unit (active) and every unit already
        traded this period (inactive); ``unit`` is ``len(limits)`` once all have traded.

        ``q`` is the observed price (the trade price if accepted); each unit compares it
        with ``p``, the integer price it shouts. Seller: after a trade at q, raise the
        margin if p <= q; else, if the accepted quote was a bid and the unit is active,
        lower it. After an unaccepted ask at q, an active unit with p >= q lowers it.
        Buyer: the mirror image. Where the paper's raise and lower conditions overlap
        (p == q after a trade), raising wins.

        p is compared as shouted: with the unrounded price, a unit whose ask rounds up (a
        bid down) never sees its own shout as at or beyond its price, and a market of such
        units stalls a tick or two apart (market 5 did).
        """
        q = quote.price
        margins = self.margins
        seller = self.side == ASK
        if not quote.accepted:
            # Only an active unit lowers, and only on a shout from its own side: so only
            # the current unit can move, which keeps the common case (no trade) cheap.
            if unit < len(limits) and quote.side == self.side:
                limit = limits[unit]
                exact = limit * (1.0 + margins[unit])
                if (round(exact) >= q) if seller else (round(exact) <= q):
                    self._move(exact, q, not seller, limit, unit, rng)
            return
        # A trade: every unit come up so far may raise its margin; the current one may
        # lower it when the accepted quote was from the other side.
        other_side_accepted = quote.side != self.side
        for k in range(unit + 1 if unit < len(limits) else len(limits)):
            limit = limits[k]
            exact = limit * (1.0 + margins[k])
            p = round(exact)
            if (p <= q) if seller else (p >= q):
                self._move(exact, q, seller, limit, k, rng)
            elif k == unit and other_side_accepted:
                self._move(exact, q, not seller, limit, k, rng)

    def _move(self, p: float, q: float, up: bool, limit: int, k: int, rng: Random) -> None:
        """Move unit k's price from p towards a target just above (up) or below q."""
        params = self.params
        if up:
            target = q * (1.0 + params.relative * rng.random()) + params.absolute * rng.random()
        else:
            target = q * (1.0 - params.relative * rng.random()) - params.absolute * rng.random()
        delta = self.beta * (target - p)
        momentum = self.gamma * self.momenta[k] + (1.0 - self.gamma) * delta
        self.momenta[k] = momentum
        margin = (p + momentum) / limit - 1.0
        # The margin's sign is what keeps ZIP from trading at a loss: a step past the
        # bound stops on it.
        if self.side == ASK:
            self.margins[k] = margin if margin > 0.0 else 0.0
        else:
            self.margins[k] = -1.0 if margin < -1.0 else (margin if margin < 0.0 else 0.0)

    def __repr__(self) -> str:
        side = "BID" if self.side == BID else "ASK"
        margins = ", ".join(f"{m:.4f}" for m in self.margins)
        return f"ZIP({side}, margins=[{margins}], beta={self.beta:.3f}, gamma={self.gamma:.3f})"


STRATEGIES: dict[str, str] = {
    "zi-u": "ZI-U: uniform over the whole price range (Gode and Sunder 1993)",
    "zi-c": "ZI-C: uniform within the unit's value or cost, never a loss (Gode and Sunder 1993)",
    "zip": "ZIP: adaptive profit margins (Cliff 1997)",
}


def make_trader(
    strategy: str,
    side: int,
    rng: Random,
    low: int = PRICE_MIN,
    high: int = PRICE_MAX,
    units: int = 1,
) -> Trader:
    """A trader of the named strategy (a key of ``STRATEGIES``) with ``units`` units to
    trade. ``rng`` is used only by strategies that draw their parameters at birth (ZIP)."""
    if strategy == "zi-u":
        return ZIU(side, low, high)
    if strategy == "zi-c":
        return ZIC(side, low, high)
    if strategy == "zip":
        return ZIP(side, rng, low, high, units=units)
    raise ValueError(f"strategy: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
