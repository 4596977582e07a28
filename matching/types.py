"""The values the matching engine hands back: plain named tuples, cheap to compare."""

from __future__ import annotations

from array import array
from typing import NamedTuple


class Fill(NamedTuple):
    """One fill: `qty` Wh from the seller's ask to the buyer's bid at `price`.

    `aggressor` is the side of the order that arrived later (the taker) in the continuous
    book, and None in a call auction, where no order is earlier than another.
    """

    bid: int
    ask: int
    price: int
    qty: int
    buyer: int
    seller: int
    aggressor: int | None


class Quote(NamedTuple):
    """Best bid and ask over all orders, and the best executable bid and ask beside them."""

    bid: int | None
    ask: int | None
    exec_bid: int | None
    exec_ask: int | None


class RestingOrder(NamedTuple):
    """An order on the book, as `orders()` and `order()` report it."""

    oid: int
    side: int
    price: int
    qty: int
    owner: int


class Clearing(NamedTuple):
    """The result of clearing one call auction."""

    price: int | None
    fills: list[Fill]
    volume: int
    orders: int
    executable_orders: int


class ClearingArrays(NamedTuple):
    """`Clearing` with the fills as columns (`array.array`), for large auctions."""

    price: int | None
    volume: int
    orders: int
    executable_orders: int
    bid: array
    ask: array
    qty: array
    buyer: array
    seller: array


class BatchResult(NamedTuple):
    """What `Book.run` returns: per-event status and the fills as columns.

    `status[i]` is 0 when event i was applied and 1 when it was refused (unknown or
    duplicate order id, bad quantity or price). `event[k]` is the index of the event
    that caused fill k, and `market[k]` the index of the fill's book in its `Markets`
    (0 for a book on its own).
    """

    status: array
    event: array
    bid: array
    ask: array
    price: array
    qty: array
    buyer: array
    seller: array
    aggressor: array
    market: array
