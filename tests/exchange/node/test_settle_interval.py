"""settle_interval: one delivery interval into the ledger, the same bytes on every node."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattmesh.exchange.node import settle_interval as si
from wattmesh.exchange.node.settle_interval import IntervalOutcome, settle_interval
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.records import Cancel, Order, Reading

T0 = 1_718_928_000_000  # a multiple of IV
IV = 900_000
RETAIL, FEEDIN = 300_000, 80_000
MONEY = 10**12
GENESIS = {
    "community": "elm-street", "interval_ms": IV, "price_min": 0, "price_max": 1_000_000,
    "fee_rate_ppm": 0, "retail_price": RETAIL, "feedin_price": FEEDIN,
    "funds": {"fees": "fund:fees"},
}  # fmt: skip
KEYS = {name: generate_key() for name in ("ann", "bob", "cat", "dan", "eve")}
ANN, BOB, CAT, DAN, EVE = (peer_id_of(KEYS[n]) for n in ("ann", "bob", "cat", "dan", "eve"))
NAME = {peer_id_of(k): n for n, k in KEYS.items()}
ANN_METER, CAT_METER, STRAY_METER = generate_key(), generate_key(), generate_key()
# (bmax Wh, storage, opening energy Wh); eve is no member. dan has no storage (bmax 0).
MEMBERS = {ANN: (10_000, True, 5_000), BOB: (2_000, False, 1_800), CAT: (5_000, False, 0),
           DAN: (0, False, 0)}  # fmt: skip


def community(path: Path, storage_rate: int = 0) -> Ledger:
    """ann, bob, cat and dan with their openings; meters for ann and cat; all at ts T0."""
    genesis = dict(GENESIS)
    if storage_rate:
        genesis["storage_rate"] = storage_rate
        genesis["funds"] = {"fees": "fund:fees", "education": "fund:edu", "network": "fund:net"}
    items: list = [("genesis", genesis)]
    for who, (bmax, storage, _e) in sorted(MEMBERS.items()):
        items.append(("member", {"owner": who, "bmax": bmax, "storage": storage}))
    for who, (_b, _s, energy) in sorted(MEMBERS.items()):
        items.append(("opening", {"owner": who, "energy": energy, "money": MONEY}))
    items.append(("meter", {"meter": peer_id_of(ANN_METER), "owner": ANN}))
    items.append(("meter", {"meter": peer_id_of(CAT_METER), "owner": CAT}))
    led = Ledger.open(path)
    led.append_batch(items, ts=T0)
    return led


@pytest.fixture
def order(make_order):
    """``who``'s signed order for ``interval``, dated ``ts`` ms into the interval before."""

    def build(
        who: str, side: str, price: int, qty: int, ts: int = 0, *, interval: int = T0,
        market: str = "energy", tif: str = "gtc",
    ) -> Order:  # fmt: skip
        key = KEYS[NAME[who]]
        return make_order(
            key, side, price, qty, interval - IV + ts, interval, market=market, tif=tif
        )

    return build


def cancel(who: str, target: Order) -> Cancel:
    return Cancel(target.id, who, target.ts + 1).signed(KEYS[NAME[who]])


@pytest.fixture
def reading(make_reading):
    def build(
        meter, seq: int, produced: int, consumed: int, start: int = T0, length: int = IV
    ) -> Reading:
        return make_reading(meter, start, produced, consumed, seq, length)

    return build


def bal(led: Ledger, who: str) -> tuple[int, int]:
    b = led.balances()[who]
    return b["energy"], b["money"]


def kinds_after(led: Ledger, seq: int) -> list[str]:
    return [e.kind for e in led.entries(since=seq + 1)]


def test_a_crossing_bid_and_ask_trade_at_the_midpoint_and_balances_move(order, tmp_path):
    with community(tmp_path / "l.db") as led:
        start = led.head()[0]
        ask = order(ANN, "ask", 150_000, 500, ts=1)
        bid = order(BOB, "bid", 250_001, 150, ts=2)
        out = settle_interval(led, T0, [ask, bid], [], [])
        price = (250_001 + 150_000) // 2  # floor: 200000
        assert (out.interval, out.price, out.volume, out.orders) == (T0, price, 150, 2)
        assert out.trades == ({"buyer": BOB, "seller": ANN, "qty": 150, "price": price,
                               "bid": bid.id, "ask": ask.id, "interval": T0},)  # fmt: skip
        assert out.refused == () and out.readings_applied == 0
        assert bal(led, ANN) == (5_000 - 150, MONEY + 150 * price)
        assert bal(led, BOB) == (1_800 + 150, MONEY - 150 * price)
        assert kinds_after(led, start) == ["trade", "interval_close"]
        assert all(e.ts == T0 for e in led.entries(since=start + 1))
        assert out.close.kind == "interval_close" and out.close.body["interval"] == T0
        assert led.head() == (out.close.seq, out.close.hash)
        assert out.digest == out.close.hash.hex() == led.head_text().split(":")[1]
        assert led.last_interval() == T0
        assert led.verify().ok


def test_caps_hold_bmax_headroom_and_money_and_no_storage(order, tmp_path: Path) -> None:
    with community(tmp_path / "l.db") as led:
        ask = order(ANN, "ask", 100_000, 5_000, ts=1)
        bob_bid = order(BOB, "bid", 300_000, 1_000, ts=2)  # headroom 2000 - 1800 = 200
        dan_bid = order(DAN, "bid", 400_000, 50, ts=3)  # bmax 0: may hold nothing
        out = settle_interval(led, T0, [ask, bob_bid, dan_bid], [], [])
        assert [(t["buyer"], t["qty"]) for t in out.trades] == [(BOB, 200)]
        assert bal(led, BOB)[0] == 2_000
        assert bal(led, DAN) == (0, MONEY)
        assert out.orders == 3
        # Money: cat can pay for 7 Wh at its limit price, so it buys 7 Wh.
        led.append_batch([("withdrawal", {"owner": CAT, "amount": MONEY - 7 * 300_000})],
                         ts=T0 + IV)  # fmt: skip
        t1 = T0 + IV
        ask = order(ANN, "ask", 100_000, 5_000, ts=1, interval=t1)
        cat_bid = order(CAT, "bid", 300_000, 1_000, ts=2, interval=t1)
        out = settle_interval(led, t1, [ask, cat_bid], [], [])
        assert [(t["buyer"], t["qty"], t["price"]) for t in out.trades] == [(CAT, 7, 200_000)]
        assert bal(led, CAT) == (7, 7 * 300_000 - 7 * 200_000)
        assert led.verify().ok


def test_cancelled_orders_do_not_trade_but_a_stranger_cannot_cancel(order, tmp_path: Path) -> None:
    with community(tmp_path / "l.db") as led:
        ask = order(ANN, "ask", 100_000, 500, ts=1)
        bob_bid = order(BOB, "bid", 300_000, 100, ts=2)
        cat_bid = order(CAT, "bid", 200_000, 100, ts=3)
        cancels = [cancel(BOB, bob_bid), cancel(BOB, cat_bid)]  # the second is not bob's
        out = settle_interval(led, T0, [ask, bob_bid, cat_bid], cancels, [])
        assert [(t["buyer"], t["bid"]) for t in out.trades] == [(CAT, cat_bid.id)]
        assert out.orders == 2
        assert bal(led, BOB) == (1_800, MONEY)


def test_other_intervals_and_markets_are_ignored_and_bad_orders_refused(order, tmp_path: Path):
    with community(tmp_path / "l.db") as led:
        ask = order(ANN, "ask", 100_000, 500, ts=1)
        later = order(BOB, "bid", 300_000, 100, ts=2, interval=T0 + IV)
        heat = order(BOB, "bid", 300_000, 100, ts=2, market="heat")
        fok = order(BOB, "bid", 300_000, 100, ts=3, tif="fok")
        stranger = order(EVE, "bid", 300_000, 100, ts=4)
        too_dear = order(CAT, "bid", 1_000_001, 100, ts=5)  # above the genesis price_max
        forged = Order("energy", "bid", 300_000, 100, CAT, T0 - 10, T0, id="f" * 64)
        out = settle_interval(led, T0, [ask, later, heat, fok, stranger, too_dear, forged], [],
                              [])  # fmt: skip
        assert out.trades == () and out.price is None and out.volume == 0
        assert out.orders == 1
        reasons = dict(out.refused)
        assert set(reasons) == {fok.id, stranger.id, too_dear.id, forged.id}
        # Each reason is "code: detail" with a code of the shared table.
        codes = {i: r.split(": ", 1)[0] for i, r in reasons.items()}
        assert codes == {fok.id: "unsupported-tif", stranger.id: "not-member",
                         too_dear.id: "malformed", forged.id: "bad-signature"}  # fmt: skip
        assert "fok" in reasons[fok.id]
        assert "not a member" in reasons[stranger.id]
        assert "price" in reasons[too_dear.id]
        assert "content" in reasons[forged.id]
        assert [i for i, _ in out.refused] == sorted(reasons)  # orders refused in id order
        # The later order is for its own interval.
        t1 = T0 + IV
        out = settle_interval(led, t1, [later, order(ANN, "ask", 100_000, 500, interval=t1)],
                              [], [])  # fmt: skip
        assert [t["bid"] for t in out.trades] == [later.id]
        assert led.verify().ok


def test_readings_are_applied_before_clearing_and_refused_ones_skipped(
    order, reading, tmp_path: Path
):
    with community(tmp_path / "l.db") as led:
        start = led.head()[0]
        produce = reading(CAT_METER, 1, 800, 0)  # cat's only energy
        late = reading(ANN_METER, 2, 0, 100, start=T0 + IV // 2, length=IV // 2)
        early = reading(ANN_METER, 1, 0, 300, length=IV // 2)  # applied first: seq order
        stray = reading(STRAY_METER, 1, 500, 0)  # not registered
        # Two readings with one seq: the smaller id is applied, the other refused.
        twin_a, twin_b = (
            reading(CAT_METER, 2, 0, 10, start=T0 + IV),
            reading(CAT_METER, 2, 0, 20, start=T0 + IV),
        )
        first, second = sorted([twin_a, twin_b], key=Reading.computed_id)
        ask = order(CAT, "ask", 100_000, 1_000, ts=1)
        bid = order(BOB, "bid", 300_000, 1_000, ts=2)  # headroom 200
        ann_bid = order(ANN, "bid", 300_000, 1_000, ts=3)  # ann takes the rest
        out = settle_interval(
            led, T0, [ask, bid, ann_bid], [], [twin_b, late, stray, produce, twin_a, early]
        )
        assert out.readings_applied == 4
        reasons = dict(out.refused)
        assert set(reasons) == {stray.computed_id(), second.computed_id()}
        assert all(r.startswith("reading-refused: ") for r in reasons.values())
        assert "not registered" in reasons[stray.computed_id()]
        assert "seq" in reasons[second.computed_id()]
        sold = 800 - first.consumed  # cat's energy: this interval's readings only
        assert sorted((t["buyer"], t["qty"]) for t in out.trades) == sorted(
            [(BOB, 200), (ANN, sold - 200)]
        )
        assert bal(led, CAT)[0] == 0  # it sold all of it
        assert out.volume == sold
        assert bal(led, ANN)[0] == 5_000 - 300 - 100 + sold - 200
        kinds = kinds_after(led, start)
        assert kinds == ["reading"] * 4 + ["trade", "trade", "interval_close"]
        assert led.verify().ok


def scenario(order, reading, interval: int = T0) -> tuple[list[Order], list[Cancel], list[Reading]]:
    """A busy interval: price and ts ties (decided by id), cancels, refusals, readings."""
    orders = [
        order(ANN, "ask", 120_000, 700, ts=5, interval=interval),
        order(CAT, "ask", 120_000, 400, ts=5, interval=interval),  # tie with ann's ask
        order(ANN, "ask", 180_000, 900, ts=1, interval=interval),
        order(BOB, "bid", 260_000, 150, ts=2, interval=interval),
        order(ANN, "bid", 250_000, 500, ts=3, interval=interval),  # ann on both sides
        order(CAT, "bid", 250_000, 300, ts=3, interval=interval),  # tie with ann's bid
        order(DAN, "bid", 300_000, 100, ts=1, interval=interval),
        order(BOB, "bid", 190_000, 50, ts=9, interval=interval),
        order(EVE, "ask", 1, 1_000, ts=0, interval=interval),  # not a member: refused
        order(CAT, "bid", 240_000, 80, ts=4, interval=interval, tif="fok"),  # refused
    ]
    cancelled = order(BOB, "ask", 100_000, 50, ts=1, interval=interval)
    orders.append(cancelled)
    cancels = [cancel(BOB, cancelled)]
    n = (interval - T0) // IV
    readings = [
        reading(CAT_METER, 2 * n + 1, 600, 100, start=interval, length=IV // 2),
        reading(CAT_METER, 2 * n + 2, 0, 50, start=interval + IV // 2, length=IV // 2),
        reading(ANN_METER, n + 1, 0, 400, start=interval),
        reading(STRAY_METER, n + 1, 1_000, 0, start=interval),  # refused
    ]
    return orders, cancels, readings


def settle_two(order, reading, path: Path, rng: random.Random | None) -> list[IntervalOutcome]:
    outs = []
    with community(path, storage_rate=1_500) as led:
        for iv in (T0, T0 + IV):
            lists = scenario(order, reading, iv)
            if rng is not None:
                for items in lists:
                    rng.shuffle(items)
                lists = tuple(items * rng.randint(1, 2) for items in lists)  # duplicates too
            outs.append(settle_interval(led, iv, *lists))
        assert led.verify().ok
    return outs


def test_the_scenario_trades_and_refuses_what_it_should(order, reading, tmp_path: Path) -> None:
    first, second = settle_two(order, reading, tmp_path / "l.db", None)
    assert len(first.trades) >= 3 and second.volume > 0
    for out in (first, second):
        assert out.orders == 8  # 11 less eve's, the fok and the cancelled one
        assert len(out.refused) == 3  # eve, the fok and the stray meter
        assert out.readings_applied == 3
        assert all(t["buyer"] != t["seller"] for t in out.trades)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(seed=st.integers(0, 2**32 - 1))
def test_the_order_of_the_records_never_changes_a_byte(
    order, reading, ledger_rows, tmp_path: Path, seed: int
) -> None:
    ref_path = tmp_path / "reference.db"
    if not ref_path.exists():
        settle_two(order, reading, ref_path, None)
    path = tmp_path / f"{uuid.uuid4().hex}.db"  # another node's ledger file
    outs = settle_two(order, reading, path, random.Random(seed))
    assert ledger_rows(path) == ledger_rows(ref_path)  # same bytes, same hashes, same head
    with Ledger.open(ref_path) as ref:
        assert outs[-1].digest == ref.head()[1].hex()


def test_settling_an_interval_twice_or_a_bad_interval_is_refused_and_writes_nothing(
    order, reading, ledger_rows, tmp_path
):
    path = tmp_path / "l.db"
    with community(path) as led:
        settle_interval(led, T0, [order(ANN, "ask", 100_000, 5, ts=1),
                                  order(BOB, "bid", 300_000, 5, ts=2)], [], [])  # fmt: skip
        before, head = ledger_rows(path), led.head()
        again = [order(ANN, "ask", 100_000, 7, ts=3), order(BOB, "bid", 300_000, 7, ts=4)]
        for iv, match in ((T0, "not after the last closed"), (T0 - IV, "not after"),
                          (T0 + IV + 1, "multiple"), (-IV, "non-negative")):  # fmt: skip
            with pytest.raises(ValueError, match=match):
                settle_interval(led, iv, again, [], [reading(CAT_METER, 1, 10, 0)])
        assert ledger_rows(path) == before and led.head() == head
        assert bal(led, CAT) == (0, MONEY)
        assert led.verify(expect_head=head).ok


def test_an_interval_before_the_ledgers_last_entry_is_refused(tmp_path: Path) -> None:
    with community(tmp_path / "l.db") as led:
        led.append_batch([("deposit", {"owner": ANN, "amount": 1})], ts=T0 + 5)
        with pytest.raises(ValueError, match="before the ledger's last entry"):
            settle_interval(led, T0, [], [], [])
        assert led.last_interval() is None


def test_a_failure_midway_writes_nothing(
    order, reading, ledger_rows, tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "l.db"
    orders = [order(ANN, "ask", 100_000, 500, ts=1), order(BOB, "bid", 300_000, 100, ts=2)]
    readings = [reading(CAT_METER, 1, 800, 0)]
    with community(path) as led:
        before, head, balances = ledger_rows(path), led.head(), led.balances()

        def boom(self: Ledger, interval: int, ts: int, certificate: object = None) -> None:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(Ledger, "close_interval", boom)
        with pytest.raises(RuntimeError, match="disk on fire"):
            settle_interval(led, T0, orders, [], readings)
        assert ledger_rows(path) == before  # not the reading, not the trade
        assert led.head() == head and led.balances() == balances
        assert led.verify(expect_head=head).ok
        monkeypatch.undo()
        out = settle_interval(led, T0, orders, [], readings)  # and it can be settled again
        assert out.volume == 100 and out.readings_applied == 1
        assert led.verify().ok


def test_storage_fees_are_charged_before_the_close(order, tmp_path: Path) -> None:
    rate = 2_000  # nano per kWh per interval
    with community(tmp_path / "l.db", storage_rate=rate) as led:
        start = led.head()[0]
        out = settle_interval(led, T0, [order(ANN, "ask", 100_000, 100, ts=1),
                                        order(BOB, "bid", 300_000, 100, ts=2)], [], [])  # fmt: skip
        kinds = kinds_after(led, start)
        assert kinds == ["trade", "fee", "fee", "fee_split", "interval_close"]
        fees = {e.body["owner"]: e.body for e in led.entries(since=start + 1, kind="fee")}
        assert set(fees) == {ANN, BOB}  # cat and dan hold no energy
        # Charged on the balances after the trade: ann 4900 Wh, bob 1900 Wh.
        assert fees[ANN]["amount"] == 4_900 * rate // 1000
        assert fees[BOB]["amount"] == 1_900 * rate // 1000
        assert all(f["interval"] == T0 and f["trade"] is None for f in fees.values())
        assert out.close.body["entries"] == len(kinds) - 1 + start
        assert led.balances()["fund:edu"]["money"] > 0
        assert led.verify().ok


@pytest.mark.parametrize("bid_first", [True, False])
def test_self_trades_drop_the_households_earlier_order(order, tmp_path: Path, bid_first: bool):
    """stp cancel-resting: when ann's bid meets ann's ask, her earlier order leaves."""
    with community(tmp_path / "l.db") as led:
        ann_bid = order(ANN, "bid", 250_000, 300, ts=1 if bid_first else 2)
        ann_ask = order(ANN, "ask", 100_000, 200, ts=2 if bid_first else 1)
        cat_bid = order(CAT, "bid", 240_000, 300, ts=0)
        bob_ask = order(BOB, "ask", 200_000, 300, ts=0)
        out = settle_interval(led, T0, [ann_bid, ann_ask, cat_bid, bob_ask], [], [])
        got = [(t["buyer"], t["seller"], t["qty"]) for t in out.trades]
        if bid_first:  # ann's bid leaves: her ask sells to cat, bob fills cat's rest
            assert got == [(CAT, ANN, 200), (CAT, BOB, 100)]
            assert out.price == (240_000 + 200_000) // 2
        else:  # ann's ask leaves: her bid buys bob's ask, cat is left without asks
            assert got == [(ANN, BOB, 300)]
            assert out.price == (250_000 + 200_000) // 2
        assert led.verify().ok


def test_an_engine_key_collision_keeps_the_smaller_id(order, tmp_path: Path, monkeypatch) -> None:
    # A real 64-bit prefix collision cannot be made here; make every id collide instead.
    monkeypatch.setattr(si, "order_key", lambda oid: 42)
    with community(tmp_path / "l.db") as led:
        orders = [order(BOB, "bid", 300_000, 10, ts=i) for i in range(3)]
        out = settle_interval(led, T0, orders, [], [])
        ids = sorted(o.id for o in orders)
        assert out.orders == 1
        assert [i for i, _ in out.refused] == ids[1:]
        assert all(r.startswith("id-collision: ") and "engine key" in r for _, r in out.refused)
