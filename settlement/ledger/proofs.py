"""Inclusion proofs of an entry in its interval's close: their fields and the check a
third party runs (docs/ledger.md, "Proofs")."""

from __future__ import annotations

from typing import Any

from ..merkle import verify_inclusion
from .schema import (
    LedgerError,
    hex64_field,
    int_field,
    show_value,
)

PROOF_FIELDS = (
    "entry", "entry_hash", "interval", "close_seq", "index", "tree_size", "root", "proof",
)  # fmt: skip


def parse_proof(doc: Any) -> dict[str, Any]:
    """Check the shape of a proof document (as made by :meth:`Ledger.prove`) and return it
    with the hashes as bytes; LedgerError naming the field if it is malformed."""
    if type(doc) is not dict:
        raise LedgerError(f"a proof must be a JSON object, got {type(doc).__name__}")
    missing = [f for f in PROOF_FIELDS if f not in doc]
    if missing:
        raise LedgerError("missing", missing[0])
    extra = sorted(set(doc).difference(PROOF_FIELDS))
    if extra:
        raise LedgerError("unknown field", extra[0])
    out: dict[str, Any] = {}
    for f, lo in (("entry", 1), ("interval", 0), ("close_seq", 1), ("index", 0), ("tree_size", 1)):
        out[f] = int_field(doc, f, None, lo)
    for f in ("entry_hash", "root"):
        out[f] = bytes.fromhex(hex64_field(doc, f, None))
    path = doc["proof"]
    if type(path) is not list:
        raise LedgerError(f"must be a list of 64-hex hashes, got {show_value(path)}", "proof")
    try:
        out["proof"] = [bytes.fromhex(hex64_field(path, i, None)) for i in range(len(path))]
    except LedgerError as exc:
        raise LedgerError(f"item {exc.field}: {exc.problem}", "proof") from None
    return out


def _path_len(index: int, size: int) -> int:
    n = 0
    while size > 1:
        k = 1 << ((size - 1).bit_length() - 1)
        if index < k:
            size = k
        else:
            index, size = index - k, size - k
        n += 1
    return n


def check_proof(p: dict[str, Any]) -> str:
    """Check a parsed proof (:func:`parse_proof`) with ``verify_inclusion``: '' if it shows
    ``entry_hash`` at ``index`` of a tree of ``tree_size`` under ``root``, else the problem.
    It says nothing about whether ``root`` is the ledger's: that is the caller's to trust
    (it is the ``merkle_root`` of entry ``close_seq``, which the head hash covers)."""
    i, n = p["index"], p["tree_size"]
    if i >= n:
        return f"index {i} is outside a tree of {n} entries"
    if p["entry"] != p["close_seq"] - n + i:
        return (
            f"entry {p['entry']} is not index {i} of the {n} entries before close "
            f"{p['close_seq']} (that is entry {p['close_seq'] - n + i})"
        )
    want = _path_len(i, n)
    if len(p["proof"]) != want:
        return f"proof has {len(p['proof'])} hashes; index {i} of {n} needs {want}"
    if not verify_inclusion(p["entry_hash"], i, n, p["proof"], p["root"]):
        return (
            f"entry_hash {p['entry_hash'].hex()} at index {i} of {n} with this proof does not "
            f"lead to root {p['root'].hex()}"
        )
    return ""
