"""What a meter measured, before it is signed: the common output of every source.

Every source (simulated, CSV, DSMR P1, SunSpec) yields :class:`Measurement` values, one per
interval, in time order; :func:`wattmesh.meters.signer.sign_measurements` numbers and signs
them into :class:`~wattmesh.settlement.records.Reading` records. Sources that read
cumulative registers (a P1 telegram, an inverter's lifetime energy, a CSV of register
values) turn them into intervals with :func:`intervals_from_registers`.

All integers: time in ms since the Unix epoch (UTC), energy in Wh.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from wattmesh.settlement.errors import WattmeshError

__all__ = [
    "DEFAULT_INTERVAL_MS",
    "Measurement",
    "MeasurementError",
    "RegisterSample",
    "intervals_from_registers",
]

DEFAULT_INTERVAL_MS = 15 * 60 * 1000


class MeasurementError(WattmeshError, ValueError):
    """A source's input that cannot become a measurement; the message names where."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """Energy produced and consumed (Wh) over ``[start, end)`` (ms)."""

    start: int
    end: int
    produced: int
    consumed: int


@dataclass(frozen=True, slots=True)
class RegisterSample:
    """Cumulative registers read at ``ts`` (ms): lifetime Wh produced (returned to the grid,
    or generated) and consumed (delivered)."""

    ts: int
    produced_total: int
    consumed_total: int


def intervals_from_registers(
    samples: Iterable[RegisterSample], interval_ms: int = DEFAULT_INTERVAL_MS
) -> Iterator[Measurement]:
    """Turn cumulative register samples into one measurement per whole interval.

    Intervals are aligned to multiples of ``interval_ms`` since the epoch. The register at
    a boundary is the last sample at or before it, so an interval's energy is the register
    difference between its two boundaries; an interval is yielded once a sample at or after
    its end has been seen (an unfinished last interval is not). Energy spread over a gap
    with no samples is attributed to the interval in which the gap ends (registers cannot
    say when it flowed). Raises :class:`MeasurementError` when time goes backwards or a
    register decreases (a meter swap or a corrupt read must not become negative energy).
    """
    if interval_ms <= 0:
        raise MeasurementError(f"interval must be positive ms, got {interval_ms}")
    last: RegisterSample | None = None
    start = 0  # the current interval's start
    at_start: RegisterSample | None = None  # the registers at `start`, once known
    for n, s in enumerate(samples, 1):
        if last is None:
            # The first sample opens the interval that starts at or after it.
            start = -(-s.ts // interval_ms) * interval_ms
        else:
            _check_step(n, last, s)
        if at_start is None:
            if s.ts < start:
                last = s
                continue
            at_start = s if s.ts == start or last is None else last
        while s.ts >= start + interval_ms:
            end = start + interval_ms
            # The registers at `end` are the last sample at or before it.
            at_end = s if s.ts == end or last is None else last
            yield Measurement(
                start,
                end,
                at_end.produced_total - at_start.produced_total,
                at_end.consumed_total - at_start.consumed_total,
            )
            at_start, start = at_end, end
        last = s


def _check_step(n: int, last: RegisterSample, s: RegisterSample) -> None:
    if s.ts < last.ts:
        raise MeasurementError(f"sample {n}: time goes backwards ({s.ts} ms after {last.ts} ms)")
    if s.produced_total < last.produced_total:
        raise MeasurementError(
            f"sample {n}: produced register went down "
            f"({last.produced_total} -> {s.produced_total} Wh)"
        )
    if s.consumed_total < last.consumed_total:
        raise MeasurementError(
            f"sample {n}: consumed register went down "
            f"({last.consumed_total} -> {s.consumed_total} Wh)"
        )
