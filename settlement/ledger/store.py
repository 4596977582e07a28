"""Storage: the SQLite tables and :class:`Ledger`, which appends in one transaction per
batch, caches the fold, proves and verifies."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from ..canonical import CanonicalError, canonical
from ..certificate import Certificate, check_certificate
from ..gc_pause import cyclic_gc_paused
from ..merkle import chain_digest, inclusion_proof, merkle_root
from ._fastfold import append_run, chain_hash
from .fold import LedgerState, with_grid_entries
from .schema import (
    I64,
    LedgerEntry,
    LedgerError,
    VerifyResult,
    WrittenEntries,
    parse_head,
    show_value,
)
from .verify import verify_rows

# ---------------------------------------------------------------------------------------
# Storage


_SCHEMA_TABLES = ("entries", "balances", "members", "meters", "meta")
# False folds every entry in Python (the reference; tests hold the two paths together).
_FAST_FOLD = True


# The tables as sqlite-utils first created them (the same SQL, so old and new files match);
# plain sqlite3 here keeps sqlite-utils (and the pandas and numpy it imports when they are
# installed) out of every process that only opens a ledger.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS "entries" (
   "seq" INTEGER PRIMARY KEY,
   "ts" INTEGER NOT NULL,
   "kind" TEXT NOT NULL,
   "body" TEXT NOT NULL,
   "prev" BLOB NOT NULL,
   "hash" BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS "balances" (
   "account" TEXT PRIMARY KEY,
   "kind" TEXT NOT NULL,
   "energy" INTEGER NOT NULL,
   "money" INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS "members" (
   "owner" TEXT PRIMARY KEY,
   "bmax" INTEGER,
   "storage" INTEGER
);
CREATE TABLE IF NOT EXISTS "meters" (
   "meter" TEXT PRIMARY KEY,
   "owner" TEXT,
   "last_seq" INTEGER,
   "last_end" INTEGER,
   "max_power_w" INTEGER
);
CREATE TABLE IF NOT EXISTS "meta" (
   "key" TEXT PRIMARY KEY,
   "value" INTEGER
);
"""


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    _create_certificates(conn)


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _create_certificates(conn: sqlite3.Connection) -> None:
    # Beside the hash chain, not in it: nodes hold different majorities' signatures for
    # the same certified set, and their closes must hash alike.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS certificates (interval INTEGER PRIMARY KEY, body TEXT NOT NULL)"
    )


# How the entries are inserted, each for a measured reason (docs/ledger.md, "Speed"):
# - Many rows per INSERT statement: one call binds and steps 128 rows where executemany
#   makes one call a row (about 0.4 us an entry less); 128 rows are 768 parameters, under
#   SQLite's oldest limit of 999. The rest of a batch goes in statements of 64, 32, ... 1
#   rows, so eight statements (all in sqlite3's statement cache) serve any batch.
# - prev and hash as bytearray, not bytes: CPython's sqlite3 binds bytearray directly but
#   sends every bytes parameter through its adapter lookup first, which raises and
#   formats an AttributeError each time (0.3 us a parameter). Both are bound as the same
#   BLOB.
# The rows, their order and the transaction are those of executemany: the file is the
# same, byte for byte (tests/settlement/test_ledger_fastfold.py).
_ROWS_PER_INSERT = 128
_INSERTS = {
    k: "INSERT INTO entries (seq, ts, kind, body, prev, hash) VALUES "
    + ",".join(["(?,?,?,?,?,?)"] * k)
    for k in (128, 64, 32, 16, 8, 4, 2, 1)
}


def _insert_entries(conn: sqlite3.Connection, columns: list) -> None:
    """Insert entries given as their columns, six values an entry, in order."""
    n = len(columns) // 6
    i = 0
    k = _ROWS_PER_INSERT
    execute = conn.execute
    while i < n:
        while k > n - i:
            k //= 2
        execute(_INSERTS[k], columns[6 * i : 6 * (i + k)])
        i += k


class Ledger:
    """A node's ledger file. Use :meth:`open`; one writer process at a time is expected,
    but appends take SQLite's write lock and reload the cache if another writer moved on."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
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
            names = _table_names(conn)  # before any change: never alter a foreign file
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
                _create_schema(conn)
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

    def _load(self) -> LedgerState:
        st = LedgerState()
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
        q = self.conn.execute
        for account, energy, money in q("SELECT account, energy, money FROM balances"):
            st.bal[account] = (energy, money)
        for owner, bmax, storage in q("SELECT owner, bmax, storage FROM members"):
            st.members[owner] = (bmax, bool(storage))
        for m in q("SELECT meter, owner, last_seq, last_end, max_power_w FROM meters"):
            st.meters[m[0]] = m[1:]
        for key, value in q("SELECT key, value FROM meta"):
            if key == "last_close":
                st.last_close = value
            elif key == "first_trade":
                st.first_trade = value
            elif key == "storage_interval":
                st.storage_interval = value
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

    def entries_before(
        self, before: int | None, kind: str | None = None, limit: int = 100
    ) -> list[LedgerEntry]:
        """Up to ``limit`` entries (of ``kind``) below seq ``before`` (None: the head),
        newest first: a backward walk of the primary key, which stops after ``limit``."""
        sql = "SELECT seq, ts, kind, body, prev, hash FROM entries WHERE seq < ?"
        args: list[Any] = [I64 if before is None else before]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        rows = self.conn.execute(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit])
        return [LedgerEntry(seq, ts, k, orjson.loads(body), prev, h)
                for seq, ts, k, body, prev, h in rows]  # fmt: skip

    # -- appending --

    def append_batch(
        self,
        items: Iterable[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], int]],
        *,
        ts: int | None = None,
    ) -> WrittenEntries:
        """Validate and append ``(kind, body)`` or ``(kind, body, ts)`` items as one SQLite
        transaction (a savepoint inside :meth:`atomic`); returns the entries written (a
        sequence of :class:`LedgerEntry`). All or nothing: a refused item
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
            return self._append(lambda st: with_grid_entries(st, items, now), now)
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

        def items(st: LedgerState) -> list:
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
            raise LedgerError(
                f"interval must be a non-negative integer, got {show_value(interval)}"
            )

        def items(st: LedgerState) -> list:
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

    def _append(self, make_items: Any, now: int, closing: bool = False) -> WrittenEntries:
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
            with cyclic_gc_paused():  # a few acyclic objects per entry
                columns, entries = self._build(st, items, now, closing)
                _insert_entries(conn, columns)
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
        self, st: LedgerState, items: list, now: int, closing: bool = False
    ) -> tuple[list, WrittenEntries]:
        """Fold ``items`` into ``st``; returns the new entries' columns (six values an
        entry: seq, ts, kind, body text, prev, hash) and the entries."""
        columns: list = []
        bodies: list[dict[str, Any]] = []
        prev = bytearray(st.head)  # hashes are bound as bytearray (see _insert_entries)
        items = items if type(items) is list else list(items)
        i = 0
        n = len(items)
        fast = _FAST_FOLD and not closing
        while i < n:
            if fast:
                # Runs of clean trades and trade fees fold in compiled code; it stops,
                # changing nothing for it, at the first item the Python fold must take.
                i, prev = append_run(st, items, i, now, prev, columns, bodies)
                if i == n:
                    break
            item = items[i]
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
            h = bytearray(chain_hash(bytes(prev), seq, ets, kind.encode(), body_bytes))
            columns += (seq, ets, kind, body_bytes.decode(), prev, h)
            bodies.append(body)
            prev = h
            i += 1
        if st.open_obligation():
            err = LedgerError(f"batch ends too early: {st.open_obligation()}")
            err.index = len(items)
            raise err
        st.head = bytes(prev)
        return columns, WrittenEntries(columns, bodies)

    def _write_cache(self, st: LedgerState, items: list) -> None:
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
            if type(seq) is int and 1 <= seq <= I64:
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
            return verify_rows(conn, expect_head, _FAST_FOLD)
        finally:
            conn.close()
