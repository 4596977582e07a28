"""Ledger.atomic(): appends grouped into one all-or-nothing transaction, inner savepoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wattmesh.settlement.ledger import Ledger, LedgerError

T0 = 1_718_928_000_000
IV = 900_000
GENESIS = {
    "community": "elm-street", "interval_ms": IV, "price_min": 0, "price_max": 1_000_000,
    "fee_rate_ppm": 0, "retail_price": 300_000, "feedin_price": 80_000,
    "funds": {"fees": "fund:fees", "education": "fund:edu", "network": "fund:net"},
    "storage_rate": 2_000,
}  # fmt: skip


def community(path: Path) -> Ledger:
    """ann (storage provider) and bob, both with energy and money."""
    led = Ledger.open(path)
    led.append_batch(
        [("genesis", GENESIS),
         ("member", {"owner": "ann", "bmax": 10_000, "storage": True}),
         ("member", {"owner": "bob", "bmax": 10_000, "storage": False}),
         ("opening", {"owner": "ann", "energy": 4_000, "money": 10**12}),
         ("opening", {"owner": "bob", "energy": 1_000, "money": 10**12})],
        ts=T0,
    )  # fmt: skip
    return led


def trade(qty: int, interval: int = T0, buyer: str = "bob", seller: str = "ann") -> tuple:
    body = {"buyer": buyer, "seller": seller, "qty": qty, "price": 200_000,
            "bid": "b" * 64, "ask": "a" * 64, "interval": interval}  # fmt: skip
    return ("trade", body)


def test_the_block_commits_everything_at_its_end_and_only_then(ledger_rows, tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with community(path) as led:
        before = len(ledger_rows(path))
        with led.atomic():
            led.append_batch([trade(100)], ts=T0)
            led.append_batch([trade(50)], ts=T0)
            fees = led.charge_storage(T0, T0)
            close = led.close_interval(T0, T0)
            # The handle sees its own writes; another connection sees nothing yet.
            assert led.balances()["bob"]["energy"] == 1_150
            assert led.head() == (close.seq, close.hash)
            assert len(ledger_rows(path)) == before
        assert [k for _s, _t, k, *_ in ledger_rows(path)[before:]] == (
            ["trade", "trade"] + [e.kind for e in fees] + ["interval_close"]
        )
        assert fees and fees[-1].kind == "fee_split"
        assert close.body["entries"] == before + 2 + len(fees)  # covers the block's entries
        assert led.verify(expect_head=(close.seq, close.hash)).ok
    with Ledger.open(path) as again:  # what the block wrote is what a fresh handle reads
        assert again.head() == (close.seq, close.hash)
        assert again.balances()["bob"]["energy"] == 1_150
        assert again.last_interval() == T0


def test_an_exception_leaving_the_block_writes_nothing_and_restores_the_state(
    ledger_rows, tmp_path
):
    path = tmp_path / "l.db"
    with community(path) as led:
        head, bal, file_rows = led.head(), led.balances(), ledger_rows(path)
        with pytest.raises(RuntimeError, match="boom"):
            with led.atomic():
                led.append_batch([trade(100)], ts=T0)
                led.charge_storage(T0, T0)
                led.close_interval(T0, T0)
                assert led.head() != head
                raise RuntimeError("boom")
        assert led.head() == head
        assert led.balances() == bal
        assert led.last_interval() is None
        assert ledger_rows(path) == file_rows
        assert led.verify(expect_head=head).ok
        # No transaction was left open: the handle appends as usual afterwards.
        (e,) = led.append_batch([trade(7)], ts=T0)
        assert e.seq == head[0] + 1
        assert led.verify().ok


def test_a_refused_inner_append_is_rolled_back_alone(ledger_rows, tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with community(path) as led:
        start = led.head()[0]
        with led.atomic():
            led.append_batch([trade(100)], ts=T0)
            with pytest.raises(LedgerError, match="negative"):
                # the first item would apply; the second sells energy ann does not have
                led.append_batch([trade(1), trade(10**6)], ts=T0)
            with pytest.raises(LedgerError):
                led.append_batch([("deposit", {"owner": "nobody", "amount": 5})], ts=T0)
            assert led.head()[0] == start + 1  # nothing of the refused batches
            led.append_batch([trade(20)], ts=T0)
        kinds = [(s, b) for s, _t, _k, b, *_ in ledger_rows(path)[start:]]
        assert [s for s, _ in kinds] == [start + 1, start + 2]  # no gap where refusals were
        assert ['"qty":100' in b for _, b in kinds] == [True, False]
        assert ['"qty":20' in b for _, b in kinds] == [False, True]
        assert led.balances()["bob"]["energy"] == 1_120
        assert led.verify().ok


def test_a_refused_close_inside_the_block_leaves_the_rest(ledger_rows, tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with community(path) as led:
        start = led.head()[0]
        with led.atomic():
            led.append_batch([trade(100)], ts=T0)
            with pytest.raises(LedgerError, match="storage fees were not charged"):
                led.close_interval(T0, T0)
            led.charge_storage(T0, T0)
            close = led.close_interval(T0, T0)
        assert close.body["entries"] == led.head()[0] - 1
        assert ledger_rows(path)[start][2] == "trade"
        assert led.verify().ok


def test_blocks_do_not_nest(tmp_path: Path) -> None:
    with community(tmp_path / "l.db") as led:
        with led.atomic():
            led.append_batch([trade(1)], ts=T0)
            with pytest.raises(LedgerError, match="do not nest"):
                with led.atomic():
                    pass  # pragma: no cover
            led.append_batch([trade(2)], ts=T0)
        assert led.balances()["bob"]["energy"] == 1_003
        assert led.verify().ok


def test_the_block_reloads_when_another_writer_moved_on(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with community(path) as a, Ledger.open(path) as b:
        b.append_batch([trade(10)], ts=T0)
        with a.atomic():
            (e,) = a.append_batch([trade(5)], ts=T0)
        assert e.seq == b.head()[0] + 1
        assert a.balances()["bob"]["energy"] == 1_015
        assert a.verify().ok


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from wattmesh.settlement.ledger import Ledger

    path, how, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
    led = Ledger.open(path)
    # A tiny page cache makes SQLite spill uncommitted pages into the WAL before the end,
    # so the kill finds uncommitted frames on disk, not just in memory.
    led.conn.execute("PRAGMA cache_size=2")
    with led.atomic():
        for i in range(200):
            led.append_batch([("trade", {"buyer": "bob", "seller": "ann", "qty": 1,
                                         "price": 200000, "bid": "b" * 64, "ask": "a" * 64,
                                         "interval": t0})], ts=t0)
        led.charge_storage(t0, t0)
        led.close_interval(t0, t0)
        sys.stdout.write("inside\\n")
        sys.stdout.flush()
        if how == "exit":
            os._exit(3)
        time.sleep(60)  # SIGKILLed here
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_process_killed_inside_the_block_leaves_the_ledger_as_before(tmp_path, how):
    if how == "sigkill" and not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL")
    path = tmp_path / "l.db"
    with community(path) as led:
        head = led.head()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), how, str(T0)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "inside\n"  # it got to the end of the block's work
        if how == "sigkill":
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (3 if how == "exit" else -signal.SIGKILL)
    wal = Path(str(path) + "-wal")
    assert wal.exists() and wal.stat().st_size > 0  # uncommitted frames reached the disk
    with Ledger.open(path) as led:
        res = led.verify(expect_head=head)
        assert res.ok, str(res)
        assert led.head() == head
        assert led.last_interval() is None
        assert led.balances()["bob"]["energy"] == 1_000
