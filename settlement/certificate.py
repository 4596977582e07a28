"""Interval votes and the certificates they make (docs/node.md, "Certificates").

A member's node signs an :class:`IntervalVote` for the set of messages it holds for an
interval: ``(interval, round, set digest)``. A :class:`Certificate` is a strict majority
of the community's members voting for one set digest in one round; a node settles an
interval only from a certified set, and ``ledger verify`` checks the certificate stored
beside every ``interval_close`` that names a set.

Rounds exist so that members whose first votes split can vote again without signing two
digests in one round (equivocation); :mod:`wattmesh.exchange.node.quorum` holds the rule for
when a member may vote what in a later round, which is what makes two certificates of
one interval impossible without an equivocator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from .canonical import canonical
from .keys import Ed25519PrivateKey, sign, verify_bytes
from .records import RecordError

__all__ = ["MAX_ROUND", "Certificate", "IntervalVote", "check_certificate", "majority"]

MAX_ROUND = 1000  # far more rounds than any interval needs; bounds what a peer can send
_VOTE_KEYS = frozenset(("type", "node", "interval", "round", "set", "ts", "sig"))
_HEX = frozenset("0123456789abcdef")


def majority(members: int) -> int:
    """The votes a certificate needs: a strict majority of ``members``."""
    return members // 2 + 1


def _hex64(name: str, v: Any) -> str:
    if type(v) is not str or len(v) != 64 or not _HEX.issuperset(v):
        raise RecordError(name, "must be 64 lower-case hex digits")
    return v


@dataclass(frozen=True, slots=True)
class IntervalVote:
    """Node ``node`` holds the set with digest ``set`` for ``interval`` (vote ``round``)."""

    node: str
    interval: int
    round: int
    set: str
    ts: int
    sig: str | None = None

    def body(self) -> dict[str, Any]:
        """The signed content: everything but ``sig``."""
        return {
            "type": "interval_vote",
            "node": self.node,
            "interval": self.interval,
            "round": self.round,
            "set": self.set,
            "ts": self.ts,
        }

    def signed(self, key: Ed25519PrivateKey) -> IntervalVote:
        """A copy signed by ``key`` (the node's own)."""
        return dataclasses.replace(self, sig=sign(key, self.body()))

    def to_dict(self) -> dict[str, Any]:
        """The message: the body and ``sig``."""
        return {**self.body(), "sig": self.sig}

    def verified(self) -> bool:
        """Whether ``sig`` is ``node``'s signature of the body."""
        return type(self.sig) is str and verify_bytes(self.node, canonical(self.body()), self.sig)

    @classmethod
    def from_dict(cls, d: Any) -> IntervalVote:
        """Check the form (not the signature); :class:`RecordError` names the bad field."""
        if type(d) is not dict or d.keys() != _VOTE_KEYS:
            keys = d.keys() if type(d) is dict else set()
            raise RecordError(None, f"interval_vote fields: missing {sorted(_VOTE_KEYS - keys)},"
                              f" unknown {sorted(keys - _VOTE_KEYS)}")  # fmt: skip
        if d["type"] != "interval_vote":
            raise RecordError("type", "must be 'interval_vote'")
        for name in ("interval", "ts"):
            v = d[name]
            if type(v) is not int or not 0 <= v < 2**63:
                raise RecordError(name, f"must be a non-negative integer, got {v!r:.40}")
        r = d["round"]
        if type(r) is not int or not 0 <= r <= MAX_ROUND:
            raise RecordError("round", f"must be an integer in [0, {MAX_ROUND}], got {r!r:.40}")
        if type(d["node"]) is not str or not 0 < len(d["node"]) <= 128:
            raise RecordError("node", "must be a peer id")
        if type(d["sig"]) is not str:
            raise RecordError("sig", "must be a hex signature")
        return cls(d["node"], d["interval"], r, _hex64("set", d["set"]), d["ts"], d["sig"])


@dataclass(frozen=True, slots=True)
class Certificate:
    """A majority's votes for one set digest of one interval in one round."""

    interval: int
    round: int
    set: str
    votes: tuple[IntervalVote, ...]  # sorted by node

    @classmethod
    def of(cls, votes: Iterable[IntervalVote]) -> Certificate:
        """The certificate these votes (one interval, round and set) make, sorted by node."""
        vs = tuple(sorted(votes, key=lambda v: v.node))
        first = vs[0]
        return cls(first.interval, first.round, first.set, vs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "round": self.round,
            "set": self.set,
            "votes": [v.to_dict() for v in self.votes],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Certificate:
        """Check the form of a stored or served certificate; RecordError if it is bad."""
        if type(d) is not dict or d.keys() != {"interval", "round", "set", "votes"}:
            raise RecordError(None, "a certificate has interval, round, set and votes")
        if type(d["votes"]) is not list or not d["votes"]:
            raise RecordError("votes", "must be a non-empty list")
        votes = tuple(IntervalVote.from_dict(v) for v in d["votes"])
        cert = cls(d["interval"], d["round"], _hex64("set", d["set"]), votes)
        if any((v.interval, v.round, v.set) != (cert.interval, cert.round, cert.set)
               for v in votes):  # fmt: skip
            raise RecordError("votes", "every vote must be for the certificate's interval, "
                              "round and set")  # fmt: skip
        return cert


def check_certificate(
    cert: Certificate, interval: int, set_digest: str, members: Collection[str]
) -> str | None:
    """Why ``cert`` does not certify ``set_digest`` for ``interval`` among ``members``
    (None when it does): its interval and set, distinct members, valid signatures and a
    strict majority."""
    if cert.interval != interval:
        return f"the certificate is for interval {cert.interval}, not {interval}"
    if cert.set != set_digest:
        return f"the certificate is for set {cert.set[:16]}, the close names {set_digest[:16]}"
    nodes = [v.node for v in cert.votes]
    if len(set(nodes)) != len(nodes):
        return "the certificate holds two votes of one node"
    for v in cert.votes:
        if v.node not in members:
            return f"vote of {v.node[:20]}, not a member"
        if not v.verified():
            return f"vote of {v.node[:20]} is not signed by it"
    need = majority(len(members))
    if len(nodes) < need:
        return f"{len(nodes)} votes of {len(members)} members; a certificate needs {need}"
    return None
