"""Transport for a household node: a py-libp2p host, GossipSub topics, request/response.

No market logic lives here. :func:`open_node` starts a host whose libp2p peer id is the
household's account id, subscribes to topics, runs a validator on every gossip message
before it is delivered or forwarded, and answers length-prefixed requests. Every setting
that departs from py-libp2p's defaults (several of which silently drop messages) is
commented with the measurement behind it.
"""

# ruff: noqa: E402  (libp2p is imported after the environment is set, below)

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

# Read by yamux at call time in 0.8.1, but set before the import in case a later version
# reads it once. The default (1) sends a window update per read: 3 s median latency at
# 20 msg/s over 8 hosts against 12 ms with 0. An explicit setting by the operator wins.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p import new_host
from libp2p.abc import IHost, INetStream, ISubscriptionAPI
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub import pubsub as _pubsub_module
from libp2p.pubsub import rpc_queue as _rpc_queue
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from wattmesh.settlement.errors import WattmeshError

logger = logging.getLogger(__name__)

# --- Tunings, all here but the yamux variable above: each default loses messages silently.
# The per-peer outbound queue holds 32 RPCs and drops the rest at DEBUG level; the module
# constant is bound as a default argument at import, so the default itself is replaced.
_rpc_queue.RpcQueue.__init__.__defaults__ = (10_000, _rpc_queue.DefaultMaxMessageSize)
# A subscription channel holds 32 messages and drops beyond that (with a WARNING).
_pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = 1024


class _GossipSub(GossipSub):
    """GossipSub whose equivocation map holds no message longer than its message cache.

    py-libp2p 0.8.1 keeps every message it forwards, whole, in ``equivocation_detection``
    and trims that only past 1,000 entries (to 500), so the last 500 to 1,000 messages
    stay held for good: about 7 KB of protobuf (upb) arena each, native memory invisible
    to tracemalloc, most of a flood's RSS that never came back (docs/reliability.md). The
    check compares a message with an earlier one of the same id, but pubsub's seen-cache
    already drops a repeated id for 120 s, and P2PNode._pump drops one for 65,536
    messages, so nothing is lost by forgetting it with the message cache (5 heartbeats).
    """

    def _periodic_security_cleanup(self) -> None:  # every heartbeat, after the cache shift
        super()._periodic_security_cleanup()
        held = self.mcache.msgs
        seen = self.equivocation_detection
        for mid in [m for m in seen if m not in held]:
            del seen[mid]


def _new_pubsub(host: IHost) -> tuple[Pubsub, GossipSub]:
    router = _GossipSub(
        # Only the three standard ids: what js-libp2p and go-libp2p speak (interop tested).
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
        # Per the notes: a random mesh with >= 4 links per host; a star loses messages.
        degree=6,
        degree_low=4,
        degree_high=12,
        # The default 120 s heartbeat delays mesh repair by two minutes.
        heartbeat_interval=1,
        # On by default it resets that heartbeat to 30-60 s when its health score is
        # below 0.7 (as with 4 nodes: 3 mesh peers of degree 6, 30 s after start), which
        # delays mesh repair and keeps forwarded messages in the cache for 5 minutes.
        adaptive_gossip_enabled=False,
        # On by default it caps each sender at 10 msg/s per topic, own publishes included,
        # and drops the rest silently; our topic validators are the gate instead.
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, router)
    # Seqnos start at int(time.time()), so a node restarted within seconds would reuse
    # them and have its new messages dropped as already seen for up to 120 s.
    pubsub.counter = time.time_ns()
    return pubsub, router


# Gossip payloads stay well under pubsub's 1 MiB RPC limit (which includes signature, key
# and topic); anything bigger belongs on request/response.
MAX_MESSAGE_SIZE = 512 * 1024
MAX_FRAME_SIZE = 16 * 1024 * 1024  # request/response frames; a digest set fetch fits
_DEDUP_WINDOW = 65_536  # message ids remembered for exactly-once delivery
_SERVE_TIMEOUT = 30.0  # a peer gets this long to send its request and read the answer


_BAD_FRAME_LOG_EVERY = 60.0  # seconds between log lines about one protocol's bad frames
BAN_SECONDS = 600.0  # how long pubsub ignores a peer that sent a malformed frame


def _guard(protocol: str, handler: Callable[[INetStream], Awaitable[None]],
           on_bad: Callable[[str, INetStream, Exception], Awaitable[None]],
           ) -> Callable[[INetStream], Awaitable[None]]:  # fmt: skip
    """Wrap a stream handler so that whatever a peer sends ends at most its own stream.

    py-libp2p 0.8.1 lets some decoding errors out of its handlers (pubsub's read loop
    catches ParseError but not protobuf's DecodeError), and an error out of a handler
    ends the host's nursery, so 33 bytes from any host that can connect ended the node
    (docs/reliability.md, "Malformed frames"). Cancellation still passes: it is not an
    ``Exception``.
    """

    async def guarded(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            await on_bad(protocol, stream, exc)

    return guarded


class FrameTooLarge(WattmeshError, ValueError):
    """A request or response frame is larger than the limit."""


class RequestFailed(WattmeshError, ConnectionError):
    """The peer could not be reached, or reset the stream (for example its handler failed)."""


class RequestTimeout(WattmeshError, TimeoutError):
    """No complete response arrived in time."""


@dataclass(frozen=True, slots=True)
class Message:
    """A gossip message after validation: ``sender`` is the original publisher's peer id."""

    topic: str
    sender: str
    data: bytes


Validator = Callable[[str, bytes], bool]  # (publisher peer id, data) -> accept?
Handler = Callable[[Message], Awaitable[None]]
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]  # (peer id, request) -> response


def key_pair_of(key: Ed25519PrivateKey) -> KeyPair:
    """The libp2p key pair of a household key (same seed, so the same peer id)."""
    return create_new_key_pair(key.private_bytes_raw())


class P2PNode:
    """A running host; get one from :func:`open_node`."""

    def __init__(self, host: IHost, pubsub: Pubsub, gossipsub: GossipSub, max_frame: int):
        self.host, self.pubsub, self.gossipsub = host, pubsub, gossipsub
        self.peer_id: str = host.get_id().to_base58()
        self.max_frame = max_frame
        # Counts: delivered, duplicate, refused:<topic>, validator_error:<topic>, ...
        self.stats: Counter[str] = Counter()
        self._validators: dict[str, Validator] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        send, self.inbox = trio.open_memory_channel[Message](1024)
        self._inbox_send = send
        self._bad_logged: dict[str, float] = {}
        # Peers on the other side of a simulated partition (tests): neither their gossip,
        # nor requests to or from them, nor dials go through, as if the network dropped them.
        self.cut_off: set[str] = set()

    def _guard_host_handlers(self) -> None:
        """Guard every stream handler registered so far (identify, ping, pubsub, ...)."""
        mux = self.host.get_mux()
        for protocol, handler in list(mux.handlers.items()):
            if protocol is not None and handler is not None:
                mux.handlers[protocol] = _guard(str(protocol), handler, self._bad_frame)

    async def _bad_frame(self, protocol: str, stream: INetStream, exc: Exception) -> None:
        """A peer sent what a handler could not take: count it, reset the stream, and ban
        the peer from pubsub for a while (a malformed frame leaves its state unknown)."""
        peer = stream.muxed_conn.peer_id
        self.stats[f"bad_frame:{protocol}"] += 1
        now = time.monotonic()
        if now - self._bad_logged.get(protocol, -_BAD_FRAME_LOG_EVERY) >= _BAD_FRAME_LOG_EVERY:
            self._bad_logged[protocol] = now
            logger.warning(
                "malformed frame on %s from %s (%r); stream reset, peer banned from pubsub"
                " for %d s (further ones are counted in status, logged once a minute)",
                protocol, peer.to_base58(), exc, BAN_SECONDS,
            )  # fmt: skip
        with trio.move_on_after(5, shield=True):
            try:
                await stream.reset()
            except Exception:
                pass
        # The penalty: pubsub ignores the peer (its streams are closed, its messages and
        # forwards dropped) for BAN_SECONDS; then it may try again.
        self.pubsub.add_to_blacklist(peer)
        self.pubsub.manager.run_task(self._lift_ban, peer)

    async def _lift_ban(self, peer: ID) -> None:
        await trio.sleep(BAN_SECONDS)
        self.pubsub.blacklisted_peers.discard(peer)

    @property
    def addrs(self) -> list[str]:
        """Full multiaddrs, ending in ``/p2p/<peer id>``, that others can dial."""
        return [str(a) for a in self.host.get_addrs()]

    @property
    def peers(self) -> set[str]:
        """Peer ids with an open connection (not cut off)."""
        return {p.to_base58() for p in self.host.get_connected_peers()} - self.cut_off

    def topic_peers(self, topic: str) -> set[str]:
        """Connected peers that announced a subscription to ``topic``."""
        return {p.to_base58() for p in self.pubsub.peer_topics.get(topic, ())}

    def mesh_peers(self, topic: str) -> set[str]:
        """Peers in our GossipSub mesh for ``topic`` (formed within a heartbeat or two)."""
        return {p.to_base58() for p in self.gossipsub.mesh.get(topic, ())}

    async def connect(self, addr: str, timeout: float = 10.0) -> str:
        """Dial a full multiaddr; return its peer id once pubsub can send to it."""
        info = info_from_p2p_addr(Multiaddr(addr))
        if info.peer_id.to_base58() in self.cut_off:
            raise ConnectionError(f"{info.peer_id} is cut off")
        with trio.fail_after(timeout):
            await self.host.connect(info)
            # Publishing before our pubsub stream exists is the loss reported upstream (#1398).
            await self.pubsub.wait_for_peer(info.peer_id, timeout=timeout)
        return info.peer_id.to_base58()

    async def publish(self, topic: str, data: bytes) -> None:
        """Sign and gossip ``data``; raise ValueError if our own validator refuses it."""
        if len(data) > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
        # pubsub would drop a refused own message without a word; say so instead.
        check = self._validators.get(topic)
        if check is not None and not check(self.peer_id, data):
            raise ValueError(f"own message refused by the {topic!r} validator")
        await self.pubsub.publish(topic, data)

    def _install_validator(self, topic: str, check: Validator) -> None:
        self._validators[topic] = check

        def gate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            if self.cut_off and forwarder.to_base58() in self.cut_off:
                return False
            sender = ID(msg.from_id).to_base58()
            if sender == self.peer_id:
                return True  # checked in publish(); pubsub drops replays of ours anyway
            try:
                ok = bool(check(sender, msg.data))
            except Exception:  # a validator bug must refuse, not kill the router
                logger.exception("validator for %s raised; message refused", topic)
                self.stats[f"validator_error:{topic}"] += 1
                return False
            if not ok:
                self.stats[f"refused:{topic}"] += 1
            return ok

        # pubsub runs it before delivery and before forwarding, and caches the verdict.
        self.pubsub.set_topic_validator(topic, gate, False)

    async def _pump(
        self, topic: str, sub: ISubscriptionAPI, handler: Handler | None, deliver_own: bool
    ) -> None:
        async for msg in sub:
            # pubsub's own seen-cache forgets after 120 s and peers replay recent messages
            # on reconnect, so deliveries are deduplicated again here by (publisher, seqno).
            msg_id = bytes(msg.from_id) + bytes(msg.seqno)
            if msg_id in self._seen:
                self.stats["duplicate"] += 1
                continue
            self._seen[msg_id] = None
            if len(self._seen) > _DEDUP_WINDOW:
                self._seen.popitem(last=False)
            sender = ID(msg.from_id).to_base58()
            if sender == self.peer_id and not deliver_own:
                continue  # a subscribed publisher gets its own messages back
            self.stats["delivered"] += 1
            message = Message(topic, sender, bytes(msg.data))
            if handler is None:
                await self._inbox_send.send(message)
                continue
            try:
                await handler(message)
            except Exception:  # one bad message must not take the node down
                logger.exception("handler for %s failed on a message from %s", topic, sender)
                self.stats[f"handler_error:{topic}"] += 1

    def set_handler(self, protocol_id: str, handler: RequestHandler) -> None:
        """Answer requests on ``protocol_id`` with ``await handler(peer_id, request)``.

        If the handler raises, the stream is reset and the caller gets RequestFailed.
        """

        async def serve(stream: INetStream) -> None:
            peer = stream.muxed_conn.peer_id.to_base58()
            if peer in self.cut_off:
                await stream.reset()
                return
            try:
                with trio.fail_after(_SERVE_TIMEOUT):
                    request = await _read_frame(stream, self.max_frame)
                    response = await handler(peer, request)
                    await _write_frame(stream, response, self.max_frame)
                await stream.close()
            except Exception as exc:
                logger.warning("request on %s from %s failed: %r", protocol_id, peer, exc)
                self.stats[f"serve_error:{protocol_id}"] += 1
                await stream.reset()

        self.host.set_stream_handler(
            TProtocol(protocol_id), _guard(protocol_id, serve, self._bad_frame)
        )

    async def request(
        self, peer_id: str, protocol_id: str, payload: bytes, timeout: float = 10.0
    ) -> bytes:
        """Send one framed request on a new stream and return the framed response."""
        if len(payload) > self.max_frame:
            raise FrameTooLarge(f"request of {len(payload)} bytes exceeds {self.max_frame}")
        stream: INetStream | None = None
        if peer_id in self.cut_off:
            raise RequestFailed(f"request to {peer_id}: cut off")
        try:
            with trio.fail_after(timeout):
                stream = await self.host.new_stream(
                    ID.from_base58(peer_id), [TProtocol(protocol_id)]
                )
                await _write_frame(stream, payload, self.max_frame)
                response = await _read_frame(stream, self.max_frame)
                await stream.close()
                stream = None
                return response
        except trio.TooSlowError:
            raise RequestTimeout(
                f"no response from {peer_id} on {protocol_id} within {timeout} s"
            ) from None
        except FrameTooLarge:
            raise
        except Exception as exc:
            raise RequestFailed(f"request to {peer_id} on {protocol_id}: {exc!r}") from exc
        finally:
            if stream is not None:  # failed or cancelled half-way: tell the peer at once
                with trio.CancelScope(shield=True):
                    await stream.reset()


async def _write_frame(stream: INetStream, data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise FrameTooLarge(f"frame of {len(data)} bytes exceeds {limit}")
    await stream.write(len(data).to_bytes(4, "big") + data)


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))  # may return fewer bytes than asked
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def _read_frame(stream: INetStream, limit: int) -> bytes:
    size = int.from_bytes(await _read_exactly(stream, 4), "big")
    if size > limit:
        raise FrameTooLarge(f"peer announced a frame of {size} bytes; the limit is {limit}")
    return await _read_exactly(stream, size)


@asynccontextmanager
async def open_node(
    key: Ed25519PrivateKey,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    topics: Iterable[str] = (),
    validators: Mapping[str, Validator] | None = None,
    handlers: Mapping[str, Handler] | None = None,
    *,
    deliver_own: bool = False,
    max_frame: int = MAX_FRAME_SIZE,
) -> AsyncIterator[P2PNode]:
    """Run a node for the duration of the block; peers see it leave when the block ends.

    Messages on a topic with an entry in ``handlers`` are awaited there one at a time, in
    arrival order; all others arrive on ``node.inbox``. Each message is delivered once, and
    our own messages only with ``deliver_own``. A slow reader holds up its topic; past
    1024 waiting messages pubsub drops (reconciliation recovers them). Run several nodes in
    one program as nested blocks or one task each, never left in a different order.
    """
    host = new_host(key_pair=key_pair_of(key))
    pubsub, gossipsub = _new_pubsub(host)
    node = P2PNode(host, pubsub, gossipsub, max_frame)
    node._guard_host_handlers()
    for topic, check in (validators or {}).items():
        node._install_validator(topic, check)
    try:
        async with host.run(listen_addrs=[Multiaddr(listen)]):
            async with background_trio_service(pubsub), background_trio_service(gossipsub):
                await pubsub.wait_until_ready()
                async with trio.open_nursery() as nursery:
                    for topic in topics:
                        sub = await pubsub.subscribe(topic)  # subscribed before anyone publishes
                        handler = (handlers or {}).get(topic)
                        nursery.start_soon(node._pump, topic, sub, handler, deliver_own)
                    try:
                        yield node
                    finally:
                        # Cancelling host.run() leaves connections open and peers keep a dead
                        # node for 15 s and more; close() lets them see us go within 0.4 s.
                        with trio.CancelScope(shield=True) as scope:
                            scope.deadline = trio.current_time() + 5
                            await host.close()
                        nursery.cancel_scope.cancel()
                        node._inbox_send.close()
    except BaseExceptionGroup as group:
        # libp2p nests five nurseries around the block, so an error raised in it would
        # surface five groups deep (past traceback's display depth); re-raise it bare.
        leaf = _sole_leaf(group)
        if leaf is None:
            raise
        context = leaf.__context__
        try:
            raise leaf
        finally:
            leaf.__context__ = context  # not "during handling of <the group>"


def _sole_leaf(error: BaseException) -> BaseException | None:
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error
