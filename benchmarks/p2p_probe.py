#!/usr/bin/env python3
"""Gossip throughput and latency between node processes on this machine.

    python benchmarks/p2p_probe.py [--nodes 4] [--rate 5] [--batch 50] [--seconds 10]
                                   [--links 4] [--json]

Starts ``--nodes`` processes, each one node of wattmesh.exchange.node.p2p on 127.0.0.1, links
them in a random mesh (each dials ``--links`` others, so every node has at least that
many), then every node publishes ``--rate`` messages a second for ``--seconds``, each
message a batch of ``--batch`` 100-byte dummy orders. Figures: deliveries/s and orders/s
across all nodes (first publish to last delivery), latency p50/p99 (publish to delivery,
wall clock, which all processes share), messages lost (never delivered, after waiting out
any backlog), and RSS and CPU seconds per process. Past about 110 deliveries/s per core
latency grows without bound: the figures then show a backlog, not loss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

TOPIC = "wattmesh/bench/orders"


def child() -> None:
    """One node. stdin: "connect <addr>", "run <rate> <batch> <seconds>"; stdout: replies."""
    import trio

    from wattmesh.exchange.node.p2p import Message, open_node
    from wattmesh.settlement.keys import generate_key

    latencies: list[float] = []
    senders: dict[str, int] = {}
    last_ns = [0]

    async def on_message(msg: Message) -> None:
        sent_ns = int.from_bytes(msg.data[:8], "big")
        last_ns[0] = time.time_ns()
        latencies.append((last_ns[0] - sent_ns) / 1e6)
        senders[msg.sender] = senders.get(msg.sender, 0) + 1

    async def main() -> None:
        handlers = {TOPIC: on_message}
        async with open_node(generate_key(), topics=[TOPIC], handlers=handlers) as node:
            print("addr", node.addrs[0], flush=True)
            lines = trio.wrap_file(sys.stdin)
            while line := await lines.readline():
                verb, *args = line.split()
                if verb == "connect":
                    await node.connect(args[0])
                    print("connected", flush=True)
                elif verb == "run":
                    rate, batch, seconds = float(args[0]), int(args[1]), float(args[2])
                    start, sent = trio.current_time(), 0
                    while sent < rate * seconds:
                        await trio.sleep_until(start + sent / rate)
                        body = os.urandom(100 * batch)
                        await node.publish(TOPIC, time.time_ns().to_bytes(8, "big") + body)
                        sent += 1
                    # Drain: a backlog is slow, not lost; wait until 3 s pass without news.
                    with trio.move_on_after(120):
                        while time.time_ns() - last_ns[0] < 3e9:
                            await trio.sleep(0.5)
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    status = Path("/proc/self/status").read_text().splitlines()
                    rss_kb = int(next(x for x in status if x.startswith("VmRSS")).split()[1])
                    report = {"sent": sent, "latencies": latencies, "senders": senders,
                              "rss_mb": rss_kb / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
                              "last_ns": last_ns[0]}  # fmt: skip
                    print("result", json.dumps(report), flush=True)

    trio.run(main)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rate", type=float, default=5.0, help="messages/s per node")
    ap.add_argument("--batch", type=int, default=50, help="orders per message")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--links", type=int, default=4, help="dials per node")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cmd = [sys.executable, __file__, "--child"]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(args.nodes)
    ]
    try:
        addrs = [p.stdout.readline().split()[1] for p in procs]
        rng = random.Random(7)
        for i, p in enumerate(procs):
            others = [j for j in range(args.nodes) if j != i]
            for j in rng.sample(others, min(args.links, len(others))):
                p.stdin.write(f"connect {addrs[j]}\n")
                p.stdin.flush()
                assert p.stdout.readline().startswith("connected")
        time.sleep(2)  # a heartbeat or two for the mesh
        t0 = time.time_ns()
        for p in procs:
            p.stdin.write(f"run {args.rate} {args.batch} {args.seconds}\n")
            p.stdin.flush()
        reports = [json.loads(p.stdout.readline().split(" ", 1)[1]) for p in procs]
        wall = (max(r["last_ns"] for r in reports) - t0) / 1e9  # first publish to last delivery
    finally:
        for p in procs:
            p.kill()
            p.wait()
    sent = sum(r["sent"] for r in reports)
    expected = sent * (args.nodes - 1)
    latencies = [x for r in reports for x in r["latencies"]]
    figures = {
        "nodes": args.nodes, "rate_per_node": args.rate, "batch": args.batch,
        "messages_sent": sent, "deliveries": len(latencies), "lost": expected - len(latencies),
        "deliveries_per_s": round(len(latencies) / wall, 1),
        "orders_per_s": round(len(latencies) * args.batch / wall, 1),
        "latency_ms_p50": round(pct(latencies, 0.50), 1),
        "latency_ms_p99": round(pct(latencies, 0.99), 1),
        "rss_mb": [round(r["rss_mb"], 1) for r in reports],
        "cpu_s": [round(r["cpu_s"], 2) for r in reports],
    }  # fmt: skip
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>18}: {value}")


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
