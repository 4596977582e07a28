"""Energo storage commission: per-account fees and the 80/10/10 split (settlement/fees.py)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.settlement.fees import apportion, split_fees, storage_fee, storage_fees

EDU, NET = "fund:education", "fund:network"


def test_storage_fee_units() -> None:
    # rate is nano per kWh per interval: 1500 Wh at 2000 nano/kWh = 3000 nano.
    assert storage_fee(1500, 2000) == 3000
    assert storage_fee(999, 1) == 0  # floor: under a kWh at 1 nano/kWh is free
    assert storage_fee(1999, 1) == 1
    assert storage_fee(0, 10**9) == 0


def test_storage_fees_leaves_out_zero() -> None:
    assert storage_fees({"a": 1500, "b": 0, "c": 10}, 2000) == {"a": 3000, "c": 20}
    assert storage_fees({}, 5) == {}


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: storage_fees({"a": -1}, 1), "balances"),
        (lambda: storage_fees({"a": 1}, -1), "rate"),
        (lambda: storage_fees({"": 1}, 1), "balances"),
        (lambda: storage_fee(1, True), "rate"),
        (lambda: split_fees(-1, {"p": 1}, EDU, NET), "total"),
        (lambda: split_fees(10, {}, EDU, NET), "providers"),
        (lambda: split_fees(10, {"p": 0}, EDU, NET), "providers"),
        (lambda: split_fees(10, {"p": -1}, EDU, NET), "providers"),
        (lambda: split_fees(10, {"p": 1}, "", NET), "education"),
        (lambda: split_fees(10, {"p": 1}, EDU, None), "network"),
        (lambda: apportion(10, {"a": 0}), "weights"),
    ],
)
def test_validation_names_field(call, field: str) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        call()


def test_split_hand_cases() -> None:
    assert split_fees(100, {"p": 1}, EDU, NET) == {"p": 80, EDU: 10, NET: 10}
    assert split_fees(1000, {"p": 3, "q": 1}, EDU, NET) == {"p": 600, "q": 200, EDU: 100, NET: 100}
    # 7 nano: exact 5.6 / 0.7 / 0.7 -> floors 5/0/0, two left go to the .7s, not the .6.
    assert split_fees(7, {"p": 1}, EDU, NET) == {"p": 5, EDU: 1, NET: 1}
    # 5 nano: 4 / .5 / .5 -> one left, the funds tie, the smaller id takes it.
    assert split_fees(5, {"p": 1}, EDU, NET) == {"p": 4, EDU: 1}
    # 1 nano: biggest remainder is the provider's .8
    assert split_fees(1, {"p": 1}, EDU, NET) == {"p": 1}
    # equal providers tie: the leftover goes to the smaller id
    assert split_fees(10, {"b": 1, "a": 1}, EDU, NET) == {"a": 4, "b": 4, EDU: 1, NET: 1}
    assert split_fees(9, {"b": 1, "a": 1}, EDU, NET) == {"a": 4, "b": 3, EDU: 1, NET: 1}
    assert split_fees(0, {"p": 1}, EDU, NET) == {}


def test_one_account_in_two_roles() -> None:
    # The network fund owns half the storage: 10% + 40% = 50%, rounded once.
    assert split_fees(100, {"p": 1, NET: 1}, EDU, NET) == {"p": 40, NET: 50, EDU: 10}
    assert split_fees(100, {"p": 1}, "fund", "fund") == {"p": 80, "fund": 20}


def test_capacity_zero_provider_gets_nothing() -> None:
    assert split_fees(3, {"p": 5, "z": 0}, EDU, NET) == {"p": 3}


accounts = st.text(alphabet="abcdefgh", min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10**15),
    st.dictionaries(accounts, st.integers(0, 10**7), min_size=1, max_size=12).filter(
        lambda p: sum(p.values()) > 0
    ),
    st.sampled_from([EDU, "a", "zz"]),
    st.sampled_from([NET, "b", "zz"]),
)
def test_split_properties(total: int, providers: dict[str, int], edu: str, net: str) -> None:
    out = split_fees(total, providers, edu, net)
    assert sum(out.values()) == total  # nothing created or lost
    assert all(v > 0 for v in out.values())
    # Exact entitlement per account (roles added); every share within 1 nano of it.
    cap = sum(providers.values())
    exact: dict[str, Fraction] = {}
    for a, c in providers.items():
        exact[a] = exact.get(a, 0) + Fraction(total * 80 * c, 100 * cap)
    exact[edu] = exact.get(edu, 0) + Fraction(total, 10)
    exact[net] = exact.get(net, 0) + Fraction(total, 10)
    for a, want in exact.items():
        assert abs(out.get(a, 0) - want) < 1
    assert set(out) <= set(exact)
    # Deterministic, whatever the mapping's order.
    assert split_fees(total, dict(reversed(list(providers.items()))), edu, net) == out


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(accounts, st.integers(0, 10**9), max_size=12),
    st.integers(0, 10**9),
)
def test_storage_fees_properties(balances: dict[str, int], rate: int) -> None:
    fees = storage_fees(balances, rate)
    for a, wh in balances.items():
        exact = Fraction(wh * rate, 1000)
        got = fees.get(a, 0)
        assert 0 <= exact - got < 1  # floor: never overcharged, under by < 1 nano
    assert all(v > 0 for v in fees.values())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12), st.dictionaries(accounts, st.integers(0, 10**6), max_size=10))
def test_apportion_properties(total: int, weights: dict[str, int]) -> None:
    w = sum(weights.values())
    if w == 0:
        with pytest.raises(ValueError):
            apportion(total, weights)
        return
    out = apportion(total, weights)
    assert sum(out.values()) == total
    for a, wt in weights.items():
        assert abs(out.get(a, 0) - Fraction(total * wt, w)) < 1
        if wt == 0:
            assert a not in out
