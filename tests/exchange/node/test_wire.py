"""Gossip messages by themselves (exchange/node/wire.py ``parse``) and against time and state
(exchange/node/admission.py ``Admission.gossip`` / ``Admission.fetched``).

No network: a two-member community (plus an outsider), a clock the test sets, a
MessageStore and a ledger in tmp_path. Every refusal is checked for its reason and for
leaving the store as it was.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import orjson
import pytest

from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec
from wattmesh.exchange.node.admission import Admission
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.exchange.node.settle_interval import settle_interval
from wattmesh.exchange.node.wire import (
    DIGESTS,
    MAX_MESSAGE_BYTES,
    ORDERS,
    READINGS,
    Batch,
    IntervalDigest,
    Refused,
    parse,
    reading_interval,
    set_digest,
)
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.keys import generate_key, peer_id_of, sign
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.records import Cancel, Order, Reading

L = 900_000
START = 1_781_935_200_000 - 1_781_935_200_000 % L
T0 = START + 10 * L  # the open interval of these tests
NOW = T0 - 60_000  # one community minute before T0's gate

KEY_A, KEY_B, OUTSIDER = generate_key(), generate_key(), generate_key()
METER_A, STRAY_METER = generate_key(), generate_key()
A, B = peer_id_of(KEY_A), peer_id_of(KEY_B)


def community(**overrides) -> Community:
    members = (
        MemberSpec(A, bmax=10_000, money=10**11, energy=5_000,
                   meters=(MeterSpec(peer_id_of(METER_A)),)),
        MemberSpec(B, bmax=10_000, money=10**11),
    )  # fmt: skip
    return Community(name="wire", start_ms=START, interval_ms=L, members=members, **overrides)


@pytest.fixture
def order(make_order):
    """An order signed by ``key`` (alice's unless told), for T0, dated before its gate."""

    def build(key=KEY_A, *, side="ask", price=150_000, qty=1_000, interval=T0, ts=NOW - 1_000,
              market="energy") -> Order:  # fmt: skip
        return make_order(key, side, price, qty, ts, interval, market=market)

    return build


def msg(record) -> bytes:
    return canonical(record.to_dict())


@pytest.fixture
def reading(make_reading):
    """A reading of alice's meter (unless told), one interval long, two before T0."""

    def build(key=METER_A, *, seq=9, start=T0 - 2 * L, produced=500, consumed=100) -> Reading:
        return make_reading(key, start, produced, consumed, seq, L)

    return build


def refused(reason: str, topic: str, data: bytes, c: Community | None = None) -> Refused:
    with pytest.raises(Refused) as info:
        parse(topic, data, c or community())
    assert info.value.reason == reason, info.value
    return info.value


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path):
    c = community()
    led = Ledger.open(tmp_path / "ledger.sqlite")
    led.append_batch(c.genesis_items(), ts=c.genesis_ts)
    yield led
    led.close()


@pytest.fixture
def node(tmp_path: Path, ledger: Ledger):
    """(admission, store, clock) of one node at NOW, with the ledger's meter seqs."""
    store = MessageStore.open(tmp_path / "messages.sqlite")
    clock = Clock(NOW)
    yield Admission(community(), store, ledger.meter_seq, clock), store, clock
    store.close()


def accept(admission: Admission, topic: str, data: bytes):
    """Gossip ``data`` in and store it as the node does; return the Inbound."""
    inbound = admission.gossip(topic, data)
    assert admission.store.add(inbound, admission.interval_of(inbound))
    return inbound


def held(store: MessageStore, *intervals: int) -> dict[int, list[str]]:
    return {t: store.ids(t) for t in intervals}


# -- parse: what a message says by itself --------------------------------------------------


def test_parse_accepts_each_kind_signed_by_its_signer(order, reading):
    c = community()
    o = order()
    got = parse(ORDERS, msg(o), c)
    assert (got.kind, got.id, got.interval, got.signer, got.ts) == ("order", o.id, T0, A, o.ts)
    assert got.record == o and got.data == msg(o) and got.orders() == (o,)

    cancel = Cancel(o.id, A, NOW).signed(KEY_A)
    got = parse(ORDERS, msg(cancel), c)
    assert (got.kind, got.id, got.interval, got.signer) == ("cancel", cancel.computed_id(), None, A)
    assert got.cancelled() == (o.id,)

    batch = Batch.of(KEY_A, T0, NOW, [
        {"market": "energy", "side": "ask", "price": 150_000, "qty": 1_000},
        {"market": "energy", "side": "ask", "price": 170_000, "qty": 500, "tif": "ioc"},
    ], cancels=[o.id])  # fmt: skip
    got = parse(ORDERS, batch.message(), c)
    assert (got.kind, got.id, got.interval, got.signer) == ("batch", batch.computed_id(), T0, A)
    # Each item is the very order it would be if sent alone (same id).
    alone = Order("energy", "ask", 150_000, 1_000, A, NOW, T0)
    assert got.orders()[0].id == alone.id and got.cancelled() == (o.id,)

    r = reading()
    got = parse(READINGS, msg(r), c)
    assert (got.kind, got.id, got.signer, got.ts) == ("reading", r.computed_id(),
                                                      peer_id_of(METER_A), r.end)  # fmt: skip
    assert got.interval == reading_interval(r, L) == T0  # the first gate after its end

    d = IntervalDigest(B, T0 - L, set_digest([o.id]), "ab" * 32, 42, NOW).signed(KEY_B)
    got = parse(DIGESTS, msg(d), c)
    assert (got.kind, got.interval, got.signer, got.record) == ("interval_digest", T0 - L, B, d)


def test_parse_refuses_malformed_messages(order):
    o = order()
    good = o.to_dict()
    refused("malformed", ORDERS, b"{not json")
    refused("malformed", ORDERS, b"[1, 2]")
    refused("malformed", ORDERS, canonical({**good, "note": "hi"}))  # an unknown field
    refused("malformed", ORDERS, json.dumps(good, sort_keys=True).encode())  # ", " and ": "
    refused("malformed", ORDERS, orjson.dumps(dict(reversed(good.items()))))  # keys unsorted
    refused("malformed", READINGS, msg(o))  # an order on the readings topic
    refused("malformed", ORDERS, canonical({**good, "id": order(price=150_001).id}))  # wrong id
    refused("malformed", ORDERS, canonical({**good, "price": 10**12}))  # above price_max
    big = msg(o)[:-1] + b"," + b" " * MAX_MESSAGE_BYTES + b"}"
    assert "exceeds the limit" in refused("malformed", ORDERS, big).detail
    # The canonical bytes of the same order pass: the refusals above are about the form.
    assert parse(ORDERS, msg(o), community()).id == o.id


def test_parse_refuses_batches_above_max_batch_or_with_an_item_twice(order):
    c = community(max_batch=3)
    item = {"market": "energy", "side": "bid", "qty": 100}
    four = [{**item, "price": 100_000 + k} for k in range(4)]
    assert parse(ORDERS, Batch.of(KEY_B, T0, NOW, four[:3]).message(), c).kind == "batch"
    detail = refused("malformed", ORDERS, Batch.of(KEY_B, T0, NOW, four).message(), c).detail
    assert "allows 3" in detail
    # Cancels count too.
    cancels = [o.id for o in (order(KEY_B, side="bid", price=p) for p in (1, 2))]
    refused("malformed", ORDERS, Batch.of(KEY_B, T0, NOW, four[:2], cancels).message(), c)
    twice = Batch.of(KEY_B, T0, NOW, [four[0], four[1], four[0]])
    assert "twice" in refused("malformed", ORDERS, twice.message()).detail
    # An explicit "gtc" would be a second spelling of the same order.
    gtc = Batch.of(KEY_B, T0, NOW, [four[0]])
    body = gtc.body()
    body["orders"][0]["tif"] = "gtc"
    data = canonical({**body, "sig": sign(KEY_B, body)})
    refused("malformed", ORDERS, data)


def test_parse_refuses_bad_signatures(order, reading):
    o = order()
    # The price changed after signing (the id recomputed, so only the signature is wrong).
    tampered = dataclasses.replace(o, price=o.price + 1, id="")
    assert tampered.sig == o.sig and tampered.id != o.id
    refused("bad-signature", ORDERS, msg(tampered))
    # Signed by another member's key.
    theirs = Order("energy", "ask", 150_000, 1_000, A, NOW, T0)
    forged = dataclasses.replace(theirs, sig=sign(KEY_B, theirs.body()))
    refused("bad-signature", ORDERS, msg(forged))
    cancel = Cancel(o.id, A, NOW)
    refused(
        "bad-signature", ORDERS, msg(dataclasses.replace(cancel, sig=sign(KEY_B, cancel.body())))
    )
    batch = Batch.of(KEY_B, T0, NOW, [{"market": "energy", "side": "bid", "price": 1, "qty": 1}])
    refused("bad-signature", ORDERS, canonical({**batch.to_dict(), "owner": A}))
    r = reading()
    refused("bad-signature", READINGS, msg(dataclasses.replace(r, produced=r.produced + 1)))
    d = IntervalDigest(B, T0 - L, "00" * 32, "11" * 32, 1, NOW)
    refused("bad-signature", DIGESTS, msg(dataclasses.replace(d, sig=sign(KEY_A, d.body()))))


def test_parse_refuses_non_members_unknown_meters_and_other_markets(order, reading):
    refused("not-member", ORDERS, msg(order(OUTSIDER)))
    outsider = peer_id_of(OUTSIDER)
    refused("not-member", ORDERS, msg(Cancel(order().id, outsider, NOW).signed(OUTSIDER)))
    item = {"market": "energy", "side": "bid", "price": 1, "qty": 1}
    refused("not-member", ORDERS, Batch.of(OUTSIDER, T0, NOW, [item]).message())
    d = IntervalDigest(outsider, T0 - L, "00" * 32, "11" * 32, 1, NOW).signed(OUTSIDER)
    refused("not-member", DIGESTS, msg(d))
    refused("unknown-meter", READINGS, msg(reading(STRAY_METER)))
    refused("wrong-market", ORDERS, msg(order(market="heat")))
    heat = Batch.of(KEY_A, T0, NOW, [{**item, "market": "heat"}])
    refused("wrong-market", ORDERS, heat.message())


# -- Admission.gossip: time and state ------------------------------------------------------


def test_gossip_accepts_open_messages_and_refuses_late_ones(order, reading, node):
    admission, store, clock = node
    accept(admission, ORDERS, msg(order()))
    accept(admission, READINGS, msg(reading()))
    before = held(store, T0 - L, T0)
    assert len(before[T0]) == 2
    # The gate of T0 - L passed: its orders are late, however fresh their timestamps.
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(order(interval=T0 - L)))
    assert info.value.reason == "late" and "gate" in info.value.detail
    # A timestamp older than max_age_ms (2 intervals) is late too.
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(order(ts=NOW - 2 * L - 1)))
    assert info.value.reason == "late"
    # An order for T0 signed just before T0's gate and heard in the grace period after
    # it is still taken (in flight at the gate); once the grace has passed it is late.
    grace = community().grace_ms
    in_flight = order(price=160_000, ts=T0 - 1)
    clock.now = T0 + grace - 1
    assert admission.gossip(ORDERS, msg(in_flight)).id == in_flight.id
    clock.now = T0 + grace
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(in_flight))
    assert info.value.reason == "late" and "grace" in info.value.detail
    # A reading applied at T0 (of [T0 - 2L, T0 - L)) is late once T0's grace passed.
    with pytest.raises(Refused) as info:
        admission.gossip(READINGS, msg(reading(seq=10, produced=1)))
    assert info.value.reason == "late"
    assert held(store, T0 - L, T0) == before
    assert admission.refusals == {}  # gossip() raises; only refuse() counts


def test_gossip_refuses_the_future(order, reading, node):
    admission, store, _clock = node
    c = admission.community
    # A timestamp beyond max_skew_ms ahead of our clock.
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(order(ts=NOW + c.max_skew_ms + 1)))
    assert info.value.reason == "future"
    accept(admission, ORDERS, msg(order(ts=NOW + c.max_skew_ms)))  # just inside
    # An interval beyond the horizon (4 intervals ahead).
    accept(admission, ORDERS, msg(order(interval=T0 + 3 * L)))
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(order(interval=T0 + 4 * L)))
    assert info.value.reason == "future" and "4 intervals" in info.value.detail
    # A reading that ends ahead of our clock.
    with pytest.raises(Refused) as info:
        admission.gossip(READINGS, msg(reading(start=T0 - L)))
    assert info.value.reason == "future"
    # A digest of an interval whose gate is still ahead.
    d = IntervalDigest(B, T0, "00" * 32, "11" * 32, 1, NOW).signed(KEY_B)
    with pytest.raises(Refused) as info:
        admission.gossip(DIGESTS, msg(d))
    assert info.value.reason == "future"
    # An interval that is not an interval start.
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(order(interval=T0 + 1)))
    assert info.value.reason == "malformed"
    assert held(store, T0, T0 + 3 * L, T0 + 4 * L) == {T0: sorted([order(ts=NOW + 30_000).id]),
                                                        T0 + 3 * L: [order(interval=T0 + 3 * L).id],
                                                        T0 + 4 * L: []}  # fmt: skip


def batch_after(first: str, ts: int, item: dict, *, before: bool = False) -> Batch:
    """A batch of KEY_A at ``ts`` carrying ``item`` after a filler order, whose id comes
    after ``first`` (before it with ``before``): the filler's quantity is varied until it
    does."""
    for qty in range(1, 200):
        filler = {"market": "energy", "side": "ask", "price": 180_000, "qty": qty}
        b = Batch.of(KEY_A, T0, ts, [filler, item])
        if (b.computed_id() < first) == before:
            return b
    raise AssertionError("no batch id on the wanted side")


def batch_before(o: Order) -> Batch:
    """A batch carrying ``o`` whose (ts, id) comes before ``o``'s own."""
    item = {"market": o.market, "side": o.side, "price": o.price, "qty": o.qty}
    return batch_after(o.id, o.ts, item, before=True)


def test_gossip_refuses_duplicates(order, node):
    admission, store, _clock = node
    o = order()
    accept(admission, ORDERS, msg(o))
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(o))
    assert info.value.reason == "duplicate"
    # The same order inside a batch (same owner, ts and interval: the same id), a copy
    # that comes later in (ts, id) order than the held one.
    item = {"market": "energy", "side": "ask", "price": o.price, "qty": o.qty}
    batch = batch_after(o.id, o.ts, item)
    assert parse(ORDERS, batch.message(), admission.community).orders()[1].id == o.id
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, batch.message())
    assert info.value.reason == "duplicate" and o.id[:16] in info.value.detail
    # Without the held order a batch goes in; then a later copy of its order is refused.
    alone = order(price=170_000)
    batch2 = batch_before(alone)
    accept(admission, ORDERS, batch2.message())
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(alone))
    assert info.value.reason == "duplicate"
    # A second digest of one interval from one node.
    d = IntervalDigest(B, T0 - L, "00" * 32, "11" * 32, 1, NOW).signed(KEY_B)
    inbound = admission.gossip(DIGESTS, msg(d))
    admission.digests[(inbound.interval, inbound.signer)] = inbound
    again = dataclasses.replace(d, close="22" * 32).signed(KEY_B)
    with pytest.raises(Refused) as info:
        admission.gossip(DIGESTS, msg(again))
    assert info.value.reason == "duplicate"
    assert store.ids(T0) == sorted([o.id, batch2.computed_id()])


def test_two_copies_of_an_order_leave_the_same_copy_whichever_came_first(order, tmp_path, ledger):
    """An order sent alone to some nodes and inside a batch to others: the copy first in
    (ts, id) order stays at every node, the other is dropped with the cancels that only it
    made valid, so nodes that gather each other's sets converge on one set."""
    c = community()
    o = order()
    item = {"market": "energy", "side": "ask", "price": o.price, "qty": o.qty}
    for first_is_batch in (True, False):
        batch = batch_after(o.id, o.ts, item, before=first_is_batch)
        # A cancel of the batch's other order, valid only while the batch is held, and
        # one of the shared order, valid whichever copy stays.
        filler = msg(Cancel(batch.orders[0].id, A, NOW).signed(KEY_A))
        shared = msg(Cancel(o.id, A, NOW + 1).signed(KEY_A))
        first, later = (batch.message(), msg(o)) if first_is_batch else (msg(o), batch.message())
        nodes = []
        for n, arrival in enumerate(((first, later, filler, shared),
                                     (later, filler, shared, first))):  # fmt: skip
            store = MessageStore.open(tmp_path / f"copies-{first_is_batch}-{n}.sqlite")
            admission = Admission(c, store, ledger.meter_seq, Clock(NOW))
            for data in arrival:
                kind = "batch" if data == batch.message() else None
                try:
                    if kind is None:
                        inbound = admission.gossip(ORDERS, data)
                    else:
                        inbound = admission.fetched(data, kind, T0)
                except Refused as exc:
                    assert exc.reason in ("duplicate", "unknown-order"), exc
                    continue
                assert admission.keep(inbound, T0)
            # Heard before the first copy displaced the later one: the shared order's
            # cancel stays all the same, at a node alone (no gathering needed).
            assert store.has(parse(ORDERS, shared, c).id), n
            nodes.append((admission, store))
        # Gathering: each node fetches what the other holds and it lacks, until nothing new.
        for _ in range(3):
            for (mine, store), (_other, theirs) in (nodes, nodes[::-1]):
                for held in theirs.pending(T0):
                    if store.has(held.id):
                        continue
                    try:
                        mine.keep(mine.fetched(held.data, held.kind, T0), T0)
                    except Refused as exc:
                        assert exc.reason in ("duplicate", "unknown-order"), exc
        sets = [store.ids(T0) for _a, store in nodes]
        for _a, store in nodes:
            assert store.order(o.id) == (A, T0)
            assert [m.id for m in store.carriers(o.id)] == [parse(ORDERS, first, c).id]
            store.close()
        assert sets[0] == sets[1], first_is_batch
        ids = {parse(ORDERS, data, c).id: data for data in (first, later, filler, shared)}
        kept = {ids[i] for i in sets[0]}
        assert kept == ({first, shared, filler} if first_is_batch else {first, shared})


def test_a_cancel_goes_with_its_order_when_a_budget_pushes_the_order_out(order, tmp_path, ledger):
    """A cancel dated before its order, then the order pushed out of its member's budget:
    the cancel is dropped too, so a node that never held the order (and so refused the
    cancel) holds the same set."""
    c = community(max_messages_per_interval=2)
    store = MessageStore.open(tmp_path / "cascade.sqlite")
    admission = Admission(c, store, ledger.meter_seq, Clock(NOW))
    o = order(ts=NOW - 1_000)
    admission.keep(admission.gossip(ORDERS, msg(o)), T0)
    early_cancel = Cancel(o.id, A, NOW - 5_000).signed(KEY_A)
    admission.keep(admission.gossip(ORDERS, msg(early_cancel)), T0)
    pusher = order(price=160_000, ts=NOW - 3_000)
    admission.keep(admission.gossip(ORDERS, msg(pusher)), T0)
    assert store.ids(T0) == [pusher.id]
    assert admission.spent[(T0, A)] == [(pusher.ts, pusher.id, 1, len(msg(pusher)))]
    # The cancel's own slot is free again: another message of the member fits.
    extra = order(price=165_000, ts=NOW - 500)
    assert admission.keep(admission.gossip(ORDERS, msg(extra)), T0)
    assert store.ids(T0) == sorted([pusher.id, extra.id])
    store.close()


def test_gossip_refuses_cancels_of_orders_not_held_for_their_owner(order, node):
    admission, store, _clock = node
    o = order()  # A's
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(Cancel(o.id, A, NOW).signed(KEY_A)))
    assert info.value.reason == "unknown-order"
    accept(admission, ORDERS, msg(o))
    # B cannot cancel A's order.
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(Cancel(o.id, B, NOW).signed(KEY_B)))
    assert info.value.reason == "unknown-order"
    before = store.ids(T0)
    # A can, and the cancel is filed under its order's interval.
    cancel = Cancel(o.id, A, NOW).signed(KEY_A)
    inbound = accept(admission, ORDERS, msg(cancel))
    assert admission.interval_of(inbound) == T0
    assert store.ids(T0) == sorted([*before, cancel.computed_id()])


def test_gossip_refuses_readings_the_ledger_has_passed(reading, node, ledger: Ledger):
    admission, store, _clock = node
    meter = peer_id_of(METER_A)
    # The ledger applies seq 9 (when T0 - L settles; its readings go in at any settlement).
    settle_interval(ledger, T0 - L, [], [], [reading(seq=9, start=T0 - 3 * L)])
    assert ledger.meter_seq(meter) == 9
    for seq in (9, 8):
        with pytest.raises(Refused) as info:
            admission.gossip(READINGS, msg(reading(seq=seq)))
        assert info.value.reason == "out-of-order" and "applied 9" in info.value.detail
    assert store.ids(T0) == []
    assert admission.gossip(READINGS, msg(reading(seq=10))).record.seq == 10


# -- Admission.fetched: no time rule, but the right interval -------------------------------


def test_fetched_ignores_the_gate_but_not_the_interval(order, reading, node):
    admission, store, clock = node
    clock.now = T0 + L // 2  # T0's gate has passed: gossip would call these late
    o = order()
    cancel = Cancel(o.id, A, NOW).signed(KEY_A)
    r = reading()
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(o))
    assert info.value.reason == "late"
    # Filed under the wrong interval: refused, whatever the clock says.
    for data, kind in ((msg(o), "order"), (msg(r), "reading")):
        with pytest.raises(Refused) as info:
            admission.fetched(data, kind, T0 - L)
        assert info.value.reason == "malformed" and f"not {T0 - L}" in info.value.detail
    # A cancel of an order not held is unknown, fetched or not.
    with pytest.raises(Refused) as info:
        admission.fetched(msg(cancel), "cancel", T0)
    assert info.value.reason == "unknown-order"
    assert store.ids(T0) == [] and store.ids(T0 - L) == []
    # Under the right interval it is accepted (then a duplicate).
    for data, kind in ((msg(o), "order"), (msg(cancel), "cancel"), (msg(r), "reading")):
        inbound = admission.fetched(data, kind, T0)
        assert store.add(inbound, T0)
    with pytest.raises(Refused) as info:
        admission.fetched(msg(o), "order", T0)
    assert info.value.reason == "duplicate"
    assert store.ids(T0) == sorted([o.id, cancel.computed_id(), r.computed_id()])
    # The checks of form and signature still apply, and a digest is no part of a set.
    with pytest.raises(Refused) as info:
        admission.fetched(msg(order(OUTSIDER)), "order", T0)
    assert info.value.reason == "not-member"
    d = IntervalDigest(B, T0 - L, "00" * 32, "11" * 32, 1, NOW).signed(KEY_B)
    with pytest.raises(Refused) as info:
        admission.fetched(msg(d), "interval_digest", T0 - L)
    assert info.value.reason == "malformed"


def test_the_set_rule_refuses_an_order_stamped_at_or_after_its_gate_on_every_path(order, node):
    """Whether a message belongs to an interval depends only on the message: an order,
    batch or cancel whose signed ts is not before its interval's gate is refused as late,
    gossiped, fetched or served as part of a certified set (the late-injection hole)."""
    admission, store, clock = node
    clock.now = T0 + L // 2  # a member serves it while reconciling, after the gate
    on_time = order(ts=T0 - 1)
    for ts in (T0, T0 + 1, T0 + L // 2):
        late = order(ts=ts)
        batch = Batch.of(KEY_A, T0, ts, [{"market": "energy", "side": "ask",
                                          "price": 150_000, "qty": 10}])  # fmt: skip
        for data, kind in ((msg(late), "order"), (batch.message(), "batch")):
            for way in (admission.fetched, admission.certified):
                with pytest.raises(Refused) as info:
                    way(data, kind, T0)
                assert info.value.reason == "late" and "gate" in info.value.detail
    clock.now = T0 - 2  # a clock behind: gossip is still open, the ts is not
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, msg(order(ts=T0)))
    assert info.value.reason == "late"
    assert store.ids(T0) == []
    assert admission.fetched(msg(on_time), "order", T0).id == on_time.id
    inbound = admission.certified(msg(on_time), "order", T0)
    assert store.add(inbound, T0)
    gone = Cancel(on_time.id, A, T0).signed(KEY_A)  # a cancel after the gate: too late too
    with pytest.raises(Refused) as info:
        admission.fetched(msg(gone), "cancel", T0)
    assert info.value.reason == "late"


def test_refusals_change_nothing_in_the_store(order, reading, node, tmp_path: Path):
    admission, store, clock = node
    o = order()
    accept(admission, ORDERS, msg(o))
    accept(admission, READINGS, msg(reading()))
    intervals = [T0 - L, T0, T0 + L, T0 + 4 * L]
    before = held(store, *intervals)
    rows = store.conn.execute("SELECT id FROM messages ORDER BY id").fetchall()
    bad = [
        (ORDERS, b"nonsense"),
        (ORDERS, msg(dataclasses.replace(order(price=99), price=98, id=""))),
        (ORDERS, msg(order(OUTSIDER))),
        (ORDERS, msg(order(market="heat"))),
        (READINGS, msg(reading(STRAY_METER))),
        (ORDERS, msg(order(interval=T0 - L))),
        (ORDERS, msg(order(interval=T0 + 4 * L))),
        (ORDERS, msg(o)),
        (ORDERS, msg(Cancel(o.id, B, NOW).signed(KEY_B))),
    ]
    for topic, data in bad:
        with pytest.raises(Refused) as info:
            admission.gossip(topic, data)
        admission.refuse(info.value, "test")
    assert sum(admission.refusals.values()) == len(bad)
    assert set(admission.refusals) == {"malformed", "bad-signature", "not-member",
                                       "wrong-market", "unknown-meter", "late", "future",
                                       "duplicate", "unknown-order"}  # fmt: skip
    assert held(store, *intervals) == before
    assert store.conn.execute("SELECT id FROM messages ORDER BY id").fetchall() == rows
    # And nothing leaked to disk: a reopened store holds the same.
    again = MessageStore.open(tmp_path / "messages.sqlite")
    try:
        again.load_open(
            T0 - 2 * L,
            lambda kind, data: parse(
                READINGS if kind == "reading" else ORDERS, data, admission.community
            ),
        )
        assert held(again, *intervals) == before
    finally:
        again.close()


# -- budgets: what one member may hold per interval ----------------------------------------


def test_a_member_over_its_budget_is_refused_and_the_rest_is_kept(order, tmp_path: Path, ledger):
    store = MessageStore.open(tmp_path / "budget.sqlite")
    c = community(max_messages_per_interval=3, max_orders_per_interval=1_000)
    admission = Admission(c, store, ledger.meter_seq, Clock(NOW))
    mine = [order(ts=NOW - 5_000 + i) for i in range(3)]
    for o in mine:
        assert admission.keep(admission.gossip(ORDERS, msg(o)), T0)
    fourth = msg(order(ts=NOW - 1_000))
    with pytest.raises(Refused) as info:
        admission.gossip(ORDERS, fourth)
    assert info.value.reason == "over-budget"
    assert store.ids(T0) == sorted(o.id for o in mine)
    # Another member's budget is its own.
    other = order(KEY_B, side="bid", ts=NOW - 1_000)
    assert admission.keep(admission.gossip(ORDERS, msg(other)), T0)
    store.close()


def test_budgets_keep_the_same_messages_whatever_order_they_arrive_in(
    order, tmp_path: Path, ledger
):
    """The kept set is the longest (ts, id) prefix that fits, so two nodes that heard the
    same messages in different orders keep the same ones, and a pushed-out message stays
    out."""
    c = community(max_messages_per_interval=2)
    msgs = [msg(order(ts=NOW - 9_000 + 1_000 * i)) for i in range(5)]
    kept = []
    for n, arrival in enumerate((msgs, msgs[::-1], msgs[2:] + msgs[:2])):
        store = MessageStore.open(tmp_path / f"node{n}.sqlite")
        admission = Admission(c, store, ledger.meter_seq, Clock(NOW))
        for data in arrival:
            try:
                admission.keep(admission.gossip(ORDERS, data), T0)
            except Refused as exc:
                assert exc.reason == "over-budget"
        kept.append(store.ids(T0))
        assert len(store.pending(T0)) == 2
        store.close()
    assert kept[0] == kept[1] == kept[2]
    first_two = sorted(parse(ORDERS, d, c).id for d in msgs[:2])
    assert kept[0] == first_two
