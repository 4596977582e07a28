"""DSMR P1 smart meters (NL, BE): register samples from plain-text telegrams, via dsmr-parser.

A P1 port emits one telegram per second (DSMR 5; every 10 s for DSMR 4), from a ``/``
header line to a ``!XXXX`` line carrying a CRC16 of everything before it. Each telegram
becomes a :class:`~wattmesh.meters.measurement.RegisterSample`:

* ``consumed_total``: electricity delivered *to* the client, tariff 1 + tariff 2
  (OBIS ``1-0:1.8.1`` + ``1-0:1.8.2``), in Wh;
* ``produced_total``: electricity delivered *by* the client, tariff 1 + tariff 2
  (OBIS ``1-0:2.8.1`` + ``1-0:2.8.2``), in Wh;
* ``ts``: the telegram's own timestamp (``0-0:1.0.0``, Central European local time with
  ``S``/``W`` for summer/winter time), as ms since the epoch UTC.

The registers are kWh with 3 decimals (or Wh on some meters), i.e. whole Wh, and are
converted exactly (no floats). Feed the samples to
:func:`~wattmesh.meters.measurement.intervals_from_registers` for 15-minute measurements.

A telegram that fails its CRC, cannot be parsed, lacks a needed register or has an
impossible timestamp is *bad*. By default a bad telegram stops the read with a
:class:`DsmrError` naming the telegram (1-based number and first line). Pass ``on_bad``
(e.g. ``on_bad=skipped.append``) to skip bad telegrams instead: each is handed to
``on_bad`` and the read goes on. Skipping loses no energy (the registers are cumulative),
but the energy of the skipped span is attributed to the interval of the next good
telegram.

:class:`TelegramStream` turns bytes into samples as they arrive, in any chunks; a node
reading its P1 port live (meters/live.py) uses it, with bad telegrams as faults.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import serialx
from dsmr_parser import telegram_specifications
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.parsers import TelegramParser

from wattmesh.settlement.errors import WattmeshError

from .measurement import MeasurementError, RegisterSample

__all__ = [
    "DsmrError",
    "P1PortError",
    "TelegramStream",
    "parse_telegram",
    "read_serial",
    "read_telegram_file",
    "read_telegrams",
]

log = logging.getLogger(__name__)

Spec = Mapping[str, Any]
OnBad = Callable[["DsmrError"], object]

DEFAULT_SPEC: Spec = telegram_specifications.V5
"""dsmr-parser's DSMR 5 specification; it also reads DSMR 4.2 and Fluvius (BE) telegrams."""

# (dsmr-parser attribute, OBIS code, what it is)
_TIMESTAMP = ("P1_MESSAGE_TIMESTAMP", "0-0:1.0.0", "timestamp")
_CONSUMED = (
    ("ELECTRICITY_USED_TARIFF_1", "1-0:1.8.1", "electricity delivered to client, tariff 1"),
    ("ELECTRICITY_USED_TARIFF_2", "1-0:1.8.2", "electricity delivered to client, tariff 2"),
)
_PRODUCED = (
    ("ELECTRICITY_DELIVERED_TARIFF_1", "1-0:2.8.1", "electricity delivered by client, tariff 1"),
    ("ELECTRICITY_DELIVERED_TARIFF_2", "1-0:2.8.2", "electricity delivered by client, tariff 2"),
)
_WH_PER_UNIT = {"kWh": 1000, "Wh": 1}
# The raw timestamp with its DST flag; dsmr-parser keeps only the converted datetime.
_RAW_TIMESTAMP = re.compile(r"^\d-\d:1\.0\.0\((\d{12})([SW]?)\)", re.MULTILINE)
_DST_OFFSET = {"S": timedelta(hours=2), "W": timedelta(hours=1)}  # CEST, CET
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A telegram is 1-3 kB; this much data without one means a wrong baud rate or framing.
MAX_BYTES_WITHOUT_TELEGRAM = 64 * 1024


class DsmrError(MeasurementError):
    """A bad telegram. ``number`` (1-based) and ``line`` locate it when read from a stream."""

    def __init__(self, problem: str, number: int | None = None, line: int | None = None):
        self.problem = problem
        self.number = number
        self.line = line
        if number is None:
            super().__init__(problem)
        elif line is None:
            super().__init__(f"telegram {number}: {problem}")
        else:
            super().__init__(f"telegram {number} (line {line}): {problem}")


class P1PortError(WattmeshError, OSError):
    """The P1 serial device cannot be opened or read."""


def parse_telegram(text: str, *, spec: Spec = DEFAULT_SPEC) -> RegisterSample:
    """Parse one telegram (``/`` header to ``!XXXX`` line, CRLF line ends) into a sample.

    Raises :class:`DsmrError` on a failed CRC, an unparsable telegram, a missing or
    non-whole-Wh register, or a timestamp whose S/W flag contradicts the date.
    """
    return _parse(TelegramParser(spec), text)


def _parse(parser: TelegramParser, text: str) -> RegisterSample:
    try:
        telegram = parser.parse(text)
    except InvalidChecksumError as exc:
        raise DsmrError(f"CRC checksum failed: {exc}") from None
    except ParseError as exc:
        raise DsmrError(f"cannot parse telegram: {exc}") from None
    except Exception as exc:  # dsmr-parser lets e.g. ValueError through on a wrong spec
        raise DsmrError(f"cannot parse telegram: {type(exc).__name__}: {exc}") from None
    return RegisterSample(
        ts=_timestamp_ms(telegram, text),
        produced_total=sum(_register_wh(telegram, r) for r in _PRODUCED),
        consumed_total=sum(_register_wh(telegram, r) for r in _CONSUMED),
    )


def read_telegrams(
    lines: Iterable[bytes], *, spec: Spec = DEFAULT_SPEC, on_bad: OnBad | None = None
) -> Iterator[RegisterSample]:
    """Samples from the lines (bytes, any line ends) of concatenated telegrams.

    Blank lines between telegrams are ignored; other text outside a telegram, and a
    telegram without its ``!`` line, are bad like a failed CRC (see the module docstring).
    """
    parser = TelegramParser(spec)
    for item in _split(lines):
        if isinstance(item, DsmrError):
            _bad(item, on_bad)
            continue
        number, line, text = item
        try:
            yield _parse(parser, text)
        except DsmrError as exc:
            _bad(DsmrError(exc.problem, number, line), on_bad)


def read_telegram_file(
    path: str | os.PathLike[str], *, spec: Spec = DEFAULT_SPEC, on_bad: OnBad | None = None
) -> Iterator[RegisterSample]:
    """Samples from a file of telegrams as a P1 port emits them (see :func:`read_telegrams`)."""
    with open(path, "rb") as f:
        yield from read_telegrams(f, spec=spec, on_bad=on_bad)


def read_serial(
    device: str,
    baudrate: int = 115200,
    *,
    bytesize: int = 8,
    parity: str = "N",
    idle_timeout_s: float = 30.0,
    spec: Spec = DEFAULT_SPEC,
    on_bad: OnBad | None = None,
) -> Iterator[RegisterSample]:
    """Samples from a P1 serial port (DSMR 5: 115200 baud 8N1), endlessly.

    Blocking: run it in a thread from trio. The arguments are checked now; the port is
    opened on the first ``next()`` and closed when the iterator is closed. Telegram numbers
    count from the opening; the partial telegram in flight at the opening is dropped.
    Raises :class:`P1PortError` if the device cannot be opened, sends nothing for
    ``idle_timeout_s``, or sends :data:`MAX_BYTES_WITHOUT_TELEGRAM` bytes without a whole
    telegram (wrong baud rate or framing).
    """
    if type(baudrate) is not int or baudrate <= 0:
        raise ValueError(f"baudrate must be a positive integer, got {baudrate!r}")
    if bytesize not in (7, 8):
        raise ValueError(f"bytesize must be 7 or 8, got {bytesize!r}")
    if parity not in ("N", "E", "O"):
        raise ValueError(f"parity must be 'N', 'E' or 'O', got {parity!r}")
    if not idle_timeout_s > 0:
        raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s!r}")
    settings = {
        "baudrate": baudrate,
        "bytesize": bytesize,
        "parity": parity,
        "stopbits": serialx.STOPBITS_ONE,
        "xonxoff": False,
        "rtscts": False,
        "timeout": idle_timeout_s,
    }
    return _serial_samples(device, settings, spec, on_bad)


def _serial_samples(
    device: str, settings: dict[str, Any], spec: Spec, on_bad: OnBad | None
) -> Iterator[RegisterSample]:
    try:
        port = serialx.serial_for_url(url=device, **settings)
        port.open()
    except (OSError, serialx.SerialException) as exc:
        raise P1PortError(f"P1 port {device}: cannot open: {exc}") from exc
    stream = TelegramStream(spec)
    try:
        while True:
            try:
                data = port.read(max(1, min(1024, port.num_unread_bytes())))
            except (OSError, serialx.SerialException) as exc:
                raise P1PortError(f"P1 port {device}: read failed: {exc}") from exc
            if not data:
                raise P1PortError(
                    f"P1 port {device}: no data for {settings['timeout']} s (meter disconnected?)"
                )
            for item in stream.feed(data):
                if isinstance(item, DsmrError):
                    _bad(item, on_bad)
                else:
                    yield item
            if stream.unframed > MAX_BYTES_WITHOUT_TELEGRAM:
                raise P1PortError(
                    f"P1 port {device}: {stream.unframed} bytes without a whole telegram "
                    "(wrong baud rate or framing?)"
                )
    finally:
        port.close()


class TelegramStream:
    """Telegrams from bytes as they arrive (a P1 port, a pipe, a growing file), in any
    chunks: :meth:`feed` returns, in order, a sample per good telegram and a
    :class:`DsmrError` per bad one, numbered from 1 by this stream.

    As with dsmr-parser's own buffer, text before a ``/`` header (the tail of a telegram in
    flight when reading began) and a telegram cut short by the next header are dropped
    without a report; ``unframed`` counts the bytes since the last whole telegram, so the
    caller can tell a wrong baud rate (bytes, but never a telegram). LF line ends (a file
    an editor touched) are read as CRLF, the form the CRC covers.
    """

    def __init__(self, spec: Spec = DEFAULT_SPEC) -> None:
        self._parser = TelegramParser(spec)
        self._buffer = TelegramBuffer()
        self._cr = False  # the last chunk ended in CR: the LF of that line may come next
        self.number = 0  # whole telegrams seen
        self.unframed = 0  # bytes since the last whole telegram

    def feed(self, data: bytes) -> list[RegisterSample | DsmrError]:
        self.unframed += len(data)
        # latin-1 maps each byte to one char, so the CRC still covers the exact bytes.
        text = ("\r" if self._cr else "") + data.decode("latin-1")
        self._cr = text.endswith("\r")
        if self._cr:
            text = text[:-1]
        self._buffer.append(text.replace("\r\n", "\n").replace("\n", "\r\n"))
        out: list[RegisterSample | DsmrError] = []
        for telegram in self._buffer.get_all():
            self.number += 1
            self.unframed = 0
            try:
                out.append(_parse(self._parser, telegram))
            except DsmrError as exc:
                out.append(DsmrError(exc.problem, self.number))
        return out


def _bad(error: DsmrError, on_bad: OnBad | None) -> None:
    if on_bad is None:
        raise error
    log.warning("skipping bad DSMR telegram: %s", error)
    on_bad(error)


def _split(lines: Iterable[bytes]) -> Iterator[tuple[int, int, str] | DsmrError]:
    """Yield ``(number, first line, text with CRLF line ends)`` per telegram, or the error
    for a fragment that is not a whole telegram."""
    number = 0  # telegrams (headers) seen
    start = 0  # first line of the current telegram, 0: outside one
    junk = junk_end = 0  # first and last line of text outside any telegram, 0: none
    body: list[str] = []
    n = 0
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if line.startswith("/"):
            if start:
                yield DsmrError("incomplete telegram: no '!' CRC line", number, start)
            elif junk:
                yield _junk(junk, junk_end)
                junk = 0
            number += 1
            start = n
            body = [line]
        elif start:
            body.append(line)
            if line.startswith("!"):
                yield number, start, "\r\n".join(body) + "\r\n"
                start = 0
        elif line:
            junk = junk or n
            junk_end = n
    if start:
        yield DsmrError("incomplete telegram: no '!' CRC line before the end", number, start)
    elif junk:
        yield _junk(junk, junk_end)


def _junk(first: int, last: int) -> DsmrError:
    lines = f"lines {first}-{last}" if last > first else f"line {first}"
    return DsmrError(f"{lines}: text outside a telegram (no '/' header line)")


def _register_wh(telegram: Any, register: tuple[str, str, str]) -> int:
    attr, obis, what = register
    obj = getattr(telegram, attr, None)
    value = getattr(obj, "value", None)
    if not isinstance(value, Decimal):
        raise DsmrError(f"register {obis} ({what}) missing or unreadable")
    unit = getattr(obj, "unit", None)
    per_unit = _WH_PER_UNIT.get(unit)
    if per_unit is None:
        raise DsmrError(f"register {obis} ({what}): unit {unit!r} is not kWh or Wh")
    wh = value * per_unit
    if wh < 0 or wh != wh.to_integral_value():
        raise DsmrError(f"register {obis} ({what}): {value} {unit} is not a whole, positive Wh")
    return int(wh)


def _timestamp_ms(telegram: Any, text: str) -> int:
    obis = _TIMESTAMP[1]
    obj = getattr(telegram, _TIMESTAMP[0], None)
    utc = getattr(obj, "value", None)
    raw = _RAW_TIMESTAMP.search(text)
    if not isinstance(utc, datetime) or raw is None:
        raise DsmrError(f"register {obis} (timestamp) missing or unreadable")
    local, flag = raw.groups()
    if flag:
        # dsmr-parser resolves local time with the Europe/Amsterdam rules; the meter's flag
        # says which offset it meant. They must agree (a wrong DST setting, or a time that
        # does not exist, would otherwise shift energy by an hour).
        naive = datetime.strptime(local, "%y%m%d%H%M%S").replace(tzinfo=UTC)
        if naive - _DST_OFFSET[flag] != utc:
            season = "summer" if flag == "S" else "winter"
            raise DsmrError(
                f"register {obis}: {local}{flag} says {season} time, which that local time "
                "is not in Central European time"
            )
    return (utc - _EPOCH) // timedelta(milliseconds=1)
