"""Reading a ledger for the demo's report: per household and per interval, and each
household's grid-alone twin: the same readings and storage, no market (the savings).

Savings: each household is compared with a grid-alone twin that has the same meter
readings and the same ``bmax`` storage, starting from the same opening energy, but no
market (:func:`fold_ledger`). Cost = grid imports at retail - exports at feed-in + money
paid for trades - money received + fees. A run of a few hours leaves the market household
and its twin with different amounts of energy in storage (a buyer has filled its storage, a
seller has emptied it), so the savings also count that difference at the run's average
trade price: energy bought and still held is worth what it cost in the market.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wattmesh.settlement.ledger import LedgerEntry
from wattmesh.settlement.readings import apply_reading

__all__ = [
    "HouseholdAccount",
    "IntervalStats",
    "LedgerAccounts",
    "fold_ledger",
]


# -- reading a ledger: per household, per interval, and the grid-alone twin ---------------


@dataclass
class HouseholdAccount:
    """One household's flows over the run, from the ledger (Wh and nano), and its
    grid-alone twin's: the same readings folded into the same ``bmax`` storage from the
    same opening energy, without trades."""

    owner: str
    bmax: int = 0
    opening_energy: int = 0
    produced: int = 0
    consumed: int = 0
    bought: int = 0
    sold: int = 0
    paid: int = 0
    received: int = 0
    imported: int = 0
    exported: int = 0
    import_cost: int = 0  # imported * retail
    export_credit: int = 0  # exported * feed-in
    fees: int = 0
    energy: int = 0  # held at the end
    alone_imported: int = 0
    alone_exported: int = 0
    alone_import_cost: int = 0
    alone_export_credit: int = 0
    alone_energy: int = 0

    @property
    def cost(self) -> int:
        """With the market: grid bill less feed-in credit, plus trades and fees (nano)."""
        return self.import_cost - self.export_credit + self.paid - self.received + self.fees

    @property
    def alone_cost(self) -> int:
        """The grid-alone twin's grid bill less its feed-in credit (nano)."""
        return self.alone_import_cost - self.alone_export_credit

    def held_value(self, price: int) -> int:
        """What the energy held above the twin's at the end is worth at ``price``
        (micro-currency per kWh = nano per Wh); negative when the twin holds more."""
        return (self.energy - self.alone_energy) * price

    def savings(self, price: int) -> int:
        """The twin's cost less the market cost, plus :meth:`held_value` (nano)."""
        return self.alone_cost - self.cost + self.held_value(price)


@dataclass
class IntervalStats:
    """One settled interval of a ledger."""

    interval: int
    price: int | None = None  # the clearing price (micro per kWh); None: no trade
    volume: int = 0  # Wh
    money: int = 0  # nano
    trades: int = 0
    readings: int = 0
    digest: str | None = None  # the interval_close hash, hex

    def count(self, kind: str, body: dict[str, Any]) -> None:
        """Count one of the interval's ledger entries: a trade or a reading (others: no-op)."""
        if kind == "reading":
            self.readings += 1
        elif kind == "trade":
            self.price = body["price"]
            self.volume += body["qty"]
            self.money += body["qty"] * body["price"]
            self.trades += 1


@dataclass
class LedgerAccounts:
    """:func:`fold_ledger`'s result."""

    retail: int
    feedin: int
    households: dict[str, HouseholdAccount]  # by peer id, in ledger (peer id) order
    intervals: dict[int, IntervalStats]

    @property
    def volume(self) -> int:
        return sum(s.volume for s in self.intervals.values())

    @property
    def value_price(self) -> int:
        """The run's volume-weighted trade price (micro per kWh); 0 without trades (then
        every household holds what its twin holds)."""
        vol = self.volume
        return sum(s.money for s in self.intervals.values()) // vol if vol else 0


def fold_ledger(entries: Iterable[LedgerEntry], through: int | None = None) -> LedgerAccounts:
    """Fold a ledger's entries (up to the interval ``through``, or all) into per-household
    flows, each with its grid-alone twin, and per-interval trade statistics."""
    g: dict[str, Any] | None = None
    hs: dict[str, HouseholdAccount] = {}
    meters: dict[str, str] = {}
    ivs: dict[int, IntervalStats] = {}

    def interval(t: int) -> IntervalStats:
        return ivs.setdefault(t, IntervalStats(t))

    for e in entries:
        if through is not None and e.ts > through:
            break
        b, kind = e.body, e.kind
        if kind == "genesis":
            g = b
        elif kind == "member":
            hs[b["owner"]] = HouseholdAccount(b["owner"], bmax=b["bmax"])
        elif kind == "opening":
            h = hs[b["owner"]]
            h.opening_energy = h.energy = h.alone_energy = b["energy"]
        elif kind == "meter":
            meters[b["meter"]] = b["owner"]
        elif kind == "reading":
            assert g is not None
            h = hs[meters[b["meter"]]]
            p, c = b["produced"], b["consumed"]
            h.produced += p
            h.consumed += c
            retail, feedin = g["retail_price"], g["feedin_price"]
            # The market household: its grid entry (if any) follows as the next entry.
            h.energy = apply_reading(h.energy, h.bmax, p, c, retail, feedin).balance
            twin = apply_reading(h.alone_energy, h.bmax, p, c, retail, feedin)
            h.alone_energy = twin.balance
            h.alone_imported += twin.imported_wh
            h.alone_exported += twin.exported_wh
            h.alone_import_cost += twin.import_charge
            h.alone_export_credit += twin.export_credit
            interval(e.ts).count(kind, b)
        elif kind == "grid_import":
            h = hs[b["owner"]]
            h.imported += b["qty"]
            h.import_cost += b["qty"] * b["price"]
            if "reading" not in b:  # bought into storage, not consumed at once
                h.energy += b["qty"]
        elif kind == "grid_export":
            h = hs[b["owner"]]
            h.exported += b["qty"]
            h.export_credit += b["qty"] * b["price"]
            if "reading" not in b:  # sold out of storage
                h.energy -= b["qty"]
        elif kind == "trade":
            qty, money = b["qty"], b["qty"] * b["price"]
            buyer, seller = hs[b["buyer"]], hs[b["seller"]]
            buyer.bought += qty
            buyer.paid += money
            buyer.energy += qty
            seller.sold += qty
            seller.received += money
            seller.energy -= qty
            interval(b["interval"]).count(kind, b)
        elif kind == "fee":
            if b["owner"] in hs:
                hs[b["owner"]].fees += b["amount"]
        elif kind == "interval_close":
            interval(b["interval"]).digest = e.hash.hex()
    if g is None:
        raise ValueError("the ledger has no genesis entry")
    return LedgerAccounts(g["retail_price"], g["feedin_price"], hs, dict(sorted(ivs.items())))
