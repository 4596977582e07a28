"""A node reading a real meter live (exchange/node/household.py's meter, meters/live.py).

One node on 127.0.0.1, the only member of its community (so it certifies alone), on an
accelerated community clock: one 15-minute interval per 1.5 wall seconds. Its meter is read
by the real driver (DSMR P1 through a pseudo-terminal, SunSpec through pymodbus's client
against a pymodbus server, a CSV file the test appends to) from a fake meter driven by
the test (tests/meters/live_fakes.py).

The fake meter's true registers change once an interval, a fifth into it, so the
registers at every boundary are known exactly: each applied reading must be their
difference over its span. A lone node reads its meter about 0.4 of an interval after a
boundary (it settles once its own vote has waited half a vote round), so faults start
and end three quarters into an interval: the read of a boundary inside one sees the fault.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
import tty
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec
from wattmesh.exchange.node.config import (
    MeterConfig,
    NodeConfigError,
    load_node_config,
    write_node_config,
)
from wattmesh.exchange.node.household import HouseholdNode
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.meters.measurement import RegisterSample
from wattmesh.settlement.keys import Ed25519PrivateKey, generate_key, peer_id_of
from wattmesh.settlement.ledger import Ledger


def _load_fakes() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "meters" / "live_fakes.py"
    spec = importlib.util.spec_from_file_location("live_fakes_node", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fakes = _load_fakes()

L = 900_000  # 15 minutes of community time
SPEED = 600  # ... in 1.5 wall seconds
START = 1_781_935_200_000 - 1_781_935_200_000 % L  # 2026-06-20 06:00 UTC (summer time in NL)
LEAD_S = 1.5  # wall seconds from the test's start to START: the meter is read before it
EDGE = 3 * L // 4  # where in an interval a fault starts or ends


def community(key: Ed25519PrivateKey, meter: Ed25519PrivateKey) -> Community:
    origin = time.time_ns() // 1_000_000 + int(LEAD_S * 1000)
    member = MemberSpec(peer_id_of(key), bmax=10_000, money=10**11,
                        meters=(MeterSpec(peer_id_of(meter)),))  # fmt: skip
    return Community(name="meter", start_ms=START, interval_ms=L, clock_speed=SPEED,
                     clock_origin_ms=origin, members=(member,))  # fmt: skip


def registers(intervals: int, produced: bool = True, consumed: bool = True):
    """The fake meter's true registers: a change 1/5 into every interval from START - L."""
    truth = fakes.Registers(produced=12_000, consumed=3_456_000)
    for k in range(-1, intervals):
        truth.change(START + k * L + L // 5, (40 * (k % 3) + 5) * produced,
                     (100 + 7 * k) * consumed)  # fmt: skip
    return truth


@asynccontextmanager
async def running(
    tmp_path: Path, c: Community, key: Ed25519PrivateKey, meter: Ed25519PrivateKey,
    config: MeterConfig,
) -> AsyncIterator[HouseholdNode]:  # fmt: skip
    d = tmp_path / "node"
    d.mkdir(exist_ok=True)
    ledger = Ledger.open(d / "ledger.sqlite")
    store = MessageStore.open(d / "messages.sqlite")
    try:
        if len(ledger) == 0:
            ledger.append_batch(c.genesis_items(), ts=c.genesis_ts)
        node = HouseholdNode(c, key, ledger, store, data_dir=d, meter=config, meter_key=meter)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run, "/ip4/127.0.0.1/tcp/0")
            yield node
            nursery.cancel_scope.cancel()
    finally:
        store.close()
        ledger.close()


def publishing(node: HouseholdNode) -> list[object]:
    """The meter's fault at each reading the node publishes, from now on."""
    faults: list[object] = []

    def told(event: str, data: dict[str, Any]) -> None:
        if event == "own-accepted" and data["kind"] == "reading":
            faults.append(node.meter.fault)  # type: ignore[union-attr]

    node.listeners.append(told)
    return faults


async def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def at(c: Community, ms: int) -> None:
    """Sleep until community time ``ms``."""
    await trio.sleep(max(0.0, c.wall_seconds(ms - c.now_ms())))


def meter_status(node: HouseholdNode) -> dict[str, Any]:
    return json.loads((node.data_dir / "status.json").read_text())["meter"]  # type: ignore[operator]


def applied(node: HouseholdNode) -> list[dict[str, Any]]:
    return [e.body for e in node.ledger.entries(kind="reading")]


def check_readings(readings: list[dict[str, Any]], truth: Any, through: int) -> None:
    """Contiguous from START through ``through``, each the true register difference."""
    spans = [(r["start"], r["end"]) for r in readings]
    assert spans[0][0] == START and spans[-1][1] >= through, spans
    assert all(a[1] == b[0] for a, b in pairwise(spans)), spans
    for r in readings:
        assert (r["produced"], r["consumed"]) == truth.between(r["start"], r["end"]), (r, spans)
        assert r["seq"] == (r["end"] - START) // L


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.name == "wattmesh.node")


# -- node.toml -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('source = "p1"', "meter.source", '"none" or "simulated" or "dsmr" or "sunspec" or "csv"'),
        ('source = "sunspec"', "meter.host", 'missing: source "sunspec" needs'),
        ('host = "192.168.1.50 "', "meter.host", "a host name or IP address"),
        ("port = 0", "meter.port", "an integer in 1..65535"),
        ("unit = 248", "meter.unit", "at most 247"),
        ('device = ""', "meter.device", "a serial device, FIFO or file path"),
        ('baudrate = "115200"', "meter.baudrate", "an integer in 1..4000000"),
        ('path = ""', "meter.path", "a file path"),
        ("poll_ms = 5", "meter.poll_ms", "an integer in 10..3600000"),
        ("baud = 9600", "meter.baud", "unknown key"),
    ],
)
def test_meter_settings_are_checked_naming_the_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    (tmp_path / "node.toml").write_text(f"[meter]\n{text}\n")
    with pytest.raises(NodeConfigError) as info:
        load_node_config(tmp_path)
    assert info.value.key == key and problem in info.value.problem, str(info.value)


@pytest.mark.parametrize(
    "meter",
    [
        MeterConfig("dsmr", device="p1", baudrate=9600),
        MeterConfig("sunspec", host="192.168.1.50", port=1502, unit=3, poll_ms=500),
        MeterConfig("csv", path="logs/meter.csv", poll_ms=60_000),
    ],
)
def test_node_toml_round_trips_a_real_meter(tmp_path: Path, meter: MeterConfig) -> None:
    write_node_config(tmp_path, meter=meter)
    assert load_node_config(tmp_path).meter == meter


@pytest.mark.anyio
async def test_dsmr_p1_port_bad_telegrams_publish_nothing_and_the_gap_is_covered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, meter = generate_key(), generate_key()
    c = community(key, meter)
    truth = registers(6)
    # Every telegram fails its CRC, from just after a boundary (the good telegrams after it
    # would do for its reading, but a meter in fault publishes nothing).
    bad = (START + L + L // 10, START + 2 * L + EDGE)
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)  # never block if nobody reads

    async def p1_meter() -> None:
        """A telegram every 30 s of community time, as a P1 port sends them (faster)."""
        while True:
            now = c.now_ms()
            data = fakes.telegram(now, *truth.at(now), bad_crc=bad[0] <= now < bad[1])
            try:
                os.write(master, data)
            except BlockingIOError:
                pass
            await trio.sleep(0.05)

    caplog.set_level(logging.INFO, "wattmesh.node")
    config = MeterConfig("dsmr", device=os.ttyname(slave), poll_ms=50)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(p1_meter)
                async with running(tmp_path, c, key, meter, config) as node:
                    faults = publishing(node)
                    await at(c, START + 2 * L + L // 2)
                    seen = meter_status(node)
                    assert (seen["source"], seen["state"], seen["reason"]) == (
                        "dsmr", "fault", "bad-data")  # fmt: skip
                    assert "CRC checksum failed" in seen["message"], seen
                    assert bad[0] <= seen["since"] < START + L + L // 3
                    await until(lambda: node.ledger.meter_end(peer_id_of(meter)) >= START + 4 * L,
                                "readings through START + 4L", 10)  # fmt: skip
                    seen = meter_status(node)
                    assert seen["state"] == "ok" and seen["reason"] is None
                    assert seen["reading"]["end"] >= START + 4 * L
                    readings = applied(node)
                nursery.cancel_scope.cancel()
    finally:
        os.close(master)
        os.close(slave)
    check_readings(readings, truth, START + 4 * L)
    # Nothing was published while the telegrams were bad; one reading covers them all.
    assert faults and all(f is None for f in faults), faults
    assert not any(bad[0] < r["end"] <= bad[1] for r in readings), readings
    assert any(r["start"] < bad[0] and r["end"] > bad[1] for r in readings), readings
    assert logged(caplog, "fault, bad-data") == 1 and logged(caplog, "ok again") == 1


@pytest.mark.anyio
async def test_sunspec_inverter_that_stops_and_then_misreads_low(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, meter = generate_key(), generate_key()
    c = community(key, meter)
    truth = registers(6, consumed=False)
    down = (START + L + EDGE, START + 2 * L + EDGE)  # the inverter stops answering
    low = (down[1], START + 3 * L + 3 * L // 5)  # then WH reads 3, for under an interval
    inverter: Any = fakes.Inverter(truth.at(c.now_ms())[0])
    await trio.to_thread.run_sync(inverter.__enter__)
    port = inverter.port

    async def move_registers() -> None:
        nonlocal inverter
        try:
            while True:
                now = c.now_ms()
                stopped = down[0] <= now < down[1]
                if stopped and inverter is not None:
                    await trio.to_thread.run_sync(inverter.__exit__, None, None, None)
                    inverter = None
                elif not stopped and inverter is None:
                    inverter = fakes.Inverter(truth.at(now)[0], port)  # the same port again
                    await trio.to_thread.run_sync(inverter.__enter__)
                if inverter is not None:
                    wh = 3 if low[0] <= now < low[1] else truth.at(now)[0]
                    await trio.to_thread.run_sync(inverter.set_wh, wh)
                await trio.sleep(0.02)
        finally:
            if inverter is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(inverter.__exit__, None, None, None)

    caplog.set_level(logging.INFO, "wattmesh.node")
    config = MeterConfig("sunspec", host="127.0.0.1", port=port, poll_ms=20)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(move_registers)
            async with running(tmp_path, c, key, meter, config) as node:
                faults = publishing(node)
                await at(c, START + 2 * L + L // 2)
                seen = meter_status(node)
                assert (seen["state"], seen["reason"]) == ("fault", "unreachable"), seen
                assert f"127.0.0.1:{port}" in seen["message"]
                await at(c, START + 3 * L + L // 2)
                seen = meter_status(node)
                assert (seen["state"], seen["reason"]) == ("fault", "backwards"), seen
                assert "produced register went down from" in seen["message"]
                await until(lambda: node.ledger.meter_end(peer_id_of(meter)) >= START + 4 * L,
                            "readings through START + 4L", 10)  # fmt: skip
                assert meter_status(node)["state"] == "ok"
                readings = applied(node)
            nursery.cancel_scope.cancel()
    check_readings(readings, truth, START + 4 * L)
    assert faults and all(f is None for f in faults), faults
    assert not any(down[0] < r["end"] <= low[1] for r in readings), readings
    assert all(r["consumed"] == 0 for r in readings)
    assert logged(caplog, "fault, unreachable") == 1 and logged(caplog, "fault, backwards") == 1
    assert logged(caplog, "ok again") == 1


@pytest.mark.anyio
async def test_csv_that_stops_growing_is_stale_and_a_restart_keeps_its_registers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, meter = generate_key(), generate_key()
    c = community(key, meter)
    truth = registers(7)
    quiet = (START + L + EDGE, START + 4 * L + EDGE)  # no rows: stale after two intervals
    (tmp_path / "node").mkdir()
    path = tmp_path / "node" / "meter.csv"  # node.toml's path is relative to the data dir
    path.write_text("timestamp,produced_total_wh,consumed_total_wh\n")

    async def logger_appends() -> None:
        while True:
            now = c.now_ms()
            if not quiet[0] <= now < quiet[1]:
                with path.open("a") as f:
                    f.write("{},{},{}\n".format(now, *truth.at(now)))
            await trio.sleep(0.05)

    caplog.set_level(logging.INFO, "wattmesh.node")
    config = MeterConfig("csv", path="meter.csv", poll_ms=50)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(logger_appends)
            async with running(tmp_path, c, key, meter, config) as node:
                faults = publishing(node)
                await at(c, START + 3 * L + L // 2)
                assert meter_status(node)["state"] == "ok"  # quiet, not yet for two intervals
                await at(c, START + 4 * L + L // 2)
                seen = meter_status(node)
                assert (seen["state"], seen["reason"]) == ("fault", "stale"), seen
                await until(lambda: node.ledger.meter_end(peer_id_of(meter)) >= START + 5 * L,
                            "readings through START + 5L", 10)  # fmt: skip
                readings = applied(node)
            nursery.cancel_scope.cancel()
    check_readings(readings, truth, START + 5 * L)
    # The readings of the quiet boundaries waited (no sample after them), then one covered all.
    assert faults and all(f is None for f in faults), faults
    assert not any(quiet[0] < r["end"] <= quiet[1] for r in readings), readings
    assert logged(caplog, "fault, stale") == 1 and logged(caplog, "ok again") == 1
    # The registers at the last readings' ends are kept, and a restarted node starts from them.
    saved = json.loads((tmp_path / "node" / "meter-registers.json").read_text())
    assert saved["meter"] == peer_id_of(meter) and saved["source"] == f"csv {path}"
    assert [r[0] for r in saved["registers"]][-2:] in ([START + L, START + 5 * L],
                                                      [START + 5 * L, START + 6 * L])  # fmt: skip
    assert all(r == [r[0], *truth.at(r[0])] for r in saved["registers"]), saved
    end = saved["registers"][-1][0]
    ledger = Ledger.open(tmp_path / "node" / "ledger.sqlite")
    store = MessageStore.open(tmp_path / "node" / "messages.sqlite")
    try:
        again = HouseholdNode(c, key, ledger, store, data_dir=tmp_path / "node", meter=config,
                              meter_key=meter)  # fmt: skip
        assert again.meter is not None
        assert again.meter.source.newest() == RegisterSample(end, *truth.at(end))
    finally:
        store.close()
        ledger.close()
