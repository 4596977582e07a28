"""Meters read live (wattmesh.meters.live): the register log, and each real source's driver
against a fake meter: DSMR telegrams through a FIFO and a growing file, a pymodbus SunSpec
server on 127.0.0.1, a CSV file that grows.

The sources run under trio with a clock the test sets (``Clock``), so staleness is tested
without waiting for it. Every fake is closed and joined; the fixture checks no thread is
left behind.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import trio

from wattmesh.meters.csv_source import CsvFollower
from wattmesh.meters.dsmr import DsmrError, TelegramStream, read_telegram_file
from wattmesh.meters.live import (
    CsvSource,
    DsmrSource,
    MeterFault,
    RegisterLog,
    SimulatedSource,
    SunSpecSource,
)
from wattmesh.meters.measurement import (
    Measurement,
    MeasurementError,
    RegisterSample,
    intervals_from_registers,
)
from wattmesh.meters.simulated import simulate


def _load_fakes() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "live_fakes_meters", Path(__file__).resolve().parent / "live_fakes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fakes = _load_fakes()

L = 900_000  # a 15-minute interval
T0 = 1_781_935_200_000  # 2026-06-20 06:00 UTC, on an interval boundary (summer time in NL)
SEQUENCE = fakes.DATA / "sequence_fluvius_1h.txt"


pytestmark = pytest.mark.usefixtures("no_leftover_threads")  # tests/meters/conftest.py


class Clock:
    """Community time the test moves: ``clock()`` is now, in ms."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def truth(samples: list[RegisterSample], start: int, end: int) -> tuple[int, int]:
    """What intervals_from_registers gives over the whole intervals of [start, end)."""
    got = [m for m in intervals_from_registers(samples, L) if start <= m.start and m.end <= end]
    return sum(m.produced for m in got), sum(m.consumed for m in got)


# --- the register log --------------------------------------------------------------------------


def test_a_span_is_the_register_difference_and_waits_for_a_sample_after_it() -> None:
    log = RegisterLog(L)
    for ts, p, c in [(T0 - 60_000, 10, 500), (T0 + 300_000, 40, 530), (T0 + L, 90, 600),
                     (T0 + 2 * L - 1, 95, 700)]:  # fmt: skip
        log.add(RegisterSample(ts, p, c))
    assert log.measure(T0, T0 + L) == Measurement(T0, T0 + L, 80, 100)
    assert log.measure(T0, T0 + 2 * L) is None  # the register at T0 + 2L is not known yet
    log.add(RegisterSample(T0 + 2 * L + 5, 99, 703))
    # The energy of the last sample's interval belongs to the span it ends in.
    assert log.measure(T0, T0 + 2 * L) == Measurement(T0, T0 + 2 * L, 85, 200)
    assert log.measure(T0 + L, T0 + 2 * L) == Measurement(T0 + L, T0 + 2 * L, 5, 100)
    assert log.add(RegisterSample(T0 + 2 * L + 5, 99, 703)) == "old"
    assert log.add(RegisterSample(T0, 0, 0)) == "old"  # time went back: not a register fault
    assert log.backwards is None


def test_thinned_samples_measure_what_all_samples_do() -> None:
    rng = random.Random(7)
    samples, ts, p, c = [], T0 - 100_000, 0, 10_000
    for _ in range(3_000):
        ts += rng.choice([1, 999, 10_000, 45_000, L - ts % L, 3 * L])  # some exactly on a boundary
        p, c = p + rng.randrange(0, 40), c + rng.randrange(0, 90)
        samples.append(RegisterSample(ts, p, c))
    log = RegisterLog(L)
    for s in samples:
        assert log.add(s) == "added"
    spans = (samples[-1].ts - T0) // L
    assert len(log.series[0]) <= 2 * spans + 4  # about two samples an interval, not 3000
    for a, b in [(0, spans), (3, 9), (spans - 1, spans), (5, 5 + 40)]:
        start, end = T0 + a * L, T0 + b * L
        m = log.measure(start, end)
        assert m is not None and (m.produced, m.consumed) == truth(samples, start, end)
    log.forget_before(T0 + 3 * L)
    m = log.measure(T0 + 3 * L, T0 + 9 * L)
    assert m is not None and (m.produced, m.consumed) == truth(samples, T0 + 3 * L, T0 + 9 * L)


def test_a_register_misread_low_is_dropped_and_nothing_is_invented() -> None:
    log = RegisterLog(L)
    log.add(RegisterSample(T0 - 1, 100, 1_000))
    log.add(RegisterSample(T0 + 100_000, 110, 1_050))
    assert log.add(RegisterSample(T0 + 200_000, 110, 3)) == "backwards"
    assert log.backwards == MeterFault(
        "backwards", "consumed register went down from 1050 to 3 Wh at 2026-06-20 06:03:20 UTC"
    )
    assert log.add(RegisterSample(T0 + L + 1, 111, 4)) == "backwards"
    assert log.measure(T0, T0 + L) is None  # a sample after the span, but a suspect one
    assert log.add(RegisterSample(T0 + L + 1, 120, 1_090)) == "old"
    assert log.add(RegisterSample(T0 + L + 3, 121, 1_091)) == "resumed"  # a misread: dropped
    assert log.backwards is None and log.suspect == []
    # As if the low samples never were: 1000 -> 1090 across the boundary's last sample.
    assert log.measure(T0, T0 + L) == Measurement(T0, T0 + L, 10, 50)


def test_registers_that_stay_down_start_a_new_series_and_lose_only_the_unknown() -> None:
    log = RegisterLog(L)
    old = [RegisterSample(T0 - 1, 5_000, 90_000), RegisterSample(T0 + L - 1, 5_100, 90_400),
           RegisterSample(T0 + L + 1, 5_110, 90_410)]  # fmt: skip
    new = [RegisterSample(T0 + L + 100_000, 0, 7), RegisterSample(T0 + 2 * L, 30, 207),
           RegisterSample(T0 + 2 * L + 100_000, 40, 300),
           RegisterSample(T0 + 3 * L + 1, 50, 400)]  # fmt: skip
    for s in old:
        log.add(s)
    events = [log.add(s) for s in new]
    # Down for a whole interval (confirm_ms) and counting up: a new meter.
    assert events == ["backwards", "backwards", "restarted", "added"]
    assert log.backwards is None and len(log.series) == 2
    m = log.measure(T0, T0 + 4 * L)
    assert m is None  # no sample at or after T0 + 4L yet
    m = log.measure(T0, T0 + 3 * L)
    # The old meter's whole interval [T0, T0 + L) and the new meter's [T0 + 2L, T0 + 3L)
    # (up to its last sample at or before T0 + 3L): the energy between 5110/90410 (old) and
    # 0/7 (new) cannot be known and is not counted, nor is the new meter's partial first
    # interval.
    assert m == Measurement(T0, T0 + 3 * L, 100 + (40 - 30), 400 + (300 - 207))
    assert m.produced <= 5_110 - 5_000 + 50 and m.consumed <= 90_410 - 90_000 + 400


def test_simulated_source_is_the_simulation_per_interval() -> None:
    source = SimulatedSource(T0, L, seed=3, peak_w=5_000)
    day = simulate(T0 - T0 % 86_400_000, 1, seed=3, peak_w=5_000, backend="builtin")
    by_start = {m.start: m for m in day}
    m = source.measure(T0, T0 + 4 * L)
    assert m.produced == sum(by_start[T0 + k * L].produced for k in range(4))
    assert m.consumed == sum(by_start[T0 + k * L].consumed for k in range(4))
    assert source.fault() is None and source.newest() is None


# --- DSMR: the telegram stream -----------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_telegram_stream_in_any_chunks(chunk: int, line_end: bytes) -> None:
    data = SEQUENCE.read_bytes().replace(b"\r\n", line_end)
    data = data[:100] + data.replace(b"1-0:1.8.1(000301.700", b"1-0:1.8.1(000301.790", 1)
    stream = TelegramStream()
    got = []
    for i in range(0, len(data), chunk):
        got += stream.feed(data[i : i + chunk])
    # The first 100 bytes are the tail of a telegram in flight: dropped, not reported.
    bad = [x for x in got if isinstance(x, DsmrError)]
    assert [(e.number, "CRC checksum failed" in str(e)) for e in bad] == [(3, True)]
    samples = [x for x in got if not isinstance(x, DsmrError)]
    expected = list(read_telegram_file(SEQUENCE))
    assert samples == expected[:2] + expected[3:]
    assert stream.number == 11 and stream.unframed == 0


# --- DSMR through a FIFO and a growing file ----------------------------------------------------


@pytest.mark.anyio
async def test_dsmr_through_a_fifo_bad_crc_and_a_meter_that_stops(tmp_path: Path) -> None:
    fifo = tmp_path / "p1"
    os.mkfifo(fifo)
    clock = Clock(T0)
    source = DsmrSource(str(fifo), L, clock, poll_s=0.02)
    # Read and write ends for the test: a FIFO always has a writer then (no EOF).
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    sent: list[RegisterSample] = []

    def send(ms: int, p: int, c: int, bad: bool = False) -> None:
        os.write(writer, fakes.telegram(ms, p, c, bad_crc=bad))
        if not bad:
            sent.append(RegisterSample(ms - ms % 1000, p, c))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source.run)
            for k in range(6):  # every 5 minutes from T0 - 10 min, consumption rising
                send(T0 - 600_000 + k * 300_000, 20 * k, 1_000 + 150 * k)
            await until(lambda: source.newest() == sent[-1], "six telegrams")
            clock.ms = T0 + L
            assert source.fault() is None
            assert source.measure(T0, T0 + L) == Measurement(T0, T0 + L, 60, 450)
            send(T0 + L + 60_000, 120, 1_900, bad=True)
            await until(lambda: source.fault() is not None, "the bad telegram")
            fault = source.fault()
            assert fault is not None and fault.reason == "bad-data"
            assert re.match(r"telegram 7: CRC checksum failed", fault.message), fault.message
            assert source.measure(T0, T0 + L) is None  # nothing while in fault
            send(T0 + L + 120_000, 121, 1_950)
            await until(lambda: source.fault() is None, "the next good telegram")
            # The meter stops: after two intervals without a sample it is stale.
            clock.ms = T0 + 3 * L + 120_001
            fault = source.fault()
            assert fault is not None and fault.reason == "stale"
            assert fault.message == "no sample since 2026-06-20 06:17:00 UTC (over 1800 s)"
            assert source.measure(T0, T0 + 3 * L) is None
            send(T0 + 3 * L + 130_000, 200, 2_500)  # it is back: the gap is covered whole
            await until(lambda: source.fault() is None, "the meter back")
            assert source.measure(T0, T0 + 3 * L) == Measurement(
                T0, T0 + 3 * L, *truth(sent, T0, T0 + 3 * L)
            )
            # 40/1300 at T0 (the telegram of T0 itself), 121/1950 the last before T0 + 3L.
            assert source.measure(T0, T0 + 3 * L) == Measurement(T0, T0 + 3 * L, 81, 650)
            nursery.cancel_scope.cancel()
    finally:
        os.close(writer)


@pytest.mark.anyio
async def test_dsmr_file_that_grows_is_followed_and_read_again_when_rewritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p1.log"
    path.write_bytes(b"".join(fakes.telegram(T0 + k * 60_000, 0, 100 + k) for k in range(3)))
    clock = Clock(T0)
    source = DsmrSource(str(path), L, clock, poll_s=0.02)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run)
        await until(lambda: source.newest() == RegisterSample(T0 + 120_000, 0, 102), "the file")
        with path.open("ab") as f:
            # Half a telegram first, as a writer may leave it for a moment.
            data = fakes.telegram(T0 + L + 1_000, 0, 180)
            f.write(data[:50])
            f.flush()
            await trio.sleep(0.1)
            f.write(data[50:])
        await until(lambda: source.newest() == RegisterSample(T0 + L + 1_000, 0, 180), "more")
        assert source.measure(T0, T0 + L) == Measurement(T0, T0 + L, 0, 2)
        # Rewritten shorter (rotated): read from its start; older times are ignored.
        path.write_bytes(fakes.telegram(T0 + L + 2_000, 0, 181))
        await until(lambda: source.newest() == RegisterSample(T0 + L + 2_000, 0, 181), "new")
        assert source.fault() is None
        nursery.cancel_scope.cancel()


@pytest.mark.anyio
async def test_dsmr_device_missing_is_unreachable_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "p1"
    source = DsmrSource(str(path), L, Clock(T0), poll_s=0.02)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run)
        await until(lambda: source.fault() is not None, "the fault")
        assert source.fault() == MeterFault(
            "unreachable", f"P1 port {path}: cannot open: No such file or directory"
        )
        path.write_bytes(fakes.telegram(T0, 1, 2))
        await until(lambda: source.fault() is None, "the file")
        assert source.newest() == RegisterSample(T0, 1, 2)
        nursery.cancel_scope.cancel()


# --- SunSpec over Modbus TCP -------------------------------------------------------------------


@pytest.mark.anyio
async def test_sunspec_inverter_forward_stopped_and_backwards() -> None:
    clock = Clock(T0 - 10_000)
    wh = 1_234_567
    inverter = fakes.Inverter(wh)
    with inverter:
        source = SunSpecSource("127.0.0.1", L, clock, port=inverter.port, poll_s=0.02,
                               timeout_s=1.0)  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source.run)
            await until(lambda: source.newest() is not None, "a first read")
            clock.ms = T0 + 400_000
            inverter.set_wh(wh + 300)
            await until(lambda: source.newest().produced_total == wh + 300, "300 Wh more")
            clock.ms = T0 + L + 1
            await until(lambda: source.newest().ts == T0 + L + 1, "a read after T0 + L")
            assert source.measure(T0, T0 + L) == Measurement(T0, T0 + L, 300, 0)
            # Backwards: a misread low, then the register as it was: nothing lost or added.
            inverter.set_wh(7)
            clock.ms = T0 + L + 100_000
            await until(lambda: source.fault() is not None, "the register going down")
            assert source.fault().reason == "backwards"  # type: ignore[union-attr]
            inverter.set_wh(wh + 500)
            clock.ms = T0 + L + 200_000
            await until(lambda: source.fault() is None, "the register back")
            clock.ms = T0 + 2 * L + 1
            await until(lambda: source.newest().ts == T0 + 2 * L + 1, "a read after T0 + 2L")
            assert source.measure(T0, T0 + 2 * L) == Measurement(T0, T0 + 2 * L, 500, 0)
            inverter.__exit__(None, None, None)  # the inverter goes away
            await until(lambda: source.fault() is not None, "the inverter gone")
            fault = source.fault()
            assert fault is not None and fault.reason == "unreachable"
            assert f"127.0.0.1:{inverter.port}" in fault.message
            assert source.measure(T0, T0 + 2 * L) is None
            nursery.cancel_scope.cancel()


# --- CSV that grows ----------------------------------------------------------------------------


def test_csv_follower_reads_whole_lines_and_skips_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("timestamp,produced_total_wh,consumed_total_wh\n1000,5,10\n2000,6,1")
    follower = CsvFollower(path)
    assert follower.poll() == [RegisterSample(1000, 5, 10)]  # "2000,6,1" may still grow
    with path.open("a") as f:
        f.write("2\r\n3000,x,13\n\n4000,8,14\n")
    got = follower.poll()
    assert got[0] == RegisterSample(2000, 6, 12) and got[2] == RegisterSample(4000, 8, 14)
    assert isinstance(got[1], MeasurementError)
    assert str(got[1]) == (
        f"{path}:4: produced_total_wh: must be a whole non-negative number of Wh, got 'x'"
    )
    path.write_text("timestamp,produced_total_wh,consumed_total_wh\n5000,1,1\n")  # shorter
    assert follower.poll() == [RegisterSample(5000, 1, 1)]


def test_csv_follower_turns_intervals_into_registers(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "start,end,produced_wh,consumed_wh\n"
        f"{T0},{T0 + L},3,40\n{T0 + L},{T0 + 2 * L},0,50\n"
        f"{T0 + 3 * L},{T0 + 4 * L},1,1\n"  # after a gap
        f"{T0 + 3 * L},{T0 + 5 * L},1,1\n"  # overlaps
    )
    got = CsvFollower(path).poll()
    assert got[:5] == [RegisterSample(T0, 0, 0), RegisterSample(T0 + L, 3, 40),
                       RegisterSample(T0 + 2 * L, 3, 90), RegisterSample(T0 + 3 * L, 3, 90),
                       RegisterSample(T0 + 4 * L, 4, 91)]  # fmt: skip
    assert "overlaps the previous row" in str(got[5])


@pytest.mark.anyio
async def test_csv_source_grows_reports_a_bad_row_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    clock = Clock(T0)
    source = CsvSource(str(path), L, clock, poll_s=0.02)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run)
        await until(lambda: source.fault() is not None, "the missing file")
        assert source.fault() == MeterFault("unreachable", f"{path}: No such file or directory")
        path.write_text(f"timestamp,produced_total_wh,consumed_total_wh\n{T0 - 5},0,100\n")
        await until(lambda: source.fault() is None, "the file")
        with path.open("a") as f:
            f.write(f"{T0 + 10},0,-3\n")
        await until(lambda: source.fault() is not None, "the bad row")
        assert source.fault().reason == "bad-data"  # type: ignore[union-attr]
        assert source.measure(T0, T0 + L) is None
        with path.open("a") as f:
            f.write(f"{T0 + L},0,130\n")
        await until(lambda: source.fault() is None, "a good row")
        assert source.measure(T0, T0 + L) == Measurement(T0, T0 + L, 0, 30)
        nursery.cancel_scope.cancel()
