"""The Energo threshold agent (Energo whitepaper; docs/design.md "Agents").

The household sets a target buy price, a target sell price and two balance thresholds.
Whenever it is asked to act (once per delivery interval), the agent looks at the balance:

- below the lower threshold, with no bid of its own open, it posts a bid at the target buy
  price for what brings the balance back up to the upper threshold;
- above the upper threshold, with no ask of its own open, it posts an ask at the target
  sell price for the surplus above the upper threshold.

An order stays open until it has traded in full (the call auction of each interval sees
its remaining quantity again), so a bid that cannot execute because of the household's
Bmax headroom waits until the balance falls, as the whitepaper says. An open order is
withdrawn only when the balance crosses to the other threshold: a bid once the balance is
at or above the upper threshold (the household no longer needs energy), an ask once it is
at or below the lower threshold. That hysteresis keeps at most one side open at a time,
so a household never meets itself in an auction and never buys and sells at once.

The agent draws no random numbers: for the same balances it always does the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattmesh.matching import ASK, BID, MAX_PRICE, MAX_QTY

__all__ = ["OpenOrder", "Step", "ThresholdAgent"]


@dataclass(slots=True)
class OpenOrder:
    """One of the agent's orders while it is open.

    `qty` is what remains to trade (Wh); `ts` is when it was posted (ms) and keeps its
    time priority in every later auction; `oid` is unique over the agent's life.
    """

    oid: int
    side: int
    price: int
    qty: int
    ts: int


@dataclass(frozen=True, slots=True)
class Step:
    """What one call of `ThresholdAgent.step` did: orders posted and orders withdrawn."""

    posted: tuple[OpenOrder, ...] = ()
    withdrawn: tuple[OpenOrder, ...] = ()


_NOTHING = Step()


class ThresholdAgent:
    """An Energo threshold agent trading for one household (owner handle `owner`).

    Prices are micro-currency per kWh, thresholds Wh, `0 <= lower < upper`. Order ids are
    `owner << 32 | n` for the agent's n-th order, so they are unique in a community whose
    owners are distinct.
    """

    __slots__ = ("owner", "buy_price", "sell_price", "lower", "upper", "bid", "ask", "_n")

    def __init__(self, owner: int, buy_price: int, sell_price: int, lower: int, upper: int) -> None:
        if not 0 <= owner <= 0xFFFFFFFF:
            raise ValueError(f"owner: must be a handle in 0..2**32-1, got {owner}")
        for name, price in (("buy_price", buy_price), ("sell_price", sell_price)):
            if not 0 < price <= MAX_PRICE:
                raise ValueError(f"{name}: must be in 1..{MAX_PRICE}, got {price}")
        if not 0 <= lower < upper <= MAX_QTY:
            raise ValueError(
                f"thresholds: need 0 <= lower < upper <= {MAX_QTY}, got {lower} and {upper}"
            )
        self.owner = owner
        self.buy_price = buy_price
        self.sell_price = sell_price
        self.lower = lower
        self.upper = upper
        self.bid: OpenOrder | None = None
        self.ask: OpenOrder | None = None
        self._n = 0

    def step(self, balance: int, ts: int) -> Step:
        """Act on the household's energy `balance` (Wh) at time `ts` (ms).

        Withdraws an open order whose side the balance has left, then posts a bid or an
        ask if the balance is past a threshold and no order of that side is open.
        """
        if balance < 0:
            raise ValueError(f"balance: must be >= 0, got {balance}")
        lower, upper = self.lower, self.upper
        if lower <= balance <= upper:  # the common case: between the thresholds
            if self.bid is None and self.ask is None:
                return _NOTHING
        withdrawn: list[OpenOrder] = []
        posted: list[OpenOrder] = []
        if self.bid is not None and balance >= upper:
            withdrawn.append(self.bid)
            self.bid = None
        if self.ask is not None and balance <= lower:
            withdrawn.append(self.ask)
            self.ask = None
        if balance < lower and self.bid is None:
            self.bid = self._new(BID, self.buy_price, upper - balance, ts)
            posted.append(self.bid)
        elif balance > upper and self.ask is None:
            self.ask = self._new(ASK, self.sell_price, balance - upper, ts)
            posted.append(self.ask)
        if not posted and not withdrawn:
            return _NOTHING
        return Step(tuple(posted), tuple(withdrawn))

    def open_orders(self) -> tuple[OpenOrder, ...]:
        """The agent's open orders (at most one bid and one ask)."""
        return tuple(o for o in (self.bid, self.ask) if o is not None)

    def filled(self, oid: int, qty: int) -> None:
        """Record that `qty` Wh of order `oid` traded; an order that traded in full closes."""
        for order in (self.bid, self.ask):
            if order is not None and order.oid == oid:
                if not 0 < qty <= order.qty:
                    raise ValueError(f"fill of {qty} Wh on order {oid} with {order.qty} Wh left")
                order.qty -= qty
                if order.qty == 0:
                    if order is self.bid:
                        self.bid = None
                    else:
                        self.ask = None
                return
        raise KeyError(f"order {oid} is not open for owner {self.owner}")

    def _new(self, side: int, price: int, qty: int, ts: int) -> OpenOrder:
        self._n += 1
        return OpenOrder((self.owner << 32) | self._n, side, price, min(qty, MAX_QTY), ts)

    def __repr__(self) -> str:
        return (
            f"ThresholdAgent(owner={self.owner}, buy_price={self.buy_price}, "
            f"sell_price={self.sell_price}, lower={self.lower}, upper={self.upper})"
        )
