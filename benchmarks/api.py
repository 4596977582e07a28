#!/usr/bin/env python3
"""Orders per second through a node's HTTP API end to end, and the memory that the API
and one open page cost a node.

    python benchmarks/api.py [--nodes 8] [--batch 50] [--window 4] [--seconds 8]
                             [--paced 0.5] [--flood 0] [--intervals 20]
                             [--only throughput|memory] [--profile PATH] [--json]

**Throughput and latency.** ``--nodes`` ``wattmesh node`` processes on 127.0.0.1, each
dialing every other (as the demo does up to 8 nodes), in a community of their own (the
demo's households, exchange/demo/plan.py, with bots and meters off). Its clock runs at
wall speed from 2 minutes into its first interval, so no gate passes in a run shorter than
13 minutes: every order goes to the next interval and no settlement competes with the
gossip. The members' per-interval budgets are raised far above what a run posts (10**6
messages, 10**7 orders, 1 GiB; the defaults are 1000, 10000, 4 MiB), so they are not what
is measured, and every node's ``[api] rate`` is 10000 requests/s (the default, 20/s with
bursts of 40, is meant for a household). A client in this process posts to the first
node's API from ``--window`` threads (HTTP/1.1 keep-alive, one connection each):
``POST /api/v1/batches`` of ``--batch`` orders, then ``POST /api/v1/orders`` (one order a
request). Every order is distinct (its qty counts up). Per kind, for ``--seconds`` each:

- **closed loop**: each thread posts its next request once every node holds its last
  one, so ``--window`` requests are in flight end to end: the most the community carries
  with a bounded backlog;
- **paced**: open loop at ``--paced`` times the closed loop's rate: latency below
  saturation;
- **flood** (only with ``--flood S``): each thread posts its next request as soon as the
  node answers. The node answers once it stored and queued the message, long before the
  gossip delivers it, so the backlog (and the latency) grows with the run.

When is an order held by a node: a poller thread reads every node's ``messages.sqlite``
(read-only; the node commits a message there before it counts it accepted) every
``--poll-ms`` for rows it has not seen. A row is stamped with the start of the first poll
that sees it, so a time is late by at most one poll period plus one pass over the nodes.
The message id of a batch is computed from the 201 answer (owner, interval, ts, items);
of a single order it is the order id. Figures per phase:

- **orders/s**: orders held by every node / (first request sent -> the last of them held
  by every node), so the drain after the last request is counted;
- **latency**: request sent -> held by the last node, p50/p99 over requests; beside it,
  sent -> 201 (the first node answers once it stored and published the message);
- CPU per request: CPU time of the first node (the API's work and its publishing), and
  of each other node (mean: receiving, checking, storing, forwarding), divided by the
  requests; cores used by the first node, all nodes, this process (client and poller)
  and other programs on the machine (/proc/stat; they lengthen latencies).

Beside them, in the same run: the round trip of ``GET /api/v1/health`` on the same node
(no credential, no body: the HTTP stack and the node's loop, the API's floor), idle and
sequential before the load (with the first node's CPU time per request), and every 50 ms
from a second connection during each phase (how long the node's busy loop keeps other
callers, such as the page, waiting).

**Memory.** A community of 4 demo households (simulated meters, threshold bots, an
accelerated clock of ``--seconds-per-interval``): one with PV that sells, and three alike
without PV that buy (same storage, money, bot and meter seed): ``api-off`` with
``[api] listen = "off"``, ``api-idle`` with the API on and no caller, ``api-page`` with
the API on and one open page: a Server-Sent Events client on ``/api/v1/events`` and the
page's reads (status, balance, book, intervals, orders, savings) once a second, logged in
as the page is (a session cookie from ``POST /api/v1/session``), at the default
``[api] rate``. After ``--intervals`` intervals settled at every node: VmRSS and VmHWM
(peak) of each from /proc/PID/status, and the differences to ``api-off`` (the target:
``api-page`` at most 15 MB above it). Beside them: each node's RSS when all listened
(before the page opened), the CPU each used, and the page's read latencies.

Every process started is stopped on every way out (SIGTERM, SIGKILL after a timeout); the
data directories are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from wattmesh.exchange.api.tokens import ensure_token
from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec, dump_community
from wattmesh.exchange.demo.plan import (
    INTERVAL_MS,
    STDERR,
    STOP_TIMEOUT_S,
    SUNNY_START_MS,
    HouseholdSetup,
    bootstrap_peers,
    free_ports,
    plan_households,
)
from wattmesh.exchange.demo.run import (
    clock_speed,
    parent_death_signal,
    read_status,
    set_up_household,
    startup_seconds,
    terminate_all,
)
from wattmesh.exchange.node.config import (
    DEFAULT_FILES,
    ApiConfig,
    BotConfig,
    MeterConfig,
    write_node_config,
)
from wattmesh.settlement.canonical import record_id
from wattmesh.settlement.keys import generate_key, peer_id_of

API = "/api/v1"
BENCH_RATE = 10_000  # [api] rate of the throughput run's nodes (the most node.toml allows)
BUDGETS = {"max_messages_per_interval": 10**6, "max_orders_per_interval": 10**7,
           "max_bytes_per_interval": 1 << 30}  # fmt: skip
PAGE_READS = ("status", "balance", "book", "intervals", "orders", "savings")
TARGET_MB = 15.0
TICK = os.sysconf("SC_CLK_TCK")


def pct(values: Iterable[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    utime, stime = stat.rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / TICK


# -- the node processes -------------------------------------------------------------------


@dataclass
class Node:
    name: str
    data_dir: Path
    peer_id: str
    port: int
    api_port: int | None  # None: the API is off
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any] | None:
        return read_status(self.data_dir)

    def tail(self, lines: int = 15) -> str:
        try:
            text = (self.data_dir / STDERR).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """Node processes of one community: started, watched, and always stopped (a context
    manager: SIGTERM, then SIGKILL after the demo's timeout). With ``profile`` the first node
    runs under cProfile, which writes its figures there when the node exits."""

    def __init__(self, nodes: list[Node], profile: Path | None = None) -> None:
        self.nodes, self.profile = nodes, profile

    def __enter__(self) -> Cluster:
        arm = parent_death_signal()  # a node gets SIGTERM if this process dies
        for i, n in enumerate(self.nodes):
            n.log = open(n.data_dir / STDERR, "wb")  # noqa: SIM115 (closed in __exit__)
            prefix = ["-m", "cProfile", "-o", str(self.profile)] if i == 0 and self.profile else []
            n.proc = subprocess.Popen(
                [sys.executable, *prefix, "-m", "wattmesh.exchange.cli", "node", "--data-dir",
                 str(n.data_dir)],
                stdin=subprocess.DEVNULL, stdout=n.log, stderr=n.log,
                preexec_fn=arm,  # noqa: PLW1509 (no other threads yet)
            )  # fmt: skip
        return self

    def check(self) -> None:
        """RuntimeError if a node exited."""
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is not None:
                raise RuntimeError(f"{n.name} exited with code {n.proc.returncode}; the end of "
                                   f"{n.data_dir / STDERR}:\n{n.tail()}")  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        ended = terminate_all([n.proc for n in running], STOP_TIMEOUT_S)  # type: ignore[misc]
        for n, (_code, killed) in zip(running, ended, strict=True):
            if killed:
                print(f"{n.name} did not stop within {STOP_TIMEOUT_S:g} s: SIGKILL",
                      file=sys.stderr)  # fmt: skip
        for n in self.nodes:
            if n.log is not None:
                n.log.close()


def set_up(root: Path, households: list[HouseholdSetup], api_on: list[bool], rate: int,
           agents: bool, community: Callable[[tuple[MemberSpec, ...]], Community],
           ) -> tuple[list[Node], Community]:  # fmt: skip
    """Keys, one community file and a data directory per household (as the demo sets them
    up, exchange/demo/run.py); each node dials every other (up to 8). With ``agents`` the
    households' bots and simulated meters run; without, neither."""
    n = len(households)
    keys = [generate_key() for _ in households]
    meter_keys = [generate_key() for _ in households]
    ports = free_ports(2 * n)
    members = tuple(
        MemberSpec(peer_id_of(k), bmax=h.bmax, money=h.money, energy=h.energy, name=h.name,
                   meters=(MeterSpec(peer_id_of(mk)),))
        for h, k, mk in zip(households, keys, meter_keys, strict=True)
    )  # fmt: skip
    made = community(members)
    path = root / DEFAULT_FILES["community"]
    path.write_text(dump_community(made))
    nodes = []
    for i, (h, k, mk, on) in enumerate(zip(households, keys, meter_keys, api_on, strict=True)):
        d = set_up_household(root, h, k, mk, path)
        nodes.append(Node(h.name, d, peer_id_of(k), ports[i], ports[n + i] if on else None))
    addrs = [f"/ip4/127.0.0.1/tcp/{x.port}/p2p/{x.peer_id}" for x in nodes]
    for x, h, peers in zip(nodes, households, bootstrap_peers(n), strict=True):
        api = ApiConfig(f"127.0.0.1:{x.api_port}", rate=rate) if x.api_port else ApiConfig("off")
        write_node_config(x.data_dir, listen=f"/ip4/127.0.0.1/tcp/{x.port}",
                          bootstrap=[addrs[j] for j in peers], api=api,
                          bot=h.bot if agents else BotConfig(),
                          meter=h.meter if agents else MeterConfig())  # fmt: skip
    return nodes, made


def wait_until(cluster: Cluster, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        cluster.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def api_status(node: Node, token: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{node.url}{API}/status", timeout=2.0,
                      headers={"authorization": f"Bearer {token}"})  # fmt: skip
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


# -- throughput: when each node holds each message ----------------------------------------


class Arrivals(threading.Thread):
    """Polls every node's messages.sqlite every ``period`` s; ``seen[i][id]`` is the
    perf_counter at the start of the first poll of node i that found message ``id``."""

    def __init__(self, nodes: list[Node], period: float) -> None:
        super().__init__(daemon=True)
        self.paths = [n.data_dir / DEFAULT_FILES["store"] for n in nodes]
        self.period = period
        self.seen: list[dict[str, float]] = [{} for _ in nodes]
        self.passes, self.pass_s = 0, 0.0  # polls made; the longest pass over all nodes
        self.changed = threading.Condition()  # notified after every pass
        self.stop = threading.Event()

    def run(self) -> None:
        conns = [sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
                 for p in self.paths]  # fmt: skip
        last = [0] * len(conns)
        try:
            while not self.stop.is_set():
                began = time.perf_counter()
                for i, conn in enumerate(conns):
                    at = time.perf_counter()
                    rows = conn.execute("SELECT rowid, id FROM messages WHERE rowid > ?",
                                        (last[i],)).fetchall()  # fmt: skip
                    for rowid, mid in rows:
                        self.seen[i].setdefault(mid, at)
                        last[i] = max(last[i], rowid)
                took = time.perf_counter() - began
                self.passes += 1
                self.pass_s = max(self.pass_s, took)
                with self.changed:
                    self.changed.notify_all()
                time.sleep(max(0.0, self.period - took))
        finally:
            for conn in conns:
                conn.close()

    def everywhere(self, mid: str) -> float | None:
        """When the last node came to hold ``mid`` (None: not every node holds it)."""
        times = [s.get(mid) for s in self.seen]
        return None if None in times else max(times)  # type: ignore[type-var]

    def wait(self, ids: Iterable[str], timeout: float) -> bool:
        """Wait until every node holds every one of ``ids``; False on timeout."""
        pending = set(ids)

        def done() -> bool:
            pending.difference_update([m for m in pending if self.everywhere(m) is not None])
            return not pending

        with self.changed:
            return self.changed.wait_for(done, timeout)


@dataclass
class Sent:
    """One POST: its message id, orders, and when it was sent and answered."""

    mid: str | None  # None: refused
    orders: int
    sent: float
    answered: float
    status: int
    code: str | None = None  # the refusal code


@dataclass
class Poster:
    """Posts orders to one node's API: batches (``batch`` > 1) or single orders."""

    node: Node
    token: str
    market: str
    batch: int
    qty: Iterable[int] = field(default_factory=lambda: itertools.count(1))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.node.url, timeout=60.0,
                            headers={"authorization": f"Bearer {self.token}"})  # fmt: skip

    def _order(self) -> dict[str, Any]:
        q = next(self.qty)  # type: ignore[call-overload]  # distinct: no duplicates
        return {"side": "bid", "price": 100_000, "qty": q} if q % 2 else \
            {"side": "ask", "price": 300_000, "qty": q}  # fmt: skip

    def post(self, client: httpx.Client) -> Sent:
        if self.batch > 1:
            items = [self._order() for _ in range(self.batch)]
            sent = time.perf_counter()
            r = client.post(f"{API}/batches", json={"orders": items})
        else:
            items = [self._order()]
            sent = time.perf_counter()
            r = client.post(f"{API}/orders", json=items[0])
        answered = time.perf_counter()
        body = r.json()
        if r.status_code != 201:
            return Sent(None, len(items), sent, answered, r.status_code, body["error"]["code"])
        if self.batch == 1:
            return Sent(body["id"], 1, sent, answered, 201)
        message = {"type": "batch", "owner": self.node.peer_id, "interval": body["interval"],
                   "ts": body["ts"], "orders": [{**o, "market": self.market} for o in items],
                   "cancels": []}  # fmt: skip
        return Sent(record_id(message), len(items), sent, answered, 201)


def load(poster: Poster, seconds: float, threads: int, *, rate: float | None = None,
         held: Arrivals | None = None) -> list[Sent]:  # fmt: skip
    """Post for ``seconds`` from ``threads`` threads, each request as soon as the thread's
    previous one is answered; with ``held``, as soon as every node holds it (a closed loop
    end to end); with ``rate`` (requests/s), the k-th at start + k/rate (open loop: a
    thread that is late sends at once)."""
    sent: list[Sent] = []
    numbers = itertools.count()
    start = time.perf_counter() + 0.05
    end = start + seconds

    def worker() -> None:
        with poster.client() as client:
            while True:
                k = next(numbers)
                at = start + k / rate if rate else time.perf_counter()
                if at >= end:
                    return
                time.sleep(max(0.0, at - time.perf_counter()))
                s = poster.post(client)
                sent.append(s)
                if held is not None and s.mid is not None:
                    held.wait([s.mid], 60.0)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sent


class Pinger(threading.Thread):
    """GET /api/v1/health every ``every`` s on its own connection; ``rtts`` in s."""

    def __init__(self, node: Node, every: float) -> None:
        super().__init__(daemon=True)
        self.node, self.every = node, every
        self.rtts: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.node.url, timeout=60.0) as client:
            while not self.stop.wait(self.every):
                t0 = time.perf_counter()
                client.get(f"{API}/health").raise_for_status()
                self.rtts.append(time.perf_counter() - t0)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICK


def phase(name: str, nodes: list[Node], arrivals: Arrivals, run: Callable[[], list[Sent]],
          drain: float) -> dict[str, Any]:  # fmt: skip
    """Run one load, wait up to ``drain`` s for every node to hold what it posted, and
    return its figures."""
    pids = [n.pid for n in nodes]
    cpu0 = [cpu_seconds(p) for p in pids]
    wall0, own0, busy0 = time.perf_counter(), time.process_time(), machine_busy()
    pinger = Pinger(nodes[0], 0.05)
    pinger.start()
    try:
        sent = run()
    finally:
        pinger.stop.set()
        pinger.join()
    ok = [s for s in sent if s.mid is not None]
    drained = arrivals.wait([s.mid for s in ok], drain)  # type: ignore[misc]
    wall = time.perf_counter() - wall0
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    own = time.process_time() - own0
    busy = machine_busy() - busy0
    everywhere = {s.mid: arrivals.everywhere(s.mid) for s in ok}  # type: ignore[index]
    held = [s for s in ok if everywhere[s.mid] is not None]
    refused: dict[str, int] = {}
    for s in sent:
        if s.code is not None:
            refused[s.code] = refused.get(s.code, 0) + 1
    orders = sum(s.orders for s in held)
    last = max((everywhere[s.mid] for s in held), default=None)  # type: ignore[type-var]
    first = min((s.sent for s in sent), default=0.0)
    seconds = (last - first) if last is not None else float("nan")  # type: ignore[operator]
    latency = [everywhere[s.mid] - s.sent for s in held]  # type: ignore[operator]
    answer = [s.answered - s.sent for s in sent]
    others = sum(cpu[1:]) / max(1, len(cpu) - 1)
    return {
        "phase": name, "requests": len(sent), "orders_held_everywhere": orders,
        "orders_not_everywhere": sum(s.orders for s in ok) - orders, "refused": refused,
        "drained": drained, "seconds": round(seconds, 2),
        "orders_per_s": round(orders / seconds, 1) if held else 0.0,
        "requests_per_s": round(len(held) / seconds, 1) if held else 0.0,
        "latency_ms_p50": ms(pct(latency, 0.5)), "latency_ms_p99": ms(pct(latency, 0.99)),
        "latency_ms_max": ms(max(latency, default=float("nan"))),
        "answer_ms_p50": ms(pct(answer, 0.5)), "answer_ms_p99": ms(pct(answer, 0.99)),
        "health_under_load_ms_p50": ms(pct(pinger.rtts, 0.5)),
        "health_under_load_ms_p99": ms(pct(pinger.rtts, 0.99)),
        "cpu_ms_per_request_first_node": round(cpu[0] / len(sent) * 1000, 2) if sent else None,
        "cpu_ms_per_request_other_node": round(others / len(sent) * 1000, 2) if sent else None,
        "cores_first_node": round(cpu[0] / wall, 2),
        "cores_all_nodes": round(sum(cpu) / wall, 2),
        "cores_this_process": round(own / wall, 2),
        "cores_other_programs": round(max(0.0, busy - sum(cpu) - own) / wall, 2),
    }  # fmt: skip


def throughput(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    n = args.nodes
    households = plan_households(n, args.seed)
    now_ms = int(time.time() * 1000)
    # Community time starts 2 minutes into the first interval: its gate has passed (the
    # nodes settle it, empty, as they start) and the next gate is 13 minutes away.
    origin_ms = now_ms - 120_000

    def community(members: tuple[MemberSpec, ...]) -> Community:
        return Community(name="api-bench", start_ms=SUNNY_START_MS, clock_speed=1,
                         clock_origin_ms=origin_ms, members=members, **BUDGETS)  # fmt: skip

    nodes, made = set_up(root, households, [True] * n, BENCH_RATE, False, community)
    token = ensure_token(nodes[0].data_dir)
    figures: dict[str, Any] = {"nodes": n, "window": args.window, "poll_ms": args.poll_ms}
    began = time.monotonic()
    with Cluster(nodes, args.profile) as cluster:
        tokens = [ensure_token(x.data_dir) for x in nodes]

        def meshed() -> bool:
            states = [api_status(x, t) for x, t in zip(nodes, tokens, strict=True)]
            return all(s is not None and s["peers"] >= n - 1 for s in states)

        wait_until(cluster, meshed, 60 + startup_seconds(n), "every node to reach every other")
        figures["startup_s"] = round(time.monotonic() - began, 1)
        arrivals = Arrivals(nodes, args.poll_ms / 1000)
        arrivals.start()
        try:
            batches = Poster(nodes[0], token, made.market, args.batch)
            singles = Poster(nodes[0], token, made.market, 1, batches.qty)
            # Warm up until a batch reaches every node (the gossip mesh forms in heartbeats).
            deadline = time.monotonic() + 30
            with batches.client() as client:
                while True:
                    first = batches.post(client)
                    if first.mid is None:
                        raise RuntimeError(f"the warm-up batch was refused: {first.code}")
                    if arrivals.wait([first.mid], 1.0):
                        break
                    cluster.check()
                    if time.monotonic() > deadline:
                        raise RuntimeError("a batch did not reach every node within 30 s")
            with httpx.Client(base_url=nodes[0].url) as client:
                rtts = []
                cpu0 = cpu_seconds(nodes[0].pid)
                for _ in range(args.health):
                    t0 = time.perf_counter()
                    client.get(f"{API}/health").raise_for_status()
                    rtts.append(time.perf_counter() - t0)
                cpu = cpu_seconds(nodes[0].pid) - cpu0
            figures["health_idle_ms_p50"] = ms(pct(rtts, 0.5))
            figures["health_idle_ms_p99"] = ms(pct(rtts, 0.99))
            figures["health_idle_cpu_ms_per_request"] = round(cpu / args.health * 1000, 2)
            phases = []
            w, secs = args.window, args.seconds
            for label, poster in ((f"batches of {args.batch}", batches),
                                  ("single orders", singles)):  # fmt: skip
                closed = phase(f"{label}, closed loop ({w} in flight until held everywhere)",
                               nodes, arrivals,
                               lambda p=poster: load(p, secs, w, held=arrivals),
                               args.drain)  # fmt: skip
                phases.append(closed)
                if args.paced > 0 and closed["requests_per_s"] > 0:
                    rate = args.paced * closed["requests_per_s"]
                    phases.append(phase(
                        f"{label}, paced at {args.paced:g} x that ({rate:.1f} requests/s)",
                        nodes, arrivals, lambda p=poster, r=rate: load(p, secs, w, rate=r),
                        args.drain))  # fmt: skip
                if args.flood > 0:
                    phases.append(phase(
                        f"{label}, flood ({w} in flight until answered, {args.flood:g} s)",
                        nodes, arrivals, lambda p=poster: load(p, args.flood, w),
                        args.drain))  # fmt: skip
            figures["poll_pass_ms_max"] = ms(arrivals.pass_s)
            figures["phases"] = phases
            refusals: dict[str, int] = {}
            for x in nodes:
                for k, v in (x.status() or {}).get("refusals", {}).items():
                    refusals[k] = refusals.get(k, 0) + v
            figures["node_refusals"] = refusals
        finally:
            arrivals.stop.set()
            arrivals.join()
    return figures


# -- memory: a node with the API and an open page against one without -------------------


class Page:
    """What an open page asks of a node: one event stream, and its reads once a second.
    ``reads`` holds (path, seconds, status) of every read; ``events`` counts frames."""

    def __init__(self, node: Node, token: str) -> None:
        self.node = node
        self.client = httpx.Client(base_url=node.url, timeout=30.0)
        r = self.client.post(f"{API}/session", json={"token": token})  # as the page logs in
        r.raise_for_status()
        self.reads: list[tuple[str, float, int]] = []
        self.events = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._stream, daemon=True),
                        threading.Thread(target=self._poll, daemon=True)]  # fmt: skip

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _stream(self) -> None:
        try:
            with self.client.stream("GET", f"{API}/events", timeout=None) as r:
                for line in r.iter_lines():
                    self.events += line.startswith("event:")
                    if self.stop.is_set():
                        return
        except Exception as exc:  # noqa: BLE001 (closing the client ends the stream too)
            if not self.stop.is_set():
                self.errors.append(f"events: {exc!r}")

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            for path in PAGE_READS:
                t0 = time.perf_counter()
                try:
                    r = self.client.get(f"{API}/{path}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{path}: {exc!r}")
                    continue
                self.reads.append((path, time.perf_counter() - t0, r.status_code))

    def close(self) -> None:
        self.stop.set()
        self.threads[1].join()
        self.client.close()  # ends the stream too


def memory(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    seller, buyer = plan_households(2, args.seed)
    names = ("api-off", "api-idle", "api-page")
    households = [dataclasses.replace(seller, name="seller")] + [
        dataclasses.replace(buyer, name=name) for name in names
    ]
    api_on = [False, False, True, True]
    speed = clock_speed(args.seconds_per_interval)
    startup = startup_seconds(len(households))
    origin_ms = int(time.time() * 1000 + startup * 1000)

    def community(members: tuple[MemberSpec, ...]) -> Community:
        return Community(name="api-memory", start_ms=SUNNY_START_MS, clock_speed=speed,
                         clock_origin_ms=origin_ms, members=members)  # fmt: skip

    nodes, _ = set_up(root, households, api_on, ApiConfig().rate, True, community)
    page_node = next(x for x in nodes if x.name == "api-page")
    last = SUNNY_START_MS + (args.intervals - 1) * INTERVAL_MS
    samples: dict[str, list[int]] = {x.name: [] for x in nodes}  # VmRSS, every 0.2 s
    with Cluster(nodes) as cluster:
        def listening() -> bool:
            return all(x.status() is not None for x in nodes) and api_status(
                page_node, ensure_token(page_node.data_dir)) is not None  # fmt: skip

        wait_until(cluster, listening, 60 + startup, "every node to listen")
        at_listen = {x.name: proc_status(x.pid)["VmRSS"] for x in nodes}
        cpu0 = {x.name: cpu_seconds(x.pid) for x in nodes}
        page = Page(page_node, ensure_token(page_node.data_dir))
        page.start()
        try:
            def settled() -> bool:  # and a sample of every node's RSS
                for x in nodes:
                    samples[x.name].append(proc_status(x.pid)["VmRSS"])
                through = [(x.status() or {}).get("settled_through") for x in nodes]
                return all(t is not None and t >= last for t in through)

            spi = INTERVAL_MS / 1000 / speed
            wait_until(cluster, settled, startup + (args.intervals + 2) * spi + 60,
                       f"{args.intervals} intervals settled everywhere")  # fmt: skip
            final = {x.name: proc_status(x.pid) for x in nodes}
            cpu = {x.name: round(cpu_seconds(x.pid) - cpu0[x.name], 1) for x in nodes}
        finally:
            page.close()

    def mb(kb: float) -> float:
        return round(kb / 1024, 1)

    def node_figures(x: Node) -> dict[str, Any]:
        later = samples[x.name][len(samples[x.name]) // 2 :]  # the second half of the run
        return {"api": "on" if x.api_port else "off", "rss_at_listen_mb": mb(at_listen[x.name]),
                "rss_mb": mb(final[x.name]["VmRSS"]),
                "rss_mean_last_half_mb": mb(sum(later) / max(1, len(later))),
                "hwm_mb": mb(final[x.name]["VmHWM"]), "cpu_s": cpu[x.name]}  # fmt: skip

    off = final["api-off"]
    figures: dict[str, Any] = {
        "intervals": args.intervals, "seconds_per_interval": round(INTERVAL_MS / 1000 / speed, 2),
        "nodes": {x.name: node_figures(x) for x in nodes},
        "page_events": page.events, "page_errors": page.errors[:5],
    }  # fmt: skip
    for name in ("api-idle", "api-page"):
        figures[f"{name}_minus_off_rss_mb"] = mb(final[name]["VmRSS"] - off["VmRSS"])
        figures[f"{name}_minus_off_hwm_mb"] = mb(final[name]["VmHWM"] - off["VmHWM"])
    figures["target_met_rss<=15MB_over_off"] = figures["api-page_minus_off_rss_mb"] <= TARGET_MB
    reads: dict[str, Any] = {}
    for path in PAGE_READS:
        xs = [s for p, s, _ in page.reads if p == path]
        bad = sum(1 for p, _, st in page.reads if p == path and st != 200)
        reads[path] = {"n": len(xs), "ms_p50": ms(pct(xs, 0.5)), "ms_p99": ms(pct(xs, 0.99)),
                       "ms_last": ms(xs[-1]) if xs else None, "not_200": bad}  # fmt: skip
    figures["page_reads"] = reads
    return figures


# -- the report ---------------------------------------------------------------------------


def show(title: str, figures: dict[str, Any]) -> None:
    print(title)
    for key, value in figures.items():
        if key == "phases":
            for p in value:
                print(f"  {p['phase']}:")
                for k, v in p.items():
                    if k != "phase":
                        print(f"    {k:>26}: {v}")
        elif key in ("nodes", "page_reads") and isinstance(value, dict):
            print(f"  {key}:")
            for name, row in value.items():
                print(f"    {name:>10}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
        else:
            print(f"  {key:>30}: {value}")
    print(flush=True)


def show_profile(path: Path, top: int) -> None:
    """The first node's profile (its whole life, start-up imports included): the node's,
    the API's and libp2p's functions by cumulative time, then every function by own time."""
    print(f"profile of the first node (cProfile, {path}):")
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats("/exchange/|/libp2p/|/hypercorn/|/starlette/",
                                               top)  # fmt: skip
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("throughput", "memory"), help="run one part only")
    ap.add_argument("--nodes", type=int, default=8, help="nodes of the throughput run")
    ap.add_argument("--batch", type=int, default=50, help="orders per batch request")
    ap.add_argument("--seconds", type=float, default=8.0, help="of each load phase")
    ap.add_argument("--window", type=int, default=4, help="requests in flight")
    ap.add_argument("--paced", type=float, default=0.5,
                    help="the paced phases' rate, a fraction of the closed loop's (0: none)")
    ap.add_argument("--flood", type=float, default=0.0,
                    help="seconds of posting as fast as the node answers, not waiting for "
                    "the gossip (0: none; the backlog can take minutes to drain)")
    ap.add_argument("--poll-ms", type=float, default=10.0, help="messages.sqlite poll period")
    ap.add_argument("--drain", type=float, default=30.0,
                    help="seconds to wait for every node to hold what was posted")  # fmt: skip
    ap.add_argument("--health", type=int, default=500, help="idle health round trips")
    ap.add_argument("--intervals", type=int, default=20, help="of the memory run")
    ap.add_argument("--seconds-per-interval", type=float, default=2.5,
                    help="the memory run's clock (as the demo's)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="the demo households' seed")
    ap.add_argument("--profile", type=Path,
                    help="run the throughput run's first node under cProfile, write its "
                    "stats here and print the top functions")  # fmt: skip
    ap.add_argument("--top", type=int, default=25, help="functions of the profile shown")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("--json", action="store_true", help="one JSON line per part")
    args = ap.parse_args()
    if args.profile is not None:
        args.profile = args.profile.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="wattmesh-api-bench-"))
    try:
        parts = [("throughput", throughput), ("memory", memory)]
        for name, run in parts:
            if args.only not in (None, name):
                continue
            (tmp / name).mkdir()
            figures = run(args, tmp / name)
            if args.json:
                print(json.dumps({"part": name, **figures}), flush=True)
            else:
                show(name, figures)
        if args.profile is not None and args.only != "memory":
            show_profile(args.profile, args.top)
    finally:
        if args.keep:
            print(f"data directories kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
