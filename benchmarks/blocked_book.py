#!/usr/bin/env python3
"""The cost of an incoming order in a book full of blocked orders, and fills per event.

    python benchmarks/blocked_book.py [--asks 20000] [--households 10] [--repeat 3]

1. Blocked book. Energo's overlapped book holds many crossing bids whose owners cannot
   buy (households at Bmax). Here `--households` such households rest N bids above the
   market, an executable buyer rests bids behind them, and `--asks` incoming asks each
   trade 1 Wh with one of those bids (through `Book.run`). The cost per incoming ask is
   printed for N = 0, 1k, 10k and 100k blocked bids, each beside the bound of issue 11
   (at most 3x the cost with no blocked bids), measured in the same run. The first ask
   is timed apart: it finds the blocked prefix (a scan of the N bids), which the book
   then remembers; a scan like it happens again only when one of those households
   can execute again (docs/matching.md, "Performance under caps").
2. Fills per event. Random logs under binding caps (low energy, Bmax and money,
   self-crossing households, stp none, two markets on one Accounts): the worst number
   of fills one event caused, and the total. Before the self-match rule, a 3,000-event
   log gave 368,747 fills, 366,901 of them 1-Wh self-trades.

Each timing is the best of --repeat runs (the slower runs measure the neighbours).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from array import array

from wattmesh.matching import ASK, BID, GTC, IOC, LIMIT, Accounts, Book, Markets

RICH = 10**15


def blocked_run(n_blocked: int, n_asks: int, households: int) -> tuple[float, float]:
    """Seconds for the first incoming ask and for the n_asks after it, each filling 1 Wh
    behind n_blocked blocked bids."""
    acc = Accounts()
    for h in range(households):
        acc.set(h, 100, RICH, 100)  # at Bmax: every bid of theirs is blocked
    buyer, seller = households, households + 1
    acc.set(buyer, 0, RICH, None)
    acc.set(seller, 10**12, 0, None)
    book = Book(acc)
    oid = 1
    for i in range(n_blocked):
        book.submit(oid, BID, 200 + i % 100, 5, i % households)
        oid += 1
    for _ in range(n_asks + 1):
        book.submit(oid, BID, 150, 1, buyer)
        oid += 1
    t0 = time.perf_counter()
    book.submit(oid, ASK, 100, 1, seller)
    first = time.perf_counter() - t0
    oid += 1
    n = n_asks
    kinds = array("B", [LIMIT] * n)
    sides = array("B", [ASK] * n)
    prices = array("q", [100] * n)
    qtys = array("q", [1] * n)
    oids = array("Q", range(oid, oid + n))
    owners = array("I", [seller] * n)
    tifs = array("B", [GTC] * n)
    t0 = time.perf_counter()
    res = book.run(kinds, sides, prices, qtys, oids, owners, tifs)
    dt = time.perf_counter() - t0
    if len(res.qty) != n or any(res.status) or book.pending_fills != 1:
        sys.exit(f"error: expected {n} fills of 1 Wh, got {len(res.qty)}")
    return first, dt


def random_log_fills(seed: int, events: int) -> tuple[int, int, int]:
    """(worst fills of one event, total fills, self-matches) over one random log with
    binding caps."""
    rng = random.Random(seed)
    acc = Accounts()
    owners = 6
    for o in range(owners):
        bmax = rng.randint(1, 50)
        acc.set(o, rng.randint(0, bmax), rng.choice([rng.randint(0, 20_000), RICH]), bmax)
    markets = Markets(acc, stp="none")
    books = [markets.add("m1"), markets.add("m2")]
    live: list[tuple[Book, int]] = []
    worst = total = 0
    for oid in range(1, events + 1):
        if live and rng.random() < 0.2:
            book, key = live.pop(rng.randrange(len(live)))
            book.cancel(key)
            n = 0
        else:
            book = rng.choice(books)
            side = rng.choice([BID, ASK])
            tif = rng.choice([GTC, GTC, IOC])
            n = book.submit(oid, side, rng.randint(95, 105), rng.randint(1, 2_000),
                            rng.randrange(owners), tif)  # fmt: skip
            live.append((book, oid))
        worst = max(worst, n)
        total += n
    self_matches = sum(1 for _market, f in markets.take_fills() if f.buyer == f.seller)
    return worst, total, self_matches


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asks", type=int, default=20_000, help="incoming asks per run")
    ap.add_argument("--households", type=int, default=10, help="blocked households")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best counts")
    ap.add_argument("--logs", type=int, default=20, help="random logs for fills per event")
    ap.add_argument("--events", type=int, default=3_000, help="events per random log")
    args = ap.parse_args()
    if min(args.asks, args.households, args.repeat, args.logs, args.events) < 1:
        sys.exit("error: every count must be at least 1")

    print(f"1. blocked book: {args.asks:,} incoming asks, {args.households} households at Bmax")
    base = None
    for n_blocked in (0, 1_000, 10_000, 100_000):
        runs = [blocked_run(n_blocked, args.asks, args.households) for _ in range(args.repeat)]
        first = min(r[0] for r in runs) * 1e6
        us = min(r[1] for r in runs) / args.asks * 1e6
        scan = f"first ask {first:9.1f} us"
        if base is None:
            base = us
            print(f"   {n_blocked:>7,} blocked bids: {us:7.3f} us per incoming ask (baseline);"
                  f" {scan}")  # fmt: skip
            continue
        bound = 3 * base
        verdict = "within" if us <= bound else "ABOVE"
        print(f"   {n_blocked:>7,} blocked bids: {us:7.3f} us per incoming ask;"
              f" bound 3 x baseline = {bound:.3f} us: {verdict}; {scan}")  # fmt: skip

    print(f"2. fills per event: {args.logs} random logs of {args.events:,} events, caps binding")
    worst_all = total_all = self_all = 0
    for seed in range(args.logs):
        worst, total, self_matches = random_log_fills(seed, args.events)
        worst_all = max(worst_all, worst)
        total_all += total
        self_all += self_matches
    events = args.logs * args.events
    print(f"   worst fills caused by one event: {worst_all:,};"
          f" {total_all:,} fills in {events:,} events ({total_all / events:.2f} per event),"
          f" {self_all:,} of them self-matches")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
