"""The units money and prices are kept in, and how a person reads them.

Money is an integer count of nano-currency units (10**-9 of the community's currency) and
a price an integer count of micro-currency units per kWh; energy is integer Wh. Files keep
these integers; only what is printed for a person is converted, here."""

from __future__ import annotations

__all__ = ["MICRO", "NANO", "price_text"]

NANO = 10**9  # nano-currency per currency unit
MICRO = 10**6  # micro-currency per currency unit


def price_text(micro: int | None) -> str:
    """A price per kWh in currency units with four decimals; ``-`` for no price."""
    return "-" if micro is None else f"{micro / MICRO:.4f}"
