#!/usr/bin/env python3
"""Gode and Sunder's five markets with ZI-C traders on the CDA engine.

    python benchmarks/gode_sunder.py [--workers N] [--no-skip] [--json]

Runs 5 markets x 6 periods x 2000 shouts x 20 seeds (1.2 million turns at most) and prints
the wall time, the turns actually run, turns per second and each market's mean efficiency.
By default the dead tail of a period (no trade possible any more) is skipped, as the
simulator does; ``--no-skip`` runs every turn, to time the full 1.2 million. With ``--json``
the last line is {"seconds", "turns", "turns_per_s", "workers", "skip_dead",
"efficiency": {market: percent}}. Target: <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from wattmesh.agents.gode_sunder import load_markets, run_session, summarize

PERIODS = 6
SHOUTS = 2000
SEEDS = 20
STRATEGY = "zi-c"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: cores)"
    )
    parser.add_argument("--no-skip", action="store_true", help="run dead period tails too")
    parser.add_argument("--json", action="store_true", help="end with a JSON line")
    args = parser.parse_args()

    markets = load_markets()
    jobs = [(number, seed) for number in sorted(markets) for seed in range(SEEDS)]
    skip_dead = not args.no_skip

    t0 = time.perf_counter()
    if args.workers > 1:
        # One pool for all 100 sessions, so both cores stay busy across markets.
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            results = list(
                pool.map(
                    partial(_session, skip_dead=skip_dead),
                    jobs,
                    chunksize=max(1, len(jobs) // (4 * args.workers)),
                )
            )
    else:
        results = [_session(job, skip_dead=skip_dead) for job in jobs]
    seconds = time.perf_counter() - t0

    turns = sum(p.shouts for r in results for p in r.periods)
    efficiency = {
        number: round(summarize([r for r in results if r.market == number]).efficiency, 2)
        for number in sorted(markets)
    }
    print(
        f"{len(markets)} markets x {PERIODS} periods x {SHOUTS} shouts x {SEEDS} seeds, "
        f"{STRATEGY}, {args.workers} worker(s), dead tails {'skipped' if skip_dead else 'run'}"
    )
    print(f"time        {seconds:.3f} s (target <= 3 s)")
    print(f"turns run   {turns:,} of {len(jobs) * PERIODS * SHOUTS:,}")
    print(f"turns/s     {turns / seconds:,.0f}")
    for number, value in efficiency.items():
        print(f"market {number}    efficiency {value:.2f} %")
    if args.json:
        summary = {
            "seconds": round(seconds, 4),
            "turns": turns,
            "turns_per_s": round(turns / seconds),
            "workers": args.workers,
            "skip_dead": skip_dead,
            "efficiency": efficiency,
        }
        print(json.dumps(summary))


def _session(job: tuple[int, int], *, skip_dead: bool):
    number, seed = job
    market = load_markets()[number]
    return run_session(market, STRATEGY, seed, PERIODS, SHOUTS, skip_dead=skip_dead)


if __name__ == "__main__":
    main()
