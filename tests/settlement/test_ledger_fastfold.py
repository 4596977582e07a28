"""The ledger's compiled fast path for trades (settlement/ledger/_fastfold.pyx) against
the Python fold, the reference: the same batches give the same rows on disk, the same
balances and cache, and the same refusal (message and index), whatever the batch holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.ledger import KINDS, Ledger, LedgerError, entry_hash
from wattmesh.settlement.ledger import store as store_module
from wattmesh.settlement.ledger._fastfold import chain_hash

T0 = 1_718_928_000_000
MEMBERS = ["alice", "bob", "carol"]


@contextmanager
def fold(fast: bool) -> Iterator[None]:
    saved = store_module._FAST_FOLD
    store_module._FAST_FOLD = fast
    try:
        yield
    finally:
        store_module._FAST_FOLD = saved


def opening() -> list:
    genesis = {"community": "fast", "interval_ms": 900_000, "price_min": 1_000,
               "price_max": 1_000_000, "fee_rate_ppm": 0, "retail_price": 300_000,
               "feedin_price": 80_000, "funds": {"fees": "fund:fees"}}  # fmt: skip
    items: list = [("genesis", genesis)]
    for m in MEMBERS:
        items.append(("member", {"owner": m, "bmax": 5_000, "storage": False}))
        items.append(("deposit", {"owner": m, "amount": 10**9}))
    items.append(("grid_import", {"owner": "bob", "qty": 3_000, "price": 300_000}))
    return items


def odd_values() -> st.SearchStrategy[dict[str, Any]]:
    """A change that makes a trade unclean (the Python fold must take it)."""
    return st.sampled_from([
        {"buyer": "dave"}, {"seller": "alice", "buyer": "alice"}, {"qty": 0},
        {"qty": True}, {"qty": 2**63}, {"qty": 10**6}, {"price": 999}, {"price": 10**7},
        {"price": 1.5}, {"bid": ""}, {"ask": "x" * 129}, {"interval": -1},
        {"interval": None}, {"bid": "\ud800"}, {"extra": 1},
    ])  # fmt: skip


@st.composite
def batches(draw: st.DrawFn) -> list[list]:
    out = []
    ts = T0
    for _ in range(draw(st.integers(1, 4))):
        batch = []
        for _ in range(draw(st.integers(1, 12))):
            ts += draw(st.sampled_from([0, 0, 1, 1000, -1]))
            what = draw(st.sampled_from(["trade"] * 6 + ["odd", "fee", "deposit"]))
            buyer, seller = draw(st.permutations(MEMBERS))[:2]
            body: dict[str, Any] = {"buyer": buyer, "seller": seller,
                                    "qty": draw(st.integers(1, 900)),
                                    "price": draw(st.integers(1_000, 400_000)),
                                    "bid": f"b{len(batch)}", "ask": f"a{len(batch)}",
                                    "interval": T0}  # fmt: skip
            if what == "odd":
                body.update(draw(odd_values()))
                batch.append(("trade", body, ts))
            elif what == "fee":
                batch.append(("fee", {"owner": buyer, "amount": 5, "trade": 2}, ts))
            elif what == "deposit":
                batch.append(("deposit", {"owner": buyer, "amount": 1000}, ts))
            else:
                batch.append(("trade", body, ts) if draw(st.booleans()) else ("trade", body))
        out.append(batch)
    return out


def run(tmp_path: Path, name: str, batches_: list[list], fast: bool,
        rows_of: Callable) -> dict[str, Any]:  # fmt: skip
    """Each batch appended in turn: its outcome (entries, or the refusal and its index),
    then the rows on disk, the balances, and whether the file verifies."""
    outcomes = []
    path = tmp_path / name
    with fold(fast), Ledger.open(path) as led:
        led.append_batch(opening(), ts=T0 - 1)
        for batch in batches_:
            try:
                got = led.append_batch([tuple(x) for x in batch], ts=T0 + 5)
                outcomes.append([(e.seq, e.ts, e.kind, e.body, e.prev, e.hash) for e in got])
            except LedgerError as exc:
                outcomes.append(("refused", str(exc), exc.index))
        balances = led.balances()
        verified = led.verify().ok
    return {"outcomes": outcomes, "rows": rows_of(path), "balances": balances,
            "verified": verified}  # fmt: skip


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(batches())
def test_the_fast_path_folds_exactly_like_the_python_fold(tmp_path_factory, ledger_rows, bs):
    tmp = tmp_path_factory.mktemp("fastfold")
    fast = run(tmp, "fast.db", bs, True, ledger_rows)
    slow = run(tmp, "slow.db", bs, False, ledger_rows)
    assert fast == slow
    assert fast["verified"]


def test_a_run_of_clean_trades_takes_the_fast_path(tmp_path: Path, monkeypatch) -> None:
    """A batch of plain trades is folded in compiled code: the Python rule is not called."""
    calls = []
    from wattmesh.settlement.ledger.fold import LedgerState

    original = LedgerState.apply

    def counting(self, seq, ts, kind, body, check_sig=True):  # noqa: ANN001
        calls.append(kind)
        return original(self, seq, ts, kind, body, check_sig)

    with Ledger.open(tmp_path / "l.db") as led:
        led.append_batch(opening(), ts=T0 - 1)
        monkeypatch.setattr(LedgerState, "apply", counting)
        trades = [("trade", {"buyer": "alice", "seller": "bob", "qty": 10, "price": 200_000,
                             "bid": f"b{k}", "ask": f"a{k}", "interval": T0})
                  for k in range(50)]  # fmt: skip
        led.append_batch(trades, ts=T0)
        assert calls == []
        led.append_batch([("deposit", {"owner": "carol", "amount": 5})], ts=T0)
        assert calls == ["deposit"]
        assert led.verify().ok


def test_the_extension_is_used_when_installed() -> None:
    assert store_module._FAST_FOLD is True
    with pytest.raises(TypeError):
        store_module.append_trades(None, (), 0, 0, b"", [], [])  # items must be a list


def rechain(path: Path, seq: int, body: bytes) -> None:
    """Replace entry ``seq``'s body and recompute every hash from there on, as a forger
    who knows the format would: only the rules can catch it then."""
    import hashlib
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT seq, ts, kind, body, prev FROM entries WHERE seq >= ? "
                            "ORDER BY seq", (seq,)).fetchall()  # fmt: skip
        prev = rows[0][4]
        for s, ts, kind, old, _p in rows:
            text = body if s == seq else old.encode()
            h = hashlib.sha256(b'%s[%d,%d,"%s",%s]' % (prev, s, ts, kind.encode(), text))
            conn.execute("UPDATE entries SET body = ?, prev = ?, hash = ? WHERE seq = ?",
                         (text.decode(), prev, h.digest(), s))  # fmt: skip
            prev = h.digest()
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("forged", [
    b'{"ask":"a0","bid":"b0","buyer":"alice","interval":1718928000000,"price":200000,'
    b'"qty":10, "seller":"bob"}',  # a space: not canonical
    b'{"bid":"b0","ask":"a0","buyer":"alice","interval":1718928000000,"price":200000,'
    b'"qty":10,"seller":"bob"}',  # keys out of order
    b'{"ask":"a0","bid":"b0","buyer":"alice","interval":1718928000000,"price":200000,'
    b'"qty":900000,"seller":"bob"}',  # more than bob holds
    b'{"ask":"a0","bid":"b0","buyer":"alice","interval":1718928000000,"price":200000.0,'
    b'"qty":10,"seller":"bob"}',  # a float
])  # fmt: skip
def test_verify_finds_the_same_forged_trade_either_way(tmp_path: Path, forged: bytes) -> None:
    path = tmp_path / "l.db"
    with Ledger.open(path) as led:
        led.append_batch(opening(), ts=T0 - 1)
        led.append_batch([("trade", {"buyer": "alice", "seller": "bob", "qty": 10,
                                     "price": 200_000, "bid": f"b{k}", "ask": f"a{k}",
                                     "interval": T0}) for k in range(3)], ts=T0)  # fmt: skip
        seq = len(led) - 2  # the first of the three trades
    rechain(path, seq, forged)
    results = []
    for fast in (True, False):
        with fold(fast), Ledger.open(path, create=False) as led:
            results.append(led.verify())
    assert results[0] == results[1]
    assert not results[0].ok and results[0].bad_seq == seq


# ---------------------------------------------------------------------------------------
# The compiled chain hash (SHA-256 in C, with the CPU's SHA extensions where it has them)
# against the definition, schema.entry_hash (hashlib over canonical([seq, ts, kind, body])).

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    seq=st.integers(0, 2**63 - 1),
    ts=st.integers(0, 2**63 - 1),
    kind=st.sampled_from(sorted(KINDS)),
    body=st.dictionaries(st.text(max_size=12), JSON_VALUE, max_size=6),
)
def test_the_chain_hash_is_the_entry_hash_of_the_definition(
    seq: int, ts: int, kind: str, body: dict
) -> None:
    prev = bytes(range(32))
    assert chain_hash(prev, seq, ts, kind.encode(), canonical(body)) == entry_hash(
        prev, seq, ts, kind, body
    )


PORTABLE_CHECK = """
import hashlib, random
from wattmesh.settlement.ledger._fastfold import chain_hash
rng = random.Random(7)
for n in range(0, 400):  # every tail length around the 55/56/64-byte block boundaries
    body = bytes(rng.getrandbits(8) for _ in range(n))
    prev = bytes(rng.getrandbits(8) for _ in range(32))
    want = hashlib.sha256(b'%s[%d,%d,"k",%s]' % (prev, n, 7 * n, body)).digest()
    assert chain_hash(prev, n, 7 * n, b"k", body) == want, n
print("ok")
"""


@pytest.mark.parametrize("portable", [False, True], ids=["cpu-extensions", "portable"])
def test_both_sha256_implementations_match_hashlib_at_every_length(portable: bool) -> None:
    env = dict(os.environ)
    env.pop("WM_SHA256_PORTABLE", None)
    if portable:
        env["WM_SHA256_PORTABLE"] = "1"  # the rounds a CPU without SHA extensions runs
    out = subprocess.run([sys.executable, "-c", PORTABLE_CHECK], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
