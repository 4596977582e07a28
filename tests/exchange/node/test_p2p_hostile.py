"""A stranger's malformed frames on every protocol the node speaks: each is dropped, its
stream reset, its sender counted and banned from pubsub, and the node keeps delivering.

A raw py-libp2p host (no key the community knows) dials the node and writes each frame of
the corpus below on each protocol; after the corpus an honest peer's message still gets
through. Everything runs on 127.0.0.1 and is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import random

import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from multiaddr import Multiaddr

from wattmesh.exchange.node.p2p import open_node
from wattmesh.settlement.keys import generate_key

TOPIC = "wattmesh/test/orders"
SYNC = "/wattmesh/test/sync/1.0.0"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def framed(body: bytes) -> bytes:
    return varint(len(body)) + body


def garbage_rpc() -> bytes:
    """A well-formed RPC whose fields are nonsense: a publish with a bad sender, key and
    signature, a subscription to a huge topic name, control messages for unknown topics."""
    rpc = rpc_pb2.RPC()
    msg = rpc.publish.add()
    msg.from_id = b"\x00\x01garbage"
    msg.data = b"\xff" * 100
    msg.seqno = b"\x00" * 3
    msg.topicIDs.append(TOPIC)
    msg.signature = b"sig"
    msg.key = b"\x08\x01\x12\x02ab"
    sub = rpc.subscriptions.add()
    sub.subscribe = True
    sub.topicid = "t" * 5000
    rpc.control.graft.add().topicID = "\x00unknown"
    rpc.control.ihave.add(topicID=TOPIC).messageIDs.extend([b"\x00" * 40] * 50)
    rpc.control.iwant.add().messageIDs.extend([b"x"])
    rpc.control.prune.add(topicID=TOPIC, backoff=2**63 - 1)
    rpc.senderRecord = b"\xff\x00\xff"
    return rpc.SerializeToString()


def corpus() -> dict[str, bytes]:
    rng = random.Random(20261202)
    return {
        "ff-32": framed(b"\xff" * 32),  # the 33 bytes
        "random": framed(bytes(rng.randrange(256) for _ in range(200))),
        "truncated-field": framed(b"\x0a\x40" + b"abc"),  # a field announcing 64 bytes, 3 sent
        "wrong-wire-type": framed(b"\x0b\x01\x02"),  # field 1 as a start-group
        "garbage-rpc": framed(garbage_rpc()),
        "varint-11-bytes": b"\xff" * 10 + b"\x01",
        "announces-more": varint(1000) + b"\x0a\x02ab",  # then the stream closes
        "oversized": varint(8 << 20) + b"\x00" * 1024,
    }


PROTOCOLS = [
    "/meshsub/1.0.0",
    "/meshsub/1.1.0",
    "/meshsub/1.2.0",
    "/ipfs/id/push/1.0.0",
    "/ipfs/id/1.0.0",
    "/ipfs/ping/1.0.0",
    SYNC,
]


async def send_as_stranger(addr: str, protocol: str, frame: bytes) -> None:
    """A fresh stranger host: dial, open a stream on ``protocol``, write, close."""
    stranger = new_host(key_pair=create_new_key_pair())
    async with stranger.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(Multiaddr(addr))
        await stranger.connect(info)
        stream = await stranger.new_stream(info.peer_id, [TProtocol(protocol)])
        try:
            await stream.write(frame)
            with trio.move_on_after(0.3):
                await stream.read(1)  # let the node read it (it answers, resets or waits)
            await stream.close()
        except Exception:
            pass  # the node reset the stream: expected
        await stranger.close()


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_malformed_frame_on_any_protocol_ends_the_node(protocol: str) -> None:
    got: list[bytes] = []

    async def answer(_peer: str, request: bytes) -> bytes:
        raise ValueError("the sync protocol refuses what it cannot parse")

    with trio.fail_after(60):
        async with (
            open_node(generate_key(), topics=[TOPIC], validators={TOPIC: lambda s, d: True})
            as victim,
            open_node(generate_key(), topics=[TOPIC]) as honest,
        ):  # fmt: skip
            victim.set_handler(SYNC, answer)
            await honest.connect(victim.addrs[0])
            for frame in corpus().values():
                await send_as_stranger(victim.addrs[0], protocol, frame)
            # Still alive and still delivering: the honest peer's message arrives.
            with trio.fail_after(15):
                while not got:
                    await honest.publish(TOPIC, b"still here")
                    with trio.move_on_after(1.0):
                        message = await victim.inbox.receive()
                        got.append(message.data)
            assert got == [b"still here"]
            if protocol.startswith("/meshsub/"):
                bad = victim.stats[f"bad_frame:{protocol}"]
                assert bad >= 4, victim.stats  # the undecodable ones, each counted
