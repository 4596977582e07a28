"""Meter readings in the ledger: applied as docs/design.md says, with their grid entries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.ledger import ZERO_HASH, Ledger, LedgerError, entry_hash
from wattmesh.settlement.readings import apply_reading
from wattmesh.settlement.records import Reading

T0 = 1_718_928_000_000
IV = 900_000
RETAIL, FEEDIN = 300_000, 80_000
GENESIS = {
    "community": "elm-street", "interval_ms": IV, "price_min": 0, "price_max": 1_000_000,
    "fee_rate_ppm": 0, "retail_price": RETAIL, "feedin_price": FEEDIN,
    "funds": {"fees": "fund:fees"},
}  # fmt: skip
METER = generate_key()


@pytest.fixture
def reading(make_reading):
    """The ledger item of METER's ``seq``-th reading (one interval each, from T0)."""

    def build(seq: int, produced: int, consumed: int, start: int | None = None) -> tuple:
        start = T0 + (seq - 1) * IV if start is None else start
        return ("reading", make_reading(METER, start, produced, consumed, seq, IV).to_dict())

    return build


def household(path: Path, energy: int = 1_000, money: int = 10**9) -> Ledger:
    """ann (bmax 5000) with ``energy`` Wh and ``money`` nano, and a registered meter."""
    led = Ledger.open(path)
    led.append_batch(
        [("genesis", GENESIS), ("member", {"owner": "ann", "bmax": 5_000, "storage": False}),
         ("meter", {"meter": peer_id_of(METER), "owner": "ann"}),
         ("opening", {"owner": "ann", "energy": energy, "money": money})],
        ts=T0,
    )  # fmt: skip
    return led


def ann(led: Ledger) -> tuple[int, int]:
    b = led.balances()["ann"]
    return b["energy"], b["money"]


def test_production_above_bmax_is_exported_at_the_feed_in_price(reading, tmp_path: Path) -> None:
    with household(tmp_path / "l.db") as led:
        entries = led.append_batch([reading(1, 4_700, 200)], ts=T0 + IV)
        assert [e.kind for e in entries] == ["reading", "grid_export"]
        assert entries[1].body == {"owner": "ann", "qty": 500, "price": FEEDIN,
                                   "reading": entries[0].seq}  # fmt: skip
        assert ann(led) == (5_000, 10**9 + 500 * FEEDIN)
        bal = led.balances()
        # the meter gave 4500 net: 4000 into ann's storage and 500 straight to the grid
        assert bal["@meters"]["energy"] == -1_000 - 4_500
        assert bal["@grid"] == {"kind": "external", "energy": 500, "money": -500 * FEEDIN}
        # A writer may leave the grid entry out anywhere in a batch: it lands right after
        # its reading, computed from the balances at that point.
        deposit = ("deposit", {"owner": "ann", "amount": 1})
        entries = led.append_batch([deposit, reading(2, 10, 0), deposit], ts=T0 + 2 * IV)
        assert [e.kind for e in entries] == ["deposit", "reading", "grid_export", "deposit"]
        assert entries[2].body["qty"] == 10
        assert led.verify().ok


def test_consumption_the_balance_cannot_cover_is_imported_and_billed_if_unpaid(reading, tmp_path):
    with household(tmp_path / "l.db", energy=1_000, money=100 * RETAIL) as led:
        entries = led.append_batch([reading(1, 200, 1_500)], ts=T0 + IV)
        assert [e.kind for e in entries] == ["reading", "grid_import"]
        assert entries[1].body == {"owner": "ann", "qty": 300, "price": RETAIL,
                                   "reading": entries[0].seq, "billed": 200 * RETAIL}  # fmt: skip
        assert ann(led) == (0, 0)  # paid 100 Wh from its money; the supplier bills 200 Wh
        led.append_batch([reading(2, 0, 10)], ts=T0 + 2 * IV)
        assert ann(led) == (0, 0)
        assert led.verify().ok


def test_a_reading_within_the_balance_needs_no_grid_entry(reading, tmp_path: Path) -> None:
    with household(tmp_path / "l.db") as led:
        [e] = led.append_batch([reading(1, 300, 800)], ts=T0 + IV)
        assert e.kind == "reading" and ann(led) == (500, 10**9)


def test_refused_readings_change_nothing(reading, tmp_path: Path) -> None:
    with household(tmp_path / "l.db") as led:
        led.append_batch([reading(1, 10, 0)], ts=T0 + IV)
        before = (led.head(), led.balances())
        cases = [
            ([reading(1, 10, 0, start=T0 + IV)], "seq", "not above the last accepted 1"),
            ([reading(2, 10, 0, start=T0 + IV // 2)], "start", "before the end of the last"),
            ([reading(2, 4_000, 0), ("grid_export", {"owner": "ann", "qty": 1, "price": FEEDIN,
                                                      "reading": 6})], "qty", "leaves 10 Wh"),
        ]  # fmt: skip
        for items, field, text in cases:
            with pytest.raises(LedgerError, match=text) as exc:
                led.append_batch(items, ts=T0 + 2 * IV)
            assert exc.value.field == field
            assert (led.head(), led.balances()) == before
        forged = reading(2, 10, 0)
        forged[1]["produced"] = 11
        with pytest.raises(LedgerError, match="signature"):
            led.append_batch([forged], ts=T0 + 2 * IV)
        unknown = generate_key()
        r = Reading(peer_id_of(unknown), T0, T0 + IV, 1, 0, 1).signed(unknown)
        with pytest.raises(LedgerError, match="not registered"):
            led.append_batch([("reading", r.to_dict())], ts=T0 + 2 * IV)
        assert (led.head(), led.balances()) == before


def test_verify_names_a_reading_whose_grid_entry_was_removed(reading, tmp_path: Path) -> None:
    with household(tmp_path / "l.db") as led:
        led.append_batch([reading(1, 4_700, 200)], ts=T0 + IV)
        path = led.path
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("DELETE FROM entries WHERE kind = 'grid_export'")  # the last entry
    with Ledger.open(path) as led:
        res = led.verify()
    assert not res.ok and "ends inside a batch" in res.problem
    assert "grid_export of 500 Wh" in res.problem


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=st.integers(0, 5_000),
    money=st.integers(0, 10**9),
    flows=st.lists(st.tuples(st.integers(0, 6_000), st.integers(0, 6_000)), min_size=1,
                   max_size=8),
)  # fmt: skip
def test_readings_follow_the_reference_rule(reading, tmp_path_factory, start, money, flows) -> None:
    """The ledger's balances after any readings equal readings.apply_reading folded by
    hand; nothing is created or lost and the balance stays within [0, bmax]."""
    path = tmp_path_factory.mktemp("r") / "l.db"
    with household(path, energy=start, money=money) if start or money else _empty(path) as led:
        e, m = start, money
        for seq, (produced, consumed) in enumerate(flows, 1):
            led.append_batch([reading(seq, produced, consumed)], ts=T0 + seq * IV)
            eff = apply_reading(e, 5_000, produced, consumed, RETAIL, FEEDIN)
            e = eff.balance
            m = m + eff.export_credit - min(eff.import_charge, m)
            assert ann(led) == (e, m)
            assert 0 <= e <= 5_000
        bal = led.balances()
        assert sum(b["energy"] for b in bal.values()) == 0
        assert sum(b["money"] for b in bal.values()) == 0
        assert led.verify().ok


def _empty(path: Path) -> Ledger:
    led = Ledger.open(path)
    led.append_batch(
        [("genesis", GENESIS), ("member", {"owner": "ann", "bmax": 5_000, "storage": False}),
         ("meter", {"meter": peer_id_of(METER), "owner": "ann"})],
        ts=T0,
    )  # fmt: skip
    return led


def test_reading_entries_hash_like_every_other_entry(reading, tmp_path: Path) -> None:
    with household(tmp_path / "l.db") as led:
        led.append_batch([reading(1, 4_700, 200)], ts=T0 + IV)
        prev = ZERO_HASH
        for e in led.entries():
            assert e.hash == entry_hash(prev, e.seq, e.ts, e.kind, e.body)
            prev = e.hash


def test_a_reading_beyond_the_meters_declared_power_is_refused(reading, tmp_path: Path) -> None:
    led = Ledger.open(tmp_path / "l.db")
    led.append_batch(
        [("genesis", GENESIS), ("member", {"owner": "ann", "bmax": 5_000, "storage": False}),
         ("meter", {"meter": peer_id_of(METER), "owner": "ann", "max_power_w": 4_000})],
        ts=T0,
    )  # fmt: skip
    led.append_batch([reading(1, 1_000, 1_000)], ts=T0 + IV)  # 4 kW for 15 minutes: the most
    with pytest.raises(LedgerError, match="more than the meter.s 4000 W can give") as exc:
        led.append_batch([reading(2, 0, 1_001)], ts=T0 + 2 * IV)
    assert exc.value.field == "consumed"
    assert Ledger.open(tmp_path / "l.db").verify().ok  # the limit survives a reopen
