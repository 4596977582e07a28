"""SunSpec inverters over Modbus TCP (wattmesh.meters.sunspec) against a pymodbus server.

The server runs on 127.0.0.1 (an ephemeral port) in its own thread with its own asyncio
loop, as it would beside a trio node; the code under test uses pymodbus's blocking client.
Register offsets in the maps below follow SunSpec json/model_1.json and model_103.json.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import trio
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from wattmesh.meters.measurement import Measurement, RegisterSample, intervals_from_registers
from wattmesh.meters.sunspec import (
    InverterReading,
    SunSpecConnectionError,
    SunSpecError,
    SunSpecInverter,
    poll,
)

T0 = 1_700_000_100_000  # 2023-11-14 22:15:00 UTC, on a 15-minute boundary
MIN = 60_000
TIMEOUT_S = 1.0


def u16(value: int) -> int:
    """A signed int16 (or a sunssf) as its register."""
    return value & 0xFFFF


def acc32(value: int) -> list[int]:
    return [value >> 16, value & 0xFFFF]


def string_regs(text: str, n: int) -> list[int]:
    raw = text.encode("ascii").ljust(2 * n, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * n, 2)]


def common_model(length: int = 66) -> list[int]:
    """Model 1: Mn, Md (16 regs each), Opt, Vr (8), SN (16), DA, Pad (model_1.json: L=66;
    some inverters, e.g. SolarEdge's, omit Pad and say L=65)."""
    body = string_regs("Wattmesh", 16) + string_regs("TestInverter", 16)
    body += string_regs("", 8) + string_regs("1.0", 8) + string_regs("SN123", 16) + [1, 0x8000]
    return [1, length] + body[:length]


def inverter_model(
    model: int = 103, wh: int = 0, wh_sf: int = 0, w: int = 0, w_sf: int = 0
) -> list[int]:
    """Model 101/102/103 (L=50) with plausible values; offsets from the ID register."""
    block = [0] * 52
    block[0:2] = [model, 50]
    block[2:7] = [87, 29, 29, 29, u16(-1)]  # A, AphA..C, A_SF: 8.7 A
    block[10:14] = [2301, 2299, 2305, u16(-1)]  # PhVphA..C, V_SF
    block[14:16] = [u16(w), u16(w_sf)]  # W, W_SF
    block[16:18] = [5001, u16(-2)]  # Hz, Hz_SF
    block[24:27] = [*acc32(wh), u16(wh_sf)]  # WH (acc32), WH_SF
    block[38] = 4  # St: MPPT
    return block


def sunspec_map(*models: list[int], marker: tuple[int, int] = (0x5375, 0x6E53)) -> list[int]:
    regs = list(marker)
    for block in models:
        regs += block
    return regs + [0xFFFF, 0]


class SunSpecServer:
    """A pymodbus Modbus TCP server on 127.0.0.1 in its own thread and asyncio loop."""

    def __init__(self, registers: list[int], base: int = 40000, device_id: int = 1) -> None:
        self._device = SimDevice(
            id=device_id,
            simdata=[SimData(base, values=registers, datatype=DataType.REGISTERS)],
        )
        self._device_id = device_id
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="modbus")
        self.port = 0

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = ModbusTcpServer(self._device, address=("127.0.0.1", 0))
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]
        self._ready.set()
        await self._server.serving  # until shutdown()

    def _call(self, coro) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=2)

    def set_registers(self, address: int, values: list[int]) -> None:
        assert (
            self._call(self._server.async_setValues(self._device_id, 16, address, values)) is None
        )

    def __enter__(self) -> SunSpecServer:
        self._thread.start()
        assert self._ready.wait(timeout=5), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._call(self._server.shutdown())
            self._thread.join(timeout=5)
        assert not self._thread.is_alive()


pytestmark = pytest.mark.usefixtures("no_leftover_threads")  # tests/meters/conftest.py


def free_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- readings ------------------------------------------------------------------------------


def test_samples_through_the_sync_client_become_intervals() -> None:
    wh0 = 1_234_567  # above 65535: both words of the acc32 matter
    regs = sunspec_map(common_model(), inverter_model(103, wh=wh0, w=3150))
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        wh_at = 40000 + 2 + 68 + 24  # SunS, common model (2 + 66), offset of WH
        samples = []
        for ts, wh in [
            (T0, wh0),
            (T0 + 7 * MIN, wh0 + 400),
            (T0 + 15 * MIN, wh0 + 780),  # exactly on a boundary
            (T0 + 29 * MIN, wh0 + 1_500),  # the last read before T0 + 30 min
            (T0 + 31 * MIN, wh0 + 1_610),
        ]:
            server.set_registers(wh_at, acc32(wh))
            samples.append(inverter.read_sample(ts))
        assert (inverter.model_id, inverter.model_address) == (103, 40070)
        assert inverter.read(T0 + 32 * MIN) == InverterReading(T0 + 32 * MIN, wh0 + 1_610, 3150)
    assert samples[0] == RegisterSample(T0, wh0, 0)
    assert list(intervals_from_registers(samples)) == [
        Measurement(T0, T0 + 15 * MIN, 780, 0),
        Measurement(T0 + 15 * MIN, T0 + 30 * MIN, 1_500 - 780, 0),
    ]


@pytest.mark.parametrize(
    ("wh", "wh_sf", "energy"),
    [
        (1_234, 3, 1_234_000),  # the inverter counts kWh
        (12_345, -1, 1_234),  # tenths of Wh: 1234.5 floored
        (99, -2, 0),
        (0xFFFF_FFFF, 0, 0xFFFF_FFFF),
    ],
)
def test_energy_scale_factor_in_integer_arithmetic(wh: int, wh_sf: int, energy: int) -> None:
    regs = sunspec_map(common_model(), inverter_model(wh=wh, wh_sf=wh_sf))
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        assert inverter.read(T0).energy_wh == energy


@pytest.mark.parametrize(
    ("w", "w_sf", "power"),
    [(4567, 1, 45_670), (-15, -1, -2), (0x8000, 0, None), (100, 0x8000, None)],
)
def test_power_scale_factor_and_not_implemented(w: int, w_sf: int, power: int | None) -> None:
    model = inverter_model(w=w, w_sf=w_sf)
    regs = sunspec_map(common_model(), model)
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        assert inverter.read(T0).power_w == power


@pytest.mark.parametrize("wh_sf", [0x8000, 11, -11])
def test_invalid_energy_scale_factor_is_refused(wh_sf: int) -> None:
    regs = sunspec_map(common_model(), inverter_model(wh=10, wh_sf=wh_sf))
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        with pytest.raises(SunSpecError, match="WH_SF .* is not a valid scale factor"):
            inverter.read(T0)


@pytest.mark.parametrize("model", [101, 102, 103])
def test_single_split_and_three_phase_models(model: int) -> None:
    regs = sunspec_map(common_model(), inverter_model(model, wh=5_000))
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        assert inverter.read_sample(T0) == RegisterSample(T0, 5_000, 0)
        assert inverter.model_id == model


def test_map_walk_other_base_common_length_and_models_before_the_inverter() -> None:
    # SolarEdge-style common model of 65 registers, a nameplate model (120, L=26) before
    # the inverter, and the map at 50000 rather than 40000.
    nameplate = [120, 26] + [0] * 26
    regs = sunspec_map(common_model(65), nameplate, inverter_model(101, wh=42))
    with SunSpecServer(regs, base=50000) as server:
        with SunSpecInverter("127.0.0.1", server.port) as inverter:
            assert inverter.read_sample(T0).produced_total == 42
            assert inverter.model_address == 50000 + 2 + 67 + 28
        with SunSpecInverter("127.0.0.1", server.port, base=50000) as inverter:
            assert inverter.read_sample(T0).produced_total == 42


def test_unit_id_is_sent() -> None:
    regs = sunspec_map(common_model(), inverter_model(wh=7))
    with SunSpecServer(regs, device_id=3) as server:
        with SunSpecInverter("127.0.0.1", server.port, unit=3) as inverter:
            assert inverter.read_sample(T0).produced_total == 7


# --- errors --------------------------------------------------------------------------------


def test_no_sunspec_marker() -> None:
    regs = sunspec_map(common_model(), inverter_model(), marker=(0x1234, 0x5678))
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        with pytest.raises(SunSpecError) as info:
            inverter.read(T0)
    assert str(info.value) == (
        f"SunSpec 127.0.0.1:{server.port} unit 1: no SunSpec map ('SunS' marker) "
        "at register 40000, 50000, 0"
    )


def test_no_inverter_model() -> None:
    meter = [203, 105] + [0] * 105  # a SunSpec meter, not an inverter
    with SunSpecServer(sunspec_map(common_model(), meter)) as server:
        with SunSpecInverter("127.0.0.1", server.port) as inverter:
            with pytest.raises(SunSpecError, match=r"no inverter model .*found: \[1, 203\]\)$"):
                inverter.read(T0)


def test_float_inverter_model_is_named_as_unsupported() -> None:
    float_model = [113, 60] + [0] * 60
    with SunSpecServer(sunspec_map(common_model(), float_model)) as server:
        with SunSpecInverter("127.0.0.1", server.port) as inverter:
            with pytest.raises(SunSpecError, match="float model 113 is not supported"):
                inverter.read(T0)


def test_connection_refused_names_host_and_port() -> None:
    port = free_port()
    with SunSpecInverter("127.0.0.1", port, timeout_s=TIMEOUT_S) as inverter:
        with pytest.raises(SunSpecConnectionError) as info:
            inverter.read_sample(T0)
    assert str(info.value) == f"Modbus TCP 127.0.0.1:{port}: cannot connect: Connection refused"


def test_server_gone_between_reads() -> None:
    regs = sunspec_map(common_model(), inverter_model(wh=1))
    with SunSpecServer(regs) as server:
        inverter = SunSpecInverter("127.0.0.1", server.port, timeout_s=TIMEOUT_S)
        assert inverter.read_sample(T0).produced_total == 1
    with inverter, pytest.raises(SunSpecConnectionError, match=rf"127\.0\.0\.1:{server.port}"):
        inverter.read_sample(T0 + MIN)


def test_silent_device_times_out() -> None:
    # A listening socket nobody serves: the connection opens, no reply ever comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with SunSpecInverter("127.0.0.1", port, timeout_s=0.2) as inverter:
            with pytest.raises(SunSpecConnectionError, match=rf"127\.0\.0\.1:{port} .*no answer"):
                inverter.read_sample(T0)


@pytest.mark.parametrize(
    "kwargs",
    [{"port": 0}, {"port": 70000}, {"unit": 300}, {"timeout_s": 0}, {"base": -1}],
)
def test_arguments_are_checked(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SunSpecInverter("127.0.0.1", **kwargs)


# --- polling and trio ----------------------------------------------------------------------


class FakeClock:
    def __init__(self, start_ns: int) -> None:
        self.now_ns = start_ns
        self.sleeps: list[float] = []

    def time_ns(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ns += round(seconds * 1e9)


def test_poll_on_a_fixed_grid() -> None:
    regs = sunspec_map(common_model(), inverter_model(wh=10))
    clock = FakeClock(T0 * 1_000_000)
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        samples = list(poll(inverter, 60, count=3, clock=clock))
    assert [s.ts for s in samples] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert clock.sleeps == [60.0, 60.0]
    with pytest.raises(ValueError, match="period_s"):
        poll(inverter, 0)


@pytest.mark.anyio
async def test_read_from_trio_in_a_thread() -> None:
    regs = sunspec_map(common_model(), inverter_model(wh=2_500))
    with SunSpecServer(regs) as server, SunSpecInverter("127.0.0.1", server.port) as inverter:
        sample = await trio.to_thread.run_sync(inverter.read_sample, T0)
    assert sample == RegisterSample(T0, 2_500, 0)
