"""The sync protocol's get request is paged by bytes (exchange/node/sync.py): an answer
holds at most MAX_ANSWER_BYTES of messages, names the rest, and the asking node asks for
the rest until it has every message, so large messages never make a fetch fail for ever."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest
import trio

from wattmesh.exchange.community_file import Community, MemberSpec
from wattmesh.exchange.node import sync
from wattmesh.settlement.keys import generate_key, peer_id_of

L = 900_000
START = 1_781_935_200_000 - 1_781_935_200_000 % L
MEMBER = peer_id_of(generate_key())


class Store:
    """A message store holding ``n`` messages of ``size`` bytes each."""

    def __init__(self, n: int, size: int) -> None:
        self.held = {f"{k:064x}": ("batch", b"x" * size) for k in range(n)}

    def messages(self, ids):
        return [(i, *self.held[i]) for i in ids if i in self.held]


def node_with(store: Store) -> SimpleNamespace:
    community = Community(name="sync", start_ms=START, interval_ms=L,
                          members=(MemberSpec(MEMBER, bmax=1, money=1),))  # fmt: skip
    return SimpleNamespace(community=community, store=store)


def test_an_answer_stops_at_its_byte_budget_and_names_the_rest(monkeypatch):
    monkeypatch.setattr(sync, "MAX_ANSWER_BYTES", 10_000)
    store = Store(n=10, size=3_000)
    ids = sorted(store.held)
    answer = orjson.loads(sync.serve(node_with(store), MEMBER, orjson.dumps(
        {"op": "get", "interval": START, "ids": ids})))  # fmt: skip
    assert len(answer["messages"]) == 3  # 9,000 bytes; a fourth would pass 10,000
    assert answer["rest"] == ids[3:]
    # One message larger than the budget still goes out alone.
    big = Store(n=2, size=20_000)
    answer = orjson.loads(sync.serve(node_with(big), MEMBER, orjson.dumps(
        {"op": "get", "interval": START, "ids": sorted(big.held)})))  # fmt: skip
    assert len(answer["messages"]) == 1 and len(answer["rest"]) == 1


@pytest.mark.trio
async def test_the_asking_node_gets_every_message_page_by_page(monkeypatch):
    monkeypatch.setattr(sync, "MAX_ANSWER_BYTES", 10_000)
    store = Store(n=25, size=3_000)
    server = node_with(store)
    asked = []

    async def ask(_node, peer, request):
        asked.append(len(request["ids"]))
        await trio.lowlevel.checkpoint()
        return orjson.loads(sync.serve(server, MEMBER, orjson.dumps(request)))

    monkeypatch.setattr(sync, "_ask", ask)
    got = await sync._get(SimpleNamespace(), MEMBER, START, sorted(store.held))
    assert len(got) == 25 and {d for _k, d in got} == {b"x" * 3_000}
    assert len(asked) == 9  # 3 messages an answer


@pytest.mark.trio
async def test_a_peer_that_keeps_naming_a_rest_cannot_keep_us_asking(monkeypatch):
    ids = [f"{k:064x}" for k in range(50)]
    asked = []

    async def ask(_node, peer, request):
        asked.append(len(request["ids"]))
        await trio.lowlevel.checkpoint()
        # One message, and "the rest" is everything asked for, every time.
        return {"messages": [["order", "{}"]], "rest": request["ids"]}

    monkeypatch.setattr(sync, "_ask", ask)
    got = await sync._get(SimpleNamespace(), MEMBER, START, ids)
    # An answer of 2 bytes that names a rest cannot be honest (only a message that does
    # not fit ends an answer early): no second request.
    assert asked == [50] and len(got) == 1
