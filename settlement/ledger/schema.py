"""The ledger's entry kinds and their fields, the accounts, the entry hash, heads and
the records a ledger hands out (LedgerEntry, VerifyResult, LedgerError)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, overload

from ..canonical import canonical
from ..errors import WattmeshError

ZERO_HASH = bytes(32)
GRID, BANK, METERS = "@grid", "@bank", "@meters"
EXTERNAL = (GRID, BANK, METERS)  # counterparties outside the community; may go negative
# The fund accounts a genesis names by default: trade and storage fees are collected into
# "fees"; with a storage rate, 10% each of the storage fees go to "education" and "network".
FUNDS = {"fees": "fund:fees"}
STORAGE_FUNDS = {**FUNDS, "education": "fund:education", "network": "fund:network"}
MAX_NAME = 128
I64 = 2**63 - 1

KINDS: dict[str, tuple[str, ...]] = {
    "genesis": (
        "community", "interval_ms", "price_min", "price_max", "fee_rate_ppm",
        "retail_price", "feedin_price", "funds",
    ),
    "member": ("owner", "bmax", "storage"),
    "opening": ("owner", "energy", "money"),
    "meter": ("meter", "owner"),
    "reading": ("type", "meter", "start", "end", "produced", "consumed", "seq", "sig"),
    "grid_import": ("owner", "qty", "price"),
    "grid_export": ("owner", "qty", "price"),
    "deposit": ("owner", "amount"),
    "withdrawal": ("owner", "amount"),
    "trade": ("buyer", "seller", "qty", "price", "bid", "ask", "interval"),
    "fee": ("owner", "amount", "trade"),
    "fee_split": ("fund", "shares"),
    "correction": ("corrects", "adjustments", "authorised_by", "reason", "sig"),
    "interval_close": ("interval", "entries", "digest", "merkle_root"),
}  # fmt: skip
KEYSETS = {k: frozenset(v) for k, v in KINDS.items()}
# Fields a body may leave out (absent means the default; one spelling per value, so a
# default is written by omission). genesis: ``storage_rate`` (nano per kWh stored per
# interval; absent: 0, no storage fees) and ``auditors`` (peer ids that may sign
# corrections; absent: none). grid entries: ``reading`` (the seq of the reading whose
# export or import this is). grid_import: ``billed`` (the part of a reading's import charge
# the household's money could not cover, billed by the supplier outside the ledger).
# fee: ``interval`` (a storage fee's interval; absent: a trade fee). meter: ``max_power_w``
# (the meter's declared maximum power; absent: no limit on what a reading may claim).
# interval_close: ``set`` (the digest of the message set a majority certified; its
# certificate is in the ``certificates`` table; absent: settled without one, as replay does).
OPTIONAL: dict[str, tuple[str, ...]] = {
    "genesis": ("storage_rate", "auditors"),
    "meter": ("max_power_w",),
    "grid_import": ("reading", "billed"),
    "grid_export": ("reading",),
    "fee": ("interval",),
    "interval_close": ("set",),
}
OPTSETS = {k: frozenset(v) for k, v in OPTIONAL.items()}


class LedgerError(WattmeshError, ValueError):
    """A refused entry or an unusable file. ``field`` names the body field (or None)."""

    def __init__(self, problem: str, field: str | None = None, kind: str | None = None) -> None:
        self.field = field
        self.kind = kind
        self.problem = problem
        self.index: int | None = None  # the refused item's position in its batch
        where = f"{kind}: " if kind else ""
        where += f"field {field!r}: " if field else ""
        super().__init__(where + problem)


class LedgerEntry(NamedTuple):
    """One entry as stored (a NamedTuple: cheap to build on the append hot path)."""

    seq: int
    ts: int
    kind: str
    body: dict[str, Any]
    prev: bytes
    hash: bytes

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "ts": self.ts, "kind": self.kind, "body": self.body,
            "prev": self.prev.hex(), "hash": self.hash.hex(),
        }  # fmt: skip


class WrittenEntries(Sequence[LedgerEntry]):
    """The entries one append wrote, as :class:`LedgerEntry` made when asked for: the
    append keeps only its columns (six values an entry: seq, ts, kind, body text, prev,
    hash, as inserted: the hashes as bytearray) and the bodies as given, since most
    callers never look (a million-entry append saves about 0.2 s)."""

    __slots__ = ("_columns", "_bodies")

    def __init__(self, columns: list, bodies: list[dict[str, Any]]) -> None:
        self._columns = columns
        self._bodies = bodies

    def __len__(self) -> int:
        return len(self._bodies)

    @overload
    def __getitem__(self, i: int) -> LedgerEntry: ...
    @overload
    def __getitem__(self, i: slice) -> list[LedgerEntry]: ...
    def __getitem__(self, i: int | slice) -> LedgerEntry | list[LedgerEntry]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        body = self._bodies[i]  # IndexError (and negative indices) as a list's
        i %= len(self._bodies)
        seq, ts, kind, _text, prev, h = self._columns[6 * i : 6 * i + 6]
        return LedgerEntry(seq, ts, kind, body, bytes(prev), bytes(h))

    def __eq__(self, other: object) -> bool:  # as the list it stands for
        if isinstance(other, WrittenEntries | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like a list: equal, so not hashable

    def __repr__(self) -> str:
        return f"WrittenEntries({list(self)!r})"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    head_seq: int
    head_hash: bytes
    bad_seq: int | None = None  # the first bad entry (None: the file as a whole, or ok)
    problem: str = ""

    @property
    def head(self) -> str:
        return f"{self.head_seq}:{self.head_hash.hex()}"

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.entries} entries, head {self.head}"
        where = f"entry {self.bad_seq}" if self.bad_seq is not None else "ledger"
        return f"bad {where}: {self.problem}"


def entry_hash(prev: bytes, seq: int, ts: int, kind: str, body: dict[str, Any]) -> bytes:
    """sha256(prev || canonical([seq, ts, kind, body])), by the definition."""
    return hashlib.sha256(prev + canonical([seq, ts, kind, body])).digest()


def parse_head(text: str) -> tuple[int, bytes]:
    """Parse ``SEQ:HASH`` (HASH: 64 lower-case hex) or raise ValueError."""
    seq_text, sep, hash_text = text.partition(":")
    if not sep or not seq_text.isdigit() or len(hash_text) != 64:
        raise ValueError(f"head must be SEQ:HASH with 64 hex digits, got {text!r:.80}")
    try:
        digest = bytes.fromhex(hash_text)
    except ValueError:
        raise ValueError(f"head hash is not hex: {hash_text!r:.80}") from None
    if digest.hex() != hash_text:
        raise ValueError("head hash must be lower-case hex")
    return int(seq_text), digest


# Field checkers: each names the field and the entry kind of what is wrong.


def show_value(v: Any) -> str:
    t = repr(v)
    return t if len(t) <= 60 else t[:57] + "..."


def int_field(body: dict, f: str, kind: str | None, lo: int = 0) -> int:
    v = body[f]
    if type(v) is int and lo <= v <= I64:
        return v
    what = (
        "a positive integer"
        if lo == 1
        else f"an integer >= {lo}"
        if lo
        else ("a non-negative integer")
    )
    raise LedgerError(f"must be {what}, got {show_value(v)}", f, kind)


def signed_int_field(body: dict, f: str, kind: str) -> int:
    v = body[f]
    if type(v) is int and -I64 <= v <= I64:
        return v
    raise LedgerError(f"must be an integer, got {show_value(v)}", f, kind)


def name_field(body: dict, f: str, kind: str) -> str:
    v = body[f]
    if type(v) is str and 0 < len(v) <= MAX_NAME:
        return v
    raise LedgerError(
        f"must be a non-empty string of at most {MAX_NAME} chars, got {show_value(v)}", f, kind
    )


def hex64_field(body: Any, f: Any, kind: str | None) -> str:
    v = body[f]
    if type(v) is str and len(v) == 64:
        try:
            if bytes.fromhex(v).hex() == v:
                return v
        except ValueError:
            pass
    raise LedgerError(f"must be 64 lower-case hex characters, got {show_value(v)}", f, kind)
