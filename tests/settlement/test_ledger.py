"""The hash-linked ledger (wattmesh.settlement.ledger): kinds and their validation, the
balance fold, all-or-nothing batches, and the tamper classes of transparency logs."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.fees import split_fees
from wattmesh.settlement.keys import generate_key, peer_id_of, sign
from wattmesh.settlement.ledger import (
    EXTERNAL,
    KINDS,
    ZERO_HASH,
    Ledger,
    LedgerError,
    entry_hash,
    parse_head,
)
from wattmesh.settlement.merkle import chain_digest, merkle_root

T0 = 1_718_928_000_000
RETAIL, FEEDIN = 300_000, 80_000
AUDITOR = generate_key()  # the community's auditor, who signs corrections
GENESIS = {
    "community": "elm-street",
    "interval_ms": 900_000,
    "price_min": 0,
    "price_max": 1_000_000,
    "fee_rate_ppm": 2_000,
    "retail_price": RETAIL,
    "feedin_price": FEEDIN,
    "funds": {"fees": "fund:fees", "grid": "fund:grid"},
    "auditors": [peer_id_of(AUDITOR)],
}


def correction(corrects: int, adjustments: list, reason: str = "", key=AUDITOR) -> tuple:
    """A correction signed by ``key`` (the genesis auditor unless told otherwise)."""
    body = {"corrects": corrects, "authorised_by": peer_id_of(key), "reason": reason,
            "adjustments": adjustments}  # fmt: skip
    return ("correction", {**body, "sig": sign(key, body)})


def member(owner: str, bmax: int = 20_000, storage: bool = False) -> tuple[str, dict]:
    return ("member", {"owner": owner, "bmax": bmax, "storage": storage})


def trade(buyer: str, seller: str, qty: int, price: int, interval: int = T0) -> tuple[str, dict]:
    return (
        "trade",
        {
            "buyer": buyer,
            "seller": seller,
            "qty": qty,
            "price": price,
            "bid": "b" * 64,
            "ask": "a" * 64,
            "interval": interval,
        },
    )


def community(path: Path) -> Ledger:
    """genesis, members alice and bob, money for both, energy for bob, some trades."""
    led = Ledger.open(path)
    led.append_batch(
        [
            ("genesis", GENESIS),
            member("alice"),
            member("bob", storage=True),
            ("deposit", {"owner": "alice", "amount": 10**12}),
            ("deposit", {"owner": "bob", "amount": 10**12}),
            ("grid_import", {"owner": "bob", "qty": 5_000, "price": RETAIL}),
        ],
        ts=T0,
    )
    led.append_batch([trade("alice", "bob", 100 + i, 200_000) for i in range(10)], ts=T0 + 1)
    led.append_batch(
        [
            ("fee", {"owner": "alice", "amount": 1_000, "trade": 7}),
            ("fee", {"owner": "bob", "amount": 1_000, "trade": 7}),
        ],
        ts=T0 + 2,
    )
    led.close_interval(T0, ts=T0 + 2)  # seq 19, covering 1..18
    return led


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    with community(tmp_path / "node.db") as ledger:
        yield ledger


def raw(led: Ledger) -> sqlite3.Connection:
    return sqlite3.connect(led.path, isolation_level=None)


def total(led: Ledger) -> tuple[int, int]:
    bal = led.balances()
    return sum(b["energy"] for b in bal.values()), sum(b["money"] for b in bal.values())


# -- format and hashing ---------------------------------------------------------------


def test_hash_is_sha256_of_prev_and_canonical_seq_ts_kind_body(led: Ledger) -> None:
    entries = list(led.entries())
    assert [e.seq for e in entries] == list(range(1, 20))
    prev = ZERO_HASH
    for e in entries:
        assert e.prev == prev
        want = hashlib.sha256(prev + canonical([e.seq, e.ts, e.kind, e.body])).digest()
        assert e.hash == want == entry_hash(prev, e.seq, e.ts, e.kind, e.body)
        prev = e.hash
    # stored as: body canonical JSON text, prev/hash 32 raw bytes
    c = raw(led)
    body, p, h = c.execute("SELECT body, prev, hash FROM entries WHERE seq=2").fetchone()
    c.close()
    assert body == canonical(entries[1].body).decode()
    assert isinstance(p, bytes) and len(p) == 32 and h == entries[1].hash
    assert led.head() == (19, entries[-1].hash)
    assert led.head_text() == f"19:{entries[-1].hash.hex()}"


def test_wal_mode_and_reopen_keeps_state(led: Ledger) -> None:
    assert led.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    before = led.balances()
    with Ledger.open(led.path) as again:
        assert again.balances() == before
        assert again.head() == led.head()
        again.append_batch([trade("bob", "alice", 10, 150_000)], ts=T0 + 5)
    # the first handle notices the other writer and appends after it
    new = led.append_batch([trade("alice", "bob", 10, 150_000)], ts=T0 + 6)
    assert new[0].seq == 21
    assert led.verify().ok


def test_balances_fold(led: Ledger) -> None:
    bal = led.balances()
    bought = sum(100 + i for i in range(10))
    assert bal["alice"]["energy"] == bought
    assert bal["bob"]["energy"] == 5_000 - bought
    assert bal["alice"]["money"] == 10**12 - bought * 200_000 - 1_000
    assert bal["bob"]["money"] == 10**12 - 5_000 * RETAIL + bought * 200_000 - 1_000
    assert bal["fund:fees"] == {"kind": "fund", "energy": 0, "money": 2_000}
    assert bal["@grid"]["energy"] == -5_000 and bal["@grid"]["money"] == 5_000 * RETAIL
    assert total(led) == (0, 0)
    assert led.verify().ok


# -- refusals: clear error naming the field, nothing written ---------------------------


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        (trade("alice", "bob", 0, 200_000), "qty", "positive integer"),
        (trade("alice", "bob", 10, 2_000_000), "price", "within [0, 1000000]"),
        (trade("alice", "carol", 10, 200_000), "seller", "not a member"),
        (trade("alice", "alice", 10, 200_000), "seller", "same account"),
        (("trade", {"buyer": "alice"}), "ask", "missing"),
        (("deposit", {"owner": "alice", "amount": 5, "x": 1}), "x", "unknown field"),
        (("deposit", {"owner": "alice", "amount": 1.5}), "amount", "positive integer"),
        (("grid_import", {"owner": "bob", "qty": 5, "price": 1}), "price", "retail_price"),
        (member("alice"), "owner", "already exists"),
        (member("@evil"), "owner", "must not start with '@'"),
        (("meter", {"meter": "m1", "owner": "zed"}), "owner", "not a member"),
        (("fee", {"owner": "bob", "amount": 1, "trade": 999}), "trade", "earlier entry"),
        (("fee_split", {"fund": "nope", "shares": []}), "fund", "not a fund"),
        (
            (
                "interval_close",
                {"interval": T0 + 1, "entries": 1, "digest": "d" * 64, "merkle_root": "e" * 64},
            ),
            None,
            "Ledger.close_interval",
        ),  # fmt: skip
    ],
)
def test_bad_body_is_refused_naming_the_field(led, item, field, words) -> None:
    head = led.head()
    with pytest.raises(LedgerError) as exc:
        led.append_batch([trade("alice", "bob", 1, 1), item], ts=T0 + 9)
    assert exc.value.field == field
    assert words in str(exc.value)
    assert exc.value.index == 1 and "batch item 1" in str(exc.value)
    assert led.head() == head  # nothing written, not even the good first item
    with Ledger.open(led.path) as again:
        assert again.head() == head
    assert led.verify().ok


def test_unknown_kind_and_genesis_rules(tmp_path: Path, led: Ledger) -> None:
    with pytest.raises(LedgerError, match="unknown kind 'mint'"):
        led.append_batch([("mint", {})])
    with pytest.raises(LedgerError, match="genesis may only be the first"):
        led.append_batch([("genesis", GENESIS)])
    fresh = Ledger.open(tmp_path / "fresh.db")
    with pytest.raises(LedgerError, match="first entry must be genesis"):
        fresh.append_batch([member("x")])
    with pytest.raises(LedgerError, match="'fees' account"):
        fresh.append_batch([("genesis", {**GENESIS, "funds": {}})])
    assert fresh.head() == (0, ZERO_HASH)


def test_negative_balance_is_refused(led: Ledger) -> None:
    bal = led.balances()
    with pytest.raises(LedgerError, match="bob would go negative: energy"):
        led.append_batch([trade("alice", "bob", bal["bob"]["energy"] + 1, 1)])
    with pytest.raises(LedgerError, match="alice would go negative: money"):
        led.append_batch([("withdrawal", {"owner": "alice", "amount": bal["alice"]["money"] + 1})])
    with pytest.raises(LedgerError, match="fund:fees would go negative"):
        led.append_batch(
            [("fee_split", {"fund": "fees", "shares": [{"account": "alice", "amount": 2_001}]})]
        )
    assert led.balances() == bal


def test_balance_overflow_is_refused(led: Ledger) -> None:
    led.append_batch([("deposit", {"owner": "alice", "amount": 2**62})])
    with pytest.raises(LedgerError, match="64-bit range"):
        led.append_batch([("deposit", {"owner": "bob", "amount": 2**62})])  # @bank < -2**63
    assert led.verify().ok


def test_ts_may_not_go_backwards(led: Ledger) -> None:
    with pytest.raises(LedgerError, match="before the previous entry's ts"):
        led.append_batch([trade("alice", "bob", 1, 1)], ts=T0 - 1)


def test_fee_split_and_withdrawal(led: Ledger) -> None:
    led.append_batch(
        [
            ("fee_split", {"fund": "fees", "shares": [{"account": "alice", "amount": 500},
                                                      {"account": "fund:grid", "amount": 700}]}),
            ("withdrawal", {"owner": "bob", "amount": 10}),
        ],
        ts=T0 + 3,
    )  # fmt: skip
    bal = led.balances()
    assert bal["fund:fees"]["money"] == 800 and bal["fund:grid"]["money"] == 700
    assert total(led) == (0, 0)
    assert led.verify().ok


# -- readings: signature carried in the body -----------------------------------------


def signed_reading(key, meter: str, seq: int, produced: int, consumed: int) -> dict:
    body = {"type": "reading", "meter": meter, "start": T0 + seq * 900_000,
            "end": T0 + (seq + 1) * 900_000, "produced": produced, "consumed": consumed,
            "seq": seq}  # fmt: skip
    return {**body, "sig": sign(key, body)}


def test_readings_are_signed_by_a_registered_meter(led: Ledger) -> None:
    key = generate_key()
    m = peer_id_of(key)
    led.append_batch([("meter", {"meter": m, "owner": "alice"})], ts=T0 + 3)
    e0 = led.balances()["alice"]["energy"]
    led.append_batch([("reading", signed_reading(key, m, 1, 700, 200))], ts=T0 + 4)
    assert led.balances()["alice"]["energy"] == e0 + 500
    with pytest.raises(LedgerError, match="not above the last accepted 1"):
        led.append_batch([("reading", signed_reading(key, m, 1, 700, 200))], ts=T0 + 4)
    forged = {**signed_reading(key, m, 2, 700, 200), "produced": 9_000}
    with pytest.raises(LedgerError) as exc:
        led.append_batch([("reading", forged)], ts=T0 + 4)
    assert exc.value.field == "sig"
    assert led.verify().ok


def test_verify_checks_reading_signatures(led: Ledger) -> None:
    key = generate_key()
    m = peer_id_of(key)
    led.append_batch([("meter", {"meter": m, "owner": "alice"}),
                      ("reading", signed_reading(key, m, 1, 700, 200))], ts=T0 + 3)  # fmt: skip
    # Rewrite the reading with a forged value and recompute every hash after it.
    rewrite(led, 21, lambda b: {**b, "produced": 800})
    res = led.verify()
    assert not res.ok and res.bad_seq == 21 and "signature" in res.problem


# -- corrections --------------------------------------------------------------------


def test_correction_applies_a_balanced_adjustment(led: Ledger) -> None:
    # The grid import at seq 6 was recorded 1000 Wh too high: take it back from bob.
    back = 1_000 * RETAIL
    adjust = [{"account": "bob", "energy": -1_000, "money": back},
              {"account": "@grid", "energy": 1_000, "money": -back}]  # fmt: skip
    before = led.balances()["bob"]
    led.append_batch([correction(6, adjust, "meter double count")], ts=T0 + 3)
    after = led.balances()["bob"]
    assert after["energy"] == before["energy"] - 1_000
    assert after["money"] == before["money"] + 1_000 * RETAIL
    assert total(led) == (0, 0) and led.verify().ok
    with pytest.raises(LedgerError, match="sum to zero") as exc:
        led.append_batch([correction(6, adjust[:1])])
    assert exc.value.field == "adjustments"
    with pytest.raises(LedgerError) as exc:
        led.append_batch([correction(99, adjust)])
    assert exc.value.field == "corrects"


def test_a_correction_must_be_signed_by_a_genesis_auditor(led: Ledger) -> None:
    adjust = [{"account": "bob", "energy": -1, "money": 0},
              {"account": "@grid", "energy": 1, "money": 0}]  # fmt: skip
    before = (led.head(), led.balances())
    with pytest.raises(LedgerError, match="not an auditor") as exc:
        led.append_batch([correction(6, adjust, key=generate_key())])
    assert exc.value.field == "authorised_by"
    kind, body = correction(6, adjust)
    with pytest.raises(LedgerError, match="signature") as exc:
        led.append_batch([(kind, {**body, "reason": "changed after signing"})])
    assert exc.value.field == "sig"
    assert (led.head(), led.balances()) == before
    # verify checks the signature too: forge the reason and recompute every hash after it.
    led.append_batch([correction(6, adjust, "typo")], ts=T0 + 3)
    rewrite(led, 20, lambda b: {**b, "reason": "forged"})
    res = led.verify()
    assert not res.ok and res.bad_seq == 20 and "auditor's signature" in res.problem


# -- tamper classes --------------------------------------------------------------------


def rewrite(led: Ledger, seq: int, change, recompute: bool = True, reclose: bool = False) -> None:
    """Change entry ``seq``'s body and (by default) recompute every hash after it, as an
    attacker with write access would; with ``reclose`` also every later interval_close's
    digest and Merkle root."""
    c = raw(led)
    rows = c.execute("SELECT seq, ts, kind, body, prev, hash FROM entries ORDER BY seq").fetchall()
    prev = ZERO_HASH
    covered: list[bytes] = []
    c.execute("BEGIN")
    for s, ts, kind, body, p, h in rows:
        b = orjson.loads(body)
        if s == seq:
            b = change(b)
        if kind == "interval_close" and reclose and s > seq:
            b = {
                **b,
                "digest": chain_digest(covered).hex(),
                "merkle_root": merkle_root(covered).hex(),
            }
        if s >= seq:
            body = canonical(b).decode()
            if recompute:
                p, h = prev, entry_hash(prev, s, ts, kind, b)
            c.execute("UPDATE entries SET body=?, prev=?, hash=? WHERE seq=?", (body, p, h, s))
        prev = h
        covered = [] if kind == "interval_close" else [*covered, h]
    c.execute("COMMIT")
    c.close()


def bad(led: Ledger, expect_head=None):
    res = led.verify(expect_head)
    assert not res.ok
    return res


def test_changed_field(led: Ledger) -> None:
    c = raw(led)
    c.execute("UPDATE entries SET body = replace(body, '\"qty\":105', '\"qty\":999') WHERE seq=12")
    c.close()
    res = bad(led)
    assert res.bad_seq == 12 and "hash mismatch" in res.problem
    assert str(res).startswith("bad entry 12: hash mismatch")


def test_changed_ts(led: Ledger) -> None:
    c = raw(led)
    c.execute("UPDATE entries SET ts = ts + 1 WHERE seq = 9")
    c.close()
    assert bad(led).bad_seq == 9


def test_deleted_row(led: Ledger) -> None:
    c = raw(led)
    c.execute("DELETE FROM entries WHERE seq = 10")
    c.close()
    res = bad(led)
    assert res.bad_seq == 10 and "missing" in res.problem


def test_swapped_rows(led: Ledger) -> None:
    c = raw(led)
    r8 = c.execute("SELECT ts, kind, body, prev, hash FROM entries WHERE seq=8").fetchone()
    r9 = c.execute("SELECT ts, kind, body, prev, hash FROM entries WHERE seq=9").fetchone()
    q = "UPDATE entries SET ts=?, kind=?, body=?, prev=?, hash=? WHERE seq=?"
    c.execute(q, (*r9, 8))
    c.execute(q, (*r8, 9))
    c.close()
    res = bad(led)
    assert res.bad_seq == 8 and "prev" in res.problem


def test_truncated_tail_caught_with_expect_head(led: Ledger) -> None:
    head = led.head()
    c = raw(led)
    c.execute("DELETE FROM entries WHERE seq > 18")
    c.close()
    # A clean truncation of the tail alone still verifies as far as it goes, except that
    # the balance cache no longer matches; an attacker fixes that too:
    fix_cache(led)
    assert led.verify().ok
    res = bad(led, head)
    assert res.bad_seq is None and "truncated" in res.problem and "ends at seq 18" in res.problem


def fix_cache(led: Ledger) -> None:
    """Recompute the caches from the entries, as an attacker would."""
    from wattmesh.settlement.ledger.fold import LedgerState

    s = LedgerState()
    for e in Ledger.entries(led):
        s.apply(e.seq, e.ts, e.kind, e.body)
    c = raw(led)
    c.execute("DELETE FROM balances")
    c.executemany(
        "INSERT INTO balances VALUES (?,?,?,?)",
        [(a, s.kind_of(a), en, m) for a, (en, m) in s.bal.items()],
    )
    c.execute("DELETE FROM meta")
    if s.last_close:
        c.execute("INSERT INTO meta VALUES ('last_close', ?)", (s.last_close,))
    if s.first_trade:
        c.execute("INSERT INTO meta VALUES ('first_trade', ?)", (s.first_trade,))
    c.close()


def test_rewritten_history_caught_with_expect_head(led: Ledger) -> None:
    head = led.head()
    mid = (11, list(led.entries(since=11))[0].hash)
    rewrite(led, 10, lambda b: {**b, "price": 1}, reclose=True)
    fix_cache(led)
    assert led.verify().ok  # self-consistent forgery, interval roots recomputed too
    assert led.verify(mid).ok is False
    res = bad(led, head)
    assert res.bad_seq == 19 and "rewritten history" in res.problem
    assert bad(led, f"{mid[0]}:{mid[1].hex()}").bad_seq == 11


def test_expect_head_ok_for_a_grown_ledger(led: Ledger) -> None:
    head = led.head()
    led.append_batch([trade("alice", "bob", 1, 1)], ts=T0 + 9)
    assert led.verify(head).ok
    assert led.verify(led.head_text()).ok


def test_duplicate_seq(led: Ledger) -> None:
    # seq is the INTEGER PRIMARY KEY, so SQLite itself refuses a duplicate ...
    c = raw(led)
    with pytest.raises(sqlite3.IntegrityError):
        c.execute("INSERT INTO entries SELECT * FROM entries WHERE seq = 7")
    # ... so an attacker rebuilds the table without the key.
    c.executescript(
        """
        BEGIN;
        CREATE TABLE e2 (seq INTEGER, ts INTEGER, kind TEXT, body TEXT, prev BLOB, hash BLOB);
        INSERT INTO e2 SELECT * FROM entries;
        INSERT INTO e2 SELECT * FROM entries WHERE seq = 7;
        DROP TABLE entries;
        ALTER TABLE e2 RENAME TO entries;
        COMMIT;
        """
    )
    c.close()
    res = bad(led)
    assert res.bad_seq == 7 and "duplicate seq 7" in res.problem


def test_tampered_balance_cache(led: Ledger) -> None:
    c = raw(led)
    c.execute("UPDATE balances SET money = money + 1 WHERE account = 'alice'")
    c.close()
    res = bad(led)
    assert "balance cache for 'alice'" in res.problem and res.bad_seq == 19


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE members SET bmax = 1 WHERE owner = 'alice'",
        "DELETE FROM members WHERE owner = 'bob'",
        "INSERT INTO meters VALUES ('m9', 'alice', 0, 0, NULL)",
        "UPDATE meta SET value = 3",
    ],
)
def test_tampered_other_caches(led: Ledger, sql: str) -> None:
    c = raw(led)
    c.execute(sql)
    c.close()
    res = bad(led)
    assert "cache does not match" in res.problem and res.bad_seq == 19


def test_expect_head_zero(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "e.db") as empty:
        assert empty.verify().ok and empty.verify((0, ZERO_HASH)).ok
        assert not empty.verify((1, ZERO_HASH)).ok


def test_non_canonical_body_with_valid_hash(led: Ledger) -> None:
    c = raw(led)
    seq, ts, kind, body, prev, _ = c.execute("SELECT * FROM entries WHERE seq = 19").fetchone()
    spaced = body.replace(",", ", ")
    h = hashlib.sha256(prev + b'[%d,%d,"%s",%s]' % (seq, ts, kind.encode(), spaced.encode()))
    c.execute("UPDATE entries SET body=?, hash=? WHERE seq=19", (spaced, h.digest()))
    c.close()
    res = bad(led)
    assert res.bad_seq == 19 and "canonical" in res.problem


def test_rule_breaking_entry_with_valid_hashes(led: Ledger) -> None:
    rewrite(led, 8, lambda b: {**b, "qty": 10**6})  # more energy than bob has
    res = bad(led)
    assert res.bad_seq == 8 and "bob would go negative" in res.problem


def test_parse_head() -> None:
    assert parse_head("3:" + "ab" * 32) == (3, bytes.fromhex("ab" * 32))
    for text in ("3", "x:" + "ab" * 32, "3:" + "AB" * 32, "3:abc", "3:" + "zz" * 32):
        with pytest.raises(ValueError):
            parse_head(text)


def test_open_refuses_non_ledgers(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger file"):
        Ledger.open(tmp_path / "none.db", create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not a SQLite ledger"):
        Ledger.open(junk, create=False)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LedgerError, match="no 'entries' table"):
        Ledger.open(other, create=False)
    mode = sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "delete"  # a foreign file is left as it was
    half = tmp_path / "half.db"
    sqlite3.connect(half).execute("CREATE TABLE entries (x)").connection.close()
    with pytest.raises(LedgerError, match="table 'balances' is missing"):
        Ledger.open(half)


# -- properties ------------------------------------------------------------------------

ACCTS = ["alice", "bob", "carol"]
acct = st.sampled_from(ACCTS)
amount = st.integers(min_value=1, max_value=5_000)
ops = st.one_of(
    st.tuples(st.just("deposit"), acct, amount).map(
        lambda t: ("deposit", {"owner": t[1], "amount": t[2] * 10**6})),
    st.tuples(acct, amount).map(lambda t: ("withdrawal", {"owner": t[0], "amount": t[1] * 10**6})),
    st.tuples(acct, amount).map(
        lambda t: ("grid_import", {"owner": t[0], "qty": t[1], "price": RETAIL})),
    st.tuples(acct, amount).map(
        lambda t: ("grid_export", {"owner": t[0], "qty": t[1], "price": FEEDIN})),
    st.tuples(acct, acct, amount, st.integers(0, 1_000_000)).map(
        lambda t: trade(t[0], t[1], t[2], t[3])),
    st.tuples(acct, amount).map(lambda t: ("fee", {"owner": t[0], "amount": t[1], "trade": 1})),
    st.tuples(acct, amount).map(
        lambda t: ("fee_split", {"fund": "fees", "shares": [{"account": t[0], "amount": t[1]}]})),
    st.tuples(acct, st.sampled_from(EXTERNAL), st.integers(-3_000, 3_000),
              st.integers(-10**9, 10**9)).map(
        lambda t: correction(1, [{"account": t[0], "energy": t[2], "money": t[3]},
                                 {"account": t[1], "energy": -t[2], "money": -t[3]}])),
)  # fmt: skip


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(ops, min_size=1, max_size=4), min_size=1, max_size=12))
def test_conservation_and_no_negative_balance(tmp_path_factory, batches) -> None:
    path = tmp_path_factory.mktemp("prop") / "l.db"
    with Ledger.open(path) as led:
        led.append_batch([("genesis", GENESIS)] + [member(a) for a in ACCTS], ts=T0)
        accepted = 0
        for batch in batches:
            before = (led.head(), led.balances())
            try:
                led.append_batch(batch, ts=T0 + 1)
                accepted += 1
            except LedgerError:
                assert (led.head(), led.balances()) == before  # refused: nothing changed
                continue
            bal = led.balances()
            assert total(led) == (0, 0)  # conserved, externals included
            for name, b in bal.items():
                if name not in EXTERNAL:
                    assert b["energy"] >= 0 and b["money"] >= 0
            # internal transfers move nothing across the boundary
            inside = [b for n, b in bal.items() if n not in EXTERNAL]
            outside = [b for n, b in bal.items() if n in EXTERNAL]
            assert sum(b["energy"] for b in inside) == -sum(b["energy"] for b in outside)
        res = led.verify()
        assert res.ok, str(res)
        assert res.entries == led.head()[0]


@settings(max_examples=50, deadline=None)
@given(
    energy=st.integers(1, 2_000), money=st.integers(1, 10**9),
    who=st.sampled_from(["alice", "bob"]),
)  # fmt: skip
def test_correction_restores_consistency(tmp_path_factory, energy, money, who) -> None:
    """A wrongly recorded entry, reverted by a correction, leaves the balances as if it had
    never happened, and the ledger verifies."""
    p1 = tmp_path_factory.mktemp("c") / "a.db"
    p2 = p1.with_name("b.db")
    base = [("genesis", GENESIS), member("alice"), member("bob"),
            ("deposit", {"owner": "bob", "amount": 10**12}),
            ("grid_import", {"owner": "bob", "qty": 5_000, "price": RETAIL})]  # fmt: skip
    with Ledger.open(p1) as clean, Ledger.open(p2) as fixed:
        clean.append_batch(base, ts=T0)
        fixed.append_batch(base, ts=T0)
        mistake = correction(5, [{"account": who, "energy": energy, "money": money},
                                 {"account": "@meters", "energy": -energy, "money": -money}],
                             "oops")  # fmt: skip
        [bad_entry] = fixed.append_batch([mistake], ts=T0 + 1)
        undo = correction(bad_entry.seq, [
            {"account": a["account"], "energy": -a["energy"], "money": -a["money"]}
            for a in mistake[1]["adjustments"]], "revert")  # fmt: skip
        fixed.append_batch([undo], ts=T0 + 2)
        assert fixed.balances() == clean.balances()
        assert fixed.verify().ok


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(1, 2**62), ts=st.integers(0, 2**62), kind=st.sampled_from(sorted(KINDS)),
    body=st.dictionaries(st.text(max_size=6), json_values, max_size=5),
    prev=st.binary(min_size=32, max_size=32),
)  # fmt: skip
def test_stored_bytes_construction_is_the_canonical_list(seq, ts, kind, body, prev) -> None:
    """verify hashes prev || b'[seq,ts,"kind",body]' from the stored canonical body; that is
    byte for byte prev || canonical([seq, ts, kind, body])."""
    fast = prev + b'[%d,%d,"%s",%s]' % (seq, ts, kind.encode(), canonical(body))
    assert fast == prev + canonical([seq, ts, kind, body])
    assert hashlib.sha256(fast).digest() == entry_hash(prev, seq, ts, kind, body)


# -- opening balances -----------------------------------------------------------------------


def _opening_ledger(tmp_path):
    led = Ledger.open(tmp_path / "open.db")
    led.append_batch([("genesis", {
        "community": "c", "interval_ms": 900_000, "price_min": 1, "price_max": 10_000_000,
        "fee_rate_ppm": 0, "retail_price": 300_000, "feedin_price": 80_000,
        "funds": {"fees": "fund:fees"},
    })], ts=1)  # fmt: skip
    led.append_batch([
        ("member", {"owner": "ann", "bmax": 5_000, "storage": False}),
        ("member", {"owner": "bob", "bmax": 5_000, "storage": True}),
    ], ts=2)  # fmt: skip
    return led


def test_an_opening_brings_energy_and_money_from_outside(tmp_path):
    led = _opening_ledger(tmp_path)
    led.append_batch([("opening", {"owner": "bob", "energy": 1_000, "money": 7})], ts=3)
    bal = led.balances()
    assert (bal["bob"]["energy"], bal["bob"]["money"]) == (1_000, 7)
    assert (bal["@meters"]["energy"], bal["@bank"]["money"]) == (-1_000, -7)
    assert led.verify().ok


def test_an_opening_is_refused_twice_above_bmax_or_after_the_first_trade(tmp_path):
    led = _opening_ledger(tmp_path)
    with pytest.raises(LedgerError, match="bmax"):
        led.append_batch([("opening", {"owner": "bob", "energy": 6_000, "money": 0})], ts=3)
    led.append_batch([
        ("opening", {"owner": "bob", "energy": 1_000, "money": 0}),
        ("opening", {"owner": "ann", "energy": 0, "money": 10**9}),
    ], ts=3)  # fmt: skip
    with pytest.raises(LedgerError, match="already open"):
        led.append_batch([("opening", {"owner": "bob", "energy": 1, "money": 0})], ts=4)
    led.append_batch([("trade", {
        "buyer": "ann", "seller": "bob", "qty": 10, "price": 100, "bid": "b", "ask": "a",
        "interval": 900_000,
    })], ts=5)  # fmt: skip
    led.append_batch([("member", {"owner": "cy", "bmax": 5_000, "storage": False})], ts=6)
    with pytest.raises(LedgerError, match="before the first trade"):
        led.append_batch([("opening", {"owner": "cy", "energy": 5, "money": 0})], ts=7)
    reopened = Ledger.open(tmp_path / "open.db")  # the rule survives a reopen (meta cache)
    with pytest.raises(LedgerError, match="before the first trade"):
        reopened.append_batch([("opening", {"owner": "cy", "energy": 5, "money": 0})], ts=7)
    assert reopened.verify().ok


# -- storage fees -------------------------------------------------------------------------

STORAGE_GENESIS = {
    **GENESIS,
    "storage_rate": 1_000,  # nano per kWh per interval: 1 nano per Wh
    "funds": {"fees": "fund:fees", "education": "fund:edu", "network": "fund:net"},
}


def storage_community(path: Path, genesis: dict = STORAGE_GENESIS) -> Ledger:
    """alice (no storage) holds 5000 Wh, bob (storage, bmax 10000) 3001 Wh, carol (storage,
    bmax 30000) nothing; dave holds 700 Wh and only 300 nano."""
    led = Ledger.open(path)
    led.append_batch(
        [
            ("genesis", genesis),
            member("alice"),
            member("bob", bmax=10_000, storage=True),
            member("carol", bmax=30_000, storage=True),
            member("dave"),
            ("opening", {"owner": "alice", "energy": 5_000, "money": 10**9}),
            ("opening", {"owner": "bob", "energy": 3_001, "money": 10**9}),
            ("opening", {"owner": "carol", "energy": 0, "money": 10**9}),
            ("opening", {"owner": "dave", "energy": 700, "money": 300}),
        ],
        ts=T0,
    )
    return led


def test_charge_storage_collects_and_splits_80_10_10_without_creating_money(tmp_path):
    with storage_community(tmp_path / "s.db") as led:
        before = led.balances()
        entries = led.charge_storage(T0, T0 + 5)
        assert [e.kind for e in entries] == ["fee", "fee", "fee", "fee_split"]
        assert all(e.ts == T0 + 5 for e in entries)
        fees = [e.body for e in entries if e.kind == "fee"]
        # sorted by account; dave's 700 nano is capped at the 300 he holds; carol holds none
        assert fees == [
            {"owner": "alice", "amount": 5_000, "trade": None, "interval": T0},
            {"owner": "bob", "amount": 3_001, "trade": None, "interval": T0},
            {"owner": "dave", "amount": 300, "trade": None, "interval": T0},
        ]
        split = entries[-1].body
        assert split["fund"] == "fees"
        shares = {s["account"]: s["amount"] for s in split["shares"]}
        collected = sum(f["amount"] for f in fees)
        assert sum(shares.values()) == collected == 8_301
        assert shares == split_fees(collected, {"bob": 10_000, "carol": 30_000},
                                    "fund:edu", "fund:net")  # fmt: skip
        assert shares["fund:edu"] == shares["fund:net"] == 830  # 10% of 8301, rounded down
        assert shares["bob"] + shares["carol"] == 6_641  # 80% plus the leftover nano
        after = led.balances()
        assert after["fund:fees"] == before["fund:fees"]  # the fees fund passes it all on
        assert after["dave"]["money"] == 0
        assert total(led) == (0, 0)
        assert led.verify().ok
        led.close_interval(T0, T0 + 6)
        assert led.verify().ok


def test_charge_storage_is_deterministic(tmp_path):
    heads = []
    for name in ("a.db", "b.db"):
        with storage_community(tmp_path / name) as led:
            led.charge_storage(T0, T0 + 5)
            led.close_interval(T0, T0 + 5)
            led.charge_storage(T0 + 900_000, T0 + 900_000)
            heads.append(led.head_text())
    assert heads[0] == heads[1]


def test_charge_storage_without_a_rate_writes_nothing(led: Ledger) -> None:
    head = led.head_text()
    assert "storage_rate" not in led.genesis()
    assert led.charge_storage(T0 + 900_000, T0 + 900_000) == []
    assert led.head_text() == head and led.verify().ok


def test_charge_storage_refusals_write_nothing(tmp_path):
    with storage_community(tmp_path / "s.db") as led:
        led.charge_storage(T0, T0 + 1)
        led.close_interval(T0, T0 + 1)
        head = led.head_text()
        with pytest.raises(LedgerError, match="already closed"):
            led.charge_storage(T0, T0 + 2)
        assert led.head_text() == head
    no_storage = {**STORAGE_GENESIS}
    with Ledger.open(tmp_path / "n.db") as led:
        led.append_batch([("genesis", no_storage), member("alice")], ts=T0)
        led.append_batch([("opening", {"owner": "alice", "energy": 10, "money": 10**6})], ts=T0)
        head = led.head_text()
        with pytest.raises(LedgerError, match="no member has storage"):
            led.charge_storage(T0, T0 + 1)
        assert led.head_text() == head


def test_genesis_storage_rate_needs_education_and_network_funds(tmp_path):
    with Ledger.open(tmp_path / "g.db") as led:
        with pytest.raises(LedgerError, match="needs 'education' and 'network' funds"):
            led.append_batch([("genesis", {**GENESIS, "storage_rate": 5})], ts=T0)
        with pytest.raises(LedgerError, match="storage_rate"):  # 0 is written by omission
            led.append_batch([("genesis", {**STORAGE_GENESIS, "storage_rate": 0})], ts=T0)
        with pytest.raises(LedgerError, match="unknown field"):
            led.append_batch([("genesis", {**GENESIS, "storage": 5})], ts=T0)
        assert len(led) == 0


def test_storage_fees_are_recomputed_a_second_charge_and_a_skipped_interval_refused(tmp_path):
    with storage_community(tmp_path / "s.db") as led:
        with pytest.raises(LedgerError, match="storage fees were not charged"):
            led.close_interval(T0, T0 + 1)
        head = led.head_text()
        fee = {"owner": "alice", "amount": 4_000, "trade": None, "interval": T0}
        with pytest.raises(LedgerError, match="must be 5000") as exc:
            led.append_batch([("fee", fee)], ts=T0 + 1)
        assert exc.value.field == "amount"
        with pytest.raises(LedgerError, match="batch ends too early"):  # no fee_split
            led.append_batch([("fee", {**fee, "amount": 5_000})], ts=T0 + 1)
        assert led.head_text() == head
        led.charge_storage(T0, T0 + 2)
        with pytest.raises(LedgerError, match="second charge"):
            led.append_batch([("fee", {**fee, "amount": 5_000})], ts=T0 + 3)
        with pytest.raises(LedgerError, match="second charge"):
            led.charge_storage(T0, T0 + 3)
        led.close_interval(T0, T0 + 4)
        assert led.verify().ok


def test_verify_recomputes_storage_fees(tmp_path):
    with storage_community(tmp_path / "s.db") as led:
        [alice_fee, *_rest] = led.charge_storage(T0, T0 + 2)
        # Lower alice's fee and the split to match: the hashes are recomputed, so only the
        # rule catches it.
        rewrite(led, alice_fee.seq, lambda b: {**b, "amount": b["amount"] - 1})
        res = led.verify()
        assert not res.ok and res.bad_seq == alice_fee.seq and "must be 5000" in res.problem


def test_no_member_ever_holds_more_than_its_bmax(led: Ledger) -> None:
    # alice's bmax is 20000; bring her to 19000 Wh. bob holds 3955 Wh.
    held = led.balances()["alice"]["energy"]
    led.append_batch([("grid_import", {"owner": "alice", "qty": 19_000 - held, "price": RETAIL})])
    head = led.head_text()
    with pytest.raises(LedgerError, match="alice would hold 20001 Wh, above its bmax 20000"):
        led.append_batch([("grid_import", {"owner": "alice", "qty": 1_001, "price": RETAIL})])
    with pytest.raises(LedgerError, match="above its bmax 20000"):
        led.append_batch([trade("alice", "bob", 1_001, 200_000)])
    adjust = [{"account": "alice", "energy": 1_001, "money": 0},
              {"account": "@meters", "energy": -1_001, "money": 0}]  # fmt: skip
    with pytest.raises(LedgerError, match="above its bmax 20000"):
        led.append_batch([correction(6, adjust)])
    assert led.head_text() == head
    led.append_batch([trade("alice", "bob", 1_000, 200_000)])
    assert led.balances()["alice"]["energy"] == 20_000 and led.verify().ok
