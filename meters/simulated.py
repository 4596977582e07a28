"""A simulated meter for one household: PV production and consumption per interval.

    for m in simulate(start_ms, days=7, seed=1, peak_w=4000, annual_kwh=3500):
        ...  # Measurement(start, end, produced, consumed), integer ms and Wh

Two backends make the same kind of stream (docs/meters-sim.md has the model):

- ``"pvlib"`` (the ``sim`` extra: pvlib, pandas, demandlib): production from one of the
  measured typical-year weather files pvlib ships (:data:`SITES`) through a PVWatts model,
  consumption from demandlib's BDEW household profile (H25 or H0), and seeded noise.
- ``"builtin"`` (nothing extra): the built-in shapes of :mod:`wattmesh.meters.profiles`,
  scaled to the same peak power and annual consumption.

Times are UTC ms; a household's day is its site's local standard time (no daylight saving
time, as in the weather files). Every interval's values depend only on the options, the
seed and the interval, so a later start gives the same values for the intervals in common.
pvlib, pandas and demandlib are imported only when the pvlib backend runs.
"""

from __future__ import annotations

import calendar
import functools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wattmesh.settlement.errors import WattmeshError

from . import profiles
from .measurement import DEFAULT_INTERVAL_MS, Measurement

__all__ = [
    "BACKENDS",
    "DEFAULT_SITE",
    "LOAD_PROFILES",
    "SIM_EXTRA_HINT",
    "SITES",
    "SimulationError",
    "Site",
    "pvlib_available",
    "resolve_backend",
    "simulate",
]

BACKENDS = ("auto", "pvlib", "builtin")
LOAD_PROFILES = ("h25", "h0")
SIM_EXTRA_HINT = "install the simulation extra: pip install 'wattmesh[sim]'"

DAY_MS = 86_400_000
QUARTER_MS = 900_000  # the grid both backends compute on; intervals are built from it
QUARTERS_PER_DAY = DAY_MS // QUARTER_MS
_EPOCH = datetime(1970, 1, 1)
_CHUNK_DAYS = 31  # intervals are computed a month at a time, so a long run starts at once

# The PV model of the pvlib backend (docs/meters-sim.md, "Production").
TILT_DEG = 30  # fixed tilt, facing the equator
ALBEDO = 0.2
GAMMA_PDC = -0.004  # power temperature coefficient, 1/°C
DC_AC_RATIO = 1.2  # PVWatts' default: the inverter's AC rating is peak / 1.2
ETA_INV_NOM = 0.96
TEMPERATURE_MODEL = "close_mount_glass_glass"  # SAPM cell temperature: roof mount

# Per-interval noise of the pvlib backend, in permille, each range centred on 1000.
PRODUCTION_NOISE = (900, 1100)  # variability within an hour that hourly weather smooths out
CONSUMPTION_NOISE = profiles.INTERVAL_NOISE  # appliances switching on and off


class SimulationError(WattmeshError, ValueError):
    """Options a simulated meter cannot run with, or a backend that is not installed."""


@dataclass(frozen=True, slots=True)
class Site:
    """A typical-year weather file shipped in ``pvlib/data``.

    ``yield_kwh_per_kwp`` is the pvlib backend's annual AC energy per kWp there (the
    default orientation, 2023); the builtin backend scales its production by it.
    """

    name: str
    file: str
    station: str
    kind: str
    latitude: float
    longitude: float
    utc_offset_h: int
    yield_kwh_per_kwp: int


SITES = MappingProxyType(
    {
        s.name: s
        for s in (
            Site("greensboro", "723170TYA.CSV", "Greensboro, NC", "TMY3", 36.1, -79.95, -5, 1294),
            Site("miami", "12839.tm2", "Miami, FL", "TMY2", 25.8, -80.267, -5, 1364),
            Site("sand-point", "703165TY.csv", "Sand Point, AK", "TMY3", 55.317, -160.517, -9, 799),
        )
    }
)
"""The weather files pvlib ships, by the name the ``site`` option takes."""

DEFAULT_SITE = "greensboro"


def pvlib_available() -> bool:
    """Whether the pvlib backend can run: pvlib, pandas and demandlib import."""
    return _missing_sim_module() is None


def resolve_backend(backend: str) -> str:
    """``"pvlib"`` or ``"builtin"``: the backend that ``backend`` (one of :data:`BACKENDS`)
    runs. Raises :class:`SimulationError` for ``"pvlib"`` when the sim extra is missing."""
    if backend not in BACKENDS:
        raise SimulationError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "builtin":
        return "builtin"
    missing = _missing_sim_module()
    if missing is None:
        return "pvlib"
    if backend == "auto":
        return "builtin"
    raise SimulationError(f"{missing} is not installed; {SIM_EXTRA_HINT}")


def simulate(
    start_ms: int,
    days: int,
    *,
    seed: int = 0,
    peak_w: int = 4000,
    annual_kwh: int = 3500,
    site: str = DEFAULT_SITE,
    load_profile: str = "h25",
    backend: str = "auto",
    interval_ms: int = DEFAULT_INTERVAL_MS,
) -> Iterator[Measurement]:
    """One household's meter over ``[start_ms, start_ms + days)``, one measurement per
    interval, in time order.

    ``peak_w`` is the PV array's peak power (W, 0 for none), ``annual_kwh`` the expected
    consumption over a year, ``site`` a key of :data:`SITES`, ``load_profile`` ``"h25"`` or
    ``"h0"`` (pvlib backend), ``backend`` one of :data:`BACKENDS`. ``interval_ms`` must
    divide a day and be a multiple or a divisor of 15 minutes; ``start_ms`` must be a
    multiple of it. Options are checked here, before the first measurement: bad ones raise
    :class:`SimulationError`, as does ``backend="pvlib"`` without the sim extra.
    """
    _check(start_ms, days, seed, peak_w, annual_kwh, site, load_profile, interval_ms)
    chosen = resolve_backend(backend)
    end_ms = start_ms + days * DAY_MS
    where = SITES[site]
    if chosen == "pvlib":
        return _pvlib_measurements(
            start_ms, end_ms, interval_ms, seed, where, peak_w, annual_kwh, load_profile
        )
    return _builtin_measurements(start_ms, end_ms, interval_ms, seed, where, peak_w, annual_kwh)


def _check(
    start_ms: int,
    days: int,
    seed: int,
    peak_w: int,
    annual_kwh: int,
    site: str,
    load_profile: str,
    interval_ms: int,
) -> None:
    ints = {
        "start_ms": start_ms,
        "days": days,
        "seed": seed,
        "peak_w": peak_w,
        "annual_kwh": annual_kwh,
        "interval_ms": interval_ms,
    }
    for name, value in ints.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise SimulationError(f"{name}: must be an integer, got {value!r}")
    for name in ("start_ms", "days", "peak_w", "annual_kwh"):
        if ints[name] < 0:
            raise SimulationError(f"{name}: must be >= 0, got {ints[name]}")
    if site not in SITES:
        raise SimulationError(f"site: must be one of {', '.join(SITES)}, got {site!r}")
    if load_profile not in LOAD_PROFILES:
        raise SimulationError(
            f"load_profile: must be one of {', '.join(LOAD_PROFILES)}, got {load_profile!r}"
        )
    if (
        interval_ms <= 0
        or DAY_MS % interval_ms
        or (interval_ms % QUARTER_MS and QUARTER_MS % interval_ms)
    ):
        raise SimulationError(
            "interval_ms: must divide a day and be a multiple or a divisor of 15 minutes "
            f"(900000 ms), got {interval_ms}"
        )
    if start_ms % interval_ms:
        raise SimulationError(
            f"start_ms: must be a multiple of interval_ms ({interval_ms}), got {start_ms}"
        )


def _missing_sim_module() -> str | None:
    """The first module of the sim extra that does not import, or None."""
    for name in ("pvlib", "pandas", "demandlib"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


# --- shared: the quarter-hour grid in local standard time --------------------------------


def _chunks(start_ms: int, end_ms: int) -> Iterator[tuple[int, int]]:
    step = _CHUNK_DAYS * DAY_MS
    for c0 in range(start_ms, end_ms, step):
        yield c0, min(c0 + step, end_ms)


def _year_first_quarter(year: int) -> int:
    """The local quarter index (quarters since 1970-01-01 00:00 local) of Jan 1 00:00."""
    return calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000 // QUARTER_MS


def _quarters_of_years(g0: int, g1: int, year_values: Callable[[int], Sequence[Any]]) -> list:
    """The slices of ``year_values(year)`` (one value per local quarter of that year) that
    cover local quarters ``[g0, g1)``, in order."""
    parts = []
    g = g0
    year = (_EPOCH + timedelta(milliseconds=g0 * QUARTER_MS)).year
    while g < g1:
        first, nxt = _year_first_quarter(year), _year_first_quarter(year + 1)
        stop = min(g1, nxt)
        parts.append(year_values(year)[g - first : stop - first])
        g, year = stop, year + 1
    return parts


# --- the pvlib backend -------------------------------------------------------------------


def _pvlib_measurements(
    start_ms: int,
    end_ms: int,
    interval_ms: int,
    seed: int,
    site: Site,
    peak_w: int,
    annual_kwh: int,
    load_profile: str,
) -> Iterator[Measurement]:
    import numpy as np

    offset_ms = site.utc_offset_h * 3_600_000
    noise = _Noise(seed, interval_ms)
    pv = functools.partial(_pv_year, site.name)
    load = functools.partial(_load_year, load_profile)
    for c0, c1 in _chunks(start_ms, end_ms):
        g0, g1 = (c0 + offset_ms) // QUARTER_MS, -(-(c1 + offset_ms) // QUARTER_MS)
        pv_q = np.concatenate(_quarters_of_years(g0, g1, pv)) * (peak_w / 1000)
        load_q = np.concatenate(_quarters_of_years(g0, g1, load)) * (annual_kwh * 1000)
        first = (c0 + offset_ms) // QUARTER_MS * QUARTER_MS - offset_ms
        produced = _per_interval(np, pv_q, c0 - first, c1 - c0, interval_ms)
        consumed = _per_interval(np, load_q, c0 - first, c1 - c0, interval_ms)
        for a, p, c in zip(range(c0, c1, interval_ms), produced, consumed, strict=True):
            fp, fc = noise.factors(a)
            yield Measurement(a, a + interval_ms, (p * fp + 500) // 1000, (c * fc + 500) // 1000)


def _per_interval(np: Any, quarters: Any, skip_ms: int, span_ms: int, interval_ms: int) -> list:
    """Wh per interval (rounded ints) from Wh per quarter starting ``skip_ms`` before the
    first interval: sums of whole quarters, or an equal share of one."""
    if interval_ms >= QUARTER_MS:
        k = interval_ms // QUARTER_MS
        q = quarters[skip_ms // QUARTER_MS :][: span_ms // QUARTER_MS]
        values = q.reshape(-1, k).sum(axis=1)
    else:
        n = QUARTER_MS // interval_ms
        offsets = (skip_ms + np.arange(span_ms // interval_ms) * interval_ms) // QUARTER_MS
        values = quarters[offsets] / n
    return np.rint(values).astype(np.int64).tolist()


class _Noise:
    """Seeded permille factors (production, consumption) per interval: one random stream per
    UTC day, two draws per interval, so an interval's factors depend only on the seed, the
    interval length and its start."""

    def __init__(self, seed: int, interval_ms: int) -> None:
        self.seed = seed
        self.interval_ms = interval_ms
        self.day = -1
        self.next_start = -1
        self.rng = random.Random()

    def factors(self, start_ms: int) -> tuple[int, int]:
        if start_ms != self.next_start or start_ms // DAY_MS != self.day:
            self.day = start_ms // DAY_MS
            self.rng = random.Random(f"wattmesh-sim:{self.seed}:{self.day}")
            for _ in range(2 * (start_ms - self.day * DAY_MS) // self.interval_ms):
                self.rng.random()
        self.next_start = start_ms + self.interval_ms
        return _permille(self.rng, *PRODUCTION_NOISE), _permille(self.rng, *CONSUMPTION_NOISE)


def _permille(rng: random.Random, lo: int, hi: int) -> int:
    """A uniform integer in [lo, hi] from one `random()` draw (exact on every machine)."""
    return lo + int(rng.random() * (hi - lo + 1))


def _calendar_days(year: int) -> list[int]:
    """For each day of ``year``, the day (0-364) of a typical year with the same month and
    day; February 29 takes February 28."""
    days = []
    for month in range(1, 13):
        first = sum(calendar.monthrange(2023, m)[1] for m in range(1, month))
        length = calendar.monthrange(year, month)[1]
        days.extend(first + min(d, calendar.monthrange(2023, month)[1] - 1) for d in range(length))
    return days


@functools.cache
def _weather(site_name: str) -> dict[str, Any]:
    """The site's typical year: hourly arrays in file order (row ``i`` is the hour that ends
    at ``(i % 24) + 1`` o'clock local standard time of day ``i // 24``) and its position."""
    import pvlib

    site = SITES[site_name]
    path = Path(pvlib.__file__).parent / "data" / site.file
    if site.kind == "TMY3":
        data, meta = pvlib.iotools.read_tmy3(path, map_variables=True)
        temp_air, wind = data["temp_air"], data["wind_speed"]
    else:
        data, meta = pvlib.iotools.read_tmy2(path)
        data = data.rename(columns={"GHI": "ghi", "DNI": "dni", "DHI": "dhi"})
        temp_air, wind = data["DryBulb"] / 10, data["Wspd"] / 10  # tenths in TMY2
    if len(data) != 8760:
        raise SimulationError(f"{site.file}: expected 8760 hourly rows, got {len(data)}")
    columns = {k: data[k].to_numpy(dtype=float) for k in ("ghi", "dni", "dhi")}
    columns["temp_air"] = temp_air.to_numpy(dtype=float)
    columns["wind_speed"] = wind.to_numpy(dtype=float)
    columns["meta"] = meta
    return columns


@functools.lru_cache(maxsize=16)
def _pv_year(site_name: str, year: int) -> Any:
    """AC Wh per kWp in each local quarter-hour of ``year`` at the site (numpy array)."""
    import warnings

    with warnings.catch_warnings():
        # pvlib's own pandas deprecation warnings are not the user's to act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pvlib")
        return _pv_quarters(site_name, year)


def _pv_quarters(site_name: str, year: int) -> Any:
    import numpy as np
    import pandas as pd
    import pvlib

    site = SITES[site_name]
    w = _weather(site_name)
    meta = w["meta"]
    lat, lon, alt = float(meta["latitude"]), float(meta["longitude"]), float(meta["altitude"])
    days = 366 if calendar.isleap(year) else 365
    rows = np.repeat(np.array(_calendar_days(year)) * 24, 24) + np.tile(np.arange(24), days)
    local_midnight_utc = pd.Timestamp(year, 1, 1, tz="UTC") - pd.Timedelta(hours=site.utc_offset_h)
    # Hourly values are averages over the hour ending at the stamp: the sun at mid-hour.
    hours = pd.date_range(
        local_midnight_utc + pd.Timedelta(minutes=30), periods=days * 24, freq="h"
    )
    sun = pvlib.solarposition.get_solarposition(hours, lat, lon, altitude=alt)
    azimuth = 180 if lat >= 0 else 0
    zenith, sun_azimuth = sun["apparent_zenith"], sun["azimuth"]
    ghi, dni, dhi = (pd.Series(w[k][rows], index=hours) for k in ("ghi", "dni", "dhi"))
    poa = pvlib.irradiance.get_total_irradiance(
        TILT_DEG,
        azimuth,
        zenith,
        sun_azimuth,
        dni,
        ghi,
        dhi,
        dni_extra=pvlib.irradiance.get_extra_radiation(hours),
        albedo=ALBEDO,
        model="haydavies",
    )
    iam = pvlib.iam.physical(pvlib.irradiance.aoi(TILT_DEG, azimuth, zenith, sun_azimuth))
    effective = poa["poa_direct"].fillna(0) * iam + poa["poa_diffuse"].fillna(0)
    temp_cell = pvlib.temperature.sapm_cell(
        poa["poa_global"].fillna(0),
        pd.Series(w["temp_air"][rows], index=hours),
        pd.Series(w["wind_speed"][rows], index=hours),
        **pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][TEMPERATURE_MODEL],
    )
    pdc = pvlib.pvsystem.pvwatts_dc(effective, temp_cell, pdc0=1000.0, gamma_pdc=GAMMA_PDC)
    pdc = pdc * (1 - pvlib.pvsystem.pvwatts_losses() / 100)
    pac = pvlib.inverter.pvwatts(
        pdc.to_numpy(), pdc0=1000.0 / DC_AC_RATIO / ETA_INV_NOM, eta_inv_nom=ETA_INV_NOM
    )
    hourly_wh = np.clip(np.nan_to_num(pac), 0, None)
    # Each hour's energy spread over its quarters as the sun's height at their midpoints.
    quarters = pd.date_range(
        local_midnight_utc + pd.Timedelta(seconds=450), periods=days * 96, freq="15min"
    )
    zen_q = pvlib.solarposition.get_solarposition(quarters, lat, lon, altitude=alt)
    height = np.clip(np.cos(np.radians(zen_q["apparent_zenith"].to_numpy())), 0, None)
    height = height.reshape(-1, 4)
    total = height.sum(axis=1, keepdims=True)
    share = np.divide(height, total, out=np.full_like(height, 0.25), where=total > 0)
    return (hourly_wh[:, None] * share).ravel()


@functools.lru_cache(maxsize=8)
def _load_year(load_profile: str, year: int) -> Any:
    """The BDEW profile's share of the year's energy in each quarter-hour of ``year``
    (numpy array summing to 1), in the profile's own local time."""
    import unittest.mock
    import warnings

    import numpy as np
    import pandas as pd
    from demandlib import bdew

    # demandlib turns every warning into an error while it builds profiles; keep its
    # simplefilter call from reaching the process (docs/meters-sim.md).
    with warnings.catch_warnings(), unittest.mock.patch("warnings.simplefilter"):
        # Its pandas deprecation warnings are not the user's to act on.
        warnings.filterwarnings("ignore", module="demandlib")
        if load_profile == "h25":
            days = 366 if calendar.isleap(year) else 365
            index = pd.date_range(pd.Timestamp(year, 1, 1), periods=days * 96, freq="15min")
            values = bdew.H25(index).to_numpy(dtype=float)
        else:
            values = bdew.ElecSlp(year).get_profiles("h0_dyn")["h0_dyn"].to_numpy(dtype=float)
    values = np.clip(np.nan_to_num(values), 0, None)
    return values / values.sum()


# --- the builtin backend -----------------------------------------------------------------


def _builtin_measurements(
    start_ms: int,
    end_ms: int,
    interval_ms: int,
    seed: int,
    site: Site,
    peak_w: int,
    annual_kwh: int,
) -> Iterator[Measurement]:
    # profiles works in kWh per 30-day month; a year is 365 days.
    consumption_month = (annual_kwh * 30 + 182) // 365
    production_month = (peak_w * site.yield_kwh_per_kwp * 30 + 182_500) // 365_000
    offset_ms = site.utc_offset_h * 3_600_000
    last_day = (end_ms + offset_ms) // DAY_MS
    # The community's sky for this seed, day 0 being 1969-12-31 local (so every day of a
    # run from 1970 on has an index); each local day is one profiles household-day.
    sky = profiles.weather(seed, last_day + 2)

    def day_quarters(day: int) -> tuple[Sequence[int], Sequence[int]]:
        (p,) = profiles.household_days(
            seed, day, consumption_month, production_month, sky[day + 1 : day + 2]
        )
        return p.produced, p.consumed

    for c0, c1 in _chunks(start_ms, end_ms):
        g0, g1 = (c0 + offset_ms) // QUARTER_MS, -(-(c1 + offset_ms) // QUARTER_MS)
        produced: list[int] = []
        consumed: list[int] = []
        for day in range(g0 // QUARTERS_PER_DAY, -(-g1 // QUARTERS_PER_DAY)):
            p, c = day_quarters(day)
            produced.extend(p)
            consumed.extend(c)
        skip = g0 - g0 // QUARTERS_PER_DAY * QUARTERS_PER_DAY
        first = g0 * QUARTER_MS - offset_ms
        q_p = produced[skip : skip + g1 - g0]
        q_c = consumed[skip : skip + g1 - g0]
        for a in range(c0, c1, interval_ms):
            yield Measurement(
                a,
                a + interval_ms,
                _integer_share(q_p, a - first, interval_ms),
                _integer_share(q_c, a - first, interval_ms),
            )


def _integer_share(quarters: Sequence[int], at_ms: int, interval_ms: int) -> int:
    """Wh over ``[at_ms, at_ms + interval_ms)`` of integer Wh per quarter (from time 0):
    whole quarters summed, or a part of one such that its parts add up to it exactly."""
    q, rem = divmod(at_ms, QUARTER_MS)
    if interval_ms >= QUARTER_MS:
        return sum(quarters[q : q + interval_ms // QUARTER_MS])
    e = quarters[q]
    return e * (rem + interval_ms) // QUARTER_MS - e * rem // QUARTER_MS
