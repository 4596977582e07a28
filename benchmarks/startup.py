#!/usr/bin/env python3
"""How long the ``wattmesh`` command takes to start, beside the interpreter's own start.

    python benchmarks/startup.py [--runs 15]

Runs each command ``--runs`` times in a fresh process (``python -m wattmesh.exchange.cli``,
the console script's code) and prints the median wall time of each beside ``python -c
pass`` and ``python -c "import typer"`` measured in the same run, so the machine's drift
cancels. The target (issue 17) is ``wattmesh --help`` within 0.15 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (bound)": [sys.executable, "-c", "pass"],
    "python -c 'import typer' (bound)": [sys.executable, "-c", "import typer"],
    "wattmesh --version": [sys.executable, "-m", "wattmesh.exchange.cli", "--version"],
    "wattmesh --help": [sys.executable, "-m", "wattmesh.exchange.cli", "--help"],
    "wattmesh replay --help": [sys.executable, "-m", "wattmesh.exchange.cli", "replay", "--help"],
}


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    bound = None
    for name, cmd in COMMANDS.items():
        t = median_seconds(cmd, args.runs)
        bound = t if bound is None else bound
        print(f"{name:<36} {t * 1000:7.1f} ms   {t / bound:5.1f}x python -c pass")


if __name__ == "__main__":
    main()
