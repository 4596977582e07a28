"""Interval digests over ledger entry hashes: an RFC 9162 Merkle tree and a hash chain.

The leaves' inputs are the 32-byte entry hashes of one interval, in ledger order.
RFC 9162 (Certificate Transparency v2) §2.1.1:

- ``MTH({}) = SHA-256()``
- ``MTH({d0}) = SHA-256(0x00 || d0)``  (the *leaf hash*)
- ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` with ``k`` the largest power
  of two smaller than ``n``.

The 0x00/0x01 prefixes keep a leaf from passing for a node (second-preimage attacks), and
the split rule (rather than duplicating the last node, as Bitcoin does) means two different
lists never share a root. Every function here is pure; nothing is cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "HASH_SIZE",
    "chain_digest",
    "hash_leaf",
    "inclusion_proof",
    "merkle_root",
    "verify_inclusion",
]

HASH_SIZE = 32
_ZERO = bytes(HASH_SIZE)
_EMPTY_ROOT = hashlib.sha256(b"").digest()


def _check_hash(h: object, what: str) -> bytes:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
        raise ValueError(f"{what}: need {HASH_SIZE} bytes, got {h!r:.80}")
    return bytes(h)


def _check_hashes(hashes: Sequence[bytes]) -> list[bytes]:
    return [_check_hash(h, f"hashes[{i}]") for i, h in enumerate(hashes)]


def hash_leaf(entry_hash: bytes) -> bytes:
    """The RFC 9162 leaf hash of one entry hash: ``SHA-256(0x00 || entry_hash)``."""
    return hashlib.sha256(b"\x00" + entry_hash).digest()


def _hash_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: list[bytes], lo: int, hi: int) -> bytes:
    # Index ranges instead of slices: no copying, recursion depth is only log2(n).
    n = hi - lo
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return _hash_node(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash of the entry hashes, in order (empty: ``SHA-256()``)."""
    entries = _check_hashes(hashes)
    if not entries:
        return _EMPTY_ROOT
    return _mth([hash_leaf(h) for h in entries], 0, len(entries))


def inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion path of entry ``index``, from the leaf up to the root."""
    entries = _check_hashes(hashes)
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index: need an int, got {type(index).__name__}")
    if not 0 <= index < len(entries):
        raise IndexError(f"index: {index} is outside a tree of {len(entries)} entries")
    leaves = [hash_leaf(h) for h in entries]
    path: list[bytes] = []
    lo, hi, m = 0, len(leaves), index
    # Walk down from the root collecting the sibling subtree at each split; the RFC lists
    # them leaf-first, so reverse at the end.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaves, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def verify_inclusion(
    entry_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``entry_hash`` is entry ``index`` of a tree of ``tree_size`` with ``root``.

    ``entry_hash`` is the entry's own hash (a leaf *input*, as passed to ``merkle_root``);
    it is leaf-hashed here. The algorithm is RFC 9162 §2.1.3.2 verbatim. Malformed input
    (wrong types or lengths, index out of range) gives False, never an exception, because
    proofs come from peers.
    """
    try:
        entry = _check_hash(entry_hash, "entry_hash")
        expected = _check_hash(root, "root")
        path = [_check_hash(p, "proof") for p in proof]
    except (ValueError, TypeError):
        return False
    for v in (index, tree_size):
        if isinstance(v, bool) or not isinstance(v, int):
            return False
    if not 0 <= index < tree_size:
        return False
    fn, sn = index, tree_size - 1
    r = hash_leaf(entry)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _hash_node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _hash_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected


def chain_digest(hashes: Sequence[bytes]) -> bytes:
    """SHA-256 chain: ``d_0`` = 32 zero bytes, ``d_i = SHA-256(d_{i-1} || h_i)``; returns ``d_n``.

    Cheaper to keep up to date than a tree (one hash per appended entry) but gives no
    inclusion proofs; the empty list gives 32 zero bytes.
    """
    d = _ZERO
    for h in _check_hashes(hashes):
        d = hashlib.sha256(d + h).digest()
    return d
