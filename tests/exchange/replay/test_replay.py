"""Replay of order logs (wattmesh.exchange.replay.replay): the rules of docs/replay.md."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.exchange.replay import outputs
from wattmesh.exchange.replay import replay as replay_module
from wattmesh.exchange.replay.outputs import write_outputs, write_trades
from wattmesh.exchange.replay.replay import (
    BadLineError,
    ReplayOptions,
    ReplayResult,
    Runs,
    order_key,
    replay,
)
from wattmesh.exchange.replay.sample_log import _key, write_log
from wattmesh.settlement.keys import peer_id_of, sign
from wattmesh.settlement.records import Cancel, Order, RecordError, parse_record

L = 900_000  # the default interval length
T0 = 1_718_928_000_000  # an interval start (2024-06-21 00:00 UTC)


# -- building logs ---------------------------------------------------------------------------


def fills(result: ReplayResult) -> list[dict[str, Any]]:
    return list(result.trade_rows())


def codes(result: ReplayResult) -> list[tuple[int, str]]:
    return [(r.line, r.code) for r in result.rejects]


# -- continuous double auction ---------------------------------------------------------------
def test_cda_applies_events_in_order_and_fills_at_the_resting_price(order_log):
    ask = order_log.order("seller", "ask", 200_000, 500, T0 + 1)
    bid = order_log.order("buyer", "bid", 250_000, 300, T0 + 2)
    result = order_log.replay(ask, bid, mode="cda")
    [fill] = fills(result)
    assert fill["price"] == 200_000  # the resting ask's price
    assert (fill["bid"], fill["ask"], fill["qty"]) == (bid["id"], ask["id"], 300)
    assert (fill["buyer"], fill["seller"]) == ("buyer", "seller")
    assert fill["interval"] is None and fill["ts"] == T0 + 2  # the causing event's time

    # The other way round the bid rests, so the fill is at the bid's price.
    [fill] = fills(order_log.replay(bid, ask, mode="cda"))
    assert fill["price"] == 250_000 and fill["ts"] == T0 + 1


def test_cda_order_matters_a_cancel_before_the_cross_prevents_the_fill(order_log):
    ask = order_log.order("seller", "ask", 200_000, 500, T0 + 1)
    bid = order_log.order("buyer", "bid", 250_000, 300, T0 + 3)
    assert (
        len(
            fills(
                order_log.replay(
                    ask, order_log.cancel(ask["id"], "seller", T0 + 2), bid, mode="cda"
                )
            )
        )
        == 0
    )
    result = order_log.replay(ask, bid, order_log.cancel(ask["id"], "seller", T0 + 4), mode="cda")
    assert len(fills(result)) == 1
    assert result.accepted["cancels"] == 1  # 200 Wh of the ask were still live


def test_cda_ioc_rest_is_dropped_and_gtc_rest_stays(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 + 1)
    ioc = order_log.order("buyer", "bid", 250_000, 300, T0 + 2, tif="ioc")
    late_ask = order_log.order("seller", "ask", 200_000, 100, T0 + 3)
    assert sum(f["qty"] for f in fills(order_log.replay(ask, ioc, late_ask, mode="cda"))) == 100
    gtc = order_log.order("buyer", "bid", 250_000, 300, T0 + 2)
    assert sum(f["qty"] for f in fills(order_log.replay(ask, gtc, late_ask, mode="cda"))) == 200


# -- call auction ----------------------------------------------------------------------------
def test_call_clears_one_interval_at_one_price(order_log):
    bid = order_log.order("buyer", "bid", 250_000, 400, T0 - 10, interval=T0)
    ask = order_log.order("seller", "ask", 200_000, 300, T0 - 5, interval=T0)
    result = order_log.replay(bid, ask)  # call is the default mode
    [fill] = fills(result)
    assert fill["price"] == (250_000 + 200_000) // 2
    assert fill["qty"] == 300 and fill["interval"] == T0 and fill["ts"] == T0  # at the gate
    [stats] = result.intervals
    assert (stats.interval, stats.price, stats.volume, stats.orders) == (T0, 225_000, 300, 2)


def test_call_refuses_orders_and_cancels_at_or_after_the_gate(order_log):
    on_time = order_log.order("seller", "ask", 200_000, 300, T0 - 1, interval=T0)
    at_gate = order_log.order("buyer", "bid", 250_000, 300, T0, interval=T0)
    after = order_log.order("buyer", "bid", 250_000, 300, T0 + 5, interval=T0)
    result = order_log.replay(
        on_time, at_gate, after, order_log.cancel(on_time["id"], "seller", T0 + 6)
    )
    assert codes(result) == [(2, "late"), (3, "late"), (4, "late")]
    assert "gate" in result.rejects[0].reason
    assert result.rejects[2].reason.startswith(f"cancel at ts {T0 + 6} is at or after the gate")
    assert fills(result) == []
    assert result.intervals[0].orders == 1  # only the order on time was in the auction


def test_call_refuses_an_order_for_an_interval_already_cleared(order_log):
    # The log reached T0 + L (clearing T0) before an order for T0 with an earlier ts came.
    first = order_log.order("seller", "ask", 200_000, 300, T0 + 10, interval=T0 + L)
    stale = order_log.order("buyer", "bid", 250_000, 300, T0 - 100, interval=T0)
    result = order_log.replay(first, stale)
    assert codes(result) == [(2, "late")]
    assert "already cleared" in result.rejects[0].reason


def test_call_clears_pending_intervals_in_ascending_order_before_the_event(order_log):
    # Orders for T0 + L arrive before the orders for T0; both intervals are pending until
    # an event at T0 + L clears T0 and then T0 + L, in that order.
    b2 = order_log.order("b2", "bid", 260_000, 100, T0 - 30, interval=T0 + L)
    a2 = order_log.order("a2", "ask", 100_000, 100, T0 - 20, interval=T0 + L)
    b1 = order_log.order("b1", "bid", 250_000, 100, T0 - 10, interval=T0)
    a1 = order_log.order("a1", "ask", 150_000, 100, T0 - 5, interval=T0)
    trigger = order_log.order("x", "bid", 1, 1, T0 + L, interval=T0 + 2 * L)
    result = order_log.replay(b2, a2, b1, a1, trigger)
    rows = fills(result)
    assert [(f["seq"], f["interval"], f["buyer"]) for f in rows] == [
        (1, T0, "b1"),
        (2, T0 + L, "b2"),
    ]
    assert [s.interval for s in result.intervals] == [T0, T0 + L, T0 + 2 * L]


def test_call_unmatched_orders_expire_when_their_interval_clears(order_log):
    bid = order_log.order("buyer", "bid", 250_000, 100, T0 - 10, interval=T0)
    ask = order_log.order(
        "seller", "ask", 200_000, 100, T0 + 10, interval=T0 + L
    )  # after T0 cleared
    result = order_log.replay(bid, ask, order_log.cancel(bid["id"], "buyer", T0 + 20))
    assert fills(result) == []  # the bid expired at T0; the ask is alone in T0 + L
    assert codes(result) == [(3, "late")]  # cancelling the expired bid is refused
    assert [(s.interval, s.orders, s.volume) for s in result.intervals] == [
        (T0, 1, 0),
        (T0 + L, 1, 0),
    ]


def test_call_clears_everything_pending_at_the_end_of_the_log(order_log):
    events = [
        order_log.order("b", "bid", 250_000, 100, T0 - 10, interval=T0 + k * L) for k in range(3)
    ]
    events += [
        order_log.order("s", "ask", 200_000, 100, T0 - 5, interval=T0 + k * L) for k in range(3)
    ]
    result = order_log.replay(*events)
    assert [f["interval"] for f in fills(result)] == [T0, T0 + L, T0 + 2 * L]


def test_call_refuses_orders_without_a_valid_interval(order_log):
    no_interval = order_log.order("b", "bid", 250_000, 100, T0 - 10)
    misaligned = order_log.order("b", "bid", 250_000, 100, T0 - 10, interval=T0 + 1)
    fok = order_log.order("b", "bid", 250_000, 100, T0 - 10, interval=T0, tif="fok")
    result = order_log.replay(no_interval, misaligned, fok)
    assert codes(result) == [(1, "no-interval"), (2, "no-interval"), (3, "unsupported-tif")]
    assert "is not the start of a 900000 ms interval" in result.rejects[1].reason
    # The same orders are fine in cda, where intervals play no part.
    assert order_log.replay(no_interval, misaligned, fok, mode="cda").rejects == []


def test_call_interval_length_is_an_option(order_log):
    bid = order_log.order("b", "bid", 250_000, 100, T0 - 10, interval=T0 + 60_000)
    ask = order_log.order("s", "ask", 200_000, 100, T0 - 5, interval=T0 + 60_000)
    assert codes(order_log.replay(bid, ask)) == [(1, "no-interval"), (2, "no-interval")]
    assert len(fills(order_log.replay(bid, ask, interval_ms=60_000))) == 1


def test_call_breaks_ties_by_order_id(order_log):
    # Two asks at one price and one ts: the call auction takes the smaller key first, and
    # the key of a hex id orders as the id does.
    asks = [order_log.order(f"s{i}", "ask", 200_000, 100, T0 - 5, interval=T0) for i in range(6)]
    bid = order_log.order("b", "bid", 250_000, 100, T0 - 1, interval=T0)
    [fill] = fills(order_log.replay(*asks, bid))
    assert fill["ask"] == min(a["id"] for a in asks)


@pytest.mark.parametrize("mode", ["cda", "call"])
def test_self_trade_prevention_reaches_the_engine(order_log, mode):
    ask = order_log.order("home", "ask", 200_000, 100, T0 - 10, interval=T0)
    bid = order_log.order("home", "bid", 250_000, 100, T0 - 5, interval=T0)
    assert (
        len(fills(order_log.replay(ask, bid, mode=mode))) == 1
    )  # stp none: a household may self-trade
    assert fills(order_log.replay(ask, bid, mode=mode, stp="cancel-resting")) == []
    assert fills(order_log.replay(ask, bid, mode=mode, stp="cancel-incoming")) == []


# -- cancels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["cda", "call"])
def test_a_cancel_by_anyone_but_the_owner_is_refused(order_log, mode):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 - 10, interval=T0)
    bid = order_log.order("buyer", "bid", 250_000, 100, T0 - 5, interval=T0)
    result = order_log.replay(ask, order_log.cancel(ask["id"], "mallory", T0 - 8), bid, mode=mode)
    assert codes(result) == [(2, "not-owner")]
    assert len(fills(result)) == 1  # the order stayed live and traded


@pytest.mark.parametrize("mode", ["cda", "call"])
def test_a_cancel_of_an_order_that_is_not_live_is_refused(order_log, mode):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 - 10, interval=T0)
    unknown = "f" * 64
    result = order_log.replay(
        ask,
        order_log.cancel(ask["id"], "seller", T0 - 9),
        order_log.cancel(ask["id"], "seller", T0 - 8),  # already cancelled
        order_log.cancel(unknown, "seller", T0 - 7),  # never seen
        mode=mode,
    )
    assert codes(result) == [(3, "not-live"), (4, "not-live")]
    assert result.accepted["cancels"] == 1


def test_a_cancel_of_a_filled_order_is_refused(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 + 1)
    bid = order_log.order("buyer", "bid", 250_000, 100, T0 + 2)
    result = order_log.replay(ask, bid, order_log.cancel(ask["id"], "seller", T0 + 3), mode="cda")
    assert codes(result) == [(3, "not-live")]


# -- ids and keys ----------------------------------------------------------------------------
def test_order_key_of_a_hex_id_is_its_first_16_hex_digits():
    oid = hashlib.sha256(b"x").hexdigest()
    assert order_key(oid) == int(oid[:16], 16)
    # Any other id string: the first 8 bytes of its SHA-256.
    assert order_key("o1") == int.from_bytes(hashlib.sha256(b"o1").digest()[:8], "big")
    assert order_key(oid.upper()) != int(oid[:16], 16)  # upper case is not a hex id


def test_only_lower_case_hex_ids_map_to_their_prefix_on_the_fast_path(order_log):
    # "A" * 64 and "a" * 64 differ as ids; only the second is a hex id, so their keys differ
    # and both stay live. A 64-character id that is not hex is hashed, not parsed.
    warmup = order_log.order("s", "ask", 300_000, 1, T0 + 1)
    lower = order_log.order("s", "ask", 200_000, 100, T0 + 2) | {"id": "a" * 64}
    upper = order_log.order("s", "ask", 210_000, 100, T0 + 3) | {"id": "A" * 64}
    not_hex = order_log.order("s", "ask", 220_000, 100, T0 + 4) | {"id": "g" * 64}
    bid = order_log.order("b", "bid", 250_000, 300, T0 + 5)
    result = order_log.replay(warmup, lower, upper, not_hex, bid, mode="cda")
    assert result.rejects == []
    assert [f["ask"] for f in fills(result)] == ["a" * 64, "A" * 64, "g" * 64]


def test_a_given_id_is_used_as_it_is(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 + 1) | {"id": "my-ask"}
    bid = order_log.order("buyer", "bid", 250_000, 100, T0 + 2)
    bid["id"] = "0" * 64  # a hex id that does not name the body: fine without verification
    result = order_log.replay(ask, bid, mode="cda")
    [fill] = fills(result)
    assert (fill["ask"], fill["bid"]) == ("my-ask", "0" * 64)
    # ... and a cancel names the order by the given id.
    assert (
        order_log.replay(ask, order_log.cancel("my-ask", "seller", T0 + 2), mode="cda").accepted[
            "cancels"
        ]
        == 1
    )


def test_a_missing_id_is_computed_from_the_body(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 + 1)
    computed = ask.pop("id")
    bid = order_log.order("buyer", "bid", 250_000, 100, T0 + 2)
    del bid["id"], bid["tif"], bid["interval"]  # defaults: tif gtc, interval null
    result = order_log.replay(ask, bid, mode="cda")
    [fill] = fills(result)
    assert fill["ask"] == computed
    assert fill["bid"] == Order("energy", "bid", 250_000, 100, "buyer", T0 + 2).computed_id()
    assert (
        order_log.replay(ask, order_log.cancel(computed, "seller", T0 + 2), mode="cda").accepted[
            "cancels"
        ]
        == 1
    )


def test_a_reused_order_id_is_refused(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 + 1)
    result = order_log.replay(ask, ask, mode="cda")
    assert codes(result) == [(2, "duplicate-id")]


@pytest.mark.parametrize("mode", ["cda", "call"])
def test_a_key_collision_between_live_orders_refuses_the_later_one(order_log, mode):
    prefix = "ab" * 8  # both ids start with the same 16 hex digits: the same engine key
    first = order_log.order("s1", "ask", 200_000, 100, T0 - 10, interval=T0) | {
        "id": prefix + "1" * 48
    }
    second = order_log.order("s2", "ask", 210_000, 100, T0 - 9, interval=T0) | {
        "id": prefix + "2" * 48
    }
    result = order_log.replay(first, second, mode=mode)
    assert codes(result) == [(2, "id-collision")]
    assert first["id"] in result.rejects[0].reason


def test_a_key_may_be_reused_once_its_order_is_no_longer_live(order_log):
    prefix = "cd" * 8
    first = order_log.order("s1", "ask", 200_000, 100, T0 + 1) | {"id": prefix + "1" * 48}
    bid = order_log.order("b", "bid", 250_000, 100, T0 + 2)  # fills the first ask completely
    second = order_log.order("s2", "ask", 210_000, 100, T0 + 3) | {"id": prefix + "2" * 48}
    bid2 = order_log.order("b", "bid", 250_000, 100, T0 + 4)
    result = order_log.replay(first, bid, second, bid2, mode="cda")
    assert result.rejects == []
    assert [f["ask"] for f in fills(result)] == [first["id"], second["id"]]


def test_call_a_cancelled_order_keeps_its_key_until_its_interval_clears(order_log):
    # The auction drops a cancelled key's rows at clearing, so another order may not take
    # the key before then: it is refused, never accepted and silently lost.
    prefix = "ef" * 8
    first = order_log.order("s1", "ask", 200_000, 100, T0 - 10, interval=T0) | {
        "id": prefix + "1" * 48
    }
    second = order_log.order("s2", "ask", 210_000, 100, T0 - 8, interval=T0) | {
        "id": prefix + "2" * 48
    }
    bid = order_log.order("b", "bid", 250_000, 100, T0 - 7, interval=T0)
    result = order_log.replay(
        first, order_log.cancel(first["id"], "s1", T0 - 9), second, bid, mode="call"
    )
    assert codes(result) == [(3, "id-collision")]
    assert fills(result) == []
    # Once the interval has cleared, the key is free for a later interval.
    later = T0 + 900_000
    third = order_log.order("s2", "ask", 210_000, 100, later - 8, interval=later) | {
        "id": prefix + "3" * 48
    }
    bid2 = order_log.order("b", "bid", 250_000, 100, later - 7, interval=later)
    result = order_log.replay(
        first, order_log.cancel(first["id"], "s1", T0 - 9), third, bid2, mode="call"
    )
    assert result.rejects == []
    assert [f["ask"] for f in fills(result)] == [third["id"]]


# -- signatures ------------------------------------------------------------------------------
KEY_A, KEY_B = _key(99, 0), _key(99, 1)
ALICE, BOB = peer_id_of(KEY_A), peer_id_of(KEY_B)


def signed_order(key, side: str, price: int, ts: int, **fields: Any) -> dict[str, Any]:
    o = Order("energy", side, price, 100, peer_id_of(key), ts, T0, "gtc", **fields)
    return o.signed(key).to_dict()


def test_verify_signatures_accepts_orders_and_cancels_signed_by_their_owners(order_log):
    ask = signed_order(KEY_A, "ask", 200_000, T0 - 10)
    bid = signed_order(KEY_B, "bid", 250_000, T0 - 5)
    gone = signed_order(KEY_B, "bid", 240_000, T0 - 4)
    cancel_gone = Cancel(gone["id"], BOB, T0 - 3).signed(KEY_B).to_dict()
    result = order_log.replay(ask, bid, gone, cancel_gone, verify_signatures=True)
    assert result.rejects == [] and len(fills(result)) == 1
    assert result.accepted["cancels"] == 1


def test_verify_signatures_refuses_a_forged_signature_a_tampered_body_and_no_signature(order_log):
    forged_order = Order("energy", "ask", 200_000, 100, ALICE, T0 - 10, T0)
    forged = forged_order.to_dict() | {"sig": sign(KEY_B, forged_order.body())}  # Bob signed
    tampered = signed_order(KEY_A, "ask", 200_000, T0 - 9) | {"price": 100_000}
    tampered_with_id = dict(tampered)
    tampered_with_id.pop("id")  # the id is then computed from the tampered body...
    unsigned = order_log.order(ALICE, "ask", 200_000, 100, T0 - 8, interval=T0)
    alice_cancel = Cancel(unsigned["id"], ALICE, T0 - 7)
    bad_cancel = alice_cancel.to_dict() | {"sig": sign(KEY_B, alice_cancel.body())}
    result = order_log.replay(
        forged, tampered, tampered_with_id, unsigned, bad_cancel, verify_signatures=True
    )
    assert codes(result) == [(i, "bad-signature") for i in range(1, 6)]
    assert result.rejects[1].reason.startswith("id: does not match")
    assert result.rejects[2].reason.startswith("sig: not a valid signature")  # ...sig fails
    assert result.rejects[3].reason.startswith("sig: missing")
    # Without verification all of them are accepted as they are.
    assert order_log.replay(forged, tampered, tampered_with_id, unsigned, mode="cda").rejects == []


def test_strict_stops_at_a_bad_signature(order_log):
    unsigned = order_log.order(ALICE, "ask", 200_000, 100, T0 - 8, interval=T0)
    with pytest.raises(BadLineError) as err:
        order_log.replay(
            order_log.order(ALICE, "ask", 1, 1, 0) | {"sig": "0" * 128},
            unsigned,
            strict=True,
            verify_signatures=True,
        )
    assert err.value.reject.line == 1 and err.value.reject.code == "bad-signature"


# -- bad lines -------------------------------------------------------------------------------
# A valid order line and account line, each made bad by one field below.
_GOOD_ORDER = Order("energy", "bid", 5, 5, "b", 5, None).to_dict()
_GOOD_ACCOUNT = {"type": "account", "owner": "z", "energy": 0, "money": 0, "bmax": None}
BAD_LINES = [
    ("not json at all", "bad-json", "not JSON"),
    ('{"type": "order", "side": ', "bad-json", "not JSON"),
    ("[1, 2, 3]", "bad-record", "must be a JSON object"),
    ('{"type": "trade", "owner": "x"}', "bad-record", "type"),
    ('{"owner": "x", "energy": 1, "money": 1, "bmax": null}', "bad-record", "type: missing"),
    (
        orjson.dumps({k: v for k, v in _GOOD_ORDER.items() if k != "qty"}),
        "bad-record",
        "qty: missing",
    ),
    (orjson.dumps(_GOOD_ORDER | {"price": "5"}), "bad-record", "price:"),
    (orjson.dumps(_GOOD_ORDER | {"price": 5.0}), "bad-record", "price:"),
    (orjson.dumps(_GOOD_ORDER | {"price": True}), "bad-record", "price:"),
    (orjson.dumps(_GOOD_ORDER | {"price": 10**7 + 1}), "bad-record", "price:"),
    (orjson.dumps(_GOOD_ORDER | {"qty": 0}), "bad-record", "qty:"),
    (orjson.dumps(_GOOD_ORDER | {"qty": 2**31}), "bad-record", "qty:"),
    (orjson.dumps(_GOOD_ORDER | {"side": "buy"}), "bad-record", "side:"),
    (orjson.dumps(_GOOD_ORDER | {"side": ["bid"]}), "bad-record", "side:"),
    (orjson.dumps(_GOOD_ORDER | {"tif": "day"}), "bad-record", "tif:"),
    (orjson.dumps(_GOOD_ORDER | {"ts": -1}), "bad-record", "ts:"),
    (orjson.dumps(_GOOD_ORDER | {"owner": ""}), "bad-record", "owner:"),
    (orjson.dumps(_GOOD_ORDER | {"colour": "red"}), "bad-record", "colour:"),
    (orjson.dumps(_GOOD_ORDER | {"sig": "xyz"}), "bad-record", "sig:"),
    ('{"type": "cancel", "id": "x", "owner": "b"}', "bad-record", "ts: missing"),
    (orjson.dumps(_GOOD_ACCOUNT | {"energy": -1}), "bad-record", "energy:"),
    (orjson.dumps(_GOOD_ACCOUNT | {"money": 2**62}), "bad-record", "money:"),
]


@pytest.mark.parametrize(("line", "code", "reason"), BAD_LINES)
@pytest.mark.parametrize("mode", ["cda", "call"])
def test_a_bad_line_is_refused_with_its_line_number_and_reason_and_replay_goes_on(
    order_log, line, code, reason, mode
):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 - 10, interval=T0)
    bid = order_log.order("buyer", "bid", 250_000, 100, T0 - 5, interval=T0)
    # A known owner and market first, so the bad order line meets the fast path too.
    warmup = order_log.order("b", "bid", 5, 5, 5, interval=T0)
    result = order_log.replay(warmup, ask, line, bid, mode=mode)
    [reject] = result.rejects
    assert (reject.line, reject.code) == (3, code)
    assert reason in reject.reason
    assert reject.text == (line.decode() if isinstance(line, bytes) else line)
    assert len(fills(result)) == 1  # the good lines around it still trade


def test_strict_stops_at_the_first_bad_line(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 - 10, interval=T0)
    with pytest.raises(BadLineError) as err:
        order_log.replay(ask, "{oops", '{"type": "nope"}', strict=True)
    assert err.value.reject.line == 2 and err.value.reject.code == "bad-json"
    assert str(err.value).startswith("line 2: bad-json: not JSON")


def test_strict_goes_on_past_refusals_under_the_market_rules(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 - 10, interval=T0)
    late = order_log.order("buyer", "bid", 250_000, 100, T0 + 1, interval=T0)
    result = order_log.replay(
        ask, late, order_log.cancel(ask["id"], "mallory", T0 + 2), strict=True
    )
    assert [code for _line, code in codes(result)] == ["late", "not-owner"]


def test_blank_lines_are_skipped_and_not_counted(order_log):
    ask = order_log.order("seller", "ask", 200_000, 100, T0 + 1)
    result = order_log.replay("", ask, "   ", "\r", mode="cda")
    assert result.rejects == [] and result.events == 1


def test_crlf_line_ends_and_a_byte_order_mark_are_accepted(order_log):
    ask = orjson.dumps(order_log.order("seller", "ask", 200_000, 100, T0 + 1))
    bid = orjson.dumps(order_log.order("buyer", "bid", 250_000, 100, T0 + 2))
    data = b"\xef\xbb\xbf" + ask + b"\r\n" + bid + b"\r\n"
    result = replay(io.BytesIO(data), ReplayOptions(mode="cda"))
    assert result.rejects == [] and len(fills(result)) == 1


def test_progress_reports_the_bytes_read_up_to_the_whole_file(monkeypatch, tmp_path):
    path = tmp_path / "day.jsonl"
    write_log(path, households=6, seed=3, sign=False)
    monkeypatch.setattr(replay_module, "CHUNK_BYTES", 4096)
    seen: list[int] = []
    replay(path, ReplayOptions(), on_progress=seen.append)
    assert len(seen) > 3 and seen == sorted(seen) and seen[-1] == path.stat().st_size


def test_lines_split_across_read_chunks_replay_the_same(monkeypatch, tmp_path):
    path = tmp_path / "day.jsonl"
    write_log(path, households=6, seed=3, sign=False)
    whole = replay(path, ReplayOptions(mode="cda"))
    monkeypatch.setattr(replay_module, "CHUNK_BYTES", 97)  # far smaller than a line
    pieces = replay(path, ReplayOptions(mode="cda"))
    assert fills(pieces) == fills(whole) and pieces.events == whole.events > 100


# -- the fast path never accepts what settlement.records refuses ------------------------------
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["bid", "ask", "gtc", "ioc", "fok", "energy", "b", "", "x" * 129]),
    st.sampled_from(["a" * 64, "A" * 64, "a" * 63, "g" * 64, "0" * 128, "0" * 127]),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=2),
)
_fields = ["type", "market", "side", "price", "qty", "owner", "ts", "interval", "tif", "id"]


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from([*_fields, "sig", "extra"]), _values, max_size=3),
    drop=st.sets(st.sampled_from(_fields), max_size=2),
)
def test_a_line_is_refused_as_a_bad_record_exactly_when_records_refuses_it(
    order_log, changes, drop
):
    line = order_log.order("b", "bid", 250_000, 100, T0 - 5, interval=T0) | {"id": "e" * 64}
    line.update(changes)
    for name in drop:
        line.pop(name, None)
    warmup = order_log.order("b", "ask", 300_000, 1, T0 - 10, interval=T0)  # known owner and market
    result = order_log.replay(warmup, line, mode="cda")
    try:
        record = parse_record(orjson.loads(orjson.dumps(line)))
        refused_by_records = isinstance(record, Order) and record.qty > 2**31 - 1
    except RecordError:
        refused_by_records = True
    assert (result.rejects != [] and result.rejects[0].code == "bad-record") == (refused_by_records)


# -- accounts --------------------------------------------------------------------------------
def test_accounts_cap_trading_and_owners_without_one_trade_freely(order_log):
    result = order_log.replay(
        order_log.account("seller", 50, 0, bmax=1_000),
        order_log.account("buyer", 0, 10 * 200_000, bmax=None),  # money for 10 Wh at 200000
        order_log.order("seller", "ask", 200_000, 100, T0 + 1),
        order_log.order("buyer", "bid", 200_000, 100, T0 + 2),
        order_log.order("free", "bid", 200_000, 100, T0 + 3),  # no account: no caps
        mode="cda",
    )
    rows = fills(result)
    assert [(f["buyer"], f["qty"]) for f in rows] == [("buyer", 10), ("free", 40)]
    handles = {owner: h for h, owner in enumerate(result.owners)}
    assert result.closing[handles["seller"]] == (0, 50 * 200_000, 1_000)
    assert result.closing[handles["buyer"]] == (10, 0, None)


def test_an_account_line_after_the_owners_first_order_or_twice_is_refused(order_log):
    result = order_log.replay(
        order_log.account("a", 100, 0),
        order_log.order("b", "bid", 200_000, 100, T0 + 1),
        order_log.account("b", 0, 0),
        order_log.account("a", 5, 5),
        mode="cda",
    )
    assert codes(result) == [(3, "account-refused"), (4, "account-refused")]
    assert "already has orders" in result.rejects[0].reason
    assert "line 1" in result.rejects[1].reason
    assert result.accepted["accounts"] == 1


# -- outputs ---------------------------------------------------------------------------------
def sample_day(mode: str, **options: Any) -> ReplayResult:
    return replay(None, ReplayOptions(mode=mode, **options))


@pytest.mark.parametrize("mode", ["cda", "call"])
def test_the_bundled_sample_trades_and_conserves_energy_and_money(mode):
    result = sample_day(mode)
    assert len(result.trades) > 100 and result.accepted["accounts"] == 24
    assert result.refused().keys() <= {"not-live"}  # cda: cancels of orders already filled
    opening, closing = result.opening, result.closing
    assert sum(v[0] for v in opening.values()) == sum(v[0] for v in closing.values())
    assert sum(v[1] for v in opening.values()) == sum(v[1] for v in closing.values())
    for energy, money, bmax in closing.values():
        assert energy >= 0 and money >= 0 and (bmax is None or energy <= bmax)
    # Each account moved by exactly its fills.
    for h, (energy, _money, _bmax) in closing.items():
        bought = sum(f["qty"] for f in fills(result) if f["buyer"] == result.owners[h])
        sold = sum(f["qty"] for f in fills(result) if f["seller"] == result.owners[h])
        assert energy == opening[h][0] + bought - sold


def test_the_bundled_sample_is_signed_and_passes_verification():
    result = sample_day("call", verify_signatures=True)
    assert result.rejects == [] and len(result.trades) > 100


def test_the_bundled_sample_is_what_the_generator_writes():
    out = io.BytesIO()
    write_log(out, households=24, seed=1)
    assert out.getvalue() == replay_module.bundled_sample().read_bytes()


def write_all(result: ReplayResult, directory: Path) -> dict[str, bytes]:
    write_outputs(result, directory)
    with open(directory / "trades.jsonl", "wb") as fp:
        write_trades(result, fp)
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("mode", ["cda", "call"])
def test_the_same_log_gives_the_same_bytes_out(tmp_path, mode):
    first = write_all(sample_day(mode), tmp_path / "one")
    second = write_all(sample_day(mode), tmp_path / "two")
    assert first == second
    refused = {"rejects.jsonl"} if sample_day(mode).rejects else set()  # only then
    assert set(first) == {
        "accounts.csv", "intervals.csv", "summary.json", "trades.csv", "trades.jsonl",
        "accounts.parquet", "intervals.parquet", "rejects.parquet", "trades.parquet",
    } | refused  # fmt: skip


@pytest.mark.parametrize("mode", ["cda", "call"])
def test_out_files_have_their_columns_and_agree_with_the_trades_file(tmp_path, mode):
    result = sample_day(mode)
    files = write_all(result, tmp_path)
    with open(tmp_path / "trades.csv", newline="") as fp:
        rows = list(csv.DictReader(fp))
    assert list(rows[0]) == list(outputs.TRADE_COLUMNS)
    jsonl = [orjson.loads(line) for line in files["trades.jsonl"].splitlines()]
    assert len(rows) == len(jsonl) == len(result.trades)
    assert list(jsonl[0]) == list(outputs.TRADE_FIELDS)
    for row, trade in zip(rows, jsonl, strict=True):
        assert list(row.values()) == ["" if v is None else str(v) for v in trade.values()]

    with open(tmp_path / "intervals.csv", newline="") as fp:
        intervals = list(csv.DictReader(fp))
    assert list(intervals[0]) == list(outputs.INTERVAL_COLUMNS)
    assert sum(int(r["volume_wh"]) for r in intervals) == sum(t["qty"] for t in jsonl)
    assert sum(int(r["fills"]) for r in intervals) == len(jsonl)

    with open(tmp_path / "accounts.csv", newline="") as fp:
        accounts = list(csv.DictReader(fp))
    assert list(accounts[0]) == list(outputs.ACCOUNT_COLUMNS)
    for row in accounts:
        assert int(row["energy_wh"]) == int(row["energy_start_wh"]) + int(row["bought_wh"]) - int(
            row["sold_wh"]
        )
    assert sum(int(r["bought_wh"]) for r in accounts) == sum(t["qty"] for t in jsonl)

    summary = orjson.loads(files["summary.json"])
    assert summary["fills"] == len(jsonl) and summary["mode"] == mode
    assert summary["volume_wh"] == sum(t["qty"] for t in jsonl)
    rejects = [orjson.loads(line) for line in files.get("rejects.jsonl", b"").splitlines()]
    assert len(rejects) == summary["refused"]
    assert all(set(r) == {"line", "code", "reason", "text"} for r in rejects)


def test_call_intervals_report_the_clearing_price_of_their_fills(tmp_path):
    result = sample_day("call")
    by_interval: dict[int, set[int]] = {}
    for f in fills(result):
        by_interval.setdefault(f["interval"], set()).add(f["price"])
    for stats in result.intervals:
        if stats.fills:
            assert by_interval[stats.interval] == {stats.price}
        assert stats.executable_orders <= stats.orders


def test_outputs_escape_odd_owner_and_id_strings_like_orjson_and_csv(order_log, tmp_path):
    odd_owner = 'Ann "the sun", Flat 3\nNorth – ☀'
    ask = order_log.order(odd_owner, "ask", 200_000, 100, T0 + 1) | {"id": 'a,"b"\\c\td'}
    bid = order_log.order("plain", "bid", 250_000, 100, T0 + 2)
    result = order_log.replay(ask, bid, mode="cda")
    out = io.BytesIO()
    write_trades(result, out)
    assert out.getvalue() == b"".join(orjson.dumps(row) + b"\n" for row in result.trade_rows())
    write_outputs(result, tmp_path)
    with open(tmp_path / "trades.csv", newline="", encoding="utf-8") as fp:
        [row] = list(csv.DictReader(fp))
    assert (row["seller"], row["ask"], row["bid"]) == (odd_owner, 'a,"b"\\c\td', bid["id"])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        [1, "cda", "", T0 + 2, "plain", odd_owner, bid["id"], 'a,"b"\\c\td', 100, 200_000]
    )
    trades_csv = (tmp_path / "trades.csv").read_text(encoding="utf-8")
    assert trades_csv.split("\n", 1)[1] == buffer.getvalue()  # what csv.writer writes


def test_rejects_jsonl_is_written_only_when_a_line_was_refused(tmp_path, order_log):
    """No rejects: no file (an empty one is no valid NDJSON), and an earlier run's goes."""
    out = tmp_path / "out"
    bad = order_log.replay(b"not json", order_log.account("a", 1, 1))
    write_outputs(bad, out)
    [reject] = [orjson.loads(x) for x in (out / "rejects.jsonl").read_bytes().splitlines()]
    assert (reject["line"], reject["code"]) == (1, "bad-json")
    write_outputs(order_log.replay(order_log.account("a", 1, 1)), out)
    assert not (out / "rejects.jsonl").exists()
    assert orjson.loads((out / "summary.json").read_bytes())["refused"] == 0


def test_the_docs_show_the_sample_ledger_as_it_is_written(tmp_path, console, monkeypatch):
    """docs/replay.md's `replay --ledger audit.db` lines are what the command writes today."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    code, _out, err = console("replay", "--ledger", "audit.db")
    assert code == 0, err
    [written] = [x for x in err.splitlines() if x.startswith("ledger audit.db:")]
    doc = (Path(__file__).resolve().parents[3] / "docs" / "replay.md").read_text()
    assert written in doc
    code, out, _err = console("ledger", "verify", "audit.db")
    assert code == 0 and out.strip() in doc


RUN_VALUES = st.sampled_from([None, 0, 1, 1_000, "energy", "heat", ""])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(RUN_VALUES, st.integers(0, 5)), max_size=12), st.data())
def test_a_runs_column_reads_as_the_list_it_stands_for(runs, data):
    """The fills' interval and market columns (Runs) read exactly like plain lists: index,
    slice, iteration and length; 0 and None never share a run."""
    column, plain = Runs(), []
    for value, count in runs:
        if count == 1 and data.draw(st.booleans()):
            column.append(value)
        else:
            column.extend(value, count)
        plain += [value] * count
    assert len(column) == len(plain) and list(column) == plain
    assert [type(v) for v in column] == [type(v) for v in plain]
    if plain:
        i = data.draw(st.integers(-len(plain), len(plain) - 1))
        assert column[i] == plain[i] and type(column[i]) is type(plain[i])
    a, b = data.draw(st.integers(-3, len(plain) + 3)), data.draw(st.integers(-3, len(plain) + 3))
    step = data.draw(st.sampled_from([None, 1, 2, -1]))
    assert column[a:b:step] == plain[a:b:step]
    with pytest.raises(IndexError):
        column[len(plain)]
