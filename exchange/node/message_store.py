"""The messages a node accepted, by interval, and what it settled (``messages.sqlite``).

The ledger holds what was settled; this store holds what it was settled *from*: every
accepted order, cancel, batch and reading in its canonical bytes, filed under the interval
whose settlement uses it. Peers fetch from here when they reconcile or catch up, so a
message is written (and committed) before the node counts it as accepted. The store also
records, per settled interval, the set digest and the ``interval_close`` hash; the sets
this node voted for (so it can serve their ids) and its own votes (so that after a crash
it never signs another digest in a round it voted in); and the evidence of equivocation.

Of the unsettled intervals, memory holds what names each message (id, kind, signer, ts)
and, per interval, a compiled index from each held order's id to the messages that carry
it (:mod:`._order_index`: the id's 32 bytes and a message number, with no Python object
per order): 50 to 100 bytes per open order. Their bytes stay in SQLite, where they were
committed, and their orders are parsed again from those bytes when asked for (at
settlement, when a message is dropped, for the API's book): an order is not held as a
parsed object. Readings (a few per meter and interval) are held parsed. Settled intervals
are read back from SQLite when a peer asks.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

from wattmesh.exchange.node._order_index import OrderIndex
from wattmesh.exchange.node.wire import READ_BACK_KINDS, Inbound, set_digest

__all__ = ["IntervalRecord", "MessageStore"]


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    """What this node settled for one interval."""

    interval: int
    set_digest: str
    close: str  # hex hash of the interval_close entry
    seq: int  # its ledger seq
    disputed: bool


class _Named(NamedTuple):
    """What names a held order, cancel or batch in memory; its bytes are in SQLite."""

    kind: str
    interval: int | None
    signer: str
    ts: int
    number: int  # in its interval's OrderIndex; 0 for a cancel (it carries no order)


def _inbound(message_id: str, named: _Named, data: bytes) -> Inbound:
    return Inbound.stored(named.kind, message_id, named.interval, named.signer, named.ts, data)


class _Open:
    """One unsettled interval in memory."""

    __slots__ = ("held", "orders", "numbered", "cancels")

    def __init__(self) -> None:
        # message id -> the message (a reading), or what names it (an order, cancel or
        # batch, whose bytes are read from SQLite when asked for); in the order held
        self.held: dict[str, Inbound | _Named] = {}
        # held order id -> the numbers of the messages that carry it: two copies can be
        # held at once (a certified set's, and a restart reloads what was held); an order
        # is held while some message carries it
        self.orders = OrderIndex()
        self.numbered: list[str | None] = []  # message id by number - 1 (None: removed)
        self.cancels: dict[str, list[str]] = {}  # order id -> the held cancels naming it


class MessageStore:
    """Accepted messages by interval, and settled-interval records. Open with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._open: dict[int, _Open] = {}  # unsettled interval -> what is held of it
        self._where: dict[str, int] = {}  # message id -> interval, for unsettled intervals

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> MessageStore:
        """Open (creating if needed) the store at ``path``."""
        p = Path(path)
        conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a process crash loses nothing committed
        # Mostly written, and read a whole interval at a time: 512 KiB of page cache, not
        # SQLite's 2 MiB, which a flood of batches fills (1.5 MB less at a node's peak).
        conn.execute("PRAGMA cache_size=-512")
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS "messages" ("id" TEXT PRIMARY KEY, "interval" INTEGER,
                                                 "kind" TEXT, "signer" TEXT, "data" BLOB);
            CREATE INDEX IF NOT EXISTS "idx_messages_interval" ON "messages" ("interval");
            CREATE TABLE IF NOT EXISTS "intervals" ("interval" INTEGER PRIMARY KEY,
                                                  "set_digest" TEXT, "close" TEXT,
                                                  "seq" INTEGER, "disputed" INTEGER);
            CREATE TABLE IF NOT EXISTS sets (interval INTEGER, digest TEXT, ids TEXT,
                                             PRIMARY KEY (interval, digest));
            CREATE TABLE IF NOT EXISTS own_votes (interval INTEGER, round INTEGER, data BLOB,
                                                  PRIMARY KEY (interval, round));
            CREATE TABLE IF NOT EXISTS equivocations (interval INTEGER, node TEXT,
                                                      round INTEGER, evidence TEXT,
                                                      PRIMARY KEY (interval, node, round));
            """
        )
        return cls(p, conn)

    @classmethod
    def open_read_only(cls, path: str | os.PathLike[str]) -> MessageStore:
        """Open an existing store for reading only (a running node may be writing it);
        sqlite3.Error if it cannot be opened or is not a store."""
        p = Path(path)
        if not p.is_file():
            raise sqlite3.OperationalError(f"no message store {p}")
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True,
                               check_same_thread=False)  # fmt: skip
        try:
            conn.execute("SELECT id, interval, kind, data FROM messages LIMIT 0")
            conn.execute("SELECT interval, digest, ids FROM sets LIMIT 0")
        except sqlite3.Error:
            conn.close()
            raise
        return cls(p, conn)

    def close(self) -> None:
        self.conn.close()

    # -- unsettled intervals, in memory --

    def load_open(self, after: int, reparse: Callable[[str, bytes], Inbound | None]) -> int:
        """Read back the messages of intervals after ``after`` (the last settled one) with
        ``reparse(kind, data) -> Inbound | None``; return how many were loaded."""
        n = 0
        rows = self.conn.execute(
            "SELECT interval, kind, data FROM messages WHERE interval > ? ORDER BY rowid",
            (after,),
        )
        for interval, kind, data in rows.fetchall():
            inbound = reparse(kind, data)
            if inbound is not None:
                self._remember(inbound, interval)
                n += 1
        return n

    def has(self, message_id: str) -> bool:
        """True if the message is held for an unsettled interval."""
        return message_id in self._where

    def order(self, order_id: str) -> tuple[str, int] | None:
        """(owner, interval) of an accepted order of an unsettled interval."""
        found = self._carrier_ids(order_id)
        if not found:
            return None
        # every copy is signed by the order's owner and filed under the order's interval
        interval = self._where[found[0]]
        return self._open[interval].held[found[0]].signer, interval

    def held(self, message_id: str) -> Inbound | None:
        """A held message of an unsettled interval."""
        interval = self._where.get(message_id)
        if interval is None:
            return None
        held = self._open[interval].held[message_id]
        if type(held) is Inbound:
            return held
        return _inbound(message_id, held, self._data(message_id))  # type: ignore[arg-type]

    def _data(self, message_id: str) -> bytes:
        (data,) = self.conn.execute(
            "SELECT data FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        return bytes(data)

    def carriers(self, order_id: str) -> list[Inbound]:
        """The held messages (orders, batches) that carry an order of an unsettled
        interval, in the order they were held."""
        return [self.held(i) for i in self._carrier_ids(order_id)]  # type: ignore[misc]

    def carriers_of(self, order_ids: list[str]) -> dict[str, list[Inbound]]:
        """:meth:`carriers` of each of ``order_ids`` that is held (the others are left
        out): one call for the orders of a message."""
        hits: dict[str, list[str]] = {}
        for o in self._open.values():
            for order_id, numbers in o.orders.find_all(order_ids).items():
                ids = [o.numbered[n - 1] for n in sorted(numbers)]
                hits.setdefault(order_id, []).extend(ids)  # type: ignore[arg-type]
        return {order_id: [self.held(i) for i in ids] for order_id, ids in hits.items()}  # type: ignore[misc]

    def _carrier_ids(self, order_id: str) -> list[str]:
        found: list[str] = []
        for o in self._open.values():  # the open intervals: a few
            numbers = o.orders.find(order_id)
            if numbers:
                found += [o.numbered[n - 1] for n in sorted(numbers)]  # type: ignore[misc]
        return found

    def cancels_of(self, order_id: str) -> list[str]:
        """The ids of the held cancels that name ``order_id``."""
        return [c for o in self._open.values() for c in o.cancels.get(order_id, ())]

    def add(self, inbound: Inbound, interval: int) -> bool:
        """Store ``inbound`` under ``interval`` (committed before this returns); False if
        it was already there."""
        if inbound.id in self._where:
            return False
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO messages (id, interval, kind, signer, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (inbound.id, interval, inbound.kind, inbound.signer, inbound.data),
        )
        if cur.rowcount == 0:  # held for a settled interval already
            return False
        self._remember(inbound, interval)
        return True

    def _remember(self, inbound: Inbound, interval: int) -> None:
        """Hold ``inbound`` (parsed: its orders are indexed without reading them again)."""
        o = self._open.get(interval)
        if o is None:
            o = self._open[interval] = _Open()
        mid = inbound.id
        kind = inbound.kind
        self._where[mid] = interval
        if kind not in READ_BACK_KINDS:
            o.held[mid] = inbound
            return
        number = 0
        orders = inbound.orders()
        if orders:
            o.numbered.append(mid)
            number = len(o.numbered)
            o.orders.add_all([order.id for order in orders], number)
        o.held[mid] = _Named(kind, inbound.interval, inbound.signer, inbound.ts, number)
        if kind == "cancel":
            o.cancels.setdefault(inbound.record.id, []).append(mid)  # type: ignore[union-attr]

    def remove(self, ids: Iterable[str]) -> None:
        """Drop held messages of unsettled intervals (pushed out of a member's budget, a
        later copy of an order, or left out of a certified set)."""
        for message_id in ids:
            inbound = self.held(message_id)  # its orders are read back: a removal is rare
            if inbound is None:
                continue
            interval = self._where.pop(message_id)
            o = self._open[interval]
            named = o.held.pop(message_id)
            if type(named) is _Named and named.number:
                for order in inbound.orders():
                    o.orders.discard(order.id, named.number)
                o.numbered[named.number - 1] = None
            if inbound.kind == "cancel":
                target = inbound.record.id  # type: ignore[union-attr]
                cancels = [i for i in o.cancels.get(target, ()) if i != message_id]
                if cancels:
                    o.cancels[target] = cancels
                else:
                    o.cancels.pop(target, None)
            self.conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def open_intervals(self) -> list[int]:
        """The unsettled intervals with messages held in memory, ascending."""
        return sorted(self._open)

    def pending(
        self, interval: int, *, signer: str | None = None, kinds: tuple[str, ...] | None = None
    ) -> list[Inbound]:
        """The messages held for unsettled ``interval``, in the order they were held; with
        ``signer`` or ``kinds``, only those signed by it or of those kinds, chosen before
        any is read back (a household's own orders, a meter's readings: parsing every
        open order of a flood for them took a second of the node's event loop)."""
        o = self._open.get(interval)
        if o is None:
            return []
        chosen = [
            (i, m) for i, m in o.held.items()
            if (signer is None or m.signer == signer) and (kinds is None or m.kind in kinds)
        ]  # fmt: skip
        named = [i for i, m in chosen if type(m) is _Named]
        if len(named) == len(o.held):  # every message of the interval: one read of it
            rows = self.conn.execute(
                "SELECT id, data FROM messages WHERE interval = ?", (interval,)
            )
            data = {i: bytes(d) for i, d in rows}
        else:
            data = {i: self._data(i) for i in named}
        return [m if type(m) is Inbound else _inbound(i, m, data[i]) for i, m in chosen]

    def index_bytes(self) -> int:
        """The bytes the indexes of held orders take, outside Python's allocator (so
        ``tracemalloc`` does not count them)."""
        return sum(o.orders.nbytes() for o in self._open.values())

    def forget(self, interval: int) -> None:
        """Drop the in-memory copy of a settled interval (SQLite keeps it)."""
        o = self._open.pop(interval, None)
        if o is not None:
            for message_id in o.held:
                self._where.pop(message_id, None)
        # The interval's pages are cold now: give back SQLite's page cache (up to 512 KiB,
        # filled by a flood's inserts and by deleting what the budget pushed out).
        self.conn.execute("PRAGMA shrink_memory")

    # -- any interval, from SQLite --

    def ids(self, interval: int) -> list[str]:
        """Ids of the messages held for ``interval``, sorted."""
        o = self._open.get(interval)
        if o is not None:
            return sorted(o.held)
        rows = self.conn.execute("SELECT id FROM messages WHERE interval = ?", (interval,))
        return sorted(i for (i,) in rows)

    def digest(self, interval: int) -> str:
        """The set digest of ``interval`` as held now."""
        return set_digest(self.ids(interval))

    def messages(self, ids: Iterable[str]) -> list[tuple[str, str, bytes]]:
        """(id, kind, canonical bytes) of the held messages among ``ids``, in their order."""
        wanted = list(ids)
        found: dict[str, tuple[str, bytes]] = {}
        for k in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
            chunk = wanted[k : k + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT id, kind, data FROM messages WHERE id IN ({marks})", chunk
            )
            for message_id, kind, data in rows:
                found[message_id] = (kind, bytes(data))
        return [(i, *found[i]) for i in wanted if i in found]

    # -- votes and the sets they name --

    def save_set(self, interval: int, ids: list[str]) -> str:
        """Keep the id list of a set this node votes for or settles; return its digest."""
        digest = set_digest(ids)
        self.conn.execute(
            "INSERT OR IGNORE INTO sets (interval, digest, ids) VALUES (?, ?, ?)",
            (interval, digest, orjson.dumps(sorted(ids)).decode()),
        )
        return digest

    def set_ids(self, interval: int, digest: str) -> list[str] | None:
        """The ids of a set kept with :meth:`save_set`, or None."""
        row = self.conn.execute(
            "SELECT ids FROM sets WHERE interval = ? AND digest = ?", (interval, digest)
        ).fetchone()
        return None if row is None else orjson.loads(row[0])

    def save_own_vote(self, interval: int, round_: int, data: bytes) -> None:
        """Record our own signed vote, synced to disk before it returns: lost in a power
        cut after being published, a restart could sign another digest in its round."""
        self.conn.execute("PRAGMA synchronous=FULL")
        try:
            self.conn.execute(
                "INSERT INTO own_votes (interval, round, data) VALUES (?, ?, ?)",
                (interval, round_, data),
            )
        finally:
            self.conn.execute("PRAGMA synchronous=NORMAL")

    def own_votes(self, after: int) -> list[bytes]:
        """Our own votes for intervals after ``after``."""
        rows = self.conn.execute(
            "SELECT data FROM own_votes WHERE interval > ? ORDER BY interval, round", (after,)
        )
        return [bytes(d) for (d,) in rows]

    def save_equivocation(self, interval: int, node: str, round_: int, evidence: dict) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO equivocations (interval, node, round, evidence) "
            "VALUES (?, ?, ?, ?)",
            (interval, node, round_, orjson.dumps(evidence).decode()),
        )

    def equivocations(self) -> list[dict]:
        """The evidence of every equivocation seen: both signed votes."""
        rows = self.conn.execute("SELECT evidence FROM equivocations ORDER BY interval, node")
        return [orjson.loads(e) for (e,) in rows]

    # -- settled intervals --

    def mark_settled(self, record: IntervalRecord) -> None:
        """Record what was settled for an interval (once; the ledger is the authority)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO intervals (interval, set_digest, close, seq, disputed) "
            "VALUES (?, ?, ?, ?, ?)",
            (record.interval, record.set_digest, record.close, record.seq, int(record.disputed)),
        )

    def settled(self, interval: int) -> IntervalRecord | None:
        """What was settled for ``interval``, if anything."""
        row = self.conn.execute(
            "SELECT interval, set_digest, close, seq, disputed FROM intervals WHERE interval = ?",
            (interval,),
        ).fetchone()
        if row is None:
            return None
        return IntervalRecord(row[0], row[1], row[2], row[3], bool(row[4]))
