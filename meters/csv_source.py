"""Readings from a CSV file (docs/meters.md, "CSV").

Two layouts, told apart by the header row:

- **intervals**: ``start,end,produced_wh,consumed_wh``, one row per interval, energy in
  whole Wh;
- **registers**: ``timestamp,produced_total_wh,consumed_total_wh``, cumulative register
  values (what a meter's display shows), turned into intervals by
  :func:`~wattmesh.meters.measurement.intervals_from_registers`.

A time is integer milliseconds since the Unix epoch, or ISO 8601 with a UTC offset
(``2024-06-15T12:00:00+02:00``, ``...Z``); a time without an offset is refused, since it
could be any of 24 zones. Rows must be in time order. A bad row raises
:class:`~wattmesh.meters.measurement.MeasurementError` naming the file, line and column.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .measurement import (
    DEFAULT_INTERVAL_MS,
    Measurement,
    MeasurementError,
    RegisterSample,
    intervals_from_registers,
)

__all__ = ["INTERVAL_COLUMNS", "REGISTER_COLUMNS", "CsvFollower", "read_csv"]

INTERVAL_COLUMNS = ("start", "end", "produced_wh", "consumed_wh")
REGISTER_COLUMNS = ("timestamp", "produced_total_wh", "consumed_total_wh")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def read_csv(path: str | Path, interval_ms: int = DEFAULT_INTERVAL_MS) -> Iterator[Measurement]:
    """Yield the measurements of a CSV file in either layout (see the module docstring).

    ``interval_ms`` is used by the registers layout only (the intervals layout says its
    own). Raises :class:`MeasurementError` at the first bad row, before yielding past it.
    """
    p = Path(path)
    try:
        fp = p.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise MeasurementError(f"{p}: cannot read: {exc.strerror}") from None
    with fp:
        rows = csv.reader(fp)
        try:
            header = tuple(c.strip() for c in next(rows))
        except StopIteration:
            raise MeasurementError(f"{p}: empty file; expected a header row") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MeasurementError(f"{p}:1: not CSV text: {exc}") from None
        if header == INTERVAL_COLUMNS:
            yield from _intervals(p, rows)
        elif header == REGISTER_COLUMNS:
            yield from intervals_from_registers(_registers(p, rows), interval_ms)
        else:
            raise MeasurementError(
                f"{p}:1: header must be {','.join(INTERVAL_COLUMNS)} (intervals) or "
                f"{','.join(REGISTER_COLUMNS)} (registers), got {','.join(header)!r:.80}"
            )


def _cells(p: Path, rows: csv.Reader, width: int) -> Iterator[tuple[int, list[str]]]:
    try:
        for row in rows:
            if not row or all(not c.strip() for c in row):
                continue  # blank lines are allowed
            if len(row) != width:
                raise MeasurementError(
                    f"{p}:{rows.line_num}: expected {width} columns, got {len(row)}"
                )
            yield rows.line_num, [c.strip() for c in row]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise MeasurementError(f"{p}:{rows.line_num}: not CSV text: {exc}") from None


def _intervals(p: Path, rows: csv.Reader) -> Iterator[Measurement]:
    last_end = None
    for line, (a, b, prod, cons) in _cells(p, rows, 4):
        start = _time(p, line, "start", a)
        end = _time(p, line, "end", b)
        if end <= start:
            raise MeasurementError(f"{p}:{line}: end: must be after start")
        if last_end is not None and start < last_end:
            raise MeasurementError(
                f"{p}:{line}: start: overlaps the previous row, which ends at {last_end}"
            )
        last_end = end
        yield Measurement(
            start, end, _wh(p, line, "produced_wh", prod), _wh(p, line, "consumed_wh", cons)
        )


def _registers(p: Path, rows: csv.Reader) -> Iterator[RegisterSample]:
    last = None
    for line, (t, prod, cons) in _cells(p, rows, 3):
        s = RegisterSample(
            _time(p, line, "timestamp", t),
            _wh(p, line, "produced_total_wh", prod),
            _wh(p, line, "consumed_total_wh", cons),
        )
        # Checked here, not only in intervals_from_registers, so the error names the line.
        if last is not None:
            if s.ts < last.ts:
                raise MeasurementError(f"{p}:{line}: timestamp: before the previous row")
            for name in ("produced_total", "consumed_total"):
                if getattr(s, name) < getattr(last, name):
                    raise MeasurementError(
                        f"{p}:{line}: {name}_wh: a register cannot go down "
                        f"({getattr(last, name)} -> {getattr(s, name)})"
                    )
        last = s
        yield s


def _wh(p: Path, line: int, column: str, text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise MeasurementError(
            f"{p}:{line}: {column}: must be a whole non-negative number of Wh, got {text!r:.40}"
        )
    return int(text)


def _time(p: Path, line: int, column: str, text: str) -> int:
    if text.isdigit() and text.isascii():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MeasurementError(
            f"{p}:{line}: {column}: must be integer ms or ISO 8601 with an offset, got {text!r:.40}"
        ) from None
    if when.tzinfo is None:
        raise MeasurementError(
            f"{p}:{line}: {column}: {text!r} has no UTC offset (add Z or +01:00)"
        )
    return (when - _EPOCH) // _MS  # exact integer arithmetic, no float


class CsvFollower:
    """A CSV file that grows, in either layout: each :meth:`poll` reads the whole lines
    appended since the last one and returns, in order, a register sample per value and a
    :class:`MeasurementError` per bad row (which is skipped, naming its line).

    An intervals row ``[start, end)`` becomes the registers at its start and its end,
    counted from 0 at the file's first row, so both layouts are registers to the caller.
    Registers going down and time going backwards are passed on, not refused: the caller
    decides (meters/live.py reports them). A line without its newline yet is left for the
    next poll (the writer may be half-way through it); a file that shrinks (rotated or
    rewritten) is read again from its start. OSError if the file cannot be read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._restart()

    def _restart(self) -> None:
        self._offset = 0  # bytes read so far
        self._line = 0  # lines read so far
        self._partial = b""  # the start of a line whose newline has not come yet
        self._layout: tuple[str, ...] | None = None  # the header, once read
        self._totals: tuple[int, int] = (0, 0)  # intervals layout: registers at the last end
        self._end: int | None = None  # intervals layout: the last row's end

    def poll(self) -> list[RegisterSample | MeasurementError]:
        with self.path.open("rb") as f:
            if os.fstat(f.fileno()).st_size < self._offset:
                self._restart()
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out: list[RegisterSample | MeasurementError] = []
        for raw in lines:
            self._line += 1
            try:
                out.extend(self._row(raw))
            except MeasurementError as exc:
                out.append(exc)
        return out

    def _row(self, raw: bytes) -> list[RegisterSample]:
        p, line = self.path, self._line
        try:
            text = raw.decode("utf-8").rstrip("\r")
            row = [c.strip() for c in next(csv.reader([text.lstrip("\ufeff")]), [])]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MeasurementError(f"{p}:{line}: not CSV text: {exc}") from None
        if not any(row):
            return []  # blank lines are allowed
        if self._layout is None:
            if tuple(row) not in (INTERVAL_COLUMNS, REGISTER_COLUMNS):
                self._layout = ()  # not a meter's file: nothing more is read from it
                raise MeasurementError(
                    f"{p}:{line}: header must be {','.join(INTERVAL_COLUMNS)} (intervals) or "
                    f"{','.join(REGISTER_COLUMNS)} (registers), got {','.join(row)!r:.80}"
                )
            self._layout = tuple(row)
            return []
        if not self._layout:
            return []
        if len(row) != len(self._layout):
            raise MeasurementError(
                f"{p}:{line}: expected {len(self._layout)} columns, got {len(row)}"
            )
        if self._layout == REGISTER_COLUMNS:
            t, prod, cons = row
            return [
                RegisterSample(
                    _time(p, line, "timestamp", t),
                    _wh(p, line, "produced_total_wh", prod),
                    _wh(p, line, "consumed_total_wh", cons),
                )
            ]
        a, b, prod, cons = row
        start, end = _time(p, line, "start", a), _time(p, line, "end", b)
        produced = _wh(p, line, "produced_wh", prod)
        consumed = _wh(p, line, "consumed_wh", cons)
        if end <= start:
            raise MeasurementError(f"{p}:{line}: end: must be after start")
        if self._end is not None and start < self._end:
            raise MeasurementError(
                f"{p}:{line}: start: overlaps the previous row, which ends at {self._end}"
            )
        out = []
        if self._end != start:  # the first row, or one after a gap: the registers at its start
            out.append(RegisterSample(start, *self._totals))
        self._totals = (self._totals[0] + produced, self._totals[1] + consumed)
        self._end = end
        out.append(RegisterSample(end, *self._totals))
        return out
