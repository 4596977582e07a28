"""What the meters' tests share."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves a thread of its own running (a Modbus server, a reader)."""
    before = set(threading.enumerate())
    yield
    new = set(threading.enumerate()) - before
    # trio keeps its idle worker threads cached for a while; anything else is a leak.
    assert [t.name for t in new if not t.name.startswith("Trio thread")] == []
