"""``wattmesh bot`` (exchange/cli/bot.py) as its own process against a real node (the
``live_street`` fixture: alice's node with the API, bob's node bidding 0.20 per kWh), and
its strategies (exchange/api/bot_strategies.py) on their own."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from random import Random

import pytest
import pytest_asyncio

from wattmesh.exchange.api.bot_strategies import (
    Band,
    Holdings,
    Intent,
    Limits,
    StrategyError,
    ThresholdStrategy,
    ZICStrategy,
    ZIPStrategy,
)
from wattmesh.exchange.api.client import NodeClient
from wattmesh.exchange.api.tokens import ensure_token
from wattmesh.settlement.errors import WattmeshError

Process = asyncio.subprocess.Process
# "10:15  ask 0.600 kWh at 0.1234 per kWh  (order 51ad5d358a16)"
ACTION = re.compile(r"(\d\d:\d\d)  (bid|ask) (\d+\.\d{3}) kWh at (\d+\.\d{4}) per kWh  "
                    r"\(order ([0-9a-f]{12})\)")  # fmt: skip
FILL = re.compile(r"(\d\d:\d\d)  (bought|sold) (\d+\.\d{3}) kWh at (\d+\.\d{4}) per kWh  "
                  r"\(order ([0-9a-f]{12})\)")  # fmt: skip


@pytest_asyncio.fixture
async def alice(live_street) -> AsyncIterator[NodeClient]:
    async with NodeClient(live_street.url, live_street.token()) as node:
        yield node


@asynccontextmanager
async def bot_process(*args: str) -> AsyncIterator[Process]:
    """``wattmesh bot ARGS`` as the venv's console script would run it; killed and waited
    for on the way out if it is still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wattmesh.exchange.cli", "bot", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def read_until(proc: Process, wanted: Callable[[str], bool], timeout: float,
                     lines: list[str]) -> str:  # fmt: skip
    """Read the bot's stdout into ``lines`` until a line is ``wanted``; that line."""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    err = await proc.stderr.read() if proc.stderr is not None else b""
                    raise AssertionError(f"the bot ended: {lines}\n{err.decode()}")
                line = raw.decode().rstrip("\n")
                lines.append(line)
                if wanted(line):
                    return line
    except TimeoutError:
        raise AssertionError(f"not seen within {timeout} s; the bot printed {lines}") from None


async def stop(proc: Process, sig: int) -> tuple[int, str, str]:
    """Signal the bot and wait (at most 5 s) for it to end: (code, rest of stdout, stderr)."""
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), 5)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def surplus(node: NodeClient) -> int:
    """alice's energy not yet offered (tests share her node: each starts from what is)."""
    b = await node.balance()
    return b["energy"] - b["committed_energy"]


# -- the bot process ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_zi_c_bot_posts_asks_that_trade_and_stops_on_sigterm(alice, live_street):
    free = await surplus(alice)
    assert free > 1_500
    args = ["--strategy", "zi-c", "--api", live_street.url, "--token-file",
            str(live_street.token_file), "--seed", "7", "--qty", "600", "--lower-wh", "0",
            "--upper-wh", str(free - 1_000), "--limit-sell", "100000", "--price-max",
            "150000"]  # fmt: skip
    lines: list[str] = []
    async with bot_process(*args) as proc:
        first = await read_until(proc, lambda s: s.startswith("wattmesh bot:"), 15, lines)
        assert "zi-c" in first and "(seed 7)" in first
        posted = ACTION.fullmatch(await read_until(proc, ACTION.fullmatch, 10, lines))
        assert posted is not None
        side, kwh, price, prefix = posted[2], posted[3], float(posted[4]), posted[5]
        assert (side, kwh) == ("ask", "0.600")
        assert 0.10 <= price <= 0.15  # ZI-C: within [--limit-sell, --price-max]
        # The node holds it (or, if its gate passed meanwhile, traded it: bob bids 0.20).
        mine = [o for o in await alice.orders() if o["id"].startswith(prefix)]
        traded = [t for t in (await alice.trades(mine=True, limit=500))["items"]
                  if t["ask"].startswith(prefix)]  # fmt: skip
        assert mine or traded
        if mine:
            assert (mine[0]["side"], mine[0]["qty"]) == ("ask", 600)
            assert f"{mine[0]['price'] / 1e6:.4f}" == posted[4]  # as printed, 4 decimals
            book = await alice.book(mine[0]["interval"])
            assert mine[0]["id"] in [o["id"] for o in book["orders"]]

        fill = FILL.fullmatch(await read_until(proc, FILL.fullmatch, 4 * live_street.interval_s,
                                               lines))  # fmt: skip
        assert fill is not None and fill[2] == "sold" and fill[3] == "0.600"
        trades = [t for t in (await alice.trades(mine=True, limit=500))["items"]
                  if t["ask"].startswith(fill[5])]  # fmt: skip
        assert len(trades) == 1 and trades[0]["qty"] == 600
        assert f"{trades[0]['price'] / 1e6:.4f}" == fill[4]

        code, rest, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert rest.splitlines()[-1] == "stopped (SIGTERM)"
    assert err == ""  # no traceback, no warning


@pytest.mark.asyncio
async def test_threshold_bot_offers_the_surplus_and_stops_on_sigint(alice, live_street):
    b = await alice.balance()
    free = b["energy"] - b["committed_energy"]
    upper = free - 500  # the agent offers energy - upper: 500 Wh, plus what is committed
    args = ["--strategy", "threshold", "--api", live_street.url, "--token-file",
            str(live_street.token_file), "--lower-wh", str(upper - 1), "--upper-wh",
            str(upper), "--sell-price", "110000", "--buy-price", "90000"]  # fmt: skip
    lines: list[str] = []
    async with bot_process(*args) as proc:
        posted = ACTION.fullmatch(await read_until(proc, ACTION.fullmatch, 15, lines))
        assert posted is not None
        assert (posted[2], posted[4]) == ("ask", "0.1100")
        assert 500 <= round(float(posted[3]) * 1000) <= 500 + b["committed_energy"]
        code, rest, err = await stop(proc, signal.SIGINT)
    assert code == 0, err
    assert rest.splitlines()[-1] == "stopped (SIGINT)"
    assert err == ""


@pytest.mark.asyncio
async def test_zip_bot_starts_and_says_what_it_does(live_street):
    args = ["--strategy", "zip", "--api", live_street.url, "--token-file",
            str(live_street.token_file), "--seed", "3", "--lower-wh", "0", "--upper-wh",
            "9999"]  # fmt: skip
    lines: list[str] = []
    async with bot_process(*args) as proc:
        first = await read_until(proc, lambda s: s.startswith("wattmesh bot:"), 15, lines)
        assert "zip" in first and "margins learnt" in first
        held = await read_until(proc, lambda s: "holds:" in s, 3 * live_street.interval_s, lines)
        assert re.fullmatch(r"\d\d:\d\d  holds: \d+\.\d{3} kWh stored", held)
        code, _rest, err = await stop(proc, signal.SIGTERM)
    assert code == 0 and err == ""


async def run_to_end(*args: str, timeout: float = 15) -> tuple[int, str, str]:
    async with bot_process(*args) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_a_token_the_node_refuses_is_one_error_line_and_exit_1(live_street, tmp_path):
    (tmp_path / "api-token").write_text("not-the-token\n")
    code, out, err = await run_to_end("--strategy", "zi-c", "--api", live_street.url,
                                      "--token-file", str(tmp_path / "api-token"))  # fmt: skip
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"wattmesh: error: the node refused the token in {tmp_path}")


@pytest.mark.asyncio
async def test_a_read_only_token_is_refused_before_trading(live_street):
    ensure_token(live_street.data_dir, read_only=True)
    read_only = live_street.data_dir / "api-token-read"
    code, out, err = await run_to_end("--strategy", "threshold", "--api", live_street.url,
                                      "--token-file", str(read_only))  # fmt: skip
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "may only read" in err


@pytest.mark.asyncio
async def test_an_unreachable_node_is_one_error_line_and_exit_1(live_street):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = await run_to_end("--strategy", "zip", "--api", f"127.0.0.1:{port}",
                                      "--token-file", str(live_street.token_file))  # fmt: skip
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(
        f"wattmesh: error: cannot reach the node's API at http://127.0.0.1:{port}"
    )


@pytest.mark.asyncio
async def test_a_missing_token_file_is_one_error_line_and_exit_1(tmp_path):
    code, out, err = await run_to_end("--strategy", "zi-c", "--token-file",
                                      str(tmp_path / "nope"))  # fmt: skip
    assert code == 1 and out == ""
    assert err == f"wattmesh: error: {tmp_path / 'nope'}: no such token file (it is api-token " \
        "in the node's data directory; `wattmesh api token` prints it)\n"  # fmt: skip


# -- the strategies -----------------------------------------------------------------------

LIMITS = Limits(buy=230_000, sell=80_000, low=80_000, high=230_000)
BAND = Band(lower=3_000, upper=6_000)


def holding(energy: int, money: int = 10**12, committed: int = 0) -> Holdings:
    return Holdings(energy, money, 10_000, committed_energy=committed)


def test_the_side_rule_sells_surplus_buys_shortfall_and_holds_between():
    assert BAND.side(holding(9_000), 1_000) == ("ask", 1_000)
    assert BAND.side(holding(6_400), 1_000) == ("ask", 400)  # only the surplus above upper
    assert BAND.side(holding(6_400, committed=400), 1_000) is None  # already offered
    assert BAND.side(holding(2_000), 1_000) == ("bid", 1_000)
    assert BAND.side(holding(2_000), 10_000) == ("bid", 4_000)  # up to upper, no further
    assert BAND.side(holding(3_000), 1_000) is None and BAND.side(holding(6_000), 1_000) is None
    assert Band.of(10_000) == Band(3_000, 6_000)  # 30% and 60% of Bmax
    with pytest.raises(StrategyError, match="too little"):
        Band.of(1)
    with pytest.raises(StrategyError):
        Band(5, 5)


def test_zi_c_prices_stay_within_the_limits_and_bids_within_the_money():
    zic = ZICStrategy(LIMITS, BAND, 1_000, Random(1))
    asks = [zic.decide(0, holding(9_000))[0] for _ in range(300)]
    bids = [zic.decide(0, holding(1_000))[0] for _ in range(300)]
    assert all(i.side == "ask" and i.qty == 1_000 and 80_000 <= i.price <= 230_000 for i in asks)
    assert all(i.side == "bid" and 80_000 <= i.price <= 230_000 for i in bids)
    assert len({i.price for i in asks}) > 100  # drawn, not fixed
    poor = zic.decide(0, holding(1_000, money=100 * 230_000))[0]  # pays 100 Wh at most
    assert poor.qty == 100 * 230_000 // poor.price
    assert zic.decide(0, holding(1_000, money=0)) == []
    with pytest.raises(StrategyError):
        Limits(buy=50_000, sell=80_000, low=80_000, high=230_000)  # never bids
    assert isinstance(StrategyError("x"), WattmeshError)


def test_zip_moves_its_ask_towards_the_clearing_price():
    zip_ = ZIPStrategy(LIMITS, BAND, 1_000, Random(5))
    first = zip_.decide(0, holding(9_000))[0]
    zip_.posted(0, [first], ["id0"])
    for t in range(1, 40):  # the market clears at 0.20, far above its ask
        zip_.settled(t - 1, 200_000, [])
        shout = zip_.decide(t, holding(9_000))[0]
        zip_.posted(t, [shout], [f"id{t}"])
    assert first.price < 120_000 < shout.price <= 215_000
    high = zip_.decide(99, holding(9_000))[0]
    for t in range(100, 140):  # now it clears at 0.10, below the ask: it comes down
        zip_.posted(t, [high], [f"id{t}"])
        zip_.settled(t, 100_000, [])
        high = zip_.decide(t + 1, holding(9_000))[0]
    assert 80_000 <= high.price < 110_000
    assert zip_.margins()["ask"] >= 0 >= zip_.margins()["bid"]  # never a loss


def test_zip_unfilled_ask_gets_keener_when_nothing_trades():
    zip_ = ZIPStrategy(LIMITS, BAND, 1_000, Random(9))
    before = zip_.decide(0, holding(9_000))[0]
    zip_.posted(0, [before], ["a"])
    zip_.settled(0, None, [])
    after = zip_.decide(1, holding(9_000))[0]
    assert after.price < before.price


def test_threshold_reposts_what_remains_until_it_trades_in_full():
    th = ThresholdStrategy(200_000, 120_000, BAND)
    assert th.decide(0, holding(8_000)) == [Intent("ask", 120_000, 2_000)]
    th.posted(0, [Intent("ask", 120_000, 2_000)], ["order-0"])
    th.settled(0, 120_000, [{"side": "ask", "qty": 500, "price": 120_000, "order": "order-0"}])
    # The ledger now holds 7,500 Wh; the agent offers the remaining 1,500 Wh again.
    assert th.decide(900_000, holding(7_500)) == [Intent("ask", 120_000, 1_500)]
    th.posted(900_000, [Intent("ask", 120_000, 1_500)], ["order-1"])
    th.settled(900_000, 120_000, [{"side": "ask", "qty": 1_500, "price": 120_000,
                                   "order": "order-1"}])  # fmt: skip
    assert th.decide(1_800_000, holding(6_000)) == []  # traded in full; between thresholds
    assert th.decide(2_700_000, holding(2_000)) == [Intent("bid", 200_000, 4_000)]
    th.settled(2_700_000, None, [{"side": "bid", "qty": 9, "price": 1, "order": "not-ours"}])
    assert th.decide(3_600_000, holding(2_000)) == [Intent("bid", 200_000, 4_000)]


def test_the_limits_default_to_the_communitys_grid_prices():
    from pathlib import Path

    from wattmesh.exchange.api.bot_runner import BotSettings

    community = {"retail_price": 250_000, "feedin_price": 70_000}
    zic = BotSettings("zi-c", Path("t"), seed=1).strategy_for(holding(1_000), community)
    assert zic.limits == Limits(buy=250_000, sell=70_000, low=70_000, high=250_000)
    mine = BotSettings("zip", Path("t"), seed=1, limit_buy=200_000, limit_sell=90_000)
    assert mine.strategy_for(holding(1_000), community).limits == Limits(
        buy=200_000, sell=90_000, low=90_000, high=200_000)  # fmt: skip


@pytest.mark.asyncio
async def test_a_stop_that_comes_with_an_event_stops_the_bot() -> None:
    """SIGTERM cancels the bot's task; when an event reaches the bot's queue in the same
    turn of the loop, the bot must still stop (Python 3.11's wait_for dropped that
    cancellation, and a demo's bot ran on until it was killed)."""
    from wattmesh.exchange.api.bot_runner import _trade
    from wattmesh.exchange.api.client import STREAM_OPENED, Event

    interval_ms = 900_000
    stopped = asyncio.Event()
    bot_task: list[asyncio.Task] = []

    class Node:
        async def status(self) -> dict:
            # the open interval's predecessor is not settled and its gate is a minute
            # away: the bot waits for an event with a deadline
            clock = {"open_interval": 10 * interval_ms, "gate_in_s": 60, "interval_ms": interval_ms}
            return {"settled_through": None, "clock": clock}

        async def events(self):
            yield Event(None, STREAM_OPENED, {"last_event_id": None})
            await asyncio.sleep(0.05)  # the bot is now waiting with a deadline
            yield Event(1, "interval-opened", {"interval": 11 * interval_ms})
            # the reader asks for the next event right after queueing that one: the stop
            # lands in the same turn of the loop as the event
            bot_task[0].cancel()
            stopped.set()
            await asyncio.Event().wait()

    class Trader:
        acted: set[int] = set()
        settled_through = None

        def __init__(self) -> None:
            self.interval_ms = interval_ms

        def say(self, line: str) -> None:
            pass

        async def act(self, t: int) -> None:
            self.acted.add(t)

        def settled(self, data: dict) -> None:
            pass

    bot_task.append(asyncio.create_task(_trade(Node(), Trader())))  # type: ignore[arg-type]
    await asyncio.wait_for(stopped.wait(), 5)
    done, _ = await asyncio.wait(bot_task, timeout=5)
    assert bot_task[0] in done and bot_task[0].cancelled()
