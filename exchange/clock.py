"""Delivery intervals: which interval a moment falls in, when an interval's gate closes,
and a trio task that wakes at every gate.

An order names the start `t` of the delivery interval it is for. The interval's gate is
`t` itself: orders and cancels for `t` must arrive before `t` (docs/design.md, call auction).
All times are integer milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

DEFAULT_INTERVAL_MS = 900_000  # 15 minutes


def wall_clock_ms() -> int:
    """Now, in integer milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def interval_start(ts_ms: int, length_ms: int = DEFAULT_INTERVAL_MS) -> int:
    """Start of the interval that contains `ts_ms`."""
    return ts_ms - ts_ms % length_ms


def open_interval(ts_ms: int, length_ms: int = DEFAULT_INTERVAL_MS) -> int:
    """The interval an order made at `ts_ms` goes to by default: the next one, whose gate
    is still ahead (the current one's gate, its start, has passed)."""
    return interval_start(ts_ms, length_ms) + length_ms


def check_interval(interval: int, length_ms: int = DEFAULT_INTERVAL_MS) -> None:
    """Raise ValueError unless `interval` is the start of an interval of `length_ms`."""
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise ValueError(f"interval: must be integer milliseconds, got {interval!r}")
    if interval < 0 or interval % length_ms:
        raise ValueError(f"interval: {interval} is not the start of a {length_ms} ms interval")


def is_late(ts_ms: int, interval: int) -> bool:
    """True if an event at `ts_ms` comes at or after the gate of `interval`."""
    return ts_ms >= interval


async def gates(
    length_ms: int = DEFAULT_INTERVAL_MS,
    *,
    grace_ms: int = 0,
    now_ms: Callable[[], int] = wall_clock_ms,
) -> AsyncIterator[int]:
    """Yield the start of each interval once its gate plus `grace_ms` has passed.

    The first interval yielded is the next one whose gate is still ahead; every later
    interval follows in order, none skipped, even if the caller falls behind (then the
    late ones come at once). Sleeps with trio, so a test can drive it with a MockClock.
    """
    import trio  # here, not at the top: replay uses this module and never needs trio

    if length_ms <= 0 or grace_ms < 0:
        raise ValueError("length_ms must be positive and grace_ms not negative")
    next_interval = open_interval(now_ms(), length_ms)
    while True:
        wait_ms = next_interval + grace_ms - now_ms()
        if wait_ms > 0:
            await trio.sleep(wait_ms / 1000)
            continue  # the clock may have moved less than asked: check again
        yield next_interval
        next_interval += length_ms
