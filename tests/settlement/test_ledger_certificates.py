"""Certificates in the ledger (settlement/ledger.py, docs/ledger.md "Certificates"): a
close that names a certified set has its majority's votes stored beside it, written in the
close's own transaction, and ``verify`` checks them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from wattmesh.exchange.community_file import Community, MemberSpec
from wattmesh.exchange.node.settle_interval import settle_interval
from wattmesh.exchange.node.wire import set_digest
from wattmesh.settlement.certificate import Certificate, IntervalVote
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.ledger import Ledger, LedgerError

L = 900_000
START = 1_781_935_200_000 - 1_781_935_200_000 % L
KEYS = [generate_key() for _ in range(4)]
SET = set_digest(["ab" * 32])


@pytest.fixture
def ledger(tmp_path: Path):
    members = tuple(MemberSpec(peer_id_of(k), bmax=1_000) for k in KEYS)
    c = Community(name="certs", start_ms=START, interval_ms=L, members=members)
    led = Ledger.open(tmp_path / "ledger.sqlite")
    led.append_batch(c.genesis_items(), ts=c.genesis_ts)
    yield led
    led.close()


def certificate(t: int, signers: int = 3, digest: str = SET, round_: int = 0) -> Certificate:
    return Certificate.of(
        IntervalVote(peer_id_of(k), t, round_, digest, t + 1).signed(k) for k in KEYS[:signers]
    )


def stored(led: Ledger, t: int) -> dict:
    (body,) = led.conn.execute("SELECT body FROM certificates WHERE interval = ?", (t,)).fetchone()
    return orjson.loads(body)


def rewrite(led: Ledger, t: int, body: dict) -> None:
    led.conn.execute("UPDATE certificates SET body = ? WHERE interval = ?",
                     (orjson.dumps(body).decode(), t))  # fmt: skip


def test_a_certified_close_names_the_set_and_verifies(ledger: Ledger):
    out = settle_interval(ledger, START, [], [], [], certificate=certificate(START))
    assert out.close.body["set"] == SET
    assert ledger.certificate(START) == certificate(START)
    assert ledger.verify().ok
    # The stored signatures are beside the chain: another majority's certificate of the
    # same set gives the same close hash.
    other = Ledger.open(ledger.path.with_name("other.sqlite"))
    other.append_batch(list(_opening(ledger)), ts=START)
    alt = Certificate.of(IntervalVote(peer_id_of(k), START, 2, SET, 7).signed(k) for k in KEYS[1:])
    assert settle_interval(other, START, [], [], [], certificate=alt).digest == out.digest
    other.close()


def _opening(led: Ledger):
    for e in led.entries():
        if e.kind == "interval_close":
            break
        yield e.kind, e.body


def test_a_close_refuses_a_certificate_that_does_not_hold(ledger: Ledger):
    head = ledger.head()
    for bad, why in (
        (certificate(START, signers=2), "needs 3"),
        (certificate(START + L), "interval"),
    ):
        with pytest.raises(LedgerError, match=why):
            settle_interval(ledger, START, [], [], [], certificate=bad)
        assert ledger.head() == head
        assert ledger.conn.execute("SELECT count(*) FROM certificates").fetchone() == (0,)


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("drop-a-vote", "needs 3"),
        ("forge-a-signature", "not signed"),
        ("another-set", "the close names"),
        ("delete", "no certificate is stored"),
        ("extra-row", "2 certificates are stored for 1 closes"),
        ("not-json", "malformed"),
    ],
)
def test_verify_catches_every_tampered_certificate(ledger: Ledger, tamper: str, problem: str):
    settle_interval(ledger, START, [], [], [], certificate=certificate(START))
    body = stored(ledger, START)
    if tamper == "drop-a-vote":
        body["votes"] = body["votes"][:2]
        rewrite(ledger, START, body)
    elif tamper == "forge-a-signature":
        body["votes"][0]["sig"] = body["votes"][1]["sig"]
        rewrite(ledger, START, body)
    elif tamper == "another-set":
        rewrite(ledger, START, certificate(START, digest="cd" * 32).to_dict())
    elif tamper == "delete":
        ledger.conn.execute("DELETE FROM certificates")
    elif tamper == "extra-row":
        ledger.conn.execute("INSERT INTO certificates VALUES (?, ?)",
                            (START + L, orjson.dumps(body).decode()))  # fmt: skip
    elif tamper == "not-json":
        ledger.conn.execute("UPDATE certificates SET body = '{'")
    result = ledger.verify()
    assert not result.ok and problem in result.problem, result.problem


def test_a_ledger_without_certificates_still_opens_and_verifies(tmp_path: Path, ledger: Ledger):
    settle_interval(ledger, START, [], [], [])  # replay's kind of close: no set
    ledger.conn.execute("DROP TABLE certificates")  # as a ledger from before certificates
    path = ledger.path
    ledger.close()
    again = Ledger.open(path)
    assert again.verify().ok and again.certificate(START) is None
    names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "certificates" in names
    again.close()
