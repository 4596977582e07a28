"""Builders of order-log lines for the replay tests, and a replay of them."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from wattmesh.exchange.replay.replay import ReplayOptions, ReplayResult, replay
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.records import Cancel, Order


class OrderLog:
    """``order_log.order(...)``, ``.cancel(...)``, ``.account(...)`` make log lines (dicts);
    ``.to_bytes(*lines)`` is the JSON Lines file (bytes and str lines go in as they are);
    ``.replay(*lines, **options)`` replays it."""

    @staticmethod
    def order(
        owner: str,
        side: str,
        price: int,
        qty: int,
        ts: int,
        interval: int | None = None,
        tif: str = "gtc",
        market: str = "energy",
    ) -> dict[str, Any]:
        """An order line with its computed id."""
        return Order(market, side, price, qty, owner, ts, interval, tif).to_dict()

    @staticmethod
    def cancel(order_id: str, owner: str, ts: int) -> dict[str, Any]:
        return Cancel(order_id, owner, ts).to_dict()

    @staticmethod
    def account(owner: str, energy: int, money: int, bmax: int | None = None) -> dict[str, Any]:
        return {"type": "account", "owner": owner, "energy": energy, "money": money, "bmax": bmax}

    @staticmethod
    def to_bytes(*lines: dict[str, Any] | bytes | str) -> bytes:
        out = []
        for line in lines:
            if isinstance(line, bytes):
                out.append(line)
            elif isinstance(line, str):
                out.append(line.encode())
            else:
                out.append(orjson.dumps(line))
        return b"\n".join(out) + b"\n"

    @classmethod
    def replay(cls, *lines: dict[str, Any] | bytes | str, **options: Any) -> ReplayResult:
        return replay(io.BytesIO(cls.to_bytes(*lines)), ReplayOptions(**options))


@pytest.fixture(scope="session")
def order_log() -> OrderLog:
    """The log-line builders (:class:`OrderLog`)."""
    return OrderLog()


@pytest.fixture(scope="session")
def ledger_agrees() -> Callable[[ReplayResult, Path], Ledger]:
    """``ledger_agrees(result, path)``: the replay ledger at ``path``, open, once it
    verifies and holds every owner's closing balances of ``result`` (the caller closes
    it)."""

    def check(result: ReplayResult, path: Path) -> Ledger:
        led = Ledger.open(path, create=False)
        check = led.verify()
        assert check.ok, str(check)
        bal = led.balances()
        for h, (energy, money, _bmax) in result.closing.items():
            owner = result.owners[h]
            assert (bal[owner]["energy"], bal[owner]["money"]) == (energy, money), owner
        return led

    return check
