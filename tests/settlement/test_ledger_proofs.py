"""Interval closes (Ledger.close_interval), their recomputation by verify, and Merkle
inclusion proofs (Ledger.prove, ``wattmesh ledger prove`` / ``check-proof``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.ledger import (
    ZERO_HASH,
    Ledger,
    LedgerError,
    check_proof,
    entry_hash,
    parse_proof,
)
from wattmesh.settlement.merkle import chain_digest, merkle_root

T0 = 1_718_928_000_000
IV = 900_000
SIZES = (6, 1, 2, 3, 5, 8, 13)  # entries per interval (the first one includes genesis)

def trade(i: int, interval: int) -> tuple[str, dict]:
    return (
        "trade",
        {"buyer": "alice", "seller": "bob", "qty": 1 + i, "price": 200_000,
         "bid": f"b{i}", "ask": f"a{i}", "interval": interval},
    )  # fmt: skip


def build(
    path: Path, opening: list, sizes: tuple[int, ...] = SIZES, tail: int = 2
) -> Ledger:
    """After ``opening`` (6 entries), intervals of ``sizes`` entries, each closed, then
    ``tail`` entries not closed yet."""
    led = Ledger.open(path)
    led.append_batch(opening, ts=T0)
    n = 0
    for k, size in enumerate(sizes):
        iv = T0 + k * IV
        todo = size - (6 if k == 0 else 0)
        if todo:
            led.append_batch([trade(n + i, iv) for i in range(todo)], ts=iv + 1)
            n += todo
        led.close_interval(iv, ts=iv + 2)
    iv = T0 + len(sizes) * IV
    if tail:
        led.append_batch([trade(n + i, iv) for i in range(tail)], ts=iv + 1)
    return led


@pytest.fixture
def opening(street_opening) -> list:
    return street_opening(money=10**12, bob_energy=10_000)


@pytest.fixture
def led(tmp_path: Path, opening: list) -> Ledger:
    with build(tmp_path / "node.db", opening) as ledger:
        yield ledger


def closes(led: Ledger) -> list:
    return list(led.entries(kind="interval_close"))


# -- close_interval ---------------------------------------------------------------------


def test_close_covers_the_entries_since_the_previous_close(led: Ledger) -> None:
    entries = list(led.entries())
    cs = closes(led)
    assert [c.body["entries"] for c in cs] == list(SIZES)
    start = 0  # the first close covers genesis on
    for k, c in enumerate(cs):
        covered = [e.hash for e in entries[start : c.seq - 1]]
        assert all(e.kind != "interval_close" for e in entries[start : c.seq - 1])
        assert c.body == {
            "interval": T0 + k * IV,
            "entries": len(covered),
            "digest": chain_digest(covered).hex(),
            "merkle_root": merkle_root(covered).hex(),
        }
        start = c.seq
    assert cs[0].body["entries"] == 6 and entries[0].kind == "genesis"
    assert led.verify().ok


def test_empty_interval_closes_with_the_empty_root(tmp_path: Path, opening: list) -> None:
    with build(tmp_path / "x.db", opening, sizes=(6,), tail=0) as led:
        c = led.close_interval(T0 + IV, ts=T0 + IV)
        assert c.body["entries"] == 0
        assert c.body["digest"] == ZERO_HASH.hex()
        assert c.body["merkle_root"] == merkle_root([]).hex()
        assert led.verify().ok


@pytest.mark.parametrize("interval", [T0 + 6 * IV, T0, -1, "x", True])
def test_close_for_an_interval_not_after_the_last_is_refused(led: Ledger, interval) -> None:
    head = led.head()
    with pytest.raises(LedgerError) as exc:
        led.close_interval(interval, ts=T0 + 10 * IV)
    assert exc.value.field == "interval" and exc.value.kind == "interval_close"
    assert led.head() == head
    assert led.verify().ok


def test_interval_order_survives_reopening(tmp_path: Path, opening: list) -> None:
    build(tmp_path / "x.db", opening).close()
    with Ledger.open(tmp_path / "x.db") as led:
        with pytest.raises(LedgerError, match="must be after the previous close's interval"):
            led.close_interval(T0 + 6 * IV, ts=T0 + 10 * IV)
        led.close_interval(T0 + 7 * IV, ts=T0 + 10 * IV)
        assert led.verify().ok


def test_close_refuses_an_earlier_ts_and_writes_nothing(led: Ledger) -> None:
    head = led.head()
    with pytest.raises(LedgerError, match="before the previous entry's ts"):
        led.close_interval(T0 + 9 * IV, ts=T0)
    assert led.head() == head


def test_append_batch_refuses_interval_close(led: Ledger) -> None:
    body = {"interval": T0 + 9 * IV, "entries": 2, "digest": "d" * 64, "merkle_root": "e" * 64}
    head = led.head()
    with pytest.raises(LedgerError, match="close_interval") as exc:
        led.append_batch([trade(99, T0), ("interval_close", body)], ts=T0 + 9 * IV)
    assert exc.value.index == 1
    assert led.head() == head


# -- verify recomputes closes ---------------------------------------------------------------


def rewrite(path: Path, seq: int, change) -> None:
    """Change entry ``seq``'s body and recompute every hash after it (not the closes)."""
    c = sqlite3.connect(path, isolation_level=None)
    rows = c.execute("SELECT seq, ts, kind, body FROM entries ORDER BY seq").fetchall()
    prev = ZERO_HASH
    c.execute("BEGIN")
    for s, ts, kind, body in rows:
        b = orjson.loads(body)
        if s == seq:
            b = change(b)
        h = entry_hash(prev, s, ts, kind, b)
        if s >= seq:
            c.execute(
                "UPDATE entries SET body=?, prev=?, hash=? WHERE seq=?",
                (canonical(b).decode(), prev, h, s),
            )
        prev = h
    c.execute("COMMIT")
    c.close()


@pytest.mark.parametrize("field", ["merkle_root", "digest"])
def test_verify_names_a_close_with_a_wrong_root(cli, led: Ledger, field: str) -> None:
    close = closes(led)[3]
    rewrite(led.path, close.seq, lambda b: {**b, field: "ab" * 32})
    res = led.verify()
    assert not res.ok and res.bad_seq == close.seq
    assert f"{field} {'ab' * 32} is not the one of the {close.body['entries']} entries" in (
        res.problem
    )
    code, out, _ = cli("ledger", "verify", led.path)
    assert code == 1 and out.startswith(f"bad entry {close.seq}: interval_close")


def test_tampered_entry_inside_an_interval(cli, led: Ledger) -> None:
    old_head = led.head_text()
    close = closes(led)[5]
    victim = close.seq - 3  # a trade inside that interval
    rewrite(led.path, victim, lambda b: {**b, "qty": b["qty"] + 1})
    res = led.verify()
    assert not res.ok and res.bad_seq == close.seq and "merkle_root" in res.problem
    res = led.verify(old_head)
    assert not res.ok and res.bad_seq == close.seq
    # and the stored root now refuses to prove anything of that interval
    code, _, err = cli("ledger", "prove", led.path, "--entry", victim)
    assert code == 2 and "does not match" in err


# -- prove / check-proof ------------------------------------------------------------------


def test_proof_round_trip_for_every_covered_entry(cli, led: Ledger) -> None:
    cs = closes(led)
    roots = {c.seq: c.body for c in cs}
    checked = 0
    for e in led.entries():
        if e.kind == "interval_close" or e.seq > cs[-1].seq:
            continue
        code, out, err = cli("ledger", "prove", led.path, "--entry", e.seq)
        assert code == 0, err
        assert out.endswith("\n") and out.count("\n") == 1
        p = orjson.loads(out)
        assert list(p) == ["entry", "entry_hash", "interval", "close_seq", "index",
                           "tree_size", "root", "proof"]  # fmt: skip
        close = roots[p["close_seq"]]
        assert p["entry"] == e.seq and p["entry_hash"] == e.hash_hex
        assert p["root"] == close["merkle_root"] and p["interval"] == close["interval"]
        assert p["tree_size"] == close["entries"]
        assert p["close_seq"] - p["tree_size"] + p["index"] == e.seq
        assert p == led.prove(e.seq)
        assert check_proof(parse_proof(p)) == ""
        code, out, _ = cli("ledger", "check-proof", "-", input=out.encode())
        assert (code, out) == (0, "ok\n")
        checked += 1
    assert checked == sum(SIZES)


def test_check_proof_reads_a_file(cli, led: Ledger, tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_bytes(orjson.dumps(led.prove(20)))
    assert cli("ledger", "check-proof", f)[:2] == (0, "ok\n")


@pytest.mark.parametrize("seq", [1, 8, 20, 35])
def test_a_flipped_byte_fails_check_proof(cli, led: Ledger, tmp_path: Path, seq: int) -> None:
    good = led.prove(seq)

    def flip_hex(h: str, at: int = 0) -> str:
        return h[:at] + format(int(h[at], 16) ^ 1, "x") + h[at + 1 :]

    bads = {
        "root": {**good, "root": flip_hex(good["root"], 63)},
        "entry_hash": {**good, "entry_hash": flip_hex(good["entry_hash"], 5)},
        "index": {**good, "index": good["index"] ^ 1},
        "entry": {**good, "entry": good["entry"] + 1},
        "tree_size": {**good, "tree_size": good["tree_size"] + 1},
    }
    if good["proof"]:
        for i in range(len(good["proof"])):
            path = list(good["proof"])
            path[i] = flip_hex(path[i], 17)
            bads[f"proof[{i}]"] = {**good, "proof": path}
        bads["proof short"] = {**good, "proof": good["proof"][:-1]}
    bads["proof long"] = {**good, "proof": [*good["proof"], good["root"]]}
    for what, doc in bads.items():
        code, out, err = cli("ledger", "check-proof", "-", input=orjson.dumps(doc))
        assert code == 1, (what, out, err)
        assert out.startswith("bad proof: ") and out.count("\n") == 1, what
        assert check_proof(parse_proof(doc)) != ""


def test_bad_proof_messages_name_the_problem(cli, led: Ledger) -> None:
    good = led.prove(20)
    root = "0" * 64
    out = cli("ledger", "check-proof", "-", input=orjson.dumps({**good, "root": root}))[1]
    assert f"does not lead to root {root}" in out
    out = cli(
        "ledger", "check-proof", "-", input=orjson.dumps({**good, "index": 98, "tree_size": 99})
    )[1]
    assert "is not index 98" in out
    out = cli("ledger", "check-proof", "-", input=orjson.dumps({**good, "index": 99}))[1]
    assert "outside a tree" in out


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: {k: v for k, v in p.items() if k != "root"}, "'root': missing"),
        (lambda p: {**p, "extra": 1}, "'extra': unknown field"),
        (lambda p: {**p, "root": p["root"].upper()}, "'root'"),
        (lambda p: {**p, "entry_hash": "zz"}, "'entry_hash'"),
        (lambda p: {**p, "index": -1}, "'index'"),
        (lambda p: {**p, "index": "3"}, "'index'"),
        (lambda p: {**p, "tree_size": 0}, "'tree_size'"),
        (lambda p: {**p, "entry": True}, "'entry'"),
        (lambda p: {**p, "proof": "ab"}, "'proof'"),
        (lambda p: {**p, "proof": [1]}, "'proof': item 0"),
        (lambda p: [p], "must be a JSON object"),
    ],
)
def test_malformed_proof_exits_2_naming_the_field(cli, led: Ledger, change, field: str) -> None:
    doc = change(led.prove(20))
    code, out, err = cli("ledger", "check-proof", "-", input=orjson.dumps(doc))
    assert (code, out) == (2, "")
    assert err.startswith("wattmesh: error: ") and field in err and err.count("\n") == 1


def test_check_proof_bad_input_exits_2(cli, tmp_path: Path) -> None:
    code, _, err = cli("ledger", "check-proof", "-", input=b"{not json")
    assert code == 2 and "not JSON" in err
    code, _, err = cli("ledger", "check-proof", tmp_path / "missing.json")
    assert code == 2 and "cannot read" in err


@pytest.mark.parametrize(
    ("seq", "words"),
    [(47, "not covered by an interval_close yet"), (7, "is an interval_close"),
     (999, "no entry 999"), (0, "no entry 0")],
)  # fmt: skip
def test_prove_refuses_uncovered_entries(cli, led: Ledger, seq: int, words: str) -> None:
    assert [c.seq for c in closes(led)][:1] == [7] and len(led) == 47
    code, out, err = cli("ledger", "prove", led.path, "--entry", seq)
    assert (code, out) == (2, "")
    assert err.startswith("wattmesh: error: --entry: ") and words in err
    assert err.count("\n") == 1


def test_prove_needs_an_existing_ledger(cli, tmp_path: Path) -> None:
    code, _, err = cli("ledger", "prove", tmp_path / "none.db", "--entry", 1)
    assert code == 2 and "no ledger file" in err
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda b: {**b, "entries": b["entries"] + 1}, "field 'entries': must be"),
        (lambda b: {**b, "digest": "XY"}, "field 'digest': must be 64 lower-case hex"),
        (lambda b: {**b, "interval": T0 - 1}, "field 'interval': must be after"),
    ],
)
def test_verify_applies_the_close_rules_to_a_forged_close(led: Ledger, change, words) -> None:
    close = closes(led)[2]
    rewrite(led.path, close.seq, change)
    res = led.verify()
    assert not res.ok and res.bad_seq == close.seq and words in res.problem
