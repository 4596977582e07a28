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
append >= 0.8x its bound, verify >= 0.7x its bound. Beside the append bound, for
information, the same executemany with prev and hash bound as bytearray, as the ledger
binds them (CPython's sqlite3 adapts every bytes parameter first, bytearray not; see
docs/ledger.md, "Speed"). Each ratio is given in wall-clock time and, in brackets, in
the process's CPU time, which other programs on a shared machine disturb less. With
--json the last line is one JSON object.
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


def now() -> tuple[float, float]:
    """(wall-clock, process CPU) seconds."""
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = now()
    return t1[0] - t0[0], t1[1] - t0[1]


def insert_bound(rows: list[tuple], path: Path) -> tuple[float, float]:
    """Seconds (wall, CPU) to insert ``rows`` with plain executemany into a fresh WAL file, one
    transaction (the rows as given: ``bytearray_rows`` for the informational bound)."""
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
        t0 = now()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
        return since(t0)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def bytearray_rows(rows: list[tuple]) -> list[tuple]:
    """``rows`` with their blobs (prev, hash) as bytearray: the same BLOBs in the file."""
    return [(s, t, k, b, bytearray(p), bytearray(h)) for s, t, k, b, p, h in rows]


def select_bound(path: Path) -> tuple[float, float]:
    """Seconds (wall, CPU) to SELECT every entry and chain sha256 over them as the ledger
    hashes them (docs/ledger.md): the least a verification must do."""
    import hashlib
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        t0 = now()
        sha = hashlib.sha256
        prev = bytes(32)
        for seq, ts, kind, body, _prev, _hash in conn.execute(
            "SELECT seq, ts, kind, body, prev, hash FROM entries ORDER BY seq"
        ):
            line = b'%s[%d,%d,"%s",%s]' % (prev, seq, ts, kind.encode(), body.encode())
            prev = sha(line).digest()
        return since(t0)
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
        t0 = now()
        for items in work:
            led.append_batch(items, ts=2)
        append_s, append_cpu = since(t0)
        del work
        led.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        t0 = now()
        res = led.verify()
        verify_s, verify_cpu = since(t0)
        rows = led.conn.execute("SELECT seq, ts, kind, body, prev, hash FROM entries").fetchall()
        led.close()
        insert_s, insert_cpu = insert_bound(rows, Path(f"{path}.bound"))
        rows = bytearray_rows(rows)
        insert_ba_s, insert_ba_cpu = insert_bound(rows, Path(f"{path}.bound"))
        del rows
        select_s, select_cpu = select_bound(path)
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
        "append_bound_bytearray_per_s": round(args.entries / insert_ba_s),
        "verify_bound_per_s": round(res.entries / select_s),
        "batch": args.batch,
        "append_s": round(append_s, 3),
        "append_per_s": round(args.entries / append_s),
        "verify_s": round(verify_s, 3),
        "verify_per_s": round(res.entries / verify_s),
        "verified_entries": res.entries,
        "append_ratio": round(insert_s / append_s, 3),
        "append_cpu_ratio": round(insert_cpu / append_cpu, 3),
        "append_bytearray_ratio": round(insert_ba_s / append_s, 3),
        "append_bytearray_cpu_ratio": round(insert_ba_cpu / append_cpu, 3),
        "verify_ratio": round(select_s / verify_s, 3),
        "verify_cpu_ratio": round(select_cpu / verify_cpu, 3),
        "file_bytes": size,
    }
    print(f"append: {args.entries} entries in {append_s:.2f} s = "
          f"{report['append_per_s']:,} entries/s; bound (executemany) "
          f"{report['append_bound_per_s']:,}/s; {report['append_ratio']:.2f}x the bound "
          f"(CPU {report['append_cpu_ratio']:.2f}x) (target >= 0.8)")  # fmt: skip
    print("        for information: executemany with blobs as bytearray "
          f"{report['append_bound_bytearray_per_s']:,}/s; "
          f"{report['append_bytearray_ratio']:.2f}x "
          f"(CPU {report['append_bytearray_cpu_ratio']:.2f}x)")  # fmt: skip
    print(f"verify: {res.entries} entries in {verify_s:.2f} s = "
          f"{report['verify_per_s']:,} entries/s; bound (SELECT + sha256 chain) "
          f"{report['verify_bound_per_s']:,}/s; {report['verify_ratio']:.2f}x the bound "
          f"(CPU {report['verify_cpu_ratio']:.2f}x) (target >= 0.7)")  # fmt: skip
    print(f"file: {size / 2**20:.1f} MiB")
    if args.json:
        print(orjson.dumps(report).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
