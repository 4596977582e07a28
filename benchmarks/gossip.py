#!/usr/bin/env python3
"""Order gossip between household nodes: throughput, latency, CPU and memory (issue 6).

    python benchmarks/gossip.py [--nodes 8 24] [--batch 1000] [--rate 1.2] [--messages 96]
                                [--links 4] [--wait 30] [--seed 7] [--without MODULE...]
                                [--default-gc] [--json]
    python benchmarks/gossip.py --quick          # N=4, a few messages: a smoke check

For each N in ``--nodes`` it starts N processes on 127.0.0.1, each one real
:class:`~wattmesh.exchange.node.household.HouseholdNode` (admission checks, message store, ledger;
no bot, no meter) with its own data directory in a temporary directory removed at the
end. The community file lists the N households (keys derived from their index) and
starts at the second interval boundary from now, with the default 15-minute interval on
the wall clock: every order is for that first interval, which is ahead of now and within
the horizon, and its settlement (gate plus grace) is at least 16 minutes away, so no
reconciliation or settlement runs while we measure: whatever a node accepts came by
gossip alone.

The nodes are linked in a random graph (``--seed``; every node has at least ``--links``
neighbours; the graph is connected). Once every node sees all its neighbours on the
orders topic and has a GossipSub mesh (at least ``min(3, neighbours)`` peers), all nodes
publish from a shared wall-clock start: ``--messages`` signed batches of ``--batch``
orders in all (rounded up to a multiple of N, every node publishing the same count),
``--rate`` messages per second community-wide, round robin over the nodes, so the
community's order rate is ``rate * batch`` whatever N is. Prices and quantities vary so
every order has its own id. Each node publishes through ``HouseholdNode.submit`` and
times every accepted batch with ``on_accept``; after its last publish it waits until it
has accepted every batch of the run, or ``--wait`` seconds past the last scheduled
publish, then reports as JSON on stdout.

Figures, per N (all processes share the machine's wall clock, ``time.time_ns``):

- loss: orders expected (N times the orders published: every node accepts its own too)
  against orders accepted, summed over the nodes; batches not accepted everywhere;
- orders/s: orders accepted by every node, divided by the time from the first publish to
  the last acceptance anywhere; also order deliveries/s (summed over the nodes);
- latency of a batch: the latest acceptance over the nodes minus its publish time
  (taken just before ``submit``), p50 / p99 / max over the batches;
- CPU per order: each node's process CPU time (``time.process_time``: relaying, control
  traffic, heartbeats and its own publishing included) from the start to its last
  acceptance, divided by the orders it accepted, averaged over the nodes;
- RSS: each node's peak (``VmHWM``), mean and max, and its RSS when publishing starts
  (before it holds any order);
- full garbage collections per node and the longest one (each stalls its node);
- CPU cores used, by the nodes and by other programs (``/proc/stat``): on a shared
  machine other programs lengthen the latencies, so a run says how busy it was.

Targets: >= 1000 orders/s community-wide with zero loss, p99 <= 250 ms at 24 nodes,
RSS <= 120 MB per node. Every node spends CPU on every message (receiving its copies,
checking it, forwarding it, control traffic) and on every order in it (parse, id, store),
so large batches at a low message rate are what carry many orders. With all N nodes on
one machine the flood of each message needs N times a node's share of CPU from the same
few cores, which sets a floor under the latency that separate machines would not have.
docs/node.md, "Gossip benchmark", has the figures measured and what limits them.

Each node collects garbage as ``wattmesh node`` does (exchange/node/collector.py: what it
holds is frozen, full collections run after settling). Two what-if options change the
nodes: ``--without MODULE...`` (those modules cannot be imported) and ``--default-gc``
(CPython's own collection schedule, as before the collector policy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TARGET_ORDERS_PER_S = 1000
TARGET_P99_MS = 250  # at 24 nodes
TARGET_RSS_MB = 120
INTERVAL_MS = 900_000  # the default: 15 minutes on the wall clock


def household_key(index: int) -> Ed25519PrivateKey:
    """Household ``index``'s key: the parent (community file) and the worker agree on it."""
    seed = hashlib.sha256(f"wattmesh gossip benchmark {index}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def order_items(market: str, k: int, batch: int) -> list[dict]:
    """The orders of a node's ``k``-th batch; prices differ, so ids never repeat."""
    items = []
    for j in range(batch):
        n = k * batch + j
        side = "bid" if n % 2 else "ask"
        items.append({"market": market, "side": side, "price": 100_000 + n, "qty": 1 + n % 97})
    return items


def rss_mb(field: str = "VmHWM") -> float:
    """This process's resident set size, MB: its peak (VmHWM) or now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- a worker: one node ---------------------------------------------------------------------


def worker(
    index: int, data_dir: Path, community_path: Path, without: list[str], default_gc: bool
) -> None:
    """One household node. stdin commands, one per line, each answered on stdout:

    ``dial <addr>...`` -> ``dialed <n>``; ``status`` -> ``status <topic peers> <mesh
    peers>``; ``run <start_ns> <rate> <batch> <per_node> <nodes> <wait_s>`` -> ``result
    <json>``. End of input stops the node. Modules in ``without`` cannot be imported
    (``--without``); ``default_gc``: see ``--default-gc``.
    """
    for name in without:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    import gc
    import logging

    import trio

    from wattmesh.exchange.community_file import load_community
    from wattmesh.exchange.node.collector import QuietCollector
    from wattmesh.exchange.node.household import HouseholdNode
    from wattmesh.exchange.node.message_store import MessageStore
    from wattmesh.exchange.node.wire import ORDERS, Batch, Inbound
    from wattmesh.settlement.ledger import Ledger

    # stderr is the worker's log file; py-libp2p's logger does not propagate (the notes).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("libp2p").addHandler(logging.StreamHandler(sys.stderr))

    community = load_community(community_path)
    key = household_key(index)
    ledger = Ledger.open(data_dir / "ledger.sqlite")
    ledger.append_batch(community.genesis_items(), ts=community.genesis_ts)
    store = MessageStore.open(data_dir / "messages.sqlite")
    node = HouseholdNode(community, key, ledger, store, data_dir=data_dir)

    accepted: dict[str, int] = {}  # batch id -> wall ns of acceptance here
    published: dict[str, list[int]] = {}  # our batch id -> [publish wall ns, orders]
    counts = {"orders": 0, "expected": 0}
    done = trio.Event()
    gc_full = {"count": 0, "max_ms": 0.0, "t": 0.0}

    def on_gc(phase: str, info: dict) -> None:  # full collections stall the whole node
        if info["generation"] != 2:
            return
        if phase == "start":
            gc_full["t"] = time.perf_counter()
            return
        gc_full["count"] += 1
        gc_full["max_ms"] = max(gc_full["max_ms"], (time.perf_counter() - gc_full["t"]) * 1e3)

    gc.callbacks.append(on_gc)

    def on_accept(inbound: Inbound) -> None:
        accepted[inbound.id] = time.time_ns()
        counts["orders"] += len(inbound.orders())
        if counts["expected"] and len(accepted) >= counts["expected"]:
            done.set()

    node.on_accept = on_accept

    def reply(*words: object) -> None:
        print(*words, flush=True)

    async def run(start_ns: int, rate: float, batch: int, per_node: int, nodes: int,
                  wait_s: float) -> None:  # fmt: skip
        counts["expected"] = per_node * nodes
        last_ns = start_ns + int((per_node * nodes - 1) / rate * 1e9)
        interval = community.start_ms  # ahead of now, within the horizon (see above)
        cpu_start = time.process_time()
        rss_start = rss_mb("VmRSS")
        for k in range(per_node):
            at_ns = start_ns + int((k * nodes + index) / rate * 1e9)  # round robin
            await trio.sleep(max(0.0, (at_ns - time.time_ns()) / 1e9))
            msg = Batch.of(
                key, interval, community.now_ms(), order_items(community.market, k, batch)
            )
            sent_ns = time.time_ns()
            inbound = await node.submit(ORDERS, msg.message())
            published[inbound.id] = [sent_ns, batch]
        with trio.move_on_after(max(0.0, (last_ns - time.time_ns()) / 1e9) + wait_s):
            await done.wait()
        cpu_s = time.process_time() - cpu_start  # to the last acceptance, or the deadline
        p2p = node.p2p
        assert p2p is not None
        report = {
            "index": index, "peer_id": node.peer_id, "published": published,
            "accepted": accepted, "orders_accepted": counts["orders"],
            "cpu_s": cpu_s, "rss_peak_mb": rss_mb(), "rss_start_mb": rss_start,
            "refusals": dict(node.admission.refusals), "p2p": dict(p2p.stats),
            "peers": len(p2p.peers), "settled": node.status.settled,
            "gc_full": gc_full["count"], "gc_full_max_ms": gc_full["max_ms"],
        }  # fmt: skip
        reply("result", json.dumps(report))

    async def control(stop: trio.Event) -> None:
        p2p = node.p2p
        assert p2p is not None
        topic = node.topics[ORDERS]
        lines = trio.wrap_file(sys.stdin)
        while line := await lines.readline():
            verb, *args = line.split()
            if verb == "dial":
                async with trio.open_nursery() as nursery:
                    for addr in args:
                        nursery.start_soon(p2p.connect, addr)
                reply("dialed", len(args))
            elif verb == "status":
                reply("status", len(p2p.topic_peers(topic)), len(p2p.mesh_peers(topic)))
            elif verb == "run":
                start_ns, rate, batch, per_node, nodes, wait_s = args
                await run(int(start_ns), float(rate), int(batch), int(per_node), int(nodes),
                          float(wait_s))  # fmt: skip
        stop.set()

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(node.run, "/ip4/127.0.0.1/tcp/0", stop=stop))
            assert node.p2p is not None
            if not default_gc:
                node.listeners.append(QuietCollector())  # as `wattmesh node` does
            reply("addr", node.p2p.addrs[0])
            await control(stop)

    try:
        trio.run(main)
    finally:
        store.close()
        ledger.close()


# -- the parent ---------------------------------------------------------------------------


def random_graph(n: int, links: int, rng: random.Random) -> set[tuple[int, int]]:
    """Edges (i < j) of a random connected graph where every node has >= ``links``
    neighbours (all others if there are fewer)."""
    want = min(links, n - 1)
    while True:
        nbrs: list[set[int]] = [set() for _ in range(n)]
        for i in range(n):
            while len(nbrs[i]) < want:
                j = rng.choice([j for j in range(n) if j != i and j not in nbrs[i]])
                nbrs[i].add(j)
                nbrs[j].add(i)
        seen, todo = {0}, [0]
        while todo:
            for j in nbrs[todo.pop()] - seen:
                seen.add(j)
                todo.append(j)
        if len(seen) == n:
            return {(i, j) for i in range(n) for j in nbrs[i] if i < j}


class Workers:
    """The N worker processes of one run; :meth:`kill` ends them all (also on error)."""

    def __init__(self, n: int, root: Path, community_path: Path, args: argparse.Namespace):
        self.logs = [root / f"node{i}" / "worker.log" for i in range(n)]
        self.procs: list[subprocess.Popen] = []
        for i in range(n):
            self.logs[i].parent.mkdir()
            cmd = [sys.executable, __file__, "--worker", str(i), str(self.logs[i].parent),
                   str(community_path), ",".join(args.without),
                   str(int(args.default_gc))]  # fmt: skip
            with self.logs[i].open("w") as log:
                self.procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=log,
                                                   text=True))  # fmt: skip

    def send(self, i: int, line: str) -> None:
        self.procs[i].stdin.write(line + "\n")
        self.procs[i].stdin.flush()

    def read(self, i: int, verb: str) -> list[str]:
        """The words after ``verb`` of worker i's next reply (other output is skipped)."""
        while line := self.procs[i].stdout.readline():
            head, _, rest = line.rstrip("\n").partition(" ")
            if head == verb:
                return rest.split(" ") if verb != "result" else [rest]
        tail = deque(self.logs[i].read_text().splitlines(), maxlen=15)
        raise RuntimeError(f"worker {i} exited before '{verb}'; its log ends:\n" + "\n".join(tail))

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()


def cpu_jiffies(pids: list[int]) -> tuple[float, int, int]:
    """(monotonic s, busy jiffies of the whole machine, CPU jiffies of ``pids``): two of
    these tell how busy the machine was, and how much of that was not the benchmark
    (other programs on a shared machine lengthen latencies)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    ours = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        utime, stime = stat.rsplit(")", 1)[1].split()[11:13]
        ours += int(utime) + int(stime)
    return time.monotonic(), user + nice + system + irq + softirq + steal, ours


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def bench(n: int, args: argparse.Namespace, root: Path) -> dict:
    """Run N nodes once; return the figures."""
    from wattmesh.exchange.community_file import Community, MemberSpec, dump_community
    from wattmesh.settlement.keys import peer_id_of

    now_ms = time.time_ns() // 1_000_000
    start_ms = now_ms - now_ms % INTERVAL_MS + 2 * INTERVAL_MS
    members = tuple(MemberSpec(peer_id_of(household_key(i)), bmax=0) for i in range(n))
    per_node = math.ceil(args.messages / n)
    # Every batch is for one interval: the members' budgets must hold a whole run.
    community = Community(name=f"gossip-bench-{n}", start_ms=start_ms, interval_ms=INTERVAL_MS,
                          members=members, max_messages_per_interval=max(1_000, per_node),
                          max_orders_per_interval=max(10_000, per_node * args.batch),
                          max_bytes_per_interval=max(4 << 20, per_node * args.batch * 400),
                          )  # fmt: skip
    root.mkdir()
    community_path = root / "community.toml"
    community_path.write_text(dump_community(community))
    edges = random_graph(n, args.links, random.Random(args.seed))
    degree = [sum(i in e for e in edges) for i in range(n)]

    t_spawn = time.monotonic()
    workers = Workers(n, root, community_path, args)
    # A hung worker must not hang the benchmark: a watchdog kills them all.
    watchdog = threading.Timer(args.timeout, workers.kill)
    watchdog.start()
    try:
        addrs = [workers.read(i, "addr")[0] for i in range(n)]
        t_up = time.monotonic()
        for i in range(n):  # the lower index dials; every worker dials all its links at once
            targets = [addrs[j] for (a, j) in sorted(edges) if a == i]
            workers.send(i, "dial " + " ".join(targets))
        for i in range(n):
            workers.read(i, "dialed")
        while True:  # until every node sees all its neighbours and has a mesh
            ready = 0
            for i in range(n):
                workers.send(i, "status")
                topic_peers, mesh = map(int, workers.read(i, "status"))
                ready += topic_peers >= degree[i] and mesh >= min(3, degree[i])
            if ready == n:
                break
            if time.monotonic() - t_up > 60:
                raise RuntimeError(f"only {ready} of {n} nodes meshed after 60 s")
            time.sleep(0.5)
        t_meshed = time.monotonic()
        start_ns = time.time_ns() + 1_000_000_000  # all receive the command by then
        pids = [p.pid for p in workers.procs]
        for i in range(n):
            workers.send(i, f"run {start_ns} {args.rate} {args.batch} {per_node} {n} {args.wait}")
        time.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
        before = cpu_jiffies(pids)
        reports = [json.loads(workers.read(i, "result")[0]) for i in range(n)]
        after = cpu_jiffies(pids)
    finally:
        watchdog.cancel()
        workers.kill()
    tick = os.sysconf("SC_CLK_TCK") * (after[0] - before[0])
    cores = {"nodes": (after[2] - before[2]) / tick, "all": (after[1] - before[1]) / tick}
    setup = {"spawn_s": t_up - t_spawn, "mesh_s": t_meshed - t_up}
    return figures(n, args, per_node, edges, reports, start_ns, setup, cores)


def figures(n: int, args: argparse.Namespace, per_node: int, edges: set, reports: list[dict],
            start_ns: int, setup: dict, cores: dict) -> dict:  # fmt: skip
    published = {bid: v for r in reports for bid, v in r["published"].items()}
    orders_published = sum(v[1] for v in published.values())
    orders_accepted = sum(r["orders_accepted"] for r in reports)
    latencies, everywhere_orders, partial = [], 0, 0
    last_ns = start_ns
    for bid, (sent_ns, orders) in published.items():
        times = [r["accepted"][bid] for r in reports if bid in r["accepted"]]
        if times:
            last_ns = max(last_ns, *times)
        if len(times) == n:
            latencies.append((max(times) - sent_ns) / 1e6)
            everywhere_orders += orders
        else:
            partial += 1
    first_ns = min((v[0] for v in published.values()), default=start_ns)
    duration = (last_ns - first_ns) / 1e9
    cpu_per_order = [
        r["cpu_s"] / r["orders_accepted"] * 1e3 for r in reports if r["orders_accepted"]
    ]
    rss = [r["rss_peak_mb"] for r in reports]
    refusals: dict[str, int] = {}
    for r in reports:
        for reason, count in r["refusals"].items():
            if reason != "duplicate":  # a batch arriving twice is normal gossip
                refusals[reason] = refusals.get(reason, 0) + count
    orders_per_s = everywhere_orders / duration if duration > 0 else float("nan")
    p99 = pct(latencies, 0.99)
    missing = n * orders_published - orders_accepted
    return {
        "nodes": n, "edges": len(edges), "batch": args.batch, "rate_msgs_per_s": args.rate,
        "messages": len(published), "messages_per_node": per_node,
        "orders_published": orders_published, "orders_expected": n * orders_published,
        "orders_accepted": orders_accepted, "orders_missing": missing,
        "batches_not_everywhere": partial,
        "intervals_settled": sum(r["settled"] for r in reports),  # 0: gossip alone
        "duration_s": round(duration, 2),
        "orders_per_s": round(orders_per_s, 1),
        "order_deliveries_per_s": round(orders_accepted / duration, 1) if duration > 0 else None,
        "latency_ms_p50": round(pct(latencies, 0.50), 1), "latency_ms_p99": round(p99, 1),
        "latency_ms_max": round(max(latencies, default=float("nan")), 1),
        "cpu_ms_per_order": round(sum(cpu_per_order) / len(cpu_per_order), 4)
        if cpu_per_order else None,
        "cpu_s_per_node_max": round(max(r["cpu_s"] for r in reports), 2),
        "rss_mb_at_start_mean": round(sum(r["rss_start_mb"] for r in reports) / n, 1),
        "rss_mb_mean": round(sum(rss) / n, 1), "rss_mb_max": round(max(rss), 1),
        "gc_full_per_node_max": max(r["gc_full"] for r in reports),
        "gc_full_ms_max": round(max(r["gc_full_max_ms"] for r in reports), 1),
        "cpu_cores_nodes": round(cores["nodes"], 2),
        "cpu_cores_other_programs": round(max(0.0, cores["all"] - cores["nodes"]), 2),
        "refusals": refusals, "setup_s": {k: round(v, 1) for k, v in setup.items()},
        "met": {
            "orders_per_s>=1000_zero_loss": missing == 0 and orders_per_s >= TARGET_ORDERS_PER_S,
            "p99<=250ms": p99 <= TARGET_P99_MS,
            "rss<=120MB": max(rss) <= TARGET_RSS_MB,
        },
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[8, 24])
    ap.add_argument("--batch", type=int, default=1000, help="orders per message")
    ap.add_argument("--rate", type=float, default=1.2, help="messages/s, community-wide")
    ap.add_argument("--messages", type=int, default=96,
                    help="messages in all (rounded up to a multiple of N)")  # fmt: skip
    ap.add_argument("--links", type=int, default=4, help="neighbours per node, at least")
    ap.add_argument("--wait", type=float, default=30.0,
                    help="seconds past the last publish to wait for stragglers")  # fmt: skip
    ap.add_argument("--seed", type=int, default=7, help="of the random graph")
    ap.add_argument("--timeout", type=float, default=600.0, help="kill a run after this")
    ap.add_argument(
        "--without",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="make these modules unimportable in the nodes (e.g. pandas)",
    )
    ap.add_argument("--default-gc", action="store_true",
                    help="CPython's own collection schedule in the nodes instead of the "
                    "node's (exchange/node/collector.py), to see its effect")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="N=4, few messages: a smoke check")
    ap.add_argument("--json", action="store_true", help="one JSON line per N")
    args = ap.parse_args()
    if args.quick:
        args.nodes, args.batch, args.rate, args.messages, args.wait = [4], 100, 4.0, 8, 10.0
    tmp = Path(tempfile.mkdtemp(prefix="wattmesh-gossip-"))
    try:
        for n in args.nodes:
            result = bench(n, args, tmp / f"n{n}")
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            for name, value in result.items():
                print(f"{name:>24}: {value}")
            print(flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        index, data_dir, community, without, default_gc = sys.argv[2:7]
        worker(int(index), Path(data_dir), Path(community), [m for m in without.split(",") if m],
               default_gc == "1")  # fmt: skip
    else:
        main()
