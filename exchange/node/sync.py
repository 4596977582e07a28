"""The sync protocol: how members' nodes share an interval's set, votes and certificate.

Gossip alone loses messages (GossipSub is best effort: a full queue, a slow peer or a
mesh being repaired drops them), so nodes also ask each other over
request/response (:mod:`.p2p`). Four requests, JSON in, JSON out:

- ``{"op": "set", "interval": t}`` -> ``{"interval", "state", "set", "ids", "close"}``:
  the peer's message ids for ``t`` (sorted) and their digest; ``state`` is ``settled``
  (``close`` is then the hash of its interval_close entry) or ``open``;
- ``{"op": "get", "interval": t, "ids": [...]}`` -> ``{"messages": [[kind, text], ...],
  "rest": [...]}``: the canonical bytes of the messages it holds among ``ids`` (at most
  :data:`MAX_IDS_PER_GET` per request), up to :data:`MAX_ANSWER_BYTES` of them so the
  answer fits one frame; ``rest`` names the ones it holds but left for another request;
- ``{"op": "votes", "interval": t}`` -> ``{"votes": [text, ...], "certificate": ...}``:
  the signed votes it holds for ``t``, and once it has settled ``t`` the certificate it
  settled by;
- ``{"op": "ids", "interval": t, "set": digest}`` -> ``{"ids": [...] | null}``: the ids
  of a set it voted for or settled.

Before voting, a node *gathers* (:func:`gather`): it fetches from every reachable member
what that member holds of ``t`` and it lacks, each message passing the set rule
(:func:`.admission.check_set_rule`), until a round fetches nothing. While waiting for a
certificate it pulls votes (:func:`pull_votes`); once it holds one it fetches the certified
set (:func:`fetch_certified`) from the members that voted for it.

Only members' nodes take part, authenticated by the peer id their libp2p key proves: a
node asks only members, answers only members (anyone else's request is refused as
``not-member`` and its stream reset) and believes only members. Every answer is bounded:
at most :data:`MAX_SET_IDS` ids in a set, :data:`REQUEST_TIMEOUT_S` per request and
:data:`FETCH_DEADLINE_S` (or a quarter of an interval on a fast clock) for all of a
round's fetches. A member whose set is malformed or too large, or that does not serve the
messages its set names in time, is not asked again in that gathering, so a slow or
lying member cannot stall it; what it says about certificates must be signed by a
majority to count at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio

from wattmesh.exchange.node.p2p import RequestFailed, RequestTimeout
from wattmesh.exchange.node.wire import DIGESTS, MAX_MESSAGE_BYTES, Refused, parse, set_digest
from wattmesh.settlement.canonical import CanonicalError, canonical
from wattmesh.settlement.certificate import Certificate, IntervalVote, check_certificate

if TYPE_CHECKING:
    from wattmesh.exchange.node.household import HouseholdNode

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_IDS_PER_GET",
    "fetch_certified",
    "gather",
    "pull_votes",
    "serve",
]

logger = logging.getLogger("wattmesh.sync")

MAX_IDS_PER_GET = 2000
# The messages in one get answer: a JSON string may double a message's bytes (every quote
# escaped), so 6 MiB of them stay well inside the transport's 16 MiB frame.
MAX_ANSWER_BYTES = 6 * 1024 * 1024
MAX_SET_IDS = 100_000  # far above any interval's budget (docs/node.md); a set is ~66 B/id
MAX_VOTES = 4096  # in one answer: every member's votes over many rounds
REQUEST_TIMEOUT_S = 5.0
FETCH_DEADLINE_S = 10.0


def serve(node: HouseholdNode, peer: str, request: bytes) -> bytes:
    """Answer one request from ``peer`` (raise ValueError for a bad one or a peer that is
    not a member: the stream is reset)."""
    if node.community.member(peer) is None:
        refusal = Refused("not-member", f"sync request from {peer}, not a member")
        node.admission.refuse(refusal, f"peer {peer}")
        raise refusal
    req = orjson.loads(request)
    if type(req) is not dict:
        raise ValueError("a sync request is a JSON object")
    op, t = req.get("op"), req.get("interval")
    if type(t) is not int:
        raise ValueError(f"interval: must be an integer, got {t!r:.40}")
    if op == "set":
        ids = node.store.ids(t)
        close = node.closes.get(t)
        return orjson.dumps(
            {
                "interval": t,
                "state": "settled" if close else "open",
                "set": set_digest(ids),
                "ids": ids,
                "close": close[0] if close else None,
            }
        )
    if op == "get":
        ids = req.get("ids")
        if type(ids) is not list or len(ids) > MAX_IDS_PER_GET:
            raise ValueError(f"ids: a list of at most {MAX_IDS_PER_GET} message ids")
        found = node.store.messages(i for i in ids if type(i) is str)
        sent, rest, size = [], [], 0
        for message_id, kind, data in found:
            if sent and size + len(data) > MAX_ANSWER_BYTES:
                rest.append(message_id)  # at least one message goes in every answer
            else:
                sent.append([kind, data.decode()])
                size += len(data)
        return orjson.dumps({"messages": sent, "rest": rest})
    if op == "votes":
        cert = node.ledger.certificate(t) if t in node.closes else None
        votes = [v.to_dict() for v in node.admission.votes.votes(t)][:MAX_VOTES]
        return orjson.dumps(
            {"votes": votes, "certificate": cert.to_dict() if cert is not None else None}
        )
    if op == "ids":
        digest = req.get("set")
        if type(digest) is not str:
            raise ValueError("set: must be a set digest")
        return orjson.dumps({"ids": node.store.set_ids(t, digest)})
    raise ValueError(f"op: must be 'set', 'get', 'votes' or 'ids', got {op!r:.40}")


async def _ask(node: HouseholdNode, peer: str, request: dict[str, Any]) -> Any:
    assert node.p2p is not None
    try:
        raw = await node.p2p.request(
            peer, node.sync_protocol, orjson.dumps(request), timeout=REQUEST_TIMEOUT_S
        )
        return orjson.loads(raw)
    except (RequestFailed, RequestTimeout, orjson.JSONDecodeError) as exc:
        logger.debug("sync %s to %s failed: %s", request.get("op"), peer, exc)
        return None


def reachable_members(node: HouseholdNode) -> list[str]:
    """The members' nodes we are connected to (ourselves excluded)."""
    assert node.p2p is not None
    c = node.community
    return sorted(p for p in node.p2p.peers if p != node.peer_id and c.member(p) is not None)


async def _get(node: HouseholdNode, peer: str, t: int, ids: list[str]) -> list[tuple[str, bytes]]:
    """The messages among ``ids`` that ``peer`` serves for ``t``, orders before cancels."""
    got: list[tuple[str, bytes]] = []
    asks = [ids[k : k + MAX_IDS_PER_GET] for k in range(0, len(ids), MAX_IDS_PER_GET)]
    while asks and len(got) < len(ids):
        chunk = asks.pop()
        answer = await _ask(node, peer, {"op": "get", "interval": t, "ids": chunk})
        if type(answer) is not dict or type(answer.get("messages")) is not list:
            continue
        served = size = 0
        for item in answer["messages"][: len(chunk)]:
            if (type(item) is list and len(item) == 2 and all(type(x) is str for x in item)
                    and len(item[1]) <= MAX_MESSAGE_BYTES):  # fmt: skip
                got.append((item[0], item[1].encode()))
                served, size = served + 1, size + len(item[1])
        # The rest that did not fit is asked for again, only while the answer was as full
        # as an honest one that names a rest must be (a member's next message did not
        # fit), and only for ids we asked for: a peer cannot keep us asking.
        rest = answer.get("rest")
        if served and type(rest) is list and size >= MAX_ANSWER_BYTES - MAX_MESSAGE_BYTES:
            wanted = set(chunk)
            again = [i for i in rest if type(i) is str and i in wanted][: len(chunk) - served]
            if again:
                asks.append(again)
    got.sort(key=lambda kd: kd[0] == "cancel")  # the orders a cancel names come first
    return got


async def _fetch(node: HouseholdNode, peer: str, t: int, ids: list[str]) -> tuple[int, int]:
    """Fetch ``ids`` of interval ``t`` from ``peer``; return (served, accepted): how many
    messages it sent back and how many of them were new and accepted."""
    got = await _get(node, peer, t, ids)
    accepted = 0
    for kind, data in got:
        try:
            inbound = node.admission.fetched(data, kind, t)
        except Refused as exc:
            if exc.reason != "duplicate":
                node.admission.refuse(exc, f"peer {peer}")
            continue
        if node.keep(inbound, t):
            accepted += 1
    return len(got), accepted


def _set_answer(a: Any) -> bool:
    """A well-formed, bounded answer to a set request."""
    return (
        type(a) is dict
        and type(a.get("ids")) is list
        and len(a["ids"]) <= MAX_SET_IDS
        and all(type(i) is str for i in a["ids"])
    )


def _deadline(node: HouseholdNode) -> float:
    c = node.community
    return min(FETCH_DEADLINE_S, max(1.0, c.wall_seconds(c.interval_ms) / 4))


async def gather(node: HouseholdNode, t: int) -> int:
    """Fetch from every reachable member what it holds of ``t`` and we lack, round after
    round until one fetches nothing; return how many messages were accepted. Members
    that answer badly are not asked again in this gathering."""
    dropped: set[str] = set()
    total = 0
    with trio.move_on_after(2 * _deadline(node) + REQUEST_TIMEOUT_S):
        while True:
            peers = [p for p in reachable_members(node) if p not in dropped]
            answers: dict[str, Any] = {}

            async def ask_set(peer: str, answers: dict[str, Any] = answers) -> None:
                answers[peer] = await _ask(node, peer, {"op": "set", "interval": t})

            # The set requests share a deadline too: the slowest member does not set the
            # pace of everyone's vote (it is asked again next round or next vote).
            with trio.move_on_after(_deadline(node)):
                async with trio.open_nursery() as nursery:
                    for peer in peers:
                        nursery.start_soon(ask_set, peer)
            mine = set(node.store.ids(t))
            wanted: dict[str, list[str]] = {}
            for peer, a in answers.items():
                if a is None:
                    continue  # no answer in time: asked again next round
                if not _set_answer(a):
                    logger.warning("interval %d: %s sent a malformed or oversized set; it is "
                                   "no longer asked this interval", t, peer)  # fmt: skip
                    dropped.add(peer)
                    continue
                missing = sorted(set(a["ids"]) - mine)
                if missing:
                    wanted[peer] = missing
            if not wanted:
                return total
            results: dict[str, tuple[int, int]] = {}

            async def fetch(
                peer: str, ids: list[str], results: dict[str, tuple[int, int]] = results
            ) -> None:
                results[peer] = await _fetch(node, peer, t, ids)

            # All of a round's fetches share one deadline: a slow peer cannot hold it.
            with trio.move_on_after(_deadline(node)):
                async with trio.open_nursery() as nursery:
                    for peer, ids in wanted.items():
                        nursery.start_soon(fetch, peer, ids)
            fetched = 0
            for peer, ids in wanted.items():
                served, accepted = results.get(peer, (0, 0))
                fetched += accepted
                if served < len(ids) and not set(ids) <= set(node.store.ids(t)):
                    # It named messages it did not serve in time (and nobody else did).
                    logger.warning("interval %d: %s did not serve %d of the messages its "
                                   "set names; it is no longer asked this interval",
                                   t, peer, len(ids) - served)  # fmt: skip
                    dropped.add(peer)
            total += fetched
            if not fetched:
                return total
            await trio.sleep(0)
    return total


async def pull_votes(node: HouseholdNode, t: int, within: float = REQUEST_TIMEOUT_S) -> int:
    """Ask every reachable member for its votes of ``t`` (and its certificate, if it has
    settled ``t``), and take each vote as if gossiped, as each answer comes; answers
    later than ``within`` seconds are not waited for. Return how many votes were new."""
    members = {m.peer_id for m in node.community.members}
    new = 0

    async def ask(peer: str) -> None:
        a = await _ask(node, peer, {"op": "votes", "interval": t})
        if type(a) is not dict:
            return
        votes = a.get("votes")
        texts = votes if type(votes) is list else []
        cert = a.get("certificate")
        if cert is not None:
            try:
                certificate = Certificate.from_dict(cert)
            except ValueError as exc:
                logger.warning("interval %d: %s sent a malformed certificate: %s", t, peer, exc)
            else:
                if check_certificate(certificate, t, certificate.set, members) is None:
                    texts = texts + [v.to_dict() for v in certificate.votes]
        nonlocal new
        for d in texts[:MAX_VOTES]:
            new += _take_vote(node, peer, d, t)

    with trio.move_on_after(within):
        async with trio.open_nursery() as nursery:
            for peer in reachable_members(node):
                nursery.start_soon(ask, peer)
    return new


def _take_vote(node: HouseholdNode, peer: str, d: Any, t: int) -> bool:
    """Take one pulled vote as if gossiped; True if it was new. A vote whose (node,
    round, set) is held already changes nothing, so its signature is not checked again
    (every pull repeats most of what the last one brought)."""
    try:
        known = IntervalVote.from_dict(d)
    except ValueError:
        pass  # parse() below names what is wrong
    else:
        if known.interval == t and node.admission.votes.held(known):
            return False
    try:
        inbound = parse(DIGESTS, canonical(d), node.community)
    except (Refused, CanonicalError) as exc:
        reason = exc if isinstance(exc, Refused) else Refused("malformed", str(exc))
        node.admission.refuse(reason, f"peer {peer}")
        return False
    if inbound.kind != "interval_vote" or inbound.interval != t:
        node.admission.refuse(Refused("malformed", f"not a vote of interval {t}"), f"peer {peer}")
        return False
    node.take_vote(inbound.record)  # type: ignore[arg-type]
    return True


async def fetch_certified(
    node: HouseholdNode, t: int, digest: str, voters: list[str]
) -> list[str] | None:
    """The ids of the set ``digest`` of ``t`` that ``voters`` voted for, with every message
    of it held (fetched from the members we reach, its voters first: ids are checked
    against the digest, messages against the set rule); None if nobody can serve it yet."""
    ids = node.store.set_ids(t, digest)
    if ids is None and node.store.digest(t) == digest:
        ids = node.store.ids(t)
    reachable = reachable_members(node)
    first = set(voters)
    sources = [p for p in reachable if p in first] + [p for p in reachable if p not in first]
    if ids is None:
        for peer in sources:
            a = await _ask(node, peer, {"op": "ids", "interval": t, "set": digest})
            got = a.get("ids") if type(a) is dict else None
            if (type(got) is list and len(got) <= MAX_SET_IDS and all(type(i) is str for i in got)
                    and set_digest(got) == digest):  # fmt: skip
                ids = sorted(got)
                break
        if ids is None:
            return None
    node.store.save_set(t, ids)
    # No deadline but each request's own: the set is decided, and on a loaded machine a
    # short one would cut every attempt off (the caller asks again if this fails).
    for peer in sources:
        missing = {i for i in ids if not node.store.has(i)}
        if not missing:
            break
        for kind, data in await _get(node, peer, t, sorted(missing)):
            try:
                inbound = node.admission.certified(data, kind, t)
            except Refused as exc:
                node.admission.refuse(exc, f"peer {peer} (certified set)")
                continue
            if inbound.id in missing:
                node.store.add(inbound, t)
    if any(not node.store.has(i) for i in ids):
        return None
    return ids
