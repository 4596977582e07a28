"""The node process's collector policy (exchange/node/collector.py): what a node holds is
frozen, and frozen cyclic garbage is collected when an interval settles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from wattmesh.exchange.node.collector import QuietCollector


class Held:
    """Something a node holds, in a reference cycle once garbage."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector() -> Iterator[QuietCollector]:
    gc.collect()
    yield QuietCollector()
    gc.unfreeze()  # the rest of the test session collects as usual


def test_accepted_orders_are_frozen_and_settling_collects_what_was_let_go(
    collector: QuietCollector,
) -> None:
    frozen = gc.get_freeze_count()
    assert frozen > 0  # start-up: the libraries are frozen
    held = [Held() for _ in range(1_000)]
    collector("book-changed", {"interval": 0})
    assert gc.get_freeze_count() >= frozen + 1_000  # never walked by a full collection
    gone = weakref.ref(held[0])
    del held  # the interval settles: its messages are let go, cycles and all
    gc.collect()
    assert gone() is not None  # frozen: even a full collection does not see it
    collector("interval-settled", {"interval": 0})
    assert gone() is None and collector.collections == 1
    assert gc.get_freeze_count() > 0  # and what is still held is frozen again


def test_other_events_change_nothing(collector: QuietCollector) -> None:
    frozen = gc.get_freeze_count()
    loose = [Held() for _ in range(100)]
    collector("peer-joined", {"peer": "x"})
    assert gc.get_freeze_count() == frozen and collector.collections == 0
    del loose


def test_catching_up_collects_once_per_gap() -> None:
    """Settling many intervals in a row (a node catching up) walks the heap once per
    ``min_gap_s``, not once per interval."""
    now = [100.0]
    gc.collect()
    collector = QuietCollector(min_gap_s=5.0, clock=lambda: now[0])
    try:
        for _ in range(10):
            collector("interval-settled", {})
            now[0] += 1.0
        assert collector.collections == 2  # at 100 s and at 105 s
    finally:
        gc.unfreeze()
