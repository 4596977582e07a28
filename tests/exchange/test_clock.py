"""Interval arithmetic and the trio gate task (run on trio's mock clock)."""

import pytest
import trio

from wattmesh.exchange.clock import (
    DEFAULT_INTERVAL_MS,
    check_interval,
    gates,
    interval_start,
    is_late,
)

T0 = 1_750_000_500_000  # not on an interval boundary


def test_interval_start_floors_to_the_interval():
    start = interval_start(T0)
    assert start % DEFAULT_INTERVAL_MS == 0
    assert start <= T0 < start + DEFAULT_INTERVAL_MS
    assert interval_start(start) == start


def test_check_interval_refuses_a_misaligned_start():
    check_interval(interval_start(T0))
    with pytest.raises(ValueError, match="interval: .* is not the start"):
        check_interval(interval_start(T0) + 1)
    with pytest.raises(ValueError, match="integer milliseconds"):
        check_interval(True)


def test_gate_is_the_interval_start():
    t = interval_start(T0)
    assert not is_late(t - 1, t)
    assert is_late(t, t)


@pytest.mark.trio
async def test_gates_yields_each_interval_after_its_gate_and_grace(autojump_clock):
    length, grace = 1000, 250
    base = 5_000_300  # ms on the wall clock when trio's clock reads 0

    def now_ms() -> int:
        return base + int(trio.current_time() * 1000)

    seen = []
    async for interval in gates(length, grace_ms=grace, now_ms=now_ms):
        seen.append((interval, now_ms()))
        if len(seen) == 3:
            break
    assert [i for i, _ in seen] == [5_001_000, 5_002_000, 5_003_000]
    for interval, woke in seen:
        assert interval + grace <= woke < interval + grace + 50


@pytest.mark.trio
async def test_gates_catches_up_without_skipping(autojump_clock):
    length = 1000
    base = 10_000_000

    def now_ms() -> int:
        return base + int(trio.current_time() * 1000)

    seen = []
    async for interval in gates(length, now_ms=now_ms):
        seen.append(interval)
        if len(seen) == 1:
            await trio.sleep(3.5)  # fall behind by three intervals
        if len(seen) == 5:
            break
    assert seen == [10_001_000 + k * length for k in range(5)]


def test_the_open_interval_is_the_next_one_whose_gate_is_ahead():
    from wattmesh.exchange.clock import is_late, open_interval

    L = 900_000
    for now in (3 * L, 3 * L + 1, 4 * L - 1):
        t = open_interval(now, L)
        assert t == 4 * L and not is_late(now, t) and is_late(now, t - L)
