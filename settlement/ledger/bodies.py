"""The bodies of the entries that other parts write: one spelling each, so that a node's
settlement and a replay's ledger write the same bytes for the same event."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from .schema import FUNDS, STORAGE_FUNDS

__all__ = ["Opening", "genesis_body", "opening_items", "trade_body"]


def genesis_body(
    *,
    community: str,
    interval_ms: int,
    price_min: int,
    price_max: int,
    fee_rate_ppm: int,
    retail_price: int,
    feedin_price: int,
    storage_rate: int = 0,
) -> dict[str, Any]:
    """The genesis entry; with a ``storage_rate`` > 0 also the rate and the education and
    network funds (a rate of 0 is spelled by leaving it out)."""
    body: dict[str, Any] = {
        "community": community, "interval_ms": interval_ms,
        "price_min": price_min, "price_max": price_max,
        "fee_rate_ppm": fee_rate_ppm, "retail_price": retail_price,
        "feedin_price": feedin_price, "funds": dict(FUNDS),
    }  # fmt: skip
    if storage_rate:
        body["storage_rate"] = storage_rate
        body["funds"] = dict(STORAGE_FUNDS)
    return body


class Opening(NamedTuple):
    """A member as the ledger opens it: its cap, whether it provides storage, and what it
    brings."""

    owner: str
    bmax: int
    storage: bool
    energy: int
    money: int


def opening_items(members: Iterable[Opening]) -> list[tuple[str, dict[str, Any]]]:
    """Per member, in the order given: its ``member`` entry and, when it brings energy or
    money, its ``opening``."""
    items: list[tuple[str, dict[str, Any]]] = []
    for m in members:
        items.append(("member", {"owner": m.owner, "bmax": m.bmax, "storage": m.storage}))
        if m.energy or m.money:
            items.append(("opening", {"owner": m.owner, "energy": m.energy, "money": m.money}))
    return items


def trade_body(
    *, buyer: str, seller: str, qty: int, price: int, bid: str, ask: str, interval: int | None
) -> dict[str, Any]:
    """A trade entry: who bought from whom, how much at what price, the two orders and the
    delivery interval."""
    return {
        "buyer": buyer, "seller": seller, "qty": qty, "price": price,
        "bid": bid, "ask": ask, "interval": interval,
    }  # fmt: skip
