"""Canonical JSON: exact bytes, key-order independence, and refusal of non-JSON values."""

import dataclasses
import enum
import hashlib
import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattmesh.settlement.canonical import CanonicalError, canonical, record_id, sha256_hex

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def test_exact_bytes_sorted_and_compact():
    body = {"b": 1, "a": [True, None, "x", -7], "c": {"z": "é", "y": False}}
    assert canonical(body) == '{"a":[true,null,"x",-7],"b":1,"c":{"y":false,"z":"é"}}'.encode()


def test_canonical_error_is_a_value_error():
    assert issubclass(CanonicalError, ValueError)


@given(json_values)
def test_matches_orjson_sorted_and_round_trips(value):
    out = canonical(value)
    assert out == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    assert orjson.loads(out) == value


@given(st.dictionaries(st.text(max_size=8), json_values, min_size=2, max_size=8), st.randoms())
def test_key_order_does_not_matter(d, rnd):
    items = list(d.items())
    rnd.shuffle(items)
    shuffled = dict(items)
    nested = {"outer": shuffled, "list": [shuffled]}
    assert canonical(shuffled) == canonical(d)
    assert canonical(nested) == canonical({"list": [d], "outer": d})


def test_int_range_bounds_accepted():
    assert canonical([-(2**63), 2**64 - 1]) == b"[-9223372036854775808,18446744073709551615]"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"orders": [{}, {}, {"price": 1.5}]}, "$.orders[2].price: float 1.5 is not allowed"),
        ({"a": float("nan")}, "$.a: float nan is not allowed"),
        ({"a": [math.inf]}, "$.a[0]: float inf is not allowed"),
        (1.0, "$: float 1.0 is not allowed"),
        ({"blob": b"\x00"}, "$.blob: bytes is not allowed"),
        ({"pair": (1, 2)}, "$.pair: tuple is not allowed in canonical JSON (use a list)"),
        ({"s": {1, 2}}, "$.s: set is not allowed"),
        ({"x": {"y": [1, {"z": bytearray(b"1")}]}}, "$.x.y[1].z: bytearray is not allowed"),
        ({"k": {1: "a"}}, "$.k: object key 1 (int) is not a str"),
        ({"x y": [2**64]}, "$['x y'][0]: int 18446744073709551616 is outside the range"),
        ({"n": -(2**63) - 1}, "$.n: int -9223372036854775809 is outside the range"),
        ({"s": "\ud800"}, "$.s: str '\\ud800' is not valid UTF-8"),
    ],
)
def test_refused_with_path(value, message):
    with pytest.raises(CanonicalError) as info:
        canonical(value)
    assert str(info.value).startswith(message)


class Side(enum.IntEnum):
    BID = 1


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"side": Side.BID}, "$.side: Side is not allowed"),
        ({"name": Name("a")}, "$.name: Name is not allowed"),
        ([Point(1)], "$[0]: Point is not allowed"),
        ({Name("k"): 1}, "$: object key 'k' (Name) is not a str"),
    ],
)
def test_subclasses_and_objects_refused(value, message):
    # orjson would happily encode all of these; canonical JSON takes plain types only.
    with pytest.raises(CanonicalError) as info:
        canonical(value)
    assert str(info.value).startswith(message)


def test_too_deep_and_cycles_refused():
    deep: list = []
    cur = deep
    for _ in range(300):
        cur.append([])
        cur = cur[0]
    with pytest.raises(CanonicalError, match="nested deeper than 254 levels"):
        canonical(deep)
    cycle: dict = {}
    cycle["self"] = cycle
    with pytest.raises(CanonicalError, match=r"^\$\.self\.self.*nested deeper"):
        canonical(cycle)


def test_nesting_up_to_orjson_limit_accepted():
    deep: list = []
    cur = deep
    for _ in range(253):  # 254 levels of lists in total
        cur.append([])
        cur = cur[0]
    assert canonical(deep) == b"[" * 254 + b"]" * 254


def test_sha256_hex_known_vector():
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_record_id_is_sha256_of_canonical_bytes():
    body = {"type": "order", "qty": 5, "owner": "o"}
    expected = hashlib.sha256(b'{"owner":"o","qty":5,"type":"order"}').hexdigest()
    assert record_id(body) == expected
    assert record_id({"owner": "o", "type": "order", "qty": 5}) == expected
    assert record_id({"owner": "o", "type": "order", "qty": 6}) != expected


def test_record_id_refuses_floats():
    with pytest.raises(CanonicalError, match=r"^\$\.qty: float"):
        record_id({"qty": 5.0})
