"""Shared test configuration.

asyncio tests run in strict mode (``@pytest.mark.asyncio``); trio tests use anyio's plugin
(``@pytest.mark.anyio``) with the backend fixed to trio below, because py-libp2p and the
node run on trio. Both kinds can run in one session.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture
def cli() -> Callable[..., tuple[int, str, str]]:
    """Run a ``wattmesh`` command in-process on the root command (typer's CliRunner):
    ``cli("ledger", "verify", path)`` -> (exit code, stdout, stderr). Arguments may be
    paths or numbers; ``input=`` is fed to stdin."""
    from typer.testing import CliRunner

    from wattmesh.exchange.cli.app import app

    def run(*args: object, input: bytes | str | None = None) -> tuple[int, str, str]:
        res = CliRunner().invoke(app, [str(a) for a in args], input=input)
        return res.exit_code, res.stdout, res.stderr

    return run


@pytest.fixture
def console(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the console script's ``main()`` in-process, with its own error handling (one
    line, exit code): ``console("replay", "--json")`` -> (exit code, stdout, stderr)."""
    from wattmesh.exchange.cli.app import main

    def run(*args: object) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return run


@pytest.fixture(scope="session")
def make_order() -> Callable[..., object]:
    """``make_order(owner, side, price, qty, ts, interval=None, market="energy",
    tif="gtc")`` -> :class:`Order`. ``owner`` is a private key (the order is signed by it,
    as gossip carries it) or an owner id (unsigned, as an order log may hold it)."""
    from wattmesh.settlement.keys import peer_id_of
    from wattmesh.settlement.records import Order

    def build(
        owner: object,
        side: str,
        price: int,
        qty: int,
        ts: int,
        interval: int | None = None,
        *,
        market: str = "energy",
        tif: str = "gtc",
    ) -> Order:
        if isinstance(owner, str):
            return Order(market, side, price, qty, owner, ts, interval, tif)
        order = Order(market, side, price, qty, peer_id_of(owner), ts, interval, tif)
        return order.signed(owner)

    return build


@pytest.fixture(scope="session")
def make_reading() -> Callable[..., object]:
    """``make_reading(meter_key, start, produced, consumed, seq, length=900_000)`` -> a
    :class:`Reading` of ``[start, start + length)`` signed by the meter's key."""
    from wattmesh.settlement.keys import peer_id_of
    from wattmesh.settlement.records import Reading

    def build(meter: object, start: int, produced: int, consumed: int, seq: int,
              length: int = 900_000) -> Reading:  # fmt: skip
        reading = Reading(peer_id_of(meter), start, start + length, produced, consumed, seq)
        return reading.signed(meter)

    return build


@pytest.fixture(scope="session")
def street_opening() -> Callable[..., list]:
    """The opening batch of the test street's ledger (elm-street: 15-minute intervals,
    prices 0..1,000,000, retail 0.30, feed-in 0.08, a 0.2% trade fee): alice, and bob who
    provides storage, each with ``money`` deposited, and bob's ``bob_energy`` Wh bought
    from the grid. ``street_opening(money=..., bob_energy=..., **genesis_changes)``."""

    def opening(*, money: int, bob_energy: int, **genesis_changes: object) -> list:
        genesis = {
            "community": "elm-street", "interval_ms": 900_000, "price_min": 0,
            "price_max": 1_000_000, "fee_rate_ppm": 2_000, "retail_price": 300_000,
            "feedin_price": 80_000, "funds": {"fees": "fund:fees"}, **genesis_changes,
        }  # fmt: skip
        return [
            ("genesis", genesis),
            ("member", {"owner": "alice", "bmax": 10_000, "storage": False}),
            ("member", {"owner": "bob", "bmax": 10_000, "storage": True}),
            ("deposit", {"owner": "alice", "amount": money}),
            ("deposit", {"owner": "bob", "amount": money}),
            ("grid_import", {"owner": "bob", "qty": bob_energy, "price": 300_000}),
        ]

    return opening


@pytest.fixture(scope="session")
def ledger_rows() -> Callable[[object], list[tuple]]:
    """``ledger_rows(path)``: every row of a ledger file's ``entries`` table, read with
    plain sqlite3 (the bytes on disk, not what :class:`Ledger` makes of them)."""
    import sqlite3

    def read(path: object) -> list[tuple]:
        conn = sqlite3.connect(path)  # type: ignore[arg-type]
        try:
            return conn.execute("SELECT * FROM entries ORDER BY seq").fetchall()
        finally:
            conn.close()

    return read


@pytest.fixture(scope="session")
def run_group() -> Callable[..., tuple[int, str]]:
    """``run_group(cmd, timeout)`` -> (exit code, stdout and stderr together): a command
    that starts processes of its own (``wattmesh demo``) run in a process group of its
    own, so that a timeout kills them all and fails the test with the output so far."""
    import os
    import signal
    import subprocess

    def run(cmd: list[str], timeout: float) -> tuple[int, str]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"{' '.join(cmd[2:])} did not finish in {timeout} s:\n{out}")
        return proc.returncode, out

    return run


@pytest.fixture(scope="session")
def analysis_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder made by docs/analysis.md's example commands, run as printed: day.jsonl
    (the sample day with meters), node.db (its ledger), results/ (replay --out), tables/
    (the ledger as Parquet), community/ and gode-sunder/ (simulate --out), and efficiency/
    (the sweep section's example spec, swept)."""
    import os
    import re
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parents[1] / "docs" / "analysis.md").read_text()
    block = re.search(r"```bash\n(.*?)```", doc.split("## An example folder", 1)[1], re.S)
    assert block is not None
    folder = tmp_path_factory.mktemp("analysis")
    env = dict(os.environ)  # `wattmesh` and `python` as a reader's activated venv has them
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for line in block.group(1).splitlines():
        cmd = line.split("  #")[0].strip()
        if cmd:
            res = subprocess.run(["bash", "-c", cmd], cwd=folder, env=env, text=True,
                                 capture_output=True, timeout=300)  # fmt: skip
            assert res.returncode == 0, f"{cmd}\n{res.stderr}"
    # The sweep section's example: its spec (the first TOML block there), swept as its
    # first command shows, so that the page's query over sweep.parquet runs here too.
    sweeps = doc.split("## Sweeps", 1)[1]
    spec = re.search(r"```toml\n(.*?)```", sweeps, re.S)
    first = re.search(r"```bash\n(.*?)\n", sweeps)
    assert spec is not None and first is not None
    (folder / "efficiency.toml").write_text(spec.group(1))
    cmd = first.group(1).split("  #")[0].strip()
    res = subprocess.run(["bash", "-c", cmd], cwd=folder, env=env, text=True,
                         capture_output=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, f"{cmd}\n{res.stderr}"
    return folder


CHROMIUM = "/usr/bin/chromium"  # Debian's package, never a browser playwright downloads
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]  # fmt: skip


@pytest.fixture
def chromium_context(tmp_path: Path) -> Iterator[object]:
    """A headless Chromium (playwright's BrowserContext) in a fresh profile: the web page's
    tests and the report's. .ci/run installs Chromium where it is missing; without it these
    tests fail (a skip would hide that the page went untested)."""
    import shutil

    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"no {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
            timezone_id="UTC",
            locale="en-GB",
        )
        try:
            yield context
        finally:
            context.close()
