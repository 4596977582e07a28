"""Built-in daily production and consumption shapes with seeded noise.

Simple stand-ins until real profiles come with the meters: every value is an integer
number of Wh per 15-minute interval, made with integer arithmetic (the only float is the
one `random()` draws to pick a uniform integer), so a seed gives the same numbers on
every machine and Python version.

- Consumption follows a residential day (low at night, a morning bump, an evening peak),
  each household's day shifted by up to an hour either way, scaled by a household factor,
  a day factor and a per-interval factor.
- Production is a clear-sky parabola from 06:00 to 18:00, scaled by the household's panel
  factor, the day's weather (shared by the whole community: one sky) and a per-interval
  cloud factor.

Every factor has mean 1, so a household's expected monthly energy is the figure asked for
(a month is 30 days). The per-household random streams are seeded from the seed and the
household's index, so adding households does not change the others' profiles.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "CONSUMPTION_BY_HOUR",
    "DAYS_PER_MONTH",
    "INTERVALS_PER_DAY",
    "Profile",
    "consumption_shape",
    "household_days",
    "household_profile",
    "solar_shape",
    "weather",
]

INTERVALS_PER_DAY = 96
DAYS_PER_MONTH = 30

# Relative consumption in each hour of a residential day (00:00-01:00 first).
CONSUMPTION_BY_HOUR = (
    50, 40, 35, 35, 35, 45, 70, 90, 80, 65, 60, 65,
    70, 65, 60, 60, 70, 90, 120, 130, 120, 100, 80, 60,
)  # fmt: skip

# Noise ranges in permille; each uniform range is centred on 1000 (mean factor 1),
# except the weather, whose mean is divided out.
HOUSEHOLD_SCALE = (800, 1200)  # how much more or less than the average a household uses
DAY_SCALE = (850, 1150)  # busier and quieter days
INTERVAL_NOISE = (600, 1400)  # appliances switching on and off
# (1.2 * 1.15 * 1.4 < 2: no household uses more than twice its figure; community.py
# bounds grid bills by that.)
PANEL_SCALE = (800, 1200)  # panel size and orientation
CLOUD_NOISE = (800, 1200)  # passing clouds within a day
WEATHER = (300, 1000)  # clear-sky fraction of a day, shared by the community
MAX_SHIFT = 4  # quarter-hours: a household's day starts up to an hour earlier or later


@dataclass(frozen=True, slots=True)
class Profile:
    """One household's meter over a run: Wh produced and consumed in each interval."""

    produced: array
    consumed: array


def consumption_shape(shift: int = 0) -> tuple[int, ...]:
    """Relative consumption in each quarter-hour of a day, shifted by `shift` quarters.

    Linear interpolation of `CONSUMPTION_BY_HOUR` between hour starts; a positive shift
    makes the day later.
    """
    base = []
    for h in range(24):
        a, b = CONSUMPTION_BY_HOUR[h], CONSUMPTION_BY_HOUR[(h + 1) % 24]
        base.extend(a * (4 - k) + b * k for k in range(4))
    n = INTERVALS_PER_DAY
    return tuple(base[(q - shift) % n] for q in range(n))


def solar_shape() -> tuple[int, ...]:
    """Relative clear-sky production in each quarter-hour: a parabola over 06:00-18:00."""
    shape = []
    for q in range(INTERVALS_PER_DAY):
        x = 2 * q + 1 - INTERVALS_PER_DAY  # twice the distance from noon, in quarters
        shape.append(max(0, 48 * 48 - x * x) if 24 <= q < 72 else 0)
    return tuple(shape)


def weather(seed: int, days: int) -> tuple[int, ...]:
    """The community's clear-sky fraction of each day, in permille (uniform in `WEATHER`)."""
    rng = random.Random(f"wattmesh-weather:{seed}")
    return tuple(_uniform(rng, *WEATHER) for _ in range(days))


def _uniform(rng: random.Random, lo: int, hi: int) -> int:
    """A uniform integer in [lo, hi]. Drawn from `random()`, the one stream Python
    promises to keep the same across versions for a given seed; `int(x * n)` of a double
    is exact, so the result is the same on every machine."""
    return lo + int(rng.random() * (hi - lo + 1))


def _mean(bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    return (lo + hi) // 2  # exact: every range here has an even sum


def household_days(
    seed: int,
    index: int,
    consumption_kwh_month: int,
    production_kwh_month: int,
    sky: Sequence[int],
) -> Iterator[Profile]:
    """Household `index`'s meter under `seed`, one `Profile` of 96 intervals per day of
    `sky` (the community's `weather`). Made day by day, so a long run needs no more memory
    than a day. Monthly energies are expectations in kWh (0 for none)."""
    if consumption_kwh_month < 0 or production_kwh_month < 0:
        raise ValueError("monthly energies must be >= 0")
    rng = random.Random(f"wattmesh-household:{seed}:{index}")
    draw = rng.random
    unit = 1000  # permille
    shape = consumption_shape(_uniform(rng, -MAX_SHIFT, MAX_SHIFT))
    scale = _uniform(rng, *HOUSEHOLD_SCALE)
    panel = _uniform(rng, *PANEL_SCALE)
    sun = solar_shape()
    # Expected Wh in quarter q of an average day = monthly Wh * shape[q] / (30 * sum(shape)).
    use_den = DAYS_PER_MONTH * sum(shape) * unit * unit * unit
    use_lo, use_span = INTERVAL_NOISE[0], INTERVAL_NOISE[1] - INTERVAL_NOISE[0] + 1
    sun_den = DAYS_PER_MONTH * sum(sun) * _mean(WEATHER) * unit * unit
    sun_lo, sun_span = CLOUD_NOISE[0], CLOUD_NOISE[1] - CLOUD_NOISE[0] + 1
    dark = bytes(8 * INTERVALS_PER_DAY)
    for clear in sky:
        base = consumption_kwh_month * 1000 * scale * _uniform(rng, *DAY_SCALE)
        consumed = array(
            "q",
            (
                (base * w * (use_lo + int(draw() * use_span)) + use_den // 2) // use_den
                for w in shape
            ),
        )
        if production_kwh_month == 0:
            produced = array("q", dark)
        else:
            base = production_kwh_month * 1000 * panel * clear
            produced = array(
                "q",
                (
                    (base * w * (sun_lo + int(draw() * sun_span)) + sun_den // 2) // sun_den
                    if w
                    else 0
                    for w in sun
                ),
            )
        yield Profile(produced, consumed)


def household_profile(
    seed: int,
    index: int,
    days: int,
    consumption_kwh_month: int,
    production_kwh_month: int,
    sky: Sequence[int],
) -> Profile:
    """The whole profile of household `index` over the first `days` days of `sky`."""
    if days < 0:
        raise ValueError(f"days: must be >= 0, got {days}")
    if len(sky) < days:
        raise ValueError(f"sky: need {days} days of weather, got {len(sky)}")
    produced, consumed = array("q"), array("q")
    for day in household_days(seed, index, consumption_kwh_month, production_kwh_month, sky[:days]):
        produced.extend(day.produced)
        consumed.extend(day.consumed)
    return Profile(produced, consumed)
