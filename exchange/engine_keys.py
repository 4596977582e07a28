"""How an order id becomes the engine's integer key: one rule for replay and the node, so
that the call auction breaks ties the same way in both (by id)."""

from __future__ import annotations

import hashlib
import re

__all__ = ["order_key"]

_is_hex64 = re.compile("[0-9a-f]{64}").fullmatch


def order_key(order_id: str) -> int:
    """The engine's uint64 key of an order id.

    A 64-hex id (a SHA-256) maps to the integer of its first 16 hex digits, so ordering by
    key is ordering by id, which the call auction uses to break ties; any other id string
    maps to the first 8 bytes of its SHA-256, big-endian.
    """
    if _is_hex64(order_id):
        return int(order_id[:16], 16)
    digest = hashlib.sha256(order_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")
