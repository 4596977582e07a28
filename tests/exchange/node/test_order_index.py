"""The store's compiled index of open orders (exchange/node/_order_index.pyx) against a
dict of lists, the reference: the same pairs found after any run of adds and discards,
collisions in the table and its growth included."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

import pytest

from wattmesh.exchange.node._order_index import OrderIndex


def ids(n: int, seed: int) -> list[str]:
    return [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in range(n)]


@pytest.mark.parametrize("seed", range(6))
def test_the_index_finds_what_a_dict_of_lists_holds(seed: int):
    rng = random.Random(seed)
    pool = ids(rng.choice((20, 300, 3_000)), seed)
    index, reference = OrderIndex(), defaultdict(list)
    for _ in range(8_000):
        oid = rng.choice(pool)
        if rng.random() < 0.6:
            value = rng.randint(1, 5)
            index.add(oid, value)
            reference[oid].append(value)
        else:
            value = rng.choice(reference[oid]) if reference[oid] and rng.random() < 0.8 else 9
            held = value in reference[oid]
            assert index.discard(oid, value) is held
            if held:
                reference[oid].remove(value)
        if rng.random() < 0.05:  # now and then, every key
            for k in pool:
                assert sorted(index.find(k)) == sorted(reference[k])
    for k in pool:
        assert sorted(index.find(k)) == sorted(reference[k])
    assert len(index) == sum(map(len, reference.values()))


def test_the_table_stays_at_most_three_quarters_full_and_drains_to_nothing():
    index, keys = OrderIndex(), ids(10_000, 99)
    for n, k in enumerate(keys, 1):
        index.add(k, n)
    assert len(index) == 10_000 and index.nbytes() == 16_384 * 36  # 36 bytes a slot
    for n, k in enumerate(keys, 1):
        assert index.find(k) == [n]
    for n, k in enumerate(keys, 1):
        assert index.discard(k, n) and not index.discard(k, n)
    assert len(index) == 0 and all(index.find(k) == [] for k in keys[:100])


def test_only_an_order_id_as_written_is_a_key():
    index, (k,) = OrderIndex(), ids(1, 5)
    index.add(k, 1)
    for other in (k.upper(), k[:-1], k + "0", "g" * 64, "", 64 * "é"):
        assert index.find(other) == [] and not index.discard(other, 1)
        with pytest.raises(ValueError):
            index.add(other, 2)
    with pytest.raises(ValueError):
        index.add(k, 0)
    assert index.find(k) == [1] and len(index) == 1
