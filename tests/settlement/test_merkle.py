"""RFC 9162 Merkle tree hash, inclusion proofs and the hash chain (settlement/merkle.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.settlement.merkle import (
    chain_digest,
    hash_leaf,
    inclusion_proof,
    merkle_root,
    verify_inclusion,
)


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def entries(n: int) -> list[bytes]:
    return [sha(bytes([i])) for i in range(n)]


def L(h: bytes) -> bytes:
    return sha(b"\x00" + h)


def N(a: bytes, b: bytes) -> bytes:
    return sha(b"\x01" + a + b)


# --- an independent naive reference, straight from the RFC's recursive definitions ---


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return sha(b"")
    if n == 1:
        return L(d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return N(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def shape(m: int, n: int) -> list[bool]:
    """Leaf-first: is the sibling at each level on the right?"""
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    return shape(m, k) + [True] if m < k else shape(m - k, n - k) + [False]


def test_size_binding_caveat() -> None:
    d = entries(3)
    assert verify_inclusion(d[0], 0, 4, inclusion_proof(d, 0), merkle_root(d))
    assert not verify_inclusion(d[2], 2, 4, inclusion_proof(d, 2), merkle_root(d))


# --- hand-derived vectors for n = 1..8 ---


def hand_root(d: list[bytes]) -> bytes:
    a, b, c, e, f, g, h, i = ([L(x) for x in d] + [b""] * 8)[:8]
    n = len(d)
    # Splits: 2=1+1, 3=2+1, 4=2+2, 5=4+1, 6=4+2, 7=4+(2+1), 8=4+4.
    trees = {
        1: lambda: a,
        2: lambda: N(a, b),
        3: lambda: N(N(a, b), c),
        4: lambda: N(N(a, b), N(c, e)),
        5: lambda: N(N(N(a, b), N(c, e)), f),
        6: lambda: N(N(N(a, b), N(c, e)), N(f, g)),
        7: lambda: N(N(N(a, b), N(c, e)), N(N(f, g), h)),
        8: lambda: N(N(N(a, b), N(c, e)), N(N(f, g), N(h, i))),
    }
    return trees[n]()


@pytest.mark.parametrize("n", range(1, 9))
def test_hand_vectors(n: int) -> None:
    d = entries(n)
    assert merkle_root(d) == hand_root(d)


def test_empty_and_single() -> None:
    assert merkle_root([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    d = entries(1)
    assert merkle_root(d) == hash_leaf(d[0]) == sha(b"\x00" + d[0])
    assert inclusion_proof(d, 0) == []
    assert verify_inclusion(d[0], 0, 1, [], merkle_root(d))


def test_not_duplicate_last_variant() -> None:
    # With "duplicate the last node", [a, b, c] and [a, b, c, c] share a root; not here.
    d = entries(3)
    assert merkle_root(d) != merkle_root(d + [d[2]])
    assert merkle_root(d) == N(N(L(d[0]), L(d[1])), L(d[2]))


def test_hand_proofs_n7() -> None:
    d = entries(7)
    lv = [L(x) for x in d]
    # Leaf 6 sits alone in the right subtree's right half: path is [N(4,5), left 4-tree].
    assert inclusion_proof(d, 6) == [N(lv[4], lv[5]), N(N(lv[0], lv[1]), N(lv[2], lv[3]))]
    assert inclusion_proof(d, 0) == [lv[1], N(lv[2], lv[3]), N(N(lv[4], lv[5]), lv[6])]
    assert inclusion_proof(d, 5) == [lv[4], lv[6], N(N(lv[0], lv[1]), N(lv[2], lv[3]))]


def test_chain_digest() -> None:
    assert chain_digest([]) == bytes(32)
    d = entries(3)
    want = bytes(32)
    for h in d:
        want = sha(want + h)
    assert chain_digest(d) == want
    assert chain_digest(d) != chain_digest(d[::-1])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"hashes\[1\]"):
        merkle_root([bytes(32), b"short"])
    with pytest.raises(ValueError, match="hashes"):
        chain_digest(["x" * 32])  # type: ignore[list-item]
    with pytest.raises(IndexError, match="index"):
        inclusion_proof(entries(3), 3)
    with pytest.raises(IndexError, match="index"):
        inclusion_proof(entries(3), -1)
    with pytest.raises(IndexError):
        inclusion_proof([], 0)
    d = entries(4)
    root = merkle_root(d)
    proof = inclusion_proof(d, 1)
    assert not verify_inclusion(d[1], 1, 0, proof, root)
    assert not verify_inclusion(d[1], -1, 4, proof, root)
    assert not verify_inclusion(d[1], 1, 4, proof, root[:31])
    assert not verify_inclusion(b"short", 1, 4, proof, root)
    assert not verify_inclusion(d[1], 1, 4, proof + [b"x"], root)
    assert not verify_inclusion(d[1], True, 4, proof, root)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=100))
def test_matches_reference(d: list[bytes]) -> None:
    assert merkle_root(d) == ref_mth(d)
    for m in range(len(d)):
        assert inclusion_proof(d, m) == ref_path(m, d)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 100), st.data())
def test_every_proof_verifies_and_tampering_fails(n: int, data: st.DataObject) -> None:
    d = entries(n)
    root = merkle_root(d)
    for m in range(n):
        assert verify_inclusion(d[m], m, n, inclusion_proof(d, m), root)
    m = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(d, m)
    # Wrong index, wrong size, wrong entry, wrong root.
    for other in range(n):
        if other != m and d[other] != d[m]:
            assert not verify_inclusion(d[m], other, n, proof, root)
    # A wrong size fails unless it gives the index the very same path shape (e.g. index 0
    # of 3 and of 4): the proof does not bind the size, the signed digest must.
    for size in {n - 1, n + 1, 2 * n, max(1, n // 2)} - {n}:
        same_shape = m < size and shape(m, size) == shape(m, n)
        assert verify_inclusion(d[m], m, size, proof, root) == same_shape
    assert not verify_inclusion(sha(b"not an entry"), m, n, proof, root)
    assert not verify_inclusion(d[m], m, n, proof, sha(root))
    # A flipped bit anywhere in the entry, the proof or the root.
    pos = data.draw(st.integers(0, 31))
    bit = 1 << data.draw(st.integers(0, 7))

    def flip(b: bytes) -> bytes:
        return b[:pos] + bytes([b[pos] ^ bit]) + b[pos + 1 :]

    assert not verify_inclusion(flip(d[m]), m, n, proof, root)
    assert not verify_inclusion(d[m], m, n, proof, flip(root))
    for j in range(len(proof)):
        bad = list(proof)
        bad[j] = flip(bad[j])
        assert not verify_inclusion(d[m], m, n, bad, root)
    # Proofs one element short or long.
    if proof:
        assert not verify_inclusion(d[m], m, n, proof[:-1], root)
    assert not verify_inclusion(d[m], m, n, proof + [root], root)
