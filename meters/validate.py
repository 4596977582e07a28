"""Validate signed readings before they may change a balance (docs/design.md, "Meters").

A :class:`ReadingValidator` holds the registered meters and, per meter, the last reading
it accepted. :meth:`ReadingValidator.check` accepts a reading or raises
:class:`ReadingRefused` with a stable ``reason`` code (for counting, as the node does for
gossip) and a message naming the field. A refused reading leaves the validator as it
was; nothing it refuses may reach a balance. The ledger checks the same rules again when
a reading is settled (settlement/ledger/fold.py), so a writer cannot skip them.

Reasons, in the order they are checked:

``malformed``
    not a reading record (a missing field, a negative value, ``end`` ≤ ``start``: the
    message names the field).
``unknown-meter``
    the meter is not registered.
``bad-signature``
    the signature is missing or is not the meter's signature of the body.
``out-of-order``
    ``seq`` is not above the meter's last accepted ``seq``.
``overlap``
    the reading starts before the end of the meter's last accepted reading: a replayed
    or double-counted reading.
``future``
    ``end`` lies beyond now plus the allowed clock skew.
``impossible``
    more energy than the meter's declared maximum power over the reading's duration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.readings import order_problem, power_problem
from wattmesh.settlement.records import Meter, Reading, RecordError
from wattmesh.settlement.refusals import codes_of

__all__ = ["DEFAULT_CLOCK_SKEW_MS", "REASONS", "ReadingRefused", "ReadingValidator"]

DEFAULT_CLOCK_SKEW_MS = 60_000  # a meter's clock may run a minute ahead of ours
REASONS = codes_of("meter")  # the shared table: settlement/refusals.py


class ReadingRefused(WattmeshError, ValueError):
    """A reading that must not be applied: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"{reason!r} is not a meter refusal code")
        self.reason = reason
        super().__init__(f"{reason}: {message}")


@dataclass(slots=True)
class _Last:
    seq: int = 0
    end: int = 0


class ReadingValidator:
    """The registered meters and the last reading accepted from each.

    ``clock_skew_ms`` bounds how far in the future a reading may end; ``check(..., now_ms=None)``
    skips that test (a replay of old readings has no "now").
    """

    def __init__(
        self, meters: Iterable[Meter] = (), clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS
    ) -> None:
        self.meters: dict[str, Meter] = {}
        self._last: dict[str, _Last] = {}
        self.clock_skew_ms = clock_skew_ms
        for m in meters:
            self.register(m)

    def register(self, meter: Meter) -> None:
        """Add a meter; ValueError if its id is already registered."""
        if meter.meter in self.meters:
            raise ValueError(f"meter {meter.meter} is already registered")
        self.meters[meter.meter] = meter
        self._last[meter.meter] = _Last()

    def owner_of(self, meter: str) -> str | None:
        """The household a meter is registered to (None: unknown meter)."""
        m = self.meters.get(meter)
        return None if m is None else m.owner

    def check(self, reading: Reading | Mapping[str, Any], now_ms: int | None = None) -> Reading:
        """Accept ``reading`` (a record or its dict) and remember it, or raise
        :class:`ReadingRefused` and change nothing."""
        if not isinstance(reading, Reading):
            try:
                reading = Reading.from_dict(dict(reading))
            except RecordError as exc:
                raise ReadingRefused("malformed", str(exc)) from None
        meter = self.meters.get(reading.meter)
        if meter is None:
            raise ReadingRefused("unknown-meter", f"meter: {reading.meter} is not registered")
        if not reading.verify_signature():
            what = "missing" if reading.sig is None else f"not the signature of {reading.meter}"
            raise ReadingRefused("bad-signature", f"sig: {what}")
        last = self._last[reading.meter]
        problem = order_problem(reading.seq, reading.start, last_seq=last.seq, last_end=last.end)
        if problem is not None:
            raise ReadingRefused(problem.code, f"{problem.field}: {problem.message}")
        if now_ms is not None and reading.end > now_ms + self.clock_skew_ms:
            raise ReadingRefused(
                "future",
                f"end: {reading.end} is {reading.end - now_ms} ms ahead of now "
                f"(allowed skew {self.clock_skew_ms} ms)",
            )
        problem = power_problem(
            reading.start, reading.end, reading.produced, reading.consumed, meter.max_power_w
        )
        if problem is not None:
            raise ReadingRefused(problem.code, f"{problem.field}: {problem.message}")
        last.seq, last.end = reading.seq, reading.end
        return reading
