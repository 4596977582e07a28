"""Records: validation names the bad field, log lines round-trip, ids and signatures."""

import dataclasses
import hashlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattmesh.settlement.keys import generate_key, peer_id_of, sign
from wattmesh.settlement.records import (
    Account,
    Cancel,
    MarketSpec,
    Order,
    RecordError,
    Trade,
    parse_record,
    verify_signature,
)

KEY = generate_key()
OWNER = peer_id_of(KEY)
TS = 1_700_000_000_000
INTERVAL = 1_699_999_200_000


def order_dict(**change):
    d = {
        "type": "order",
        "market": "energy",
        "side": "bid",
        "price": 230_000,
        "qty": 500,
        "owner": OWNER,
        "ts": TS,
        "interval": INTERVAL,
        "tif": "ioc",
    }
    d.update(change)
    return {k: v for k, v in d.items() if v is not DROP}


DROP = object()


def refused(fn, *args, **kwargs) -> RecordError:
    with pytest.raises(RecordError) as info:
        fn(*args, **kwargs)
    return info.value


# --- orders ---------------------------------------------------------------------------


def test_order_from_dict_fields_and_defaults():
    o = Order.from_dict(order_dict(interval=DROP, tif=DROP))
    assert (o.market, o.side, o.price, o.qty, o.owner, o.ts) == (
        "energy",
        "bid",
        230_000,
        500,
        OWNER,
        TS,
    )
    assert o.interval is None and o.tif == "gtc" and o.sig is None


def test_order_body_has_type_and_defaults_but_no_id_or_sig():
    o = Order.from_dict(order_dict(interval=DROP, tif=DROP, type=DROP, id="x1"))
    assert o.body() == {
        "type": "order",
        "market": "energy",
        "side": "bid",
        "price": 230_000,
        "qty": 500,
        "owner": OWNER,
        "ts": TS,
        "interval": None,
        "tif": "gtc",
    }


def test_order_id_is_sha256_of_canonical_body():
    o = Order.from_dict(order_dict(interval=DROP, tif=DROP))
    expected_bytes = (
        b'{"interval":null,"market":"energy","owner":"' + OWNER.encode() + b'","price":230000,'
        b'"qty":500,"side":"bid","tif":"gtc","ts":1700000000000,"type":"order"}'
    )
    assert o.id == hashlib.sha256(expected_bytes).hexdigest()
    assert o.computed_id() == o.id


def test_order_id_ignores_key_order_and_defaults_spelled_out():
    a = Order.from_dict(order_dict(interval=DROP, tif=DROP))
    b = Order.from_dict(dict(reversed(list(order_dict(interval=None, tif="gtc").items()))))
    assert a.id == b.id


def test_order_id_changes_with_content():
    assert Order.from_dict(order_dict()).id != Order.from_dict(order_dict(qty=501)).id
    assert Order.from_dict(order_dict()).id != Order.from_dict(order_dict(interval=None)).id


def test_given_id_is_kept_unless_checked():
    o = Order.from_dict(order_dict(id="o17"))
    assert o.id == "o17"
    assert o.computed_id() != "o17"
    err = refused(Order.from_dict, order_dict(id="o17"), check_id=True)
    assert err.field == "id"
    assert o.computed_id() in str(err)
    good = Order.from_dict(order_dict()).id
    assert Order.from_dict(order_dict(id=good), check_id=True).id == good


def test_null_id_means_compute():
    assert Order.from_dict(order_dict(id=None)).id == Order.from_dict(order_dict()).id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"qty": 1.5}, "qty: must be a positive integer, got 1.5"),
        ({"qty": 0}, "qty: must be a positive integer, got 0"),
        ({"qty": -3}, "qty: must be a positive integer, got -3"),
        ({"qty": True}, "qty: must be a positive integer, got True"),
        ({"qty": "500"}, "qty: must be a positive integer, got '500'"),
        ({"qty": 2**63}, "qty: 9223372036854775808 is above the largest allowed value"),
        ({"qty": DROP}, "qty: missing"),
        ({"side": "buy"}, "side: must be 'bid' or 'ask', got 'buy'"),
        ({"side": "BID"}, "side: must be 'bid' or 'ask', got 'BID'"),
        ({"side": None}, "side: must be 'bid' or 'ask', got None"),
        ({"side": ["bid"]}, "side: must be 'bid' or 'ask', got ['bid']"),
        ({"price": 20_000_000}, "price: 20000000 is above the market's maximum 10000000"),
        ({"price": 10_000_001}, "price: 10000001 is above the market's maximum 10000000"),
        ({"price": 0}, "price: must be a positive integer, got 0"),
        ({"price": 0.23}, "price: must be a positive integer, got 0.23"),
        ({"price": 230000.0}, "price: must be a positive integer, got 230000.0"),
        ({"price": False}, "price: must be a positive integer, got False"),
        ({"ts": "12:00"}, "ts: must be integer milliseconds, got '12:00'"),
        ({"ts": -1}, "ts: must be non-negative integer milliseconds, got -1"),
        ({"ts": 1.7e12}, "ts: must be integer milliseconds, got 1700000000000.0"),
        ({"ts": DROP}, "ts: missing"),
        ({"interval": -900_000}, "interval: must be non-negative integer milliseconds"),
        ({"interval": "t"}, "interval: must be integer milliseconds, got 't'"),
        ({"interval": True}, "interval: must be integer milliseconds, got True"),
        ({"tif": "day"}, "tif: must be 'gtc', 'ioc' or 'fok', got 'day'"),
        ({"tif": None}, "tif: must be 'gtc', 'ioc' or 'fok', got None"),
        ({"owner": DROP}, "owner: missing"),
        ({"owner": ""}, "owner: must be a non-empty string, got ''"),
        ({"owner": 7}, "owner: must be a non-empty string, got 7"),
        ({"owner": "x" * 129}, "owner: must be at most 128 characters, got 129"),
        ({"market": DROP}, "market: missing"),
        ({"market": ""}, "market: must be a non-empty string"),
        ({"side": DROP}, "side: missing"),
        ({"price": DROP}, "price: missing"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"type": "cancel"}, "type: must be 'order', got 'cancel'"),
        ({"id": ""}, "id: must be a non-empty string, got ''"),
        ({"id": 5}, "id: must be a non-empty string, got 5"),
        ({"id": "i" * 129}, "id: must be at most 128 characters"),
        ({"sig": "ab"}, "sig: must be 128 lower-case hex characters, got 'ab'"),
        ({"sig": "AB" * 64}, "sig: must be 128 lower-case hex characters"),
        ({"sig": "zz" * 64}, "sig: must be 128 lower-case hex characters"),
        ({"sig": 5}, "sig: must be 128 lower-case hex characters, got 5"),
    ],
)
def test_order_refusals_name_the_field(change, message):
    err = refused(Order.from_dict, order_dict(**change))
    assert str(err).startswith(message)
    assert err.field == message.split(":")[0]
    assert isinstance(err, ValueError)


def test_order_long_values_are_shortened_in_messages():
    err = refused(Order.from_dict, order_dict(side="s" * 10_000))
    assert len(str(err)) < 120


def test_order_not_an_object():
    err = refused(Order.from_dict, [1, 2])
    assert err.field is None
    assert "must be a JSON object, got list" in str(err)


def test_order_boundaries_accepted():
    assert Order.from_dict(order_dict(price=1)).price == 1
    assert Order.from_dict(order_dict(price=10_000_000)).price == 10_000_000
    assert Order.from_dict(order_dict(owner="x" * 128, ts=0, interval=0)).ts == 0
    assert Order.from_dict(order_dict(qty=2**63 - 1)).qty == 2**63 - 1


def test_market_spec_bounds():
    spec = MarketSpec(min_price=100_000, max_price=300_000)
    assert Order.from_dict(order_dict(price=100_000), spec).price == 100_000
    err = refused(Order.from_dict, order_dict(price=99_999), spec)
    assert str(err) == "price: 99999 is below the market's minimum 100000"
    err = refused(Order.from_dict, order_dict(price=300_001), spec)
    assert str(err) == "price: 300001 is above the market's maximum 300000"


def test_market_lookup():
    markets = {"energy": MarketSpec(), "gas": MarketSpec("gas", 10, 100)}
    assert Order.from_dict(order_dict(market="gas", price=100), markets).market == "gas"
    err = refused(Order.from_dict, order_dict(market="gas", price=101), markets)
    assert str(err) == "price: 101 is above the market's maximum 100"
    err = refused(Order.from_dict, order_dict(market="heat"), markets)
    assert str(err) == "market: unknown market 'heat'"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"min_price": 0}, "min_price"),
        ({"min_price": 1.0}, "min_price"),
        ({"min_price": 10, "max_price": 9}, "max_price"),
        ({"max_price": True}, "max_price"),
    ],
)
def test_market_spec_validates(kwargs, field):
    assert refused(MarketSpec, **kwargs).field == field


def test_direct_construction_validates_too():
    assert refused(Order, "energy", "bid", 1.5, 1, OWNER, TS).field == "price"
    o = Order("energy", "bid", 1, 1, OWNER, TS)
    assert o.id == o.computed_id()


def test_records_are_frozen_slotted():
    o = Order.from_dict(order_dict())
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.price = 1  # type: ignore[misc]
    assert not hasattr(o, "__dict__")


def test_replace_keeps_id_unless_cleared():
    o = Order.from_dict(order_dict())
    moved = dataclasses.replace(o, price=240_000)
    assert moved.id == o.id  # documented: replace keeps the old id
    assert dataclasses.replace(o, price=240_000, id="").id == moved.computed_id() != o.id
    assert refused(dataclasses.replace, o, qty=0).field == "qty"


order_strategy = st.builds(
    lambda side, price, qty, owner, ts, interval, tif, with_id, signed: order_dict(
        side=side,
        price=price,
        qty=qty,
        owner=owner,
        ts=ts,
        interval=interval,
        tif=tif,
        id="given-id" if with_id else DROP,
        sig="ab" * 64 if signed else DROP,
    ),
    st.sampled_from(["bid", "ask"]),
    st.integers(1, 10_000_000),
    st.integers(1, 2**63 - 1),
    st.text(min_size=1, max_size=128),
    st.integers(0, 2**63 - 1),
    st.none() | st.integers(0, 2**63 - 1),
    st.sampled_from(["gtc", "ioc", "fok"]),
    st.booleans(),
    st.booleans(),
)


@given(order_strategy)
def test_order_round_trip(d):
    o = Order.from_dict(d)
    assert Order.from_dict(o.to_dict()) == o
    assert Order.from_dict(orjson.loads(orjson.dumps(o.to_dict()))) == o
    assert o.to_dict().get("sig") == d.get("sig")
    assert o.to_dict()["id"] == d.get("id", o.computed_id())


# --- signatures -----------------------------------------------------------------------


def test_signed_order_verifies_and_tampering_fails():
    o = Order.from_dict(order_dict()).signed(KEY)
    assert verify_signature(o)
    assert Order.from_dict(o.to_dict()) == o
    assert verify_signature(Order.from_dict(o.to_dict()))
    assert o.id == Order.from_dict(order_dict()).id  # the signature is not part of the id
    for change in ({"price": 230_001}, {"qty": 499}, {"side": "ask"}, {"interval": None}):
        tampered = Order.from_dict({**o.to_dict(), **change, "id": None})
        assert tampered.sig == o.sig
        assert not verify_signature(tampered)


def test_signature_by_another_key_fails():
    other = generate_key()
    body = Order.from_dict(order_dict()).body()
    forged = Order.from_dict(order_dict(sig=sign(other, body)))
    assert not verify_signature(forged)


def test_unsigned_or_non_peer_owner_is_false():
    assert not verify_signature(Order.from_dict(order_dict()))
    o = Order.from_dict(order_dict(owner="alice", sig="00" * 64))
    assert verify_signature(o) is False


def test_signing_with_a_key_that_is_not_the_owners_is_refused():
    with pytest.raises(ValueError, match="belongs to"):
        Order.from_dict(order_dict()).signed(generate_key())


def test_order_signature_does_not_verify_as_a_cancel():
    # Domain separation: the body carries its type.
    o = Order.from_dict(order_dict()).signed(KEY)
    c = Cancel(o.id, OWNER, TS, o.sig)
    assert not verify_signature(c)


# --- cancels --------------------------------------------------------------------------


def test_cancel_round_trip_and_body():
    c = Cancel.from_dict({"type": "cancel", "id": "abc", "owner": OWNER, "ts": TS})
    assert c.body() == {"type": "cancel", "id": "abc", "owner": OWNER, "ts": TS}
    assert c.to_dict() == c.body()
    assert Cancel.from_dict(c.to_dict()) == c
    signed = c.signed(KEY)
    assert verify_signature(signed)
    assert Cancel.from_dict(signed.to_dict()) == signed
    assert not verify_signature(dataclasses.replace(signed, id="abd"))
    assert not verify_signature(dataclasses.replace(signed, ts=TS + 1))
    assert (
        c.computed_id()
        == hashlib.sha256(orjson.dumps(c.body(), option=orjson.OPT_SORT_KEYS)).hexdigest()
    )


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"owner": OWNER, "ts": TS}, "id: missing"),
        ({"id": "abc", "ts": TS}, "owner: missing"),
        ({"id": "abc", "owner": OWNER}, "ts: missing"),
        ({"id": "", "owner": OWNER, "ts": TS}, "id: must be a non-empty string"),
        ({"id": "abc", "owner": OWNER, "ts": "now"}, "ts: must be integer milliseconds"),
        ({"id": "abc", "owner": OWNER, "ts": TS, "qty": 1}, "qty: unknown field"),
        ({"type": "order", "id": "abc", "owner": OWNER, "ts": TS}, "type: must be 'cancel'"),
        ({"id": "abc", "owner": OWNER, "ts": TS, "sig": "x"}, "sig: must be 128"),
    ],
)
def test_cancel_refusals(d, message):
    assert str(refused(Cancel.from_dict, d)).startswith(message)


# --- accounts -------------------------------------------------------------------------


def test_account_round_trip():
    d = {"type": "account", "owner": OWNER, "energy": 2_000, "money": 5 * 10**9, "bmax": 10_000}
    a = Account.from_dict(d)
    assert a.to_dict() == d
    assert Account.from_dict(a.to_dict()) == a
    b = Account.from_dict({**d, "bmax": None, "energy": 10**9})
    assert b.bmax is None and Account.from_dict(b.to_dict()) == b
    assert Account.from_dict({**d, "energy": 10_000}).energy == 10_000  # = bmax is fine


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"energy": -1}, "energy: must be a non-negative integer, got -1"),
        ({"energy": 1.0}, "energy: must be a non-negative integer, got 1.0"),
        ({"energy": 10_001}, "energy: 10001 is above bmax 10000"),
        ({"money": -5}, "money: must be a non-negative integer, got -5"),
        ({"money": "5"}, "money: must be a non-negative integer, got '5'"),
        ({"money": True}, "money: must be a non-negative integer, got True"),
        ({"bmax": 0}, "bmax: must be a positive integer, got 0"),
        ({"bmax": 1e4}, "bmax: must be a positive integer, got 10000.0"),
        ({"bmax": DROP}, "bmax: missing"),
        ({"owner": ""}, "owner: must be a non-empty string"),
        ({"owner": "o" * 129}, "owner: must be at most 128 characters"),
        ({"owner": DROP}, "owner: missing"),
        ({"cap": 5}, "cap: unknown field"),
        ({"type": "trade"}, "type: must be 'account', got 'trade'"),
    ],
)
def test_account_refusals(change, message):
    d = {"type": "account", "owner": OWNER, "energy": 2_000, "money": 0, "bmax": 10_000}
    d.update(change)
    d = {k: v for k, v in d.items() if v is not DROP}
    err = refused(Account.from_dict, d)
    assert str(err).startswith(message)
    assert err.field == message.split(":")[0]


# --- trades ---------------------------------------------------------------------------

TRADE = {
    "seq": 0,
    "mode": "call",
    "interval": INTERVAL,
    "ts": TS,
    "buyer": "b",
    "seller": "s",
    "bid": "o1",
    "ask": "o2",
    "qty": 300,
    "price": 225_000,
}


def test_trade_round_trip():
    t = Trade.from_dict(TRADE)
    assert t.to_dict() == TRADE
    assert Trade.from_dict(t.to_dict()) == t
    assert Trade.from_dict({**TRADE, "type": "trade", "interval": None}).interval is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "auction"}, "mode: must be 'cda' or 'call', got 'auction'"),
        ({"seq": -1}, "seq: must be a non-negative integer"),
        ({"interval": DROP}, "interval: missing"),
        ({"qty": 0}, "qty: must be a positive integer"),
        ({"price": 2.5}, "price: must be a positive integer, got 2.5"),
        ({"buyer": ""}, "buyer: must be a non-empty string"),
        ({"ask": None}, "ask: must be a non-empty string, got None"),
        ({"ts": None}, "ts: must be integer milliseconds, got None"),
        ({"fee": 1}, "fee: unknown field"),
    ],
)
def test_trade_refusals(change, message):
    d = {**TRADE, **change}
    d = {k: v for k, v in d.items() if v is not DROP}
    assert str(refused(Trade.from_dict, d)).startswith(message)


# --- log lines ------------------------------------------------------------------------


def test_parse_record_dispatches_on_type():
    assert isinstance(parse_record(order_dict()), Order)
    assert isinstance(parse_record({"type": "cancel", "id": "x", "owner": "o", "ts": 1}), Cancel)
    acct = {"type": "account", "owner": "o", "energy": 0, "money": 0, "bmax": None}
    assert isinstance(parse_record(acct), Account)
    markets = {"gas": MarketSpec("gas")}
    assert str(refused(parse_record, order_dict(), markets)) == "market: unknown market 'energy'"
    assert str(refused(parse_record, {"owner": "o"})) == "type: missing"
    assert str(refused(parse_record, {"type": "fill"})).startswith("type: must be 'account'")
    assert refused(parse_record, "order").field is None
