"""The sync protocol: how nodes agree on an interval's set before settling it.

Gossip alone loses messages (shared/notes/libp2p.md), so after each gate plus the grace
period a node asks every connected peer for its set of the interval and fetches what it
lacks, over request/response (:mod:`.p2p`). Two requests, JSON in, JSON out:

- ``{"op": "set", "interval": t}`` -> ``{"interval", "state", "set", "ids", "close"}``:
  the peer's message ids for ``t`` (sorted), their digest, and ``state``: ``settled``
  (``close`` is then the hash of its interval_close entry), ``open`` (it has been
  collecting since before the gate) or ``unknown`` (it started after the gate; its set may
  be partial, so it counts as an answer only when no peer answers otherwise, though its
  messages are fetched in any case);
- ``{"op": "get", "interval": t, "ids": [...]}`` -> ``{"messages": [[kind, text], ...]}``:
  the canonical bytes of the messages it holds among ``ids`` (at most
  :data:`MAX_IDS_PER_GET` per request).

:func:`reconcile` repeats rounds until a round fetched nothing new and every answering
peer reported the same set digest as ours; it waits for at least one answer (a community
of one settles alone), and gives up waiting for agreement after half an interval.
The same rounds catch a restarted node up: its peers answer ``settled`` for the intervals
it missed.

Only members' nodes take part, authenticated by the peer id their libp2p key proves: a
node asks only members, answers only members (anyone else's request is refused as
``not-member`` and its stream reset) and believes only members. Every answer is bounded:
at most :data:`MAX_SET_IDS` ids in a set, :data:`REQUEST_TIMEOUT_S` per request and
:data:`FETCH_DEADLINE_S` (or a quarter of an interval on a fast clock) for all of a
round's fetches. A peer that does not answer a set
request in time is asked again next round; one whose set is malformed or too large, or
that does not serve the messages its set names within the deadline, is dropped from the
interval's remaining rounds, so a slow or lying member cannot stall them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio

from wattmesh.exchange.p2p import RequestFailed, RequestTimeout
from wattmesh.exchange.wire import Refused, set_digest

if TYPE_CHECKING:
    from wattmesh.exchange.node import HouseholdNode

__all__ = ["MAX_IDS_PER_GET", "explain_dispute", "reconcile", "serve"]

logger = logging.getLogger("wattmesh.sync")

MAX_IDS_PER_GET = 2000
MAX_SET_IDS = 100_000  # far above any interval's budget (docs/node.md); a set is ~66 B/id
REQUEST_TIMEOUT_S = 5.0
FETCH_DEADLINE_S = 10.0
RETRY_S = 0.3
ANSWERING = ("open", "settled")


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
                "state": node.interval_state(t),
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
        return orjson.dumps({"messages": [[kind, data.decode()] for kind, data in found]})
    raise ValueError(f"op: must be 'set' or 'get', got {op!r:.40}")


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


async def _fetch(node: HouseholdNode, peer: str, t: int, ids: list[str]) -> tuple[int, int]:
    """Fetch ``ids`` of interval ``t`` from ``peer``; return (served, accepted): how many
    messages it sent back and how many of them were new and accepted."""
    got: list[tuple[str, bytes]] = []
    for k in range(0, len(ids), MAX_IDS_PER_GET):
        answer = await _ask(node, peer, {"op": "get", "interval": t,
                                         "ids": ids[k:k + MAX_IDS_PER_GET]})  # fmt: skip
        if type(answer) is not dict or type(answer.get("messages")) is not list:
            continue
        for item in answer["messages"]:
            if type(item) is list and len(item) == 2 and all(type(x) is str for x in item):
                got.append((item[0], item[1].encode()))
    # Orders before the cancels that name them.
    got.sort(key=lambda kd: kd[0] == "cancel")
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


async def reconcile(node: HouseholdNode, t: int) -> str:
    """Bring our set of interval ``t`` level with our peers'; return how it ended:
    'agreed', 'adopted' (peers had settled it: their set is taken), 'alone' (a
    community of one) or 'timeout' (peers still differ)."""
    assert node.p2p is not None
    c = node.community
    give_up = None
    waited = False
    dropped: set[str] = set()  # members whose answers this interval no longer counts
    while True:
        peers = sorted(p for p in node.p2p.peers
                       if p not in dropped and c.member(p) is not None)  # fmt: skip
        answers: dict[str, Any] = {}

        async def ask_set(peer: str, answers: dict[str, Any] = answers) -> None:
            answers[peer] = await _ask(node, peer, {"op": "set", "interval": t})

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask_set, peer)
        valid = {}
        mine = set(node.store.ids(t))
        wanted: dict[str, list[str]] = {}
        for peer, a in answers.items():
            if a is None:
                continue  # no answer in time: asked again next round
            if not _set_answer(a):
                logger.warning("interval %d: %s sent a malformed or oversized set; its "
                               "answers no longer count this interval", t, peer)  # fmt: skip
                dropped.add(peer)
                continue
            valid[peer] = a
            missing = sorted(set(a["ids"]) - mine)
            if missing:
                wanted[peer] = missing
        fetched = 0
        if wanted:
            results: dict[str, tuple[int, int]] = {}

            async def fetch(
                peer: str, ids: list[str], results: dict[str, tuple[int, int]] = results
            ) -> None:
                results[peer] = await _fetch(node, peer, t, ids)

            # All of a round's fetches share one deadline (shorter on a fast community
            # clock): a slow peer cannot hold the round.
            deadline = min(FETCH_DEADLINE_S, max(1.0, c.wall_seconds(c.interval_ms) / 4))
            with trio.move_on_after(deadline):
                async with trio.open_nursery() as nursery:
                    for peer, ids in wanted.items():
                        nursery.start_soon(fetch, peer, ids)
            for peer, ids in wanted.items():
                served, accepted = results.get(peer, (0, 0))
                fetched += accepted
                if served < len(ids) and not set(ids) <= set(node.store.ids(t)):
                    # It named messages it did not serve in time (and nobody else did).
                    logger.warning("interval %d: %s did not serve %d of the messages its "
                                   "set names; its answers no longer count this interval",
                                   t, peer, len(ids) - served)  # fmt: skip
                    dropped.add(peer)
                    valid.pop(peer, None)
        # Peers that started after the gate hold partial sets: they count only when no
        # peer saw the interval open (all started late), and then their union is all there is.
        answering = {p: a for p, a in valid.items() if a.get("state") in ANSWERING} or valid
        ours = node.store.digest(t)
        if answering:
            if not fetched and all(a.get("set") == ours for a in answering.values()):
                return "agreed"
            sets = {a.get("set") for a in answering.values()}
            if (
                not fetched
                and len(sets) == 1
                and any(a.get("state") == "settled" for a in answering.values())
            ):
                # Every answering peer holds one set, some have settled it, and ours holds
                # more (we fetched all of theirs): the interval is decided; settle theirs.
                node.adopt(t, next(iter(answering.values()))["ids"])
                logger.warning("interval %d: our set held messages our peers did not settle; "
                               "settling theirs", t)  # fmt: skip
                return "adopted"
            now = trio.current_time()
            if give_up is None:
                give_up = now + max(2.0, c.wall_seconds(c.interval_ms) / 2)
            elif now > give_up:
                differ = sorted(p for p, a in answering.items() if a.get("set") != ours)
                logger.warning("interval %d: settling while %d peers still hold other sets "
                               "(%s)", t, len(differ), ", ".join(differ))  # fmt: skip
                return "timeout"
        elif len(c.members) == 1:
            return "alone"
        elif not waited:
            logger.info("interval %d: waiting for a member's node to reconcile with", t)
            waited = True
        if not fetched:
            await trio.sleep(RETRY_S)


async def explain_dispute(node: HouseholdNode, peer: str, t: int) -> None:
    """Log how ``peer``'s set of a disputed interval differs from ours (nothing changes:
    a settled interval is never settled again)."""
    a = await _ask(node, peer, {"op": "set", "interval": t})
    if type(a) is not dict or type(a.get("ids")) is not list:
        logger.warning("interval %d: %s did not answer about the dispute", t, peer)
        return
    theirs, ours = set(a["ids"]), set(node.store.ids(t))
    logger.warning(
        "interval %d disputed with %s: they hold %d messages we lack (%s), we hold %d they "
        "lack (%s)",
        t, peer, len(theirs - ours), ", ".join(sorted(theirs - ours)[:3]),
        len(ours - theirs), ", ".join(sorted(ours - theirs)[:3]),
    )  # fmt: skip
