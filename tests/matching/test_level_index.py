"""A book's price levels across the level index's chunk boundaries (matching/_engine.pyx:
a side's levels are found through a sorted index cut into chunks of at most 64). Each
side is built to N levels in four orders, then emptied in five, with levels refilled and
orders joining existing levels on the way; after each step the depth must be the plain
model's: one level per price, best first, with its total."""

from __future__ import annotations

import random

import pytest

from wattmesh.matching import ASK, BID, Book

SIZES = (1, 63, 64, 65, 96, 127, 128, 129, 192, 256, 1000)


def arranged(prices: list[int], how: str, rng: random.Random) -> list[int]:
    if how == "descending":
        return prices[::-1]
    if how == "shuffled":
        return rng.sample(prices, len(prices))
    if how == "zigzag":  # lowest, highest, second lowest, ...: both ends of the index
        lo, hi = prices[: len(prices) // 2], prices[len(prices) // 2 :][::-1]
        return [p for pair in zip(hi, lo, strict=False) for p in pair] + hi[len(lo) :]
    if how == "evens first":
        return prices[::2] + prices[1::2]
    if how == "middle out":
        mid = prices[len(prices) // 2]
        return sorted(prices, key=lambda p: (abs(p - mid), p))
    return list(prices)  # ascending


class SideAndModel:
    """One side of a Book beside the plain model of its levels: price -> total."""

    def __init__(self, side: int) -> None:
        self.side, self.book, self.model = side, Book(), {}
        self.ids: dict[int, list[int]] = {}  # price -> the ids resting there
        self.next_id = 0

    def rest(self, price: int, qty: int) -> None:
        self.next_id += 1
        self.book.submit(self.next_id, self.side, price, qty)
        self.ids.setdefault(price, []).append(self.next_id)
        self.model[price] = self.model.get(price, 0) + qty

    def drop(self, price: int) -> None:
        while self.ids.get(price):
            assert self.book.cancel(self.ids[price].pop())
        del self.model[price]

    def agree(self) -> bool:
        return self.book.depth(self.side) == sorted(self.model.items(), reverse=self.side == BID)


@pytest.mark.parametrize("side", [BID, ASK])
@pytest.mark.parametrize("n", SIZES)
def test_levels_stay_one_per_price_in_priority_order_across_chunks(side, n):
    rng = random.Random(n * 2 + side)
    prices = list(range(1_000, 1_000 + n))
    for build in ("ascending", "descending", "shuffled", "zigzag"):
        for drain in ("ascending", "descending", "shuffled", "evens first", "middle out"):
            b = SideAndModel(side)
            for price in arranged(prices, build, rng):
                b.rest(price, 1)
            assert b.agree(), (build, drain)
            to_drain = arranged(prices, drain, rng)
            for step, price in enumerate(to_drain):
                b.drop(price)
                if step % 7 == 3:  # a drained price comes back as a new level
                    again = rng.choice(to_drain[: step + 1])
                    if again not in b.model:
                        b.rest(again, 2)
                        to_drain.append(again)
                if step % 11 == 5 and b.model:  # an order joins a level still there
                    b.rest(rng.choice(sorted(b.model)), 3)
                if step % 5 == 0 or len(b.model) < 3:
                    assert b.agree(), (build, drain, step)
            assert b.book.depth(side) == [] and len(b.book) == 0
