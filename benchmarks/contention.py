#!/usr/bin/env python3
"""Loaded, stalled nodes must still agree: the demo's community under CPU contention.

    python benchmarks/contention.py [--households 12] [--hours 1] [--runs 10] [--busy 1]
                                    [--every 3] [--pause 1] [--seconds-per-interval 2.5]

Each run is ``wattmesh demo`` (exchange/demo/run.py ``run_demo``: one node process per
household on 127.0.0.1, simulated meters, threshold bots, an accelerated clock) with a
:class:`~wattmesh.exchange.demo.run.Contention`: ``--busy`` processes spin on the CPU, and
every ``--every`` seconds a random node is stopped with SIGSTOP for ``--pause`` seconds.
Per run it prints whether every ledger verified and every interval's digest was the same
at every node, the intervals settled, the pauses made, and the wall time; at the end the
runs that agreed, beside the bound: all of them.
"""

from __future__ import annotations

import argparse
import sys
import time

from wattmesh.exchange.demo.run import Contention, DemoError, run_demo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=12)
    ap.add_argument("--hours", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--busy", type=int, default=1)
    ap.add_argument("--every", type=float, default=3.0)
    ap.add_argument("--pause", type=float, default=1.0)
    ap.add_argument("--seconds-per-interval", type=float, default=2.5)
    args = ap.parse_args(argv)
    agreed = 0
    for run in range(args.runs):
        contention = Contention(args.busy, args.every, args.pause, seed=run)
        began = time.monotonic()
        try:
            result = run_demo(args.households, args.hours, seed=run, contention=contention,
                              seconds_per_interval=args.seconds_per_interval)  # fmt: skip
        except DemoError as exc:
            print(f"run {run + 1}: FAILED: {exc} (data in {getattr(exc, 'root', '?')})")
            continue
        ok = result.ok
        agreed += ok
        same = sum(iv.agree for iv in result.intervals)
        print(
            f"run {run + 1}: {'ok' if ok else 'FAILED'}: {len(result.intervals)} intervals, "
            f"{same} identical at all {args.households} nodes, ledgers verified "
            f"{sum(n.verified for n in result.nodes)}/{len(result.nodes)}, "
            f"{contention.pauses} pauses, {time.monotonic() - began:.0f} s"
            + ("" if ok else f"; {'; '.join(result.problems)} (data in {result.root})")
        )
        sys.stdout.flush()
    print(f"agreeing runs: {agreed} of {args.runs} (bound: {args.runs} of {args.runs})")
    return 0 if agreed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
