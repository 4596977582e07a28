"""When a node process lets Python's cyclic garbage collector walk its heap.

A node holds every message of its open intervals (thousands of orders at a busy gate) and
the whole libp2p stack. Left to its defaults, CPython's collector walks all of it in a
full collection each time the heap has grown by a quarter: 0.85-1.1 s during which the
node neither forwards nor accepts anything, measured at 8 nodes (docs/node.md, "Gossip
benchmark"). So :class:`QuietCollector` freezes what the node holds (``gc.freeze``:
frozen objects are never walked) after start-up and after every accepted order message,
and lets one full collection run right after each interval settles, when the settled
interval's messages have just been let go and the next gate is furthest away. Cyclic
garbage frozen in between is collected there, so nothing leaks for longer than one
interval. Young collections go on as usual; only the walks over the whole heap move. A
node catching up settles many intervals in a row: it collects at most once every
``min_gap_s`` seconds meanwhile.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["QuietCollector"]


class QuietCollector:
    """A node listener (``HouseholdNode.listeners``) that schedules full collections.

    Process-wide: one per node process (``wattmesh node``), not for nodes that share a
    process with others (tests).
    """

    def __init__(
        self, min_gap_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.collections = 0
        self.min_gap_s = min_gap_s
        self._clock = clock
        self._last = float("-inf")
        gc.freeze()  # the libraries and the node as started: never garbage

    def __call__(self, event: str, _data: dict[str, Any]) -> None:
        if event == "book-changed":  # an order, batch or cancel was accepted and is held
            gc.freeze()
        elif event == "interval-settled":
            now = self._clock()
            if now - self._last < self.min_gap_s:  # catching up: one walk is enough
                gc.freeze()
                return
            self._last = now
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.collections += 1
