#!/usr/bin/env python3
"""How long the ``wattmesh`` command takes to start, beside the interpreter's own start.

    python benchmarks/startup.py [--runs 15]

Runs each command ``--runs`` times in a fresh process (``python -m wattmesh.exchange.cli``,
the console script's code) and prints the median wall time of each beside ``python -c
pass`` and ``python -c "import typer"`` measured in the same run, so the machine's drift
cancels. The target (issue 17) is ``wattmesh --help`` within 0.15 s.

Two more lines show what a replay pays before its first line: ``wattmesh replay`` of a
one-line log against the orjson loop over it (replay's bound, benchmarks/replay.py).
Bytecode is cached first, as a second run on any machine has it (even one that sets
PYTHONDONTWRITEBYTECODE, as this one does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "python -c pass (bound)": [sys.executable, "-c", "pass"],
    "python -c 'import typer' (bound)": [sys.executable, "-c", "import typer"],
    "wattmesh --version": [sys.executable, "-m", "wattmesh.exchange.cli", "--version"],
    "wattmesh --help": [sys.executable, "-m", "wattmesh.exchange.cli", "--help"],
    "wattmesh replay --help": [sys.executable, "-m", "wattmesh.exchange.cli", "replay", "--help"],
}
ONE_LINE = b'{"type":"account","owner":"a","energy":0,"money":0,"bmax":100}\n'
LOOP = "import orjson, sys\nfor line in open(sys.argv[1], 'rb'):\n    orjson.loads(line)\n"


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
    with tempfile.TemporaryDirectory(prefix="wattmesh-startup-") as tmp:
        log = Path(tmp) / "one.jsonl"
        log.write_bytes(ONE_LINE)
        replay = [sys.executable, "-m", "wattmesh.exchange.cli", "replay", str(log), "--json"]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(replay, env=env, stdout=subprocess.DEVNULL, check=True)  # cache bytecode
        bound = None
        for name, cmd in COMMANDS.items():
            t = median_seconds(cmd, args.runs)
            bound = t if bound is None else bound
            print(f"{name:<36} {t * 1000:7.1f} ms   {t / bound:5.1f}x python -c pass")
        loop = median_seconds([sys.executable, "-c", LOOP, str(log)], args.runs)
        t = median_seconds(replay, args.runs)
        print(f"{'orjson loop, 1-line log (bound)':<36} {loop * 1000:7.1f} ms")
        print(f"{'wattmesh replay, 1-line log':<36} {t * 1000:7.1f} ms   "
              f"{(t - loop) * 1000:5.1f} ms more than the loop")  # fmt: skip


if __name__ == "__main__":
    main()
