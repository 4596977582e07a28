"""The hash-linked ledger: one SQLite file per node (DESIGN.md, "Ledger"; docs/ledger.md).

Table ``entries(seq INTEGER PRIMARY KEY, ts, kind, body, prev, hash)``: ``seq`` counts from 1
with no gaps, ``body`` is the canonical JSON text of the body, ``prev`` and ``hash`` are
32 raw bytes (BLOB; shown as hex by the CLI). The hashed bytes of an entry are::

    prev (32 raw bytes) || canonical([seq, ts, kind, body])

where the first ``prev`` is 32 zero bytes. Balances (energy Wh, money nano) are a fold of
the entries: every entry is turned into *postings* ``(account, dE, dM)`` that sum to zero,
with external counterparties (``@grid``, ``@bank``, ``@meters``) standing for the world
outside the community. Member and fund balances may never go negative; external accounts
may. A cache of the fold (``balances``, ``members``, ``meters``, ``meta``) is written in the
same SQLite transaction as the entries, so one batch is all-or-nothing, crash included.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import orjson
import sqlite_utils

from .canonical import CanonicalError, canonical
from .certificate import Certificate, check_certificate
from .fees import split_fees, storage_fee
from .keys import verify as verify_sig
from .merkle import chain_digest, inclusion_proof, merkle_root, verify_inclusion
from .readings import apply_reading

__all__ = [
    "EXTERNAL",
    "FUNDS",
    "STORAGE_FUNDS",
    "KINDS",
    "ZERO_HASH",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "PROOF_FIELDS",
    "VerifyResult",
    "check_proof",
    "entry_hash",
    "parse_head",
    "parse_proof",
]

ZERO_HASH = bytes(32)
GRID, BANK, METERS = "@grid", "@bank", "@meters"
EXTERNAL = (GRID, BANK, METERS)  # counterparties outside the community; may go negative
# The fund accounts a genesis names by default: trade and storage fees are collected into
# "fees"; with a storage rate, 10% each of the storage fees go to "education" and "network".
FUNDS = {"fees": "fund:fees"}
STORAGE_FUNDS = {**FUNDS, "education": "fund:education", "network": "fund:network"}
MAX_NAME = 128
_I64 = 2**63 - 1

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
_KEYSETS = {k: frozenset(v) for k, v in KINDS.items()}
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
_OPTSETS = {k: frozenset(v) for k, v in OPTIONAL.items()}


class LedgerError(ValueError):
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


# ---------------------------------------------------------------------------------------
# Validation and the fold. One code path for append and verify.


def _show(v: Any) -> str:
    t = repr(v)
    return t if len(t) <= 60 else t[:57] + "..."


def _int(body: dict, f: str, kind: str | None, lo: int = 0) -> int:
    v = body[f]
    if type(v) is int and lo <= v <= _I64:
        return v
    what = (
        "a positive integer"
        if lo == 1
        else f"an integer >= {lo}"
        if lo
        else ("a non-negative integer")
    )
    raise LedgerError(f"must be {what}, got {_show(v)}", f, kind)


def _sint(body: dict, f: str, kind: str) -> int:
    v = body[f]
    if type(v) is int and -_I64 <= v <= _I64:
        return v
    raise LedgerError(f"must be an integer, got {_show(v)}", f, kind)


def _name(body: dict, f: str, kind: str) -> str:
    v = body[f]
    if type(v) is str and 0 < len(v) <= MAX_NAME:
        return v
    raise LedgerError(
        f"must be a non-empty string of at most {MAX_NAME} chars, got {_show(v)}", f, kind
    )


def _hex64(body: Any, f: Any, kind: str | None) -> str:
    v = body[f]
    if type(v) is str and len(v) == 64:
        try:
            if bytes.fromhex(v).hex() == v:
                return v
        except ValueError:
            pass
    raise LedgerError(f"must be 64 lower-case hex characters, got {_show(v)}", f, kind)


@dataclass(slots=True)
class _State:
    """The fold of a ledger prefix. Values are immutable so ``copy`` is a shallow copy."""

    seq: int = 0
    head: bytes = ZERO_HASH
    ts: int = 0
    genesis: dict[str, Any] | None = None
    bal: dict[str, tuple[int, int]] = field(default_factory=dict)
    members: dict[str, tuple[int, bool]] = field(default_factory=dict)
    funds: dict[str, str] = field(default_factory=dict)  # fund name -> account
    # meter -> (owner, seq of its last applied reading, end of that reading in ms,
    # declared max power in W or None)
    meters: dict[str, tuple[str, int, int, int | None]] = field(default_factory=dict)
    last_close: int = 0  # seq of the last interval_close (0: none)
    last_interval: int = -1  # interval of the last interval_close (-1: none)
    first_trade: int = 0  # seq of the first trade (0: none yet); openings must precede it
    storage_interval: int = -1  # the last interval whose storage fees were charged
    # Obligations inside one batch (never left open by a committed batch):
    # a reading's grid entry still to come: (kind, owner, qty, reading seq)
    pending: tuple[str, str, int, int] | None = None
    # storage fees being charged: [interval, {owner: amount}, total, last owner]
    storage_group: list[Any] | None = None

    def copy(self) -> _State:
        return _State(
            self.seq,
            self.head,
            self.ts,
            self.genesis,
            dict(self.bal),
            dict(self.members),
            dict(self.funds),
            dict(self.meters),
            self.last_close,
            self.last_interval,
            self.first_trade,
            self.storage_interval,
            self.pending,
            None
            if self.storage_group is None
            else [*self.storage_group[:1], dict(self.storage_group[1]), *self.storage_group[2:]],
        )

    def open_obligation(self) -> str:
        """What an entry still owes at the end of a batch ('' if nothing)."""
        if self.pending is not None:
            kind, owner, qty, rseq = self.pending
            return f"reading {rseq} must be followed by its {kind} of {qty} Wh for {owner}"
        if self.storage_group is not None:
            return f"the storage fees of interval {self.storage_group[0]} need their fee_split"
        return ""

    def kind_of(self, account: str) -> str:
        if account in self.members:
            return "member"
        if account in EXTERNAL:
            return "external"
        return "fund"

    # -- the fold --

    def apply(self, seq: int, ts: int, kind: str, body: Any, check_sig: bool = True) -> None:
        """Validate one entry against this state and apply it, or raise LedgerError."""
        keys = _KEYSETS.get(kind) if type(kind) is str else None
        if keys is None:
            raise LedgerError(f"unknown kind {_show(kind)}; kinds: {', '.join(KINDS)}")
        if type(body) is not dict:
            raise LedgerError(f"body must be a JSON object, got {type(body).__name__}", None, kind)
        if body.keys() != keys:
            missing = sorted(keys.difference(body))
            if missing:
                raise LedgerError("missing", missing[0], kind)
            extra = set(body).difference(keys).difference(_OPTSETS.get(kind, ()))
            if extra:
                raise LedgerError("unknown field", sorted(extra)[0], kind)
        if type(ts) is not int or not 0 <= ts <= _I64:
            raise LedgerError(f"ts must be non-negative integer ms, got {_show(ts)}", None, kind)
        if ts < self.ts:
            raise LedgerError(f"ts {ts} is before the previous entry's ts {self.ts}", None, kind)
        if seq == 1:
            if kind != "genesis":
                raise LedgerError("the first entry must be genesis", None, kind)
        elif kind == "genesis":
            raise LedgerError("genesis may only be the first entry", None, kind)
        if self.pending is not None and (
            kind != self.pending[0] or body.get("reading") != self.pending[3]
        ):
            raise LedgerError(self.open_obligation() + " (with 'reading' its seq)", None, kind)
        if self.storage_group is not None and kind not in ("fee", "fee_split"):
            raise LedgerError(self.open_obligation() + " before any other entry", None, kind)
        r = _HANDLERS[kind](self, body, seq)
        if r is not None:
            if type(r) is tuple:  # a move between two accounts: x += (de, dm), y -= (de, dm)
                x, y, de, dm = r
                bal = self.bal
                bx = bal[x]
                by = bal[y]
                ex = bx[0] + de
                mx = bx[1] + dm
                ey = by[0] - de
                my = by[1] - dm
                if (ex < 0 or mx < 0) and x not in EXTERNAL:
                    _negative(x, bx, de, dm, kind)
                if (ey < 0 or my < 0) and y not in EXTERNAL:
                    _negative(y, by, -de, -dm, kind)
                if de > 0 and x in self.members and ex > self.members[x][0]:
                    _over_bmax(x, ex, self.members[x][0], kind)
                if de < 0 and y in self.members and ey > self.members[y][0]:
                    _over_bmax(y, ey, self.members[y][0], kind)
                if not (
                    -_I64 <= ex <= _I64
                    and -_I64 <= mx <= _I64
                    and -_I64 <= ey <= _I64
                    and -_I64 <= my <= _I64
                ):
                    _overflow(kind)
                bal[x] = (ex, mx)
                bal[y] = (ey, my)
            else:
                self._post(r, kind)
        self.seq = seq
        self.ts = ts
        if check_sig:
            if kind == "reading":
                self._check_reading_sig(body)
            elif kind == "correction":
                self._check_correction_sig(body)

    def _post(self, postings: Sequence[tuple[str, int, int]], kind: str) -> None:
        bal = self.bal
        net: dict[str, list[int]] = {}
        se = sm = 0
        for acct, de, dm in postings:
            se += de
            sm += dm
            cur = net.get(acct)
            if cur is None:
                net[acct] = [de, dm]
            else:
                cur[0] += de
                cur[1] += dm
        if se or sm:  # cannot happen for well-formed kinds; guards conservation
            raise LedgerError(f"postings do not sum to zero (energy {se}, money {sm})", None, kind)
        new = {}
        for acct, (de, dm) in net.items():
            cur = bal.get(acct)
            if cur is None:
                raise LedgerError(f"account {acct!r} does not exist", None, kind)
            e, m = cur[0] + de, cur[1] + dm
            if (e < 0 or m < 0) and acct not in EXTERNAL:
                _negative(acct, cur, de, dm, kind)
            if de > 0 and acct in self.members and e > self.members[acct][0]:
                _over_bmax(acct, e, self.members[acct][0], kind)
            if not (-_I64 <= e <= _I64 and -_I64 <= m <= _I64):
                _overflow(kind)
            new[acct] = (e, m)
        bal.update(new)

    def _member_acct(self, body: dict, f: str, kind: str) -> str:
        who = _name(body, f, kind)
        if who not in self.members:
            raise LedgerError(f"{who!r} is not a member", f, kind)
        return who

    def _genesis(self, b: dict, seq: int) -> None:
        k = "genesis"
        _name(b, "community", k)
        _int(b, "interval_ms", k, 1)
        lo = _int(b, "price_min", k)
        hi = _int(b, "price_max", k)
        if hi < lo:
            raise LedgerError(f"must be >= price_min {lo}, got {hi}", "price_max", k)
        if _int(b, "fee_rate_ppm", k) > 1_000_000:
            raise LedgerError("must be at most 1000000 (100%)", "fee_rate_ppm", k)
        _int(b, "retail_price", k)
        _int(b, "feedin_price", k)
        if "storage_rate" in b:  # one spelling per genesis: a rate of 0 is written by omission
            _int(b, "storage_rate", k, 1)
        funds = b["funds"]
        if type(funds) is not dict or "fees" not in funds:
            raise LedgerError("must be an object naming at least the 'fees' account", "funds", k)
        for name, acct in funds.items():
            if type(acct) is not str or not 0 < len(acct) <= MAX_NAME or acct.startswith("@"):
                raise LedgerError(f"fund {name!r}: bad account name {_show(acct)}", "funds", k)
        if len(set(funds.values())) != len(funds):
            raise LedgerError("two funds share one account", "funds", k)
        if "auditors" in b:
            aud = b["auditors"]
            if type(aud) is not list or not aud or len(set(map(str, aud))) != len(aud):
                raise LedgerError("must be a non-empty list of distinct peer ids", "auditors", k)
            for a in aud:
                if type(a) is not str or not 0 < len(a) <= MAX_NAME:
                    raise LedgerError(f"{_show(a)} is not a peer id", "auditors", k)
        if b.get("storage_rate") and not {"education", "network"} <= funds.keys():
            raise LedgerError(
                "a storage_rate needs 'education' and 'network' funds (10% of the storage "
                "fees each)",
                "funds",
                k,
            )
        self.genesis = b
        self.funds = dict(funds)
        for acct in EXTERNAL:
            self.bal[acct] = (0, 0)
        for acct in funds.values():
            self.bal[acct] = (0, 0)

    def _member(self, b: dict, seq: int) -> None:
        k = "member"
        who = _name(b, "owner", k)
        if who.startswith("@"):
            raise LedgerError("must not start with '@' (external accounts)", "owner", k)
        if who in self.bal:
            raise LedgerError(f"account {who!r} already exists", "owner", k)
        bmax = _int(b, "bmax", k)
        if type(b["storage"]) is not bool:
            raise LedgerError(f"must be true or false, got {_show(b['storage'])}", "storage", k)
        self.members[who] = (bmax, b["storage"])
        self.bal[who] = (0, 0)

    def _meter(self, b: dict, seq: int) -> None:
        k = "meter"
        m = _name(b, "meter", k)
        if m in self.meters:
            raise LedgerError(f"meter {m!r} is already registered", "meter", k)
        owner = self._member_acct(b, "owner", k)
        max_w = _int(b, "max_power_w", k, 1) if "max_power_w" in b else None
        self.meters[m] = (owner, 0, 0, max_w)

    def _reading(self, b: dict, seq: int) -> Any:
        """A signed meter reading, applied as DESIGN.md says (settlement/readings.py): the
        net moves the owner's energy within [0, Bmax]; what is above Bmax must be the next
        entry's grid_export, what the balance cannot cover the next entry's grid_import."""
        k = "reading"
        if b["type"] != "reading":
            raise LedgerError(f"must be 'reading', got {_show(b['type'])}", "type", k)
        m = _name(b, "meter", k)
        reg = self.meters.get(m)
        if reg is None:
            raise LedgerError(f"meter {m!r} is not registered", "meter", k)
        owner, last_seq, last_end, max_w = reg
        start = _int(b, "start", k)
        end = _int(b, "end", k)
        if end <= start:
            raise LedgerError("must be after start", "end", k)
        rseq = _int(b, "seq", k, 1)
        if rseq <= last_seq:
            raise LedgerError(f"must be above the meter's last applied seq {last_seq}", "seq", k)
        if start < last_end:
            raise LedgerError(
                f"overlaps the meter's previous reading, which ended at {last_end}", "start", k
            )
        produced = _int(b, "produced", k)
        consumed = _int(b, "consumed", k)
        if max_w is not None:
            most = max_w * (end - start) // 3_600_000
            for f, v in (("produced", produced), ("consumed", consumed)):
                if v > most:
                    raise LedgerError(
                        f"{v} Wh is impossible: the meter's {max_w} W over "
                        f"{end - start} ms give at most {most} Wh",
                        f,
                        k,
                    )
        if type(b["sig"]) is not str:
            raise LedgerError("must be a hex signature", "sig", k)
        energy = self.bal[owner][0]
        g = self.genesis
        eff = apply_reading(
            energy, self.members[owner][0], produced, consumed, g["retail_price"],
            g["feedin_price"],
        )  # fmt: skip
        self.meters[m] = (owner, rseq, end, max_w)
        if eff.exported_wh:
            self.pending = ("grid_export", owner, eff.exported_wh, seq)
        elif eff.imported_wh:
            self.pending = ("grid_import", owner, eff.imported_wh, seq)
        return (owner, METERS, eff.balance - energy, 0)

    def _check_reading_sig(self, b: dict) -> None:
        unsigned = {x: v for x, v in b.items() if x != "sig"}
        if not verify_sig(b["meter"], unsigned, b["sig"]):
            raise LedgerError("is not the meter's signature of the reading", "sig", "reading")

    def _grid(self, b: dict, kind: str, price_key: str) -> tuple[str, int, int, Any]:
        who = self._member_acct(b, "owner", kind)
        qty = _int(b, "qty", kind, 1)
        price = _int(b, "price", kind)
        want = self.genesis[price_key]
        if price != want:
            raise LedgerError(f"must be the genesis {price_key} {want}, got {price}", "price", kind)
        r = b.get("reading")
        if r is not None:  # apply() has checked that a reading is pending with this seq
            p = self.pending
            if p is None or (p[1], p[2]) != (who, qty):
                want_text = f"{p[2]} Wh for {p[1]}" if p else "nothing"
                raise LedgerError(f"reading {r} leaves {want_text} to the grid", "qty", kind)
            self.pending = None
        return who, qty, qty * price, r

    def _grid_import(self, b: dict, seq: int) -> Any:
        k = "grid_import"
        who, qty, cost, r = self._grid(b, k, "retail_price")
        if r is None:  # bought from the grid into the household's storage
            if "billed" in b:
                raise LedgerError("only a reading's import can be billed", "billed", k)
            return (who, GRID, qty, -cost)
        # Consumed straight from the grid: the energy never enters the balance. What the
        # household's money cannot pay is billed by its supplier outside the ledger.
        billed = max(0, cost - self.bal[who][1])
        if b.get("billed", 0) != billed or b.get("billed") == 0:
            want = f"{billed}" if billed else "absent (nothing billed)"
            raise LedgerError(f"must be {want}, got {_show(b.get('billed'))}", "billed", k)
        paid = cost - billed
        return [(GRID, -qty, paid), (METERS, qty, 0), (who, 0, -paid)]

    def _grid_export(self, b: dict, seq: int) -> Any:
        who, qty, pay, r = self._grid(b, "grid_export", "feedin_price")
        if r is None:  # sold out of the household's storage
            return (who, GRID, -qty, pay)
        # Produced above Bmax: straight from the meter to the grid, paid at feed-in.
        return [(METERS, -qty, 0), (GRID, qty, -pay), (who, 0, pay)]

    def _opening(self, b: dict, seq: int) -> Any:
        """A member's balances before the community's first trade (e.g. an order log's
        account lines): energy from `@meters` (metered before the ledger began), money from
        `@bank`. Only for a member whose balances are still zero, before any trade."""
        k = "opening"
        who = self._member_acct(b, "owner", k)
        energy = _int(b, "energy", k, 0)
        money = _int(b, "money", k, 0)
        if energy == 0 and money == 0:
            raise LedgerError("an opening must bring energy or money", "energy", k)
        if self.first_trade:
            raise LedgerError(
                f"openings must come before the first trade (entry {self.first_trade})",
                "owner",
                k,
            )
        if self.bal.get(who, (0, 0)) != (0, 0):
            raise LedgerError(f"{who} is already open: its balances are not zero", "owner", k)
        bmax = self.members[who][0]
        if energy > bmax:
            raise LedgerError(f"{energy} Wh is above {who}'s bmax {bmax}", "energy", k)
        return [(who, energy, money), (METERS, -energy, 0), (BANK, 0, -money)]

    def _deposit(self, b: dict, seq: int) -> Any:
        who = self._member_acct(b, "owner", "deposit")
        amt = _int(b, "amount", "deposit", 1)
        return (who, BANK, 0, amt)

    def _withdrawal(self, b: dict, seq: int) -> Any:
        who = self._member_acct(b, "owner", "withdrawal")
        amt = _int(b, "amount", "withdrawal", 1)
        return (who, BANK, 0, -amt)

    def _trade(self, b: dict, seq: int) -> Any:
        k = "trade"
        members = self.members
        buyer, seller = b["buyer"], b["seller"]
        if type(buyer) is not str or buyer not in members:
            self._member_acct(b, "buyer", k)
        if type(seller) is not str or seller not in members:
            self._member_acct(b, "seller", k)
        if buyer == seller:
            raise LedgerError("buyer and seller are the same account", "seller", k)
        qty, price = b["qty"], b["price"]
        if type(qty) is not int or not 0 < qty <= _I64:
            _int(b, "qty", k, 1)
        g = self.genesis
        if type(price) is not int or not g["price_min"] <= price <= g["price_max"]:
            _int(b, "price", k)
            raise LedgerError(
                f"must be within [{g['price_min']}, {g['price_max']}], got {price}", "price", k
            )
        for f in ("bid", "ask"):
            v = b[f]
            if type(v) is not str or not 0 < len(v) <= MAX_NAME:
                _name(b, f, k)
        iv = b["interval"]
        if type(iv) is not int or iv < 0:
            _int(b, "interval", k)
        money = qty * price
        if not self.first_trade:
            self.first_trade = seq
        return (buyer, seller, qty, -money)

    def _fee(self, b: dict, seq: int) -> Any:
        k = "fee"
        who = self._member_acct(b, "owner", k)
        amt = _int(b, "amount", k, 1)
        t = b["trade"]
        if "interval" in b:
            if t is not None:
                raise LedgerError("a storage fee (with an interval) has trade null", "trade", k)
            self._storage_fee(b, who, amt)
        elif type(t) is not int or not 0 < t < seq:
            raise LedgerError(
                f"must be the seq of an earlier entry (a trade fee), got {_show(t)}; "
                "a storage fee names its interval instead",
                "trade",
                k,
            )
        return (who, self.funds["fees"], 0, -amt)

    def _storage_fee(self, b: dict, who: str, amt: int) -> None:
        """Recompute one storage fee: a group per interval, members in account order, each
        charged once, exactly min(storage_fee(energy, rate), money) (settlement-rules.md)."""
        k = "fee"
        iv = _int(b, "interval", k)
        rate = self.genesis.get("storage_rate", 0)
        if not rate:
            raise LedgerError("the genesis sets no storage_rate", "interval", k)
        if iv <= self.last_interval:
            raise LedgerError(f"interval {iv} is already closed", "interval", k)
        grp = self.storage_group
        if grp is None:
            if iv <= self.storage_interval:
                raise LedgerError(
                    f"the storage fees up to interval {self.storage_interval} are already "
                    "charged: a second charge",
                    "interval",
                    k,
                )
            grp = self.storage_group = [iv, {}, 0, ""]
        elif grp[0] != iv:
            raise LedgerError(f"must be {grp[0]}, like the fees before it", "interval", k)
        if who <= grp[3]:
            problem = "is charged twice" if who in grp[1] else "is out of account order"
            raise LedgerError(f"{who} {problem} in interval {iv}'s storage fees", "owner", k)
        want = self._storage_due(who, rate)
        if amt != want:
            energy, money = self.bal[who]
            raise LedgerError(
                f"must be {want}: the fee on {energy} Wh at rate {rate}, capped at money {money}",
                "amount",
                k,
            )
        grp[1][who] = amt
        grp[2] += amt
        grp[3] = who

    def storage_shares(self, total: int) -> list[dict[str, Any]]:
        """The fee_split shares of ``total`` storage fees (fees.split_fees, zeros left out)."""
        providers = {o: bmax for o, (bmax, sto) in self.members.items() if sto and bmax}
        if not providers:
            raise LedgerError("no member has storage to receive the providers' share")
        want = split_fees(total, providers, self.funds["education"], self.funds["network"])
        return [{"account": a, "amount": v} for a, v in sorted(want.items()) if v]

    def _storage_due(self, who: str, rate: int) -> int:
        energy, money = self.bal[who]
        return min(storage_fee(energy, rate), money) if energy > 0 else 0

    def _storage_split(self, b: dict) -> None:
        """The fee_split that ends a storage group must be the documented split of exactly
        what the group collected, and every member not charged must owe nothing."""
        k = "fee_split"
        iv, charged, total, _last = self.storage_group  # type: ignore[misc]
        rate = self.genesis["storage_rate"]
        for who in self.members:
            if who not in charged and self._storage_due(who, rate):
                raise LedgerError(
                    f"{who} owes a storage fee for interval {iv} but was not charged", "fund", k
                )
        if b["fund"] != "fees":
            raise LedgerError("the storage fees are split out of 'fees'", "fund", k)
        shares = self.storage_shares(total)
        if b["shares"] != shares:
            raise LedgerError(
                f"must be the split of the {total} collected in interval {iv}: {_show(shares)}",
                "shares",
                k,
            )
        self.storage_group = None
        self.storage_interval = iv

    def _fee_split(self, b: dict, seq: int) -> Any:
        k = "fee_split"
        fund = _name(b, "fund", k)
        if fund not in self.funds:
            raise LedgerError(f"{fund!r} is not a fund of the genesis", "fund", k)
        if self.storage_group is not None:
            self._storage_split(b)
        src = self.funds[fund]
        shares = b["shares"]
        if type(shares) is not list or not shares:
            raise LedgerError("must be a non-empty list of {account, amount}", "shares", k)
        out: list[tuple[str, int, int]] = []
        total = 0
        for i, s in enumerate(shares):
            if type(s) is not dict or s.keys() != {"account", "amount"}:
                raise LedgerError(f"share {i} must be exactly {{account, amount}}", "shares", k)
            acct, amt = s["account"], s["amount"]
            if type(acct) is not str or acct not in self.bal or acct in EXTERNAL:
                raise LedgerError(
                    f"share {i}: {_show(acct)} is not a member or fund account", "shares", k
                )
            if type(amt) is not int or not 0 < amt <= _I64:
                raise LedgerError(f"share {i}: amount must be a positive integer", "shares", k)
            total += amt
            out.append((acct, 0, amt))
        out.append((src, 0, -total))
        return out

    def _correction(self, b: dict, seq: int) -> Any:
        k = "correction"
        c = b["corrects"]
        if type(c) is not int or not 0 < c < seq:
            raise LedgerError(f"must be the seq of an earlier entry, got {_show(c)}", "corrects", k)
        who = _name(b, "authorised_by", k)
        if who not in self.genesis.get("auditors", ()):
            raise LedgerError(
                f"{who!r} is not an auditor of the genesis (only auditors sign corrections)",
                "authorised_by",
                k,
            )
        if type(b["sig"]) is not str:
            raise LedgerError("must be the auditor's hex signature", "sig", k)
        if type(b["reason"]) is not str:
            raise LedgerError("must be a string", "reason", k)
        adj = b["adjustments"]
        if type(adj) is not list or not adj:
            raise LedgerError(
                "must be a non-empty list of {account, energy, money}", "adjustments", k
            )
        out = []
        for i, a in enumerate(adj):
            if type(a) is not dict or a.keys() != {"account", "energy", "money"}:
                raise LedgerError(
                    f"adjustment {i} must be exactly {{account, energy, money}}", "adjustments", k
                )
            if type(a["account"]) is not str or a["account"] not in self.bal:
                raise LedgerError(
                    f"adjustment {i}: no account {_show(a['account'])}", "adjustments", k
                )
            try:
                out.append((a["account"], _sint(a, "energy", k), _sint(a, "money", k)))
            except LedgerError as exc:
                raise LedgerError(f"adjustment {i}: {exc.problem}", "adjustments", k) from None
        if sum(x[1] for x in out) or sum(x[2] for x in out):
            raise LedgerError(
                "energy and money adjustments must each sum to zero "
                "(use @grid, @bank or @meters for the outside world)",
                "adjustments",
                k,
            )
        return out

    def _check_correction_sig(self, b: dict) -> None:
        unsigned = {x: v for x, v in b.items() if x != "sig"}
        if not verify_sig(b["authorised_by"], unsigned, b["sig"]):
            raise LedgerError("is not the auditor's signature", "sig", "correction")

    def _interval_close(self, b: dict, seq: int) -> None:
        k = "interval_close"
        iv = _int(b, "interval", k)
        if iv <= self.last_interval:
            raise LedgerError(
                f"must be after the previous close's interval {self.last_interval}, got {iv}",
                "interval",
                k,
            )
        rate = self.genesis.get("storage_rate", 0)
        if rate and iv > self.storage_interval:
            for who in sorted(self.members):
                if self._storage_due(who, rate):
                    raise LedgerError(
                        f"interval {iv}'s storage fees were not charged ({who} owes one)",
                        "interval",
                        k,
                    )
        n = _int(b, "entries", k)
        want = seq - 1 - self.last_close
        if n != want:
            raise LedgerError(
                f"must be {want} (entries since the last close), got {n}", "entries", k
            )
        _hex64(b, "digest", k)
        _hex64(b, "merkle_root", k)
        if "set" in b:
            _hex64(b, "set", k)
        self.last_close = seq
        self.last_interval = iv


_HANDLERS = {k: getattr(_State, "_" + k) for k in KINDS}


def _with_grid_entries(st: _State, items: list, now: int) -> list:
    """``items`` with each reading's grid entry inserted after it where the writer left it
    out, found by folding the batch on a copy of the state (signatures are checked later,
    when the batch is applied for real)."""
    sim = st.copy()
    out: list = []
    for i, item in enumerate(items):
        out.append(item)
        kind, body = item[0], item[1]
        ets = item[2] if len(item) == 3 else now
        try:
            sim.apply(sim.seq + 1, ets, kind, body, check_sig=False)
        except LedgerError:
            return out + items[i + 1 :]  # the real fold names the problem
        p = sim.pending
        if p is None or kind != "reading":
            continue
        nxt = items[i + 1] if i + 1 < len(items) else None
        if nxt is not None and nxt[0] == p[0] and type(nxt[1]) is dict and "reading" in nxt[1]:
            continue  # the writer wrote it
        gkind, owner, qty, rseq = p
        g = sim.genesis
        price = g["retail_price"] if gkind == "grid_import" else g["feedin_price"]
        grid = {"owner": owner, "qty": qty, "price": price, "reading": rseq}
        billed = qty * price - sim.bal[owner][1]
        if gkind == "grid_import" and billed > 0:
            grid["billed"] = billed
        out.append((gkind, grid, ets))
        sim.apply(sim.seq + 1, ets, gkind, grid, check_sig=False)
    return out


def _negative(acct: str, cur: tuple[int, int], de: int, dm: int, kind: str) -> NoReturn:
    neg_e = cur[0] + de < 0
    what = "energy" if neg_e else "money"
    have = cur[0] if neg_e else cur[1]
    need = -de if neg_e else -dm
    raise LedgerError(f"{acct} would go negative: {what} balance {have}, needs {need}", None, kind)


def _over_bmax(acct: str, energy: int, bmax: int, kind: str) -> NoReturn:
    raise LedgerError(f"{acct} would hold {energy} Wh, above its bmax {bmax}", None, kind)


def _overflow(kind: str) -> NoReturn:
    raise LedgerError(f"a balance would leave the 64-bit range (|x| <= {_I64})", None, kind)


# ---------------------------------------------------------------------------------------
# Storage


_SCHEMA_TABLES = ("entries", "balances", "members", "meters", "meta")


def _create_schema(db: sqlite_utils.Database) -> None:
    db["entries"].create(
        {"seq": int, "ts": int, "kind": str, "body": str, "prev": bytes, "hash": bytes},
        pk="seq",
        not_null={"ts", "kind", "body", "prev", "hash"},
        if_not_exists=True,
    )
    db["balances"].create(
        {"account": str, "kind": str, "energy": int, "money": int},
        pk="account",
        not_null={"kind", "energy", "money"},
        if_not_exists=True,
    )
    db["members"].create(
        {"owner": str, "bmax": int, "storage": int}, pk="owner", if_not_exists=True
    )
    db["meters"].create(
        {"meter": str, "owner": str, "last_seq": int, "last_end": int, "max_power_w": int},
        pk="meter",
        if_not_exists=True,
    )
    db["meta"].create({"key": str, "value": int}, pk="key", if_not_exists=True)
    _create_certificates(db.conn)


def _create_certificates(conn: sqlite3.Connection) -> None:
    # Beside the hash chain, not in it: nodes hold different majorities' signatures for
    # the same certified set, and their closes must hash alike.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS certificates (interval INTEGER PRIMARY KEY, body TEXT NOT NULL)"
    )


class Ledger:
    """A node's ledger file. Use :meth:`open`; one writer process at a time is expected,
    but appends take SQLite's write lock and reload the cache if another writer moved on."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._state = self._load()
        self._atomic = False  # inside an atomic() block: appends are savepoints

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Ledger:
        p = Path(path)
        if not create and not p.is_file():
            raise LedgerError(f"no ledger file {p}")
        try:
            conn = sqlite3.connect(p, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open {p}: {exc}") from None
        try:
            db = sqlite_utils.Database(conn)
            names = set(db.table_names())  # before any change: never alter a foreign file
            if "entries" not in names and not create:
                raise LedgerError(f"{p} is not a ledger (no 'entries' table)")
            if "entries" in names and not names.issuperset(_SCHEMA_TABLES):
                missing = sorted(set(_SCHEMA_TABLES) - names)
                raise LedgerError(f"{p} is not a ledger: table {missing[0]!r} is missing")
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL: a commit survives a process crash (SIGKILL); only power loss may
            # lose the last commits, never leave half a batch.
            conn.execute("PRAGMA synchronous=NORMAL")
            if "entries" not in names:
                _create_schema(db)
            elif "certificates" not in names:  # a ledger from before certificates
                _create_certificates(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(f"{p} is not a SQLite ledger: {exc}") from None
        except LedgerError:
            conn.close()
            raise
        return cls(p, conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading the cache --

    def _load(self) -> _State:
        db = self.db
        st = _State()
        row = self.conn.execute(
            "SELECT seq, ts, hash FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return st
        st.seq, st.ts, st.head = row
        first = self.conn.execute("SELECT body FROM entries WHERE seq = 1").fetchone()
        if first is not None:
            try:
                st.genesis = orjson.loads(first[0])
                st.funds = dict(st.genesis["funds"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                st.genesis = None
        for r in db["balances"].rows:
            st.bal[r["account"]] = (r["energy"], r["money"])
        for r in db["members"].rows:
            st.members[r["owner"]] = (r["bmax"], bool(r["storage"]))
        for r in db["meters"].rows:
            st.meters[r["meter"]] = (r["owner"], r["last_seq"], r["last_end"], r["max_power_w"])
        for r in db["meta"].rows:
            if r["key"] == "last_close":
                st.last_close = r["value"]
            elif r["key"] == "first_trade":
                st.first_trade = r["value"]
            elif r["key"] == "storage_interval":
                st.storage_interval = r["value"]
        if st.last_close:
            row = self.conn.execute(
                "SELECT body FROM entries WHERE seq = ?", (st.last_close,)
            ).fetchone()
            try:
                st.last_interval = orjson.loads(row[0])["interval"]
            except (TypeError, orjson.JSONDecodeError, KeyError):
                pass  # a damaged file: verify names it
        return st

    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last entry; (0, 32 zero bytes) for an empty ledger."""
        return self._state.seq, self._state.head

    def head_text(self) -> str:
        seq, h = self.head()
        return f"{seq}:{h.hex()}"

    def balances(self) -> dict[str, dict[str, Any]]:
        """Cached balances: account -> {kind, energy, money}."""
        st = self._state
        return {
            a: {"kind": st.kind_of(a), "energy": e, "money": m}
            for a, (e, m) in sorted(st.bal.items())
        }

    def genesis(self) -> dict[str, Any] | None:
        return self._state.genesis

    def member_caps(self) -> dict[str, int]:
        """Each member's ``bmax`` (Wh), by account id in sorted order."""
        return {o: bmax for o, (bmax, _sto) in sorted(self._state.members.items())}

    def last_interval(self) -> int | None:
        """The interval of the last ``interval_close`` (None: nothing closed yet)."""
        iv = self._state.last_interval
        return None if iv < 0 else iv

    def certificate(self, interval: int) -> Certificate | None:
        """The certificate stored with ``interval``'s close, if it names a certified set."""
        row = self.conn.execute(
            "SELECT body FROM certificates WHERE interval = ?", (interval,)
        ).fetchone()
        return None if row is None else Certificate.from_dict(orjson.loads(row[0]))

    def meter_seq(self, meter: str) -> int:
        """The seq of the last reading applied from ``meter`` (0: none, or not registered)."""
        reg = self._state.meters.get(meter)
        return 0 if reg is None else reg[1]

    def meter_end(self, meter: str) -> int:
        """The end (ms) of the last reading applied from ``meter`` (0: none)."""
        reg = self._state.meters.get(meter)
        return 0 if reg is None else reg[2]

    def last_ts(self) -> int:
        """The ts of the last entry (0 for an empty ledger); the next may not be earlier."""
        return self._state.ts

    def __len__(self) -> int:
        return self._state.seq

    def entries(self, since: int = 1, kind: str | None = None) -> Iterator[LedgerEntry]:
        sql = "SELECT seq, ts, kind, body, prev, hash FROM entries WHERE seq >= ?"
        args: list[Any] = [since]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        for seq, ts, k, body, prev, h in self.conn.execute(sql + " ORDER BY seq", args):
            yield LedgerEntry(seq, ts, k, orjson.loads(body), prev, h)

    # -- appending --

    def append_batch(
        self,
        items: Iterable[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], int]],
        *,
        ts: int | None = None,
    ) -> list[LedgerEntry]:
        """Validate and append ``(kind, body)`` or ``(kind, body, ts)`` items as one SQLite
        transaction (a savepoint inside :meth:`atomic`). All or nothing: a refused item
        raises LedgerError (with ``index``) and nothing is written. Entries without their
        own ts get ``ts`` (default: now, ms).
        A ``reading`` not followed by its grid entry gets it written after it (the export
        above Bmax or the import the balance cannot cover, computed from the balances at
        that point of the batch); ``index`` then counts the items as given plus those.
        ``interval_close`` is refused here: :meth:`close_interval` is the one way to write it."""
        items = list(items)
        if not items:
            return []
        now = int(time.time() * 1000) if ts is None else ts
        if any(item[0] == "reading" for item in items):
            return self._append(lambda st: _with_grid_entries(st, items, now), now)
        return self._append(lambda st: items, now)

    def close_interval(
        self, interval: int, ts: int, certificate: Certificate | None = None
    ) -> LedgerEntry:
        """Append (in its own transaction, or a savepoint inside :meth:`atomic`) the
        ``interval_close`` of ``interval``: it covers
        every entry after the previous close (from genesis for the first close; the closes
        themselves are covered by no interval), with ``entries`` their count, ``digest`` the
        hex ``chain_digest`` and ``merkle_root`` the hex RFC 9162 root of their hashes in
        order. ``interval`` must be after the previous close's; LedgerError otherwise.

        With ``certificate`` (a majority's votes for the interval's set), the close names
        the certified ``set`` and the certificate is stored beside it, in the same
        transaction; it must certify ``interval`` among the ledger's members."""
        if certificate is not None:
            problem = check_certificate(certificate, interval, certificate.set, self._state.members)
            if problem:
                raise LedgerError(problem, "set", "interval_close")

        def items(st: _State) -> list:
            hashes = [
                h
                for (h,) in self.conn.execute(
                    "SELECT hash FROM entries WHERE seq > ? ORDER BY seq", (st.last_close,)
                )
            ]
            body = {
                "interval": interval,
                "entries": len(hashes),
                "digest": chain_digest(hashes).hex(),
                "merkle_root": merkle_root(hashes).hex(),
            }
            if certificate is not None:
                body["set"] = certificate.set
                self.conn.execute(
                    "INSERT OR REPLACE INTO certificates (interval, body) VALUES (?, ?)",
                    (interval, canonical(certificate.to_dict()).decode()),
                )
            return [("interval_close", body)]

        try:
            (entry,) = self._append(items, ts, closing=True)
        except LedgerError as exc:
            exc.args = (str(LedgerError(exc.problem, exc.field, exc.kind)),)
            exc.index = None
            raise
        return entry

    def charge_storage(self, interval: int, ts: int) -> list[LedgerEntry]:
        """Charge the storage fees of ``interval`` (not closed yet) and split them, in one
        transaction; return the entries written ([] when nothing is owed).

        Rate: the genesis ``storage_rate`` (nano per kWh stored per interval; absent: 0).
        Each member with energy > 0, in account order, pays ``storage_fee(energy, rate)``
        as a ``fee`` entry (``trade`` null) into the ``fees`` fund, capped at its money
        balance (balances never go negative and the ledger has no debts: the rest is
        waived, not recorded). Then one ``fee_split`` out of ``fees`` of exactly the sum
        collected, shares per ``split_fees``: 80% to the members with ``storage`` true
        pro rata to their ``bmax``, 10% each to the ``education`` and ``network`` funds
        (largest remainder, so the shares add up to the total: nothing created or lost).
        LedgerError (nothing written) if the rate is > 0 and there is no provider with
        positive bmax, or ``interval`` is not after the last close's."""
        if type(interval) is not int or interval < 0:
            raise LedgerError(f"interval must be a non-negative integer, got {_show(interval)}")

        def items(st: _State) -> list:
            g = st.genesis
            if g is None:
                raise LedgerError("the ledger has no genesis")
            rate = g.get("storage_rate", 0)
            if interval <= st.last_interval:
                raise LedgerError(
                    f"interval {interval} is already closed (the last close is interval "
                    f"{st.last_interval}); charge an interval before closing it"
                )
            if not rate:
                return []
            if not any(sto and bmax for bmax, sto in st.members.values()):
                raise LedgerError(
                    "storage_rate is set but no member has storage (storage true, bmax > 0) "
                    "to receive the providers' 80%"
                )
            out: list = []
            total = 0
            for who in sorted(st.members):
                fee = st._storage_due(who, rate)
                if fee > 0:
                    body = {"owner": who, "amount": fee, "trade": None, "interval": interval}
                    out.append(("fee", body))
                    total += fee
            if total:
                out.append(("fee_split", {"fund": "fees", "shares": st.storage_shares(total)}))
            return out

        return self._append(items, ts)

    @contextmanager
    def atomic(self) -> Iterator[Ledger]:
        """Group appends into one all-or-nothing SQLite transaction::

            with led.atomic():
                led.append_batch(...)
                led.charge_storage(t, ts)
                led.close_interval(t, ts)

        Every append inside the block (``append_batch``, ``charge_storage``,
        ``close_interval``) is a savepoint of one outer transaction: one that raises is
        rolled back alone (its LedgerError propagates; catch it to skip that append and go
        on). The block commits when it ends normally; if an exception leaves it, nothing of
        it is written and the handle's state is what it was before. A process killed inside
        the block leaves the file as before it (the transaction never committed). Blocks do
        not nest (LedgerError)."""
        if self._atomic:
            raise LedgerError("atomic() blocks do not nest")
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")  # the write lock, for the whole block
        try:
            self._reload_if_moved()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        before = self._state
        self._atomic = True
        try:
            yield self
            if not conn.in_transaction:  # SQLite aborted it (e.g. disk full): not ours to commit
                raise LedgerError("the atomic block's transaction was aborted by SQLite")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._state = before
            raise
        finally:
            self._atomic = False

    def _reload_if_moved(self) -> None:
        """Reload the cache if another writer appended since this handle last looked
        (call with the write lock held)."""
        seq_db = self.conn.execute("SELECT max(seq) FROM entries").fetchone()[0] or 0
        if seq_db != self._state.seq:
            self._state = self._load()

    def _append(self, make_items: Any, now: int, closing: bool = False) -> list[LedgerEntry]:
        conn = self.conn
        # Inside atomic() an append is a savepoint of the block's transaction, so a refused
        # append is undone alone and the block may go on; outside, its own transaction.
        nested = self._atomic
        if nested and not conn.in_transaction:
            # SQLite aborted the block's transaction; a SAVEPOINT now would open a new one
            # and the block would no longer be all or nothing.
            raise LedgerError("the atomic block's transaction was aborted by SQLite")
        conn.execute("SAVEPOINT wm_append" if nested else "BEGIN IMMEDIATE")
        try:
            if not nested:  # atomic() has looked already, and holds the write lock since
                self._reload_if_moved()
            st = self._state.copy()
            items = make_items(st)
            rows, entries = self._build(st, items, now, closing)
            # Raw sqlite3 executemany on the hot path: sqlite-utils' insert_all would walk each
            # row's dict for column detection and type conversion, several times our own cost.
            conn.executemany(
                "INSERT INTO entries (seq, ts, kind, body, prev, hash) VALUES (?,?,?,?,?,?)", rows
            )
            self._write_cache(st, items)
            conn.execute("RELEASE wm_append" if nested else "COMMIT")
        except BaseException:
            if conn.in_transaction:
                if nested:
                    conn.execute("ROLLBACK TO wm_append")
                    conn.execute("RELEASE wm_append")
                else:
                    conn.execute("ROLLBACK")
            raise
        self._state = st
        return entries

    def _build(
        self, st: _State, items: list, now: int, closing: bool = False
    ) -> tuple[list, list[LedgerEntry]]:
        rows = []
        entries = []
        sha = hashlib.sha256
        prev = st.head
        for i, item in enumerate(items):
            if len(item) == 3:
                kind, body, ets = item
            else:
                kind, body = item
                ets = now
            seq = st.seq + 1
            try:
                if kind == "interval_close" and not closing:
                    raise LedgerError(
                        "append closes with Ledger.close_interval, which computes the digest "
                        "and Merkle root",
                        None,
                        kind,
                    )
                st.apply(seq, ets, kind, body)
                body_bytes = canonical(body)
            except LedgerError as exc:
                exc.index = i
                exc.args = (f"batch item {i} (seq {seq}): {exc.args[0]}",)
                raise
            except CanonicalError as exc:
                err = LedgerError(f"batch item {i} (seq {seq}): body: {exc}", None, kind)
                err.index = i
                raise err from None
            h = sha(b'%s[%d,%d,"%s",%s]' % (prev, seq, ets, kind.encode(), body_bytes)).digest()
            rows.append((seq, ets, kind, body_bytes.decode(), prev, h))
            entries.append(LedgerEntry(seq, ets, kind, body, prev, h))
            prev = h
        if st.open_obligation():
            err = LedgerError(f"batch ends too early: {st.open_obligation()}")
            err.index = len(items)
            raise err
        st.head = prev
        return rows, entries

    def _write_cache(self, st: _State, items: list) -> None:
        conn = self.conn
        old = self._state
        changed = [
            (a, st.kind_of(a), e, m) for a, (e, m) in st.bal.items() if old.bal.get(a) != (e, m)
        ]
        conn.executemany(
            "INSERT OR REPLACE INTO balances (account, kind, energy, money) VALUES (?,?,?,?)",
            changed,
        )
        if len(st.members) != len(old.members):
            conn.executemany(
                "INSERT OR REPLACE INTO members (owner, bmax, storage) VALUES (?,?,?)",
                [(o, b, int(s)) for o, (b, s) in st.members.items() if o not in old.members],
            )
        meters = [(m, *v) for m, v in st.meters.items() if old.meters.get(m) != v]
        if meters:
            conn.executemany(
                "INSERT OR REPLACE INTO meters (meter, owner, last_seq, last_end, max_power_w) "
                "VALUES (?,?,?,?,?)",
                meters,
            )
        if st.last_close != old.last_close:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_close', ?)",
                (st.last_close,),
            )
        for key in ("first_trade", "storage_interval"):
            if getattr(st, key) != getattr(old, key):
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (key, getattr(st, key)),
                )

    def prove(self, seq: int) -> dict[str, Any]:
        """An RFC 9162 inclusion proof of entry ``seq`` under the ``merkle_root`` of the
        ``interval_close`` that covers it, as a JSON-ready dict: ``entry``, ``entry_hash``,
        ``interval``, ``close_seq``, ``index``, ``tree_size``, ``root``, ``proof`` (hashes in
        hex). LedgerError if there is no such entry, it is not covered by a close yet, it
        is itself a close, or the close's stored root does not match its entries."""
        conn = self.conn
        conn.execute("BEGIN")  # one read snapshot
        try:
            row = None
            if type(seq) is int and 1 <= seq <= _I64:
                row = conn.execute("SELECT kind FROM entries WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                n = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
                raise LedgerError(f"no entry {seq!r:.40} (the ledger has entries 1..{n})")
            if row[0] == "interval_close":
                raise LedgerError(
                    f"entry {seq} is an interval_close; closes are covered by no interval root"
                )
            row = conn.execute(
                "SELECT seq, body FROM entries WHERE kind = 'interval_close' AND seq > ? "
                "ORDER BY seq LIMIT 1",
                (seq,),
            ).fetchone()
            if row is None:
                raise LedgerError(f"entry {seq} is not covered by an interval_close yet")
            close_seq, body = row[0], orjson.loads(row[1])
            start = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM entries WHERE kind = 'interval_close' "
                "AND seq < ?",
                (seq,),
            ).fetchone()[0]
            hashes = [
                h
                for (h,) in conn.execute(
                    "SELECT hash FROM entries WHERE seq > ? AND seq < ? ORDER BY seq",
                    (start, close_seq),
                )
            ]
        finally:
            conn.execute("COMMIT")
        root = merkle_root(hashes).hex()
        if body.get("merkle_root") != root:
            raise LedgerError(
                f"the merkle_root of interval_close {close_seq} does not match the entries it "
                "covers; run verify"
            )
        index = seq - start - 1
        return {
            "entry": seq,
            "entry_hash": hashes[index].hex(),
            "interval": body["interval"],
            "close_seq": close_seq,
            "index": index,
            "tree_size": len(hashes),
            "root": root,
            "proof": [h.hex() for h in inclusion_proof(hashes, index)],
        }

    # -- verification --

    def verify(self, expect_head: tuple[int, bytes] | str | None = None) -> VerifyResult:
        """Recompute every seq, link, hash, body (canonical form, schema, signatures) and the
        balance fold; compare the fold with the cached balances. Streams the rows."""
        if isinstance(expect_head, str):
            expect_head = parse_head(expect_head)
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.text_factory = bytes
        try:
            return _verify_rows(conn, expect_head)
        finally:
            conn.close()


def _verify_rows(conn: sqlite3.Connection, expect_head: tuple[int, bytes] | None) -> VerifyResult:
    st = _State()
    sha = hashlib.sha256
    loads = orjson.loads
    prev = ZERO_HASH
    expected = 1
    seen_expect: bytes | None = ZERO_HASH if expect_head and expect_head[0] == 0 else None
    exp_seq = expect_head[0] if expect_head else -1

    def bad(seq: int | None, problem: str) -> VerifyResult:
        return VerifyResult(False, expected - 1, expected - 1, prev, seq, problem)

    conn.execute("BEGIN")  # one read snapshot for the whole walk (WAL readers do not block)
    cur = conn.execute("SELECT seq, ts, kind, body, prev, hash FROM entries ORDER BY seq")
    apply = st.apply
    covered: list[bytes] = []  # hashes of the entries since the last interval_close
    add = covered.append
    certified = 0  # closes that name a certified set
    for seq, ts, kind_b, body_b, p, h in cur:
        if seq != expected:
            if type(seq) is not int:
                return bad(expected, f"seq is not an integer: {seq!r:.40}")
            if seq == expected - 1:
                return bad(seq, f"duplicate seq {seq}")
            return bad(expected, f"missing (next entry found has seq {seq})")
        if p != prev:
            return bad(
                seq,
                f"prev {_hexish(p)} is not the hash of entry {seq - 1} "
                f"({prev.hex()}): deleted, inserted or swapped rows",
            )
        if type(kind_b) is not bytes or kind_b.decode(errors="replace") not in _KEYSETS:
            return bad(seq, f"unknown kind {kind_b!r:.40}")
        if type(body_b) is not bytes or type(ts) is not int:
            return bad(seq, "ts or body has the wrong type")
        if sha(b'%s[%d,%d,"%s",%s]' % (p, seq, ts, kind_b, body_b)).digest() != h:
            return bad(
                seq,
                f"hash mismatch: stored {_hexish(h)} is not sha256(prev || "
                "canonical([seq, ts, kind, body])): a field was changed",
            )
        kind = kind_b.decode()
        try:
            body = loads(body_b)
            if canonical(body) != body_b:
                return bad(seq, "body is not in canonical JSON form")
            apply(seq, ts, kind, body)
        except (orjson.JSONDecodeError, CanonicalError) as exc:
            return bad(seq, f"body is not canonical JSON: {exc}")
        except LedgerError as exc:
            return bad(seq, f"refused by the rules: {exc}")
        if kind == "interval_close":
            problem = _check_close(body, covered) or _check_certified(conn, body, st.members)
            if problem:
                return bad(seq, problem)
            if "set" in body:
                certified += 1
            covered.clear()
        else:
            add(h)
        if seq == exp_seq:
            seen_expect = h
        prev = h
        expected += 1
    n = expected - 1
    if st.open_obligation():  # batches are atomic, so a committed ledger owes nothing
        return bad(n, f"the ledger ends inside a batch: {st.open_obligation()}")
    if expect_head is not None:
        eseq, ehash = expect_head
        if n < eseq:
            return bad(
                None,
                f"truncated: expected head {eseq}:{ehash.hex()} but the ledger ends at seq {n}",
            )
        if seen_expect != ehash:
            return bad(
                eseq,
                f"rewritten history: entry {eseq} has hash "
                f"{_hexish(seen_expect)}, expected {ehash.hex()}",
            )
    # The cache.
    cached: dict[str, tuple[int, int]] = {}
    for acct, _k, e, m in conn.execute("SELECT account, kind, energy, money FROM balances"):
        cached[acct.decode() if type(acct) is bytes else acct] = (e, m)
    caches = _read_caches(conn)
    stored = _count_certificates(conn)
    conn.execute("COMMIT")
    if stored != certified:
        return VerifyResult(False, n, n, prev, None, f"{stored} certificates are stored for "
                            f"{certified} closes that name a certified set")  # fmt: skip
    for acct in sorted(set(cached) | set(st.bal)):
        want, got = st.bal.get(acct), cached.get(acct)
        if want != got:
            return VerifyResult(
                False,
                n,
                n,
                prev,
                n or None,
                f"balance cache for {acct!r} is {got}, the fold of the entries "
                f"gives {want} (energy, money) as of entry {n}",
            )
    folded_meta = {"last_close": st.last_close} if st.last_close else {}
    if st.first_trade:
        folded_meta["first_trade"] = st.first_trade
    if st.storage_interval >= 0:
        folded_meta["storage_interval"] = st.storage_interval
    folded = (st.members, st.meters, folded_meta)
    for name, got, want in zip(("members", "meters", "meta"), caches, folded, strict=True):
        if got != want:
            return VerifyResult(
                False, n, n, prev, n or None,
                f"{name} cache does not match the fold of the entries as of entry {n}",
            )  # fmt: skip
    if sum(e for e, _ in st.bal.values()) or sum(m for _, m in st.bal.values()):
        return VerifyResult(False, n, n, prev, n or None, "energy or money is not conserved")
    return VerifyResult(True, n, n, prev)


PROOF_FIELDS = (
    "entry", "entry_hash", "interval", "close_seq", "index", "tree_size", "root", "proof",
)  # fmt: skip


def parse_proof(doc: Any) -> dict[str, Any]:
    """Check the shape of a proof document (as made by :meth:`Ledger.prove`) and return it
    with the hashes as bytes; LedgerError naming the field if it is malformed."""
    if type(doc) is not dict:
        raise LedgerError(f"a proof must be a JSON object, got {type(doc).__name__}")
    missing = [f for f in PROOF_FIELDS if f not in doc]
    if missing:
        raise LedgerError("missing", missing[0])
    extra = sorted(set(doc).difference(PROOF_FIELDS))
    if extra:
        raise LedgerError("unknown field", extra[0])
    out: dict[str, Any] = {}
    for f, lo in (("entry", 1), ("interval", 0), ("close_seq", 1), ("index", 0), ("tree_size", 1)):
        out[f] = _int(doc, f, None, lo)
    for f in ("entry_hash", "root"):
        out[f] = bytes.fromhex(_hex64(doc, f, None))
    path = doc["proof"]
    if type(path) is not list:
        raise LedgerError(f"must be a list of 64-hex hashes, got {_show(path)}", "proof")
    try:
        out["proof"] = [bytes.fromhex(_hex64(path, i, None)) for i in range(len(path))]
    except LedgerError as exc:
        raise LedgerError(f"item {exc.field}: {exc.problem}", "proof") from None
    return out


def _path_len(index: int, size: int) -> int:
    n = 0
    while size > 1:
        k = 1 << ((size - 1).bit_length() - 1)
        if index < k:
            size = k
        else:
            index, size = index - k, size - k
        n += 1
    return n


def check_proof(p: dict[str, Any]) -> str:
    """Check a parsed proof (:func:`parse_proof`) with ``verify_inclusion``: '' if it shows
    ``entry_hash`` at ``index`` of a tree of ``tree_size`` under ``root``, else the problem.
    It says nothing about whether ``root`` is the ledger's: that is the caller's to trust
    (it is the ``merkle_root`` of entry ``close_seq``, which the head hash covers)."""
    i, n = p["index"], p["tree_size"]
    if i >= n:
        return f"index {i} is outside a tree of {n} entries"
    if p["entry"] != p["close_seq"] - n + i:
        return (
            f"entry {p['entry']} is not index {i} of the {n} entries before close "
            f"{p['close_seq']} (that is entry {p['close_seq'] - n + i})"
        )
    want = _path_len(i, n)
    if len(p["proof"]) != want:
        return f"proof has {len(p['proof'])} hashes; index {i} of {n} needs {want}"
    if not verify_inclusion(p["entry_hash"], i, n, p["proof"], p["root"]):
        return (
            f"entry_hash {p['entry_hash'].hex()} at index {i} of {n} with this proof does not "
            f"lead to root {p['root'].hex()}"
        )
    return ""


def _check_close(body: dict[str, Any], covered: list[bytes]) -> str:
    """What is wrong with a close's digest or Merkle root ('' if nothing)."""
    first = f"{body['interval']} (entries {body['entries']})"
    for f, fn in (("merkle_root", merkle_root), ("digest", chain_digest)):
        want = fn(covered).hex()
        if body[f] != want:
            return (
                f"interval_close {first}: {f} {body[f]} is not the one of the "
                f"{len(covered)} entries it covers ({want})"
            )
    return ""


def _count_certificates(conn: sqlite3.Connection) -> int:
    try:
        return conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    except sqlite3.OperationalError:  # a ledger from before certificates
        return 0


def _check_certified(conn: sqlite3.Connection, body: dict[str, Any], members: Any) -> str:
    """What is wrong with the certificate of a close that names a set ('' if nothing)."""
    if "set" not in body:
        return ""
    iv = body["interval"]
    try:
        row = conn.execute("SELECT body FROM certificates WHERE interval = ?", (iv,)).fetchone()
    except sqlite3.OperationalError:
        row = None
    if row is None:
        return f"interval_close {iv} names a certified set but no certificate is stored"
    try:
        text = row[0] if type(row[0]) is bytes else str(row[0]).encode()
        cert = Certificate.from_dict(orjson.loads(text))
    except (orjson.JSONDecodeError, ValueError) as exc:
        return f"the certificate of interval {iv} is malformed: {exc}"
    problem = check_certificate(cert, iv, body["set"], members)
    return f"the certificate of interval {iv} does not hold: {problem}" if problem else ""


def _read_caches(conn: sqlite3.Connection) -> tuple[dict, dict, dict]:
    def text(v: Any) -> Any:
        return v.decode() if type(v) is bytes else v

    members = {
        text(o): (b, bool(s))
        for o, b, s in conn.execute("SELECT owner, bmax, storage FROM members")
    }
    meters = {
        text(m): (text(o), q, e, w)
        for m, o, q, e, w in conn.execute(
            "SELECT meter, owner, last_seq, last_end, max_power_w FROM meters"
        )
    }
    meta = {text(k): v for k, v in conn.execute("SELECT key, value FROM meta")}
    return members, meters, meta


def _hexish(v: Any) -> str:
    return v.hex() if type(v) is bytes else repr(v)[:40]
