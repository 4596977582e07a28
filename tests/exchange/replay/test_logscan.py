"""The C line scanner (wattmesh.exchange.replay._logscan) against the Python path of replay.

The Python path (every line through orjson and settlement.records) is the reference: with
the scanner on, a replay must give exactly the same fills, refusals (line, code, reason,
text), accounts, intervals and summary, whatever the lines look like.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
from array import array
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattmesh.exchange.engine_keys import order_key
from wattmesh.exchange.replay import replay as replay_module
from wattmesh.exchange.replay._logscan import id_key, volume_turnover
from wattmesh.exchange.replay.replay import ReplayOptions, ReplayResult, replay
from wattmesh.exchange.replay.sample_log import write_log
from wattmesh.settlement.records import Cancel, Order

L = 900_000
T0 = 1_718_928_000_000
OWNERS = ["alice", "bob", "carol", "dé", 'e"q']  # the last two need escapes or UTF-8
MARKETS = ["energy", "heat"]


# How many lines took the Python path differs by design (everything does, without the
# scanner); every other figure must not.
_PATH_FIGURES = ("python_path_lines", "python_path_by_reason")


def outcome(result: ReplayResult) -> dict[str, Any]:
    """Everything a replay reports, as plain values (but which path the lines took)."""
    summary = {k: v for k, v in result.summary().items() if k not in _PATH_FIGURES}
    return {
        "summary": summary,
        "trades": list(result.trade_rows()),
        "rejects": list(result.rejects),
        "intervals": list(result.intervals),
        "owners": list(result.owners),
        "opening": dict(result.opening),
        "closing": dict(result.closing),
    }


def replay_both(
    data: bytes, chunk: int | None = None, thread_bytes: int | None = None, **options: Any
) -> tuple[dict, dict]:
    """(scanner on, Python path only) outcomes of one log; ``chunk`` bytes read at a time,
    and the lines of chunks of at least ``thread_bytes`` read on the reader thread."""
    saved = replay_module._FAST_SCAN, replay_module.CHUNK_BYTES, replay_module.PARSE_THREAD_BYTES
    try:
        if chunk is not None:
            replay_module.CHUNK_BYTES = chunk
        if thread_bytes is not None:
            replay_module.PARSE_THREAD_BYTES = thread_bytes
        replay_module._FAST_SCAN = True
        fast = outcome(replay(io.BytesIO(data), ReplayOptions(**options)))
        replay_module._FAST_SCAN = False
        slow = outcome(replay(io.BytesIO(data), ReplayOptions(**options)))
    finally:
        (replay_module._FAST_SCAN, replay_module.CHUNK_BYTES,
         replay_module.PARSE_THREAD_BYTES) = saved  # fmt: skip
    return fast, slow


# -- random logs -----------------------------------------------------------------------------
def render(d: dict[str, Any], style: str) -> bytes:
    """One log line in one of several spellings of the same JSON object."""
    if style == "canonical":
        return orjson.dumps(d)
    if style == "reordered":
        return orjson.dumps(dict(reversed(list(d.items()))))
    if style == "spaces":
        return json.dumps(d).encode()  # ", " and ": " separators
    if style == "ascii-escapes":
        return json.dumps(d, separators=(",", ":"), ensure_ascii=True).encode()
    if style == "escaped-key":
        text = orjson.dumps(d).decode()
        return text.replace('"type"', '"typ\\u0065"', 1).encode()
    if style == "crlf":
        return orjson.dumps(d) + b"\r"
    if style == "trailing-space":
        return orjson.dumps(d) + b" "
    raise AssertionError(style)


STYLES = st.sampled_from(
    ["canonical"] * 8
    + ["reordered", "spaces", "ascii-escapes", "escaped-key", "crlf", "trailing-space"]
)

BAD_LINES = [
    b"{oops",
    b"[]",
    b'{"type":"order"}',
    b'{"type":"nope","owner":"alice"}',
    b"   ",
    b"",
]


@st.composite
def logs(draw: st.DrawFn) -> bytes:
    """A random log: accounts, orders, cancels and odd or bad lines, any spelling."""
    lines: list[bytes] = []
    ids: list[tuple[str, str]] = []  # (id, owner) of orders so far
    for owner in draw(st.lists(st.sampled_from(OWNERS), max_size=3, unique=True)):
        energy = draw(st.integers(0, 500))
        bmax = draw(st.one_of(st.none(), st.integers(max(energy, 1), 1_000)))
        d = {"type": "account", "owner": owner, "energy": energy,
             "money": draw(st.integers(0, 10**9)), "bmax": bmax}  # fmt: skip
        lines.append(render(d, draw(STYLES)))
    ts = T0 - 3 * L
    for _ in range(draw(st.integers(1, 40))):
        ts += draw(st.sampled_from([0, 1, 1000, L // 3, L]))
        what = draw(st.sampled_from(["order"] * 6 + ["cancel"] * 2 + ["account", "bad", "odd"]))
        owner = draw(st.sampled_from(OWNERS))
        if what == "order":
            interval = draw(
                st.sampled_from([ts - ts % L + L, ts - ts % L + 2 * L, ts - ts % L, None, T0 + 7])
            )
            order = Order(
                draw(st.sampled_from(MARKETS + ["energy"] * 4)),
                draw(st.sampled_from(["bid", "ask"])),
                draw(st.sampled_from([180_000, 200_000, 220_000, 250_000])),
                draw(st.integers(1, 300)),
                owner,
                ts,
                interval,
                draw(st.sampled_from(["gtc"] * 6 + ["ioc", "fok"])),
            )
            d = order.to_dict()
            idkind = draw(st.sampled_from(["computed"] * 8 + ["reuse", "collide", "plain",
                                                              "hex16", "longest"]))  # fmt: skip
            if idkind == "reuse" and ids:
                d["id"] = draw(st.sampled_from(ids))[0]
            elif idkind == "collide" and ids:  # same first 16 hex digits: same engine key
                d["id"] = (
                    draw(st.sampled_from(ids))[0][:16]
                    + hashlib.sha256(str(ts).encode()).hexdigest()[16:]
                )
            elif idkind == "plain":
                d["id"] = f"order-{ts}"
            elif idkind == "hex16":  # as other tools write them: keyed by their SHA-256
                d["id"] = hashlib.sha256(str(ts).encode()).hexdigest()[:16]
            elif idkind == "longest":
                d["id"] = f"{ts}-".ljust(128, "x")
            if draw(st.booleans()) and d["tif"] == "gtc" and d["interval"] is None:
                del d["tif"]  # optional fields left out
            if draw(st.integers(0, 9)) == 0:
                d["sig"] = "ab" * 64
            ids.append((d["id"], owner))
        elif what == "cancel":
            if ids and draw(st.integers(0, 5)):
                target, by = draw(st.sampled_from(ids))
                if draw(st.integers(0, 4)) == 0:
                    by = owner  # maybe not the owner
            else:
                target, by = "f" * 64, owner
            d = Cancel(target, by, ts).to_dict()
        elif what == "account":
            d = {"type": "account", "owner": owner, "energy": 1, "money": 1, "bmax": None}
        elif what == "bad":
            lines.append(draw(st.sampled_from(BAD_LINES)))
            continue
        else:  # valid-looking but unusual values, or invalid ones the scanner must not take
            base = Order("energy", "bid", 200_000, 10, owner, ts, ts - ts % L + L).to_dict()
            base.update(
                draw(
                    st.sampled_from(
                        [
                            {"qty": 2**31},
                            {"qty": 0},
                            {"price": 10**7 + 1},
                            {"price": 5.0},
                            {"ts": -1},
                            {"ts": 2**63 - 1},
                            {"interval": 2**62},
                            {"tif": "day"},
                            {"side": "Bid"},
                            {"owner": ""},
                            {"owner": "x" * 129},
                            {"market": "m" * 128},
                            {"id": "A" * 64},
                            {"id": ""},
                            {"id": "x" * 129},
                            {"sig": "AB" * 64},
                            {"sig": None},
                            {"interval": None},
                            {"colour": "red"},
                            {"type": "cancel"},
                        ]
                    )
                )
            )
            d = base
        lines.append(render(d, draw(STYLES)))
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\n\n"]))


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=logs(),
    mode=st.sampled_from(["call", "cda"]),
    stp=st.sampled_from(["none", "cancel-resting", "cancel-incoming"]),
    chunk=st.one_of(st.none(), st.integers(1, 600)),
)
def test_the_scanner_replays_exactly_like_the_python_path(data, mode, stp, chunk):
    fast, slow = replay_both(data, chunk=chunk, mode=mode, stp=stp)
    assert fast == slow


@settings(max_examples=60, deadline=None)
@given(
    data=logs(),
    mode=st.sampled_from(["call", "cda"]),
    strict=st.booleans(),
    bom=st.booleans(),
)
def test_strict_runs_and_byte_order_marks_agree_too(data, mode, strict, bom):
    if bom:
        data = b"\xef\xbb\xbf" + data
    results = []
    for fast in (True, False):
        saved = replay_module._FAST_SCAN
        replay_module._FAST_SCAN = fast
        try:
            results.append(
                outcome(replay(io.BytesIO(data), ReplayOptions(mode=mode, strict=strict)))
            )
        except replay_module.BadLineError as exc:
            results.append(exc.reject)
        finally:
            replay_module._FAST_SCAN = saved
    assert results[0] == results[1]


# -- the contract ------------------------------------------------------------------------------
def count_slow_lines(monkeypatch: pytest.MonkeyPatch, data: bytes, **options: Any) -> int:
    seen: list[bytes] = []
    original = replay_module._Replay._slow_line

    def spy(self: Any, raw: bytes) -> None:
        seen.append(raw)
        original(self, raw)

    monkeypatch.setattr(replay_module._Replay, "_slow_line", spy)
    replay(io.BytesIO(data), ReplayOptions(**options))
    return len(seen)


@pytest.mark.parametrize("mode", ["call", "cda"])
@pytest.mark.parametrize("sign", [False, True])
def test_generated_logs_take_the_python_path_only_for_accounts_and_first_sightings(
    monkeypatch, mode, sign
):
    out = io.BytesIO()
    write_log(out, households=6, seed=3, sign=sign)
    data = out.getvalue()
    slow = count_slow_lines(monkeypatch, data, mode=mode)
    # 6 account lines and the first order (it names the market); the rest is scanned in C,
    # apart from cda cancels that meet filled orders (refused in the batch, not slow).
    assert slow == 7, slow
    assert data.count(b"\n") > 150


def test_verify_signatures_sends_every_line_to_the_python_path(monkeypatch):
    out = io.BytesIO()
    write_log(out, households=3, seed=3, sign=True)
    data = out.getvalue()
    assert count_slow_lines(monkeypatch, data, verify_signatures=True) == data.count(b"\n")


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"order","market":"energy","side":"bid","price":200000,"qty":10,'
        '"owner":"alice","ts":5,"interval":null,"tif":"gtc","id":"' + "a" * 64 + '"}',
        # the same line spelled differently: each must leave the scanner
        '{"type":"order","market":"energy","side":"bid","price":200000,"qty":10,'
        '"owner":"alic\\u0065","ts":5,"interval":null,"tif":"gtc","id":"' + "a" * 64 + '"}',
        '{"type":"order", "market":"energy","side":"bid","price":200000,"qty":10,'
        '"owner":"alice","ts":5,"interval":null,"tif":"gtc","id":"' + "a" * 64 + '"}',
        '{"type":"order","market":"energy","side":"bid","price":200000,"qty":10,'
        '"owner":"alice","ts":5,"interval":null,"tif":"gtc","id":"' + "a" * 64 + '","qty":11}',
        '{"type":"order","market":"energy","side":"bid","price":200000.0,"qty":10,'
        '"owner":"alice","ts":5,"interval":null,"tif":"gtc","id":"' + "a" * 64 + '"}',
        '{"type":"order","market":"energy","side":"bid","price":0200000,"qty":10,'
        '"owner":"alice","ts":5,"interval":null,"tif":"gtc","id":"' + "a" * 64 + '"}',
    ],
)
def test_only_the_plain_spelling_is_scanned(monkeypatch, line):
    first = orjson.dumps(Order("energy", "ask", 300_000, 1, "alice", 1).to_dict())
    data = first + b"\n" + line.encode() + b"\n"
    plain = "\\u" not in line and ", " not in line and line.count('"qty"') == 1
    plain = plain and "200000.0" not in line and "0200000" not in line
    assert count_slow_lines(monkeypatch, data, mode="cda") == (1 if plain else 2)
    fast, slow = replay_both(data, mode="cda")
    assert fast == slow


def test_a_cda_fill_in_one_market_re_crosses_another_in_the_same_event():
    """A fill in the heat market pays alice, whose waiting bid in the energy market then
    trades within the same event, stamped with its ts (docs/replay.md). It used to wait
    for the energy book's next event (here a cancel) and carry that event's ts; both
    paths must agree on the new rule."""
    T = T0 - 3 * L

    def order(market: str, side: str, owner: str, ts: int, price: int = 200_000) -> Order:
        return Order(market, side, price, 1, owner, ts)

    bob_heat_bid = order("heat", "bid", "bob", T)
    alice_bid = order("energy", "bid", "alice", T)  # alice has no money yet: it waits
    bob_ask = order("energy", "ask", "bob", T)  # crosses alice's bid
    carol_bid = order("energy", "bid", "carol", T, price=100_000)
    alice_heat_ask = order("heat", "ask", "alice", T + 1)  # the sale pays for alice's bid
    carol_again = order("energy", "bid", "carol", T + 3, price=100_000)
    bob_again = order("energy", "ask", "bob", T + 4, price=100_000)
    data = b"\n".join(
        [
            orjson.dumps(
                {"type": "account", "owner": "alice", "energy": 1, "money": 0, "bmax": None}
            ),
            *(orjson.dumps(o.to_dict()) for o in (bob_heat_bid, alice_bid, bob_ask, carol_bid)),
            orjson.dumps(alice_heat_ask.to_dict()),
            orjson.dumps(Cancel(carol_bid.id, "carol", T + 2).to_dict()),
            orjson.dumps(carol_again.to_dict()),
            orjson.dumps(bob_again.to_dict()),
        ]
    )
    expected = [
        (T + 1, bob_heat_bid.id, alice_heat_ask.id),
        (T + 1, alice_bid.id, bob_ask.id),  # in the heat ask's event, on the energy book
        (T + 4, carol_again.id, bob_again.id),
    ]
    fast, slow = replay_both(data, mode="cda")
    assert [(t["ts"], t["bid"], t["ask"]) for t in slow["trades"]] == expected
    assert slow["summary"]["accepted"]["cancels"] == 1
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
               max_size=128) | st.sampled_from(["a" * 64, "0" * 63 + "g", "F" * 64]))  # fmt: skip
def test_the_scanner_keys_any_id_as_the_engine_key_rule_does(oid):
    """The scanner's key of an id, SHA-256 in C included, is engine_keys.order_key's."""
    assert id_key(oid.encode()) == order_key(oid)


def test_another_tools_log_is_read_by_the_scanner():
    """16-hex ids and keys in another order (as a plain generator writes them) take the
    fast path: only account lines, first sightings and refusals go to Python, and the
    summary says so."""
    lines = [orjson.dumps({"owner": o, "type": "account", "energy": 100, "money": 10**9,
                           "bmax": 500}) for o in ("hh-1", "hh-2")]  # fmt: skip
    ts = T0
    for k in range(300):
        ts += 1000 * (k % 7 + 1)
        oid = hashlib.sha256(str(k).encode()).hexdigest()[:16]
        d = {"tif": "gtc", "qty": 10 + k % 50, "price": 150_000 + 1000 * (k % 20),
             "side": "bid" if k % 2 else "ask", "owner": f"hh-{k % 3}", "market": "energy",
             "interval": ts - ts % L + L, "ts": ts, "id": oid, "type": "order"}  # fmt: skip
        lines.append(orjson.dumps(d))
        if k % 10 == 9:
            lines.append(orjson.dumps({"ts": ts + 1, "type": "cancel", "owner": f"hh-{k % 3}",
                                       "id": oid}))  # fmt: skip
    data = b"\n".join(lines) + b"\n"
    for mode in ("call", "cda"):
        result = replay(io.BytesIO(data), ReplayOptions(mode=mode))
        assert result.accepted["orders"] == 300 and len(result.trades) > 0
        why = result.python_path
        assert "a shape the scanner does not read" not in why, why
        assert why.get("first line of an owner or market", 0) <= 2  # hh-0 has no account
        assert result.summary()["python_path_lines"] == sum(why.values()) <= 5 + why.get(
            "refused", 0)  # fmt: skip
        fast, slow = replay_both(data, mode=mode)
        assert fast == slow


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_ids_come_back_exactly_as_the_log_spelled_them(mode):
    """A 64-hex id is kept as its 32 bytes; every id a fill or a refusal names is still
    the log's own text, and a cancel by that text finds its order."""
    ids = [hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest().upper(),
           "0" * 63 + "f", "plain-id", "f" * 64]  # fmt: skip
    lines = [orjson.dumps({"type": "account", "owner": o, "energy": 10**4, "money": 10**12,
                           "bmax": 10**5}) for o in ("alice", "bob")]  # fmt: skip
    ts = T0 - L
    for k, oid in enumerate(ids):
        d = Order("energy", "ask", 100_000 + k, 10, "alice", ts + k, T0).to_dict()
        d["id"] = oid
        lines.append(orjson.dumps(d))
    gone = Order("energy", "bid", 99_000, 5, "bob", ts + 10, T0).to_dict()
    gone["id"] = "e" * 64
    lines.append(orjson.dumps(gone))
    lines.append(orjson.dumps(Cancel("e" * 64, "bob", ts + 11).to_dict()))
    lines.append(orjson.dumps(Cancel("e" * 64, "bob", ts + 12).to_dict()))  # no longer live
    bid = Order("energy", "bid", 200_000, 50, "bob", ts + 20, T0).to_dict()
    bid["id"] = "b" * 64
    lines.append(orjson.dumps(bid))
    result = replay(io.BytesIO(b"\n".join(lines) + b"\n"), ReplayOptions(mode=mode))
    assert sorted(r["ask"] for r in result.trade_rows()) == sorted(ids)
    assert {r["bid"] for r in result.trade_rows()} == {"b" * 64}
    assert result.accepted["cancels"] == 1
    (refused,) = result.rejects
    assert "e" * 64 in refused.text and refused.code in ("not-live", "late")


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_a_finished_replay_keeps_its_ids_and_releases_its_tables(mode):
    """finish() frees the scanner's order tables: the fills' ids still read from the id
    arena, and any use of the freed tables is refused instead of reading freed memory."""
    result = replay(None, ReplayOptions(mode=mode))  # the bundled sample
    scanner = result.trades.bid._texts.__self__
    assert scanner.released
    assert len(result.trades) and all(len(oid) == 64 for oid in result.trades.bid)
    assert result.trades.ask[0] == next(result.trade_rows())["ask"]
    for use in (
        lambda: scanner.entry(1),
        lambda: scanner.call_live(1),
        lambda: scanner.id_refs(array("Q", [1])),
        lambda: scanner.scan(b"x", 0, 1),
    ):
        with pytest.raises(RuntimeError, match="released"):
            use()


SUM_VALUES = st.integers(0, 2**31 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(SUM_VALUES, SUM_VALUES), max_size=40))
def test_volume_and_turnover_are_summed_exactly_in_c(rows):
    """The summary's sums (in C, 128 bits) are Python's, past 2**64 too."""
    rows = rows + [(2**31 - 1, 2**31 - 1)] * 5  # 5 * (2**31 - 1)**2 > 2**64
    qty, price = array("q", [q for q, _ in rows]), array("q", [p for _, p in rows])
    assert volume_turnover(qty, price) == (sum(qty), sum(q * p for q, p in rows))


def test_volume_turnover_refuses_what_it_cannot_sum_exactly():
    with pytest.raises(ValueError, match="row 1"):
        volume_turnover(array("q", [1, -1]), array("q", [1, 1]))
    with pytest.raises(ValueError, match="row 0"):
        volume_turnover(array("q", [1]), array("q", [2**31]))
    with pytest.raises(ValueError, match="lengths"):
        volume_turnover(array("q", [1]), array("q", []))


# -- the scanner's tables against a plain model ------------------------------------------------
# Both replay paths keep their orders in the scanner's tables, so the differential tests
# above cannot see a fault in them; this holds the tables to dicts.
TABLE_IDS = ["a" * 64, "0" * 63 + "1", "plain", "x-2", "ünï"]
TABLE_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "cancel", "take", "check"]),
        st.integers(0, 5),  # key
        st.sampled_from(TABLE_IDS),
        st.integers(0, 2),  # owner handle
        st.integers(0, 1),  # market index
        st.sampled_from([1_000, 2_000, 3_000]),  # interval
        st.integers(1, 99),  # price, qty, ts
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(TABLE_OPS, st.booleans())
def test_the_scanner_tables_hold_what_a_plain_model_holds(ops, call):
    from wattmesh.exchange.replay._logscan import Scanner

    scan = Scanner(call, 1_000, True, 1, 2**31 - 1)
    for name in ("alice", "bob", "carol"):
        scan.add_owner(name)
    for market in ("energy", "heat"):
        scan.add_market(market)
    entries: dict[int, tuple] = {}  # key -> (id, owner, market, interval, auction)
    auctions: list[dict] = []  # interval, market, pending, rows
    cancelled: set[tuple[int, int]] = set()

    def live(key: int) -> bool:
        a = entries[key][4]
        return auctions[a]["pending"] and (a, key) not in cancelled

    for op, key, oid, owner, market, interval, n in ops:
        if op == "put":
            if not call:
                scan.put_order(key, oid, owner, market, None, 0, n, n, n)
                entries[key] = (oid, owner, market, None, None)
                continue
            a = next((i for i, x in enumerate(auctions) if x["pending"]
                      and (x["interval"], x["market"]) == (interval, market)), None)  # fmt: skip
            if a is None:
                a = len(auctions)
                auctions.append({"interval": interval, "market": market, "pending": True,
                                 "rows": []})  # fmt: skip
            scan.put_order(key, oid, owner, market, interval, n % 2, n, n + 1, n + 2)
            auctions[a]["rows"].append((n % 2, n, n + 1, key, owner, n + 2))
            entries[key] = (oid, owner, market, interval, a)
        elif op == "cancel" and call:
            expected = key in entries and live(key)
            assert bool(scan.call_cancel(key)) is expected
            if expected:
                cancelled.add((entries[key][4], key))
        elif op == "take" and call:
            got = sorted((m, tuple(map(list, cols))) for m, cols in scan.take_interval(interval))
            want = []
            for a, x in enumerate(auctions):
                if x["pending"] and x["interval"] == interval:
                    rows = [r for r in x["rows"] if (a, r[3]) not in cancelled]
                    want.append((x["market"], tuple(map(list, zip(*rows, strict=True)))
                                 if rows else ([],) * 6))  # fmt: skip
                    x["pending"] = False
            assert got == sorted(want)
        for k in range(6):
            want_entry = entries.get(k)
            assert scan.entry(k) == (want_entry[:4] if want_entry else None)
            if want_entry is not None:
                assert scan.id_texts(scan.id_refs(array("Q", [k]))) == [want_entry[0]]
                if call:
                    assert bool(scan.call_pending(k)) is auctions[want_entry[4]]["pending"]
                    assert bool(scan.call_live(k)) is live(k)


def alice_with_bids(n: int) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Lines of a call log: alice's account, then ``n`` bids of hers for interval T0, one
    ms apart (the late-cancel tests cancel them at and after their gate)."""
    account = {"type": "account", "owner": "alice", "energy": 0, "money": 10**9, "bmax": 10}
    orders = [Order("energy", "bid", 100_000, 5, "alice", T0 - L + k, T0).to_dict()
              for k in range(n)]  # fmt: skip
    return [orjson.dumps(account)] + [orjson.dumps(d) for d in orders], orders


def test_late_call_cancels_are_refused_by_the_scanner_as_the_python_path_refuses_them():
    """call: a cancel at or after its order's gate, or after its interval cleared, is
    refused in C (Scanner.take_late) with the Python path's reason and line, and takes no
    Python path; only the log's first cancel (first_ts) does."""
    lines, orders = alice_with_bids(4)
    lines.append(orjson.dumps(Cancel(orders[0]["id"], "alice", T0 - 1).to_dict()))  # in time
    lines.append(orjson.dumps(Cancel(orders[1]["id"], "alice", T0).to_dict()))  # at the gate
    lines.append(orjson.dumps(Order("energy", "bid", 100_000, 5, "alice", T0 + L, T0 + 2 * L)
                              .to_dict()))  # fmt: skip
    lines.append(orjson.dumps(Cancel(orders[2]["id"], "alice", T0 - 2).to_dict()))  # cleared
    data = b"\n".join(lines) + b"\n"
    result = replay(io.BytesIO(data), ReplayOptions(mode="call"))
    assert [(r.line, r.code) for r in result.rejects] == [(7, "late"), (9, "late")]
    assert "gate of interval" in result.rejects[0].reason
    assert "already cleared" in result.rejects[1].reason
    assert result.rejects[1].text == lines[8].decode()
    assert result.python_path == {"account, meter or reading line": 1,
                                  "the log's first order or cancel": 1}  # fmt: skip
    fast, slow = replay_both(data, mode="call")
    assert fast == slow


@pytest.mark.parametrize("chunk", [None, 64, 700])
def test_late_call_cancels_keep_their_place_among_the_python_paths_refusals(chunk):
    """The scanner keeps the late cancels it refuses and scans on; their refusals are
    written before those of any line after them (a bad line, a late order on the Python
    path, another owner's cancel), in line order, whichever buffer each line is read in."""
    lines, orders = alice_with_bids(6)
    lines.append(orjson.dumps(Cancel(orders[0]["id"], "alice", T0 - 1).to_dict()))  # in time
    for k in range(1, 6):
        lines.append(orjson.dumps(Cancel(orders[k]["id"], "alice", T0 + k).to_dict()))  # late
        if k % 2:
            lines.append(b"{not json")  # the Python path's refusal, between two late ones
    late_order = Order("energy", "bid", 100_000, 5, "alice", T0 + 9, T0)  # the Python path's
    lines.append(orjson.dumps(late_order.to_dict()))
    lines.append(orjson.dumps(Cancel(orders[5]["id"], "alice", T0 + 10).to_dict()))  # late
    data = b"\n".join(lines) + b"\n"
    fast, slow = replay_both(data, chunk=chunk, mode="call")
    assert fast == slow
    result = replay(io.BytesIO(data), ReplayOptions(mode="call"))
    assert [(r.line, r.code) for r in result.rejects] == [
        (9, "late"), (10, "bad-json"), (11, "late"), (12, "late"), (13, "bad-json"),
        (14, "late"), (15, "late"), (16, "bad-json"), (17, "late"), (18, "late"),
    ]  # fmt: skip
    assert [r.text for r in result.rejects] == [line.decode() for line in lines[8:]]


@pytest.mark.parametrize("special", ["é", '\\"', "\\\\", "\\u0041", "\x7f"])
def test_a_special_byte_anywhere_in_a_string_is_found(special):
    """The scanner reads strings 8 bytes at a time and jumps to the first byte that is
    not plain ASCII (a quote, a backslash, a control or non-ASCII byte): at every offset
    within and across those words, such an id replays as the Python path has it."""
    account = {"type": "account", "owner": "alice", "energy": 10**4, "money": 10**12,
               "bmax": 10**5}  # fmt: skip
    lines = [orjson.dumps(account)]
    for offset in range(20):
        d = Order("energy", "ask", 100_000, 10, "alice", T0 - L + offset, T0).to_dict()
        lines.append(orjson.dumps(d))  # plain: the scanner's own
        text = orjson.dumps(d).decode().replace(d["id"], "i" * offset + special + "d" * 5)
        lines.append(text.encode())
    data = b"\n".join(lines) + b"\n"
    for mode in ("call", "cda"):
        fast, slow = replay_both(data, mode=mode)
        assert fast == slow
        result = replay(io.BytesIO(data), ReplayOptions(mode=mode))
        assert result.accepted["orders"] == 40
        assert result.python_path["a shape the scanner does not read"] == 20


def test_reserve_sizes_the_order_table_without_losing_what_it_holds():
    """Scanner.reserve (replay sizes the table once from the log's size) rehashes the
    orders already held: each is found again, by key, with its id, after a reserve that
    grows the table, and after one that asks for less than it holds (a no-op)."""
    from wattmesh.exchange.replay._logscan import Scanner

    scan = Scanner(False, 1_000, True, 1, 2**31 - 1)
    scan.add_owner("alice")
    scan.add_market("energy")
    ids = [f"order-{k}" for k in range(40_000)]  # past the first table (2**16 slots)
    for k, oid in enumerate(ids[:20_000]):
        scan.put_order(order_key(oid), oid, 0, 0, None, 0, 1 + k, 1, k)
    scan.reserve(1_000_000)
    scan.reserve(10)
    for k, oid in enumerate(ids[20_000:], start=20_000):
        scan.put_order(order_key(oid), oid, 0, 0, None, 0, 1 + k, 1, k)
    for oid in ids:
        assert scan.entry(order_key(oid)) == (oid, 0, 0, None)
    assert scan.entry(order_key("never")) is None


def test_the_order_table_is_sized_from_a_regular_files_size_only(tmp_path):
    """The estimate of a log's orders (its size over its first chunk's line length) is
    taken for a regular file; a pipe or an in-memory stream has no size to go by."""
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"x" * 99 + b"\n")
    with open(log, "rb") as fp:
        assert replay_module._file_size(fp) == 100
    assert replay_module._file_size(io.BytesIO(b"{}\n")) is None
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as fp, os.fdopen(write_end, "wb"):
        assert replay_module._file_size(fp) is None
    order = b'{"type":"order",' + b"y" * 83 + b"\n"  # 100 bytes
    other = b'{"type":"cancel",' + b"y" * 82 + b"\n"
    buf = bytearray(order * 3 + other * 7)
    assert replay_module._expected_orders(10_000, buf, 0, len(buf)) == 30  # 3 in 10 lines
    assert replay_module._expected_orders(10**12, buf, 0, len(buf)) == (
        replay_module.MAX_RESERVED_ORDERS
    )
    assert replay_module._expected_orders(10_000, buf, 0, 0) == 0


def test_a_regular_file_reserves_the_order_table_once_and_at_most_32_mib(
    tmp_path, monkeypatch
):
    """consume() sizes the order table from the file's size and its first chunk's order
    lines: a log whose first chunk is all orders and whose rest is blank gets the table its
    estimate asks for, larger than the orders it holds need; the same bytes from a stream
    (no size) grow it as they fill. Reserving more than MAX_RESERVED_ORDERS is never asked
    (32 MiB of slots), and more than an int32 index is refused."""
    from wattmesh.exchange.replay._logscan import Scanner

    monkeypatch.setattr(replay_module, "CHUNK_BYTES", 1 << 14)
    lines, _ = alice_with_bids(120)  # 30 kB: the first chunk (16 KiB) is all orders
    data = b"\n".join(lines) + b"\n" * (12 << 20)
    first = data[: data.rindex(b"\n", 0, 1 << 14) + 1]
    estimate = replay_module._expected_orders(len(data), first, 0, len(first))
    assert 1 << 15 < estimate < 1 << 16  # slots for it: 2 ** 17
    log = tmp_path / "log.jsonl"
    log.write_bytes(data)
    slots = {}
    for how in ("file", "stream"):
        r = replay_module._Replay(ReplayOptions(mode="call"))
        with open(log, "rb") if how == "file" else io.BytesIO(data) as fp:
            r.consume(fp, None)
        slots[how] = r.scan.order_slots
    assert slots == {"file": 1 << 17, "stream": 1 << 16}  # the first table: 2 ** 16
    scan = Scanner(True, 1_000, True, 1, 2**31 - 1)
    scan.reserve(replay_module.MAX_RESERVED_ORDERS)
    assert scan.order_slots * 8 == 32 << 20
    with pytest.raises(ValueError, match="at most 2147483647 orders"):
        scan.reserve(2**31)


# -- the reader thread (Scanner.parse) ---------------------------------------------------------
def threads() -> int:
    """This process's threads, native ones too (threading.active_count sees Python's only)."""
    return len(os.listdir("/proc/self/task"))


def new_threads_signal_masks(old: set[str]) -> list[int]:
    """The blocked-signal masks of this process's threads not in ``old`` (their ids)."""
    masks = []
    for tid in os.listdir("/proc/self/task"):
        if tid not in old:
            with open(f"/proc/self/task/{tid}/status") as status:
                line = next(x for x in status if x.startswith("SigBlk:"))
                masks.append(int(line.split()[1], 16))
    return masks


def fragile_log() -> bytes:
    """A call and cda log of what reading lines ahead must keep right: two owners' accounts,
    bids and asks that cross, a 16-hex and a 128-character id, a blank line, a CRLF line, a
    line with spaces, a bad line, a line of 900 bytes, cancels in time, cancels of filled
    orders (cda refuses them from the batch's buffer), late cancels (call refuses them from
    the scanned buffer), a gate passed mid-log, and a last line without a newline."""
    lines = [orjson.dumps({"type": "account", "owner": o, "energy": 500, "money": 10**12,
                           "bmax": 1_000}) for o in ("alice", "bob")]  # fmt: skip
    orders = []
    for k in range(14):
        owner, side = ("alice", "ask") if k % 2 else ("bob", "bid")
        d = Order("energy", side, 200_000 + (k % 3) * 10_000, 10 + k, owner, T0 - L + k, T0)
        d = d.to_dict()
        if k == 3:
            d["id"] = hashlib.sha256(b"3").hexdigest()[:16]  # as other tools write ids
        if k == 5:
            d["id"] = "x" * 128
        orders.append(d)
        lines.append(orjson.dumps(d))
        if k == 4:
            lines.append(b"")
        if k == 6:
            lines.append(orjson.dumps(d) + b"\r")  # the same id again, on the Python path
        if k == 7:
            lines.append(b"{not json")
        if k == 8:
            lines.append(json.dumps(d | {"qty": 3, "id": "spaced"}).encode())
        if k == 9:
            lines.append(orjson.dumps(d | {"id": "long", "note": "z" * 800}))
    for k in (0, 1, 2, 13):  # in time in call; filled ones are not live in cda
        lines.append(orjson.dumps(Cancel(orders[k]["id"], orders[k]["owner"], T0 - 5).to_dict()))
    nxt = Order("energy", "bid", 210_000, 7, "bob", T0 + 1, T0 + L).to_dict()
    lines.append(orjson.dumps(nxt))  # passes T0's gate: call clears it here
    for k in (4, 5, 6, 7):  # late in call, not live in cda
        lines.append(orjson.dumps(Cancel(orders[k]["id"], orders[k]["owner"], T0 + 2).to_dict()))
    last = Order("energy", "ask", 200_000, 4, "alice", T0 + 3, T0 + L).to_dict()
    lines.append(orjson.dumps(last))
    return b"\n".join(lines)  # no newline after the last line


def replay_file(path: Any, chunk: int, **options: Any) -> dict:
    """The scanner's outcome of a log file (read by its descriptor on the reader thread,
    ``Scanner.read_ahead``), ``chunk`` bytes at a time, every chunk's lines read ahead."""
    saved = replay_module.CHUNK_BYTES, replay_module.PARSE_THREAD_BYTES
    try:
        replay_module.CHUNK_BYTES, replay_module.PARSE_THREAD_BYTES = chunk, 1
        return outcome(replay(path, ReplayOptions(**options)))
    finally:
        replay_module.CHUNK_BYTES, replay_module.PARSE_THREAD_BYTES = saved


@pytest.mark.parametrize("source", ["stream", "file"])
@pytest.mark.parametrize("mode", ["call", "cda"])
def test_lines_read_ahead_give_the_python_paths_replay_wherever_a_read_cuts_a_line(
    tmp_path, mode, source
):
    """Every chunk's lines read on the reader thread (a file's bytes too), 128 bytes read
    at a time (each line longer than that, so every one spans reads and the buffer grows
    for the long one), the log shifted by 0..127 blank lines after a byte order mark: a
    read ends at every position of every line once, and each replay equals the Python
    path's."""
    body = fragile_log()
    fast, _ = replay_both(body, chunk=128, thread_bytes=1, mode=mode)
    assert len(fast["rejects"]) >= 6 and fast["trades"]  # the log does what it says
    path = tmp_path / "log.jsonl"
    for shift in range(128):
        data = b"\xef\xbb\xbf" + b"\n" * shift + body
        fast, slow = replay_both(data, chunk=128, thread_bytes=1, mode=mode)
        if source == "file":
            path.write_bytes(data)
            fast = replay_file(path, 128, mode=mode)
            replay_module._FAST_SCAN = False  # the bytes read ahead, every line to Python
            try:
                assert replay_file(path, 128, mode=mode) == slow, shift
            finally:
                replay_module._FAST_SCAN = True
        assert fast == slow, shift


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=logs(),
    mode=st.sampled_from(["call", "cda"]),
    chunk=st.integers(1, 600),
)
def test_random_logs_read_ahead_on_the_thread_replay_like_the_python_path(data, mode, chunk):
    fast, slow = replay_both(data, chunk=chunk, thread_bytes=1, mode=mode)
    assert fast == slow
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "log.jsonl")
        with open(path, "wb") as out:
            out.write(data)
        assert replay_file(path, chunk, mode=mode) == slow


def _big_log(tmp_path) -> Any:
    path = tmp_path / "day.jsonl"
    write_log(path, households=6, seed=3, sign=False, days=3)  # 259 kB
    return path


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_the_reader_thread_runs_while_a_log_is_read_and_ends_with_it(tmp_path, monkeypatch, mode):
    """A log of several chunks of PARSE_THREAD_BYTES (64 KiB) or more has their lines read
    on one thread besides the replay's own, from its first chunk to its last, and no thread
    is left after it. That thread blocks every signal (SIGINT, SIGTERM: they stay this
    thread's, where Python handles them)."""
    path = _big_log(tmp_path)
    monkeypatch.setattr(replay_module, "CHUNK_BYTES", 80 << 10)
    before = threads()
    old = set(os.listdir("/proc/self/task"))
    during: list[int] = []
    masks: list[int] = []

    def progress(_: int) -> None:
        during.append(threads())
        masks.extend(new_threads_signal_masks(old))

    result = replay(path, ReplayOptions(mode=mode), on_progress=progress)
    assert len(during) >= 3 and set(during) == {before + 1}
    blocked = 1 << (signal.SIGINT - 1) | 1 << (signal.SIGTERM - 1)
    assert masks and all(m & blocked == blocked for m in masks)
    assert threads() == before
    monkeypatch.setattr(replay_module, "PARSE_THREAD_BYTES", 1 << 30)  # no thread: the same
    assert outcome(replay(path, ReplayOptions(mode=mode))) == outcome(result)


@pytest.mark.parametrize("source", ["stream", "file"])
def test_a_small_log_is_read_without_a_thread(order_log, tmp_path, source):
    before = threads()
    during: list[int] = []
    data = order_log.to_bytes(order_log.order("alice", "bid", 200_000, 5, T0))
    (tmp_path / "log.jsonl").write_bytes(data)
    log = io.BytesIO(data) if source == "stream" else tmp_path / "log.jsonl"
    result = replay(log, ReplayOptions(), on_progress=lambda _: during.append(threads()))
    assert during == [before] and result.events == 1


def test_a_file_that_cannot_be_read_is_an_os_error(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"{}\n")
    with open(path, "ab", buffering=0) as fp, pytest.raises(OSError):  # not open to read
        replay(fp, ReplayOptions())


# A child replays a file of many blank lines (and the orders of a small log among them)
# and prints its own peak RSS, in MiB: a record per line read ahead, with no cap, took
# 342 MiB for 4 MiB of blank lines. (VmHWM, not getrusage: the child's ru_maxrss starts
# at its parent's peak, which Linux keeps across exec.)
SHORT_LINES_RSS = """
import sys
from wattmesh.exchange.replay.replay import ReplayOptions, replay
result = replay(sys.argv[1], ReplayOptions(mode=sys.argv[2]))
with open("/proc/self/status") as status:
    peak_kib = next(int(x.split()[1]) for x in status if x.startswith("VmHWM:"))
print(result.summary()["fills"], peak_kib // 1024)
"""


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_a_log_of_many_short_lines_reads_ahead_in_bounded_memory(tmp_path, mode):
    """At most MAX_LINES_AHEAD lines of a chunk are read ahead (the scan reads the rest):
    a file whose 1 MiB chunks hold a million blank lines each replays in tens of MiB, with
    the fills of the orders among them, as the Python path gives them."""
    small = _big_log(tmp_path).read_bytes().splitlines(keepends=True)
    blank = b"\n" * (4 << 20) + b"\r\n" * 4096  # blank, and lines that are only a \r
    data = b"".join(small[:50]) + blank + b"".join(small[50:])
    path = tmp_path / "short.jsonl"
    path.write_bytes(data)
    res = subprocess.run([sys.executable, "-c", SHORT_LINES_RSS, str(path), mode],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    fills, peak_mib = map(int, res.stdout.split())
    assert peak_mib < 120
    fast, slow = replay_both(data, mode=mode)
    assert fast == slow and fills == len(fast["trades"]) > 0


class _Stop(Exception):
    pass


@pytest.mark.parametrize("source", ["stream", "file"])
@pytest.mark.parametrize("how", ["strict", "MemoryError", "callback"])
def test_a_replay_ended_by_an_exception_leaves_no_thread(tmp_path, monkeypatch, how, source):
    """--strict's BadLineError mid-log, a MemoryError, any exception out of a progress
    callback: the reader thread ends before the exception leaves replay(), though the
    exception's traceback keeps the scanner alive."""
    path = _big_log(tmp_path)
    data = path.read_bytes()
    middle = data.index(b"\n", len(data) // 2) + 1
    if how == "strict":
        data = data[:middle] + b"{not json\n" + data[middle:]
    monkeypatch.setattr(replay_module, "CHUNK_BYTES", 16 << 10)
    monkeypatch.setattr(replay_module, "PARSE_THREAD_BYTES", 1)
    seen: list[int] = []

    def progress(done: int) -> None:
        seen.append(threads())
        if how != "strict" and done > len(data) // 2:
            raise MemoryError() if how == "MemoryError" else _Stop()

    before = threads()
    expected = {"strict": replay_module.BadLineError, "MemoryError": MemoryError,
                "callback": _Stop}[how]  # fmt: skip
    (tmp_path / "log.jsonl").write_bytes(data)
    log = io.BytesIO(data) if source == "stream" else tmp_path / "log.jsonl"
    with pytest.raises(expected) as info:
        replay(log, ReplayOptions(strict=True), on_progress=progress)
    assert seen and set(seen) == {before + 1}  # it ran
    assert threads() == before
    assert info.traceback  # still held here


def test_a_log_from_a_pipe_is_read_ahead_in_the_pieces_it_comes_in(tmp_path, monkeypatch):
    """A pipe gives short reads (no size to reserve by); each piece's lines are read on the
    thread and the replay is the file's."""
    import threading

    path = _big_log(tmp_path)
    data = path.read_bytes()
    whole = outcome(replay(path, ReplayOptions(mode="cda")))
    monkeypatch.setattr(replay_module, "PARSE_THREAD_BYTES", 1)
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb", buffering=0) as out:
            for i in range(0, len(data), 7_777):
                out.write(data[i : i + 7_777])

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(read_end, "rb", buffering=0) as fp:
        piped = outcome(replay(fp, ReplayOptions(mode="cda")))
    writer.join()
    assert piped == whole


def test_a_chunk_read_ahead_holds_its_buffer_until_it_is_consumed():
    """Scanner.parse holds the buffer exported (a bytearray cannot be resized under the
    thread) until a scan of it returns DONE or stop(); a third chunk is refused; a scan of
    a range not read ahead reads it itself."""
    from wattmesh.exchange.replay._logscan import DONE, Scanner

    scan = Scanner(False, 1_000, True, 1, 2**31 - 1)
    a, b, c = (bytearray(b"\n" * 10) for _ in range(3))
    scan.parse(a, 0, 10, True)
    scan.parse(b, 0, 10, True)
    assert scan.reader_running
    with pytest.raises(BufferError):
        a.extend(b"\n")
    with pytest.raises(RuntimeError, match="two chunks"):
        scan.parse(c, 0, 10, True)
    assert scan.scan(a, 0, 10) == DONE and scan.lineno == 10 and scan.blank == 10
    a.extend(b"\n")  # let go
    assert scan.scan(c, 0, 10) == DONE and scan.lineno == 20  # read here
    with pytest.raises(BufferError):
        b.extend(b"\n")
    scan.stop()
    b.extend(b"\n")
    assert not scan.reader_running
    with pytest.raises(ValueError, match="bad range"):
        scan.parse(a, 5, 20, False)
