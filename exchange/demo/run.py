"""``wattmesh demo``: a small community of real household nodes on this machine
(docs/node.md, "Demo (wattmesh demo)").

:func:`run_demo` makes a key, a simulated meter and a threshold bot per household, writes
one community file with an accelerated clock that starts on a sunny June morning, sets up
a data directory per household (``init_data_dir`` plus a ``node.toml`` listening on a free
loopback port, with the other nodes as bootstrap peers) and starts one ``wattmesh node``
process per household. It follows their ``status.json`` files until every node has settled
the last interval, stops them (SIGTERM; each must exit 0), then opens every ledger:
``verify()`` must pass and every interval's ``interval_close`` hash must be the same at
every node. The first household's threshold bot runs as its own ``wattmesh bot``
process, trading through its node's HTTP API; the others' run inside their nodes. It
returns a :class:`DemoResult` (data only); :func:`format_interval` and
:func:`format_report` turn it into text and rich tables. Each node also serves its web page
and API on its own loopback port; once they listen the demo prints each page's address
with a one-time login code, and with ``linger`` the community keeps running after the last
interval until Ctrl-C, so that a person can watch the pages.

Every process it starts is stopped again on every way out (SIGTERM, SIGKILL after a
timeout), Ctrl-C and errors included; on Linux a node also gets SIGTERM if the demo
process itself dies. What it sets up is :mod:`.plan`, the savings :mod:`.accounts`, the
text :mod:`.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from wattmesh.exchange.api.tokens import ensure_token
from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec, dump_community
from wattmesh.exchange.demo.accounts import (
    HouseholdAccount,
    IntervalStats,
    LedgerAccounts,
    fold_ledger,
)
from wattmesh.exchange.demo.plan import (
    BOT_LOG,
    DEMO_CURRENCY,
    EXTERNAL_BOT,
    INTERVAL_MS,
    SITE_OFFSET_MS,
    STATUS,
    STDERR,
    STOP_TIMEOUT_S,
    SUNNY_START_MS,
    HouseholdSetup,
    bootstrap_peers,
    clock_text,
    free_ports,
    plan_households,
)
from wattmesh.exchange.node.config import (
    DEFAULT_FILES,
    ApiConfig,
    init_data_dir,
    write_node_config,
)
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.keys import Ed25519PrivateKey, generate_key, peer_id_of, save_key
from wattmesh.settlement.ledger import Ledger

__all__ = [
    "Contention",
    "DemoError",
    "DemoResult",
    "IntervalReport",
    "NodeReport",
    "clock_speed",
    "parent_death_signal",
    "read_status",
    "run_demo",
    "set_up_household",
    "terminate_all",
    "startup_seconds",
]


class DemoError(WattmeshError, RuntimeError):
    """The demo could not run to the end (a node died, a timeout, a bad option). ``tail``:
    the last lines a node wrote, when one is to blame."""

    def __init__(self, message: str, tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tail = tuple(tail)
        self.root: Path | None = None  # the kept data directories, once known


# -- the node processes -------------------------------------------------------------------


def parent_death_signal() -> Callable[[], None] | None:
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


def terminate_all(
    procs: list[subprocess.Popen[bytes]], timeout: float
) -> list[tuple[int, bool]]:
    """SIGTERM every process, wait up to ``timeout`` s in all, SIGKILL the rest: each
    one's (exit code, whether it was killed)."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    ended = []
    for proc in procs:
        try:
            ended.append((proc.wait(max(0.0, deadline - time.monotonic())), False))
        except subprocess.TimeoutExpired:
            proc.kill()
            ended.append((proc.wait(), True))
    return ended


def set_up_household(root: Path, h: HouseholdSetup, key: Ed25519PrivateKey,
                     meter_key: Ed25519PrivateKey, community_file: Path) -> Path:  # fmt: skip
    """``root/<name>`` made as a household would: its keys, ``init`` with the community
    file, the API token. node.toml is the caller's to write."""
    d = root / h.name
    d.mkdir(mode=0o700)
    save_key(d / DEFAULT_FILES["key"], key)
    save_key(d / h.meter.key, meter_key)
    init_data_dir(community_file, d)
    ensure_token(d)
    return d


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """A node's ``status.json`` (None until the node has written it, or mid-replace)."""
    try:
        return json.loads((data_dir / STATUS).read_text())
    except (OSError, ValueError):
        return None


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
    api_port: int
    proc: subprocess.Popen[bytes] | None = None
    err: IO[bytes] | None = None
    stopped_code: int | None = None  # the exit code after our SIGTERM (None: not yet)
    killed: bool = False

    @property
    def name(self) -> str:
        return self.setup.name

    def status(self) -> dict[str, Any] | None:
        return read_status(self.data_dir)

    def tail(self) -> list[str]:
        return _tail(self.data_dir / STDERR)

    @property
    def page(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/"

    def login_code(self, timeout: float = 5.0) -> str | None:
        """A one-time login code from the node's API (None if it does not answer in
        ``timeout`` s: the API starts just after the node)."""
        import httpx

        token = ensure_token(self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"{self.page}api/v1/login-codes", timeout=1.0,
                               headers={"authorization": f"Bearer {token}"})  # fmt: skip
                if r.status_code == 200:
                    return str(r.json()["code"])
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return None


class _Processes:
    """The node processes and the external bot: started, watched, and always stopped
    (context manager)."""

    def __init__(self, nodes: list[_Node]) -> None:
        self.nodes = nodes
        self.bot: subprocess.Popen[bytes] | None = None
        self.bot_log: IO[bytes] | None = None
        self.bot_code: int | None = None  # its exit code after our SIGTERM

    def start(self) -> None:
        arm = parent_death_signal()
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

    def start_bot(self, n: _Node) -> None:
        """Run ``n``'s threshold bot as ``wattmesh bot``, trading through ``n``'s API."""
        b = n.setup.bot
        self.bot_log = open(n.data_dir / BOT_LOG, "wb")  # noqa: SIM115 (closed in stop())
        self.bot = subprocess.Popen(
            [sys.executable, "-m", "wattmesh.exchange.cli", "bot", "--strategy", "threshold",
             "--api", n.page.rstrip("/"), "--token-file", str(n.data_dir / "api-token"),
             "--buy-price", str(b.buy_price), "--sell-price", str(b.sell_price),
             "--lower-wh", str(b.lower_wh), "--upper-wh", str(b.upper_wh)],
            stdin=subprocess.DEVNULL, stdout=self.bot_log, stderr=self.bot_log,
            preexec_fn=parent_death_signal(),  # noqa: PLW1509
        )  # fmt: skip

    def dead(self) -> _Node | None:
        """A node whose process has exited (before we stopped it), or None."""
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is not None:
                return n
        return None

    def bot_died(self) -> int | None:
        """The external bot's exit code if it ended before we stopped it."""
        return None if self.bot is None or self.bot_code is not None else self.bot.poll()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the bot and every running node, wait up to ``timeout`` s in all,
        SIGKILL the rest."""
        if self.bot is not None and self.bot_code is None:
            if self.bot.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.bot.send_signal(signal.SIGTERM)
            try:
                self.bot_code = self.bot.wait(timeout)
            except subprocess.TimeoutExpired:
                self.bot.kill()
                self.bot_code = self.bot.wait()
        if self.bot_log is not None:
            self.bot_log.close()
            self.bot_log = None
        running = [n for n in self.nodes if n.proc is not None and n.proc.returncode is None]
        ended = terminate_all([n.proc for n in running], timeout)  # type: ignore[misc]
        for n, (code, killed) in zip(running, ended, strict=True):
            n.stopped_code, n.killed = code, killed
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
    currency: str | None = None  # how the report shows money (the community file's)

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
    linger: bool = False,
) -> DemoResult:
    """Run ``households`` nodes for ``hours`` hours of 15-minute intervals; see the module
    docstring. ``on_line`` gets progress text, ``on_interval`` each interval once every
    node settled it. Raises :class:`DemoError` when the run cannot finish (a node died,
    a timeout); the checks that fail afterwards are :attr:`DemoResult.problems`.
    ``directory`` keeps the data directories there (it must be empty or new); without
    it they go to a temporary directory, removed at the end unless ``keep`` or the run
    failed. With ``contention`` the nodes run under it from their start until the last
    interval is settled everywhere. With ``linger`` the nodes keep running after that until
    Ctrl-C (KeyboardInterrupt), then stop and are checked as usual."""
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
                      contention, linger)  # fmt: skip
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
            for x in nodes:
                code = x.login_code()
                say(f"  {x.name}  web page {x.page}  " + (
                    f"login code {code}" if code is not None else
                    f"(login code: wattmesh api login-code --data-dir {x.data_dir})"))  # fmt: skip
            x = nodes[EXTERNAL_BOT]
            procs.start_bot(x)
            assert procs.bot is not None
            say(f"{x.name} trades through `wattmesh bot` (pid {procs.bot.pid}) over its "
                f"node's API; its lines are in {x.data_dir / BOT_LOG}")  # fmt: skip
        bot_code = procs.bot_died()
        if bot_code is not None:
            x = nodes[EXTERNAL_BOT]
            raise DemoError(f"{x.name}'s `wattmesh bot` exited early with code {bot_code}; "
                            f"the end of {x.data_dir / BOT_LOG}:", _tail(x.data_dir / BOT_LOG))
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
            got = "nothing" if settled[behind] is None else clock_text(settled[behind])
            raise DemoError(
                f"timed out: interval {clock_text(t)} is not settled by every node "
                f"({x.name} settled through {got}); the end of {x.data_dir / STDERR}:",
                x.tail(),
            )
        time.sleep(0.1)
    return intervals


def _linger(procs: _Processes, say: Callable[[str], None]) -> None:
    """Keep the community running until Ctrl-C (or a node dies)."""
    say("the community keeps running: open the pages above; Ctrl-C stops it")
    try:
        while procs.dead() is None and procs.bot_died() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:  # the terminal's Ctrl-C reaches the nodes too: they stop
        say("stopping")
        return
    dead = procs.dead()
    if dead is not None:
        assert dead.proc is not None
        raise DemoError(f"node {dead.name} exited with code {dead.proc.returncode} while "
                        "lingering", dead.tail())  # fmt: skip
    raise DemoError(f"the external `wattmesh bot` exited with code {procs.bot_died()} "
                    "while lingering")


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
    linger: bool = False,
) -> DemoResult:
    count = hours * 3_600_000 // INTERVAL_MS
    last = start_ms + (count - 1) * INTERVAL_MS
    spi = INTERVAL_MS / 1000 / speed
    plan = plan_households(n, seed)
    keys = [generate_key() for _ in range(n)]
    meter_keys = [generate_key() for _ in range(n)]
    ports = free_ports(2 * n)  # libp2p's, then the APIs'
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
        currency=DEMO_CURRENCY,
        members=members,
    )
    community_file = root / DEFAULT_FILES["community"]
    community_file.write_text(dump_community(community))
    nodes: list[_Node] = []
    for h, k, mk, port, api_port in zip(plan, keys, meter_keys, ports[:n], ports[n:],
                                        strict=True):  # fmt: skip
        d = set_up_household(root, h, k, mk, community_file)
        nodes.append(_Node(h, d, peer_id_of(k), port, api_port))
    addrs = [f"/ip4/127.0.0.1/tcp/{x.port}/p2p/{x.peer_id}" for x in nodes]
    for x, peers in zip(nodes, bootstrap_peers(n, seed), strict=True):
        write_node_config(
            x.data_dir,
            listen=f"/ip4/127.0.0.1/tcp/{x.port}",
            bootstrap=[addrs[j] for j in peers],
            # The external bot trades for this household; the node's own one stays off.
            bot=dataclasses.replace(x.setup.bot, enabled=False) if x is nodes[EXTERNAL_BOT]
            else x.setup.bot,
            meter=x.setup.meter,
            api=ApiConfig(f"127.0.0.1:{x.api_port}"),
        )

    when = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    say(
        f"wattmesh demo: {n} households, {hours} h = {count} intervals of 15 min from "
        f"{when} ({clock_text(start_ms + SITE_OFFSET_MS)} at the simulated meters' site), "
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
        if linger:
            _linger(procs, say)
        say(f"every node settled {clock_text(last)}; stopping the nodes (SIGTERM)")
        procs.stop()

    # The checks, on the stopped nodes' files.
    problems: list[str] = []
    if procs.bot_code != 0:
        problems.append(f"{nodes[EXTERNAL_BOT].name}'s `wattmesh bot` exited with code "
                        f"{procs.bot_code} when stopped")  # fmt: skip
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
            f"{clock_text(first.interval)}: {shown}"
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
        currency=community.currency,
    )
