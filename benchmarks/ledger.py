#!/usr/bin/env python3
"""Ledger throughput: append N entries in interval-sized batches, then verify them.

    python benchmarks/ledger.py [--entries 1000000] [--batch 2000] [--members 100]
                                [--path FILE] [--json]

A fresh ledger (genesis, members, deposits, grid imports) gets N entries in batches of
`--batch` (one batch = one interval's trades and fees = one SQLite transaction): each batch
is 95% trades between random members and 5% fees. Then `Ledger.verify()` walks every entry
(seq, link, hash, canonical body, rules, balance fold, cache). Figures: wall seconds and
entries per second for each phase, and the file size. Targets (issue): append >= 200k/s,
verify >= 1M/s. With --json the last line is one JSON object.
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
        led.close()
        if not res.ok:
            print(f"verify failed: {res}", file=sys.stderr)
            return 1
        size = os.path.getsize(path)
    finally:
        if tmp is not None:
            tmp.cleanup()
    report = {
        "entries": args.entries,
        "batch": args.batch,
        "append_s": round(append_s, 3),
        "append_per_s": round(args.entries / append_s),
        "verify_s": round(verify_s, 3),
        "verify_per_s": round(res.entries / verify_s),
        "verified_entries": res.entries,
        "file_bytes": size,
    }
    print(f"append: {args.entries} entries in {append_s:.2f} s = "
          f"{report['append_per_s']:,} entries/s (target 200,000)")  # fmt: skip
    print(f"verify: {res.entries} entries in {verify_s:.2f} s = "
          f"{report['verify_per_s']:,} entries/s (target 1,000,000)")  # fmt: skip
    print(f"file: {size / 2**20:.1f} MiB")
    if args.json:
        print(orjson.dumps(report).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
