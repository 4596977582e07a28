"""A pause of CPython's cyclic garbage collector while bulk work runs.

The ledger's append and an order-log replay allocate many small objects (rows, entries,
balances, fills) and make no reference cycles; the cyclic collector would walk the young
ones every 700 allocations and, now and then, everything the process holds, finding
nothing. Reference counting still frees all of it. The node keeps its own schedule
(exchange/node/collector.py, which freezes what it holds and collects after each
settlement); a pause during one of its ledger appends only delays a collection.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; re-enable it after if it was on."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
