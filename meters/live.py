"""A meter read live inside a node (docs/meters-real.md, "In a node").

After each interval it settles, a node asks its meter one question: what did you measure
over ``[start, end)``? A :class:`MeterSource` answers it, with three methods:

- :meth:`~MeterSource.run` reads the meter until cancelled (a trio task; a simulated
  meter has nothing to read);
- :meth:`~MeterSource.measure` returns a :class:`Measurement` over ``[start, end)``, or
  None when the source cannot vouch for one now;
- :meth:`~MeterSource.fault` says what is wrong, if anything: a :class:`MeterFault` with
  one of :data:`FAULT_REASONS`.

:class:`SimulatedSource` computes its energy and never faults. The real sources keep the
meter's cumulative registers in a :class:`RegisterLog` and measure with
:func:`~wattmesh.meters.measurement.intervals_from_registers`:

- :class:`DsmrSource`: P1 telegrams from a serial port, a FIFO or a growing file;
- :class:`SunSpecSource`: an inverter over Modbus TCP (pymodbus's blocking client, each
  read in a worker thread);
- :class:`CsvSource`: a CSV file that grows (either layout of meters/csv_source.py).

A real source measures ``[start, end)`` only when no fault holds and a sample at or after
``end`` has arrived (the register at ``end`` is then the last sample at or before it,
as for every register source). Otherwise it answers None and the node publishes nothing;
its next reading starts where the last one ended, so it covers the gap and no energy the
registers counted is dropped.

Faults, by reason:

``unreachable``
    the device cannot be opened, connected to or read (the read is tried again);
``bad-data``
    the meter sent something that is not a reading: a telegram failing its CRC, a bad
    CSV row, a SunSpec map without its energy; it is never used, and the fault clears
    with the next good sample;
``backwards``
    a register went down. Until it comes back to where it was the samples are held
    apart (a misread: nothing is lost). If they stay down for ``confirm_ms`` (an
    interval) and keep counting up, the meter was replaced or reset: the registers start
    a new series, and the energy between the last sample of the old series and the first
    of the new one is not counted (it cannot be known; nothing is invented for it);
``stale``
    no new sample for ``stale_ms`` (two intervals): the meter stopped sending.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import serialx
import trio

from .csv_source import CsvFollower
from .dsmr import (
    DEFAULT_SPEC,
    MAX_BYTES_WITHOUT_TELEGRAM,
    DsmrError,
    P1PortError,
    Spec,
    TelegramStream,
)
from .measurement import Measurement, MeasurementError, RegisterSample, intervals_from_registers
from .sunspec import SunSpecError, SunSpecInverter

__all__ = [
    "FAULT_REASONS",
    "CsvSource",
    "DsmrSource",
    "MeterFault",
    "MeterSource",
    "RegisterLog",
    "RegisterSource",
    "SimulatedSource",
    "SunSpecSource",
]

FAULT_REASONS = ("unreachable", "bad-data", "backwards", "stale")
# A growing DSMR file is followed from this far before its end: its last few telegrams.
TAIL_BYTES = 64 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MeterFault:
    """Why a meter gives no reading now: ``reason`` (one of :data:`FAULT_REASONS`) and a
    one-line ``message``."""

    reason: str
    message: str

    def __post_init__(self) -> None:
        if self.reason not in FAULT_REASONS:
            raise ValueError(f"{self.reason!r} is not a meter fault reason")


def _at_least(a: RegisterSample, b: RegisterSample) -> bool:
    return a.produced_total >= b.produced_total and a.consumed_total >= b.consumed_total


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class RegisterLog:
    """Cumulative register samples of one meter, as continuous series, and the energy
    they counted over a span (see the module docstring for a register going down).

    Only what a measurement can still need is kept: per interval, the first sample of a
    series, the last sample at or before each boundary and the newest one.
    """

    def __init__(self, interval_ms: int, confirm_ms: int | None = None) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self.interval_ms = interval_ms
        self.confirm_ms = interval_ms if confirm_ms is None else confirm_ms
        self.series: list[list[RegisterSample]] = []  # oldest first; each never goes down
        self.suspect: list[RegisterSample] = []  # samples below the series, not yet trusted
        self.backwards: MeterFault | None = None  # while there are suspect samples

    @property
    def newest(self) -> RegisterSample | None:
        if self.suspect:
            return self.suspect[-1]
        return self.series[-1][-1] if self.series else None

    def add(self, s: RegisterSample) -> str:
        """Take a sample. Returns what became of it: ``added``; ``old`` (not after the
        newest sample: ignored); ``backwards`` (below the series: held as suspect);
        ``resumed`` (back at or above the series: the suspect samples were misreads and
        are dropped); ``restarted`` (the suspect samples held for ``confirm_ms``: they
        are a new series)."""
        newest = self.newest
        if newest is not None and s.ts <= newest.ts:
            return "old"
        if not self.series:
            self.series.append([s])
            return "added"
        current = self.series[-1]
        if _at_least(s, current[-1]):
            event = "resumed" if self.suspect else "added"
            self.suspect, self.backwards = [], None
            self._append(current, s)
            return event
        if self.suspect and _at_least(s, self.suspect[-1]):
            self._append(self.suspect, s)
            if s.ts - self.suspect[0].ts >= self.confirm_ms:
                self.series.append(self.suspect)
                self.suspect, self.backwards = [], None
                return "restarted"
            return "backwards"
        self.suspect = [s]
        self.backwards = MeterFault("backwards", _went_down(current[-1], s))
        return "backwards"

    def _append(self, samples: list[RegisterSample], s: RegisterSample) -> None:
        if len(samples) >= 2:
            p = samples[-1]
            # p lies strictly inside the interval that holds s: it is no boundary's
            # register (s, or a later sample, is the last one at or before the next).
            if p.ts > s.ts - s.ts % self.interval_ms:
                samples[-1] = s
                return
        samples.append(s)

    def measure(self, start: int, end: int) -> Measurement | None:
        """The energy the registers counted over the whole intervals in ``[start, end)``
        (None while registers are suspect, or until a sample at or after ``end``)."""
        if self.suspect or not self.series or self.series[-1][-1].ts < end:
            return None
        produced = consumed = 0
        for samples in self.series:
            if samples[-1].ts <= start:
                continue  # a series that ended before the span counted nothing in it
            for m in intervals_from_registers(samples, self.interval_ms):
                if m.end > end:
                    break
                if m.start >= start:
                    produced, consumed = produced + m.produced, consumed + m.consumed
        return Measurement(start, end, produced, consumed)

    def register_at(self, ts: int) -> RegisterSample | None:
        """The registers at ``ts`` (the last sample at or before it, moved to ``ts``),
        once a sample after it makes them final; None if unknown."""
        if self.suspect or not self.series or self.series[-1][-1].ts < ts:
            return None
        before = [s for s in self.series[-1] if s.ts <= ts]
        if not before:
            return None
        return RegisterSample(ts, before[-1].produced_total, before[-1].consumed_total)

    def forget_before(self, ts: int) -> None:
        """Drop what no measurement starting at or after ``ts`` needs."""
        keep = [s for s in self.series if s[-1].ts >= ts] or self.series[-1:]
        if keep:
            first = keep[0]
            k = max((i for i, s in enumerate(first) if s.ts <= ts), default=0)
            del first[:k]
        self.series = keep


def _went_down(last: RegisterSample, s: RegisterSample) -> str:
    down = [
        f"{name} register went down from {a} to {b} Wh"
        for name, a, b in (
            ("produced", last.produced_total, s.produced_total),
            ("consumed", last.consumed_total, s.consumed_total),
        )
        if b < a
    ]
    return f"{' and '.join(down)} at {_when(s.ts)}"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class MeterSource:
    """Where a node's readings come from (see the module docstring)."""

    kind = "none"

    def describe(self) -> str:
        """What is read, e.g. ``dsmr /dev/ttyUSB0``: saved registers belong to it only."""
        return self.kind

    async def run(self) -> None:
        """Read the meter until cancelled (this one has nothing to read)."""

    def measure(self, start: int, end: int) -> Measurement | None:
        raise NotImplementedError

    def fault(self) -> MeterFault | None:
        return None

    def newest(self) -> RegisterSample | None:
        """The last register sample read (None: none, or not a register source)."""
        return None

    def register_at(self, ts: int) -> RegisterSample | None:
        return None

    def seed(self, samples: Iterable[RegisterSample]) -> None:
        """Registers known from before (saved at the node's last readings)."""

    def forget_before(self, ts: int) -> None:
        """The ledger holds everything up to ``ts``: drop what only earlier spans need."""


class SimulatedSource(MeterSource):
    """The simulated household of meters/simulated.py, per interval of a grid starting at
    ``origin_ms``."""

    kind = "simulated"

    def __init__(
        self,
        origin_ms: int,
        interval_ms: int,
        *,
        seed: int = 0,
        peak_w: int = 4000,
        annual_kwh: int = 3500,
        backend: str = "builtin",
    ) -> None:
        self.origin_ms, self.interval_ms = origin_ms, interval_ms
        self._params: dict[str, Any] = {"seed": seed, "peak_w": peak_w,
                                        "annual_kwh": annual_kwh, "backend": backend}  # fmt: skip
        self._days: dict[int, dict[int, tuple[int, int]]] = {}

    def interval(self, start: int) -> tuple[int, int]:
        """(produced, consumed) Wh of the interval starting at ``start``."""
        from wattmesh.meters.simulated import DAY_MS, simulate

        day = start - start % DAY_MS
        if day not in self._days:
            measured = simulate(day, 1, interval_ms=self.interval_ms, **self._params)
            self._days = {day: {m.start: (m.produced, m.consumed) for m in measured}}
        return self._days[day][start]

    def measure(self, start: int, end: int) -> Measurement:
        """Every interval that starts in ``[start, end)``, whole."""
        produced = consumed = 0
        length = self.interval_ms
        for t in range(start - (start - self.origin_ms) % length, end, length):
            p, q = self.interval(t)
            produced, consumed = produced + p, consumed + q
        return Measurement(start, end, produced, consumed)


class RegisterSource(MeterSource):
    """A real meter's registers, read by :meth:`read` (a subclass's) into a
    :class:`RegisterLog`. ``now_ms`` is the node's clock (community time); ``poll_s`` the
    wall seconds between reads (and before a read is tried again after a failure)."""

    def __init__(
        self,
        interval_ms: int,
        now_ms: Callable[[], int],
        *,
        poll_s: float = 10.0,
        stale_ms: int | None = None,
    ) -> None:
        if not poll_s > 0:
            raise ValueError(f"poll_s must be positive, got {poll_s!r}")
        self.log = RegisterLog(interval_ms)
        self.now_ms = now_ms
        self.poll_s = poll_s
        self.stale_ms = 2 * interval_ms if stale_ms is None else stale_ms
        self._problem: MeterFault | None = None  # the reader's: unreachable or bad-data
        self._started: int | None = None  # when run() began, community ms

    async def run(self) -> None:
        self._started = self.now_ms()
        while True:
            try:
                await self.read()
            except Exception as exc:  # noqa: BLE001 (a meter never stops the node: a fault)
                self.report("unreachable", _one_line(exc))
                log.debug("%s: read failed", self.describe(), exc_info=True)
            await trio.sleep(self.poll_s)

    async def read(self) -> None:
        """Read samples into :meth:`add` until an error (raised: an unreachable meter)."""
        raise NotImplementedError

    def add(self, sample: RegisterSample) -> None:
        """A good sample arrived: it clears the reader's fault."""
        self._problem = None
        if self.log.add(sample) == "restarted":
            log.warning("%s: the registers went down and kept counting from there for an "
                        "interval: a new meter or a reset; counting starts again at %d Wh "
                        "produced, %d Wh consumed", self.describe(), sample.produced_total,
                        sample.consumed_total)  # fmt: skip

    def report(self, reason: str, message: str) -> None:
        """The reader met a fault; it holds until the next good sample."""
        self._problem = MeterFault(reason, message)

    def fault(self) -> MeterFault | None:
        if self.log.backwards is not None:
            return self.log.backwards
        if self._problem is not None:
            return self._problem
        if self._started is None:
            return None  # not running
        newest = self.log.newest
        last = self._started if newest is None else max(newest.ts, self._started)
        if self.now_ms() - last > self.stale_ms:
            what = "since the node started" if newest is None else f"since {_when(newest.ts)}"
            return MeterFault("stale", f"no sample {what} (over {self.stale_ms // 1000} s)")
        return None

    def measure(self, start: int, end: int) -> Measurement | None:
        return None if self.fault() is not None else self.log.measure(start, end)

    def newest(self) -> RegisterSample | None:
        return self.log.newest

    def register_at(self, ts: int) -> RegisterSample | None:
        return self.log.register_at(ts)

    def seed(self, samples: Iterable[RegisterSample]) -> None:
        for s in sorted(samples, key=lambda s: s.ts):
            self.log.add(s)

    def forget_before(self, ts: int) -> None:
        self.log.forget_before(ts)


class DsmrSource(RegisterSource):
    """A DSMR P1 port: ``device`` is a serial device (opened at ``baudrate``, 8N1), a FIFO
    (something else writes the telegrams into it) or a regular file that grows (followed
    from its last telegrams, like ``tail -f``). Each telegram's own timestamp is its
    sample's time: the meter's clock, which the grid operator keeps set."""

    kind = "dsmr"

    def __init__(
        self,
        device: str,
        interval_ms: int,
        now_ms: Callable[[], int],
        *,
        baudrate: int = 115200,
        spec: Spec = DEFAULT_SPEC,
        poll_s: float = 1.0,
        stale_ms: int | None = None,
    ) -> None:
        super().__init__(interval_ms, now_ms, poll_s=poll_s, stale_ms=stale_ms)
        self.device, self.baudrate, self.spec = device, baudrate, spec

    def describe(self) -> str:
        return f"dsmr {self.device}"

    async def read(self) -> None:
        try:
            mode = (await trio.to_thread.run_sync(os.stat, self.device)).st_mode
        except OSError as exc:
            raise P1PortError(f"P1 port {self.device}: cannot open: {exc.strerror}") from None
        if stat.S_ISREG(mode):
            await self._follow()
        elif stat.S_ISFIFO(mode):
            fd = os.open(self.device, os.O_RDONLY | os.O_NONBLOCK)
            try:
                await self._read_fd(fd, hangup_ends=False)
            finally:
                os.close(fd)
        elif stat.S_ISCHR(mode):
            port = await trio.to_thread.run_sync(self._open_serial)
            try:
                await self._read_fd(port.fileno(), hangup_ends=True)
            finally:
                port.close()
        else:
            raise P1PortError(f"P1 port {self.device}: not a serial device, a FIFO or a file")

    def _open_serial(self) -> serialx.Serial:
        settings = {"baudrate": self.baudrate, "bytesize": 8, "parity": "N",
                    "stopbits": serialx.STOPBITS_ONE, "xonxoff": False, "rtscts": False,
                    "timeout": 0}  # fmt: skip
        try:
            port = serialx.serial_for_url(url=self.device, **settings)
            port.open()
        except (OSError, serialx.SerialException) as exc:
            raise P1PortError(f"P1 port {self.device}: cannot open: {exc}") from None
        return port

    async def _read_fd(self, fd: int, *, hangup_ends: bool) -> None:
        stream = TelegramStream(self.spec)
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise P1PortError(f"P1 port {self.device}: read failed: {exc.strerror}") from None
            if data:
                stream = self._take(stream, data)
            elif hangup_ends:
                raise P1PortError(f"P1 port {self.device}: disconnected")
            else:
                await trio.sleep(self.poll_s)  # a FIFO without a writer: wait for one

    async def _follow(self) -> None:
        f = await trio.to_thread.run_sync(open, self.device, "rb")
        try:
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            stream = TelegramStream(self.spec)
            while True:
                data = await trio.to_thread.run_sync(f.read, 65536)
                if data:
                    stream = self._take(stream, data)
                    continue
                if os.fstat(f.fileno()).st_size < f.tell():  # rewritten: read it anew
                    f.seek(0)
                    stream = TelegramStream(self.spec)
                await trio.sleep(self.poll_s)
        finally:
            f.close()

    def _take(self, stream: TelegramStream, data: bytes) -> TelegramStream:
        for item in stream.feed(data):
            if isinstance(item, DsmrError):
                self.report("bad-data", str(item))
            else:
                self.add(item)
        if stream.unframed > MAX_BYTES_WITHOUT_TELEGRAM:
            self.report("bad-data", f"P1 port {self.device}: {stream.unframed} bytes without "
                        "a whole telegram (wrong baud rate or framing?)")  # fmt: skip
            return TelegramStream(self.spec)  # what it buffered is no telegram: drop it
        return stream


class SunSpecSource(RegisterSource):
    """A SunSpec inverter at ``host:port`` (Modbus unit ``unit``), read every ``poll_s``
    seconds in a worker thread; a sample's time is the node's clock when it is read (the
    map has no clock)."""

    kind = "sunspec"

    def __init__(
        self,
        host: str,
        interval_ms: int,
        now_ms: Callable[[], int],
        *,
        port: int = 502,
        unit: int = 1,
        timeout_s: float = 3.0,
        poll_s: float = 10.0,
        stale_ms: int | None = None,
    ) -> None:
        super().__init__(interval_ms, now_ms, poll_s=poll_s, stale_ms=stale_ms)
        self.host, self.port, self.unit, self.timeout_s = host, port, unit, timeout_s
        # pymodbus logs every failed connect as an ERROR, each poll while the inverter is
        # away; the node reports it once, as an unreachable fault with the same reason.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    def describe(self) -> str:
        return f"sunspec {self.host}:{self.port} unit {self.unit}"

    async def read(self) -> None:
        inverter = SunSpecInverter(self.host, self.port, self.unit, timeout_s=self.timeout_s)
        try:
            while True:
                now = self.now_ms()
                try:
                    # Not abandoned on cancel: the thread ends within timeout_s, joined.
                    sample = await trio.to_thread.run_sync(inverter.read_sample, now)
                except SunSpecError as exc:
                    self.report("bad-data", str(exc))
                else:
                    self.add(sample)
                await trio.sleep(self.poll_s)
        finally:
            inverter.close()


class CsvSource(RegisterSource):
    """A CSV file that grows (meters/csv_source.py's layouts), read every ``poll_s``
    seconds; a bad row is reported and skipped."""

    kind = "csv"

    def __init__(
        self,
        path: str,
        interval_ms: int,
        now_ms: Callable[[], int],
        *,
        poll_s: float = 10.0,
        stale_ms: int | None = None,
    ) -> None:
        super().__init__(interval_ms, now_ms, poll_s=poll_s, stale_ms=stale_ms)
        self.path = path

    def describe(self) -> str:
        return f"csv {self.path}"

    async def read(self) -> None:
        follower = CsvFollower(self.path)
        while True:
            for item in await trio.to_thread.run_sync(follower.poll):
                if isinstance(item, MeasurementError):
                    self.report("bad-data", str(item))
                else:
                    self.add(item)
            await trio.sleep(self.poll_s)
