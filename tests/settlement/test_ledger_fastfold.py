"""The ledger's compiled fast path for trades and trade fees
(settlement/ledger/_fastfold.pyx) against the Python fold, the reference: the same batches
give the same rows on disk, the same balances and cache, and the same refusal (message and
index), whatever the batch holds; verify gives the same result on the same file, whatever
a forger wrote into it; and the batched insert writes the same file, byte for byte, as
plain executemany.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wattmesh.settlement.canonical import CanonicalError, canonical
from wattmesh.settlement.ledger import KINDS, Ledger, LedgerError, entry_hash
from wattmesh.settlement.ledger import store as store_module
from wattmesh.settlement.ledger._fastfold import chain_hash

T0 = 1_718_928_000_000
# The last two need escaping or are not ASCII: the compiled path leaves their trades and
# fees to the Python fold, which must then give the same entries.
MEMBERS = ["alice", "bob", "carol", 'q"t', "z\u00f6e"]


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
               "feedin_price": 80_000,
               "funds": {"fees": "fund:fees", "network": "fund:net"}}  # fmt: skip
    items: list = [("genesis", genesis)]
    for m in MEMBERS:
        bmax = 2_000 if m == "carol" else 5_000  # below what bob holds: a cap to reach
        items.append(("member", {"owner": m, "bmax": bmax, "storage": False}))
        items.append(("deposit", {"owner": m, "amount": 10**9}))
    items.append(("grid_import", {"owner": "bob", "qty": 3_000, "price": 300_000}))
    # Money in a fund that is not "fees": an account with balances that is no member.
    items.append(("fee", {"owner": "carol", "amount": 5, "trade": 2}))
    items.append(("fee_split", {"fund": "fees", "shares": [{"account": "fund:net",
                                                             "amount": 5}]}))  # fmt: skip
    return items


def odd_values() -> st.SearchStrategy[dict[str, Any]]:
    """A change that makes a trade unclean (the Python fold must take it)."""
    return st.sampled_from([
        {"buyer": "dave"}, {"seller": "alice", "buyer": "alice"}, {"qty": 0},
        {"qty": True}, {"qty": 2**63}, {"qty": 10**6}, {"price": 999}, {"price": 10**7},
        {"price": 1.5}, {"bid": ""}, {"ask": "x" * 129}, {"interval": -1},
        {"interval": None}, {"bid": "\ud800"}, {"extra": 1}, {"bid": "b\\s"},
        {"ask": "\u00e9"}, {"interval": 2**63}, {"price": -5}, {"ask": "x" * 128},
        {"buyer": "carol", "seller": "bob", "qty": 2500, "price": 1000},  # above carol's bmax
    ])  # fmt: skip


def odd_fees() -> st.SearchStrategy[dict[str, Any]]:
    """A change that makes a trade fee unclean, or a storage fee (the Python fold's)."""
    return st.sampled_from([
        {"owner": "dave"}, {"owner": 7}, {"amount": 0}, {"amount": True}, {"amount": 2**63},
        {"amount": 10**12}, {"trade": 0}, {"trade": 10**6}, {"trade": None},
        {"trade": False}, {"interval": 3}, {"extra": 1},
    ])  # fmt: skip


@st.composite
def batches(draw: st.DrawFn) -> list[list]:
    out = []
    ts = T0
    for _ in range(draw(st.integers(1, 4))):
        batch = []
        for _ in range(draw(st.integers(1, 12))):
            ts += draw(st.sampled_from([0, 0, 1, 1000, -1]))
            kinds = ["trade"] * 6 + ["odd", "fee", "fee", "odd fee", "deposit"]
            what = draw(st.sampled_from(kinds))
            buyer, seller = draw(st.permutations(MEMBERS))[:2]
            body: dict[str, Any] = {"buyer": buyer, "seller": seller,
                                    "qty": draw(st.integers(1, 900)),
                                    "price": draw(st.integers(1_000, 400_000)),
                                    "bid": f"b{len(batch)}", "ask": f"a{len(batch)}",
                                    "interval": T0}  # fmt: skip
            if what == "odd":
                body.update(draw(odd_values()))
                batch.append(("trade", body, ts))
            elif what in ("fee", "odd fee"):
                fee = {"owner": buyer, "amount": draw(st.integers(1, 10**6)), "trade": 2}
                if what == "odd fee":
                    fee.update(draw(odd_fees()))
                batch.append(("fee", fee, ts) if draw(st.booleans()) else ("fee", fee))
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


def a_trade(**changes: Any) -> tuple:
    body = {"buyer": "alice", "seller": "bob", "qty": 10, "price": 200_000, "bid": "b",
            "ask": "a", "interval": T0}  # fmt: skip
    return ("trade", body | changes)


def a_fee(**changes: Any) -> tuple:
    return ("fee", {"owner": "alice", "amount": 3, "trade": 2} | changes)


class _Key(str):
    """A str subclass: equal to its text, and a key the canonical form refuses."""


def with_key_subclass(item: tuple, key: str) -> tuple:
    kind, body = item
    return (kind, {(_Key(k) if k == key else k): v for k, v in body.items()})


@pytest.mark.parametrize("item", [
    a_trade(buyer="carol", qty=2_500, price=1_000),  # above carol's bmax
    a_trade(qty=3_001),  # more than bob holds
    a_trade(buyer="bob"),  # with itself
    a_trade(price=999), a_trade(qty=0), a_trade(interval=2**63), a_trade(ask="\u00e9"),
    a_trade(seller='q"t'), a_fee(trade=len(opening()) + 2), a_fee(amount=10**9 + 1),
    a_fee(owner="fund:fees"), a_fee(owner="fund:net"), a_fee(owner="@grid"),
    a_trade(buyer="@grid"), a_fee(interval=3), ("fee", {"owner": "alice", "amount": 3}),
    with_key_subclass(a_trade(), "ask"), with_key_subclass(a_fee(), "owner"),
])  # fmt: skip
def test_an_unclean_item_after_clean_ones_is_the_python_folds(tmp_path: Path, ledger_rows,
                                                              item: tuple) -> None:  # fmt: skip
    """Each rule the compiled path checks, at least once whatever Hypothesis draws: the
    same entries, or the same refusal at the same index, as the Python fold's."""
    batch = [a_trade(), a_fee(), item, a_trade()]
    fast = run(tmp_path, "fast.db", [batch], True, ledger_rows)
    slow = run(tmp_path, "slow.db", [batch], False, ledger_rows)
    assert fast == slow


def clean_trades_and_fees(n: int) -> list:
    """``n`` clean trades, alice buying from bob and then selling back (so that any
    number of them stays within the balances), every fifth item a trade fee."""
    items: list = []
    trades = 0
    for k in range(n):
        if k % 5 == 4:
            items.append(("fee", {"owner": "alice", "amount": 3, "trade": 2}))
            continue
        buyer, seller = ("alice", "bob") if trades % 2 == 0 else ("bob", "alice")
        items.append(("trade", {"buyer": buyer, "seller": seller, "qty": 10,
                                "price": 200_000, "bid": f"b{k}", "ask": f"a{k}",
                                "interval": T0}))  # fmt: skip
        trades += 1
    return items


def test_clean_trades_and_fees_take_the_compiled_path(tmp_path: Path, monkeypatch) -> None:
    """Append and verify fold clean trades and trade fees in compiled code: the Python
    rule is called only for the other entries."""
    calls = []
    from wattmesh.settlement.ledger.fold import LedgerState

    original = LedgerState.apply

    def counting(self, seq, ts, kind, body, check_sig=True):  # noqa: ANN001
        calls.append(kind)
        return original(self, seq, ts, kind, body, check_sig)

    with Ledger.open(tmp_path / "l.db") as led:
        led.append_batch(opening(), ts=T0 - 1)
        monkeypatch.setattr(LedgerState, "apply", counting)
        led.append_batch(clean_trades_and_fees(50), ts=T0)
        assert calls == []
        led.append_batch([("deposit", {"owner": "carol", "amount": 5})], ts=T0)
        assert calls == ["deposit"]
        calls.clear()
        assert led.verify().ok
    assert calls == [kind for kind, _body in opening() if kind != "fee"] + ["deposit"]


def test_the_extension_is_used_when_installed() -> None:
    assert store_module._FAST_FOLD is True
    with pytest.raises(TypeError):
        store_module.append_run(None, (), 0, 0, bytearray(32), [], [])  # items: a list


def rechain(path: Path, seq: int, body: bytes, kind: str | None = None) -> None:
    """Replace entry ``seq``'s body (and kind) and recompute every hash from there on, as
    a forger who knows the format would: only the rules can catch it then."""
    import hashlib
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT seq, ts, kind, body, prev FROM entries WHERE seq >= ? "
                            "ORDER BY seq", (seq,)).fetchall()  # fmt: skip
        prev = rows[0][4]
        for s, ts, k, old, _p in rows:
            text = body if s == seq else old.encode()
            k = kind if s == seq and kind else k
            h = hashlib.sha256(b'%s[%d,%d,"%s",%s]' % (prev, s, ts, k.encode(), text))
            conn.execute("UPDATE entries SET kind = ?, body = ?, prev = ?, hash = ? "
                         "WHERE seq = ?", (k, text.decode(), prev, h.digest(), s))  # fmt: skip
            prev = h.digest()
        conn.commit()
    finally:
        conn.close()


def verify_either_way(path: Path) -> Any:
    """The file's VerifyResult, the same from the compiled walk and from the Python fold."""
    results = []
    for fast in (True, False):
        with fold(fast), Ledger.open(path, create=False) as led:
            results.append(led.verify())
    assert results[0] == results[1]
    return results[0]


def test_a_trade_where_a_grid_entry_is_owed_is_the_python_folds(tmp_path: Path,
                                                                make_reading) -> None:  # fmt: skip
    """A forged file in which a trade stands where a reading's grid entry is owed: the
    compiled walk leaves it to the Python fold, which names the obligation."""
    from wattmesh.settlement.keys import generate_key, peer_id_of

    meter = generate_key()
    path = tmp_path / "l.db"
    with Ledger.open(path) as led:
        led.append_batch(opening(), ts=T0 - 1)
        led.append_batch([("meter", {"meter": peer_id_of(meter), "owner": "alice"})], ts=T0)
        reading = make_reading(meter, T0, 6_000, 0, 1)  # above alice's bmax: an export
        got = led.append_batch([("reading", reading.to_dict())], ts=T0 + 900_000)
        assert [e.kind for e in got] == ["reading", "grid_export"]
        seq = len(led)
    rechain(path, seq, trade_text(buyer='"bob"', seller='"alice"'), kind="trade")
    result = verify_either_way(path)
    assert result.bad_seq == seq and "must be followed by its grid_export" in str(result)


def test_a_trade_inside_a_storage_group_is_the_python_folds(tmp_path: Path,
                                                            ledger_rows) -> None:  # fmt: skip
    """Storage fees being charged (their fee_split still to come): a trade there is
    refused by the Python fold, at its own index, and a trade fee is taken."""
    from wattmesh.settlement.fees import storage_fee

    genesis = {"community": "stored", "interval_ms": 900_000, "price_min": 1_000,
               "price_max": 1_000_000, "fee_rate_ppm": 0, "retail_price": 300_000,
               "feedin_price": 80_000, "storage_rate": 5_000_000,
               "funds": {"fees": "fund:fees", "education": "fund:edu",
                         "network": "fund:net"}}  # fmt: skip
    start = [("genesis", genesis),
             ("member", {"owner": "alice", "bmax": 5_000, "storage": True}),
             ("member", {"owner": "bob", "bmax": 5_000, "storage": False}),
             ("deposit", {"owner": "alice", "amount": 10**9}),
             ("deposit", {"owner": "bob", "amount": 10**9}),
             ("grid_import", {"owner": "bob", "qty": 3_000, "price": 300_000})]  # fmt: skip
    storage = ("fee", {"owner": "bob", "amount": storage_fee(3_000, 5_000_000), "trade": None,
                       "interval": 0})  # fmt: skip
    outcomes = []
    for fast in (True, False):
        with fold(fast), Ledger.open(tmp_path / f"{fast}.db") as led:
            led.append_batch(start, ts=T0)
            for batch in ([storage, a_trade(), ("fee_split", {})],
                          [storage, a_fee(), ("fee_split", {})]):  # fmt: skip
                try:
                    led.append_batch(batch, ts=T0)
                except LedgerError as exc:
                    outcomes.append((fast, str(exc), exc.index))
    assert outcomes[:2] == [(True, *o[1:]) for o in outcomes[2:]]
    assert outcomes[0][2] == 1 and "need their fee_split" in outcomes[0][1]
    assert outcomes[1][2] == 2  # the trade fee was taken; the empty fee_split is not


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
    result = verify_either_way(path)
    assert not result.ok and result.bad_seq == seq


FIRST = len(opening()) + 1  # the first entry after the opening
LAST = FIRST + 5


def forgeable_ledger(path: Path) -> None:
    """A ledger whose entries FIRST to LAST are three trades, each followed by a trade
    fee."""
    with Ledger.open(path) as led:
        led.append_batch(opening(), ts=T0 - 1)
        items: list = []
        for k in range(3):
            items.append(("trade", {"buyer": "alice", "seller": "bob", "qty": 10,
                                    "price": 200_000, "bid": f"b{k}", "ask": f"a{k}",
                                    "interval": T0}))  # fmt: skip
            items.append(("fee", {"owner": "alice", "amount": 3, "trade": FIRST}))
        led.append_batch(items, ts=T0)
        assert len(led) == LAST


# Raw JSON a forger might write for a field: canonical values, and all that the compiled
# scanner must hand to the Python fold (which then says what is wrong, or takes it).
INTS = ["0", "7", "10", "200000", "00", "07", "-5", "5.0", "1e3", "true", "null", '"5"',
        "9223372036854775807", "9223372036854775808", "18446744073709551616", " 5"]  # fmt: skip
NAMES = ['"alice"', '"bob"', '"carol"', '"dave"', '""', '"a\\"b"', '"\\u00e9"',
         '"\u00e9"', '"' + "x" * 128 + '"', '"' + "x" * 129 + '"', '"\\ud800"', "1",
         '"q\\"t"', '"al ice"', '"alice', "null"]  # fmt: skip
FIELDS = {
    "trade": {"ask": NAMES, "bid": NAMES, "buyer": NAMES, "interval": INTS, "price": INTS,
              "qty": INTS, "seller": NAMES},
    "fee": {"amount": INTS, "owner": NAMES, "trade": INTS, "interval": INTS},
}  # fmt: skip
CLEAN = {
    "trade": {"ask": '"a0"', "bid": '"b0"', "buyer": '"alice"', "interval": str(T0),
              "price": "200000", "qty": "10", "seller": '"bob"'},
    "fee": {"amount": "3", "owner": '"alice"', "trade": str(FIRST)},
}  # fmt: skip


def body_text(kind: str, **changes: str) -> bytes:
    """A stored body of ``kind`` written field by field, ``changes`` as raw JSON."""
    fields = CLEAN[kind] | changes
    return ("{" + ",".join(f'"{k}":{fields[k]}' for k in sorted(fields)) + "}").encode()


def trade_text(**changes: str) -> bytes:
    return body_text("trade", **changes)


def fee_text(**changes: str) -> bytes:
    return body_text("fee", **changes)


@st.composite
def forged_bodies(draw: st.DrawFn) -> tuple[int, bytes]:
    """(seq, body): a stored trade or fee body with some fields (or keys, their order,
    the spacing) changed."""
    kind = draw(st.sampled_from(["trade", "fee"]))
    fields = dict(CLEAN[kind])
    for f in draw(st.sets(st.sampled_from(sorted(FIELDS[kind])), max_size=3)):
        fields[f] = draw(st.sampled_from(FIELDS[kind][f]))
    if draw(st.integers(0, 9)) == 0 and len(fields) > 1:
        del fields[draw(st.sampled_from(sorted(fields)))]
    keys = sorted(fields)
    if draw(st.integers(0, 9)) == 0:
        keys = draw(st.permutations(keys))
    parts = [f'"{k}":{fields[k]}' for k in keys]
    if draw(st.integers(0, 9)) == 0:
        parts.append(parts[0])  # a key twice
    text = "{" + draw(st.sampled_from([",", ", "])).join(parts) + "}"
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    seq = FIRST + draw(st.sampled_from([0, 2, 4])) + (kind == "fee")
    return seq, text.encode()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(forged=forged_bodies())
# Each rule of the scanner, at least once whatever Hypothesis draws:
@example(forged=(FIRST, trade_text(qty="010")))  # a leading zero
@example(forged=(FIRST, trade_text(qty="0")))  # zero: the Python rule refuses it
@example(forged=(FIRST, trade_text(qty="-10")))  # a sign
@example(forged=(FIRST, trade_text(qty="9223372036854775808")))  # past 64 bits
@example(forged=(FIRST, trade_text(qty="10.0")))  # a float
@example(forged=(FIRST, trade_text(seller='"b\\u006fb"')))  # an escape, the same name
@example(forged=(FIRST, trade_text(seller='"q\\"t"')))  # a member whose name needs one
@example(forged=(FIRST, trade_text(ask='"' + "x" * 129 + '"')))  # too long a name
@example(forged=(FIRST, trade_text(ask='"' + "x" * 128 + '"')))  # just long enough
@example(forged=(FIRST, trade_text(ask='""')))  # an empty name
@example(forged=(FIRST, trade_text(seller='"alice"')))  # a trade with itself
@example(forged=(FIRST, trade_text(seller='"dave"')))  # not a member
@example(forged=(FIRST, trade_text(price="999")))  # below the genesis price_min
@example(forged=(FIRST, trade_text(buyer='"carol"', qty="2500", price="1000")))  # > bmax
@example(forged=(FIRST, trade_text(ask='"\u00e9"')))  # not ASCII
@example(forged=(FIRST, trade_text(qty="10 ")))  # a space
@example(forged=(FIRST + 1, fee_text(trade=str(FIRST + 1))))  # a fee for itself
@example(forged=(FIRST + 1, fee_text(trade="0")))
@example(forged=(FIRST + 1, fee_text(amount="0")))
@example(forged=(FIRST + 1, fee_text(amount=str(10**15))))  # more than alice has
@example(forged=(FIRST + 1, fee_text(owner='"fund:fees"')))  # not a member
@example(forged=(FIRST + 1, fee_text(interval="3")))  # a storage fee
def test_verify_gives_the_same_result_on_any_forged_trade_or_fee(tmp_path_factory,
                                                                 forged) -> None:  # fmt: skip
    """A forger who rewrites a trade's or a fee's body and rechains the hashes gets the
    same verdict, word for word, from the compiled walk and from the Python fold."""
    seq, body = forged
    path = tmp_path_factory.mktemp("forged") / "l.db"
    forgeable_ledger(path)
    rechain(path, seq, body)
    result = verify_either_way(path)
    if not is_canonical(body):
        assert not result.ok and result.bad_seq == seq


def is_canonical(text: bytes) -> bool:
    try:
        return canonical(orjson.loads(text)) == text
    except (orjson.JSONDecodeError, CanonicalError):
        return False


@pytest.mark.parametrize("head_seq", [0, FIRST - 1, FIRST + 2, LAST, LAST + 1, 2**64])
def test_verify_against_a_head_is_the_same_either_way(tmp_path: Path, ledger_rows,
                                                      head_seq: int) -> None:  # fmt: skip
    """A head the walk must look for (the compiled walk notes its hash too), one past the
    end, or beyond 64 bits; with its true hash and with a wrong one."""
    path = tmp_path / "l.db"
    forgeable_ledger(path)
    hashes = {row[0]: row[5] for row in ledger_rows(path)} | {0: bytes(32)}
    true_hash = hashes.get(head_seq, bytes(32))
    results = []
    for fast in (True, False):
        with fold(fast), Ledger.open(path, create=False) as led:
            results.append([led.verify((head_seq, true_hash)),
                            led.verify((head_seq, b"\x01" * 32))])  # fmt: skip
    assert results[0] == results[1]
    assert results[0][0].ok == (head_seq <= LAST)
    assert not results[0][1].ok


def plain_executemany(conn, columns: list) -> None:  # noqa: ANN001
    """The reference insert: one row at a time, blobs as bytes."""
    rows = [tuple(bytes(v) if type(v) is bytearray else v for v in columns[i : i + 6])
            for i in range(0, len(columns), 6)]  # fmt: skip
    conn.executemany("INSERT INTO entries (seq, ts, kind, body, prev, hash) "
                     "VALUES (?,?,?,?,?,?)", rows)  # fmt: skip


def test_the_batched_insert_writes_the_file_of_plain_executemany(tmp_path: Path,
                                                                 monkeypatch) -> None:  # fmt: skip
    """Statements of many rows, hashes bound as bytearray: the same file, byte for byte,
    as executemany of bytes rows, for batches of every size around the statements' (128
    rows, then 64, 32, ... 1), one at a time and inside atomic()."""
    sizes = [1, 2, 3, 63, 127, 128, 129, 255, 256, 300, 1000]
    files = []
    for reference in (False, True):
        if reference:
            monkeypatch.setattr(store_module, "_insert_entries", plain_executemany)
        path = tmp_path / f"{reference}.db"
        with Ledger.open(path) as led:
            led.append_batch(opening(), ts=T0 - 1)
            for n in sizes:
                led.append_batch(clean_trades_and_fees(n), ts=T0)
            with led.atomic():
                led.append_batch(clean_trades_and_fees(130), ts=T0)
                led.append_batch([("deposit", {"owner": "bob", "amount": 5})], ts=T0)
            assert led.verify().ok
        files.append(path.read_bytes())
    assert not (tmp_path / "False.db-wal").exists()  # closed: everything is in the file
    assert files[0] == files[1]


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
