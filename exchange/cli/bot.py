"""``wattmesh bot``: a trading bot for the household, as its own process (docs/bots.md).

The bot itself is :mod:`wattmesh.exchange.api.bot_runner` (loaded only when the command
runs); this module parses the options and prints. It prints one line per action and exits
0 on SIGINT or SIGTERM; 1 with one ``wattmesh: error:`` line when the node cannot be
reached or refuses the token.
"""

from __future__ import annotations

import random
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from wattmesh.exchange.cli.terminal import fail
from wattmesh.exchange.node.defaults import DEFAULT_API_LISTEN, default_data_dir

__all__ = ["bot"]


class StrategyName(StrEnum):
    zi_c = "zi-c"
    zip = "zip"
    threshold = "threshold"


class _Stop(BaseException):
    """SIGINT or SIGTERM before the event loop took the signals over."""


def _stop_now(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a log file or pipe sees each action as it happens


def bot(
    strategy: Annotated[
        StrategyName,
        typer.Option(
            help="zi-c: random prices within the limits; zip: margins learnt from "
            "each clearing price; threshold: the Energo threshold agent."
        ),
    ],
    api: Annotated[
        str,
        typer.Option(metavar="URL", help="The node's API, as `wattmesh node` prints it."),
    ] = f"http://{DEFAULT_API_LISTEN}",
    token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            show_default=False,
            help="The API token: api-token in the node's data directory (default: "
            "the default data directory's).",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            show_default=False, help="Seed of the random prices (default: a new one, printed)."
        ),
    ] = None,
    qty: Annotated[
        int, typer.Option(min=1, metavar="WH", help="zi-c, zip: at most this much per order.")
    ] = 1_000,
    limit_buy: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="PRICE",
            show_default=False,
            help="zi-c, zip: never bid above this "
            "(micro-currency per kWh; default: the community's retail price).",
        ),
    ] = None,
    limit_sell: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="PRICE",
            show_default=False,
            help="zi-c, zip: never ask below this (default: the community's feed-in price).",
        ),
    ] = None,
    price_min: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="PRICE",
            show_default=False,
            help="zi-c, zip: the lowest price at all (default: --limit-sell).",
        ),
    ] = None,
    price_max: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="PRICE",
            show_default=False,
            help="zi-c, zip: the highest price at all (default: --limit-buy).",
        ),
    ] = None,
    lower_wh: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="WH",
            show_default=False,
            help="Buy below this much stored (default: 30% of Bmax).",
        ),
    ] = None,
    upper_wh: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="WH",
            show_default=False,
            help="Sell above this much stored (default: 60% of Bmax).",
        ),
    ] = None,
    buy_price: Annotated[
        int, typer.Option(min=1, metavar="PRICE", help="threshold: the bid price.")
    ] = 200_000,
    sell_price: Annotated[
        int, typer.Option(min=1, metavar="PRICE", help="threshold: the ask price.")
    ] = 120_000,
) -> None:
    """Trade for the household through its node's API, as a process of its own.

    Once per interval it decides from the household's balance and posts its orders for
    the open interval; it prints one line per action. Stop it with Ctrl-C or SIGTERM
    (exit code 0); orders already posted stay for their interval. Exit code 1 when the
    node cannot be reached or refuses the token. Strategies and rules: docs/bots.md.
    """
    # The bot's modules (asyncio, httpx, the strategies) load here, not for every command.
    import asyncio

    from wattmesh.exchange.api.bot_runner import BotError, BotSettings, until_signal
    from wattmesh.exchange.api.bot_strategies import StrategyError
    from wattmesh.exchange.api.client import ApiError, ApiUnreachable, TokenFileError, read_token

    # Until the event loop takes the signals over, a signal still ends the bot cleanly.
    previous = {s: signal.signal(s, _stop_now) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        path = token_file if token_file is not None else default_data_dir() / "api-token"
        settings = BotSettings(
            strategy.value, path, random.randrange(2**32) if seed is None else seed, qty,
            limit_buy, limit_sell, price_min, price_max, lower_wh, upper_wh, buy_price,
            sell_price,
        )  # fmt: skip
        token = read_token(path)
        name = asyncio.run(until_signal(api, token, settings, _say))
        _say(f"stopped ({name})")
    except _Stop as stop:
        _say(f"stopped ({stop})")
    except TokenFileError as exc:
        fail(str(exc), code=1)
    except ApiUnreachable as exc:
        fail(f"{exc} (is `wattmesh node` running there? see --api)", code=1)
    except ApiError as exc:
        if exc.code == "unauthorized":
            fail(f"the node refused the token in {settings.token_file}: {exc.message} "
                 "(`wattmesh api token` prints the current one)", code=1)  # fmt: skip
        fail(f"the node refused: {exc}", code=1)
    except BotError as exc:
        fail(str(exc), code=1)
    except StrategyError as exc:  # options that do not go together: a usage error
        fail(str(exc), code=2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
