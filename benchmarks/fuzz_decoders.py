#!/usr/bin/env python3
"""Fuzz the decoders a peer's bytes reach: gossip messages, sync requests, frames.

    python benchmarks/fuzz_decoders.py [--inputs 1000000] [--seed 1]

Each input goes to every target below, which may refuse it only in its documented way;
any other exception, and any input that takes more than a second, is a crash. Inputs are
random bytes and mutations (bit flips, cuts, splices, repeats) of valid seeds. Prints the
inputs run, the crashes (0 is the bound) and the throughput; exits 1 on a crash, with the
first crashing input in hex. tests/exchange/node/test_fuzz_decoders.py runs the same loop
on a bounded number of inputs.

Targets:
- ``wire.parse`` on the orders, readings and digests topics (refuses with ``Refused``);
- ``sync.serve`` with a stand-in node (refuses with ``ValueError``);
- the request/response frame reader, ``p2p._read_frame`` (``EOFError``,
  ``FrameTooLarge``);
- pubsub's frame reader and RPC decoder as py-libp2p runs them (its read and parse
  errors, protobuf's ``DecodeError``); the node's stream guard catches whatever they
  raise, so this target checks that nothing hangs or escapes as a non-``Exception``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils.varint import ParseError, read_varint_prefixed_bytes_limited

from wattmesh.exchange.community_file import Community, MemberSpec
from wattmesh.exchange.node import p2p, sync
from wattmesh.exchange.node.wire import DIGESTS, ORDERS, READINGS, Refused, parse
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.records import Order

L = 900_000
START = 1_781_935_200_000 - 1_781_935_200_000 % L


class _Stream:
    """A stream that hands out ``data`` and then EOF, without suspending."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    async def read(self, n: int | None = None) -> bytes:
        n = len(self.data) - self.pos if n is None or n < 0 else n
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


def _drive(coro: Any) -> Any:
    """Run a coroutine that never suspends (its stream answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the decoder suspended on a stream that never blocks")


class _Store:
    def ids(self, _t: int) -> list[str]:
        return ["a" * 64, "b" * 64]

    def messages(self, ids: Any) -> list[tuple[str, str, bytes]]:
        return [(i, "order", b"{}") for i in ids if i == "a" * 64]


class _Node:
    """What ``sync.serve`` reads of a node."""

    store = _Store()
    closes: dict[int, tuple[str, int]] = {START: ("c" * 64, 1)}

    def __init__(self, community: Community) -> None:
        self.community = community

    def interval_state(self, t: int) -> str:
        return "settled" if t in self.closes else "open"


def targets() -> dict[str, tuple[Callable[[bytes], Any], tuple[type[BaseException], ...]]]:
    """name -> (call on the input, the exceptions that are its documented refusals)."""
    key = generate_key()
    member = MemberSpec(peer_id_of(key), bmax=10_000, money=10**9)
    community = Community(name="fuzz", start_ms=START, interval_ms=L, members=(member,))
    node = _Node(community)

    def pubsub_frame(data: bytes) -> None:
        raw = _drive(read_varint_prefixed_bytes_limited(_Stream(data), 1 << 20))
        rpc_pb2.RPC().ParseFromString(raw)

    return {
        "wire.parse(orders)": (lambda d: parse(ORDERS, d, community), (Refused,)),
        "wire.parse(readings)": (lambda d: parse(READINGS, d, community), (Refused,)),
        "wire.parse(digests)": (lambda d: parse(DIGESTS, d, community), (Refused,)),
        "sync.serve": (
            lambda d: sync.serve(node, member.peer_id, d),  # type: ignore[arg-type]
            (ValueError,),
        ),
        "p2p._read_frame": (
            lambda d: _drive(p2p._read_frame(_Stream(d), 1 << 16)),  # type: ignore[arg-type]
            (EOFError, p2p.FrameTooLarge),
        ),
        "pubsub frame": (
            pubsub_frame,
            (ParseError, IncompleteReadError, MessageTooLarge, DecodeError),
        ),
    }


def seeds() -> list[bytes]:
    """Valid inputs to mutate: a signed order, sync requests, frames, an RPC."""
    key = generate_key()
    order = Order("energy", "ask", 150_000, 1_000, peer_id_of(key), START, START + L)
    rpc = rpc_pb2.RPC()
    rpc.subscriptions.add(subscribe=True, topicid="wattmesh/x/orders")
    msg = rpc.publish.add(data=b"{}", seqno=b"\x00" * 8, topicIDs=["wattmesh/x/orders"])
    msg.from_id = b"\x00\x24" + b"\x01" * 36
    body = rpc.SerializeToString()
    return [
        canonical(order.signed(key).to_dict()),
        orjson.dumps({"op": "set", "interval": START}),
        orjson.dumps({"op": "get", "interval": START, "ids": ["a" * 64, 5, None]}),
        len(b"hello").to_bytes(4, "big") + b"hello",
        bytes([len(body)]) + body,
    ]


def mutate(rng: random.Random, pool: list[bytes]) -> bytes:
    if rng.random() < 0.2:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
    data = bytearray(rng.choice(pool))
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # cut
            del data[rng.randrange(len(data)) :]
        elif op == 2:  # splice in bytes
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9)))
        elif op == 3 and data:  # repeat a slice
            i = rng.randrange(len(data))
            data[i:i] = data[i : i + rng.randrange(1, 32)] * rng.randrange(1, 4)
        else:  # an interesting byte
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes([rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x22, 0x5C, 0x7B])])
    return bytes(data)


def run(inputs: int, seed: int) -> tuple[int, list[tuple[str, bytes, BaseException]]]:
    """Run ``inputs`` inputs through every target; return (runs, crashes)."""
    rng = random.Random(seed)
    pool = seeds()
    checks = targets()
    crashes: list[tuple[str, bytes, BaseException]] = []
    runs = 0
    for _ in range(inputs):
        data = mutate(rng, pool)
        for name, (call, refusals) in checks.items():
            t0 = time.perf_counter()
            try:
                call(data)
            except refusals:
                pass
            except Exception as exc:  # a crash: not the target's documented refusal
                crashes.append((name, data, exc))
            if time.perf_counter() - t0 > 1.0:
                crashes.append((name, data, TimeoutError("took more than a second")))
            runs += 1
    return runs, crashes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs (each to every target)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.inputs < 1:
        sys.exit("error: --inputs must be at least 1")
    t0 = time.perf_counter()
    runs, crashes = run(args.inputs, args.seed)
    dt = time.perf_counter() - t0
    print(f"{args.inputs:,} inputs x {len(targets())} targets = {runs:,} runs in {dt:.1f} s"
          f" ({runs / dt:,.0f} runs/s); crashes: {len(crashes)} (bound: 0)")  # fmt: skip
    if crashes:
        name, data, exc = crashes[0]
        print(f"first crash: {name} on {data.hex()}: {exc!r}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
