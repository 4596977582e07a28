"""Meter readings in order logs: applied by ``wattmesh replay`` and settled by ``--ledger``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from wattmesh.exchange.replay.replay import (
    DEFAULT_FEEDIN_PRICE,
    DEFAULT_RETAIL_PRICE,
    ReplayOptions,
    ReplayResult,
    replay,
)
from wattmesh.exchange.replay.to_ledger import settle_into_ledger
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.records import Order, Reading

L = 900_000
T0 = 1_718_928_000_000
ANN_METER = generate_key()
BOB_METER = generate_key()


def order(owner: str, side: str, price: int, qty: int, ts: int, interval: int | None = None):
    return Order("energy", side, price, qty, owner, ts, interval).to_dict()


def account(owner: str, energy: int, money: int, bmax: int | None) -> dict[str, Any]:
    return {"type": "account", "owner": owner, "energy": energy, "money": money, "bmax": bmax}


def meter(key, owner: str, max_power_w: int | None = None) -> dict[str, Any]:
    d = {"type": "meter", "meter": peer_id_of(key), "owner": owner}
    if max_power_w is not None:
        d["max_power_w"] = max_power_w
    return d


def reading(key, seq: int, produced: int, consumed: int, start: int = T0 - L) -> dict[str, Any]:
    start += (seq - 1) * L
    return Reading(peer_id_of(key), start, start + L, produced, consumed, seq).signed(key).to_dict()


def run(*events: dict[str, Any], **options: Any) -> ReplayResult:
    data = b"".join(orjson.dumps(e) + b"\n" for e in events)
    return replay(io.BytesIO(data), ReplayOptions(**options))


def closing(result: ReplayResult, owner: str) -> tuple[int, int]:
    energy, money, _bmax = result.closing[result.owners.index(owner)]
    return energy, money


def settled(result: ReplayResult, path: Path) -> Ledger:
    """Settle into a ledger and check what every replay ledger must satisfy."""
    settle_into_ledger(result, path)
    led = Ledger.open(path, create=False)
    check = led.verify()
    assert check.ok, str(check)
    bal = led.balances()
    for h, (energy, money, _bmax) in result.closing.items():
        owner = result.owners[h]
        assert (bal[owner]["energy"], bal[owner]["money"]) == (energy, money), owner
    return led


HOUSES = (
    account("ann", 1_000, 10**12, 5_000),
    account("bob", 0, 10**12, 20_000),
    meter(ANN_METER, "ann", max_power_w=20_000),
    meter(BOB_METER, "bob"),
)


def test_readings_change_balances_as_design_says() -> None:
    result = run(
        *HOUSES,
        reading(ANN_METER, 1, 4_700, 200),  # 1000 + 4500 -> 5000 at Bmax, 500 exported
        reading(BOB_METER, 1, 0, 300),  # bob holds nothing: 300 imported
    )
    assert result.accepted["meters"] == 2 and result.accepted["readings"] == 2
    assert closing(result, "ann") == (5_000, 10**12 + 500 * DEFAULT_FEEDIN_PRICE)
    assert closing(result, "bob") == (0, 10**12 - 300 * DEFAULT_RETAIL_PRICE)
    s = result.summary()
    assert (s["readings"], s["exported_wh"], s["imported_wh"]) == (2, 500, 300)


def test_a_reading_before_the_gate_lets_a_household_sell_what_it_produced(tmp_path) -> None:
    # ann holds 1000 Wh and asks 3000; her panels produce 2500 more before the gate.
    events = [
        *HOUSES,
        order("ann", "ask", 100_000, 3_000, T0 + 1, T0 + L),
        order("bob", "bid", 200_000, 3_000, T0 + 2, T0 + L),
        reading(ANN_METER, 1, 2_500, 0, start=T0),
        order("bob", "bid", 200_000, 1, T0 + L + 5, T0 + 2 * L),  # moves the clock past T0+L
    ]
    result = run(*events)
    assert sum(result.trades.qty) == 3_000  # without the reading only 1000 could clear
    without = run(*events[:-2], events[-1])
    assert sum(without.trades.qty) == 1_000
    led = settled(result, tmp_path / "l.db")
    kinds = [e.kind for e in led.entries()]
    assert kinds.index("reading") < kinds.index("trade")


def test_cda_a_reading_makes_a_resting_order_executable_and_the_ledger_agrees(tmp_path):
    events = [
        *HOUSES,
        order("bob", "bid", 200_000, 1_500, T0 + 1),
        order("ann", "ask", 150_000, 1_500, T0 + 2),  # ann holds 1000: 1000 fill, 500 rest
        reading(ANN_METER, 1, 900, 100, start=T0),  # +800: the resting 500 can now fill
        order("bob", "bid", 100_000, 10, T0 + 3),
    ]
    result = run(*events, mode="cda")
    assert result.trades.qty == [1_000, 500]
    assert closing(result, "ann") == (300, 10**12 + 1_500 * 200_000)
    led = settled(result, tmp_path / "l.db")
    kinds = [e.kind for e in led.entries() if e.kind in ("trade", "reading")]
    assert kinds == ["trade", "reading", "trade"]


def test_the_same_log_with_readings_gives_the_same_ledger(tmp_path) -> None:
    events = [*HOUSES, reading(ANN_METER, 1, 4_700, 200), reading(BOB_METER, 1, 0, 300),
              order("ann", "ask", 100_000, 100, T0 + 1, T0 + L),
              order("bob", "bid", 200_000, 100, T0 + 2, T0 + L)]  # fmt: skip
    heads = []
    for name in ("a.db", "b.db"):
        with settled(run(*events), tmp_path / name) as led:
            heads.append(led.head_text())
            assert {"grid_export", "grid_import"} <= {e.kind for e in led.entries()}
    assert heads[0] == heads[1]


@pytest.mark.parametrize(
    ("line", "code", "reason"),
    [
        (reading(generate_key(), 1, 1, 1), "reading-refused", "unknown-meter"),
        ({**reading(ANN_METER, 1, 1, 1), "produced": 2}, "reading-refused", "bad-signature"),
        (reading(ANN_METER, 1, 5_001, 0), "reading-refused", "impossible"),  # > 20 kW
        ({**reading(ANN_METER, 1, 1, 1), "end": "soon"}, "bad-record", "end"),
        (meter(generate_key(), "carol"), "meter-refused", "has no account line"),
        (meter(ANN_METER, "bob"), "meter-refused", "already registered"),
    ],
)  # fmt: skip
def test_refused_meter_and_reading_lines_change_nothing(line, code, reason) -> None:
    before = run(*HOUSES)
    result = run(*HOUSES, line)
    [reject] = result.rejects
    assert reject.code == code and reason in reject.reason
    assert result.closing == before.closing


def test_a_replayed_reading_is_refused() -> None:
    r = reading(ANN_METER, 1, 100, 0)
    result = run(*HOUSES, r, r)
    [reject] = result.rejects
    assert "out-of-order" in reject.reason and result.accepted["readings"] == 1
    assert closing(result, "ann")[0] == 1_100
