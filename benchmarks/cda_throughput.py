#!/usr/bin/env python3
"""Continuous double auction throughput on the shared order stream.

    python PATH/cda_stream.py --events 1000000 --seed 20240601 --out stream.bin
    python benchmarks/cda_throughput.py --stream stream.bin --shared PATH/cda_stream.py \
        [--repeat 3] [--json]

``cda_stream.py`` is the order stream's common generator, shared by every engine
benchmark of the project's family and not part of wattmesh; ``--shared`` defaults to where
CI puts it, beside the checkout.

Times, in one run and on the same events: the engine's batch API (`Book.run`), its
per-call API (`Book.submit` / `Book.cancel` from a Python loop) and the plain reference
engine shipped with the stream (`RefBook`, sortedcontainers). Checks that all three give
the same fills (maker, taker, price, qty, in order), then prints events/s and ratios.
With --json the last line is
{"batch_events_per_s", "per_call_events_per_s", "reference_events_per_s", "fills"}.

Input conversion (the 20-byte records into columns or tuples) is not timed: it is the
same for every engine and is not matching work. Each engine runs --repeat times and its
best time counts (as timeit does): on a shared or virtual machine the slower runs
measure the neighbours, not the engine.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from array import array
from pathlib import Path

import orjson

from wattmesh.matching import BID, Book

SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench" / "cda_stream.py"


def load_shared(path: Path):
    """Import the shared stream module (its RefBook, load_stream, REC)."""
    if not path.is_file():
        sys.exit(f"error: shared stream script not found at {path} (use --shared)")
    spec = importlib.util.spec_from_file_location("cda_stream", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def columns(events: list[tuple]) -> tuple[array, ...]:
    kinds = array("B", (e[0] for e in events))
    sides = array("B", (e[1] for e in events))
    qtys = array("q", (e[2] for e in events))
    prices = array("q", (e[3] for e in events))
    oids = array("Q", (e[4] for e in events))
    return kinds, sides, prices, qtys, oids


def maker_taker(bid: array, ask: array, aggressor: array) -> tuple[array, array]:
    """The stream's fill convention: (maker, taker) instead of (bid, ask, aggressor)."""
    maker = array("Q", (a if g == BID else b for b, a, g in zip(bid, ask, aggressor, strict=True)))
    taker = array("Q", (b if g == BID else a for b, a, g in zip(bid, ask, aggressor, strict=True)))
    return maker, taker


def first_difference(got: tuple[array, ...], want: tuple[array, ...]) -> str:
    """Where two fill lists part, for the error message."""
    for i, (row_got, row_want) in enumerate(zip(zip(*got), zip(*want))):  # noqa: B905
        if row_got != row_want:
            return f"fill {i}: got {row_got}, reference {row_want}"
    return f"{len(got[0])} fills against the reference's {len(want[0])}"


def time_batch(events: list[tuple]) -> tuple[float, tuple[array, ...]]:
    kinds, sides, prices, qtys, oids = columns(events)
    book = Book()
    t0 = time.perf_counter()
    result = book.run(kinds, sides, prices, qtys, oids)
    dt = time.perf_counter() - t0
    if any(result.status):
        sys.exit("error: the batch API refused events of a valid stream")
    maker, taker = maker_taker(result.bid, result.ask, result.aggressor)
    return dt, (maker, taker, result.price, result.qty)


def time_per_call(events: list[tuple]) -> tuple[float, tuple[array, ...]]:
    book = Book()
    submit, cancel = book.submit, book.cancel
    t0 = time.perf_counter()
    for kind, side, qty, price, oid in events:
        if kind == 0:
            submit(oid, side, price, qty)
        else:
            cancel(oid)
    _event, bid, ask, price, qty, _b, _s, aggressor = book.take_fill_arrays()
    dt = time.perf_counter() - t0
    maker, taker = maker_taker(bid, ask, aggressor)
    return dt, (maker, taker, price, qty)


def reference_fills(shared, events: list[tuple]) -> tuple[array, ...]:
    """The reference engine's fills, collected in an untimed pass."""
    book = shared.RefBook()
    maker, taker, price, qty = array("Q"), array("Q"), array("q"), array("q")
    for kind, side, q, p, oid in events:
        if kind == 0:
            for m, t, fp, fq in book.add_limit(oid, side, p, q):
                maker.append(m)
                taker.append(t)
                price.append(fp)
                qty.append(fq)
        else:
            book.cancel(oid)
    return maker, taker, price, qty


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", required=True, type=Path, help="stream file from cda_stream.py")
    ap.add_argument("--shared", type=Path, default=SHARED_BENCH, help="path of cda_stream.py")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine; the best counts")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = ap.parse_args()
    if not args.stream.is_file():
        sys.exit(
            f"error: stream file {args.stream} not found; make it with\n"
            f"  python {args.shared} --events 1000000 --seed 20240601 --out {args.stream}"
        )
    shared = load_shared(args.shared)
    events = shared.load_stream(str(args.stream))
    n = len(events)
    print(f"stream: {n:,} events from {args.stream}; best of {args.repeat} runs per engine")

    if args.repeat < 1:
        sys.exit("error: --repeat must be at least 1")
    batch_s = per_call_s = ref_s = float("inf")
    for _ in range(args.repeat):
        seconds, batch = time_batch(events)
        batch_s = min(batch_s, seconds)
        seconds, per_call = time_per_call(events)
        per_call_s = min(per_call_s, seconds)
        seconds, ref_n, ref_volume, _resting = shared.time_reference(events)
        ref_s = min(ref_s, seconds)
    ref = reference_fills(shared, events)

    for name, fills in (("batch", batch), ("per-call", per_call)):
        if fills != ref:
            where = first_difference(fills, ref)
            sys.exit(f"error: {name} fills differ from the reference ({where})")
    if len(ref[0]) != ref_n or sum(ref[3]) != ref_volume:
        sys.exit("error: the reference disagrees with itself")
    fills = len(batch[0])

    batch_eps, per_call_eps, ref_eps = n / batch_s, n / per_call_s, n / ref_s
    print(f"fills: {fills:,} (volume {sum(batch[3]):,}), identical in all three engines")
    print(f"batch API     {batch_eps:>14,.0f} events/s  ({batch_eps / ref_eps:5.1f}x reference)")
    per_call_ratio = per_call_eps / ref_eps
    print(f"per-call API  {per_call_eps:>14,.0f} events/s  ({per_call_ratio:5.1f}x reference)")
    print(f"reference     {ref_eps:>14,.0f} events/s")
    if args.json:
        print(
            orjson.dumps(
                {
                    "batch_events_per_s": round(batch_eps),
                    "per_call_events_per_s": round(per_call_eps),
                    "reference_events_per_s": round(ref_eps),
                    "fills": fills,
                }
            ).decode()
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
