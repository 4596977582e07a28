"""The ledger's compiled fast path for trades (settlement/ledger/_fastfold.pyx) against
the Python fold, the reference: the same batches give the same rows on disk, the same
balances and cache, and the same refusal (message and index), whatever the batch holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattmesh.settlement.ledger import Ledger, LedgerError
from wattmesh.settlement.ledger import store as store_module

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
