"""How a person reads wattmesh's integers (exchange/units.py)."""

from __future__ import annotations

import time

import pytest

from wattmesh.exchange.units import interval_text, price_text


@pytest.mark.parametrize(
    ("zone", "text"),
    [("UTC", "15:45–16:00"), ("Europe/Berlin", "16:45–17:00"), ("America/New_York", "10:45–11:00")],
)
def test_an_interval_reads_in_the_machines_own_time(monkeypatch, zone, text):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert interval_text(1_765_813_500_000, 900_000) == text  # 2025-12-15T15:45Z
    finally:
        monkeypatch.undo()
        time.tzset()


def test_prices_read_per_kwh():
    assert (price_text(230_000), price_text(None)) == ("0.2300", "-")


def test_money_reads_in_the_communitys_currency():
    from wattmesh.exchange.units import money_text

    assert money_text(630_000_000, "€") == "€0.63"
    assert money_text(-1_204_000_000, "€") == "-€1.20"
    assert money_text(630_000_000, "EUR") == "0.63 EUR"
    assert money_text(12_345_670_000_000) == "12,345.67"


def test_energy_reads_in_kwh_to_the_wh():
    from wattmesh.exchange.units import energy_text

    assert (energy_text(1_250), energy_text(0)) == ("1.250 kWh", "0.000 kWh")
