"""The libp2p transport: identity, gossip delivery, validators, request/response, leaving.

Everything runs on 127.0.0.1 and each test is bounded by ``trio.fail_after``. One test
runs three nodes as separate processes and reaps them even when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from wattmesh.exchange.node.p2p import (
    FrameTooLarge,
    Message,
    P2PNode,
    RequestFailed,
    RequestTimeout,
    open_node,
)
from wattmesh.settlement.keys import generate_key, load_key, peer_id_of, save_key

TOPIC = "wattmesh/test/orders"


async def until(condition, what: str, timeout: float = 5.0, step: float = 0.05) -> None:
    """Poll ``condition()`` until it holds; fail with ``what`` after ``timeout`` s."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(step)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def link(nodes: list[P2PNode], edges: list[tuple[int, int]]) -> None:
    """Dial every edge in parallel (a dial takes ~250 ms), then wait for the gossip mesh."""
    async with trio.open_nursery() as nursery:
        for a, b in edges:
            nursery.start_soon(nodes[a].connect, nodes[b].addrs[0])
    # Until the mesh forms (the next 1 s heartbeat) a publish reaches nobody at once.
    await until(lambda: all(n.mesh_peers(TOPIC) for n in nodes), "the gossip mesh")


def all_tasks() -> set[trio.lowlevel.Task]:
    tasks, todo = set(), [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        tasks.add(task)
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return tasks


@pytest.mark.trio
async def test_node_peer_id_is_the_household_account_id(tmp_path: Path):
    with trio.fail_after(10):
        key_file = tmp_path / "node.key"
        save_key(key_file, generate_key())
        key = load_key(key_file)
        async with open_node(key) as node:
            assert node.peer_id == peer_id_of(key)
            assert node.host.get_id().to_base58() == peer_id_of(key)
            assert node.addrs and all(
                a.startswith("/ip4/127.0.0.1/tcp/") and a.endswith(f"/p2p/{node.peer_id}")
                for a in node.addrs
            )


@pytest.mark.trio
async def test_every_message_reaches_every_other_node_exactly_once():
    with trio.fail_after(20):
        before = all_tasks()
        got: list[list[Message]] = [[] for _ in range(4)]

        async def collect(i: int, msg: Message) -> None:
            got[i].append(msg)

        async with AsyncExitStack() as stack:
            nodes = []
            for i in range(4):
                # Nodes 0 and 1 take callbacks; 2 and 3 are read from their inbox.
                handlers = {TOPIC: lambda m, i=i: collect(i, m)} if i < 2 else {}
                node = open_node(generate_key(), topics=[TOPIC], handlers=handlers)
                nodes.append(await stack.enter_async_context(node))
            # Each node has at least two links, none is a hub.
            await link(nodes, [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)])
            async with trio.open_nursery() as readers:
                for i in (2, 3):

                    async def read(i: int = i) -> None:
                        async for msg in nodes[i].inbox:
                            got[i].append(msg)

                    readers.start_soon(read)
                for k in range(200):
                    await nodes[k % 4].publish(TOPIC, b"order-%03d" % k)
                await until(lambda: all(len(g) >= 150 for g in got), "150 deliveries each", 15)
                await trio.sleep(0.5)  # room for any late duplicate to show up
                readers.cancel_scope.cancel()
            for i, node in enumerate(nodes):
                expected = {b"order-%03d" % k for k in range(200) if k % 4 != i}
                counts = Counter(m.data for m in got[i])
                assert set(counts) == expected, f"node {i} lost or invented messages"
                assert max(counts.values()) == 1, f"node {i} got a message twice"
                senders = {m.data: m.sender for m in got[i]}
                assert all(
                    senders[b"order-%03d" % k] == nodes[k % 4].peer_id
                    for k in range(200)
                    if k % 4 != i
                )
                assert node.stats["delivered"] == 150
        assert all_tasks() <= before, "a node left tasks behind"


@pytest.mark.trio
async def test_refused_messages_are_counted_and_never_delivered_or_relayed():
    with trio.fail_after(20):
        seen_senders: list[set[str]] = [set() for _ in range(4)]

        def make_validator(i: int):
            def validate(sender: str, data: bytes) -> bool:
                seen_senders[i].add(sender)
                if data == b"boom":
                    raise RuntimeError("validator bug")
                return not data.startswith(b"bad")

            return validate

        async with AsyncExitStack() as stack:
            nodes: list[P2PNode] = []
            for i in range(4):
                # Node 0 runs no validator, so it lets bad messages out: a faulty member.
                validators = {TOPIC: make_validator(i)} if i else {}
                node = open_node(generate_key(), topics=[TOPIC], validators=validators)
                nodes.append(await stack.enter_async_context(node))
            # A line, so everything node 3 gets was relayed by 1 and then 2.
            await link(nodes, [(0, 1), (1, 2), (2, 3)])
            sent = [b"good-%d" % k if k % 2 else b"bad-%d" % k for k in range(20)] + [b"boom"]
            for data in sent:
                await nodes[0].publish(TOPIC, data)
            await until(lambda: nodes[3].stats["delivered"] == 10, "ten good messages at 3")
            await trio.sleep(1.5)  # a heartbeat's gossip could still carry a leak
            for i in (1, 2, 3):
                data = set()
                while True:
                    try:
                        data.add(nodes[i].inbox.receive_nowait().data)
                    except trio.WouldBlock:
                        break
                assert data == {b"good-%d" % k for k in range(1, 20, 2)}, f"node {i}"
                assert seen_senders[i] == {nodes[0].peer_id}  # the publisher, not the relay
            assert nodes[1].stats[f"refused:{TOPIC}"] == 10
            assert nodes[1].stats[f"validator_error:{TOPIC}"] == 1
            # Node 1 never forwarded them, so nodes 2 and 3 never had to refuse them.
            assert nodes[2].stats[f"refused:{TOPIC}"] == nodes[3].stats[f"refused:{TOPIC}"] == 0
            with pytest.raises(ValueError, match="refused"):
                await nodes[1].publish(TOPIC, b"bad-own")


@pytest.mark.trio
async def test_request_response_round_trip_limits_and_timeout():
    with trio.fail_after(20):
        async with (
            open_node(generate_key(), max_frame=1024) as small,
            open_node(generate_key()) as big,
        ):
            await small.connect(big.addrs[0])
            hang = trio.Event()
            callers: list[str] = []

            async def echo(peer: str, request: bytes) -> bytes:
                callers.append(peer)
                return request[::-1]

            async def huge(peer: str, request: bytes) -> bytes:
                return b"x" * 2000

            async def stuck(peer: str, request: bytes) -> bytes:
                await hang.wait()
                return b""

            async def broken(peer: str, request: bytes) -> bytes:
                raise RuntimeError("handler bug")

            for proto, fn in [("/t/echo/1", echo), ("/t/huge/1", huge), ("/t/stuck/1", stuck),
                              ("/t/broken/1", broken)]:  # fmt: skip
                big.set_handler(proto, fn)
            small.set_handler("/t/echo/1", echo)

            assert await small.request(big.peer_id, "/t/echo/1", b"abc") == b"cba"
            assert callers == [small.peer_id]
            assert await small.request(big.peer_id, "/t/echo/1", b"") == b""
            # Oversized: refused before sending, while reading the response, and by the server.
            with pytest.raises(FrameTooLarge):
                await small.request(big.peer_id, "/t/echo/1", b"y" * 1025)
            with pytest.raises(FrameTooLarge):
                await small.request(big.peer_id, "/t/huge/1", b"")
            with pytest.raises(RequestFailed):
                await big.request(small.peer_id, "/t/echo/1", b"z" * 1025)
            assert small.stats["serve_error:/t/echo/1"] == 1
            with pytest.raises(RequestFailed):
                await small.request(big.peer_id, "/t/broken/1", b"")
            with pytest.raises(RequestFailed):
                await small.request(big.peer_id, "/t/no-such-protocol/1", b"")
            started = trio.current_time()
            with pytest.raises(RequestTimeout):
                await small.request(big.peer_id, "/t/stuck/1", b"", timeout=0.5)
            assert trio.current_time() - started < 2
            hang.set()
            # The connection is still fine after all that.
            assert await small.request(big.peer_id, "/t/echo/1", b"ok") == b"ko"


@pytest.mark.trio
async def test_large_request_survives_partial_reads():
    with trio.fail_after(20):
        async with open_node(generate_key()) as a, open_node(generate_key()) as b:
            await a.connect(b.addrs[0])

            async def echo(peer: str, request: bytes) -> bytes:
                return request

            b.set_handler("/t/echo/1", echo)
            payload = os.urandom(3 << 20)
            assert await a.request(b.peer_id, "/t/echo/1", payload) == payload


@pytest.mark.trio
async def test_peers_see_a_closed_node_leave_quickly():
    with trio.fail_after(20):
        async with (
            open_node(generate_key(), topics=[TOPIC]) as a,
            open_node(generate_key(), topics=[TOPIC]) as b,
        ):
            async with open_node(generate_key(), topics=[TOPIC]) as c:
                await c.connect(a.addrs[0])
                await c.connect(b.addrs[0])
                await until(lambda: c.peer_id in a.peers and c.peer_id in b.peers, "links")
                await until(lambda: c.peer_id in a.topic_peers(TOPIC), "c's subscription")
                gone = c.peer_id
            left = trio.current_time()
            await until(lambda: gone not in a.peers and gone not in b.peers, "c leaving", 2)
            await until(lambda: gone not in a.topic_peers(TOPIC), "c leaving the topic", 2)
            assert trio.current_time() - left < 2


# A node in its own process. stdin takes commands, one per line ("connect <addr>",
# "publish <n>", "peers"); stdout reports ("addr", "connected", "got", "peers", "bye").
# It stops on SIGTERM/SIGINT, or when stdin closes so that it never outlives the test.
CHILD = r"""
import os, signal, sys, trio
from wattmesh.exchange.node.p2p import open_node
from wattmesh.settlement.keys import generate_key

TOPIC = sys.argv[1]

def say(*words):
    print(*words, flush=True)

async def on_message(msg):
    say("got", msg.sender, msg.data.decode())

async def commands(node, done):
    stdin, buf = trio.lowlevel.FdStream(os.dup(0)), b""
    while chunk := await stdin.receive_some():
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            verb, *args = line.decode().split()
            if verb == "connect":
                say("connected", await node.connect(args[0]))
            elif verb == "publish":
                for k in range(int(args[0])):
                    await node.publish(TOPIC, f"{node.peer_id}:{k}".encode())
            elif verb == "peers":
                say("peers", len(node.peers), len(node.mesh_peers(TOPIC)))
    done.cancel()

async def main():
    async with open_node(generate_key(), topics=[TOPIC], handlers={TOPIC: on_message}) as node:
        say("addr", node.addrs[0])
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(commands, node, nursery.cancel_scope)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
    say("bye")

trio.run(main)
"""


class Child:
    def __init__(self, proc: trio.Process):
        self.proc, self.lines = proc, []

    async def read(self) -> None:
        buf = b""
        while chunk := await self.proc.stdout.receive_some():
            buf += chunk
            *done, buf = buf.split(b"\n")
            self.lines += [line.decode() for line in done]

    def said(self, verb: str) -> list[list[str]]:
        return [line.split()[1:] for line in list(self.lines) if line.split()[:1] == [verb]]

    async def send(self, line: str) -> None:
        await self.proc.stdin.send_all(line.encode() + b"\n")


@pytest.mark.trio
async def test_three_nodes_as_separate_processes(tmp_path: Path):
    procs: list[trio.Process] = []
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                children = []
                for i in range(3):
                    with (tmp_path / f"child{i}.err").open("wb") as errors:
                        proc = await trio.lowlevel.open_process(
                            [sys.executable, "-c", CHILD, TOPIC],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=errors,
                        )
                    procs.append(proc)
                    children.append(Child(proc))
                    nursery.start_soon(children[-1].read)
                await until(lambda: all(c.said("addr") for c in children), "addresses", 15)
                addr = [c.said("addr")[0][0] for c in children]
                pid = [a.rsplit("/", 1)[1] for a in addr]
                await children[1].send(f"connect {addr[0]}")
                await children[2].send(f"connect {addr[0]}")
                await children[2].send(f"connect {addr[1]}")
                await until(lambda: len(children[2].said("connected")) == 2, "dials", 10)
                await until(lambda: children[1].said("connected"), "dials", 10)

                async def meshed() -> bool:
                    for c in children:
                        await c.send("peers")
                    await trio.sleep(0.3)
                    return all(c.said("peers") and c.said("peers")[-1][1] != "0" for c in children)

                while not await meshed():
                    pass
                for c in children:
                    await c.send("publish 20")
                expected = [{f"{pid[j]}:{k}" for j in range(3) if j != i for k in range(20)}
                            for i in range(3)]  # fmt: skip

                def got(i: int) -> list[str]:
                    return [data for _sender, data in children[i].said("got")]

                await until(lambda: all(len(got(i)) >= 40 for i in range(3)), "deliveries", 10)
                await trio.sleep(0.3)
                for i in range(3):
                    assert sorted(got(i)) == sorted(expected[i]), f"process {i}"
                    assert all(s == d.split(":")[0] for s, d in children[i].said("got"))

                # SIGTERM: the node closes cleanly and the others see it leave.
                procs[2].send_signal(signal.SIGTERM)
                with trio.fail_after(5):
                    assert await procs[2].wait() == 0
                assert children[2].said("bye")

                async def left() -> bool:
                    for c in children[:2]:
                        await c.send("peers")
                    await trio.sleep(0.2)
                    return all(c.said("peers")[-1][0] == "1" for c in children[:2])

                with trio.fail_after(3):
                    while not await left():
                        pass
                # Closing stdin also stops a node cleanly.
                for proc in procs[:2]:
                    await proc.stdin.aclose()
                with trio.fail_after(5):
                    assert [await p.wait() for p in procs[:2]] == [0, 0]
    finally:
        with trio.CancelScope(shield=True):
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                with trio.move_on_after(5):
                    await proc.wait()
    assert all(proc.returncode is not None for proc in procs), "a child process was left"


@pytest.mark.trio
async def test_deliveries_are_deduplicated_and_own_messages_optional():
    with trio.fail_after(10):
        async with open_node(generate_key(), topics=[TOPIC], deliver_own=True) as node:
            await node.publish(TOPIC, b"mine")
            with trio.fail_after(2):
                own = await node.inbox.receive()
            assert (own.sender, own.data, own.topic) == (node.peer_id, b"mine", TOPIC)
            # What a replay after pubsub's 120 s seen-cache looks like: the same message again.
            other = peer_id_of(generate_key())
            replay = rpc_pb2.Message(
                from_id=ID.from_base58(other).to_bytes(), seqno=b"\0" * 7 + b"\1", data=b"x"
            )
            replay.topicIDs.append(TOPIC)
            channel = node.pubsub.subscribed_topics_send[TOPIC]
            channel.send_nowait(replay)
            channel.send_nowait(replay)
            with trio.fail_after(2):
                assert (await node.inbox.receive()).sender == other
            await until(lambda: node.stats["duplicate"] == 1, "the duplicate")
            with pytest.raises(trio.WouldBlock):
                node.inbox.receive_nowait()
