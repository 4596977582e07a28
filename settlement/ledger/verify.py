"""Verifying a ledger file from its rows alone: the chain, every entry's rules, the
closes' digests and certificates, and the cached balances."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ..canonical import CanonicalError, canonical
from ..certificate import Certificate, check_certificate
from ..merkle import chain_digest, merkle_root
from ._fastfold import chain_hash, verify_run
from .fold import LedgerState
from .schema import (
    I64,
    KEYSETS,
    ZERO_HASH,
    LedgerError,
    VerifyResult,
)


def verify_rows(
    conn: sqlite3.Connection, expect_head: tuple[int, bytes] | None, fast: bool = True
) -> VerifyResult:
    """Walk every row (see the module docstring); ``fast`` folds clean trades in compiled
    code, with the same outcome as the Python fold (which ``fast=False`` uses alone)."""
    st = LedgerState()
    loads = orjson.loads
    prev = ZERO_HASH
    expected = 1
    seen_expect: bytes | None = ZERO_HASH if expect_head and expect_head[0] == 0 else None
    exp_seq = expect_head[0] if expect_head else -1
    # A seq no row can have is no seq at all for the compiled walk, which counts in 64 bits.
    walk_exp_seq = exp_seq if -1 <= exp_seq <= I64 else -1

    def bad(seq: int | None, problem: str) -> VerifyResult:
        return VerifyResult(False, expected - 1, expected - 1, prev, seq, problem)

    conn.execute("BEGIN")  # one read snapshot for the whole walk (WAL readers do not block)
    rows = iter(conn.execute("SELECT seq, ts, kind, body, prev, hash FROM entries ORDER BY seq"))
    apply = st.apply
    covered: list[bytes] = []  # hashes of the entries since the last interval_close
    add = covered.append
    certified = 0  # closes that name a certified set
    while True:
        if fast:
            # Runs of clean trades and trade fees are checked and folded in compiled code
            # (settlement/ledger/_fastfold.pyx); it hands back the first row it did not
            # take, and this loop checks that one as if the run had not been there.
            row, prev, expected, seen_expect = verify_run(
                st, rows, prev, expected, walk_exp_seq, seen_expect, covered
            )
        else:
            row = next(rows, None)
        if row is None:
            break
        seq, ts, kind_b, body_b, p, h = row
        if seq != expected:
            if type(seq) is not int:
                return bad(expected, f"seq is not an integer: {seq!r:.40}")
            if seq == expected - 1:
                return bad(seq, f"duplicate seq {seq}")
            return bad(expected, f"missing (next entry found has seq {seq})")
        if p != prev:
            return bad(
                seq,
                f"prev {_hexish(p)} is not the hash of entry {seq - 1} "
                f"({prev.hex()}): deleted, inserted or swapped rows",
            )
        if type(kind_b) is not bytes or kind_b.decode(errors="replace") not in KEYSETS:
            return bad(seq, f"unknown kind {kind_b!r:.40}")
        if type(body_b) is not bytes or type(ts) is not int:
            return bad(seq, "ts or body has the wrong type")
        if chain_hash(p, seq, ts, kind_b, body_b) != h:
            return bad(
                seq,
                f"hash mismatch: stored {_hexish(h)} is not sha256(prev || "
                "canonical([seq, ts, kind, body])): a field was changed",
            )
        kind = kind_b.decode()
        try:
            body = loads(body_b)
            if canonical(body) != body_b:
                return bad(seq, "body is not in canonical JSON form")
            apply(seq, ts, kind, body)
        except (orjson.JSONDecodeError, CanonicalError) as exc:
            return bad(seq, f"body is not canonical JSON: {exc}")
        except LedgerError as exc:
            return bad(seq, f"refused by the rules: {exc}")
        if kind == "interval_close":
            problem = _check_close(body, covered) or _check_certified(conn, body, st.members)
            if problem:
                return bad(seq, problem)
            if "set" in body:
                certified += 1
            covered.clear()
        else:
            add(h)
        if seq == exp_seq:
            seen_expect = h
        prev = h
        expected += 1
    n = expected - 1
    if st.open_obligation():  # batches are atomic, so a committed ledger owes nothing
        return bad(n, f"the ledger ends inside a batch: {st.open_obligation()}")
    if expect_head is not None:
        eseq, ehash = expect_head
        if n < eseq:
            return bad(
                None,
                f"truncated: expected head {eseq}:{ehash.hex()} but the ledger ends at seq {n}",
            )
        if seen_expect != ehash:
            return bad(
                eseq,
                f"rewritten history: entry {eseq} has hash "
                f"{_hexish(seen_expect)}, expected {ehash.hex()}",
            )
    # The cache.
    cached: dict[str, tuple[int, int]] = {}
    for acct, _k, e, m in conn.execute("SELECT account, kind, energy, money FROM balances"):
        cached[acct.decode() if type(acct) is bytes else acct] = (e, m)
    caches = _read_caches(conn)
    stored = _count_certificates(conn)
    conn.execute("COMMIT")
    if stored != certified:
        return VerifyResult(False, n, n, prev, None, f"{stored} certificates are stored for "
                            f"{certified} closes that name a certified set")  # fmt: skip
    for acct in sorted(set(cached) | set(st.bal)):
        want, got = st.bal.get(acct), cached.get(acct)
        if want != got:
            return VerifyResult(
                False,
                n,
                n,
                prev,
                n or None,
                f"balance cache for {acct!r} is {got}, the fold of the entries "
                f"gives {want} (energy, money) as of entry {n}",
            )
    folded_meta = {"last_close": st.last_close} if st.last_close else {}
    if st.first_trade:
        folded_meta["first_trade"] = st.first_trade
    if st.storage_interval >= 0:
        folded_meta["storage_interval"] = st.storage_interval
    folded = (st.members, st.meters, folded_meta)
    for name, got, want in zip(("members", "meters", "meta"), caches, folded, strict=True):
        if got != want:
            return VerifyResult(
                False, n, n, prev, n or None,
                f"{name} cache does not match the fold of the entries as of entry {n}",
            )  # fmt: skip
    if sum(e for e, _ in st.bal.values()) or sum(m for _, m in st.bal.values()):
        return VerifyResult(False, n, n, prev, n or None, "energy or money is not conserved")
    return VerifyResult(True, n, n, prev)


def _check_close(body: dict[str, Any], covered: list[bytes]) -> str:
    """What is wrong with a close's digest or Merkle root ('' if nothing)."""
    first = f"{body['interval']} (entries {body['entries']})"
    for f, fn in (("merkle_root", merkle_root), ("digest", chain_digest)):
        want = fn(covered).hex()
        if body[f] != want:
            return (
                f"interval_close {first}: {f} {body[f]} is not the one of the "
                f"{len(covered)} entries it covers ({want})"
            )
    return ""


def _count_certificates(conn: sqlite3.Connection) -> int:
    try:
        return conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    except sqlite3.OperationalError:  # a ledger from before certificates
        return 0


def _check_certified(conn: sqlite3.Connection, body: dict[str, Any], members: Any) -> str:
    """What is wrong with the certificate of a close that names a set ('' if nothing)."""
    if "set" not in body:
        return ""
    iv = body["interval"]
    try:
        row = conn.execute("SELECT body FROM certificates WHERE interval = ?", (iv,)).fetchone()
    except sqlite3.OperationalError:
        row = None
    if row is None:
        return f"interval_close {iv} names a certified set but no certificate is stored"
    try:
        text = row[0] if type(row[0]) is bytes else str(row[0]).encode()
        cert = Certificate.from_dict(orjson.loads(text))
    except (orjson.JSONDecodeError, ValueError) as exc:
        return f"the certificate of interval {iv} is malformed: {exc}"
    problem = check_certificate(cert, iv, body["set"], members)
    return f"the certificate of interval {iv} does not hold: {problem}" if problem else ""


def _read_caches(conn: sqlite3.Connection) -> tuple[dict, dict, dict]:
    def text(v: Any) -> Any:
        return v.decode() if type(v) is bytes else v

    members = {
        text(o): (b, bool(s))
        for o, b, s in conn.execute("SELECT owner, bmax, storage FROM members")
    }
    meters = {
        text(m): (text(o), q, e, w)
        for m, o, q, e, w in conn.execute(
            "SELECT meter, owner, last_seq, last_end, max_power_w FROM meters"
        )
    }
    meta = {text(k): v for k, v in conn.execute("SELECT key, value FROM meta")}
    return members, meters, meta


def _hexish(v: Any) -> str:
    return v.hex() if type(v) is bytes else repr(v)[:40]
