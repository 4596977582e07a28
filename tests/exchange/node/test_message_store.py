"""The message store's unsettled intervals (exchange/node/message_store.py): what it holds
of an order, cancel or batch is what names it and an index of its orders' ids; the bytes
stay in SQLite and the orders are parsed again from them. These tests hold that to the
behaviour of parsed messages: the same records and ids back, duplicate copies, cancels,
removal, settling, a restart's reload, and a bound on the memory an open order takes.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.exchange.node.wire import (
    ORDERS,
    READINGS,
    Batch,
    Inbound,
    carried_records,
    parse,
    set_digest,
)
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.records import Cancel

L = 900_000
START = 1_781_935_200_000 - 1_781_935_200_000 % L
T0 = START + 10 * L
T1 = T0 + L
NOW = T0 - 60_000

KEY_A, KEY_B, METER_A = generate_key(), generate_key(), generate_key()
A, B = peer_id_of(KEY_A), peer_id_of(KEY_B)
C = Community(
    name="store", start_ms=START, interval_ms=L, max_batch=1000,
    members=(MemberSpec(A, bmax=10_000, money=10**11, meters=(MeterSpec(peer_id_of(METER_A)),)),
             MemberSpec(B, bmax=10_000, money=10**11)),
)  # fmt: skip


def item(price: int, qty: int = 1_000, side: str = "ask") -> dict:
    return {"market": "energy", "side": side, "price": price, "qty": qty}


def batch(key=KEY_A, *, interval=T0, ts=NOW - 1_000, prices=(150_000, 151_000), cancels=()):
    return parse(ORDERS, Batch.of(key, interval, ts, [item(p) for p in prices], cancels)
                 .message(), C)  # fmt: skip


@pytest.fixture
def order(make_order):
    def build(key=KEY_A, *, price=150_000, interval=T0, ts=NOW - 1_000) -> Inbound:
        o = make_order(key, "ask", price, 1_000, ts, interval)
        return parse(ORDERS, canonical(o.to_dict()), C)

    return build


def cancel(order_id: str, key=KEY_A, ts=NOW) -> Inbound:
    return parse(ORDERS, canonical(Cancel(order_id, peer_id_of(key), ts).signed(key).to_dict()), C)


@pytest.fixture
def store(tmp_path: Path):
    s = MessageStore.open(tmp_path / "messages.sqlite")
    yield s
    s.close()


def same(a: Inbound, b: Inbound) -> None:
    """``a`` and ``b`` are one message: fields, bytes, records and their ids."""
    assert (a.kind, a.id, a.interval, a.signer, a.ts, a.data) == (
        b.kind, b.id, b.interval, b.signer, b.ts, b.data,
    )  # fmt: skip
    assert a.record == b.record
    assert [o.id for o in a.orders()] == [o.id for o in b.orders()]
    assert a.cancelled() == b.cancelled()


def test_held_messages_come_back_as_parsed_with_the_same_orders_and_ids(store, order, make_reading):
    o, b = order(), batch(KEY_B, cancels=["ab" * 32])
    reading = parse(READINGS, canonical(make_reading(METER_A, T0 - 2 * L, 500, 100, 9)
                                        .to_dict()), C)  # fmt: skip
    c = cancel(o.id)
    for m in (o, b, c):
        assert store.add(m, T0)
    assert store.add(reading, T1)
    for m in (o, b, c, reading):
        same(store.held(m.id), m)
    # in the order they were held, and what settlement takes from them is the same records
    pending = store.pending(T0)
    for got, want in zip(pending, (o, b, c), strict=True):
        same(got, want)
    assert carried_records(pending) == carried_records([o, b, c])
    same(store.pending(T1)[0], reading)
    assert store.ids(T0) == sorted([o.id, b.id, c.id])
    assert store.digest(T0) == set_digest([o.id, b.id, c.id])


def test_an_order_held_twice_stays_held_until_its_last_copy_goes(store, order):
    o = order()
    copy = batch(prices=(o.record.price, 160_000))
    assert copy.orders()[0].id == o.id  # the same order, inside a batch
    store.add(o, T0)
    store.add(copy, T0)
    assert [m.id for m in store.carriers(o.id)] == [o.id, copy.id]
    assert [m.id for m in store.carriers(copy.orders()[1].id)] == [copy.id]
    other = copy.orders()[1].id
    found = store.carriers_of([other, "ff" * 32, o.id])  # what a message's check asks
    assert {k: [m.id for m in v] for k, v in found.items()} == {
        other: [copy.id],
        o.id: [o.id, copy.id],
    }
    store.remove([o.id])
    assert [m.id for m in store.carriers(o.id)] == [copy.id]
    assert store.order(o.id) == (A, T0)
    store.remove([copy.id])
    assert store.carriers(o.id) == [] and store.order(o.id) is None
    assert store.order(copy.orders()[1].id) is None
    assert store.ids(T0) == [] and not store.has(copy.id)


def test_a_cancel_names_a_held_order_until_one_of_them_goes(store, order):
    o = order()
    c1, c2 = cancel(o.id), cancel(o.id, ts=NOW + 1)
    for m in (o, c1, c2):
        store.add(m, T0)
    assert store.order(o.id) == (A, T0)
    assert store.cancels_of(o.id) == [c1.id, c2.id]
    store.remove([c1.id])
    assert store.cancels_of(o.id) == [c2.id]
    store.remove([o.id])
    assert store.order(o.id) is None
    assert store.cancels_of(o.id) == [c2.id]  # the store keeps it: Admission.drop decides
    store.remove([c2.id, c2.id, "no such message"])
    assert store.cancels_of(o.id) == [] and store.ids(T0) == []


def test_only_an_order_id_as_written_names_a_held_order(store, order):
    o = order()
    store.add(o, T0)
    for other in (o.id.upper(), o.id[:-2], o.id + "00", "zz" * 32, "", "x"):
        assert store.order(other) is None and store.carriers(other) == []
        assert store.cancels_of(other) == []


def test_settling_an_interval_forgets_it_in_memory_but_sqlite_serves_it(store, order):
    o, b, later = order(), batch(), order(price=170_000, interval=T1)
    c = cancel(o.id)
    for m, t in ((o, T0), (b, T0), (c, T0), (later, T1)):
        store.add(m, t)
    ids = store.ids(T0)
    store.forget(T0)
    assert store.open_intervals() == [T1]
    assert not store.has(o.id) and store.order(o.id) is None and store.cancels_of(o.id) == []
    assert store.order(b.orders()[0].id) is None and store.held(b.id) is None
    assert store.order(later.id) == (A, T1)
    assert store.ids(T0) == ids  # from SQLite now
    assert [(i, k, d) for i, k, d in store.messages(ids)] == [
        (m.id, m.kind, m.data) for m in sorted((o, b, c), key=lambda m: m.id)
    ]
    assert not store.add(o, T0)  # held for a settled interval already


def test_a_restart_reloads_what_was_held(tmp_path: Path, order):
    path = tmp_path / "messages.sqlite"
    o, b, later = order(), batch(KEY_B), order(price=170_000, interval=T1)
    c = cancel(o.id)
    store = MessageStore.open(path)
    for m, t in ((o, T0), (b, T0), (c, T0), (later, T1)):
        store.add(m, t)
    store.remove([b.id])
    before = {t: store.digest(t) for t in store.open_intervals()}
    store.close()  # what was committed is what a crash leaves

    again = MessageStore.open(path)
    assert again.load_open(START, lambda kind, data: parse(ORDERS, data, C)) == 3
    assert {t: again.digest(t) for t in again.open_intervals()} == before
    assert again.order(o.id) == (A, T0) and again.cancels_of(o.id) == [c.id]
    assert again.order(b.orders()[0].id) is None
    for got, want in zip(again.pending(T0), (o, c), strict=True):
        same(got, want)
    same(again.held(later.id), later)
    again.close()


def test_an_open_order_takes_no_parsed_object_in_memory(store):
    """Each held order costs its id's slot in the compiled index and a share of its
    message's name, not a parsed Order with its strings and ints (about 430 bytes when
    they were held) nor its bytes (in SQLite). 4,000 orders in 8 batches; the bound is
    generous."""
    messages = [
        Batch.of(KEY_A, T0, NOW - n, [item(100_000 + i, qty=1 + n) for i in range(500)]).message()
        for n in range(8)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for data in messages:
            store.add(parse(ORDERS, data, C), T0)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    per_order = (held + store.index_bytes()) / 4_000
    assert per_order < 160, f"{per_order:.0f} bytes held per open order"
    assert 0 < store.index_bytes() <= 4_000 * 4 / 3 * 2 * 36  # a table at least 3/8 full
    assert sum(len(m.orders()) for m in store.pending(T0)) == 4_000
    store.forget(T0)
    assert store.index_bytes() == 0


def test_pending_of_one_signer_or_kind_reads_back_only_those(store, order, make_reading,
                                                            monkeypatch):  # fmt: skip
    """A household's own orders and a meter's readings are chosen before anything is read
    back: the same messages as filtering all of them, and no other message parsed."""
    mine, theirs = order(), batch(KEY_B)
    reading = parse(READINGS, canonical(make_reading(METER_A, T0 - 2 * L, 500, 100, 9)
                                        .to_dict()), C)  # fmt: skip
    c = cancel(mine.id)
    for m in (mine, theirs, reading, c):
        assert store.add(m, T0)
    everything = store.pending(T0)
    read_back: list[str] = []
    stored = Inbound.stored

    def counting(kind, message_id, *rest):
        read_back.append(message_id)
        return stored(kind, message_id, *rest)

    monkeypatch.setattr(Inbound, "stored", counting)
    for signer, kinds in ((A, None), (B, None), (peer_id_of(METER_A), ("reading",)),
                          (None, ("reading",)), (A, ("cancel",))):  # fmt: skip
        read_back.clear()
        got = store.pending(T0, signer=signer, kinds=kinds)
        want = [
            m for m in everything
            if (signer is None or m.signer == signer) and (kinds is None or m.kind in kinds)
        ]  # fmt: skip
        assert [m.id for m in got] == [m.id for m in want]
        for g, w in zip(got, want, strict=True):
            same(g, w)
        assert sorted(read_back) == sorted(m.id for m in want if m.kind != "reading")
