"""What household nodes say to each other: the gossip messages on a community's three
topics and the requests of the reconciliation protocol (docs/node.md, "Messages").

Every message is a signed record in canonical JSON (docs/design.md, "Conventions"):

- orders topic: an ``order`` or a ``cancel`` (settlement.records), or a ``batch``: many
  orders (and cancels) of one owner for one interval under one signature, so a bot posts
  a hundred orders for the price of one message and one signature check;
- readings topic: a meter ``reading``, signed by the meter;
- digests topic: an ``interval_vote`` (settlement.certificate): the set a node holds for
  an interval, which a majority's votes certify; and an ``interval_digest``: what a node
  settled for an interval, signed by it.

:func:`parse` checks what a message says by itself (schema, size, signature, membership,
market and price bounds) and raises :class:`Refused` with one of :data:`REASONS`. Checks
against time and against what a node already holds are in :mod:`.admission`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from wattmesh.exchange.clock import interval_start
from wattmesh.settlement.canonical import canonical, record_id, sha256_hex
from wattmesh.settlement.certificate import IntervalVote
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.keys import Ed25519PrivateKey, peer_id_of, sign, verify_bytes
from wattmesh.settlement.records import (
    MAX_NAME,
    Cancel,
    MarketSpec,
    Order,
    Reading,
    RecordError,
)
from wattmesh.settlement.refusals import codes_of

if TYPE_CHECKING:
    from wattmesh.exchange.community_file import Community

__all__ = [
    "MAX_MESSAGE_BYTES",
    "READ_BACK_KINDS",
    "REASONS",
    "TOPIC_OF_KIND",
    "Batch",
    "Inbound",
    "IntervalDigest",
    "Refused",
    "carried_records",
    "parse",
    "reading_interval",
    "set_digest",
    "topics",
]

MAX_MESSAGE_BYTES = 512 * 1024  # the transport's limit (exchange/node/p2p.py) and ours

# Why a message was refused; a node counts its refusals by these names (the shared table:
# settlement/refusals.py).
REASONS = codes_of("gossip")

ORDERS, READINGS, DIGESTS = "orders", "readings", "digests"


def topics(community: Community) -> dict[str, str]:
    """The community's topic names by kind. The community file's id is in them, so nodes
    started from different community files never exchange a message."""
    base = f"wattmesh/{community.name}/{community.id[:16]}"
    return {kind: f"{base}/{kind}" for kind in (ORDERS, READINGS, DIGESTS)}


class Refused(WattmeshError, ValueError):
    """A message that must not be accepted; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"{reason!r} is not a gossip refusal code")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def set_digest(ids: Iterable[str]) -> str:
    """The digest of a set of record ids: hex SHA-256 of the canonical sorted list."""
    return record_id({"ids": sorted(ids)})


def reading_interval(reading: Reading, interval_ms: int) -> int:
    """The interval whose settlement applies ``reading``: the first gate after its end.

    A meter reads ``[t - L, t)`` at ``t`` at the earliest, so the reading cannot make the
    gate of ``t``; it goes into ``t + L``, which leaves it a whole interval to spread.
    """
    return interval_start(reading.end, interval_ms) + interval_ms


_BATCH_KEYS = frozenset(("type", "owner", "interval", "ts", "orders", "cancels", "sig"))
_ITEM_KEYS = frozenset(("market", "side", "price", "qty", "tif"))


@dataclass(frozen=True, slots=True)
class Batch:
    """Orders and cancels of one owner for one interval, under one signature.

    Each item of ``orders`` is an order without its owner, ts and interval, which it
    takes from the batch, so it is the same :class:`Order` (same id) as if sent alone.
    ``cancels`` are ids of the owner's orders for the same interval.
    """

    owner: str
    interval: int
    ts: int
    orders: tuple[Order, ...]
    cancels: tuple[str, ...] = ()
    sig: str | None = None

    @classmethod
    def of(
        cls,
        key: Ed25519PrivateKey,
        interval: int,
        ts: int,
        orders: Iterable[dict[str, Any]],
        cancels: Iterable[str] = (),
    ) -> Batch:
        """A signed batch of ``key``'s orders, each given as {market, side, price, qty[, tif]}."""
        owner = peer_id_of(key)
        made = tuple(_item_order(item, owner, ts, interval, None) for item in orders)
        batch = cls(owner, interval, ts, made, tuple(cancels))
        return dataclasses.replace(batch, sig=sign(key, batch.body()))

    def message(self) -> bytes:
        """The canonical bytes to publish."""
        return canonical(self.to_dict())

    def body(self) -> dict[str, Any]:
        """The signed content: everything but ``sig``."""
        items = []
        for o in self.orders:
            item = {"market": o.market, "side": o.side, "price": o.price, "qty": o.qty}
            if o.tif != "gtc":  # one spelling per order: the default is written by omission
                item["tif"] = o.tif
            items.append(item)
        return {
            "type": "batch",
            "owner": self.owner,
            "interval": self.interval,
            "ts": self.ts,
            "orders": items,
            "cancels": list(self.cancels),
        }

    def to_dict(self) -> dict[str, Any]:
        """The message: the body and ``sig``."""
        return {**self.body(), "sig": self.sig}

    def computed_id(self) -> str:
        """The id of the batch message (hex SHA-256 of its body)."""
        return record_id(self.body())


def _item_order(item: Any, owner: str, ts: int, interval: int, market: MarketSpec | None) -> Order:
    if type(item) is not dict or not item.keys() <= _ITEM_KEYS:
        extra = sorted(item.keys() - _ITEM_KEYS) if type(item) is dict else None
        raise RecordError("orders", f"an item must be an object of {sorted(_ITEM_KEYS)}"
                          + (f"; unknown {extra}" if extra else ""))  # fmt: skip
    if item.get("tif") == "gtc":
        raise RecordError("tif", "'gtc' is the default and written by omission in a batch")
    d = {**item, "owner": owner, "ts": ts, "interval": interval}
    return Order.from_dict(d, market)


_DIGEST_KEYS = frozenset(("type", "node", "interval", "set", "close", "seq", "ts", "sig"))


@dataclass(frozen=True, slots=True)
class IntervalDigest:
    """What node ``node`` settled for ``interval``: the digest of the record set it cleared
    (``set``), and the hash and seq of its ``interval_close`` ledger entry (``close``, which
    commits to the whole ledger up to that interval)."""

    node: str
    interval: int
    set: str
    close: str
    seq: int
    ts: int
    sig: str | None = None

    def body(self) -> dict[str, Any]:
        """The signed content: everything but ``sig``."""
        return {
            "type": "interval_digest",
            "node": self.node,
            "interval": self.interval,
            "set": self.set,
            "close": self.close,
            "seq": self.seq,
            "ts": self.ts,
        }

    def signed(self, key: Ed25519PrivateKey) -> IntervalDigest:
        """A copy signed by ``key`` (the node's own)."""
        return dataclasses.replace(self, sig=sign(key, self.body()))

    def to_dict(self) -> dict[str, Any]:
        """The message: the body and ``sig``."""
        return {**self.body(), "sig": self.sig}


# The kinds whose record can be read back from their bytes alone (:meth:`Inbound.stored`):
# those that carry or cancel orders, the bulk of what a node holds until an interval
# settles.
READ_BACK_KINDS = frozenset(("order", "cancel", "batch"))
# Bounds for reading back a message that passed :func:`parse`: its price was checked
# against the community's market then, and is not checked again.
_ANY_PRICE = MarketSpec("any", 1, 2**63 - 1)


class Inbound:
    """A message that passed :func:`parse`.

    ``id`` names it in reconciliation sets; ``interval`` is the interval whose settlement
    uses it (None for a cancel, whose interval is its order's, looked up by
    :meth:`.admission.Admission.interval_of`; for a digest, the interval it reports);
    ``signer`` is the member (or meter) that signed it; ``ts`` its timestamp (a reading's
    end); ``data`` its canonical bytes, as stored and served to peers.

    ``record`` is the parsed message. One made by :meth:`stored` (an order, cancel or
    batch a node holds) reads ``record`` back from ``data`` each time it is asked for, so
    what a node holds is bytes, not one parsed object per order.
    """

    __slots__ = ("kind", "id", "interval", "signer", "ts", "data", "_record")

    kind: str  # "order" | "cancel" | "batch" | "reading" | "interval_vote" | "interval_digest"
    id: str
    interval: int | None
    signer: str
    ts: int
    data: bytes
    _record: Order | Cancel | Batch | Reading | IntervalVote | IntervalDigest | None

    def __init__(
        self,
        kind: str,
        id: str,
        interval: int | None,
        signer: str,
        ts: int,
        record: Order | Cancel | Batch | Reading | IntervalVote | IntervalDigest | None,
        data: bytes,
    ) -> None:
        _set = object.__setattr__
        _set(self, "kind", kind)
        _set(self, "id", id)
        _set(self, "interval", interval)
        _set(self, "signer", signer)
        _set(self, "ts", ts)
        _set(self, "data", data)
        _set(self, "_record", record)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Inbound is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Inbound:
            return NotImplemented
        # the bytes decide everything else (parse is a function of them and the community)
        return (self.kind, self.id, self.interval, self.data) == (
            other.kind, other.id, other.interval, other.data,
        )  # fmt: skip

    def __hash__(self) -> int:
        return hash((self.kind, self.id, self.interval, self.data))

    def __repr__(self) -> str:
        return (f"Inbound(kind={self.kind!r}, id={self.id!r}, interval={self.interval!r}, "
                f"signer={self.signer!r}, ts={self.ts!r}, {len(self.data)} bytes)")  # fmt: skip

    @property
    def record(self) -> Order | Cancel | Batch | Reading | IntervalVote | IntervalDigest:
        """The parsed message (read back from ``data`` in one made by :meth:`stored`)."""
        record = self._record
        return record if record is not None else _read_back(self.kind, self.data)

    @classmethod
    def stored(
        cls, kind: str, id: str, interval: int | None, signer: str, ts: int, data: bytes
    ) -> Inbound:
        """A held order, cancel or batch (one of :data:`READ_BACK_KINDS`) whose ``data``
        passed :func:`parse`: its record is read back from ``data`` when asked for."""
        if kind not in READ_BACK_KINDS:
            raise ValueError(f"a {kind} is held parsed, never as bytes only")
        return cls(kind, id, interval, signer, ts, None, data)

    def orders(self) -> tuple[Order, ...]:
        """The orders this message carries."""
        if self.kind == "order":
            return (self.record,)  # type: ignore[return-value]
        if self.kind == "batch":
            return self.record.orders  # type: ignore[union-attr]
        return ()

    def cancelled(self) -> tuple[str, ...]:
        """Ids of the orders this message cancels."""
        if self.kind == "cancel":
            return (self.record.id,)  # type: ignore[union-attr]
        if self.kind == "batch":
            return self.record.cancels  # type: ignore[union-attr]
        return ()


def _read_back(kind: str, data: bytes) -> Order | Cancel | Batch:
    """The record of a held order, cancel or batch, from the canonical bytes that passed
    :func:`parse` (so no signature, membership or price check again): the same records,
    with the same ids, as :func:`parse` gave."""
    d = orjson.loads(data)
    if kind == "batch":
        owner, interval, ts = d["owner"], d["interval"], d["ts"]
        orders = tuple(_item_order(item, owner, ts, interval, _ANY_PRICE) for item in d["orders"])
        return Batch(owner, interval, ts, orders, tuple(d["cancels"]), d["sig"])
    if kind == "order":
        return Order.from_dict(d, _ANY_PRICE)
    if kind == "cancel":
        return Cancel.from_dict(d)
    raise ValueError(f"a {kind} is not read back from its bytes")


def carried_records(
    messages: Iterable[Inbound],
) -> tuple[list[Order], list[Cancel], list[Reading]]:
    """The orders, cancels and readings that ``messages`` carry, as
    :func:`.settle_interval.settle_interval` takes them: a batch's orders and cancels are
    its owner's, at the batch's ts."""
    orders: list[Order] = []
    cancels: list[Cancel] = []
    readings: list[Reading] = []
    for m in messages:
        if m.kind == "reading":
            readings.append(m.record)  # type: ignore[arg-type]
        orders.extend(m.orders())
        cancels.extend(Cancel(oid, m.signer, m.ts) for oid in m.cancelled())
    return orders, cancels, readings


_KINDS_BY_TOPIC = {
    ORDERS: ("order", "cancel", "batch"),
    READINGS: ("reading",),
    DIGESTS: ("interval_vote", "interval_digest"),
}
# The topic each kind of message travels on.
TOPIC_OF_KIND = {kind: topic for topic, kinds in _KINDS_BY_TOPIC.items() for kind in kinds}


def parse(topic: str, data: bytes, community: Community) -> Inbound:
    """Check a message on ``topic`` (ORDERS, READINGS or DIGESTS) by itself: size, schema,
    canonical bytes, signature, membership, market. Raises :class:`Refused`."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise Refused("malformed", f"{len(data)} bytes exceeds the limit {MAX_MESSAGE_BYTES}")
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Refused("malformed", f"not JSON: {exc}") from None
    kind = d.get("type") if type(d) is dict else None
    allowed = _KINDS_BY_TOPIC[topic]
    if kind not in allowed:
        raise Refused("malformed", f"type: must be one of {list(allowed)} here, got {kind!r:.40}")
    try:
        inbound = _PARSERS[kind](d, community, data)
        canon = canonical(d)
    except Refused:  # a ValueError too: keep its own reason
        raise
    except ValueError as exc:  # RecordError, CanonicalError, bad values records refuse
        raise Refused("malformed", f"{kind}: {exc}") from None
    if canon != data:
        # One spelling per message: ids and signatures are over canonical bytes, and peers
        # serve the bytes they stored, so a non-canonical spelling would fork the sets.
        raise Refused("malformed", "not in canonical form (sorted keys, no spaces)")
    return inbound


def _market(community: Community) -> MarketSpec:
    return MarketSpec(community.market, community.price_min, community.price_max)


def _member(who: str, community: Community) -> None:
    if community.member(who) is None:
        raise Refused("not-member", f"{who:.60} is not a member of {community.name}")


def _signed(signer: str, body: dict[str, Any], sig: Any) -> tuple[str, bool]:
    """(the record id of ``body``, whether ``sig`` is ``signer``'s signature of it), from
    one encoding of the body."""
    raw = canonical(body)
    return sha256_hex(raw), type(sig) is str and verify_bytes(signer, raw, sig)


def _parse_order(d: dict, community: Community, data: bytes) -> Inbound:
    if d.get("market") != community.market and type(d.get("market")) is str:
        raise Refused("wrong-market", f"market {d['market']!r:.40}: this community runs "
                      f"{community.market!r}")  # fmt: skip
    order = Order.from_dict(d, _market(community))
    oid, signed = _signed(order.owner, order.body(), order.sig)
    if "id" not in d:
        raise RecordError("id", "missing")
    if order.id != oid:
        raise RecordError("id", f"does not match the order's content, {oid}")
    if order.interval is None:
        raise RecordError("interval", "missing: an order names the interval it is for")
    _member(order.owner, community)
    if not signed:
        raise Refused("bad-signature", f"order {order.id[:16]}: not signed by {order.owner}")
    return Inbound("order", order.id, order.interval, order.owner, order.ts, order, data)


def _parse_cancel(d: dict, community: Community, data: bytes) -> Inbound:
    cancel = Cancel.from_dict(d)
    _member(cancel.owner, community)
    cid, signed = _signed(cancel.owner, cancel.body(), cancel.sig)
    if not signed:
        raise Refused("bad-signature", f"cancel of {cancel.id[:16]}: not signed by {cancel.owner}")
    return Inbound("cancel", cid, None, cancel.owner, cancel.ts, cancel, data)


def _parse_batch(d: dict, community: Community, data: bytes) -> Inbound:
    if not d.keys() <= _BATCH_KEYS or len(d) != len(_BATCH_KEYS):
        missing = sorted(_BATCH_KEYS - d.keys())
        extra = sorted(d.keys() - _BATCH_KEYS)
        raise RecordError(None, f"batch fields: missing {missing}, unknown {extra}")
    owner, interval, ts, items, cancels, sig = (
        d["owner"], d["interval"], d["ts"], d["orders"], d["cancels"], d["sig"],
    )  # fmt: skip
    if type(owner) is not str or not 0 < len(owner) <= MAX_NAME:
        raise RecordError("owner", "must be a peer id")
    _member(owner, community)
    for name, v in (("interval", interval), ("ts", ts)):
        if type(v) is not int or not 0 <= v < 2**63:
            raise RecordError(name, f"must be integer milliseconds, got {v!r:.40}")
    if type(items) is not list or type(cancels) is not list:
        raise RecordError("orders", "orders and cancels must be lists")
    if not items and not cancels:
        raise RecordError("orders", "a batch carries at least one order or cancel")
    if len(items) + len(cancels) > community.max_batch:
        raise RecordError(
            "orders", f"{len(items) + len(cancels)} items; the community allows "
            f"{community.max_batch} per message",
        )  # fmt: skip
    for c in cancels:
        if type(c) is not str or len(c) != 64:
            raise RecordError("cancels", f"must be order ids, got {c!r:.40}")
    if len(set(cancels)) != len(cancels):
        raise RecordError("cancels", "an order id appears twice")
    spec = _market(community)
    for item in items:
        if type(item) is dict and item.get("market") != community.market:
            raise Refused("wrong-market", f"market {item.get('market')!r:.40}: this community "
                          f"runs {community.market!r}")  # fmt: skip
    orders = tuple(_item_order(item, owner, ts, interval, spec) for item in items)
    if len({o.id for o in orders}) != len(orders):
        raise RecordError("orders", "the same order appears twice (same content)")
    batch = Batch(owner, interval, ts, orders, tuple(cancels), sig)
    bid, signed = _signed(owner, batch.body(), sig)
    if not signed:
        raise Refused("bad-signature", f"batch: not signed by {owner}")
    return Inbound("batch", bid, interval, owner, ts, batch, data)


def _parse_reading(d: dict, community: Community, data: bytes) -> Inbound:
    reading = Reading.from_dict(d)
    owner = community.meter_owner(reading.meter)
    if owner is None:
        raise Refused("unknown-meter", f"meter {reading.meter:.60} is not registered")
    rid, signed = _signed(reading.meter, reading.body(), reading.sig)
    if not signed:
        raise Refused("bad-signature", f"reading {reading.seq}: not signed by its meter")
    interval = reading_interval(reading, community.interval_ms)
    return Inbound("reading", rid, interval, reading.meter, reading.end, reading, data)


def _parse_digest(d: dict, community: Community, data: bytes) -> Inbound:
    if d.keys() != _DIGEST_KEYS:
        missing = sorted(_DIGEST_KEYS - d.keys())
        extra = sorted(d.keys() - _DIGEST_KEYS)
        raise RecordError(None, f"interval_digest fields: missing {missing}, unknown {extra}")
    for name in ("interval", "seq", "ts"):
        v = d[name]
        if type(v) is not int or not 0 <= v < 2**63:
            raise RecordError(name, f"must be a non-negative integer, got {v!r:.40}")
    for name in ("set", "close"):
        v = d[name]
        if type(v) is not str or len(v) != 64 or v.strip("0123456789abcdef"):
            raise RecordError(name, "must be 64 lower-case hex digits")
    node = d["node"]
    if type(node) is not str:
        raise RecordError("node", "must be a peer id")
    _member(node, community)
    digest = IntervalDigest(node, d["interval"], d["set"], d["close"], d["seq"], d["ts"],
                            d["sig"])  # fmt: skip
    did, signed = _signed(node, digest.body(), d["sig"])
    if not signed:
        raise Refused("bad-signature", f"interval_digest: not signed by {node}")
    return Inbound("interval_digest", did, digest.interval, node, digest.ts, digest, data)


def _parse_vote(d: dict, community: Community, data: bytes) -> Inbound:
    vote = IntervalVote.from_dict(d)
    _member(vote.node, community)
    vid, signed = _signed(vote.node, vote.body(), vote.sig)
    if not signed:
        raise Refused("bad-signature", f"interval_vote: not signed by {vote.node}")
    return Inbound("interval_vote", vid, vote.interval, vote.node, vote.ts, vote, data)


_PARSERS = {
    "order": _parse_order,
    "cancel": _parse_cancel,
    "batch": _parse_batch,
    "reading": _parse_reading,
    "interval_vote": _parse_vote,
    "interval_digest": _parse_digest,
}
