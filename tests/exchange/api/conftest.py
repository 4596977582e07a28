"""A street of two real nodes (alice and bob) on 127.0.0.1 with alice's API served the way
``wattmesh node`` serves it, and an httpx client for it. Community time runs 450x
(one 15-minute interval in 2 wall seconds)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from wattmesh.exchange.api.serve import RunningApi, serve_api
from wattmesh.exchange.api.tokens import ensure_token
from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec
from wattmesh.exchange.demo.plan import free_ports
from wattmesh.exchange.node.config import ApiConfig, BotConfig, write_node_config
from wattmesh.exchange.node.household import HouseholdNode
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.exchange.node.wire import ORDERS
from wattmesh.settlement.keys import Ed25519PrivateKey, peer_id_of
from wattmesh.settlement.ledger import Ledger

L = 900_000
SPEED = 450
START = 1_781_935_200_000 - 1_781_935_200_000 % L
ALICE = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
BOB = Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)
ALICE_METER = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)


def street(lead_s: float = 1.0) -> Community:
    """alice holds 5 kWh (bmax 10 kWh) and a meter; bob holds none; both hold money."""
    members = (
        MemberSpec(peer_id_of(ALICE), bmax=10_000, money=10**11, energy=5_000, name="alice",
                   meters=(MeterSpec(peer_id_of(ALICE_METER)),)),
        MemberSpec(peer_id_of(BOB), bmax=10_000, money=10**11, name="bob"),
    )  # fmt: skip
    origin = time.time_ns() // 1_000_000 + int(lead_s * 1000)
    return Community(name="api-street", start_ms=START, interval_ms=L, clock_speed=SPEED,
                     clock_origin_ms=origin, members=members)  # fmt: skip


@dataclass
class Street:
    alice: HouseholdNode
    bob: HouseholdNode
    api: RunningApi
    client: httpx.AsyncClient  # alice's API, with her full token
    token: str
    data_dir: Path  # alice's
    alice_meter: Ed25519PrivateKey = ALICE_METER  # registered to alice

    @property
    def base(self) -> str:
        return self.api.url.rstrip("/")

    def anonymous(self, **headers: str) -> httpx.AsyncClient:
        """A client of alice's API with no credential (close it yourself)."""
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10)

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
        with trio.move_on_after(timeout):
            while not condition():
                await trio.sleep(0.05)
            return
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    async def bob_posts(self, data: bytes) -> None:
        await self.bob.submit(ORDERS, data)


@pytest.fixture
def api_street(tmp_path: Path) -> Callable[..., object]:
    """``async with api_street(rate=..., max_streams=..., bot=...) as s:`` a running
    :class:`Street`."""

    @asynccontextmanager
    async def run(rate: int = 200, max_streams: int = 4, bot: BotConfig | None = None,
                  lead_s: float = 1.0) -> AsyncIterator[Street]:  # fmt: skip
        c = street(lead_s)
        nodes = []
        try:
            async with trio.open_nursery() as nursery:
                for name, key in (("alice", ALICE), ("bob", BOB)):
                    d = tmp_path / name
                    d.mkdir()
                    write_node_config(d, bot=bot or BotConfig())
                    ledger = Ledger.open(d / "ledger.sqlite")
                    ledger.append_batch(c.genesis_items(), ts=c.genesis_ts)
                    store = MessageStore.open(d / "messages.sqlite")
                    node = HouseholdNode(c, key, ledger, store, data_dir=d,
                                         bot=bot if name == "alice" else None)  # fmt: skip
                    boot = tuple(n.status.addrs[0] for n in nodes)
                    await nursery.start(node.run, "/ip4/127.0.0.1/tcp/0", boot)
                    nodes.append(node)
                alice, bob = nodes
                config = ApiConfig("127.0.0.1:0", rate=rate, max_streams=max_streams)
                api = await nursery.start(serve_api, alice, config, alice.data_dir)
                token = ensure_token(alice.data_dir)
                client = httpx.AsyncClient(base_url=api.url.rstrip("/"), timeout=10,
                                           headers={"authorization": f"Bearer {token}"})
                s = Street(alice, bob, api, client, token, alice.data_dir)
                topic = alice.topics[ORDERS]
                await s.until(lambda: len(alice.p2p.mesh_peers(topic)) == 1, "a gossip mesh")
                try:
                    yield s
                finally:
                    await s.client.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            for node in nodes:
                node.store.close()
                node.ledger.close()

    return run


# -- a street of real `wattmesh node` processes (test_client.py, test_bot.py) -------------
# (This section was appended whole; its imports stay with it.)
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402


@dataclass
class LiveStreet:
    """alice's and bob's nodes as ``wattmesh node`` processes on 127.0.0.1, the clock at
    450x (an interval in 2 wall seconds). alice opens with 8 kWh (Bmax 10 kWh) and serves
    the API; bob opens empty, and his node's own threshold bot bids 0.20 per kWh for up
    to 9,999 Wh whenever he holds less than 9 kWh, so an ask of alice's below that trades."""

    url: str  # alice's API, as the node prints it
    token_file: Path
    data_dir: Path  # alice's
    interval_ms: int
    interval_s: float  # wall seconds per interval

    def token(self) -> str:
        return self.token_file.read_text().strip()


def _die_with_parent() -> None:
    """In the child: SIGTERM it if pytest dies, so no node outlives a killed test run."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tails(dirs: list[Path]) -> str:
    out = []
    for d in dirs:
        text = (d / "stderr.txt").read_text(errors="replace") if (d / "stderr.txt").exists() else ""
        out.append(f"--- {d.name}:\n" + "\n".join(text.splitlines()[-15:]))
    return "\n".join(out)


@pytest.fixture(scope="session")
def live_street(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStreet]:
    """The running :class:`LiveStreet`, one per test session (tests share it: each
    asserts only on orders it made). Both processes are stopped (SIGTERM, SIGKILL after
    10 s) and waited for at the end."""
    from typer.testing import CliRunner

    from wattmesh.exchange.cli.app import app
    from wattmesh.exchange.community_file import dump_community
    from wattmesh.settlement.keys import generate_key, save_key

    root = tmp_path_factory.mktemp("live-street")
    keys = {"alice": generate_key(), "bob": generate_key()}
    members = (
        MemberSpec(peer_id_of(keys["alice"]), bmax=10_000, money=10**11, energy=8_000,
                   name="alice"),
        MemberSpec(peer_id_of(keys["bob"]), bmax=10_000, money=10**11, name="bob"),
    )  # fmt: skip
    origin = time.time_ns() // 1_000_000 + 2_000  # the clock starts once both are up
    c = Community(name="live-street", start_ms=START, interval_ms=L, clock_speed=SPEED,
                  clock_origin_ms=origin, members=members)  # fmt: skip
    (root / "community.toml").write_text(dump_community(c))
    p2p_a, p2p_b, api_port = free_ports(3)
    addrs = {"alice": f"/ip4/127.0.0.1/tcp/{p2p_a}/p2p/{peer_id_of(keys['alice'])}",
             "bob": f"/ip4/127.0.0.1/tcp/{p2p_b}/p2p/{peer_id_of(keys['bob'])}"}  # fmt: skip
    dirs = []
    for name, other in (("alice", "bob"), ("bob", "alice")):
        d = root / name
        d.mkdir(mode=0o700)
        save_key(d / "household.key", keys[name])
        init = CliRunner().invoke(app, ["init", "--community", str(root / "community.toml"),
                                        "--data-dir", str(d)])  # fmt: skip
        assert init.exit_code == 0, init.output  # wattmesh init: ledger and api-token made
        bot = BotConfig(enabled=True, buy_price=200_000, lower_wh=9_000, upper_wh=9_999)
        write_node_config(d, listen=addrs[name].split("/p2p/")[0], bootstrap=[addrs[other]],
                          bot=bot if name == "bob" else BotConfig(),
                          api=ApiConfig("off", rate=500))  # fmt: skip
        dirs.append(d)
    alice, bob = dirs
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for d, api in ((alice, f"127.0.0.1:{api_port}"), (bob, "off")):
            with open(d / "stderr.txt", "wb") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "wattmesh.exchange.cli", "node", "--data-dir", str(d),
                     "--api-listen", api],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                    preexec_fn=_die_with_parent,
                ))  # fmt: skip
        street = LiveStreet(f"http://127.0.0.1:{api_port}/", alice / "api-token", alice, L,
                            L / SPEED / 1000)  # fmt: skip
        deadline = time.monotonic() + 30
        while True:  # up, connected to bob, and settling
            if any(p.poll() is not None for p in procs):
                raise AssertionError("a node exited at start:\n" + _tails(dirs))
            if time.monotonic() > deadline:
                raise AssertionError("the street did not start in 30 s:\n" + _tails(dirs))
            try:
                auth = {"authorization": f"Bearer {street.token()}"}
                status = httpx.get(f"{street.url}api/v1/status", headers=auth, timeout=2).json()
                if status["peers"] >= 1 and status["settled_through"] is not None:
                    break
            except (httpx.HTTPError, OSError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        yield street
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
