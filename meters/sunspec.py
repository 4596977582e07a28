"""SunSpec PV inverters over Modbus TCP: register samples through pymodbus's sync client.

The inverter's SunSpec map starts at holding register 40000 (or 50000, or 0) with the
marker ``SunS`` (0x5375 0x6E53), followed by model blocks ``[ID, L, L registers...]`` up to
an end block with ID 0xFFFF. This module finds the integer inverter model (101 single
phase, 102 split phase, 103 three phase; all three share the layout below) and reads,
at offsets from the model's ID register (SunSpec ``json/model_103.json``):

* 14 ``W`` int16, 15 ``W_SF`` sunssf: AC power;
* 24-25 ``WH`` acc32 (high word first), 26 ``WH_SF`` sunssf: AC lifetime energy.

Each read becomes a :class:`~wattmesh.meters.measurement.RegisterSample` with
``produced_total = WH * 10**WH_SF`` in whole Wh (a negative scale factor is floored, which
keeps the register monotonic) and ``consumed_total = 0``: an inverter only produces.
The SunSpec map has no clock; ``ts`` is the caller's (keep it NTP-synced).

pymodbus's server and async client need asyncio; wattmesh runs trio, so this uses the
blocking :class:`pymodbus.client.ModbusTcpClient`. From trio, call it in a thread:
``await trio.to_thread.run_sync(inverter.read_sample, now_ms)``. One inverter object must
not be used by two threads at once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from wattmesh.settlement.errors import WattmeshError

from .measurement import MeasurementError, RegisterSample

__all__ = [
    "BASE_ADDRESSES",
    "InverterReading",
    "SunSpecConnectionError",
    "SunSpecError",
    "SunSpecInverter",
    "poll",
]

BASE_ADDRESSES = (40000, 50000, 0)  # where SunSpec says a map may start, in search order
SUNS = (0x5375, 0x6E53)  # "SunS"
END_ID = 0xFFFF
INVERTER_MODELS = (101, 102, 103)  # integer + scale factor models
FLOAT_INVERTER_MODELS = (111, 112, 113)  # same points as float32: not supported
# Offsets from the model's ID register (SunSpec models 101/102/103).
_W, _W_SF, _WH, _WH_SF = 14, 15, 24, 26
_BLOCK = _WH_SF + 1  # registers read per sample: ID .. WH_SF
_NOT_IMPLEMENTED_16 = -0x8000  # int16 and sunssf "not implemented"
_MAX_MODELS = 256  # bound on the walk through a (possibly corrupt) map


class SunSpecError(MeasurementError):
    """The device answers but its SunSpec map cannot give a reading."""


class SunSpecConnectionError(WattmeshError, ConnectionError):
    """The Modbus TCP device cannot be reached or does not answer."""


@dataclass(frozen=True, slots=True)
class InverterReading:
    """One read: ``energy_wh`` lifetime AC energy, ``power_w`` AC power (None: the inverter
    does not implement it), both floored to whole units; ``ts`` in ms."""

    ts: int
    energy_wh: int
    power_w: int | None

    def sample(self) -> RegisterSample:
        return RegisterSample(self.ts, produced_total=self.energy_wh, consumed_total=0)


class SunSpecInverter:
    """A SunSpec inverter at ``host:port``, Modbus unit (device id) ``unit``.

    Connects and finds the inverter model on first use; usable as a context manager.
    ``base`` pins the map's start register instead of searching :data:`BASE_ADDRESSES`.
    """

    def __init__(
        self,
        host: str,
        port: int = 502,
        unit: int = 1,
        *,
        timeout_s: float = 3.0,
        base: int | None = None,
    ) -> None:
        if type(port) is not int or not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port!r}")
        if type(unit) is not int or not 0 <= unit <= 247:
            raise ValueError(f"unit must be 0..247, got {unit!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if base is not None and (type(base) is not int or not 0 <= base <= 65535):
            raise ValueError(f"base must be a register address 0..65535, got {base!r}")
        self.host, self.port, self.unit = host, port, unit
        self.timeout_s = timeout_s
        self._bases = BASE_ADDRESSES if base is None else (base,)
        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=1)
        self.model_id: int | None = None  # 101, 102 or 103 once found
        self.model_address: int | None = None  # register of the model's ID

    def __repr__(self) -> str:
        return f"SunSpecInverter({self.host!r}, port={self.port}, unit={self.unit})"

    def __enter__(self) -> SunSpecInverter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the next read reconnects)."""
        self._client.close()

    def read(self, now_ms: int) -> InverterReading:
        """Read energy and power; ``now_ms`` becomes the reading's timestamp."""
        if self.model_address is None:
            self._discover()
        assert self.model_address is not None and self.model_id is not None
        address = self.model_address
        regs = self._read(address, _BLOCK)
        if regs[0] != self.model_id:
            self.model_id = self.model_address = None  # find it again next time
            raise SunSpecError(
                f"{self._where()}: register {address} now holds model {regs[0]}, the map changed"
            )
        wh_sf = _int16(regs[_WH_SF])
        if wh_sf == _NOT_IMPLEMENTED_16 or not -10 <= wh_sf <= 10:
            raise SunSpecError(f"{self._where()}: WH_SF {wh_sf} is not a valid scale factor")
        energy = _scaled((regs[_WH] << 16) | regs[_WH + 1], wh_sf)
        w, w_sf = _int16(regs[_W]), _int16(regs[_W_SF])
        power = None
        if _NOT_IMPLEMENTED_16 not in (w, w_sf) and -10 <= w_sf <= 10:
            power = _scaled(w, w_sf)
        return InverterReading(now_ms, energy, power)

    def read_sample(self, now_ms: int) -> RegisterSample:
        """``read(now_ms)`` as a register sample (produced = lifetime energy)."""
        return self.read(now_ms).sample()

    def _where(self) -> str:
        return f"SunSpec {self.host}:{self.port} unit {self.unit}"

    def _connect(self) -> None:
        if self._client.connected or self._client.connect():
            return
        # pymodbus only logs why; ask once more ourselves to put the reason in the error.
        reason = "connection failed"
        try:
            socket.create_connection((self.host, self.port), timeout=self.timeout_s).close()
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
        raise SunSpecConnectionError(
            f"Modbus TCP {self.host}:{self.port}: cannot connect: {reason}"
        )

    def _request(self, address: int, count: int) -> list[int] | None:
        """Holding registers ``address..address+count-1``; None on a Modbus exception reply."""
        self._connect()
        try:
            reply = self._client.read_holding_registers(address, count=count, device_id=self.unit)
        except ModbusException as exc:
            self._client.close()
            raise SunSpecConnectionError(
                f"Modbus TCP {self.host}:{self.port} unit {self.unit}: no answer reading "
                f"registers {address}..{address + count - 1}: {exc}"
            ) from None
        if reply.isError():
            return None
        regs = list(reply.registers)
        if len(regs) != count:
            raise SunSpecError(
                f"{self._where()}: asked {count} registers at {address}, got {len(regs)}"
            )
        return regs

    def _read(self, address: int, count: int) -> list[int]:
        regs = self._request(address, count)
        if regs is None:
            raise SunSpecError(
                f"{self._where()}: Modbus exception reading registers "
                f"{address}..{address + count - 1}"
            )
        return regs

    def _discover(self) -> None:
        for base in self._bases:
            if tuple(self._request(base, 2) or ()) == SUNS:
                break
        else:
            at = ", ".join(str(b) for b in self._bases)
            raise SunSpecError(f"{self._where()}: no SunSpec map ('SunS' marker) at register {at}")
        seen: list[int] = []
        address = base + 2
        while len(seen) < _MAX_MODELS and address + 2 <= 65536:
            header = self._request(address, 2)
            if header is None or header[0] == END_ID:
                break  # a map without its end block ends where the registers do
            model, length = header
            if model in INVERTER_MODELS:
                if length + 2 < _BLOCK:
                    raise SunSpecError(
                        f"{self._where()}: model {model} at register {address} is too short "
                        f"(L={length})"
                    )
                self.model_id, self.model_address = model, address
                return
            seen.append(model)
            address += 2 + length
        floats = [m for m in seen if m in FLOAT_INVERTER_MODELS]
        hint = f"; float model {floats[0]} is not supported" if floats else ""
        raise SunSpecError(
            f"{self._where()}: no inverter model 101/102/103 in the SunSpec map at {base} "
            f"(models found: {seen}){hint}"
        )


class Clock(Protocol):
    def time_ns(self) -> int: ...
    def sleep(self, seconds: float, /) -> None: ...


def poll(
    inverter: SunSpecInverter,
    period_s: float,
    count: int | None = None,
    clock: Clock = time,  # type: ignore[assignment]
) -> Iterator[RegisterSample]:
    """Read ``inverter`` every ``period_s`` seconds (``count`` times, or forever), blocking.

    Reads are scheduled on a fixed grid from the first one, so slow reads do not drift;
    after a read that overruns its period the next follows at once, and the missed grid
    points are skipped rather than caught up.
    """
    if not period_s > 0:
        raise ValueError(f"period_s must be positive, got {period_s!r}")
    if count is not None and count < 0:
        raise ValueError(f"count must be non-negative, got {count!r}")
    return _poll(inverter, period_s, count, clock)


def _poll(
    inverter: SunSpecInverter, period_s: float, count: int | None, clock: Clock
) -> Iterator[RegisterSample]:
    period_ns = round(period_s * 1e9)
    due = clock.time_ns()
    n = 0
    while count is None or n < count:
        if n:
            due += period_ns
            now = clock.time_ns()
            if now < due:
                clock.sleep((due - now) / 1e9)
            else:
                due += (now - due) // period_ns * period_ns
        yield inverter.read_sample(clock.time_ns() // 1_000_000)
        n += 1


def _int16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def _scaled(value: int, sf: int) -> int:
    """``value * 10**sf`` in whole units, floored (exact integer arithmetic)."""
    return value * 10**sf if sf >= 0 else value // 10**-sf
