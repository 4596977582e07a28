"""``wattmesh demo``: a small community of real household nodes on this machine
(docs/node.md, "Demo (wattmesh demo)").

:func:`run_demo` makes a key, a simulated meter and a threshold bot per household, writes
one community file with an accelerated clock that starts on a sunny June morning, sets up
a data directory per household (``init_data_dir`` plus a ``node.toml`` listening on a free
loopback port, with the other nodes as bootstrap peers) and starts one ``wattmesh node``
process per household. It follows their ``status.json`` files until every node has settled
the last interval, stops them (SIGTERM; each must exit 0), then opens every ledger:
``verify()`` must pass and every interval's ``interval_close`` hash must be the same at
every node. It returns a :class:`DemoResult` (data only); :func:`format_interval` and
:func:`format_report` turn it into text and rich tables.

Every process it starts is stopped again on every way out (SIGTERM, SIGKILL after a
timeout), Ctrl-C and errors included; on Linux a node also gets SIGTERM if the demo
process itself dies.

Savings: each household is compared with a grid-alone twin that has the same meter
readings and the same ``bmax`` storage, starting from the same opening energy, but no
market (:func:`fold_ledger`). Cost = grid imports at retail - exports at feed-in + money
paid for trades - money received + fees. A run of a few hours leaves the market household
and its twin with different amounts of energy in storage (a buyer has filled its storage, a
seller has emptied it), so the savings also count that difference at the run's average
trade price: energy bought and still held is worth what it cost in the market.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from wattmesh.exchange import clock
from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec, dump_community
from wattmesh.exchange.node.config import (
    DEFAULT_FILES,
    BotConfig,
    MeterConfig,
    init_data_dir,
    write_node_config,
)
from wattmesh.exchange.units import MICRO, NANO, price_text
from wattmesh.meters.simulated import DEFAULT_SITE, SITES
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.keys import generate_key, peer_id_of, save_key
from wattmesh.settlement.ledger import Ledger, LedgerEntry
from wattmesh.settlement.readings import apply_reading

__all__ = [
    "Contention",
    "DemoError",
    "DemoResult",
    "HouseholdAccount",
    "HouseholdSetup",
    "IntervalReport",
    "LedgerAccounts",
    "NodeReport",
    "SUNNY_START_MS",
    "fold_ledger",
    "format_interval",
    "format_report",
    "plan_households",
    "run_demo",
]

INTERVAL_MS = clock.DEFAULT_INTERVAL_MS  # 15-minute intervals
# 2026-06-21 15:00 UTC: 10:00 at the simulated meters' site (Greensboro, UTC-5, docs/
# meters-sim.md), a sunny June morning, so the PV households have energy to sell.
SUNNY_START_MS = int(datetime(2026, 6, 21, 15, 0, tzinfo=UTC).timestamp() * 1000)
SITE_OFFSET_MS = SITES[DEFAULT_SITE].utc_offset_h * 3_600_000  # the builtin meter's site
OPENING_MONEY = 50 * NANO  # 50.00 each: far more than two hours of bids and bills
FULL_MESH_MAX = 8  # up to this many nodes every node dials every other
MESH_DEGREE = 4  # above it, each node dials this many others (its ring neighbour included)
STOP_TIMEOUT_S = 20.0  # how long a node may take to exit after SIGTERM
STATUS = "status.json"  # the node's status file (exchange/node/household.py writes it)
STDERR = "node.stderr"  # the node's stderr: its log lines (as node.log) and any traceback


class DemoError(WattmeshError, RuntimeError):
    """The demo could not run to the end (a node died, a timeout, a bad option). ``tail``:
    the last lines a node wrote, when one is to blame."""

    def __init__(self, message: str, tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tail = tuple(tail)
        self.root: Path | None = None  # the kept data directories, once known


# -- the households -----------------------------------------------------------------------


@dataclass(frozen=True)
class HouseholdSetup:
    """One demo household: its meter, storage, opening balances and bot."""

    name: str
    pv_peak_w: int  # 0: no PV
    annual_kwh: int
    meter_seed: int
    bmax: int  # Wh
    energy: int  # opening energy, Wh
    money: int  # opening money, nano
    bot: BotConfig

    @property
    def meter(self) -> MeterConfig:
        return MeterConfig(
            source="simulated",
            peak_w=self.pv_peak_w,
            annual_kwh=self.annual_kwh,
            seed=self.meter_seed,
            backend="builtin",
        )

    def describe(self) -> str:
        pv = f"PV {self.pv_peak_w / 1000:.1f} kWp" if self.pv_peak_w else "no PV     "
        b = self.bot
        return (
            f"{pv}  uses {self.annual_kwh:,} kWh/yr  storage {self.bmax / 1000:.1f} kWh, "
            f"opens with {self.energy / 1000:.1f}; bot buys below {b.lower_wh / 1000:.1f} kWh "
            f"at {b.buy_price / MICRO:.2f}, sells above {b.upper_wh / 1000:.1f} kWh at "
            f"{b.sell_price / MICRO:.2f}"
        )


def plan_households(n: int, seed: int = 0) -> list[HouseholdSetup]:
    """``n`` households, the same for the same seed. Even indexes (house-1, house-3, ...)
    have PV and open with storage 85% full, above their bot's upper threshold (60% of
    bmax), so they offer energy at once; the others have no PV and open with empty
    storage, below the lower threshold (30%), so they bid at once. Bid prices (0.15-0.20)
    are all above ask prices (0.10-0.14): the first auction with both sides trades."""
    rng = random.Random(f"wattmesh-demo:{seed}")
    out = []
    for i in range(n):
        pv = i % 2 == 0
        bmax = rng.randrange(6000, 10_001, 500)
        lower, upper = bmax * 30 // 100, bmax * 60 // 100
        energy = bmax * 85 // 100 if pv else 0
        out.append(
            HouseholdSetup(
                name=f"house-{i + 1}",
                pv_peak_w=rng.randrange(4000, 6001, 100) if pv else 0,
                annual_kwh=rng.randrange(3000, 4501, 100),
                meter_seed=seed * 1000 + i,
                bmax=bmax,
                energy=energy,
                money=OPENING_MONEY,
                bot=BotConfig(
                    enabled=True,
                    buy_price=rng.randrange(150_000, 200_001, 5_000),
                    sell_price=rng.randrange(100_000, 140_001, 5_000),
                    lower_wh=lower,
                    upper_wh=upper,
                ),
            )
        )
    return out


def bootstrap_peers(n: int, seed: int = 0) -> list[list[int]]:
    """Whom each node dials: every other node for ``n <= 8``; above that its ring
    neighbour and 3 others drawn with ``seed`` (the ring keeps the mesh connected)."""
    if n <= FULL_MESH_MAX:
        return [[j for j in range(n) if j != i] for i in range(n)]
    rng = random.Random(f"wattmesh-demo-mesh:{seed}")
    out = []
    for i in range(n):
        ring = (i + 1) % n
        others = [j for j in range(n) if j not in (i, ring)]
        out.append([ring, *sorted(rng.sample(others, MESH_DEGREE - 1))])
    return out


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- reading a ledger: per household, per interval, and the grid-alone twin ---------------


@dataclass
class HouseholdAccount:
    """One household's flows over the run, from the ledger (Wh and nano), and its
    grid-alone twin's: the same readings folded into the same ``bmax`` storage from the
    same opening energy, without trades."""

    owner: str
    bmax: int = 0
    opening_energy: int = 0
    produced: int = 0
    consumed: int = 0
    bought: int = 0
    sold: int = 0
    paid: int = 0
    received: int = 0
    imported: int = 0
    exported: int = 0
    import_cost: int = 0  # imported * retail
    export_credit: int = 0  # exported * feed-in
    fees: int = 0
    energy: int = 0  # held at the end
    alone_imported: int = 0
    alone_exported: int = 0
    alone_import_cost: int = 0
    alone_export_credit: int = 0
    alone_energy: int = 0

    @property
    def cost(self) -> int:
        """With the market: grid bill less feed-in credit, plus trades and fees (nano)."""
        return self.import_cost - self.export_credit + self.paid - self.received + self.fees

    @property
    def alone_cost(self) -> int:
        """The grid-alone twin's grid bill less its feed-in credit (nano)."""
        return self.alone_import_cost - self.alone_export_credit

    def held_value(self, price: int) -> int:
        """What the energy held above the twin's at the end is worth at ``price``
        (micro-currency per kWh = nano per Wh); negative when the twin holds more."""
        return (self.energy - self.alone_energy) * price

    def savings(self, price: int) -> int:
        """The twin's cost less the market cost, plus :meth:`held_value` (nano)."""
        return self.alone_cost - self.cost + self.held_value(price)


@dataclass
class IntervalStats:
    """One settled interval of a ledger."""

    interval: int
    price: int | None = None  # the clearing price (micro per kWh); None: no trade
    volume: int = 0  # Wh
    money: int = 0  # nano
    trades: int = 0
    readings: int = 0
    digest: str | None = None  # the interval_close hash, hex

    def count(self, kind: str, body: dict[str, Any]) -> None:
        """Count one of the interval's ledger entries: a trade or a reading (others: no-op)."""
        if kind == "reading":
            self.readings += 1
        elif kind == "trade":
            self.price = body["price"]
            self.volume += body["qty"]
            self.money += body["qty"] * body["price"]
            self.trades += 1


@dataclass
class LedgerAccounts:
    """:func:`fold_ledger`'s result."""

    retail: int
    feedin: int
    households: dict[str, HouseholdAccount]  # by peer id, in ledger (peer id) order
    intervals: dict[int, IntervalStats]

    @property
    def volume(self) -> int:
        return sum(s.volume for s in self.intervals.values())

    @property
    def value_price(self) -> int:
        """The run's volume-weighted trade price (micro per kWh); 0 without trades (then
        every household holds what its twin holds)."""
        vol = self.volume
        return sum(s.money for s in self.intervals.values()) // vol if vol else 0


def fold_ledger(entries: Iterable[LedgerEntry], through: int | None = None) -> LedgerAccounts:
    """Fold a ledger's entries (up to the interval ``through``, or all) into per-household
    flows, each with its grid-alone twin, and per-interval trade statistics."""
    g: dict[str, Any] | None = None
    hs: dict[str, HouseholdAccount] = {}
    meters: dict[str, str] = {}
    ivs: dict[int, IntervalStats] = {}

    def interval(t: int) -> IntervalStats:
        return ivs.setdefault(t, IntervalStats(t))

    for e in entries:
        if through is not None and e.ts > through:
            break
        b, kind = e.body, e.kind
        if kind == "genesis":
            g = b
        elif kind == "member":
            hs[b["owner"]] = HouseholdAccount(b["owner"], bmax=b["bmax"])
        elif kind == "opening":
            h = hs[b["owner"]]
            h.opening_energy = h.energy = h.alone_energy = b["energy"]
        elif kind == "meter":
            meters[b["meter"]] = b["owner"]
        elif kind == "reading":
            assert g is not None
            h = hs[meters[b["meter"]]]
            p, c = b["produced"], b["consumed"]
            h.produced += p
            h.consumed += c
            retail, feedin = g["retail_price"], g["feedin_price"]
            # The market household: its grid entry (if any) follows as the next entry.
            h.energy = apply_reading(h.energy, h.bmax, p, c, retail, feedin).balance
            twin = apply_reading(h.alone_energy, h.bmax, p, c, retail, feedin)
            h.alone_energy = twin.balance
            h.alone_imported += twin.imported_wh
            h.alone_exported += twin.exported_wh
            h.alone_import_cost += twin.import_charge
            h.alone_export_credit += twin.export_credit
            interval(e.ts).count(kind, b)
        elif kind == "grid_import":
            h = hs[b["owner"]]
            h.imported += b["qty"]
            h.import_cost += b["qty"] * b["price"]
            if "reading" not in b:  # bought into storage, not consumed at once
                h.energy += b["qty"]
        elif kind == "grid_export":
            h = hs[b["owner"]]
            h.exported += b["qty"]
            h.export_credit += b["qty"] * b["price"]
            if "reading" not in b:  # sold out of storage
                h.energy -= b["qty"]
        elif kind == "trade":
            qty, money = b["qty"], b["qty"] * b["price"]
            buyer, seller = hs[b["buyer"]], hs[b["seller"]]
            buyer.bought += qty
            buyer.paid += money
            buyer.energy += qty
            seller.sold += qty
            seller.received += money
            seller.energy -= qty
            interval(b["interval"]).count(kind, b)
        elif kind == "fee":
            if b["owner"] in hs:
                hs[b["owner"]].fees += b["amount"]
        elif kind == "interval_close":
            interval(b["interval"]).digest = e.hash.hex()
    if g is None:
        raise ValueError("the ledger has no genesis entry")
    return LedgerAccounts(g["retail_price"], g["feedin_price"], hs, dict(sorted(ivs.items())))


# -- the node processes -------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a preexec_fn asking the kernel to SIGTERM the child when we die."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return arm


def _tail(path: Path, lines: int = 15) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


@dataclass
class _Node:
    setup: HouseholdSetup
    data_dir: Path
    peer_id: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    err: IO[bytes] | None = None
    stopped_code: int | None = None  # the exit code after our SIGTERM (None: not yet)
    killed: bool = False

    @property
    def name(self) -> str:
        return self.setup.name

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.data_dir / STATUS).read_text())
        except (OSError, ValueError):
            return None

    def tail(self) -> list[str]:
        return _tail(self.data_dir / STDERR)


class _Processes:
    """The node processes: started, watched, and always stopped (context manager)."""

    def __init__(self, nodes: list[_Node]) -> None:
        self.nodes = nodes

    def start(self) -> None:
        arm = _parent_death_signal()
        for n in self.nodes:
            n.err = open(n.data_dir / STDERR, "wb")  # noqa: SIM115 (closed in stop())
            n.proc = subprocess.Popen(
                [sys.executable, "-m", "wattmesh.exchange.cli", "node", "--data-dir",
                 str(n.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=n.err,
                stderr=n.err,
                preexec_fn=arm,  # noqa: PLW1509 (the demo process has no other threads)
            )  # fmt: skip

    def dead(self) -> _Node | None:
        """A node whose process has exited (before we stopped it), or None."""
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is not None:
                return n
        return None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every running node, wait up to ``timeout`` s in all, SIGKILL the rest."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.returncode is None]
        for n in running:
            with contextlib.suppress(ProcessLookupError):
                n.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        for n in running:
            assert n.proc is not None
            try:
                n.stopped_code = n.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.killed = True
                n.proc.kill()
                n.stopped_code = n.proc.wait()
        for n in self.nodes:
            if n.err is not None:
                n.err.close()
                n.err = None

    def __enter__(self) -> _Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=10.0)


class Contention:
    """What a household's box lives with, on purpose: ``busy`` processes spinning on the
    CPU, and every ``every_s`` seconds one node (drawn with ``seed``) stopped with SIGSTOP
    for ``pause_s`` seconds, then continued. Pass it to :func:`run_demo`; ``pauses``
    counts the stops made."""

    def __init__(self, busy: int = 1, every_s: float = 3.0, pause_s: float = 1.0,
                 seed: int = 0) -> None:  # fmt: skip
        self.busy, self.every_s, self.pause_s = busy, every_s, pause_s
        self.rng = random.Random(seed)
        self.pauses = 0
        self._spinners: list[subprocess.Popen[bytes]] = []
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pids: list[int]) -> None:
        spin = "while True: pass"
        self._spinners = [subprocess.Popen([sys.executable, "-c", spin])
                          for _ in range(self.busy)]  # fmt: skip
        self._thread = threading.Thread(target=self._pause_nodes, args=(pids,), daemon=True)
        self._thread.start()

    def _pause_nodes(self, pids: list[int]) -> None:
        while not self._done.wait(self.every_s):
            pid = self.rng.choice(pids)
            try:
                os.kill(pid, signal.SIGSTOP)
                self.pauses += 1
                self._done.wait(self.pause_s)
            except ProcessLookupError:
                continue
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """End the pauses (every node continued) and the busy loops."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        for p in self._spinners:
            p.kill()
            p.wait()
        self._spinners = []


# -- the run ------------------------------------------------------------------------------


@dataclass
class IntervalReport(IntervalStats):
    """An interval once every node settled it: its market, from the first node's ledger,
    and each node's digest (``digests``, filled in after the nodes stopped)."""

    digests: dict[str, str | None] = field(default_factory=dict)

    @property
    def agree(self) -> bool:
        values = set(self.digests.values())
        return bool(self.digests) and len(values) == 1 and None not in values


@dataclass
class NodeReport:
    """One node after the run: its process, ledger check and status.json."""

    name: str
    pid: int | None
    exit_code: int | None
    killed: bool
    verified: bool
    verify: str  # VerifyResult's text: "ok: N entries, head ..." or what is wrong
    head: str  # the ledger's head, "seq:hash"
    agreements: int
    disputed: list[int]
    refusals: dict[str, int]
    peers: int


@dataclass
class DemoResult:
    """What :func:`run_demo` found. ``problems``: one line per failed check (empty: ok)."""

    root: Path
    kept: bool
    households: list[HouseholdSetup]
    peer_ids: dict[str, str]  # name -> peer id
    nodes: list[NodeReport]
    intervals: list[IntervalReport]
    accounts: LedgerAccounts | None  # from the first node's ledger
    wall_seconds: float
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def account(self, name: str) -> HouseholdAccount | None:
        if self.accounts is None:
            return None
        return self.accounts.households.get(self.peer_ids[name])


def clock_speed(seconds_per_interval: float) -> int:
    """The community clock's speed for about this many wall seconds per 15-minute interval."""
    if not 0.5 <= seconds_per_interval <= INTERVAL_MS / 1000:
        raise DemoError(
            f"--seconds-per-interval must be in 0.5..{INTERVAL_MS // 1000}, "
            f"got {seconds_per_interval}"
        )
    return max(1, round(INTERVAL_MS / 1000 / seconds_per_interval))


def startup_seconds(n: int) -> float:
    """How long to give n node processes to start before the clock's origin: a node takes
    2-3 s of CPU to start (mostly imports), and they share the machine's cores."""
    cores = max(1, min(os.cpu_count() or 2, n))
    return 5.0 + 3.0 * n / cores


def _interval_from_db(path: Path, t: int) -> IntervalReport:
    """Interval ``t``'s market from a running node's ledger (read-only: the node writes)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT kind, body FROM entries WHERE ts = ? AND kind IN ('trade', 'reading')",
            (t,),
        ).fetchall()
    finally:
        conn.close()
    report = IntervalReport(t)
    for kind, body in rows:
        report.count(kind, json.loads(body))
    return report


def _clock_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def run_demo(
    households: int = 4,
    hours: int = 2,
    *,
    seconds_per_interval: float = 2.5,
    seed: int = 0,
    directory: Path | None = None,
    keep: bool = False,
    start_ms: int = SUNNY_START_MS,
    on_line: Callable[[str], None] | None = None,
    on_interval: Callable[[IntervalReport], None] | None = None,
    contention: Contention | None = None,
) -> DemoResult:
    """Run ``households`` nodes for ``hours`` hours of 15-minute intervals; see the module
    docstring. ``on_line`` gets progress text, ``on_interval`` each interval once every
    node settled it. Raises :class:`DemoError` when the run cannot finish (a node died,
    a timeout); the checks that fail afterwards are :attr:`DemoResult.problems`.
    ``directory`` keeps the data directories there (it must be empty or new); without
    it they go to a temporary directory, removed at the end unless ``keep`` or the run
    failed. With ``contention`` the nodes run under it from their start until the last
    interval is settled everywhere."""
    say = on_line or (lambda _line: None)
    if households < 2:
        raise DemoError(
            f"--households must be at least 2 (someone to trade with), got {households}"
        )
    if hours < 1:
        raise DemoError(f"--hours must be at least 1, got {hours}")
    speed = clock_speed(seconds_per_interval)
    if start_ms % INTERVAL_MS:
        raise DemoError(f"the start {start_ms} is not the start of a 15-minute interval")
    if directory is not None:
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise DemoError(f"--dir {directory}: not an empty directory")
        directory.mkdir(parents=True, exist_ok=True)
        root, temporary = directory, False
    else:
        root, temporary = Path(tempfile.mkdtemp(prefix="wattmesh-demo-")), True
    began = time.monotonic()
    try:
        result = _run(root, households, hours, speed, seed, start_ms, say, on_interval,
                      contention)  # fmt: skip
    except KeyboardInterrupt:
        if temporary and not keep:  # interrupted: nothing to look at
            shutil.rmtree(root, ignore_errors=True)
        raise
    except DemoError as exc:
        exc.root = root  # kept: the nodes' logs say what went wrong
        raise
    failed = not result.ok
    if temporary and not keep and not failed:
        shutil.rmtree(root, ignore_errors=True)
    result.kept = not temporary or keep or failed
    result.wall_seconds = time.monotonic() - began
    return result


def _follow(
    nodes: list[_Node],
    procs: _Processes,
    origin_ms: int,
    start_ms: int,
    last: int,
    spi: float,
    startup: float,
    say: Callable[[str], None],
    on_interval: Callable[[IntervalReport], None] | None,
) -> list[IntervalReport]:
    """Watch the nodes until every one settled ``last``: the intervals, in order.
    DemoError when a node dies or the run takes far too long."""
    n = len(nodes)
    count = (last - start_ms) // INTERVAL_MS + 1
    deadline = time.monotonic() + startup + (count + 2) * spi + max(30.0, 5 * spi)
    intervals: list[IntervalReport] = []
    listening = False
    t = start_ms
    while t <= last:
        dead = procs.dead()
        if dead is not None:
            assert dead.proc is not None
            raise DemoError(
                f"node {dead.name} (pid {dead.proc.pid}) exited early with code "
                f"{dead.proc.returncode}; the end of {dead.data_dir / STDERR}:",
                dead.tail(),
            )
        statuses = [x.status() for x in nodes]
        if not listening and all(s is not None for s in statuses):
            listening = True
            late = time.time() - origin_ms / 1000
            say(
                f"all {n} nodes listening "
                + (f"({-late:.1f} s before the clock starts)" if late < 0 else
                   f"({late:.1f} s after the clock started: they catch up from peers)")
            )  # fmt: skip
        settled = [(s or {}).get("settled_through") for s in statuses]
        while t <= last and all(v is not None and v >= t for v in settled):
            report = _interval_from_db(nodes[0].data_dir / DEFAULT_FILES["ledger"], t)
            intervals.append(report)
            if on_interval is not None:
                on_interval(report)
            t += INTERVAL_MS
        if t > last:
            break
        if time.monotonic() > deadline:
            behind = min(range(n), key=lambda i: -1 if settled[i] is None else settled[i])
            x = nodes[behind]
            got = "nothing" if settled[behind] is None else _clock_text(settled[behind])
            raise DemoError(
                f"timed out: interval {_clock_text(t)} is not settled by every node "
                f"({x.name} settled through {got}); the end of {x.data_dir / STDERR}:",
                x.tail(),
            )
        time.sleep(0.1)
    return intervals


def _run(
    root: Path,
    n: int,
    hours: int,
    speed: int,
    seed: int,
    start_ms: int,
    say: Callable[[str], None],
    on_interval: Callable[[IntervalReport], None] | None,
    contention: Contention | None = None,
) -> DemoResult:
    count = hours * 3_600_000 // INTERVAL_MS
    last = start_ms + (count - 1) * INTERVAL_MS
    spi = INTERVAL_MS / 1000 / speed
    plan = plan_households(n, seed)
    keys = [generate_key() for _ in range(n)]
    meter_keys = [generate_key() for _ in range(n)]
    ports = free_ports(n)
    members = tuple(
        MemberSpec(
            peer_id_of(k), bmax=h.bmax, money=h.money, energy=h.energy, name=h.name,
            meters=(MeterSpec(peer_id_of(mk)),),
        )
        for h, k, mk in zip(plan, keys, meter_keys, strict=True)
    )  # fmt: skip
    # The clock starts once the processes had time to start; a late node catches up from
    # its peers.
    startup = startup_seconds(n)
    origin_ms = int(time.time() * 1000 + startup * 1000)
    community = Community(
        name="wattmesh-demo",
        start_ms=start_ms,
        clock_speed=speed,
        clock_origin_ms=origin_ms,
        members=members,
    )
    community_file = root / DEFAULT_FILES["community"]
    community_file.write_text(dump_community(community))
    nodes: list[_Node] = []
    for h, k, mk, port in zip(plan, keys, meter_keys, ports, strict=True):
        d = root / h.name
        d.mkdir(mode=0o700)
        save_key(d / DEFAULT_FILES["key"], k)
        save_key(d / h.meter.key, mk)
        init_data_dir(community_file, d)
        nodes.append(_Node(h, d, peer_id_of(k), port))
    addrs = [f"/ip4/127.0.0.1/tcp/{x.port}/p2p/{x.peer_id}" for x in nodes]
    for x, peers in zip(nodes, bootstrap_peers(n, seed), strict=True):
        write_node_config(
            x.data_dir,
            listen=f"/ip4/127.0.0.1/tcp/{x.port}",
            bootstrap=[addrs[j] for j in peers],
            bot=x.setup.bot,
            meter=x.setup.meter,
        )

    when = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    say(
        f"wattmesh demo: {n} households, {hours} h = {count} intervals of 15 min from "
        f"{when} ({_clock_text(start_ms + SITE_OFFSET_MS)} at the simulated meters' site), "
        f"{spi:.2f} s per interval (clock x{speed}), seed {seed}"
    )
    say(f"data directories in {root}")
    for x in nodes:
        say(f"  {x.name}  127.0.0.1:{x.port}  {x.setup.describe()}")
    with _Processes(nodes) as procs:
        procs.start()
        say(
            "started "
            + ", ".join(f"{x.name} pid {x.proc.pid}" for x in nodes)  # type: ignore[union-attr]
            + f"; the community clock starts in {origin_ms / 1000 - time.time():.0f} s"
        )
        if contention is not None:
            contention.start([x.proc.pid for x in nodes])  # type: ignore[union-attr]
        try:
            intervals = _follow(nodes, procs, origin_ms, start_ms, last, spi, startup, say,
                                on_interval)  # fmt: skip
        finally:
            if contention is not None:
                contention.stop()
        say(f"every node settled {_clock_text(last)}; stopping the nodes (SIGTERM)")
        procs.stop()

    # The checks, on the stopped nodes' files.
    problems: list[str] = []
    reports: list[NodeReport] = []
    closes: dict[str, dict[int, str]] = {}
    accounts: LedgerAccounts | None = None
    for x in nodes:
        status = x.status() or {}
        assert x.proc is not None
        if x.killed:
            problems.append(f"{x.name} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM")
        elif x.stopped_code != 0:
            problems.append(f"{x.name} exited with code {x.stopped_code} when stopped")
        with Ledger.open(x.data_dir / DEFAULT_FILES["ledger"], create=False) as led:
            res = led.verify()
            closes[x.name] = {
                e.body["interval"]: e.hash.hex() for e in led.entries(kind="interval_close")
            }
            if x is nodes[0]:  # the report's market and households: the first node's
                accounts = fold_ledger(led.entries(), through=last)
        if not res.ok:
            problems.append(f"{x.name}'s ledger does not verify: {res}")
        reports.append(
            NodeReport(
                name=x.name,
                pid=x.proc.pid,
                exit_code=x.stopped_code,
                killed=x.killed,
                verified=res.ok,
                verify=str(res),
                head=res.head,
                agreements=status.get("agreements", 0),
                disputed=list(status.get("disputed", [])),
                refusals=dict(status.get("refusals", {})),
                peers=status.get("peers", 0),
            )
        )
    for iv in intervals:
        iv.digests = {x.name: closes[x.name].get(iv.interval) for x in nodes}
    differ = [iv for iv in intervals if not iv.agree]
    if differ:
        first = differ[0]
        shown = ", ".join(f"{k} {(v or 'none')[:12]}" for k, v in first.digests.items())
        problems.append(
            f"digests differ in {len(differ)} of {len(intervals)} intervals, first at "
            f"{_clock_text(first.interval)}: {shown}"
        )
    return DemoResult(
        root=root,
        kept=False,
        households=plan,
        peer_ids={x.name: x.peer_id for x in nodes},
        nodes=reports,
        intervals=intervals,
        accounts=accounts,
        wall_seconds=0.0,
        problems=problems,
    )


# -- text ---------------------------------------------------------------------------------


def _kwh(wh: int) -> str:
    return f"{wh / 1000:,.2f}"


def _money(nano: int) -> str:
    return f"{nano / NANO:,.4f}"


def format_interval(iv: IntervalReport) -> str:
    """One progress line: community time, price per kWh, volume, trades, readings."""
    market = (
        f"price {price_text(iv.price)}/kWh  volume {iv.volume / 1000:6.3f} kWh  "
        f"{iv.trades} trade{'s' if iv.trades != 1 else ''}"
        if iv.trades
        else "no trades"
    )
    return f"  {_clock_text(iv.interval)} UTC  {market:<44}  {iv.readings} readings"


_SUMMED = tuple(f for f in HouseholdAccount.__dataclass_fields__ if f not in ("owner", "bmax"))


def format_report(result: DemoResult) -> list[Any]:
    """The report as rich renderables: intervals, energy, money, nodes, the verdict."""
    from rich.table import Table

    accounts = result.accounts
    price = accounts.value_price if accounts is not None else 0
    total = HouseholdAccount("all")  # the households' sums
    out: list[Any] = []

    ivt = Table(title="Intervals", title_justify="left")
    for name in ("UTC", "price/kWh", "kWh", "trades", "readings", "digest", "agree"):
        ivt.add_column(name, justify="left" if name in ("digest", "UTC") else "right")
    for iv in result.intervals:
        digest = next((d for d in iv.digests.values() if d), None)
        agreeing = sum(1 for d in iv.digests.values() if d is not None and d == digest)
        ivt.add_row(
            _clock_text(iv.interval), price_text(iv.price), _kwh(iv.volume), str(iv.trades),
            str(iv.readings), (digest or "-")[:12],
            f"{agreeing}/{len(iv.digests)}" if iv.agree else f"[red]{agreeing}/{len(iv.digests)}",
        )  # fmt: skip
    out.append(ivt)

    if accounts is not None:
        energy = Table(title="Energy per household (kWh)", title_justify="left")
        for name in ("", "PV kWp", "produced", "consumed", "bought", "sold", "imported",
                     "exported"):  # fmt: skip
            energy.add_column(name, justify="left" if not name else "right")
        money = Table(title="Money per household (currency units)", title_justify="left")
        for name in ("", "market\ncost", "alone\ncost", "held\nkWh", "alone\nheld",
                     "held\nvalue", "savings"):  # fmt: skip
            money.add_column(name, justify="left" if not name else "right")
        for h in result.households:
            a = result.account(h.name)
            if a is None:
                continue
            pv = f"{h.pv_peak_w / 1000:.1f}" if h.pv_peak_w else "-"
            energy.add_row(
                h.name, pv, _kwh(a.produced), _kwh(a.consumed), _kwh(a.bought), _kwh(a.sold),
                _kwh(a.imported), _kwh(a.exported),
            )  # fmt: skip
            money.add_row(
                h.name, _money(a.cost), _money(a.alone_cost), _kwh(a.energy),
                _kwh(a.alone_energy), _money(a.held_value(price)), _money(a.savings(price)),
            )  # fmt: skip
            for f in _SUMMED:
                setattr(total, f, getattr(total, f) + getattr(a, f))
        energy.add_row(
            "all", "", _kwh(total.produced), _kwh(total.consumed), _kwh(total.bought),
            _kwh(total.sold), _kwh(total.imported), _kwh(total.exported), style="bold",
        )  # fmt: skip
        money.add_row(
            "all", _money(total.cost), _money(total.alone_cost), _kwh(total.energy),
            _kwh(total.alone_energy), _money(total.held_value(price)),
            _money(total.savings(price)), style="bold",
        )  # fmt: skip
        out += [
            energy,
            money,
            "alone: the household's grid-alone twin: the same readings and storage,"
            " no market\n"
            "cost: grid bill - feed-in credit + paid for trades - received + fees\n"
            "held value: the energy held at the end beyond the twin's, at the run's\n"
            f"  average trade price {price_text(price)}/kWh\n"
            "savings: alone cost - market cost + held value\n",
        ]

    nodes = Table(title="Nodes", title_justify="left")
    for name in ("", "pid", "exit", "peers", "agreements", "disputed", "refusals", "ledger"):
        nodes.add_column(name, justify="left" if name in ("", "refusals", "ledger") else "right")
    for r in result.nodes:
        refusals = ", ".join(f"{k} {v}" for k, v in sorted(r.refusals.items())) or "0"
        nodes.add_row(
            r.name, str(r.pid), "killed" if r.killed else str(r.exit_code), str(r.peers),
            str(r.agreements), str(len(r.disputed)), refusals,
            "verified" if r.verified else f"[red]{r.verify}",
        )  # fmt: skip
    out.append(nodes)

    n = len(result.nodes)
    verified = sum(1 for r in result.nodes if r.verified)
    agreeing = sum(1 for iv in result.intervals if iv.agree)
    stopped = sum(1 for r in result.nodes if r.exit_code == 0 and not r.killed)
    head = result.nodes[0].head[:24] if verified else "-"
    lines = [
        f"ledgers: {verified} of {n} verified (head {head}...)",
        f"digests: {agreeing} of {len(result.intervals)} intervals identical at all {n} nodes",
        f"nodes: {stopped} of {n} exited 0 on SIGTERM",
    ]
    if accounts is not None:
        trades = sum(s.trades for s in accounts.intervals.values())
        lines.append(
            f"traded: {accounts.volume / 1000:,.3f} kWh in {trades} trades at an average "
            f"{price_text(price)}/kWh"
        )
        lines.append(
            f"savings against the grid alone: {_money(total.savings(price))} for the community"
        )
    out.append("\n".join(lines))
    return out
