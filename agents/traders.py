"""Trading strategies for one-unit double auctions: ZI-U and ZI-C (Gode and Sunder 1993) and
ZIP (Cliff 1997).

A trader is a buyer (side ``BID``) or a seller (side ``ASK``). The market gives it a turn with
the limit price of the unit it must trade next (a buyer's value, a seller's cost) and a
random generator; the trader answers with a price for one unit, or None to pass:

    price = trader.shout(limit, rng)

A trader whose ``adaptive`` flag is set learns: after every turn the market tells it what
happened, with its own current limit (its last unit's limit once it has no units left) and
whether it still has units to trade (``active``):

    trader.observe(Quote(side, price, accepted), limit, active, rng)

``within_limit`` says the trader never bids above its value nor asks below its cost, so it
never trades at a loss; the market uses it to end a period early once no trade is possible.

Traders keep no random generator of their own: every draw comes from the ``rng`` they are
handed, so a session with one seed always makes the same draws in the same order.
"""

from __future__ import annotations

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

    def shout(self, limit: int, rng: Random) -> int | None: ...

    def observe(self, quote: Quote, limit: int, active: bool, rng: Random) -> None: ...


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

    def shout(self, limit: int, rng: Random) -> int:
        # One random() per shout, floored onto the integers: cheaper than randint and the
        # same on every Python version.
        return self.low + int(rng.random() * self._span)

    def observe(self, quote: Quote, limit: int, active: bool, rng: Random) -> None:
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

    def shout(self, limit: int, rng: Random) -> int | None:
        if self.side == BID:
            top = limit if limit < self.high else self.high
            if top < self.low:
                return None
            return self.low + int(rng.random() * (top - self.low + 1))
        bottom = limit if limit > self.low else self.low
        if bottom > self.high:
            return None
        return bottom + int(rng.random() * (self.high - bottom + 1))

    def observe(self, quote: Quote, limit: int, active: bool, rng: Random) -> None:
        """ZI-C does not learn."""

    def __repr__(self) -> str:
        return f"ZIC({'BID' if self.side == BID else 'ASK'}, {self.low}, {self.high})"


@dataclass(frozen=True, slots=True)
class ZIPParams:
    """ZIP's constants, as read from Cliff (1997); docs/gode-sunder.md gives the reading.

    Each trader draws its learning rate ``beta``, momentum ``gamma`` and initial margin
    uniformly from these ranges once. Each margin update draws a fresh target perturbation:
    relative R in [1, 1 + relative] (raise the price) or [1 - relative, 1] (lower it), and
    absolute A in [0, absolute] or [-absolute, 0], in price units.
    """

    beta: tuple[float, float] = (0.1, 0.5)
    gamma: tuple[float, float] = (0.0, 0.1)
    initial_margin: tuple[float, float] = (0.05, 0.35)
    relative: float = 0.05
    # Cliff's 0.05 is in his dollars; with Gode and Sunder's 1..200 scale read as cents
    # that is 5 price units (see docs/gode-sunder.md).
    absolute: float = 5.0


class ZIP:
    """Zero intelligence plus (Cliff 1997): shouts ``limit * (1 + margin)`` and adapts the
    margin after every quote and trade it observes, by a Widrow-Hoff rule with momentum
    towards a target just beyond the observed price.

    A seller's margin is >= 0, a buyer's in [-1, 0], so it never trades at a loss.
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
    ) -> None:
        _check_range(low, high)
        self.side = _check_side(side)
        self.low = low
        self.high = high
        self.params = params
        self.beta = rng.uniform(*params.beta)
        self.gamma = rng.uniform(*params.gamma)
        margin = rng.uniform(*params.initial_margin)
        self.margin = -margin if side == BID else margin
        self.momentum = 0.0  # Cliff's Gamma: the smoothed last change of the price

    def price(self, limit: int) -> float:
        """The unrounded shout price for a unit with this limit."""
        return limit * (1.0 + self.margin)

    def shout(self, limit: int, rng: Random) -> int | None:
        price = round(limit * (1.0 + self.margin))
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

    def observe(self, quote: Quote, limit: int, active: bool, rng: Random) -> None:
        """Cliff's update rules. ``q`` is the observed price (the trade price if accepted).

        Seller: after a trade at q, raise the margin if p <= q; else, if the accepted quote
        was a bid and the seller is active, lower it (p > q). After an unaccepted ask at q,
        an active seller with p >= q lowers it. Buyer: the mirror image. Where the paper's
        raise and lower conditions overlap (p == q after a trade), raising wins.
        """
        p = limit * (1.0 + self.margin)
        q = quote.price
        if self.side == ASK:
            if quote.accepted:
                if p <= q:
                    self._move(p, q, True, limit, rng)
                elif quote.side == BID and active:
                    self._move(p, q, False, limit, rng)
            elif quote.side == ASK and active and p >= q:
                self._move(p, q, False, limit, rng)
        else:
            if quote.accepted:
                if p >= q:
                    self._move(p, q, False, limit, rng)
                elif quote.side == ASK and active:
                    self._move(p, q, True, limit, rng)
            elif quote.side == BID and active and p <= q:
                self._move(p, q, True, limit, rng)

    def _move(self, p: float, q: float, up: bool, limit: int, rng: Random) -> None:
        """Move the price from p towards a target just above (up) or below q."""
        params = self.params
        if up:
            target = q * (1.0 + params.relative * rng.random()) + params.absolute * rng.random()
        else:
            target = q * (1.0 - params.relative * rng.random()) - params.absolute * rng.random()
        delta = self.beta * (target - p)
        self.momentum = self.gamma * self.momentum + (1.0 - self.gamma) * delta
        margin = (p + self.momentum) / limit - 1.0
        # The margin's sign is what keeps ZIP from trading at a loss.
        if self.side == ASK:
            self.margin = margin if margin > 0.0 else 0.0
        else:
            self.margin = -1.0 if margin < -1.0 else (margin if margin < 0.0 else 0.0)

    def __repr__(self) -> str:
        side = "BID" if self.side == BID else "ASK"
        return (
            f"ZIP({side}, margin={self.margin:.4f}, beta={self.beta:.3f}, gamma={self.gamma:.3f})"
        )


STRATEGIES: dict[str, str] = {
    "zi-u": "ZI-U: uniform over the whole price range (Gode and Sunder 1993)",
    "zi-c": "ZI-C: uniform within the unit's value or cost, never a loss (Gode and Sunder 1993)",
    "zip": "ZIP: adaptive profit margins (Cliff 1997)",
}


def make_trader(
    strategy: str, side: int, rng: Random, low: int = PRICE_MIN, high: int = PRICE_MAX
) -> Trader:
    """A trader of the named strategy (a key of ``STRATEGIES``). ``rng`` is used only by
    strategies that draw their parameters at birth (ZIP)."""
    if strategy == "zi-u":
        return ZIU(side, low, high)
    if strategy == "zi-c":
        return ZIC(side, low, high)
    if strategy == "zip":
        return ZIP(side, rng, low, high)
    raise ValueError(f"strategy: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
