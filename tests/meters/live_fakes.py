"""Fake meters for the live sources (meters/live.py) and the node's meter: not a test module.

The fakes are the ones the meters tests already use: DSMR telegrams derived from the real
ones in data/dsmr/ (make_sequence.derive, which recomputes the CRC), and the pymodbus
server of test_meters_sunspec.py (127.0.0.1, its own thread and asyncio loop), here
optionally on a fixed port so a test can stop the inverter and start it again. Load this
file with :func:`load` (the tests folder is no package).
"""

from __future__ import annotations

import asyncio
import importlib.util
from bisect import bisect_right
from datetime import datetime
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

from pymodbus.server import ModbusTcpServer

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "dsmr"
_CET = ZoneInfo("Europe/Amsterdam")


def load(path: Path, name: str) -> ModuleType:
    """The Python file at ``path`` as a module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_sequence = load(DATA / "make_sequence.py", "dsmr_make_sequence_live")
_sunspec = load(HERE / "test_meters_sunspec.py", "sunspec_fakes_live")
SunSpecServer = _sunspec.SunSpecServer
sunspec_map, common_model, inverter_model = (
    _sunspec.sunspec_map,
    _sunspec.common_model,
    _sunspec.inverter_model,
)
acc32 = _sunspec.acc32
WH_AT = 40000 + 2 + 68 + 24  # SunS marker, common model (2 + 66), offset of WH in model 103
_ISKRA = (DATA / "v5_iskra.txt").read_bytes().decode("ascii")


def p1_stamp(ms: int) -> str:
    """A P1 timestamp ``YYMMDDhhmmssX`` of ``ms``: Dutch local time, S(ummer) or W(inter)."""
    local = datetime.fromtimestamp(ms // 1000, _CET)
    return local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")


def telegram(ms: int, produced: int, consumed: int, *, bad_crc: bool = False) -> bytes:
    """A DSMR 5 telegram (a real Iskra one) stamped ``ms`` with these registers (Wh, in
    tariff 1); ``bad_crc``: one digit changed after its CRC was computed."""
    text = make_sequence.derive(
        _ISKRA, p1_stamp(ms), {"1.8.1": consumed, "1.8.2": 0, "2.8.1": produced, "2.8.2": 0}
    )
    if bad_crc:
        good = text
        text = text.replace("1-0:1.8.2(000000.000*kWh)", "1-0:1.8.2(000000.001*kWh)")
        assert text != good
    return text.encode("ascii")


class Registers:
    """A meter's true registers: a step function of time, changing at the given times."""

    def __init__(self, produced: int = 0, consumed: int = 0) -> None:
        self.times: list[int] = [-1]
        self.values: list[tuple[int, int]] = [(produced, consumed)]

    def change(self, ts: int, d_produced: int, d_consumed: int) -> None:
        assert ts > self.times[-1]
        p, c = self.values[-1]
        self.times.append(ts)
        self.values.append((p + d_produced, c + d_consumed))

    def at(self, ts: int) -> tuple[int, int]:
        """(produced, consumed) Wh at ``ts``: the last change at or before it."""
        return self.values[bisect_right(self.times, ts) - 1]

    def between(self, start: int, end: int) -> tuple[int, int]:
        (p0, c0), (p1, c1) = self.at(start), self.at(end)
        return p1 - p0, c1 - c0


class Inverter(SunSpecServer):
    """A SunSpec inverter (model 103) whose lifetime energy the test sets; ``port`` 0 picks
    a free port, another number reuses one (an inverter started again)."""

    def __init__(self, wh: int, port: int = 0) -> None:
        super().__init__(sunspec_map(common_model(), inverter_model(103, wh=wh)))
        self._want = port

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = ModbusTcpServer(self._device, address=("127.0.0.1", self._want))
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]
        self._ready.set()
        await self._server.serving

    def set_wh(self, wh: int) -> None:
        self.set_registers(WH_AT, acc32(wh))
