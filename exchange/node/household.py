"""A household's node: gossip, interval settlement, reconciliation, agreement (docs/node.md).

One :class:`HouseholdNode` runs under trio for as long as its :meth:`run` does:

- it gossips on the community's three topics (orders, readings, interval digests) through
  :mod:`.p2p`, and accepts a message only through :class:`.admission.Admission`, writing
  it to the :class:`.message_store.MessageStore` before counting it accepted;
- after each interval's gate plus the grace period it gathers the interval's set from
  the members it reaches (:mod:`.sync`), signs a vote for it and gossips the vote; it
  settles the interval only from a set that a strict majority of members certified
  (:mod:`.quorum`), fetching that set if it lacks it, into the ledger
  (:func:`.settle_interval.settle_interval`: readings, call auction, trades, close, with
  the certificate stored beside the close), then gossips its :class:`.wire.IntervalDigest`;
- a node that cannot reach a majority settles nothing and says so in its status;
- on start it settles, in order, every interval it missed, from their certificates;
- optionally its meter (simulated, or a real one read live: meters/live.py) publishes a
  signed reading after each settlement (covering everything since its last applied
  reading; nothing while the meter is in fault), and the Energo threshold bot posts the
  household's orders;
- it tells its :attr:`~HouseholdNode.listeners` what happens (:data:`EVENTS`): the HTTP
  API's event stream is one of them (exchange/api).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import trio

from wattmesh.agents.threshold import ThresholdAgent
from wattmesh.exchange.atomic_file import write_atomic
from wattmesh.exchange.clock import open_interval
from wattmesh.exchange.community_file import Community
from wattmesh.exchange.node import sync
from wattmesh.exchange.node.admission import Admission
from wattmesh.exchange.node.config import BotConfig, MeterConfig
from wattmesh.exchange.node.message_store import IntervalRecord, MessageStore
from wattmesh.exchange.node.p2p import Message, P2PNode, open_node
from wattmesh.exchange.node.quorum import VoteBook
from wattmesh.exchange.node.settle_interval import IntervalOutcome, settle_interval
from wattmesh.exchange.node.wire import (
    DIGESTS,
    ORDERS,
    READINGS,
    TOPIC_OF_KIND,
    Batch,
    Inbound,
    IntervalDigest,
    Refused,
    carried_records,
    parse,
    set_digest,
    topics,
)
from wattmesh.exchange.units import interval_text
from wattmesh.matching import BID
from wattmesh.meters.measurement import RegisterSample
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.certificate import Certificate, IntervalVote, majority
from wattmesh.settlement.keys import Ed25519PrivateKey, peer_id_of
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.records import Reading

if TYPE_CHECKING:
    from wattmesh.meters.live import MeterFault, MeterSource

__all__ = ["EVENTS", "HouseholdNode", "NodeStatus"]

# What a node tells its listeners, with the data of each (docs/api.md, "The event stream").
EVENTS = (
    "interval-settled",  # interval, price, volume, trades, digest, fills (the household's)
    "own-accepted",  # kind, id, interval, orders, cancels: our own message (an order,
    # batch, cancel or reading): its id, the ids of the orders it carries and cancels
    "own-refused",  # kind, code, message: our own message, refused by our own admission
    "book-changed",  # interval: an order or cancel for it was accepted (anyone's)
    "peer-joined",  # peer
    "peer-left",  # peer
    "dispute",  # interval, node, round: a member signed two sets in one round
)

logger = logging.getLogger("wattmesh.node")


@dataclass
class NodeStatus:
    """What the node has done so far; written to ``status.json`` after every interval."""

    peer_id: str
    addrs: list[str] = field(default_factory=list)
    settled_through: int | None = None  # the last settled interval
    settled: int = 0  # intervals settled by this process
    disputed: list[int] = field(default_factory=list)  # intervals a member equivocated in
    equivocations: list[dict[str, Any]] = field(default_factory=list)  # interval, node, round
    # while an interval waits for its certificate: interval, round, reachable, members, need
    waiting: dict[str, Any] | None = None
    agreements: int = 0  # peer digests equal to ours
    mismatched: list[int] = field(default_factory=list)  # intervals a peer's close differs in
    refusals: dict[str, int] = field(default_factory=dict)
    # transport counts by reason: malformed frames by protocol, failed sync requests
    transport: dict[str, int] = field(default_factory=dict)
    peers: int = 0
    last: dict[str, Any] = field(default_factory=dict)  # the last interval's outcome
    # the meter: source, state ok/fault/off, reason, message, since, last sample and reading
    meter: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class HouseholdNode:
    """One household's node. Build it with its parts, then ``await node.run(...)``."""

    def __init__(
        self,
        community: Community,
        key: Ed25519PrivateKey,
        ledger: Ledger,
        store: MessageStore,
        *,
        data_dir: Path | None = None,
        bot: BotConfig | None = None,
        meter: MeterConfig | None = None,
        meter_key: Ed25519PrivateKey | None = None,
        drop: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        self.community = community
        self.key = key
        self.peer_id = peer_id_of(key)
        self.ledger = ledger
        self.store = store
        self.data_dir = data_dir
        self.topics = topics(community)
        self.sync_protocol = f"/wattmesh/{community.id[:16]}/sync/1.0.0"
        self.admission = Admission(community, store, ledger.meter_seq, community.now_ms)
        self.votes: VoteBook = self.admission.votes
        self._vote_arrived = trio.Event()
        # A test hook: drop(topic kind, data) -> True loses that gossip message on arrival,
        # as a network would, so reconciliation has something to recover.
        self._drop = drop
        # Called with every message accepted (gossip, own or fetched): benchmarks time it.
        self.on_accept: Callable[[Inbound], None] | None = None
        # (kind, data) -> what parse() gave, so the validator, the handler and submit()
        # parse and check the signature of a message once; time and state are checked anew.
        self._validated: dict[tuple[str, bytes], Inbound] = {}
        self._nursery: trio.Nursery | None = None
        self.status = NodeStatus(self.peer_id)
        for evidence in store.equivocations():
            self._show_equivocation(evidence)
        after = ledger.last_interval()
        for data in store.own_votes(-1 if after is None else after):
            # Our votes survive a crash, so we never sign a second digest in a round.
            try:
                self.votes.add(parse(DIGESTS, data, community).record)  # type: ignore[arg-type]
            except (Refused, ValueError) as exc:  # e.g. the community file changed
                logger.warning("own vote no longer parses (%s); ignored", exc)
        self.closes: dict[int, tuple[str, int]] = {
            e.body["interval"]: (e.hash.hex(), e.seq) for e in ledger.entries(kind="interval_close")
        }
        self.status.settled_through = ledger.last_interval()
        self.outcomes: list[IntervalOutcome] = []  # settled by this process, in order
        self.settled_event = trio.Event()
        self.p2p: P2PNode | None = None
        # Called with (event, data) for each of EVENTS; a listener must not block.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.bot_config = bot if bot is not None else BotConfig()
        self.bot = _Bot(self, bot) if bot is not None and bot.enabled else None
        self.meter = None
        if meter_key is not None and (meter is None or meter.source != "none"):
            self.meter = _Meter(self, meter or MeterConfig("simulated"), meter_key)
        loaded = store.load_open(self.next_unsettled() - community.interval_ms, self._reparse)
        if loaded:
            logger.info("reloaded %d accepted messages of unsettled intervals", loaded)
            for t in store.open_intervals():  # their budgets, as spent before the restart
                for inbound in store.pending(t):
                    if not store.has(inbound.id):
                        continue  # pushed out by one spent before it
                    try:
                        self.admission.spend(inbound, t)
                    except Refused:  # the community file's budget shrank under the store
                        self.admission.drop([inbound.id], t)

    # -- running --

    async def run(
        self,
        listen: str,
        bootstrap: tuple[str, ...] = (),
        *,
        stop: trio.Event | None = None,
        task_status: trio.TaskStatus[HouseholdNode] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until ``stop`` is set (or the task is cancelled); peers see the node leave."""
        kinds = {self.topics[k]: k for k in (ORDERS, READINGS, DIGESTS)}
        async with open_node(
            self.key,
            listen,
            topics=list(kinds),
            validators={t: self._validator(k) for t, k in kinds.items()},
            handlers={t: self._handler(k) for t, k in kinds.items()},
        ) as p2p:
            self.p2p = p2p
            self.status.addrs = p2p.addrs
            p2p.set_handler(self.sync_protocol, self._serve)
            self._write_status()
            logger.info("node %s listening on %s", self.peer_id, " ".join(p2p.addrs))
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._keep_connected, bootstrap)
                nursery.start_soon(self._settle_loop)
                if self.meter is not None:
                    self.meter.on = self.meter.registered()
                    if self.meter.on:
                        nursery.start_soon(self.meter.watch)
                if self.bot is not None:
                    nursery.start_soon(self.bot.act)
                task_status.started(self)
                if stop is None:
                    await trio.sleep_forever()
                await stop.wait()
                nursery.cancel_scope.cancel()
        logger.info("node %s stopped", self.peer_id)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Tell every listener that ``event`` (one of :data:`EVENTS`) happened."""
        for listener in self.listeners:
            listener(event, data)

    def set_bot(self, config: BotConfig) -> None:
        """Change the threshold bot at run time: new prices and thresholds, or off. The
        changed bot posts from the next open interval the bot has not posted for yet (an
        interval gets one set of its orders, however often it is changed); turned off,
        it posts nothing more, and what it posted stays for its interval."""
        old = self.bot
        self.bot_config = config
        self.bot = _Bot(self, config) if config.enabled else None
        if self.bot is not None and old is not None:
            self.bot.posted_for = old.posted_for
        if self.bot is not None and self._nursery is not None:
            self._nursery.start_soon(self.bot.act)

    async def _keep_connected(self, bootstrap: tuple[str, ...]) -> None:
        """Dial the bootstrap peers, and again whenever a connection is lost."""
        assert self.p2p is not None
        p2p = self.p2p
        known: set[str] = set()
        while True:
            now = set(p2p.peers)
            for peer in sorted(now - known):
                self.emit("peer-joined", {"peer": peer})
            for peer in sorted(known - now):
                self.emit("peer-left", {"peer": peer})
            known = now
            missing = [a for a in bootstrap if a.rsplit("/p2p/", 1)[-1] not in p2p.peers]

            async def dial(addr: str) -> None:
                try:
                    await p2p.connect(addr, timeout=5)
                    logger.info("connected to %s", addr)
                except Exception as exc:  # noqa: BLE001 (unreachable peers are normal)
                    logger.debug("cannot reach %s: %r", addr, exc)

            async with trio.open_nursery() as nursery:
                for addr in missing:
                    nursery.start_soon(dial, addr)
            self.status.peers = len(p2p.peers)
            await trio.sleep(1.0 if missing else 3.0)

    # -- gossip in --

    def _validator(self, kind: str) -> Callable[[str, bytes], bool]:
        def check(_sender: str, data: bytes) -> bool:
            if self._drop is not None and self._drop(kind, data):
                return False  # simulated loss: neither accepted nor forwarded
            try:
                inbound = self.admission.gossip(kind, data, self._validated.get((kind, data)))
            except Refused as exc:
                self.admission.refuse(exc, "gossip")
                return False
            if len(self._validated) > 4096:
                self._validated.pop(next(iter(self._validated)))
            self._validated[(kind, data)] = inbound
            return True

        return check

    def _handler(self, kind: str) -> Callable[[Message], Any]:
        async def handle(msg: Message) -> None:
            self._accept(kind, msg.data)

        return handle

    def _accept(self, kind: str, data: bytes) -> Inbound | None:
        """Accept a validated gossip message (checked again: time moved since)."""
        parsed = self._validated.pop((kind, data), None)
        try:
            inbound = self.admission.gossip(kind, data, parsed)
        except Refused as exc:
            if exc.reason != "duplicate":  # the validator counted it already
                self.admission.refuse(exc, "gossip")
            return None
        if inbound.kind == "interval_vote":
            self.take_vote(inbound.record)  # type: ignore[arg-type]
        elif inbound.kind == "interval_digest":
            self._on_digest(inbound)
        else:
            self.keep(inbound, self.admission.interval_of(inbound))
        return inbound

    def keep(self, inbound: Inbound, interval: int) -> bool:
        """Store an admitted message under ``interval`` and count it against its member's
        budget, dropping what it pushes out; False if it was held already."""
        if not self.admission.keep(inbound, interval):
            return False
        if self.on_accept is not None:
            self.on_accept(inbound)
        if inbound.kind in ("order", "batch", "cancel"):
            self.emit("book-changed", {"interval": interval})
        return True

    async def submit(self, kind: str, data: bytes) -> Inbound:
        """Publish our own message (canonical bytes) and accept it; Refused if our own
        checks refuse it."""
        assert self.p2p is not None
        try:
            inbound = self.admission.gossip(kind, data)
        except Refused as exc:
            self.admission.refuse(exc, "own")
            self.emit("own-refused", {"kind": kind, "code": exc.reason, "message": exc.detail})
            raise
        self._validated[(kind, data)] = inbound
        await self.p2p.publish(self.topics[kind], data)
        accepted = self._accept(kind, data)
        inbound = accepted if accepted is not None else inbound
        self.emit("own-accepted", {"kind": inbound.kind, "id": inbound.id,
                                   "interval": inbound.interval,
                                   "orders": [o.id for o in inbound.orders()],
                                   "cancels": list(inbound.cancelled())})  # fmt: skip
        return inbound

    def _reparse(self, kind: str, data: bytes) -> Inbound | None:
        try:
            return parse(TOPIC_OF_KIND[kind], data, self.community)
        except Refused as exc:  # the community file changed under the store: say so
            logger.warning("stored %s no longer parses (%s); ignored", kind, exc)
            return None

    # -- intervals --

    def next_unsettled(self) -> int:
        """The first interval not yet in the ledger."""
        last = self.ledger.last_interval()
        c = self.community
        return c.start_ms if last is None else last + c.interval_ms

    async def _sleep_until(self, community_ms: int) -> None:
        while True:
            ahead = community_ms - self.community.now_ms()
            if ahead <= 0:
                return
            await trio.sleep(self.community.wall_seconds(ahead))

    async def _settle_loop(self) -> None:
        c = self.community
        t = self.next_unsettled()
        while True:
            await self._sleep_until(t + c.grace_ms)
            certificate, ids = await self._certify(t)
            outcome, record = self._settle(t, ids, certificate)
            await self._publish_digest(record)
            self._report(outcome)
            if self.meter is not None and t + c.interval_ms > c.now_ms():
                await self.meter.read(t)  # the next gate is still ahead: the reading makes it
            if self.bot is not None:
                self.bot.filled(outcome)
                await self.bot.act()
            t += c.interval_ms

    # -- certificates --

    def _round_seconds(self) -> float:
        """How long a vote round waits for a certificate before the node may vote again."""
        c = self.community
        return max(1.0, min(5.0, c.wall_seconds(c.interval_ms) / 10))

    async def _certify(self, t: int) -> tuple[Certificate, list[str]]:
        """Wait for a certificate of ``t`` and the set it certifies, voting as the quorum
        rule allows (:meth:`.quorum.VoteBook.next_vote`); return both."""
        async with trio.open_nursery() as nursery:
            # Votes lost by gossip (or cast while we were away) come by pulling; a slow
            # member's answer never holds up the others' or the loop below.
            nursery.start_soon(self._pull_votes, t)
            found = await self._certified(t)
            nursery.cancel_scope.cancel()
        return found

    async def _pull_votes(self, t: int) -> None:
        # Gossip brings nearly every vote; a pull that brings nothing new waits twice as
        # long before the next (up to two rounds), so 24 members do not ask each other
        # for the same votes twice a second.
        least = max(0.5, self._round_seconds() / 2)
        every = least
        while True:
            if await sync.pull_votes(self, t):
                self._vote_arrived.set()
                every = least
            else:
                every = min(2 * every, 2 * self._round_seconds())
            await trio.sleep(every)

    async def _certified(self, t: int) -> tuple[Certificate, list[str]]:
        c = self.community
        if t + c.interval_ms < c.now_ms():  # catching up: the first pull may bring it
            with trio.move_on_after(self._round_seconds()):
                await self._vote_arrived.wait()
        voted_at = trio.current_time()
        gathered = False
        unavailable: set[str] = set()  # sets we could not fetch: not voted when free
        while True:
            cert = self.votes.certificate(t)
            if cert is not None:
                ids = await sync.fetch_certified(self, t, cert.set, [v.node for v in cert.votes])
                if ids is not None:
                    self._waiting_over(t)
                    return cert, ids
            else:
                if not gathered:
                    await sync.gather(self, t)
                    gathered = True
                advance = trio.current_time() - voted_at > self._round_seconds()
                choice = self.votes.next_vote(
                    t, self.peer_id, self.store.digest(t), advance, unavailable
                )
                if (
                    choice is not None
                    and choice[0] > 0
                    and choice[0] not in self.votes.voted(t, self.peer_id)
                ):
                    # A new round: gather again first (asking every member afresh).
                    await sync.gather(self, t)
                    choice = self.votes.next_vote(
                        t, self.peer_id, self.store.digest(t), True, unavailable
                    )
                if choice is not None:
                    if await self._vote(t, *choice):
                        voted_at = trio.current_time()
                    else:
                        unavailable.add(choice[1])
            self._show_waiting(t)
            with trio.move_on_after(self._round_seconds() / 2):
                await self._vote_arrived.wait()
            self._vote_arrived = trio.Event()

    async def _vote(self, t: int, round_: int, digest: str) -> bool:
        """Sign, keep and gossip our vote for set ``digest`` of ``t`` in ``round_``; False
        if we cannot hold that set yet (it is another member's, not served to us yet)."""
        if digest == self.store.digest(t):
            ids = self.store.ids(t)
        else:
            ids = await sync.fetch_certified(self, t, digest, self.votes.voters(t, digest))
            if ids is None:
                return False
        self.store.save_set(t, ids)
        vote = IntervalVote(self.peer_id, t, round_, digest, self.community.now_ms())
        data = canonical(vote.signed(self.key).to_dict())
        signed = parse(DIGESTS, data, self.community).record  # checked before it is kept
        self.store.save_own_vote(t, round_, data)  # on disk before anyone can see it
        try:
            await self.p2p.publish(self.topics[DIGESTS], data)  # type: ignore[union-attr]
        except ValueError as exc:  # peers pull it instead
            logger.debug("vote of %d not gossiped: %s", t, exc)
        self._validated.pop((DIGESTS, data), None)
        self.votes.add(signed)  # type: ignore[arg-type]
        logger.debug("interval %d: voted set %s in round %d", t, digest[:16], round_)
        return True

    def take_vote(self, vote: IntervalVote) -> None:
        """Hold a member's verified vote; record an equivocation it proves."""
        c = self.community
        if vote.interval < self.next_unsettled() or vote.interval % c.interval_ms:
            return  # settled (its certificate is in the ledger), or no interval at all
        if self.votes.add(vote) == "equivocation":
            ev = self.votes.equivocations[-1]
            self.store.save_equivocation(vote.interval, vote.node, vote.round, ev.to_dict())
            self._show_equivocation(ev.to_dict())
            logger.warning("interval %s (%d): member %s equivocated in round %d: it signed "
                           "sets %s and %s", self._when(vote.interval), vote.interval,
                           self._who(vote.node), vote.round, ev.first.set[:16],
                           ev.second.set[:16])  # fmt: skip
        self._vote_arrived.set()

    def _show_equivocation(self, evidence: dict[str, Any]) -> None:
        s = self.status
        entry = {k: evidence[k] for k in ("interval", "node", "round")}
        if entry not in s.equivocations:
            s.equivocations.append(entry)
            self.emit("dispute", entry)
        if evidence["interval"] not in s.disputed:
            s.disputed.append(evidence["interval"])
            s.disputed.sort()

    def reachable(self, t: int) -> int:
        """The members we reach for interval ``t``: ourselves, the members' nodes we are
        connected to, and the members whose votes of ``t`` reached us through others."""
        near = set(sync.reachable_members(self)) if self.p2p is not None else set()
        return len(near | {v.node for v in self.votes.votes(t)} | {self.peer_id})

    def _show_waiting(self, t: int) -> None:
        n = len(self.community.members)
        need = majority(n)
        reach = self.reachable(t)
        rounds = self.votes.rounds(t)
        waiting = {"interval": t, "round": rounds[-1] if rounds else 0, "reachable": reach,
                   "members": n, "need": need}  # fmt: skip
        was = self.status.waiting
        self.status.waiting = waiting
        short = reach < need
        if was is None or was["interval"] != t or (was["reachable"] < need) != short:
            if short:
                logger.warning("interval %s (%d): waiting for a quorum: %d of %d members "
                               "reachable (%d needed)", self._when(t), t, reach, n,
                               need)  # fmt: skip
            else:
                logger.info("interval %s (%d): waiting for a certificate (%d of %d members "
                            "reachable)", self._when(t), t, reach, n)  # fmt: skip
            self._write_status()

    def _waiting_over(self, t: int) -> None:
        if self.status.waiting is not None:
            logger.info("interval %s (%d): certified", self._when(t), t)
        self.status.waiting = None

    def _settle(
        self, t: int, ids: list[str], certificate: Certificate
    ) -> tuple[IntervalOutcome, IntervalRecord]:
        """Settle ``t`` from exactly the certified set ``ids``."""
        only = set(ids)
        held = self.store.pending(t)
        pending = [m for m in held if m.id in only]
        # What the majority did not certify is not part of t: forget it everywhere.
        self.store.remove([m.id for m in held if m.id not in only])
        orders, cancels, readings = carried_records(pending)
        set_dig = set_digest(m.id for m in pending)
        if set_dig != certificate.set:  # fetch_certified holds them all: a bug if not
            raise RuntimeError(f"interval {t}: the held set is not the certified one")
        outcome = settle_interval(
            self.ledger, t, orders, cancels, readings, market=self.community.market,
            certificate=certificate,
        )  # fmt: skip
        self.closes[t] = (outcome.digest, outcome.close.seq)
        record = IntervalRecord(t, set_dig, outcome.digest, outcome.close.seq, disputed=False)
        self.store.mark_settled(record)
        self.store.forget(t)
        self.admission.forget(t)
        self.votes.forget(t)
        self.outcomes.append(outcome)
        for key, digest in list(self.admission.digests.items()):
            if key[0] == t:
                self._compare(digest)
            elif key[0] < t - 8 * self.community.interval_ms:
                del self.admission.digests[key]  # compared long ago
        return outcome, record

    async def _publish_digest(self, record: IntervalRecord) -> None:
        assert self.p2p is not None
        t = record.interval
        digest = IntervalDigest(
            self.peer_id, t, record.set_digest, record.close, record.seq, self.community.now_ms()
        ).signed(self.key)
        data = canonical(digest.to_dict())
        try:
            await self.p2p.publish(self.topics[DIGESTS], data)
        except ValueError as exc:  # e.g. our clock says the interval is not gated yet
            logger.warning("digest of %d not published: %s", t, exc)
        # Our own messages are not delivered back to us, so no handler takes this entry.
        self._validated.pop((DIGESTS, data), None)

    def _on_digest(self, inbound: Inbound) -> None:
        self.admission.digests[(inbound.interval, inbound.signer)] = inbound  # type: ignore[index]
        if inbound.interval in self.closes:
            self._compare(inbound)

    def _compare(self, inbound: Inbound) -> None:
        """Count a peer's digest of a settled interval. A different close is logged and
        listed, never a dispute: only a certificate decides a set (disputes are
        equivocations), so a different close means a different ledger before it."""
        digest: IntervalDigest = inbound.record  # type: ignore[assignment]
        t = digest.interval
        close = self.closes[t][0]
        if digest.close == close:
            self.status.agreements += 1
            return
        logger.warning("interval %s (%d): %s reports close %s (set %s), ours is %s",
                       self._when(t), t, self._who(digest.node), digest.close[:16],
                       digest.set[:16], close[:16])  # fmt: skip
        if t not in self.status.mismatched:
            self.status.mismatched.append(t)

    def _report(self, outcome: IntervalOutcome) -> None:
        s = self.status
        s.settled_through = outcome.interval
        s.settled += 1
        s.refusals = dict(self.admission.refusals)
        if self.p2p is not None:
            s.transport = {k: v for k, v in sorted(self.p2p.stats.items())
                           if k.startswith(("bad_frame:", "serve_error:"))}  # fmt: skip
        s.last = {
            "interval": outcome.interval,
            "price": outcome.price,
            "volume": outcome.volume,
            "trades": len(outcome.trades),
            "digest": outcome.digest,
        }
        if self.p2p is not None:
            s.peers = len(self.p2p.peers)
        price = "-" if outcome.price is None else f"{outcome.price / 1e6:.4f}/kWh"
        logger.info(
            "settled interval %d (%s): price %s, %d Wh in %d trades, %d readings, digest %s",
            outcome.interval, self._when(outcome.interval), price, outcome.volume,
            len(outcome.trades),
            outcome.readings_applied, outcome.digest[:16],
        )  # fmt: skip
        self._write_status()
        me = self.peer_id
        fills = [{"side": "bid" if t["buyer"] == me else "ask", "qty": t["qty"],
                  "price": t["price"], "order": t["bid"] if t["buyer"] == me else t["ask"]}
                 for t in outcome.trades if me in (t["buyer"], t["seller"])]  # fmt: skip
        self.emit("interval-settled", {**s.last, "fills": fills})
        self.settled_event.set()
        self.settled_event = trio.Event()

    def _when(self, t: int) -> str:
        return interval_text(t, self.community.interval_ms)

    def _who(self, peer: str) -> str:
        """A member as a person reads the log: its display name and peer id, or the id."""
        member = self.community.member(peer)
        return f"{member.name} ({peer})" if member is not None and member.name else peer

    def _write_status(self) -> None:
        if self.data_dir is None:
            return
        write_atomic(
            self.data_dir / "status.json",
            orjson.dumps(self.status.to_dict(), option=orjson.OPT_INDENT_2),
        )

    # -- the sync protocol, served --

    async def _serve(self, peer: str, request: bytes) -> bytes:
        return sync.serve(self, peer, request)


class _Bot:
    """The Energo threshold agent trading for the household from its ledger balance."""

    def __init__(self, node: HouseholdNode, config: BotConfig) -> None:
        self.node = node
        self.agent = ThresholdAgent(0, config.buy_price, config.sell_price, config.lower_wh,
                                    config.upper_wh)  # fmt: skip
        self.posted_for: set[int] = set()
        self.of_order: dict[str, int] = {}  # our order id -> the agent's order

    def filled(self, outcome: IntervalOutcome) -> None:
        for trade in outcome.trades:
            for side in ("bid", "ask"):
                oid = self.of_order.get(trade[side])  # an order may fill in several trades
                if oid is not None:
                    self.agent.filled(oid, trade["qty"])

    async def act(self) -> None:
        """Post the agent's open orders for the next open interval (once per interval)."""
        node = self.node
        c = node.community
        now = c.now_ms()
        target = open_interval(now, c.interval_ms)
        if target in self.posted_for or target < c.start_ms:
            return
        self.posted_for.add(target)
        energy = node.ledger.balances().get(node.peer_id, {}).get("energy", 0)
        self.agent.step(energy, now)
        self.of_order.clear()  # orders of earlier intervals are cleared and gone
        items = []
        for o in self.agent.open_orders():
            side = "bid" if o.side == BID else "ask"
            items.append({"market": c.market, "side": side, "price": o.price, "qty": o.qty})
        if not items:
            return
        batch = Batch.of(node.key, target, now, items)
        for order, o in zip(batch.orders, self.agent.open_orders(), strict=True):
            self.of_order[order.id] = o.oid
        try:
            await node.submit(ORDERS, batch.message())
        except (Refused, ValueError) as exc:
            logger.warning("bot orders for %d not posted: %s", target, exc)


class _Meter:
    """The household's meter: after each settled interval, one signed reading from its
    source (meters/live.py: simulated, or a real meter read live) over everything since
    its last reading. A source in fault publishes nothing; its state is in the status
    and logged once per change."""

    REGISTERS = "meter-registers.json"  # in the data dir: the registers at the last ends

    def __init__(self, node: HouseholdNode, config: MeterConfig, key: Ed25519PrivateKey) -> None:
        self.node = node
        self.config = config
        self.key = key
        self.meter = peer_id_of(key)
        self.source = _meter_source(node, config)
        self.on = True  # False when the community file does not register it to us
        self.fault: MeterFault | None = None  # as last reported
        self.since: int | None = None  # community ms of the last change of state
        self.published: dict[str, int] | None = None  # the last reading this process made
        self._saved: list[RegisterSample] = []
        self._load_registers()
        node.status.meter = self.show()

    def registered(self) -> bool:
        """Whether the community file registers this meter to the household (else it is
        off, and says so)."""
        if self.node.community.meter_owner(self.meter) == self.node.peer_id:
            return True
        logger.error("meter %s is not registered to this household; it stays off", self.meter)
        self.on = False
        self.node.status.meter = self.show()
        return False

    def show(self) -> dict[str, Any]:
        """The meter's part of the status."""
        f, s = self.fault, self.source.newest()
        if not self.on:
            state, reason, message = "off", "not-registered", "not registered to this household"
        else:
            state = "ok" if f is None else "fault"
            reason, message = (None, None) if f is None else (f.reason, f.message)
        sample = None if s is None else {"ts": s.ts, "produced_total": s.produced_total,
                                         "consumed_total": s.consumed_total}  # fmt: skip
        return {"source": self.config.source, "meter": self.meter, "state": state,
                "reason": reason, "message": message, "since": self.since, "sample": sample,
                "reading": self.published}  # fmt: skip

    async def watch(self) -> None:
        """Read the source, and report each change of its state, until cancelled."""
        c = self.node.community
        every = max(0.05, min(1.0, c.wall_seconds(c.interval_ms) / 20))
        self.since = c.now_ms()
        self.node.status.meter = self.show()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.source.run)
            while True:
                self.check()
                await trio.sleep(every)

    def check(self) -> None:
        """Take the source's fault; log it and rewrite the status when it changed."""
        fault, was = self.source.fault(), self.fault
        if (fault and fault.reason) == (was and was.reason):
            return  # a fault's message may change (a retry's error); its reason did not
        node = self.node
        self.fault, self.since = fault, node.community.now_ms()
        what = self.source.describe()
        if fault is not None:
            logger.warning("meter %s (%s): fault, %s: %s; no reading is published until it "
                           "clears", self.meter[:16], what, fault.reason,
                           fault.message)  # fmt: skip
        elif was is not None:
            logger.info("meter %s (%s): ok again (after %s); the next reading covers the gap",
                        self.meter[:16], what, was.reason)  # fmt: skip
        node.status.meter = self.show()
        node._write_status()

    def covered_until(self) -> int:
        """Where the meter's next reading starts: the end of its last reading the ledger
        applied, or of one still waiting in an open interval (the community's start when
        there is none)."""
        node = self.node
        end = max(node.ledger.meter_end(self.meter), node.community.start_ms)
        for t in node.store.open_intervals():
            for m in node.store.pending(t, signer=self.meter, kinds=("reading",)):
                end = max(end, m.record.end)  # type: ignore[union-attr]
        return end

    async def read(self, settled: int) -> None:
        """Publish one reading from where the last one ended up to ``settled``'s end of
        measurement (its gate): it lands in the next interval, still open. Whatever a
        node missed (down, or a reading the certified set left out) is in it: the
        meter's energy is never dropped. Nothing while the source is in fault or has no
        sample at or after the gate yet: the next reading covers this one's span too."""
        node = self.node
        c = node.community
        start, end = self.covered_until(), settled
        if end <= start or not self.on:
            return
        self.check()
        m = None if self.fault is not None else self.source.measure(start, end)
        if m is None:
            if self.fault is None:
                logger.debug("meter %s: no sample at or after %d yet; the next reading "
                             "covers [%d, %d)", self.meter[:16], end, start, end)  # fmt: skip
            return
        seq = (end - c.start_ms) // c.interval_ms
        reading = Reading(self.meter, start, end, m.produced, m.consumed, seq).signed(self.key)
        try:
            await node.submit(READINGS, canonical(reading.to_dict()))
        except (Refused, ValueError) as exc:
            logger.warning("reading %d not published: %s", seq, exc)
            return
        self.published = {"start": start, "end": end, "produced": m.produced,
                          "consumed": m.consumed, "seq": seq}  # fmt: skip
        self._save_registers(end)
        self.source.forget_before(node.ledger.meter_end(self.meter))
        node.status.meter = self.show()
        node._write_status()

    # The registers at the last few reading ends, kept on disk, so that a restarted node's
    # first reading counts from exactly where the last one ended (a real meter only).

    def _registers_file(self) -> Path | None:
        return None if self.node.data_dir is None else self.node.data_dir / self.REGISTERS

    def _load_registers(self) -> None:
        path = self._registers_file()
        if path is None or not path.exists():
            return
        try:
            doc = orjson.loads(path.read_bytes())
            if doc["meter"] != self.meter or doc["source"] != self.source.describe():
                return  # another meter's or another source's: they count differently
            saved = [RegisterSample(*map(_whole, r)) for r in doc["registers"]]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            logger.warning("%s ignored: %s", path, exc)
            return
        self._saved = saved
        self.source.seed(saved)

    def _save_registers(self, end: int) -> None:
        path = self._registers_file()
        at = self.source.register_at(end)
        if path is None or at is None:
            return
        self._saved = [s for s in self._saved if s.ts < end][-3:] + [at]
        doc = {"meter": self.meter, "source": self.source.describe(),
               "registers": [[s.ts, s.produced_total, s.consumed_total] for s in self._saved]}
        write_atomic(path, orjson.dumps(doc))  # fmt: skip


def _whole(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a whole, non-negative number")
    return value


def _meter_source(node: HouseholdNode, cfg: MeterConfig) -> MeterSource:
    """The source ``[meter]`` in node.toml names; its paths relative to the data dir."""
    from wattmesh.meters import live

    c = node.community
    base = node.data_dir if node.data_dir is not None else Path()
    poll_s = cfg.poll_ms / 1000
    if cfg.source == "dsmr":
        return live.DsmrSource(str(base / cfg.device), c.interval_ms, c.now_ms,
                               baudrate=cfg.baudrate, poll_s=poll_s)  # fmt: skip
    if cfg.source == "sunspec":
        return live.SunSpecSource(cfg.host, c.interval_ms, c.now_ms, port=cfg.port,
                                  unit=cfg.unit, poll_s=poll_s)  # fmt: skip
    if cfg.source == "csv":
        return live.CsvSource(str(base / cfg.path), c.interval_ms, c.now_ms, poll_s=poll_s)
    return live.SimulatedSource(c.start_ms, c.interval_ms, seed=cfg.seed, peak_w=cfg.peak_w,
                                annual_kwh=cfg.annual_kwh, backend=cfg.backend)  # fmt: skip
