"""Crash safety: a writer process killed with SIGKILL at random instants leaves the ledger
before or after each whole batch, and it verifies every time (entries and balance cache)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wattmesh.settlement.ledger import Ledger

SETUP = 7  # genesis, 2 members, 2 deposits, 2 grid imports
BATCH = 40  # entries per batch after the setup
RUNS = 24
PER_FILE = 6  # a fresh ledger every few runs keeps each verify short

WRITER = textwrap.dedent(
    """
    import sys
    from wattmesh.settlement.ledger import Ledger

    path, batch = sys.argv[1], int(sys.argv[2])
    led = Ledger.open(path)
    if led.head()[0] == 0:
        g = {"community": "crash", "interval_ms": 900000, "price_min": 0,
             "price_max": 1000000, "fee_rate_ppm": 0, "retail_price": 300000,
             "feedin_price": 80000, "funds": {"fees": "fund:fees"}}
        led.append_batch([("genesis", g)]
            + [("member", {"owner": o, "bmax": 10**9, "storage": False}) for o in "ab"]
            + [("deposit", {"owner": o, "amount": 10**15}) for o in "ab"]
            + [("grid_import", {"owner": o, "qty": 10**6, "price": 300000}) for o in "ab"],
            ts=1)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    i = 0
    while True:
        items = []
        for j in range(batch):
            buyer, seller = ("a", "b") if (i + j) % 2 else ("b", "a")
            items.append(("trade", {"buyer": buyer, "seller": seller, "qty": 1 + j % 3,
                                    "price": 1000 + j, "bid": "b" * 64, "ask": "a" * 64,
                                    "interval": i}))
        led.append_batch(items, ts=2)
        i += 1
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_instants_never_breaks_the_ledger(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(20240621)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    deadline = time.monotonic() + 60  # hard bound, whatever the machine
    lengths: list[int] = []
    per_file: list[list[int]] = []
    for run in range(RUNS):
        path = tmp_path / f"node{run // PER_FILE}.db"
        if run % PER_FILE == 0:
            per_file.append([])
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(BATCH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            if run % 5 == 0:
                # sometimes kill while starting up (opening, creating, the setup batch)
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
                time.sleep(rng.uniform(0.0, 0.12))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode in (-signal.SIGKILL, 0), proc.returncode
        if not path.exists():
            continue
        with Ledger.open(path) as led:
            res = led.verify()
            assert res.ok, f"run {run}: {res}"
            n = led.head()[0]
            assert n == 0 or (n - SETUP) % BATCH == 0, f"run {run}: half a batch, {n} entries"
            bal = led.balances()
            if n:
                assert sum(b["energy"] for b in bal.values()) == 0
                assert sum(b["money"] for b in bal.values()) == 0
            lengths.append(n)
            per_file[-1].append(n)
        if time.monotonic() > deadline:
            break
    # the kills landed at different points, and the writer made progress across runs
    assert len(set(lengths)) > 5
    for ns in per_file:
        assert ns == sorted(ns)  # a kill never loses a committed batch
    assert max(lengths) > SETUP
