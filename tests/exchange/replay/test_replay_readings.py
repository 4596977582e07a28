"""Meter readings in order logs: applied by ``wattmesh replay`` and settled by ``--ledger``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wattmesh.exchange.replay.replay import (
    DEFAULT_FEEDIN_PRICE,
    DEFAULT_RETAIL_PRICE,
    ReplayResult,
)
from wattmesh.exchange.replay.to_ledger import settle_into_ledger
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.ledger import Ledger

L = 900_000
T0 = 1_718_928_000_000
ANN_METER = generate_key()
BOB_METER = generate_key()


def meter(key, owner: str, max_power_w: int | None = None) -> dict[str, Any]:
    d = {"type": "meter", "meter": peer_id_of(key), "owner": owner}
    if max_power_w is not None:
        d["max_power_w"] = max_power_w
    return d


@pytest.fixture
def reading(make_reading):
    """The log line of meter ``key``'s ``seq``-th reading (one interval each, from T0 - L)."""

    def build(key, seq: int, produced: int, consumed: int, start: int = T0 - L) -> dict[str, Any]:
        return make_reading(key, start + (seq - 1) * L, produced, consumed, seq, L).to_dict()

    return build


def closing(result: ReplayResult, owner: str) -> tuple[int, int]:
    energy, money, _bmax = result.closing[result.owners.index(owner)]
    return energy, money


@pytest.fixture
def settled(ledger_agrees):
    """``settled(result, path)``: settle into a ledger and check what every replay ledger
    must satisfy; the ledger, open."""

    def settle(result: ReplayResult, path: Path) -> Ledger:
        settle_into_ledger(result, path)
        return ledger_agrees(result, path)

    return settle


HOUSES = (  # two account lines and their meters
    {"type": "account", "owner": "ann", "energy": 1_000, "money": 10**12, "bmax": 5_000},
    {"type": "account", "owner": "bob", "energy": 0, "money": 10**12, "bmax": 20_000},
    meter(ANN_METER, "ann", max_power_w=20_000),
    meter(BOB_METER, "bob"),
)


def test_readings_change_balances_as_design_says(reading, order_log) -> None:
    result = order_log.replay(
        *HOUSES,
        reading(ANN_METER, 1, 4_700, 200),  # 1000 + 4500 -> 5000 at Bmax, 500 exported
        reading(BOB_METER, 1, 0, 300),  # bob holds nothing: 300 imported
    )
    assert result.accepted["meters"] == 2 and result.accepted["readings"] == 2
    assert closing(result, "ann") == (5_000, 10**12 + 500 * DEFAULT_FEEDIN_PRICE)
    assert closing(result, "bob") == (0, 10**12 - 300 * DEFAULT_RETAIL_PRICE)
    s = result.summary()
    assert (s["readings"], s["exported_wh"], s["imported_wh"]) == (2, 500, 300)


def test_a_reading_before_the_gate_lets_a_household_sell_what_it_produced(
    reading, settled, order_log, tmp_path
) -> None:
    # ann holds 1000 Wh and asks 3000; her panels produce 2500 more before the gate.
    events = [
        *HOUSES,
        order_log.order("ann", "ask", 100_000, 3_000, T0 + 1, T0 + L),
        order_log.order("bob", "bid", 200_000, 3_000, T0 + 2, T0 + L),
        reading(ANN_METER, 1, 2_500, 0, start=T0),
        order_log.order(
            "bob", "bid", 200_000, 1, T0 + L + 5, T0 + 2 * L
        ),  # moves the clock past T0+L
    ]
    result = order_log.replay(*events)
    assert sum(result.trades.qty) == 3_000  # without the reading only 1000 could clear
    without = order_log.replay(*events[:-2], events[-1])
    assert sum(without.trades.qty) == 1_000
    led = settled(result, tmp_path / "l.db")
    kinds = [e.kind for e in led.entries()]
    assert kinds.index("reading") < kinds.index("trade")


def test_cda_a_reading_makes_a_resting_order_executable_and_the_ledger_agrees(
    reading, settled, order_log, tmp_path
):
    events = [
        *HOUSES,
        order_log.order("bob", "bid", 200_000, 1_500, T0 + 1),
        order_log.order(
            "ann", "ask", 150_000, 1_500, T0 + 2
        ),  # ann holds 1000: 1000 fill, 500 rest
        reading(ANN_METER, 1, 900, 100, start=T0),  # +800: the resting 500 can now fill
        order_log.order("bob", "bid", 100_000, 10, T0 + 3),
    ]
    result = order_log.replay(*events, mode="cda")
    assert list(result.trades.qty) == [1_000, 500]
    assert closing(result, "ann") == (300, 10**12 + 1_500 * 200_000)
    led = settled(result, tmp_path / "l.db")
    kinds = [e.kind for e in led.entries() if e.kind in ("trade", "reading")]
    assert kinds == ["trade", "reading", "trade"]


def test_the_same_log_with_readings_gives_the_same_ledger(
    reading, settled, order_log, tmp_path
) -> None:
    events = [*HOUSES, reading(ANN_METER, 1, 4_700, 200), reading(BOB_METER, 1, 0, 300),
              order_log.order("ann", "ask", 100_000, 100, T0 + 1, T0 + L),
              order_log.order("bob", "bid", 200_000, 100, T0 + 2, T0 + L)]  # fmt: skip
    heads = []
    for name in ("a.db", "b.db"):
        with settled(order_log.replay(*events), tmp_path / name) as led:
            heads.append(led.head_text())
            assert {"grid_export", "grid_import"} <= {e.kind for e in led.entries()}
    assert heads[0] == heads[1]


@pytest.mark.parametrize(
    ("line_of", "code", "reason"),
    [
        (lambda r: r(generate_key(), 1, 1, 1), "reading-refused", "unknown-meter"),
        (lambda r: {**r(ANN_METER, 1, 1, 1), "produced": 2}, "reading-refused", "bad-signature"),
        (lambda r: r(ANN_METER, 1, 5_001, 0), "reading-refused", "impossible"),  # > 20 kW
        (lambda r: {**r(ANN_METER, 1, 1, 1), "end": "soon"}, "bad-record", "end"),
        (lambda r: meter(generate_key(), "carol"), "meter-refused", "has no account line"),
        (lambda r: meter(ANN_METER, "bob"), "meter-refused", "already registered"),
    ],
)  # fmt: skip
def test_refused_meter_and_reading_lines_change_nothing(
    reading, order_log, line_of, code, reason
) -> None:
    line = line_of(reading)  # the reading builder is a fixture: lines are made per test
    before = order_log.replay(*HOUSES)
    result = order_log.replay(*HOUSES, line)
    [reject] = result.rejects
    assert reject.code == code and reason in reject.reason
    assert result.closing == before.closing


def test_a_replayed_reading_is_refused(reading, order_log) -> None:
    r = reading(ANN_METER, 1, 100, 0)
    result = order_log.replay(*HOUSES, r, r)
    [reject] = result.rejects
    assert "out-of-order" in reject.reason and result.accepted["readings"] == 1
    assert closing(result, "ann")[0] == 1_100
