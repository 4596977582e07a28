"""One meter reading applied to an energy balance (settlement/readings.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.settlement.readings import ReadingEffect, apply_reading
from wattmesh.settlement.records import RecordError

RETAIL, FEED_IN = 300_000, 80_000


def test_within_bounds_no_grid() -> None:
    assert apply_reading(500, 1000, 300, 100, RETAIL, FEED_IN) == ReadingEffect(700, 0, 0, 0, 0)
    assert apply_reading(500, 1000, 0, 500, RETAIL, FEED_IN) == ReadingEffect(0, 0, 0, 0, 0)
    assert apply_reading(500, 1000, 500, 0, RETAIL, FEED_IN) == ReadingEffect(1000, 0, 0, 0, 0)


def test_export_above_bmax() -> None:
    eff = apply_reading(900, 1000, 300, 50, RETAIL, FEED_IN)
    assert eff == ReadingEffect(1000, 150, 0, 150 * FEED_IN, 0)


def test_import_below_zero() -> None:
    eff = apply_reading(100, 1000, 20, 400, RETAIL, FEED_IN)
    assert eff == ReadingEffect(0, 0, 280, 0, 280 * RETAIL)


def test_net_first_full_battery_trades_nothing() -> None:
    # Production covers the same interval's consumption first (as agents/community.py):
    # a full battery producing and consuming 2 kWh neither exports nor imports.
    assert apply_reading(1000, 1000, 2000, 2000, RETAIL, FEED_IN) == ReadingEffect(1000, 0, 0, 0, 0)
    assert apply_reading(0, 1000, 2000, 2000, RETAIL, FEED_IN) == ReadingEffect(0, 0, 0, 0, 0)


def test_no_cap() -> None:
    assert apply_reading(10**12, None, 10**9, 0, RETAIL, FEED_IN) == ReadingEffect(
        10**12 + 10**9, 0, 0, 0, 0
    )
    assert apply_reading(5, None, 0, 8, RETAIL, FEED_IN) == ReadingEffect(0, 0, 3, 0, 3 * RETAIL)


def test_bmax_zero_is_grid_only() -> None:
    assert apply_reading(0, 0, 7, 3, RETAIL, FEED_IN) == ReadingEffect(0, 4, 0, 4 * FEED_IN, 0)
    assert apply_reading(0, 0, 3, 7, RETAIL, FEED_IN) == ReadingEffect(0, 0, 4, 0, 4 * RETAIL)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, 10, 0, 0, 1, 1), "balance"),
        ((11, 10, 0, 0, 1, 1), "balance"),
        ((0, -1, 0, 0, 1, 1), "bmax"),
        ((0, 10, -1, 0, 1, 1), "produced"),
        ((0, 10, 0, -1, 1, 1), "consumed"),
        ((0, 10, 0, 0, -1, 1), "retail"),
        ((0, 10, 0, 0, 1, -1), "feed_in"),
        ((0, 10, 1.5, 0, 1, 1), "produced"),
        ((0, 10, 0, True, 1, 1), "consumed"),
        ((0, "10", 0, 0, 1, 1), "bmax"),
    ],
)
def test_validation_names_field(args: tuple, field: str) -> None:
    with pytest.raises(RecordError, match=f"^{field}:") as info:
        apply_reading(*args)
    assert info.value.field == field


wh = st.integers(0, 10**9)


@settings(max_examples=500, deadline=None)
@given(st.data(), st.one_of(st.none(), wh), wh, wh, st.integers(0, 10**7), st.integers(0, 10**7))
def test_properties(
    data: st.DataObject, bmax: int | None, produced: int, consumed: int, retail: int, feed_in: int
) -> None:
    balance = data.draw(st.integers(0, 10**9 if bmax is None else bmax))
    eff = apply_reading(balance, bmax, produced, consumed, retail, feed_in)
    # Energy is conserved exactly.
    assert balance + produced + eff.imported_wh == eff.balance + consumed + eff.exported_wh
    # The balance stays within [0, Bmax]; flows are non-negative and never both at once.
    assert eff.balance >= 0
    assert bmax is None or eff.balance <= bmax
    assert eff.exported_wh >= 0 and eff.imported_wh >= 0
    assert eff.exported_wh == 0 or eff.imported_wh == 0
    if bmax is None:
        assert eff.exported_wh == 0
    # The grid is used only for what storage cannot take or give.
    if eff.exported_wh:
        assert eff.balance == bmax
    if eff.imported_wh:
        assert eff.balance == 0
    # Money is exact.
    assert eff.export_credit == eff.exported_wh * feed_in
    assert eff.import_charge == eff.imported_wh * retail
    assert all(type(v) is int for v in vars_of(eff))


def vars_of(eff: ReadingEffect) -> list[object]:
    return [eff.balance, eff.exported_wh, eff.imported_wh, eff.export_credit, eff.import_charge]
