"""What one meter reading does to a household's energy balance (docs/design.md, "Meters").

Production raises the balance up to ``Bmax``; what is above ``Bmax`` is exported to the grid
at the feed-in price. Consumption lowers it; what the balance cannot cover is imported from
the grid at the retail price.

Order within one reading: docs/design.md is silent, so we follow the community simulation
(``agents/community.py``): the interval's production first covers the *same* interval's
consumption (behind the meter), and only the net moves the balance, within ``[0, Bmax]``.
A reading therefore never both exports and imports; a full battery that produces 2 kWh and
consumes 2 kWh in one interval trades nothing with the grid. (The alternative, "all
production first, then all consumption", would export and re-import the same energy
whenever the balance is near ``Bmax``.)

All integers: energy in Wh, prices in micro-currency/kWh (= nano/Wh), money in nano.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .errors import RecordError

__all__ = [
    "DEFAULT_FEEDIN_PRICE",
    "DEFAULT_RETAIL_PRICE",
    "ReadingEffect",
    "SequenceProblem",
    "apply_reading",
    "net_to_balance",
    "order_problem",
    "power_problem",
]


# The grid's prices, micro-currency per kWh, wherever a community, a replay or a
# simulation is not told others: what the grid charges for energy a household imports,
# and what it pays for energy exported above Bmax.
DEFAULT_RETAIL_PRICE = 230_000  # 0.23 per kWh
DEFAULT_FEEDIN_PRICE = 80_000  # 0.08 per kWh


@dataclass(frozen=True, slots=True)
class ReadingEffect:
    """The outcome of one reading: new balance, grid flows (Wh) and their money (nano)."""

    balance: int
    exported_wh: int
    imported_wh: int
    export_credit: int  # exported_wh * feed_in, paid to the household
    import_charge: int  # imported_wh * retail, charged to the household


def _need_count(value: object, field: str) -> int:
    # bool is an int subclass; True Wh is a bug, not 1 Wh.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(field, f"need an int, got {type(value).__name__}")
    if value < 0:
        raise RecordError(field, f"need a non-negative int, got {value}")
    return value


def apply_reading(
    balance: int,
    bmax: int | None,
    produced: int,
    consumed: int,
    retail: int,
    feed_in: int,
) -> ReadingEffect:
    """Apply one reading (``produced`` and ``consumed`` Wh) to an energy ``balance`` (Wh).

    ``bmax`` None means no cap (nothing is ever exported). ``balance`` must already lie in
    ``[0, bmax]``: a balance above its cap is a ledger error to correct, not something a
    reading should quietly export. Raises :class:`RecordError` naming the bad field.
    Conservation: ``balance + produced + imported == new balance + consumed + exported``.
    """
    _need_count(balance, "balance")
    if bmax is not None:
        _need_count(bmax, "bmax")
        if balance > bmax:
            raise RecordError("balance", f"{balance} Wh is above bmax {bmax} Wh")
    _need_count(produced, "produced")
    _need_count(consumed, "consumed")
    _need_count(retail, "retail")
    _need_count(feed_in, "feed_in")

    e, exported, imported = net_to_balance(balance, bmax, produced - consumed)
    return ReadingEffect(e, exported, imported, exported * feed_in, imported * retail)


def net_to_balance(balance: int, bmax: int | None, net: int) -> tuple[int, int, int]:
    """The rule itself, on integers already checked: the net (produced - consumed Wh)
    moves ``balance`` within ``[0, bmax]``; returns (new balance, exported Wh, imported
    Wh). :func:`apply_reading` checks its inputs and calls it; a simulation that made its
    own integers calls it directly."""
    e = balance + net
    if bmax is not None and e > bmax:
        return bmax, e - bmax, 0
    if e < 0:
        return 0, 0, -e
    return e, 0, 0


class SequenceProblem(NamedTuple):
    """How a reading breaks its meter's rules: a refusal code of the shared table
    (settlement/refusals.py), the field, and what is wrong."""

    code: str
    field: str
    message: str


def order_problem(seq: int, start: int, *, last_seq: int, last_end: int) -> SequenceProblem | None:
    """A meter's next reading must have a ``seq`` above the last accepted one
    (``out-of-order``) and must not start before the last one ended (``overlap``). The one
    home of these rules: the meters' validator and the ledger both call it."""
    if seq <= last_seq:
        return SequenceProblem(
            "out-of-order", "seq", f"{seq} is not above the last accepted {last_seq}"
        )
    if start < last_end:
        return SequenceProblem(
            "overlap", "start",
            f"{start} is before the end of the last accepted reading ({last_end})",
        )  # fmt: skip
    return None


def power_problem(
    start: int, end: int, produced: int, consumed: int, max_power_w: int | None
) -> SequenceProblem | None:
    """Neither ``produced`` nor ``consumed`` may exceed what a meter of ``max_power_w`` can
    give over ``[start, end)`` (``impossible``); None means no limit."""
    if max_power_w is None:
        return None
    most = max_power_w * (end - start) // 3_600_000
    for name, value in (("produced", produced), ("consumed", consumed)):
        if value > most:
            return SequenceProblem(
                "impossible", name,
                f"{value} Wh in {end - start} ms is more than the meter's {max_power_w} W "
                f"can give ({most} Wh)",
            )  # fmt: skip
    return None
