#!/usr/bin/env python3
"""A 200-point Gode–Sunder sweep on local worker processes and on a local Ray instance.

    python benchmarks/sweep.py [--shouts 2000] [--seeds 20] [--workers N] [--json]

The grid: markets 1 to 5 x ZI-U and ZI-C x seeds 0 to 19 (200 points), each one session
of 6 periods of ``--shouts`` shouts (2000, the command's default period; 200 makes points
of a few milliseconds, where the runners' own cost per point shows), run by ``run_sweep``
exactly as ``wattmesh sweep`` runs it (each point stored, then the table written).
Prints points per second for:

- one process, the points one after another (``--workers 1``): the bound both runners
  are measured against (the points' own cost, with no parallelism and no overhead; N
  workers would reach at most N times it);
- local worker processes (``--workers N``, default one per core);
- Ray tasks on a Ray instance started here with as many CPUs (its start-up is timed
  apart and not counted: a cluster is started once and used for many sweeps);

then the ratio Ray / local processes, and checks that the three tables are the same bytes.
With ``--json`` the last line is {"points", "serial_pps", "local_pps", "ray_pps",
"ray_over_local", "ray_start_s", "workers", "same_table"}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from wattmesh.exchange.sweep.spec import parse_spec
from wattmesh.exchange.sweep.sweep import run_sweep

SPEC = """
target = "simulate gode-sunder"

[fixed]
shouts = {shouts}

[grid]
market = [1, 2, 3, 4, 5]
strategy = ["zi-u", "zi-c"]
seed = {seeds}
"""


def timed(spec, out: Path, **how) -> float:
    t0 = time.perf_counter()
    outcome = run_sweep(spec, out, **how)
    seconds = time.perf_counter() - t0
    assert outcome.ran == outcome.total and not outcome.failed, outcome
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shouts", type=int, default=2000, help="shouts per period")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per market and strategy")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="local processes, and Ray's CPUs (default: cores)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="end with a JSON line")
    args = parser.parse_args()

    spec = parse_spec(SPEC.format(shouts=args.shouts, seeds=list(range(args.seeds))))
    n = len(spec.points)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serial = timed(spec, root / "serial", workers=1)
        local = timed(spec, root / "local", workers=args.workers)
        import ray

        t0 = time.perf_counter()
        ray.init(
            address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False
        )
        started = time.perf_counter() - t0
        try:
            on_ray = timed(spec, root / "ray", ray_address="auto")
        finally:
            ray.shutdown()
        tables = {(root / d / "sweep.parquet").read_bytes() for d in ("serial", "local", "ray")}

    result = {
        "points": n,
        "serial_pps": round(n / serial, 1),
        "local_pps": round(n / local, 1),
        "ray_pps": round(n / on_ray, 1),
        "ray_over_local": round(local / on_ray, 2),
        "ray_start_s": round(started, 2),
        "workers": args.workers,
        "same_table": len(tables) == 1,
    }
    print(f"{n} points of simulate gode-sunder, {args.shouts} shouts x 6 periods each")
    print(f"one process, in turn   {serial:6.2f} s  {n / serial:7.1f} points/s  (the bound)")
    print(f"{args.workers} local processes    {local:6.2f} s  {n / local:7.1f} points/s  "
          f"({serial / local:.2f}x the bound, at most {args.workers}x)")  # fmt: skip
    print(f"Ray, {args.workers} CPUs            {on_ray:6.2f} s  {n / on_ray:7.1f} points/s  "
          f"({serial / on_ray:.2f}x the bound; start {started:.1f} s not counted)")  # fmt: skip
    print(f"Ray / local processes  {local / on_ray:.2f}x")
    print(f"same table on all three: {result['same_table']}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
