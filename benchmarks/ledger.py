#!/usr/bin/env python3
"""Ledger throughput: append N entries in interval-sized batches, then verify them.

    python benchmarks/ledger.py [--entries 1000000] [--batch 2000] [--members 100]
                                [--path FILE] [--json]

A fresh ledger (genesis, members, deposits, grid imports) gets N entries in batches of
`--batch` (one batch = one interval's trades and fees = one SQLite transaction): each batch
is 95% trades between random members and 5% fees. Then `Ledger.verify()` walks every entry
(seq, link, hash, canonical body, rules, balance fold, cache). Figures: wall seconds and
entries per second for each phase, and the file size, each beside a bound measured in
the same run on the same rows: for append, plain `sqlite3` `executemany` of the finished
rows into a fresh file in one WAL transaction; for verify, a `SELECT` of every row and
the sha256 chain over them (the least any verification must do). Targets (issue 17):
append >= 0.8x its bound, verify >= 0.7x its bound. With --json the last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

from wattmesh.settlement.ledger import Ledger

RETAIL = 300_000


def setup(led: Ledger, members: int) -> list[str]:
    names = [f"m{i:04d}" for i in range(members)]
    genesis = {
        "community": "bench", "interval_ms": 900_000, "price_min": 0, "price_max": 1_000_000,
        "fee_rate_ppm": 2_000, "retail_price": RETAIL, "feedin_price": 80_000,
        "funds": {"fees": "fund:fees"},
    }  # fmt: skip
    items = [("genesis", genesis)]
    items += [("member", {"owner": n, "bmax": 10**12, "storage": False}) for n in names]
    items += [("deposit", {"owner": n, "amount": 10**15}) for n in names]
    items += [("grid_import", {"owner": n, "qty": 10**8, "price": RETAIL}) for n in names]
    led.append_batch(items, ts=1)
    return names


def batches(names: list[str], total: int, size: int, seed: int = 1):
    rng = random.Random(seed)
    made = 0
    interval = 0
    while made < total:
        n = min(size, total - made)
        items = []
        for j in range(n):
            a, b = rng.sample(names, 2)
            if j % 20 == 19:
                items.append(("fee", {"owner": a, "amount": 100, "trade": made + j}))
            else:
                items.append(("trade", {
                    "buyer": a, "seller": b, "qty": rng.randint(1, 50),
                    "price": rng.randint(50_000, 400_000), "bid": f"{made + j:064x}",
                    "ask": f"{made + j + 1:064x}", "interval": interval,
                }))  # fmt: skip
        yield items
        made += n
        interval += 900_000


def insert_bound(rows: list[tuple], path: Path) -> float:
    """Seconds to insert ``rows`` with plain executemany into a fresh WAL file, one
    transaction."""
    import sqlite3

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
                     "kind TEXT NOT NULL, body TEXT NOT NULL, prev BLOB NOT NULL, "
                     "hash BLOB NOT NULL)")  # fmt: skip
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def select_bound(path: Path) -> float:
    """Seconds to SELECT every entry and chain sha256 over them as the ledger hashes them
    (docs/ledger.md): the least a verification must do."""
    import hashlib
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        t0 = time.perf_counter()
        sha = hashlib.sha256
        prev = bytes(32)
        for seq, ts, kind, body, _prev, _hash in conn.execute(
            "SELECT seq, ts, kind, body, prev, hash FROM entries ORDER BY seq"
        ):
            line = b'%s[%d,%d,"%s",%s]' % (prev, seq, ts, kind.encode(), body.encode())
            prev = sha(line).digest()
        return time.perf_counter() - t0
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--path", help="ledger file (default: a temp file, removed after)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    tmp = None
    if args.path:
        path = Path(args.path)
    else:
        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    try:
        led = Ledger.open(path)
        names = setup(led, args.members)
        work = list(batches(names, args.entries, args.batch))  # generated before timing
        gc.collect()
        gc.freeze()  # the pre-generated input is not the ledger's garbage to scan
        t0 = time.perf_counter()
        for items in work:
            led.append_batch(items, ts=2)
        append_s = time.perf_counter() - t0
        del work
        led.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        t0 = time.perf_counter()
        res = led.verify()
        verify_s = time.perf_counter() - t0
        rows = led.conn.execute("SELECT seq, ts, kind, body, prev, hash FROM entries").fetchall()
        led.close()
        insert_s = insert_bound(rows, Path(f"{path}.bound"))
        del rows
        select_s = select_bound(path)
        if not res.ok:
            print(f"verify failed: {res}", file=sys.stderr)
            return 1
        size = os.path.getsize(path)
    finally:
        if tmp is not None:
            tmp.cleanup()
    report = {
        "entries": args.entries,
        "append_bound_per_s": round(args.entries / insert_s),
        "verify_bound_per_s": round(res.entries / select_s),
        "batch": args.batch,
        "append_s": round(append_s, 3),
        "append_per_s": round(args.entries / append_s),
        "verify_s": round(verify_s, 3),
        "verify_per_s": round(res.entries / verify_s),
        "verified_entries": res.entries,
        "file_bytes": size,
    }
    print(f"append: {args.entries} entries in {append_s:.2f} s = "
          f"{report['append_per_s']:,} entries/s; bound (executemany) "
          f"{report['append_bound_per_s']:,}/s; {insert_s / append_s:.2f}x the bound "
          "(target >= 0.8)")  # fmt: skip
    print(f"verify: {res.entries} entries in {verify_s:.2f} s = "
          f"{report['verify_per_s']:,} entries/s; bound (SELECT + sha256 chain) "
          f"{report['verify_bound_per_s']:,}/s; {select_s / verify_s:.2f}x the bound "
          "(target >= 0.7)")  # fmt: skip
    print(f"file: {size / 2**20:.1f} MiB")
    if args.json:
        print(orjson.dumps(report).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
