#!/usr/bin/env python3
"""How long from an interval's gate to its certified settlement, and what certificates cost.

    python benchmarks/certify.py [--nodes 8 24] [--hours 2] [--seconds-per-interval 2.5 20]

For each N, one ``wattmesh demo`` run (exchange/demo/run.py: N node processes on 127.0.0.1
with simulated meters and threshold bots, an accelerated clock; above 8 nodes each dials 4
others). After the run it reads every node's ``node.log`` and files:

- **gate to settlement**: for every node and interval, the wall time of the node's
  ``settled interval`` log line minus the wall time of the interval's gate (its start on
  the community clock). The grace period is part of it and printed beside it: no node
  may settle before gate + grace. p50 and p99 over all nodes and intervals, the first
  interval left out (it overlaps the nodes' start);
- **vote rounds**: how many intervals needed more than round 0;
- **bytes per interval**: the votes signed (each node's own votes, from
  ``messages.sqlite``), their canonical bytes, and what a node receives of them by gossip
  (each vote once per node, before GossipSub's duplicates and IHAVE/IWANT); and the
  certificate stored beside each close (``ledger.sqlite``, table ``certificates``).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import orjson

from wattmesh.exchange.community_file import load_community
from wattmesh.exchange.demo.run import DemoError, run_demo

MARK = " INFO wattmesh.node: settled interval "


def settle_lags(d: Path, origin_ms: int, start_ms: int, speed: int) -> dict[int, float]:
    """interval -> seconds from its gate (wall) to this node's settlement log line."""
    lags: dict[int, float] = {}
    for line in (d / "node.log").read_text(errors="replace").splitlines():
        if MARK not in line:
            continue
        stamp, rest = line.split(MARK, 1)
        t = int(rest.split()[0])  # "1781935200000 (15:45–16:00): price ..."
        wall = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        gate = (origin_ms + (t - start_ms) / speed) / 1000
        lags[t] = wall - gate
    return lags


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(n: int, hours: int, spi: float) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"wattmesh-certify-{n}-"))
    run = root / "run"
    try:
        result = run_demo(n, hours, seconds_per_interval=spi, directory=run, seed=n)
        status, intervals = ("agreed" if result.ok else "FAILED: " + "; ".join(result.problems),
                             len(result.intervals))  # fmt: skip
    except DemoError as exc:  # what was settled before it stopped is still measured
        status, intervals = f"FAILED: {str(exc).split(';')[0]}", 0
    c = load_community(run / "community.toml")
    assert c.clock_origin_ms is not None
    homes = sorted(d for d in run.iterdir() if (d / "node.log").exists())
    lags: list[float] = []
    first = c.start_ms
    for d in homes:
        for t, lag in settle_lags(d, c.clock_origin_ms, c.start_ms, c.clock_speed).items():
            if t > first:
                lags.append(lag)
    grace_s = c.wall_seconds(c.grace_ms)
    votes, vote_bytes, later_rounds = 0, 0, set()
    for d in homes:
        db = sqlite3.connect(d / "messages.sqlite")
        for t, r, data in db.execute("SELECT interval, round, data FROM own_votes"):
            votes += 1
            vote_bytes += len(data)
            if r > 0:
                later_rounds.add(t)
        db.close()
    cert_bytes: list[int] = []
    led = sqlite3.connect(homes[0] / "ledger.sqlite")
    for (body,) in led.execute("SELECT body FROM certificates"):
        cert_bytes.append(len(body))
        assert len(orjson.loads(body)["votes"]) > n // 2
    led.close()
    intervals = intervals or len(cert_bytes)
    print(f"N={n}: {intervals} intervals, {spi} s each, {status}")
    if not lags:
        print("  nothing settled after the first interval")
        return
    print(f"  gate to certified settlement: p50 {statistics.median(lags):.2f} s, "
          f"p99 {pct(lags, 0.99):.2f} s over {len(lags)} (node, interval) pairs; "
          f"bound: the grace {grace_s:.2f} s is the least possible, one interval "
          f"{spi:.2f} s the most before the next gate")  # fmt: skip
    print(f"  intervals that needed a second vote round: {len(later_rounds)} of {intervals}")
    per = votes / max(1, intervals)
    size = vote_bytes / max(1, votes)
    print(f"  votes: {per:.1f} per interval of {size:.0f} B each = {per * size / 1024:.1f} KiB"
          f" published per interval; each node receives about as much once (no duplicates "
          f"counted)")  # fmt: skip
    print(
        f"  certificate stored per close: {statistics.mean(cert_bytes) / 1024:.1f} KiB "
        f"({len(cert_bytes)} closes)"
    )
    print(f"  data in {run}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[8, 24])
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument("--seconds-per-interval", type=float, nargs="+", default=[2.5, 20.0],
                    help="one per --nodes value (the last repeats)")  # fmt: skip
    args = ap.parse_args(argv)
    for i, n in enumerate(args.nodes):
        spi = args.seconds_per_interval[min(i, len(args.seconds_per_interval) - 1)]
        measure(n, args.hours, spi)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
