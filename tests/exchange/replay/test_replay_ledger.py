"""``wattmesh replay LOG --ledger FILE`` (wattmesh.exchange.replay.to_ledger; docs/replay.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattmesh.exchange.replay.replay import ReplayOptions, ReplayResult, replay
from wattmesh.exchange.replay.to_ledger import (
    NO_BMAX,
    ReplayLedgerError,
    genesis_body,
    settle_into_ledger,
)
from wattmesh.settlement.ledger import Ledger

L = 900_000
T0 = 1_718_928_000_000


def sample(mode: str) -> ReplayResult:
    return replay(None, ReplayOptions(mode=mode))


def kinds(path: Path) -> list[str]:
    with Ledger.open(path, create=False) as led:
        return [e.kind for e in led.entries()]


@pytest.fixture
def assert_matches_replay(ledger_agrees):
    """``assert_matches_replay(result, path)``: the ledger verifies, holds the closing
    balances and books every fill but the self-fills."""

    def check(result: ReplayResult, path: Path) -> None:
        with ledger_agrees(result, path) as led:
            trades = list(led.entries(kind="trade"))
        t = result.trades
        self_fills = sum(b == s for b, s in zip(t.buyer, t.seller, strict=True))
        assert len(trades) == len(result.trades) - self_fills

    return check


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_the_same_log_gives_the_same_head_and_a_verified_ledger(
    assert_matches_replay, tmp_path, mode
):
    a = settle_into_ledger(sample(mode), tmp_path / "a.db")
    b = settle_into_ledger(sample(mode), tmp_path / "b.db")
    assert a.head == b.head and a.entries == b.entries
    assert_matches_replay(sample(mode), tmp_path / "a.db")
    with Ledger.open(tmp_path / "a.db", create=False) as led:
        assert led.head_text() == a.head
        assert led.genesis() == genesis_body(sample(mode))


def test_call_mode_books_each_interval_then_closes_it(assert_matches_replay, order_log, tmp_path):
    log = (
        order_log.account("alice", 0, 10**12, 5_000),
        order_log.account("bob", 1_000, 0),
        order_log.order("alice", "bid", 200_000, 300, T0 - 10, T0 + L),
        order_log.order("bob", "ask", 150_000, 300, T0 - 5, T0 + L),
        order_log.order("alice", "bid", 210_000, 200, T0 + L + 1, T0 + 2 * L),
        order_log.order("bob", "ask", 160_000, 200, T0 + L + 2, T0 + 2 * L),
    )
    result = order_log.replay(*log, mode="call")
    s = settle_into_ledger(result, tmp_path / "l.db")
    assert s.trades == len(result.trades) == 2 and s.closes == 2 and s.self_fills == 0
    # alice opens with money only, bob with energy only
    assert kinds(tmp_path / "l.db") == [
        "genesis", "member", "opening", "member", "opening",
        "trade", "interval_close", "trade", "interval_close",
    ]  # fmt: skip
    assert_matches_replay(result, tmp_path / "l.db")
    with Ledger.open(tmp_path / "l.db", create=False) as led:
        entries = list(led.entries())
        members = {e.body["owner"]: e.body["bmax"] for e in entries if e.kind == "member"}
        assert members == {"alice": 5_000, "bob": NO_BMAX}
        trade = next(e for e in entries if e.kind == "trade")
        assert trade.ts == T0 + L and trade.body["interval"] == T0 + L  # at the gate
        closes = [e for e in entries if e.kind == "interval_close"]
        assert [c.body["interval"] for c in closes] == [T0 + L, T0 + 2 * L]
        assert [c.body["entries"] for c in closes] == [6, 1]
        assert led.balances()["@meters"]["energy"] == -1_000
        assert led.balances()["@bank"]["money"] == -(10**12)


def test_cda_buckets_fills_by_interval_and_stamps_each_at_its_fill(
    assert_matches_replay, order_log, tmp_path
):
    log = (
        order_log.account("alice", 0, 10**12),
        order_log.account("bob", 1_000, 0),
        order_log.order("bob", "ask", 150_000, 100, T0 + 1),
        order_log.order("alice", "bid", 200_000, 100, T0 + 2),
        order_log.order("bob", "ask", 150_000, 100, T0 + 3),
        order_log.order("alice", "bid", 200_000, 100, T0 + 4),
        order_log.order("bob", "ask", 150_000, 100, T0 + L + 7),
        order_log.order("alice", "bid", 200_000, 100, T0 + L + 8),
    )
    result = order_log.replay(*log, mode="cda")
    s = settle_into_ledger(result, tmp_path / "l.db")
    assert s.trades == len(result.trades) == 3 and s.closes == 2
    assert_matches_replay(result, tmp_path / "l.db")
    with Ledger.open(tmp_path / "l.db", create=False) as led:
        trades = list(led.entries(kind="trade"))
        assert [t.ts for t in trades] == [T0 + 2, T0 + 4, T0 + L + 8]
        assert [t.body["interval"] for t in trades] == [T0, T0, T0 + L]
        closes = list(led.entries(kind="interval_close"))
        assert [c.body["interval"] for c in closes] == [T0, T0 + L]


def test_self_fills_are_counted_not_booked(assert_matches_replay, tmp_path):
    result = sample("cda")  # the sample has self-fills under --stp none
    s = settle_into_ledger(result, tmp_path / "l.db")
    assert s.self_fills == 10
    assert_matches_replay(result, tmp_path / "l.db")


def test_a_fill_by_an_owner_without_an_account_line_is_refused_and_nothing_written(
    order_log, tmp_path
):
    result = order_log.replay(
        order_log.account("alice", 0, 10**12),
        order_log.order("carol", "ask", 150_000, 100, T0 - 5, T0),
        order_log.order("alice", "bid", 200_000, 100, T0 - 4, T0),
    )
    assert len(result.trades) == 1
    with pytest.raises(ReplayLedgerError, match="carol traded without an account line"):
        settle_into_ledger(result, tmp_path / "l.db")
    assert not (tmp_path / "l.db").exists()


def test_an_uncapped_owner_without_fills_is_left_out(order_log, tmp_path):
    result = order_log.replay(
        order_log.account("alice", 0, 10**12),
        order_log.order("carol", "ask", 150_000, 100, T0 - 5, T0),
    )
    s = settle_into_ledger(result, tmp_path / "l.db")
    assert s.left_out == ("carol",) and s.members == 1


def test_an_existing_file_is_refused_unless_empty(assert_matches_replay, tmp_path):
    full = tmp_path / "full.db"
    full.write_bytes(b"x")
    with pytest.raises(ReplayLedgerError, match="exists and is not empty"):
        settle_into_ledger(sample("call"), full)
    assert full.read_bytes() == b"x"
    empty = tmp_path / "empty.db"
    empty.touch()
    settle_into_ledger(sample("call"), empty)
    assert_matches_replay(sample("call"), empty)


def test_cli_writes_the_ledger_and_keeps_the_summary(console, tmp_path):
    code, plain, _ = console("replay", "--json")
    assert code == 0
    code, out, err = console("replay", "--json", "--ledger", str(tmp_path / "l.db"))
    assert code == 0 and out == plain  # stdout unchanged; the ledger line goes to stderr
    assert err.startswith(f"ledger {tmp_path / 'l.db'}: 562 entries") and err.count("\n") == 1
    code, out, err = console("ledger", "verify", str(tmp_path / "l.db"))
    assert code == 0 and out.startswith("ok: 562 entries")


def test_cli_refuses_an_existing_ledger_and_an_uncapped_trader(order_log, console, tmp_path):
    target = tmp_path / "l.db"
    assert console("replay", "--ledger", str(target))[0] == 0
    code, _out, err = console("replay", "--ledger", str(target))
    assert code == 2
    assert err.startswith("wattmesh: error: --ledger: ") and err.count("\n") == 1
    log = tmp_path / "log.jsonl"
    log.write_bytes(
        order_log.to_bytes(
            order_log.order("carol", "ask", 150_000, 100, T0 - 5, T0),
            order_log.order("dave", "bid", 200_000, 100, T0 - 4, T0),
        )
    )
    code, _out, err = console("replay", str(log), "--ledger", str(tmp_path / "n.db"))
    assert code == 2 and "without an account line" in err and err.count("\n") == 1
    assert not (tmp_path / "n.db").exists()


# -- storage fees (--storage-rate) ----------------------------------------------------------


def fee_totals(path: Path) -> tuple[int, int, int]:
    """(fee entries, sum of fees, sum of fee_split shares)."""
    with Ledger.open(path, create=False) as led:
        fees = [e.body["amount"] for e in led.entries(kind="fee")]
        splits = [s["amount"] for e in led.entries(kind="fee_split") for s in e.body["shares"]]
    return len(fees), sum(fees), sum(splits)


def test_storage_rate_charges_before_each_close_and_conserves_the_fees(tmp_path):
    result = sample("call")
    a = settle_into_ledger(result, tmp_path / "a.db", storage_rate=2_000)
    b = settle_into_ledger(sample("call"), tmp_path / "b.db", storage_rate=2_000)
    assert a.head == b.head and a.entries == b.entries  # same log, same rate: same head
    plain = settle_into_ledger(sample("call"), tmp_path / "p.db")
    assert a.head != plain.head and a.trades == plain.trades and a.closes == plain.closes
    n, fees, splits = fee_totals(tmp_path / "a.db")
    assert n == a.fees > 0 and fees == splits > 0
    with Ledger.open(tmp_path / "a.db", create=False) as led:
        assert led.verify().ok
        g = led.genesis()
        assert g == genesis_body(result, 2_000) and g["storage_rate"] == 2_000
        assert {"education", "network"} <= g["funds"].keys()
        entries = list(led.entries())
        storage = {e.body["owner"]: e.body["storage"] for e in entries if e.kind == "member"}
        bmax = {result.owners[h]: v[2] for h, v in result.opening.items()}
        assert storage == {o: b is not None for o, b in bmax.items()}
        kinds_seq = [e.kind for e in entries]
        for i, k in enumerate(kinds_seq):  # each split comes right before a close
            if k == "fee_split":
                assert kinds_seq[i + 1] == "interval_close"
        bal = led.balances()
        assert bal["fund:fees"]["money"] == 0
        assert bal["fund:education"]["money"] == bal["fund:network"]["money"] > 0
        # energy is untouched by fees; money moved only between members and funds
        for h, (energy, _money, _bmax) in result.closing.items():
            assert bal[result.owners[h]]["energy"] == energy
        members_money = sum(bal[result.owners[h]]["money"] for h in result.closing)
        funds_money = bal["fund:education"]["money"] + bal["fund:network"]["money"]
        assert members_money + funds_money == sum(m for _e, m, _b in result.closing.values())


def test_storage_rate_zero_is_todays_ledger(tmp_path):
    a = settle_into_ledger(sample("call"), tmp_path / "a.db")
    b = settle_into_ledger(sample("call"), tmp_path / "b.db", storage_rate=0)
    assert a.head == b.head and b.fees == 0
    assert genesis_body(sample("call"), 0) == genesis_body(sample("call"))
    assert "storage_rate" not in genesis_body(sample("call"))


def test_storage_rate_refusals(order_log, tmp_path):
    with pytest.raises(ReplayLedgerError, match="needs call mode"):
        settle_into_ledger(sample("cda"), tmp_path / "c.db", storage_rate=1)
    no_bmax = order_log.replay(
        order_log.account("alice", 10, 10**12), order_log.account("bob", 1_000, 0), mode="call"
    )
    with pytest.raises(ReplayLedgerError, match="storage provider"):
        settle_into_ledger(no_bmax, tmp_path / "n.db", storage_rate=1)
    with pytest.raises(ReplayLedgerError, match="integer >= 0"):
        settle_into_ledger(sample("call"), tmp_path / "x.db", storage_rate=-1)
    assert not list(tmp_path.iterdir())


def test_cli_storage_rate(console, tmp_path):
    target = tmp_path / "l.db"
    code, _out, err = console("replay", "--ledger", str(target), "--storage-rate", "2000")
    assert code == 0 and "storage fees" in err
    code, out, _err = console("ledger", "verify", str(target))
    assert code == 0 and out.startswith("ok: ")
    code, _out, err = console("replay", "--storage-rate", "5")
    assert code == 2 and "--storage-rate needs --ledger" in err
