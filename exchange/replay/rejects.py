"""A replay's refused lines: their codes, their wording, and the columns that keep them.

Every refused line becomes a :class:`Reject` row (line number, code, reason, text), in
line order. Rows are kept as columns while the log is read (:class:`Rejects`) and made
into ``Reject`` tuples only when something reads them: an output file, a test, the
caller. A summary only counts them, by code, from the code column.

Why columns: another tool's log may refuse one line in ten. The 300k-line foreign
benchmark log has 29k late call cancels; making each one's reason and text as it was
refused took a fifth of call mode. The C scanner adds its own refusals (late call
cancels, cda cancels of orders no longer live) straight into the columns, with the
numbers the reason is worded from and the line's bytes; the words are made here, by the
same functions the Python path words its refusals with.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, overload

from wattmesh.exchange.clock import is_late
from wattmesh.settlement.refusals import codes_of

__all__ = [
    "BAD_LINE_CODES",
    "CODES",
    "Reject",
    "Rejects",
    "late_cancel_reason",
    "not_live_reason",
]

# Refusal codes. The first three make a line *bad* (it is not a valid, authentic event);
# --strict stops at the first bad line. The others refuse a valid event under the market
# rules, which is a normal outcome of a replay, so --strict goes on past them.
BAD_JSON = "bad-json"
BAD_RECORD = "bad-record"
BAD_SIGNATURE = "bad-signature"
DUPLICATE_ID = "duplicate-id"
ID_COLLISION = "id-collision"
NO_INTERVAL = "no-interval"
UNSUPPORTED_TIF = "unsupported-tif"
LATE = "late"
NOT_OWNER = "not-owner"
NOT_LIVE = "not-live"
ACCOUNT_REFUSED = "account-refused"
METER_REFUSED = "meter-refused"
READING_REFUSED = "reading-refused"
BAD_LINE_CODES = frozenset({BAD_JSON, BAD_RECORD, BAD_SIGNATURE})
CODES = frozenset(codes_of("replay"))  # the shared table: settlement/refusals.py
_CODE_LIST = tuple(sorted(CODES))  # a row's code is its index here
_CODE_INDEX = {code: i for i, code in enumerate(_CODE_LIST)}

# How a row's reason is made, from its three numbers (Rejects.numbers):
GIVEN = 0  # in full by the Python path: the row is _given[first number]
LATE_CANCEL = 1  # late_cancel_reason(ts, interval, clock)
NOT_LIVE_ID = 2  # not_live_reason of the id the first number references (Scanner.id_refs)


class Reject(NamedTuple):
    """A refused line: its 1-based line number, refusal code, reason and text."""

    line: int
    code: str
    reason: str
    text: str


def late_cancel_reason(ts: int, interval: int, clock: int) -> str | None:
    """call: why a cancel at ``ts`` of an order for ``interval`` is late, the log's clock
    being ``clock`` (already at ``ts`` or past it), or None if it is in time. The one
    wording of both paths (the scanner refuses such cancels in C: Scanner.take_late)."""
    if is_late(ts, interval):
        return f"cancel at ts {ts} is at or after the gate of interval {interval}"
    if interval <= clock:
        return f"interval {interval} already cleared (the log had reached ts {clock})"
    return None


def not_live_reason(oid: str, known: bool = True) -> str:
    """Why a cancel of order ``oid`` is refused ``not-live``: the order was live once
    (``known``) and is no more, or no order had that id."""
    return f"order {oid} is {'no longer live' if known else 'unknown'}"


def line_text(raw: bytes | bytearray) -> str:
    """A refused line's text as a row keeps it: UTF-8 (bad bytes replaced), no ``\\r``."""
    return raw.decode("utf-8", "replace").rstrip("\r")


class Rejects(Sequence[Reject]):
    """The refused lines of a replay, in line order, as columns; rows are made when read.

    Columns, one entry a row (the scanner appends to them in C: _logscan's
    ``_reserve_rejects`` relies on these names and types): ``lines`` (``array('q')``),
    ``codes`` (``array('B')``, the index of the code in the sorted code table), ``forms``
    (``array('B')``, how the reason is made), ``numbers`` (``array('q')``, three a row,
    what the reason is made from), ``text_ends`` (``array('q')``, where the row's bytes
    end in ``text``, a ``bytearray``; a row given in full adds none).

    ``id_texts`` turns id references into ids (``Scanner.id_texts``); needed only for
    rows the scanner refused as not live.
    """

    def __init__(self, id_texts: Callable[[array], list[str]] | None = None) -> None:
        self.lines = array("q")
        self.codes = array("B")
        self.forms = array("B")
        self.numbers = array("q")
        self.text_ends = array("q")
        self.text = bytearray()
        self._given: list[Reject] = []
        self._id_texts = id_texts

    @staticmethod
    def code_index(code: str) -> int:
        """Where ``code`` is in the code column's table; ValueError for no replay code."""
        try:
            return _CODE_INDEX[code]
        except KeyError:
            raise ValueError(f"{code!r} is not a replay refusal code") from None

    def add(self, line: int, code: str, reason: str, text: str) -> Reject:
        """Add a row given in full (the Python path's refusals); returns it."""
        reject = Reject(line, code, reason, text)
        self.codes.append(self.code_index(code))
        self.lines.append(line)
        self.forms.append(GIVEN)
        self.numbers.extend((len(self._given), 0, 0))
        self.text_ends.append(len(self.text))
        self._given.append(reject)
        return reject

    def counts(self) -> dict[str, int]:
        """Refused lines per code, codes sorted; no row is made."""
        codes = self.codes.tobytes()
        return {c: n for i, c in enumerate(_CODE_LIST) if (n := codes.count(i))}

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, i: int) -> Reject: ...
    @overload
    def __getitem__(self, i: slice) -> list[Reject]: ...
    def __getitem__(self, i: int | slice) -> Reject | list[Reject]:
        if isinstance(i, slice):
            return [self._row(k, None) for k in range(*i.indices(len(self)))]
        return self._row(range(len(self))[i], None)

    def __iter__(self) -> Iterator[Reject]:
        ids = self._ids_of_not_live()
        for k in range(len(self)):
            yield self._row(k, ids)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Rejects, list, tuple)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"Rejects({list(self)!r})"

    def _ids_of_not_live(self) -> dict[int, str]:
        """The ids of every not-live row the scanner added, by row, made in one call."""
        rows = [k for k, form in enumerate(self.forms) if form == NOT_LIVE_ID]
        if not rows:
            return {}
        assert self._id_texts is not None, "not-live rows need id_texts"
        refs = array("Q", [self.numbers[3 * k] for k in rows])
        return dict(zip(rows, self._id_texts(refs), strict=True))

    def _row(self, k: int, ids: dict[int, str] | None) -> Reject:
        form = self.forms[k]
        a, b, c = self.numbers[3 * k : 3 * k + 3]
        if form == GIVEN:
            return self._given[a]
        text = line_text(self.text[self.text_ends[k - 1] if k else 0 : self.text_ends[k]])
        if form == LATE_CANCEL:
            reason = late_cancel_reason(a, b, c)
            assert reason is not None
        elif form == NOT_LIVE_ID:
            if ids is None:
                assert self._id_texts is not None, "not-live rows need id_texts"
                oid = self._id_texts(array("Q", [a]))[0]
            else:
                oid = ids[k]
            reason = not_live_reason(oid)
        else:
            raise ValueError(f"row {k}: no reason form {form}")
        return Reject(self.lines[k], _CODE_LIST[self.codes[k]], reason, text)


def as_rejects(rows: Sequence[Any]) -> Rejects:
    """Rows (Reject, or tuples of its fields) as a Rejects, in the order given."""
    out = Rejects()
    for line, code, reason, text in rows:
        out.add(line, code, reason, text)
    return out
