"""The units money and prices are kept in, and how a person reads them.

Money is an integer count of nano-currency units (10**-9 of the community's currency) and
a price an integer count of micro-currency units per kWh; energy is integer Wh. Files keep
these integers; only what is printed for a person is converted, here."""

from __future__ import annotations

from datetime import datetime

__all__ = ["MICRO", "NANO", "energy_text", "interval_text", "money_text", "price_text"]

NANO = 10**9  # nano-currency per currency unit
MICRO = 10**6  # micro-currency per currency unit


def price_text(micro: int | None) -> str:
    """A price per kWh in currency units with four decimals; ``-`` for no price."""
    return "-" if micro is None else f"{micro / MICRO:.4f}"


def interval_text(start_ms: int, length_ms: int) -> str:
    """A delivery interval as a person on this machine reads it: its local start and end
    times, ``15:45–16:00`` (the machine's time zone; the files keep epoch ms)."""
    start = datetime.fromtimestamp(start_ms / 1000)
    end = datetime.fromtimestamp((start_ms + length_ms) / 1000)
    return f"{start:%H:%M}–{end:%H:%M}"


def money_text(nano: int, currency: str | None = None) -> str:
    """Money to the cent, with the community's symbol when it names one: ``€0.63``,
    ``0.63 EUR`` (a code goes after), ``-€1.20``, or ``0.63`` without one."""
    text = f"{abs(nano) / NANO:,.2f}"
    sign = "-" if nano < 0 else ""
    if not currency:
        return sign + text
    return f"{sign}{currency}{text}" if len(currency) == 1 else f"{sign}{text} {currency}"


def energy_text(wh: int) -> str:
    """Energy in kWh to the Wh: ``1.250 kWh``."""
    return f"{wh / 1000:.3f} kWh"
