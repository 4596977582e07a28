"""Issue 11's logs, replayed in cda mode: each failed before the engine kept its own
priority rule (docs/matching.md) in every corner."""

from __future__ import annotations

import io

import orjson
import pytest

from wattmesh.exchange.replay import replay as replay_module
from wattmesh.exchange.replay.replay import ReplayOptions, ReplayResult, replay
from wattmesh.settlement.records import Cancel, Order


def run_lines(text: str, **options) -> ReplayResult:
    return replay(io.BytesIO(text.encode()), ReplayOptions(mode="cda", **options))


def trades(result: ReplayResult) -> list[tuple]:
    return [(t["bid"], t["ask"], t["price"], t["qty"]) for t in result.trade_rows()]


LOG_PRIORITY = """\
{"type":"account","owner":"A","energy":1,"money":1000000000,"bmax":2}
{"type":"order","market":"m","side":"bid","price":200000,"qty":2,"owner":"A","ts":1,"id":"b1"}
{"type":"order","market":"m","side":"bid","price":190000,"qty":5,"owner":"B","ts":2,"id":"b2"}
{"type":"order","market":"m","side":"ask","price":190000,"qty":3,"owner":"A","ts":3,"id":"a1"}
"""

LOG_SELF_CASCADE = """\
{"type":"account","owner":"A","energy":1,"money":1000000000000,"bmax":2}
{"type":"order","market":"m","side":"bid","price":200000,"qty":1000,"owner":"A","ts":1,"id":"b"}
{"type":"order","market":"m","side":"ask","price":200000,"qty":1000,"owner":"A","ts":2,"id":"a"}
"""


def test_the_walk_stays_on_an_earlier_better_bid_that_can_still_execute():
    result = run_lines(LOG_PRIORITY, stp="none")
    # b1 takes its 2 Wh (a self-match: no cap binds it) before B's worse bid trades.
    assert trades(result) == [("b1", "a1", 200000, 2), ("b2", "a1", 190000, 1)]
    assert result.closing[0] == (0, 1_000_000_000 + 190000, 2)


def test_a_self_match_is_one_fill_not_one_per_watt_hour():
    result = run_lines(LOG_SELF_CASCADE, stp="none")
    assert trades(result) == [("b", "a", 200000, 1000)]  # was 1,000 fills of 1 Wh
    assert result.closing[0] == (1, 1_000_000_000_000, 2)  # it moved nothing


@pytest.mark.parametrize("stp", ["cancel-resting", "cancel-incoming"])
def test_under_prevention_the_self_pair_does_not_trade(stp):
    result = run_lines(LOG_SELF_CASCADE, stp=stp)
    assert trades(result) == []


T = 1_718_928_000_000


@pytest.fixture
def order(make_order):
    """``owner``'s unsigned 1 Wh order on ``market`` (no interval: a continuous log)."""

    def build(market: str, side: str, owner: str, ts: int, price: int = 200_000) -> Order:
        return make_order(owner, side, price, 1, ts, market=market)

    return build


def two_market_log(order) -> tuple[str, dict[str, Order], Cancel]:
    """alice's energy bid waits for money; her heat sale pays for it; then a cancel of an
    order that is no longer live (refused) comes later on the energy book."""
    o = {
        "bob_heat_bid": order("heat", "bid", "bob", T),
        "alice_bid": order("energy", "bid", "alice", T),  # alice has no money yet
        "bob_ask": order("energy", "ask", "bob", T),  # crosses alice's bid
        "alice_heat_ask": order("heat", "ask", "alice", T + 1),  # pays alice
    }
    refused = Cancel(o["bob_heat_bid"].id, "bob", T + 5)  # filled at T + 1: not live
    lines = ['{"type":"account","owner":"alice","energy":1,"money":0,"bmax":null}']
    lines += [orjson.dumps(x.to_dict()).decode() for x in o.values()]
    lines.append(orjson.dumps(refused.to_dict()).decode())
    return "\n".join(lines) + "\n", o, refused


@pytest.mark.parametrize("fast", [True, False])
def test_a_fill_in_one_market_re_crosses_another_at_once_and_a_refused_cancel_does_nothing(
    order, monkeypatch, fast
):
    monkeypatch.setattr(replay_module, "_FAST_SCAN", fast)
    text, o, refused = two_market_log(order)
    result = run_lines(text)
    t = result.trades
    rows = list(zip(t.ts, t.market, t.bid, t.ask, strict=True))
    assert rows == [
        (T + 1, "heat", o["bob_heat_bid"].id, o["alice_heat_ask"].id),
        (T + 1, "energy", o["alice_bid"].id, o["bob_ask"].id),  # in the same event
    ]
    assert [(r.code, r.line) for r in result.rejects] == [("not-live", 6)]
    assert result.accepted["cancels"] == 0
