#!/usr/bin/env python3
"""Call auction throughput: one interval of N orders cleared at one price.

    python benchmarks/call_auction.py [--orders 1000000] [--seed 1] [--caps] [--json]

Orders: half bids, half asks, prices uniform around a mid (so about half cross),
quantities 1..1000 Wh, 500 households, random ts and distinct ids. With --caps every
household has an account (energy, money, Bmax), so executable quantities are computed.
Timed: `CallAuction.clear_arrays` (index the orders, sort both sides, commit per
household, walk, settle). Generating the columns is not timed. The figure is orders
cleared per second. With --json the last line is
{"orders", "orders_per_s", "fills", "volume", "price"}.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from array import array

import orjson

from wattmesh.matching import Accounts, CallAuction


def make_orders(n: int, seed: int) -> tuple[array, ...]:
    rng = random.Random(seed)
    mid = 250_000
    sides = array("B", (rng.getrandbits(1) for _ in range(n)))
    prices = array("q", (mid + rng.randint(-50_000, 50_000) for _ in range(n)))
    qtys = array("q", (rng.randint(1, 1000) for _ in range(n)))
    oids = array("Q", rng.sample(range(1, 1 << 62), n))
    owners = array("I", (rng.randrange(500) for _ in range(n)))
    ts = array("q", (1_700_000_000_000 + rng.randrange(900_000) for _ in range(n)))
    return sides, prices, qtys, oids, owners, ts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--caps", action="store_true", help="give every household an account")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.orders <= 0:
        sys.exit("error: --orders must be positive")
    cols = make_orders(args.orders, args.seed)
    accounts = None
    if args.caps:
        accounts = Accounts()
        rng = random.Random(args.seed + 1)
        for owner in range(500):
            bmax = rng.randint(5_000, 50_000)
            accounts.set(owner, rng.randint(0, bmax), rng.randint(0, 10**13), bmax)
    auction = CallAuction(accounts)
    t0 = time.perf_counter()
    result = auction.clear_arrays(*cols)
    dt = time.perf_counter() - t0
    ops = args.orders / dt
    print(f"orders: {args.orders:,}  caps: {'on' if args.caps else 'off'}")
    print(
        f"cleared at {result.price} with {len(result.qty):,} fills, volume {result.volume:,} Wh,"
        f" {result.executable_orders:,} executable orders"
    )
    print(f"clear: {dt * 1000:,.1f} ms = {ops:,.0f} orders/s")
    if args.json:
        print(
            orjson.dumps(
                {
                    "orders": args.orders,
                    "orders_per_s": round(ops),
                    "fills": len(result.qty),
                    "volume": result.volume,
                    "price": result.price,
                }
            ).decode()
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
