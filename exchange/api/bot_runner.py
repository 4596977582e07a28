"""What ``wattmesh bot`` runs (docs/bots.md): a trading bot for the household, as its own
process, talking to the household's node only through the node's HTTP API
(:mod:`wattmesh.exchange.api.client`, asyncio), so it never holds the household key; the
node signs what it posts. The strategies are :mod:`wattmesh.exchange.api.bot_strategies`.

Once per interval it posts the household's orders for the open interval: when the
interval opens, as soon as the node has settled the interval before it (so the balance it
decides from is current), or, if that settlement is slow, halfway to the open interval's
gate. The command line (exchange/cli/bot.py) parses the options and prints.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from wattmesh.exchange.api.bot_strategies import (
    Band,
    Holdings,
    Limits,
    Strategy,
    ThresholdStrategy,
    ZICStrategy,
    ZIPStrategy,
)
from wattmesh.exchange.api.client import STREAM_OPENED, ApiError, ApiUnreachable, Event, NodeClient
from wattmesh.exchange.units import energy_text, price_text
from wattmesh.settlement.errors import WattmeshError

__all__ = ["BotError", "BotSettings", "run_bot", "until_signal"]

# How long to wait for the previous interval's settlement before deciding without it,
# as a share of the wall time to the open interval's gate.
WAIT_SHARE = 0.5
FATAL = ("unauthorized", "forbidden")  # refusals no retry cures: the token


class BotError(WattmeshError, RuntimeError):
    """The bot cannot trade (the message says why)."""


@dataclass(frozen=True)
class BotSettings:
    """The command's options; None: the default the household's balance gives."""

    strategy: str
    token_file: Path
    seed: int
    qty: int = 1_000
    limit_buy: int | None = None  # None: the community's retail price
    limit_sell: int | None = None  # None: the community's feed-in price
    price_min: int | None = None
    price_max: int | None = None
    lower_wh: int | None = None
    upper_wh: int | None = None
    buy_price: int = 200_000
    sell_price: int = 120_000

    def strategy_for(self, balance: Holdings, community: dict[str, Any]) -> Strategy:
        """The strategy, its thresholds defaulting to shares of the household's Bmax and
        its limits to the grid's prices in ``community`` (the node's status): buying
        above retail or selling below feed-in would do worse than the grid."""
        band = Band.of(balance.bmax, self.lower_wh, self.upper_wh)
        if self.strategy == "threshold":
            return ThresholdStrategy(self.buy_price, self.sell_price, band)
        buy = community["retail_price"] if self.limit_buy is None else self.limit_buy
        sell = community["feedin_price"] if self.limit_sell is None else self.limit_sell
        low = sell if self.price_min is None else self.price_min
        high = buy if self.price_max is None else self.price_max
        limits = Limits(buy, sell, min(low, high), max(low, high))
        kind = ZIPStrategy if self.strategy == "zip" else ZICStrategy
        return kind(limits, band, self.qty, random.Random(self.seed))


def _clock(ms: int) -> str:
    """An interval's start as a local time of day (the community's calendar)."""
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M")


class _Trader:
    """Deciding and posting, interval by interval, for one node."""

    def __init__(self, node: NodeClient, strategy: Strategy, say: Callable[[str], None],
                 interval_ms: int) -> None:  # fmt: skip
        self.node, self.strategy, self.say = node, strategy, say
        self.interval_ms = interval_ms
        self.acted: set[int] = set()
        self.posted: set[int] = set()
        self.settled_through: int | None = None

    async def act(self, t: int) -> None:
        """Decide and post the household's orders for interval ``t`` (once); a refusal
        or a moment without the node is one line, and the bot goes on."""
        if t in self.acted:
            return
        self.acted.add(t)
        self.acted = {x for x in self.acted if x > t - 16 * self.interval_ms}
        try:
            await self._act(t)
        except ApiError as exc:
            if exc.code in FATAL:
                raise
            self.say(f"{_clock(t)}  refused: {exc}")
        except ApiUnreachable as exc:
            self.acted.discard(t)  # the stream's return (or the next event) tries again
            self.say(f"{_clock(t)}  skipped: {exc}")

    async def _act(self, t: int) -> None:
        balance = Holdings.of(await self.node.balance())
        if any(o["interval"] == t for o in await self.node.orders()):
            self.say(f"{_clock(t)}  has orders already (another bot?); leaves them")
            return
        intents = self.strategy.decide(t, balance)
        if not intents:
            self.say(f"{_clock(t)}  holds: {energy_text(balance.energy)} stored")
            return
        orders = [{"side": i.side, "price": i.price, "qty": i.qty} for i in intents]
        answer = await self.node.post_batch(orders, interval=t)
        self.strategy.posted(t, intents, answer["ids"])
        self.posted.add(t)
        for i, oid in zip(intents, answer["ids"], strict=True):
            self.say(f"{_clock(t)}  {i.side} {energy_text(i.qty)} at {price_text(i.price)} per kWh"
                     f"  (order {oid[:12]})")  # fmt: skip

    def settled(self, data: dict[str, Any]) -> None:
        """Hear an interval-settled event: the strategy learns, the fills are shown."""
        t, price, fills = data["interval"], data.get("price"), data.get("fills", [])
        self.settled_through = max(t, self.settled_through or t)
        self.strategy.settled(t, price, fills)
        for f in fills:
            done = "bought" if f["side"] == "bid" else "sold"
            self.say(f"{_clock(t)}  {done} {energy_text(f['qty'])} at {price_text(f['price'])} "
                     f"per kWh  (order {f['order'][:12]})")  # fmt: skip
        if t in self.posted and not fills:
            self.say(f"{_clock(t)}  no fill (clearing price {price_text(price)})")
        self.posted.discard(t)


async def run_bot(url: str, token: str, settings: BotSettings,
                  say: Callable[[str], None]) -> None:  # fmt: skip
    """Trade for the household of the node at ``url`` until cancelled. Raises BotError,
    ApiError (the token refused) or ApiUnreachable."""
    async with NodeClient(url, token) as node:
        if (await node.session())["level"] != "write":
            raise BotError(f"the token in {settings.token_file} may only read; a bot needs "
                           "the full one (api-token, not api-token-read)")  # fmt: skip
        status = await node.status()
        balance = Holdings.of(await node.balance())
        strategy = settings.strategy_for(balance, status["community"])
        say(f"wattmesh bot: {strategy.name} for {status['peer_id']} at {node.url} "
            f"(seed {settings.seed}): {strategy.describe()}")  # fmt: skip
        if (await node.bot()).get("enabled"):
            say("note: the node's own threshold bot trades for this household too "
                "(turn it off: PUT /api/v1/bot {\"enabled\": false})")  # fmt: skip
        trader = _Trader(node, strategy, say, status["clock"]["interval_ms"])
        await _trade(node, trader)


async def _trade(node: NodeClient, trader: _Trader) -> None:
    """The event loop: act for each open interval once its predecessor is settled (or a
    deadline passes); hear every settlement."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
    pending: tuple[int, float] | None = None  # (interval, loop time to act by)

    async def read() -> None:
        try:
            async for event in node.events():
                queue.put_nowait(event)
        except Exception as exc:  # noqa: BLE001 (handed to the loop, which raises it)
            queue.put_nowait(exc)

    async def schedule() -> tuple[int, float] | None:
        """Act for the open interval now if its predecessor is settled, else later."""
        status = await node.status()
        through = status["settled_through"]
        if through is not None:  # what settled while the stream was away, too
            trader.settled_through = max(through, trader.settled_through or through)
        clock = status["clock"]
        t = clock["open_interval"]
        if t in trader.acted:
            return None
        done = trader.settled_through is not None and \
            trader.settled_through >= t - trader.interval_ms  # fmt: skip
        if done or clock["gate_in_s"] <= 0:
            await trader.act(t)
            return None
        return t, loop.time() + clock["gate_in_s"] * WAIT_SHARE

    async def handle(event: Event) -> None:
        nonlocal pending
        if event.name in (STREAM_OPENED, "interval-opened"):
            if event.name == STREAM_OPENED and event.data["last_event_id"] is not None:
                trader.say("the node's event stream is back")
            pending = await schedule()
        elif event.name == "interval-settled":
            trader.settled(event.data)
            if pending is not None and pending[0] <= event.data["interval"] + \
                    trader.interval_ms:  # fmt: skip
                t, pending = pending[0], None
                await trader.act(t)

    reader = asyncio.create_task(read())
    try:
        while True:
            timeout = None if pending is None else max(0.0, pending[1] - loop.time())
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the item
                # and drops a cancellation (the bot's stop) that comes with it, and the bot
                # would then run on until it is killed.
                async with asyncio.timeout(timeout):
                    item = await queue.get()
            except TimeoutError:  # the predecessor's settlement is late: act without it
                assert pending is not None
                t, pending = pending[0], None
                await trader.act(t)
                continue
            if isinstance(item, BaseException):
                raise item
            try:
                await handle(item)
            except ApiUnreachable as exc:  # the stream says for how long (reconnect_for)
                trader.say(f"node unreachable: {exc}")
            except ApiError as exc:
                if exc.code in FATAL:
                    raise
                trader.say(f"refused: {exc}")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def until_signal(url: str, token: str, settings: BotSettings,
                        say: Callable[[str], None]) -> str:  # fmt: skip
    """Run the bot until SIGINT or SIGTERM; the signal's name."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    got: list[str] = []

    def stop(name: str) -> None:
        got.append(name)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        await run_bot(url, token, settings, say)
    except asyncio.CancelledError:
        if not got:
            raise
    return got[0] if got else "end"
