"""Node logs: what a live node settled, as a log that anyone can replay (docs/replay.md,
"Node logs").

``wattmesh export-log`` (:func:`export_log`) writes a node's settled history as JSON Lines:

1. ``{"type":"community","community":{...}}``: the community file the node runs, as
   :meth:`Community.to_dict` gives it (its ledger's opening batch follows from it);
2. per settled interval, oldest first: every message of the set a majority certified for
   it (orders, cancels, batches and meter readings, each the canonical signed bytes the
   node stored and peers exchanged, docs/node.md "Messages"), in time order (an order's
   ``ts``, a reading's ``end``), then ``{"type":"close","interval":T,"certificate":{...},
   "node_close":"<hex>"}``: the certificate and the hash of the node's ``interval_close``.

Replaying one (:func:`replay_node_log`, which ``wattmesh replay`` runs when a log starts
with a community line) rebuilds the ledger from the community's opening batch and settles
every interval with the node's own :func:`.settle_interval.settle_interval`, from exactly
the messages of its block, so it reproduces the node's trades and ledger head. Nothing is
taken on trust: each message goes through the node's parser (:func:`.wire.parse`: form,
canonical bytes, signature, membership, market), must belong to its interval and pass the
set rule (:func:`.admission.check_set_rule`), the block's set digest must be the one the
certificate names, and the certificate must hold a majority of valid member votes. The
first line that breaks this stops the replay (:class:`NodeLogError`): a certified set is
all or nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from wattmesh.exchange.community_file import (
    Community,
    CommunityError,
    community_from_dict,
    load_community,
)
from wattmesh.exchange.node.admission import check_set_rule
from wattmesh.exchange.node.config import ledger_problem, load_node_config
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.exchange.node.settle_interval import STP, IntervalOutcome, settle_interval
from wattmesh.exchange.node.wire import (
    TOPIC_OF_KIND,
    Inbound,
    Refused,
    carried_records,
    parse,
    set_digest,
)
from wattmesh.exchange.replay.log_kind import CLOSE_LINE, COMMUNITY_LINE, is_node_log
from wattmesh.exchange.replay.rejects import as_rejects
from wattmesh.exchange.replay.replay import (
    IntervalStats,
    ReadingEvent,
    Reject,
    ReplayOptions,
    ReplayResult,
    Trades,
)
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.certificate import Certificate
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.ledger import Ledger, LedgerError
from wattmesh.settlement.records import Meter, Reading, RecordError

__all__ = [
    "ExportSummary",
    "LedgerTargetError",
    "NodeLogError",
    "NodeReplay",
    "export_log",
    "is_node_log",
    "replay_node_log",
    "write_node_log",
]

_IN_SETS = frozenset({"order", "cancel", "batch", "reading"})


class NodeLogError(WattmeshError, ValueError):
    """A node log that cannot be exported or replayed; the message names the line or the
    interval and what is wrong."""


class LedgerTargetError(NodeLogError):
    """The file a replay was asked to keep its rebuilt ledger in cannot be used."""


# -- writing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What :func:`write_node_log` wrote."""

    intervals: int
    messages: int
    first: int | None  # the first and last settled interval (ms)
    last: int | None
    head: str  # the node's ledger head (SEQ:HASH) after the last close written

    def line(self, path: str) -> str:
        """One line for a person: what was written where."""
        if self.first is None:
            return f"{path}: no settled interval yet (the community line only)"
        return (f"{path}: {self.intervals:,} settled intervals, {self.messages:,} messages; "
                f"the node's ledger head after them {self.head}")  # fmt: skip


def export_log(data_dir: str | os.PathLike[str], fp: IO[bytes]) -> ExportSummary:
    """Write the settled history of the node in ``data_dir`` to ``fp`` as a node log. The
    node may be running: its files are only read."""
    cfg = load_node_config(data_dir)
    community = load_community(cfg.community)
    problem = ledger_problem(cfg.ledger, community)
    if problem:
        raise NodeLogError(f"{cfg.ledger} does not open with {cfg.community}'s batch: {problem}")
    try:
        store = MessageStore.open_read_only(cfg.store)
    except Exception as exc:  # sqlite3.Error: a missing or foreign file
        raise NodeLogError(f"cannot read the node's messages {cfg.store}: {exc}") from None
    try:
        with Ledger.open(cfg.ledger, create=False) as ledger:
            return write_node_log(community, ledger, store, fp)
    finally:
        store.close()


def write_node_log(
    community: Community, ledger: Ledger, store: MessageStore, fp: IO[bytes]
) -> ExportSummary:
    """Write the community line, then each interval closed in ``ledger`` with its certified
    messages from ``store`` and its close line."""
    fp.write(canonical({"type": COMMUNITY_LINE, "community": community.to_dict()}) + b"\n")
    intervals = messages = 0
    first = last = None
    head = ledger.head_text()
    for close in ledger.entries(kind="interval_close"):
        t = close.body["interval"]
        cert = ledger.certificate(t)
        if cert is None:
            raise NodeLogError(f"interval {t} was closed without a certificate: there is no "
                               "certified set to export")  # fmt: skip
        ids = store.set_ids(t, cert.set) or store.ids(t)
        if set_digest(ids) != cert.set:
            raise NodeLogError(f"interval {t}: the node's message store no longer holds the "
                               f"certified set {cert.set[:16]}")  # fmt: skip
        held = store.messages(ids)
        if len(held) != len(ids):
            raise NodeLogError(f"interval {t}: {len(ids) - len(held)} messages of its "
                               "certified set are missing from the node's store")  # fmt: skip
        for _time, data in sorted((_time_of(data), data) for _id, _kind, data in held):
            fp.write(data + b"\n")
        line = {"type": CLOSE_LINE, "interval": t, "certificate": cert.to_dict(),
                "node_close": close.hash.hex()}  # fmt: skip
        fp.write(canonical(line) + b"\n")
        intervals += 1
        messages += len(held)
        first = t if first is None else first
        last = t
        head = f"{close.seq}:{close.hash.hex()}"
    return ExportSummary(intervals, messages, first, last, head)


def _time_of(data: bytes) -> tuple[int, bytes]:
    """Where a message goes in its block: by its ts (a reading: its end), then its bytes."""
    d = orjson.loads(data)
    return (d["end"] if d.get("type") == "reading" else d["ts"]), data


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeReplay:
    """A replayed node log: the replay's result (the same tables as an order log's), the
    rebuilt ledger's head, and how its closes compare with the node's."""

    result: ReplayResult
    community: Community
    entries: int
    head: str  # SEQ:HASH of the rebuilt ledger
    closes: int
    same_closes: int  # closes whose hash is the one the node wrote
    first_difference: int | None  # the first interval whose close differs, if any

    def line(self, ledger: str | None) -> str:
        """One line for a person: the rebuilt head, and whether it is the node's."""
        where = f"ledger {ledger}" if ledger else "rebuilt ledger"
        if self.first_difference is None:
            same = (f"every close is the node's ({self.closes:,} of {self.closes:,})"
                    if self.closes else "no interval was settled")  # fmt: skip
        else:
            same = (f"{self.same_closes:,} of {self.closes:,} closes are the node's; the "
                    f"first that differs is interval {self.first_difference}")  # fmt: skip
        return f"{where}: {self.entries:,} entries, head {self.head}; {same}"


def replay_node_log(
    log: str | os.PathLike[str],
    ledger_path: str | os.PathLike[str] | None = None,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> NodeReplay:
    """Replay the node log at ``log`` (see the module docstring); with ``ledger_path``
    (which must not exist, or be empty) keep the rebuilt ledger there, written whole or
    not at all. Raises :class:`NodeLogError` naming the first line that breaks the log."""
    target = Path(ledger_path) if ledger_path is not None else None
    if target is not None and target.exists() and (not target.is_file() or target.stat().st_size):
        raise LedgerTargetError(f"{target} exists and is not empty; a replay ledger starts at "
                                "genesis in a new file")  # fmt: skip
    where = target.parent if target is not None else None  # beside it: renamed at the end
    try:
        work = Path(tempfile.mkdtemp(prefix=".wattmesh-replay-", dir=where))
    except OSError as exc:
        raise LedgerTargetError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with Ledger.open(work / "ledger.sqlite") as ledger, open(log, "rb") as fp:
            run = _NodeReplay(ledger, str(log))
            run.consume(fp, on_progress)
            done = run.finish()
        if target is not None:
            os.replace(work / "ledger.sqlite", target)
        return done
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _NodeReplay:
    def __init__(self, ledger: Ledger, source: str) -> None:
        self.ledger = ledger
        self.source = source
        self.community: Community | None = None
        self.lineno = 0
        self.events = 0
        self.block: list[tuple[int, Inbound]] = []  # the messages since the last close
        self.block_ids: set[str] = set()
        self.lines: dict[str, int] = {}  # message or record id -> its line
        self.owners: list[str] = []  # members by peer id: handle -> owner
        self.handle: dict[str, int] = {}
        self.fills = 0  # trades settled so far
        self.outcomes: list[IntervalOutcome] = []
        self.rejects: list[Reject] = []
        self.readings: list[ReadingEvent] = []
        self.counts = {"orders": 0, "cancels": 0}
        self.same = 0
        self.first_difference: int | None = None
        self.first_ts: int | None = None

    def fail(self, problem: str) -> NodeLogError:
        return NodeLogError(f"line {self.lineno}: {problem}")

    def consume(self, fp: IO[bytes], on_progress: Callable[[int], None] | None) -> None:
        done = 0
        for raw in fp:
            self.lineno += 1
            done += len(raw)
            line = raw.rstrip(b"\r\n")
            if self.lineno == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue
            self.events += 1
            self.take(line)
            if on_progress is not None and self.block == []:
                on_progress(done)
        if self.community is None:
            raise NodeLogError(f"{self.source} has no community line: it is not a node log "
                               "(`wattmesh export-log` writes one)")  # fmt: skip
        if self.block:
            self.lineno = self.block[0][0]
            raise self.fail(
                f"{len(self.block)} messages from here on are followed by no close line: no "
                "certificate settles them (is the log cut short?)"
            )

    def take(self, line: bytes) -> None:
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise self.fail(f"not JSON: {exc}") from None
        kind = d.get("type") if type(d) is dict else None
        if self.community is None:
            if kind != COMMUNITY_LINE:
                raise self.fail("a node log starts with its community line")
            self.open(d)
        elif kind == COMMUNITY_LINE:
            raise self.fail("a second community line: one node log is one community")
        elif kind == CLOSE_LINE:
            self.close(d)
        elif kind in _IN_SETS:
            self.message(kind, line)
        else:
            known = sorted(_IN_SETS | {CLOSE_LINE})
            raise self.fail(f"type {kind!r:.40} is not a node log line (one of {known})")

    def open(self, d: dict[str, Any]) -> None:
        if d.keys() != {"type", "community"}:
            raise self.fail("the community line has type and community")
        try:
            self.community = community_from_dict(d["community"], f"line {self.lineno}")
        except CommunityError as exc:
            raise NodeLogError(str(exc)) from None
        c = self.community
        self.owners = sorted(m.peer_id for m in c.members)
        self.handle = {o: h for h, o in enumerate(self.owners)}
        self.ledger.append_batch(c.genesis_items(), ts=c.genesis_ts)

    def message(self, kind: str, line: bytes) -> None:
        assert self.community is not None
        try:
            inbound = parse(TOPIC_OF_KIND[kind], bytes(line), self.community)
        except Refused as exc:
            raise self.fail(f"{exc.reason}: {exc.detail}") from None
        if inbound.id in self.block_ids:
            raise self.fail(f"message {inbound.id[:16]} appears twice in one interval")
        self.block_ids.add(inbound.id)
        self.lines[inbound.id] = self.lineno
        for order in inbound.orders():
            self.lines.setdefault(order.id, self.lineno)
        if inbound.kind != "reading":
            self.first_ts = inbound.ts if self.first_ts is None else min(self.first_ts, inbound.ts)
        self.block.append((self.lineno, inbound))

    def close(self, d: dict[str, Any]) -> None:
        assert self.community is not None
        if d.keys() != {"type", "interval", "certificate", "node_close"}:
            raise self.fail("a close line has type, interval, certificate and node_close")
        t = d["interval"]
        if type(t) is not int or t < 0:
            raise self.fail(f"interval: must be integer milliseconds, got {t!r:.40}")
        try:
            cert = Certificate.from_dict(d["certificate"])
        except RecordError as exc:
            raise self.fail(f"certificate: {exc}") from None
        close_line = self.lineno
        for n, m in self.block:
            self.lineno = n
            belongs = m.interval if m.kind != "cancel" else t
            if belongs != t:
                raise self.fail(f"{m.kind} {m.id[:16]} is for interval {belongs}, but it comes "
                                f"before the close of {t}")  # fmt: skip
            try:
                check_set_rule(m, t)
            except Refused as exc:
                raise self.fail(f"{exc.reason}: {exc.detail}") from None
        self.lineno = close_line
        messages = [m for _n, m in self.block]
        held = set_digest(m.id for m in messages)
        if held != cert.set:
            raise self.fail(f"the {len(messages)} messages of interval {t} have set digest "
                            f"{held[:16]}, but its certificate certifies {cert.set[:16]}: these "
                            "are not the messages the majority settled")  # fmt: skip
        orders, cancels, readings = carried_records(messages)
        before = len(self.ledger)
        try:
            outcome = settle_interval(self.ledger, t, orders, cancels, readings,
                                      market=self.community.market, certificate=cert)  # fmt: skip
        except (ValueError, LedgerError) as exc:
            raise self.fail(f"interval {t} cannot be settled: {exc}") from None
        self.outcomes.append(outcome)
        self.counts["orders"] += len(orders)
        self.counts["cancels"] += len(cancels)
        for rid, text in outcome.refused:
            code, _sep, reason = text.partition(": ")
            n = self.lines.get(rid, close_line)
            self.rejects.append(Reject(n, code, reason, f"interval {t}: {rid}"))
        self.note_readings(before, len(self.outcomes) - 1)
        self.fills += len(outcome.trades)
        if outcome.digest == d["node_close"]:
            self.same += 1
        elif self.first_difference is None:
            self.first_difference = t
        self.block = []
        self.block_ids = set()

    def note_readings(self, before: int, clears_before: int) -> None:
        """A ReadingEvent per reading the interval applied, with its grid entry's energy."""
        assert self.community is not None
        entries = list(self.ledger.entries(since=before + 1))
        for k, e in enumerate(entries):
            if e.kind != "reading":
                continue
            reading = Reading.from_dict({"type": "reading", **e.body})
            grid = entries[k + 1] if k + 1 < len(entries) else None
            exported = imported = billed = 0
            if grid is not None and grid.body.get("reading") == e.seq:
                if grid.kind == "grid_export":
                    exported = grid.body["qty"]
                elif grid.kind == "grid_import":
                    imported, billed = grid.body["qty"], grid.body.get("billed", 0)
            owner = self.handle[self.community.meter_owner(reading.meter)]
            self.readings.append(ReadingEvent(self.fills, clears_before, e.ts, reading,
                                              owner, exported, imported, billed))  # fmt: skip

    def finish(self) -> NodeReplay:
        c = self.community
        assert c is not None
        owners, handle = self.owners, self.handle
        trades = Trades()
        intervals = []
        for o in self.outcomes:
            for tr in o.trades:
                trades.interval.append(o.interval)
                trades.ts.append(o.interval)
                trades.market.append(c.market)
                trades.buyer.append(handle[tr["buyer"]])
                trades.seller.append(handle[tr["seller"]])
                trades.bid.append(tr["bid"])
                trades.ask.append(tr["ask"])
                trades.qty.append(tr["qty"])
                trades.price.append(tr["price"])
            intervals.append(IntervalStats(
                o.interval, c.market, o.price, o.volume, len(o.trades), o.orders,
                o.executable_orders,
            ))  # fmt: skip
        balances = self.ledger.balances()
        opening = {handle[m.peer_id]: (m.energy, m.money, m.bmax) for m in c.members}
        closing = {h: (balances[o]["energy"], balances[o]["money"], opening[h][2])
                   for h, o in enumerate(owners)}  # fmt: skip
        meters = [Meter(s.meter, m.peer_id, s.max_power_w) for m in c.members for s in m.meters]
        options = ReplayOptions(mode="call", interval_ms=c.interval_ms, stp=STP,
                                verify_signatures=True, retail_price=c.retail_price,
                                feedin_price=c.feedin_price)  # fmt: skip
        result = ReplayResult(
            options=options,
            events=self.events,
            accepted={"accounts": len(owners), **self.counts, "meters": len(meters),
                      "readings": len(self.readings)},  # fmt: skip
            rejects=as_rejects(sorted(self.rejects)),
            trades=trades,
            intervals=intervals,
            owners=owners,
            opening=opening,
            closing=closing,
            first_ts=self.first_ts,
            last_ts=self.outcomes[-1].interval if self.outcomes else None,
            meters=sorted(meters, key=lambda m: m.meter),
            readings=self.readings,
        )
        return NodeReplay(result, c, len(self.ledger), self.ledger.head_text(),
                          len(self.outcomes), self.same, self.first_difference)  # fmt: skip
