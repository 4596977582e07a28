"""The simulated household meter (wattmesh.meters.simulated): both backends give contiguous,
aligned, non-negative integer measurements, seeded and window-independent; the pvlib
backend's energies are sane (a June day, a year); without the sim extra, "auto" falls back
to the built-in profiles and "pvlib" fails with one clear message."""

from __future__ import annotations

import calendar
import subprocess
import sys
import time
import warnings

import pytest

from wattmesh.meters.measurement import DEFAULT_INTERVAL_MS, Measurement
from wattmesh.meters.simulated import (
    DAY_MS,
    SITES,
    SimulationError,
    pvlib_available,
    resolve_backend,
    simulate,
)

needs_pvlib = pytest.mark.skipif(not pvlib_available(), reason="the sim extra is not installed")
BACKENDS = [pytest.param("pvlib", marks=needs_pvlib), "builtin"]
HOUR_MS = 3_600_000


def local_midnight(year: int, month: int, day: int, site: str = "greensboro") -> int:
    """UTC ms of 00:00 local standard time at the site."""
    return calendar.timegm((year, month, day, 0, 0, 0)) * 1000 - SITES[site].utc_offset_h * HOUR_MS


YEAR_2025 = local_midnight(2025, 1, 1)


@pytest.fixture(scope="module")
def pvlib_year() -> list[Measurement]:
    if not pvlib_available():
        pytest.skip("the sim extra is not installed")
    return list(simulate(YEAR_2025, 365, seed=5, backend="pvlib"))


@pytest.fixture(scope="module")
def builtin_year() -> list[Measurement]:
    return list(simulate(YEAR_2025, 365, seed=5, backend="builtin"))


def check_stream(ms: list[Measurement], start: int, days: int, interval: int) -> None:
    assert len(ms) == days * DAY_MS // interval
    assert ms[0].start == start and ms[-1].end == start + days * DAY_MS
    for a, b in zip(ms, ms[1:], strict=False):
        assert a.end == b.start
    for m in ms:
        assert m.end - m.start == interval and m.start % interval == 0
        assert type(m.produced) is int and type(m.consumed) is int
        assert m.produced >= 0 and m.consumed >= 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_measurements_are_contiguous_aligned_non_negative_ints(backend: str) -> None:
    start = local_midnight(2024, 4, 10)
    ms = list(simulate(start, 3, seed=1, backend=backend))
    check_stream(ms, start, 3, DEFAULT_INTERVAL_MS)
    assert sum(m.produced for m in ms) > 0 and sum(m.consumed for m in ms) > 0
    for interval in (300_000, 3_600_000):
        check_stream(
            list(simulate(start, 2, backend=backend, interval_ms=interval)), start, 2, interval
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_integers_other_seed_other_integers(backend: str) -> None:
    start = local_midnight(2024, 5, 1)
    a = list(simulate(start, 2, seed=11, backend=backend))
    assert a == list(simulate(start, 2, seed=11, backend=backend))
    assert a != list(simulate(start, 2, seed=12, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interval_does_not_depend_on_where_the_run_starts(backend: str) -> None:
    start = local_midnight(2024, 12, 30)
    whole = list(simulate(start, 4, seed=2, backend=backend))
    later = start + DAY_MS + 37 * DEFAULT_INTERVAL_MS  # mid-day, and across the new year
    tail = list(simulate(later, 2, seed=2, backend=backend))
    assert tail == [m for m in whole if m.start >= later][: len(tail)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_production_at_night_and_none_without_panels(backend: str) -> None:
    start = local_midnight(2024, 6, 15)
    ms = list(simulate(start, 2, backend=backend))
    night = [m for m in ms if not 4 <= (m.start - start) % DAY_MS // HOUR_MS < 21]
    assert len(night) == 2 * 7 * 4 and all(m.produced == 0 for m in night)
    assert all(m.produced == 0 for m in simulate(start, 1, peak_w=0, backend=backend))


@needs_pvlib
def test_a_june_day_at_greensboro_with_4_kwp() -> None:
    # The ecosystem notes measured 16.45 kWh (2.86 kW peak) before system losses; PVWatts'
    # 14 % losses and the inverter bring this model to about 13.6 kWh.
    ms = list(simulate(local_midnight(2024, 6, 15), 1, peak_w=4000, backend="pvlib"))
    assert 10_000 <= sum(m.produced for m in ms) <= 25_000
    assert 1_500 <= 4 * max(m.produced for m in ms) <= 4000  # Wh per 15 min -> W
    noon = [m.produced for m in ms[44:56]]  # 11:00-14:00 local
    assert min(noon) > 0
    assert 2 * sum(m.produced for m in ms) == pytest.approx(
        sum(
            m.produced
            for m in simulate(local_midnight(2024, 6, 15), 1, peak_w=8000, backend="pvlib")
        ),
        rel=0.01,
    )


@needs_pvlib
def test_a_year_of_the_pvlib_backend(pvlib_year: list[Measurement]) -> None:
    check_stream(pvlib_year, YEAR_2025, 365, DEFAULT_INTERVAL_MS)
    assert sum(m.consumed for m in pvlib_year) == pytest.approx(3_500_000, rel=0.02)
    yield_wh = 4 * SITES["greensboro"].yield_kwh_per_kwp * 1000
    assert sum(m.produced for m in pvlib_year) == pytest.approx(yield_wh, rel=0.02)
    by_month = [0] * 12
    for m in pvlib_year:
        by_month[time.gmtime((m.start + 5 * HOUR_MS) // 1000).tm_mon - 1] += m.produced
    assert min(by_month[4:8]) > max(by_month[0], by_month[11])  # summer beats winter
    # A month is about its share of the year's consumption.
    june = [
        m for m in pvlib_year if local_midnight(2025, 6, 1) <= m.start < local_midnight(2025, 7, 1)
    ]
    assert sum(m.consumed for m in june) == pytest.approx(3_500_000 * 30 / 365, rel=0.15)


@needs_pvlib
def test_h0_profile_and_demandlib_leaves_the_warning_filters_alone() -> None:
    filters = list(warnings.filters)
    start = local_midnight(2024, 1, 1)
    ms = list(simulate(start, 366, seed=3, annual_kwh=2000, load_profile="h0", backend="pvlib"))
    assert warnings.filters == filters
    assert sum(m.consumed for m in ms) == pytest.approx(2_000_000, rel=0.02)
    h25 = list(simulate(start, 2, seed=3, annual_kwh=2000, backend="pvlib"))
    assert [m.consumed for m in ms[:192]] != [m.consumed for m in h25]


@needs_pvlib
def test_sites_match_the_weather_files_and_the_builtin_yields() -> None:
    from wattmesh.meters import simulated

    for name, site in SITES.items():
        meta = simulated._weather(name)["meta"]
        assert float(meta["latitude"]) == pytest.approx(site.latitude, abs=0.01)
        assert float(meta["longitude"]) == pytest.approx(site.longitude, abs=0.01)
        assert int(meta["TZ"]) == site.utc_offset_h
        assert round(simulated._pv_year(name, 2023).sum() / 1000) == site.yield_kwh_per_kwp


def test_a_year_of_the_builtin_backend(builtin_year: list[Measurement]) -> None:
    check_stream(builtin_year, YEAR_2025, 365, DEFAULT_INTERVAL_MS)
    assert sum(m.consumed for m in builtin_year) == pytest.approx(3_500_000, rel=0.03)
    yield_wh = 4 * SITES["greensboro"].yield_kwh_per_kwp * 1000
    assert sum(m.produced for m in builtin_year) == pytest.approx(yield_wh, rel=0.05)


def test_builtin_intervals_split_and_sum_the_quarter_hours_exactly() -> None:
    start = calendar.timegm((2024, 8, 1, 0, 0, 0)) * 1000  # local days straddle intervals
    quarters = list(simulate(start, 2, seed=4, site="sand-point", backend="builtin"))
    for interval in (60_000, 300_000, 1_800_000, 3 * HOUR_MS, DAY_MS):
        ms = list(
            simulate(start, 2, seed=4, site="sand-point", backend="builtin", interval_ms=interval)
        )
        assert sum(m.produced for m in ms) == sum(m.produced for m in quarters)
        assert sum(m.consumed for m in ms) == sum(m.consumed for m in quarters)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"days": -1}, "days"),
        ({"peak_w": 4.5}, "peak_w"),
        ({"annual_kwh": -3}, "annual_kwh"),
        ({"site": "berlin"}, "site: must be one of greensboro, miami, sand-point"),
        ({"load_profile": "g0"}, "load_profile"),
        ({"backend": "fast"}, "backend"),
        ({"interval_ms": 7 * 60_000}, "interval_ms"),
        ({"interval_ms": 0}, "interval_ms"),
        ({"start_ms": YEAR_2025 + 1}, "start_ms: must be a multiple"),
    ],
)
def test_bad_options_raise_before_the_first_measurement(options: dict, message: str) -> None:
    kwargs = {"start_ms": YEAR_2025, "days": 1, "backend": "builtin"} | options
    with pytest.raises(SimulationError, match=message):
        simulate(**kwargs)


def test_auto_is_pvlib_when_installed() -> None:
    assert resolve_backend("auto") == ("pvlib" if pvlib_available() else "builtin")
    assert resolve_backend("builtin") == "builtin"


WITHOUT_SIM = """
import sys
for name in ("pvlib", "pandas", "demandlib"):
    sys.modules[name] = None
from wattmesh.meters.simulated import SimulationError, pvlib_available, simulate
assert not pvlib_available()
ms = list(simulate(1735707600000, 1, backend="auto"))
assert len(ms) == 96 and sum(m.produced for m in ms) > 0, ms[:3]
try:
    simulate(1735707600000, 1, backend="pvlib")
except SimulationError as e:
    print(e)
else:
    raise SystemExit("no error")
"""

IMPORT_ONLY = """
import sys
import wattmesh.meters.simulated
print(sorted(n for n in ("pvlib", "pandas", "demandlib", "numpy", "wattmesh.agents")
             if n in sys.modules))
"""


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_the_sim_extra_auto_falls_back_and_pvlib_fails_clearly() -> None:
    assert run(WITHOUT_SIM) == (
        "pvlib is not installed; install the simulation extra: pip install 'wattmesh[sim]'"
    )


def test_importing_the_module_imports_no_simulation_library_and_no_agents() -> None:
    assert run(IMPORT_ONLY) == "[]"
