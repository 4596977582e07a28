"""Every refusal code wattmesh uses, in one table.

A record that is refused, on any path, is refused with one of these codes: replaying an
order log (``exchange/replay``), gossip admission and settlement in the node
(``exchange/node``), and the meters' validator (``meters/validate.py``). The same code
means the same thing wherever it appears; each path documents when it gives which
(docs/replay.md, docs/node.md, docs/meters.md), and docs/refusals.md lists the table.
The table lives here, in the package everything else may import, so the meters (which use
only ``settlement``) share it too.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["REFUSALS", "Refusal", "codes_of", "refusal_text"]


class Refusal(NamedTuple):
    """One code: what it means, and the paths that give it."""

    meaning: str
    paths: frozenset[str]


def _r(meaning: str, *paths: str) -> Refusal:
    return Refusal(meaning, frozenset(paths))


# Paths: "replay" (order-log replay), "gossip" (the node's admission of messages),
# "settle" (the node's call auction over a certified set), "meter" (ReadingValidator),
# "api" (the node's HTTP API: its own checks, then a write's admission as gossip).
REFUSALS: dict[str, Refusal] = {
    "malformed": _r(
        "not the form of a record: a missing, unknown or mistyped field, a value out of "
        "range, not canonical, too large",
        "gossip",
        "api",
        "settle",
        "meter",
    ),
    "bad-json": _r("a line that is not JSON", "replay"),
    "bad-record": _r(
        "a log line that is not a valid record: not an object, unknown type, a missing, "
        "unknown or mistyped field, a value out of range",
        "replay",
    ),
    "bad-signature": _r(
        "a missing or invalid signature, or an id that does not name the record's content",
        "replay",
        "gossip",
        "api",
        "settle",
        "meter",
    ),
    "not-member": _r(
        "the signer or owner is not a member of the community", "gossip", "settle", "api"
    ),
    "unknown-meter": _r("a reading from a meter no member registered", "gossip", "meter", "api"),
    "wrong-market": _r("an order for a market the community does not run", "gossip", "api"),
    "late": _r(
        "at or after its interval's gate (the signed ts), or heard after the gate plus grace, "
        "or older than allowed",
        "replay",
        "gossip",
        "api",
    ),
    "future": _r("a timestamp or an interval too far ahead of now", "gossip", "meter", "api"),
    "duplicate": _r(
        "a message already held, or a later copy of an order held in an earlier message",
        "gossip",
        "api",
    ),
    "duplicate-id": _r("an order id already used in the log", "replay"),
    "id-collision": _r(
        "another order holds the same engine key (the first 16 hex digits of its id)",
        "replay",
        "settle",
    ),
    "no-interval": _r("a call-mode order without a valid delivery interval", "replay"),
    "unsupported-tif": _r(
        "a time in force the call auction has no meaning for (fok)", "replay", "settle"
    ),  # fmt: skip
    "not-owner": _r("a cancel by anyone but the order's owner", "replay"),
    "not-live": _r(
        "a cancel of an order that is unknown, filled, cancelled or expired", "replay"
    ),  # fmt: skip
    "unknown-order": _r(
        "a cancel of an order this node does not hold for the same owner", "gossip", "api"
    ),  # fmt: skip
    "out-of-order": _r(
        "a reading whose seq is not above the meter's last accepted one", "gossip", "meter", "api"
    ),  # fmt: skip
    "overlap": _r("a reading that starts before the end of the meter's last one", "meter"),
    "impossible": _r("a reading above the meter's maximum power over its duration", "meter"),
    "over-budget": _r(
        "beyond its member's budget of messages, orders or bytes for the interval", "gossip", "api"
    ),  # fmt: skip
    "account-refused": _r(
        "an account line after the owner's first order, or a second one", "replay"
    ),  # fmt: skip
    "meter-refused": _r("a meter line the ledger or the validator refuses", "replay"),
    "unauthorized": _r("no token, session or login code, or one that is not valid", "api"),
    "forbidden": _r(
        "a read-only credential asking to write, or a page's write without its CSRF header",
        "api",
    ),
    "bad-origin": _r("a request sent by a page of another origin", "api"),
    "bad-host": _r("a Host header that does not name this node (DNS rebinding)", "api"),
    "too-large": _r("a request body above the API's limit", "api"),
    "slow-request": _r("a request body that did not arrive in time", "api"),
    "rate-limited": _r("more requests than the credential's rate allows", "api"),
    "too-many-streams": _r("as many event streams open as the node allows", "api"),
    "not-found": _r("no such endpoint, order or ledger entry", "api"),
    "reading-refused": _r(
        "a reading the validator or the ledger refuses (its own reason follows)",
        "replay",
        "settle",
    ),
}


def codes_of(path: str) -> tuple[str, ...]:
    """The codes one path gives, in the table's order."""
    codes = tuple(code for code, r in REFUSALS.items() if path in r.paths)
    if not codes:
        raise ValueError(f"no refusal path named {path!r}")
    return codes


def refusal_text(code: str, detail: str) -> str:
    """``code: detail``, the one-line form of a refusal; the code must be in the table."""
    if code not in REFUSALS:
        raise ValueError(f"{code!r} is not a refusal code (settlement/refusals.py)")
    return f"{code}: {detail}"
