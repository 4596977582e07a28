"""Household nodes in one process (exchange/node/household.py): 3 or 4 HouseholdNodes on 127.0.0.1
with an accelerated community clock (one 15-minute interval per 2 wall seconds).

Each test is bounded by ``trio.fail_after``; leaving the cluster's block stops every node
and closes its ledger and store. Expected ledgers are computed with ``settle_interval`` on
a fresh copy of the opening batch, from the records the test itself made.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path

import pytest
import trio

from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec
from wattmesh.exchange.node.config import MeterConfig
from wattmesh.exchange.node.household import HouseholdNode
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.exchange.node.p2p import open_node
from wattmesh.exchange.node.settle_interval import settle_interval
from wattmesh.exchange.node.wire import DIGESTS, ORDERS, Batch, IntervalDigest, set_digest
from wattmesh.exchange.replay.node_log import replay_node_log, write_node_log
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.certificate import IntervalVote
from wattmesh.settlement.keys import Ed25519PrivateKey, generate_key, peer_id_of, sign
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.records import Cancel, Order

L = 900_000  # 15 minutes of community time
SPEED = 450  # ... in 2 wall seconds
START = 1_781_935_200_000 - 1_781_935_200_000 % L
WALL_INTERVAL = L / SPEED / 1000


def community(
    keys: list[Ed25519PrivateKey],
    lead_s: float = 2.0,
    meters: dict[int, Ed25519PrivateKey] | None = None,
) -> Community:
    """Members in key order; the first holds 5 kWh to sell, all hold money; ``meters[i]``
    is registered to member i. Community time reaches START ``lead_s`` wall seconds from
    now."""
    meters = meters or {}
    members = tuple(
        MemberSpec(peer_id_of(k), bmax=10_000, money=10**11, energy=5_000 if i == 0 else 0,
                   meters=(MeterSpec(peer_id_of(meters[i])),) if i in meters else ())
        for i, k in enumerate(keys)
    )  # fmt: skip
    origin = time.time_ns() // 1_000_000 + int(lead_s * 1000)
    return Community(name="nodes", start_ms=START, interval_ms=L, clock_speed=SPEED,
                     clock_origin_ms=origin, members=members)  # fmt: skip


async def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``condition()`` until it holds; fail with ``what`` after ``timeout`` s."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@asynccontextmanager
async def cluster(
    tmp_path: Path,
    c: Community,
    keys: list[Ed25519PrivateKey],
    drops: dict[int, Callable[[str, bytes], bool]] | None = None,
    meters: dict[int, Ed25519PrivateKey] | None = None,
) -> AsyncIterator[list[HouseholdNode]]:
    """One node per key, each dialing all earlier ones, meshed on every topic; node i runs
    a simulated meter signed by ``meters[i]``."""
    meters = meters or {}
    nodes: list[HouseholdNode] = []
    try:
        async with trio.open_nursery() as nursery:
            for i, key in enumerate(keys):
                d = tmp_path / f"node{i}"
                d.mkdir()
                ledger = Ledger.open(d / "ledger.sqlite")
                ledger.append_batch(c.genesis_items(), ts=c.genesis_ts)
                store = MessageStore.open(d / "messages.sqlite")
                node = HouseholdNode(c, key, ledger, store, data_dir=d,
                                     drop=(drops or {}).get(i), meter_key=meters.get(i),
                                     meter=MeterConfig("simulated", peak_w=6000))  # fmt: skip
                boot = tuple(n.status.addrs[0] for n in nodes)
                await nursery.start(node.run, "/ip4/127.0.0.1/tcp/0", boot)
                nodes.append(node)
            n = len(nodes)
            topics = [nodes[0].topics[k] for k in (ORDERS, DIGESTS)]
            await until(
                lambda: all(len(x.p2p.mesh_peers(t)) == n - 1 for x in nodes for t in topics),
                "a full gossip mesh",
                10,
            )
            yield nodes
            nursery.cancel_scope.cancel()
    finally:
        for node in nodes:
            node.store.close()
            node.ledger.close()


def open_interval(c: Community, ahead_s: float = 0.8) -> int:
    """The first interval whose gate is at least ``ahead_s`` wall seconds away."""
    now = c.now_ms()
    t = now - now % L + L
    while c.wall_seconds(t - c.now_ms()) < ahead_s:
        t += L
    return max(t, START)


def settled(nodes: list[HouseholdNode], t: int) -> Callable[[], bool]:
    return lambda: all(t in n.closes for n in nodes)


def outcome(node: HouseholdNode, t: int):
    return next(o for o in node.outcomes if o.interval == t)


def expected(tmp_path: Path, c: Community, records: dict[int, tuple[list, list]], through: int):
    """The history (:func:`history`) and outcomes of a fresh ledger settled from START
    through ``through`` with ``records[t] = (orders, cancels)`` and nothing else."""
    path = tmp_path / f"fresh-{through}-{len(list(tmp_path.glob('fresh-*')))}.sqlite"
    ledger = Ledger.open(path)
    try:
        ledger.append_batch(c.genesis_items(), ts=c.genesis_ts)
        outcomes = {}
        for t in range(START, through + 1, L):
            orders, cancels = records.get(t, ([], []))
            outcomes[t] = settle_interval(ledger, t, orders, cancels, [], market=c.market)
        return history(ledger, through), outcomes
    finally:
        ledger.close()


def history(ledger: Ledger, through: int) -> list[tuple[str, dict]]:
    """(kind, body) of every entry through interval ``through``, a close's certified
    ``set`` and the hashes it folds (``digest``, ``merkle_root``: they chain through the
    earlier closes, which carry ``set``) left out: what a ledger settled from the same
    records holds, certified or not. Nodes' hashes are compared with each other."""
    folded = {"set", "digest", "merkle_root"}
    return [
        (
            e.kind,
            {k: v for k, v in e.body.items() if not (e.kind == "interval_close" and k in folded)},
        )
        for e in ledger.entries()
        if e.ts <= through
    ]


def closes_through(node: HouseholdNode, t: int) -> dict[int, str]:
    return {iv: h for iv, (h, _seq) in node.closes.items() if iv <= t}


def certified(node: HouseholdNode, t: int) -> bool:
    """Whether ``t``'s close names a set and a majority's certificate of it is stored."""
    close = next(e for e in node.ledger.entries(kind="interval_close") if e.body["interval"] == t)
    cert = node.ledger.certificate(t)
    return cert is not None and close.body.get("set") == cert.set and node.ledger.verify().ok


def items(side: str, *pq: tuple[int, int]) -> list[dict]:
    return [{"market": "energy", "side": side, "price": p, "qty": q} for p, q in pq]


def close_intervals(node: HouseholdNode) -> list[int]:
    return [e.body["interval"] for e in node.ledger.entries(kind="interval_close")]


# -- (a) orders from different nodes clear the same everywhere --------------------------------


@pytest.mark.trio
async def test_orders_from_different_nodes_clear_identically_everywhere(tmp_path: Path):
    keys = [generate_key() for _ in range(4)]
    seller, buyer, buyer2 = keys[0], keys[1], keys[3]
    c = community(keys)
    with trio.fail_after(30):
        async with cluster(tmp_path, c, keys) as nodes:
            t = open_interval(c)
            now = c.now_ms()
            # The seller's two asks as one batch on node 0, bids on nodes 1 and 3, and a
            # cancel (on node 1) of one of node 1's bids.
            batch = Batch.of(seller, t, now, items("ask", (120_000, 1_500), (160_000, 2_000)))
            bid = Order("energy", "bid", 200_000, 1_000, peer_id_of(buyer), now, t).signed(buyer)
            gone = Order("energy", "bid", 250_000, 3_000, peer_id_of(buyer), now, t).signed(buyer)
            cancel = Cancel(gone.id, peer_id_of(buyer), now).signed(buyer)
            bid2 = Batch.of(buyer2, t, now, items("bid", (170_000, 2_000)))
            await nodes[0].submit(ORDERS, batch.message())
            await nodes[1].submit(ORDERS, canonical(bid.to_dict()))
            await nodes[1].submit(ORDERS, canonical(gone.to_dict()))
            await nodes[3].submit(ORDERS, bid2.message())
            await until(lambda: all(gone.id in n.store.ids(t) for n in nodes), "the order", 3)
            await nodes[1].submit(ORDERS, canonical(cancel.to_dict()))
            assert c.now_ms() < t, "the orders must beat the gate (the machine is too slow)"
            await until(settled(nodes, t), f"interval {t} settled everywhere", 4 * WALL_INTERVAL)

            orders = [*batch.orders, bid, gone, *bid2.orders]
            entries, outcomes = expected(tmp_path, c, {t: (orders, [cancel])}, t)
            want = outcomes[t]
            assert want.volume == 3_000 and len(want.trades) >= 3  # both bids fill, 2 asks
            assert gone.id not in {tr["bid"] for tr in want.trades}
            for n in nodes:
                got = outcome(n, t)
                assert got.trades == want.trades, n.peer_id
                assert (got.price, got.volume, got.orders) == (want.price, want.volume, 4)
                assert history(n.ledger, t) == entries, n.peer_id
                assert certified(n, t), n.peer_id
                assert n.status.refusals == {} and n.admission.refusals == Counter()
            assert len({closes_through(n, t)[t] for n in nodes}) == 1
            # And they agree about it by digests, without a dispute.
            await until(lambda: all(n.status.agreements >= 3 for n in nodes), "digests", 3)
            for n in nodes:
                assert n.status.disputed == [] and n.store.equivocations() == []
                status = json.loads((n.data_dir / "status.json").read_text())
                assert status["settled_through"] >= t and status["disputed"] == []
                assert n.ledger.verify().ok
            # What each node settled, exported as a node log, replays to its ledger head,
            # the batch and the cancel included (exchange/replay/node_log.py).
            for i, n in enumerate(nodes):
                log = tmp_path / f"node{i}.jsonl"
                with open(log, "wb") as fp:
                    exported = write_node_log(c, n.ledger, n.store, fp)
                done = replay_node_log(log)
                assert done.head == exported.head and done.first_difference is None
                assert done.result.accepted["cancels"] == 1
                fills = [{k: r[k] for k in want.trades[0]} for r in done.result.trade_rows()
                         if r["interval"] == t]  # fmt: skip
                assert fills == list(want.trades)


# -- (b) forged, malformed, late, non-member and duplicate messages -----------------------------


@pytest.mark.trio
async def test_bad_messages_are_refused_by_reason_and_change_nothing(tmp_path: Path):
    keys = [generate_key() for _ in range(3)]
    seller, buyer, outsider = keys[0], keys[1], generate_key()
    a, b = peer_id_of(seller), peer_id_of(buyer)
    c = community(keys)
    with trio.fail_after(30):
        async with cluster(tmp_path, c, keys) as nodes:
            topic = nodes[0].topics[ORDERS]
            async with open_node(outsider, topics=[topic]) as rogue:
                for n in nodes:
                    await rogue.connect(n.status.addrs[0])
                await until(lambda: len(rogue.mesh_peers(topic)) == 3, "the rogue's mesh", 5)
                t = open_interval(c)
                now = c.now_ms()
                ask = Order("energy", "ask", 150_000, 1_000, a, now, t).signed(seller)
                bid = Order("energy", "bid", 200_000, 500, b, now, t).signed(buyer)
                await nodes[0].submit(ORDERS, canonical(ask.to_dict()))
                await nodes[1].submit(ORDERS, canonical(bid.to_dict()))
                legit = sorted([ask.id, bid.id])
                await until(lambda: all(n.store.ids(t) == legit for n in nodes), "orders", 3)

                # Each would trade (or change the set) if it were accepted.
                theirs = Order("energy", "bid", 210_000, 700, b, now, t)
                forged = canonical(  # b's order, signed by the seller
                    dataclasses.replace(theirs, sig=sign(seller, theirs.body())).to_dict()
                )
                spaced = Order("energy", "bid", 205_000, 300, b, now, t).signed(buyer)
                malformed = json.dumps(spaced.to_dict(), sort_keys=True).encode()
                gated = now - now % L  # the current interval: its gate has passed
                late = Order("energy", "bid", 205_000, 400, b, now, gated).signed(buyer)
                alien = Order("energy", "bid", 220_000, 900, peer_id_of(outsider), now, t)
                # Raw pubsub: past node 0's own checks, straight to nodes 1 and 2.
                for data in (forged, malformed, canonical(late.to_dict()),
                             canonical(bid.to_dict())):  # fmt: skip
                    await nodes[0].p2p.pubsub.publish(topic, data)
                # A non-member peer, to every node.
                await rogue.publish(topic, canonical(alien.signed(outsider).to_dict()))
                assert c.now_ms() < t, "the messages must beat the gate (too slow a machine)"

                want = {"bad-signature": 1, "malformed": 1, "late": 1, "duplicate": 1,
                        "not-member": 1}  # fmt: skip
                want0 = {"not-member": 1}
                with trio.move_on_after(3):
                    while not (
                        nodes[0].admission.refusals == want0
                        and all(n.admission.refusals == want for n in nodes[1:])
                    ):
                        await trio.sleep(0.05)
                assert [n.admission.refusals for n in nodes] == [want0, want, want], [
                    dict(n.p2p.stats) for n in nodes
                ]
                await until(settled(nodes, t), f"interval {t} settled", 4 * WALL_INTERVAL)
                # The rogue answers no sync request: the nodes settled without it.
                assert rogue.peer_id in nodes[1].p2p.peers

            entries, outcomes = expected(tmp_path, c, {t: ([ask, bid], [])}, t)
            assert outcomes[t].volume == 500
            for i, n in enumerate(nodes):
                assert n.store.ids(t) == legit, i
                assert n.store.messages([late.id, spaced.id, alien.id]) == [], i
                assert n.store.ids(gated) == [], i
                assert history(n.ledger, t) == entries, i
                assert outcome(n, t).trades == outcomes[t].trades
                assert n.status.refusals == dict(n.admission.refusals)  # reported


# -- (c) a dropped gossip message is recovered by reconciliation -------------------------------


@pytest.mark.trio
async def test_a_dropped_gossip_message_is_recovered_by_reconciliation(tmp_path: Path):
    keys = [generate_key() for _ in range(3)]
    seller, buyer = keys[0], keys[1]
    c = community(keys)
    lost: list[bytes] = []
    target: set[bytes] = set()

    def drop(kind: str, data: bytes) -> bool:
        if kind == ORDERS and data in target:
            lost.append(data)
            return True
        return False

    with trio.fail_after(30):
        async with cluster(tmp_path, c, keys, drops={2: drop}) as nodes:
            t = open_interval(c)
            now = c.now_ms()
            batch = Batch.of(seller, t, now, items("ask", (130_000, 2_000)))
            bid = Order("energy", "bid", 190_000, 1_200, peer_id_of(buyer), now, t).signed(buyer)
            target.add(canonical(bid.to_dict()))
            await nodes[0].submit(ORDERS, batch.message())
            await nodes[1].submit(ORDERS, canonical(bid.to_dict()))
            held = sorted([batch.computed_id(), bid.id])
            await until(lambda: all(n.store.ids(t) == held for n in nodes[:2]), "gossip", 3)
            await until(lambda: batch.computed_id() in nodes[2].store.ids(t), "the batch", 3)
            await trio.sleep(0.2)
            assert c.now_ms() < t, "the orders must beat the gate (the machine is too slow)"
            assert lost, "node 2 never saw the bid to drop it"
            assert nodes[2].store.ids(t) == [batch.computed_id()]  # lost before the gate
            await until(settled(nodes, t), f"interval {t} settled", 4 * WALL_INTERVAL)

            entries, outcomes = expected(tmp_path, c, {t: ([*batch.orders, bid], [])}, t)
            assert [tr["bid"] for tr in outcomes[t].trades] == [bid.id]
            for i, n in enumerate(nodes):
                assert n.store.ids(t) == held, i
                assert outcome(n, t).trades == outcomes[t].trades, i
                assert history(n.ledger, t) == entries, i
            assert nodes[2].admission.refusals == Counter()  # fetched, not refused


# -- (d) digests and votes: a forged digest disputes nothing; equivocation is caught ----------


@pytest.mark.trio
async def test_a_forged_digest_disputes_nothing_and_an_equivocating_member_is_caught(
    tmp_path: Path,
):
    keys = [generate_key() for _ in range(4)]
    running, absent = keys[:3], keys[3]  # a member whose node is not running
    c = community(keys)
    with trio.fail_after(40):
        async with cluster(tmp_path, c, running) as nodes:
            t = open_interval(c, ahead_s=0.0)
            await until(settled(nodes, t + L), "two intervals settled", 4 * WALL_INTERVAL)
            await until(lambda: all(n.status.agreements >= 2 for n in nodes), "agreements", 3)
            close_t = nodes[0].closes[t]
            assert all(n.closes[t] == close_t for n in nodes)
            assert all(certified(n, t) and certified(n, t + L) for n in nodes)

            # The absent member's key, with no node behind it, contradicts t's close.
            forged = IntervalDigest(peer_id_of(absent), t, set_digest([]), "00" * 32,
                                    close_t[1], c.now_ms()).signed(absent)  # fmt: skip
            topic = nodes[0].topics[DIGESTS]
            await nodes[0].p2p.pubsub.publish(topic, canonical(forged.to_dict()))
            await until(lambda: all(n.status.mismatched == [t] for n in nodes[1:]), "seen", 3)
            assert all(n.status.disputed == [] for n in nodes)  # not a dispute
            assert all(n.closes[t] == close_t for n in nodes)  # nothing is settled again

            # It then signs two different sets for one open interval, in one round.
            told: list[tuple[str, dict]] = []
            nodes[1].listeners.append(lambda event, data: told.append((event, data)))
            u = open_interval(c, ahead_s=0.0)
            await until(lambda: c.now_ms() > u, "the gate of the next interval", 3)
            for digest in (set_digest([]), set_digest(["ab" * 32])):
                vote = IntervalVote(peer_id_of(absent), u, 0, digest, c.now_ms()).signed(absent)
                await nodes[0].p2p.pubsub.publish(topic, canonical(vote.to_dict()))
            for n in nodes[1:]:
                await until(lambda n=n: n.status.disputed == [u], "the equivocation", 3)
                (evidence,) = n.store.equivocations()
                assert (evidence["node"], evidence["interval"], evidence["round"]) == (
                    peer_id_of(absent), u, 0)  # fmt: skip
                signed = {v["set"] for v in evidence["votes"]}
                assert signed == {set_digest([]), set_digest(["ab" * 32])}
            # The equivocator's votes cannot stop the honest majority (3 of 4) settling.
            await until(settled(nodes, u + L), "two more intervals", 5 * WALL_INTERVAL)
            for n in nodes:
                closed = close_intervals(n)
                assert closed == list(range(START, closed[-1] + 1, L))
                assert n.ledger.verify().ok
            assert len({n.closes[u] for n in nodes}) == 1
            status = json.loads((nodes[1].data_dir / "status.json").read_text())
            assert status["disputed"] == [u] and status["mismatched"] == [t]
            # Its listeners (the API's event stream) were told once.
            disputes = [d for e, d in told if e == "dispute"]
            assert disputes == [{"interval": u, "node": peer_id_of(absent), "round": 0}]
            assert status["equivocations"] == [{"interval": u, "node": peer_id_of(absent),
                                                "round": 0}]  # fmt: skip


# -- (f) strangers take no part in reconciliation -----------------------------------------


def stranger_sync(fake_ids: list[str], asked: Counter) -> Callable:
    """A non-member's sync handler: a huge fake open set, and a get that never ends."""

    async def answer(_peer: str, request: bytes) -> bytes:
        req = json.loads(request)
        asked[req["op"]] += 1
        if req["op"] == "set":
            return json.dumps({"interval": req["interval"], "state": "open", "set": "f" * 64,
                               "ids": fake_ids, "close": None}).encode()  # fmt: skip
        await trio.sleep(60)
        return b'{"messages": []}'

    return answer


async def trade_and_settle(
    nodes: list[HouseholdNode], c: Community, seller, buyer, within: float
) -> None:
    """An ask on node 0 and a bid on node 1 for the next open interval: every node must
    settle it within ``within`` s, trade the 500 Wh and agree on its digest."""
    t = open_interval(c)
    now = c.now_ms()
    ask = Order("energy", "ask", 150_000, 1_000, peer_id_of(seller), now, t)
    bid = Order("energy", "bid", 200_000, 500, peer_id_of(buyer), now, t)
    await nodes[0].submit(ORDERS, canonical(ask.signed(seller).to_dict()))
    await nodes[1].submit(ORDERS, canonical(bid.signed(buyer).to_dict()))
    await until(settled(nodes, t), f"interval {t} settled", within)
    for n in nodes:
        assert outcome(n, t).volume == 500
    assert len({closes_through(n, t)[t] for n in nodes}) == 1


@pytest.mark.trio
async def test_a_stranger_is_neither_asked_nor_answered_nor_believed(tmp_path: Path):
    keys = [generate_key() for _ in range(3)]
    seller, buyer = keys[0], keys[1]
    c = community(keys)
    fake_ids = [f"{i:064x}" for i in range(20_000)]
    asked: Counter = Counter()
    with trio.fail_after(40):
        async with cluster(tmp_path, c, keys) as nodes:
            async with open_node(generate_key(), topics=[nodes[0].topics[ORDERS]]) as stranger:
                stranger.set_handler(nodes[0].sync_protocol, stranger_sync(fake_ids, asked))
                for n in nodes:
                    await stranger.connect(n.status.addrs[0])
                # The stranger asks every member for a set: each refuses it.
                for n in nodes:
                    with pytest.raises(ConnectionError):
                        await stranger.request(
                            n.peer_id, n.sync_protocol, b'{"op":"set","interval":0}', timeout=5
                        )
                # Settled on time, as if the stranger were not there.
                await trade_and_settle(nodes, c, seller, buyer, 4 * WALL_INTERVAL)
                for n in nodes:
                    assert n.admission.refusals["not-member"] >= 1
    assert asked == Counter()  # no member ever asked the stranger anything


@pytest.mark.trio
async def test_an_eclipsed_node_fed_by_a_stranger_settles_nothing(tmp_path: Path):
    keys = [generate_key() for _ in range(2)]
    c = community(keys, lead_s=0.5)
    asked: Counter = Counter()
    with trio.fail_after(30):
        async with cluster(tmp_path, c, keys[:1]) as (node,):
            async with open_node(generate_key()) as stranger:
                stranger.set_handler(node.sync_protocol, stranger_sync([], asked))
                await stranger.connect(node.status.addrs[0])
                await trio.sleep(3 * WALL_INTERVAL)
                assert node.closes == {} and asked == Counter()
                # It says why: one of two members reachable, two needed.
                waiting = node.status.waiting
                assert (waiting["reachable"], waiting["members"], waiting["need"]) == (1, 2, 2)


@pytest.mark.trio
async def test_a_member_that_names_messages_it_never_serves_is_dropped_from_the_round(
    tmp_path: Path,
):
    keys = [generate_key() for _ in range(4)]
    liar_key = keys[3]
    seller, buyer = keys[0], keys[1]
    c = community(keys)
    asked: Counter = Counter()
    with trio.fail_after(40):
        async with cluster(tmp_path, c, keys[:3]) as nodes:
            # A member's key, but no honest node behind it: a huge set, gets that hang.
            async with open_node(liar_key, topics=[nodes[0].topics[ORDERS]]) as liar:
                liar.set_handler(
                    nodes[0].sync_protocol,
                    stranger_sync([f"{i:064x}" for i in range(20_000)], asked),
                )
                for n in nodes:
                    await liar.connect(n.status.addrs[0])
                await trade_and_settle(nodes, c, seller, buyer, 6 * WALL_INTERVAL)
    assert asked["set"] > 0 and asked["get"] > 0  # it was asked, as a member, then dropped


# -- (g) a flooding member spends only its own budget ---------------------------------------


@pytest.mark.trio
async def test_a_flooding_member_spends_only_its_own_budget(tmp_path: Path):
    keys = [generate_key() for _ in range(3)]
    seller, buyer, flooder = keys
    c = dataclasses.replace(community(keys), max_orders_per_interval=300,
                            max_messages_per_interval=10)  # fmt: skip
    with trio.fail_after(40):
        async with cluster(tmp_path, c, keys) as nodes:
            t = open_interval(c, ahead_s=1.5)
            now = c.now_ms()
            ask = Order("energy", "ask", 150_000, 1_000, peer_id_of(seller), now, t)
            bid = Order("energy", "bid", 200_000, 500, peer_id_of(buyer), now, t)
            await nodes[0].submit(ORDERS, canonical(ask.signed(seller).to_dict()))
            await nodes[1].submit(ORDERS, canonical(bid.signed(buyer).to_dict()))
            # 40 batches of 100 bids, ten times the flooder's budget of 300 orders, pushed
            # past its own node's checks straight into gossip.
            topic = nodes[2].topics[ORDERS]
            for i in range(40):
                flood = Batch.of(flooder, t, now - 40 + i,
                                 items("bid", *[(100_000 + j, 1) for j in range(100)]))  # fmt: skip
                await nodes[2].p2p.pubsub.publish(topic, flood.message())
            await until(settled(nodes, t), f"interval {t} settled", 5 * WALL_INTERVAL)
            for n in nodes:
                got = outcome(n, t)
                assert (got.volume, got.price) == (500, (200_000 + 150_000) // 2)
                assert n.admission.refusals["over-budget"] > 0 or n is nodes[2]
            assert len({closes_through(n, t)[t] for n in nodes}) == 1
            for n in nodes:  # what each settled held at most three of the flooder's batches
                assert outcome(n, t).orders <= 2 + 300


# -- (h) certificates: minorities wait, majorities go on, everyone converges ----------------


def cut(nodes: list[HouseholdNode], side: list[int]) -> None:
    """Partition ``nodes`` into ``side`` and the rest (both ways)."""
    ids = [n.peer_id for n in nodes]
    for i, n in enumerate(nodes):
        n.p2p.cut_off = {ids[j] for j in range(len(nodes)) if (j in side) != (i in side)}


def heal(nodes: list[HouseholdNode]) -> None:
    for n in nodes:
        n.p2p.cut_off = set()


def agree(nodes: list[HouseholdNode]) -> None:
    """Every node's closes equal, each certified, and every ledger verifies."""
    through = min(max(n.closes) for n in nodes)
    want = closes_through(nodes[0], through)
    for n in nodes:
        assert closes_through(n, through) == want, n.peer_id
        assert all(certified(n, t) for t in want), n.peer_id


@pytest.mark.trio
@pytest.mark.parametrize(
    ("n", "side", "majority_side"),
    [(4, [3], [0, 1, 2]), (4, [2, 3], []), (5, [3, 4], [0, 1, 2])],
    ids=["one-cut-off", "2|2", "3|2"],
)
async def test_a_minority_settles_nothing_while_cut_off_and_everyone_converges(
    tmp_path: Path, n: int, side: list[int], majority_side: list[int]
):
    keys = [generate_key() for _ in range(n)]
    c = community(keys)
    with trio.fail_after(60):
        async with cluster(tmp_path, c, keys) as nodes:
            t = open_interval(c, ahead_s=0.0)
            await until(settled(nodes, t), "a first interval", 3 * WALL_INTERVAL)
            before = {i: max(x.closes) for i, x in enumerate(nodes)}
            cut(nodes, side)
            u = open_interval(c, ahead_s=0.0)
            # An order on each side for an interval inside the cut.
            for i in (0, side[0]):
                key = keys[i]
                now = c.now_ms()
                o = Order("energy", "ask" if i == 0 else "bid", 150_000 if i == 0 else 200_000,
                          500, peer_id_of(key), now, u + L).signed(key)  # fmt: skip
                await nodes[i].submit(ORDERS, canonical(o.to_dict()))
            await trio.sleep(3.5 * WALL_INTERVAL)  # three gates pass inside the cut
            minority = [i for i in range(n) if i not in majority_side]
            for i in minority:
                assert max(nodes[i].closes) <= before[i] + L, i  # nothing after the cut
                waiting = nodes[i].status.waiting
                assert waiting is not None and waiting["reachable"] < waiting["need"], waiting
            for i in majority_side:
                assert max(nodes[i].closes) >= u + 2 * L, i
            heal(nodes)
            last = max(max(max(x.closes) for x in nodes) + L, u + 2 * L)
            await until(settled(nodes, last), "every node past the cut", 8 * WALL_INTERVAL)
            agree(nodes)
            got = (
                outcome(nodes[0], u + L)
                if u + L in {o.interval for o in nodes[0].outcomes}
                else None
            )
            for x in nodes:
                assert x.status.waiting is None or x.status.waiting["interval"] > last
                assert x.status.disputed == []
            if not majority_side:  # the 2|2 split certified one set after healing: both orders
                assert got is not None and got.volume == 500, (
                    u,
                    before,
                    [(o.interval, o.volume) for o in nodes[0].outcomes],
                )


@pytest.mark.trio
async def test_a_meter_whose_node_was_cut_off_publishes_what_it_missed_in_one_reading(
    tmp_path: Path,
):
    keys = [generate_key() for _ in range(4)]
    meter = generate_key()
    c = community(keys, meters={3: meter})
    with trio.fail_after(60):
        async with cluster(tmp_path, c, keys, meters={3: meter}) as nodes:
            t = open_interval(c, ahead_s=0.0)
            await until(settled(nodes, t + 2 * L), "three intervals", 5 * WALL_INTERVAL)
            cut(nodes, [3])  # the meter's own node: it settles nothing, so it reads nothing
            await trio.sleep(3 * WALL_INTERVAL)
            heal(nodes)
            last = max(nodes[0].closes) + 3 * L
            await until(settled(nodes, last), "past the cut", 8 * WALL_INTERVAL)
            agree(nodes)
            for n in nodes:
                spans = [(e.body["start"], e.body["end"], e.body["seq"])
                         for e in n.ledger.entries(kind="reading")]  # fmt: skip
                # Contiguous from the community's start: nothing the meter measured is lost,
                # and the catch-up reading covers several intervals at once.
                assert spans[0][0] == START and len(spans) >= 3, spans
                assert all(a[1] == b[0] for a, b in pairwise(spans)), spans
                assert any(end - start > L for start, end, _ in spans), spans
                assert [q for *_, q in spans] == sorted({q for *_, q in spans})
                assert all(seq == (end - START) // L for _, end, seq in spans)


@pytest.mark.trio
async def test_listeners_are_told_of_peers_coming_and_going(tmp_path: Path, autojump_clock):
    """The peer events of the API's stream: from the connections _keep_connected sees."""
    key = generate_key()
    c = community([key])
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    ledger.append_batch(c.genesis_items(), ts=c.genesis_ts)
    node = HouseholdNode(c, key, ledger, MessageStore.open(tmp_path / "messages.sqlite"))

    class Transport:  # the part of P2PNode that _keep_connected uses
        peers: set[str] = set()

    node.p2p = Transport()  # type: ignore[assignment]
    told: list[tuple[str, dict]] = []
    node.listeners.append(lambda event, data: told.append((event, data)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node._keep_connected, ())
        Transport.peers = {"peer-a", "peer-b"}
        await until(lambda: len(told) == 2, "two peers joined", 10)
        Transport.peers = {"peer-b"}
        await until(lambda: len(told) == 3, "one left", 10)
        nursery.cancel_scope.cancel()
    assert told == [("peer-joined", {"peer": "peer-a"}), ("peer-joined", {"peer": "peer-b"}),
                    ("peer-left", {"peer": "peer-a"})]  # fmt: skip
    node.store.close()
    ledger.close()


def test_the_log_names_members_by_their_display_names(tmp_path: Path):
    key = generate_key()
    c = community([key])
    named = dataclasses.replace(c, members=(dataclasses.replace(c.members[0], name="No. 5"),))
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    ledger.append_batch(named.genesis_items(), ts=named.genesis_ts)
    node = HouseholdNode(named, key, ledger, MessageStore.open(tmp_path / "messages.sqlite"))
    try:
        me, stranger = peer_id_of(key), peer_id_of(generate_key())
        assert node._who(me) == f"No. 5 ({me})"
        assert node._who(stranger) == stranger
    finally:
        node.store.close()
        ledger.close()
