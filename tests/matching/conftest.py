"""The two implementations of the matching API, for tests that hold both to one rule:
the Cython engine and the pure-Python reference model."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from wattmesh.matching import Accounts, Book, CallAuction, Markets
from wattmesh.matching.reference import RefAccounts, RefBook, RefCallAuction, RefMarkets


@dataclass(frozen=True)
class Impl:
    """One implementation of the matching API."""

    name: str
    Accounts: type
    Book: type
    CallAuction: type
    Markets: type


IMPLS = {
    "engine": Impl("engine", Accounts, Book, CallAuction, Markets),
    "reference": Impl("reference", RefAccounts, RefBook, RefCallAuction, RefMarkets),
}


# Session scope: hypothesis's @given tests may use it (their examples share one impl).
@pytest.fixture(scope="session", params=list(IMPLS))
def impl(request: pytest.FixtureRequest) -> Impl:
    """Each implementation in turn: ``impl.Book(...)``, ``impl.Accounts()``, ..."""
    return IMPLS[request.param]


def _depth_from_orders(book, side: int) -> list[tuple[int, int]]:
    levels: dict[int, int] = {}
    for order in book.orders(side):
        levels[order.price] = levels.get(order.price, 0) + order.qty
    return list(levels.items())  # orders() is in priority order, so levels are too


@pytest.fixture(scope="session")
def depth_from_orders():
    """``depth_from_orders(book, side)``: [(price, total qty)] per level, best first,
    summed from ``book.orders(side)`` (what ``Book.depth`` must give; the reference has
    no ``depth``)."""
    return _depth_from_orders
