"""Deterministic order logs: the bundled sample day and big logs for benchmarks.

A neighbourhood of households trades fifteen-minute delivery intervals. Prosumers (a PV
system and a battery) offer their midday surplus and some of their stored energy in the
evening; consumers buy in the morning and evening peaks and a little during the day. The
log opens with one account line per household, then orders (ids computed from the body,
signed when ``sign``) and a few cancels, sorted by ``ts``. Every order names its delivery
interval and is placed before that interval's gate, so the log replays in both modes.

With ``meters`` (``--meters``) every household also has a meter: a ``meter`` line after
the account lines, and after each interval a signed reading of what its PV produced and
its home consumed over it (the same curves its orders follow), so that a replay with
``--ledger`` settles readings beside the trades (docs/analysis.md uses such a log).

Everything follows from ``seed``, Ed25519 keys included, so the same arguments always give
the same bytes::

    python -m wattmesh.exchange.replay.sample_log --households 24 --seed 1 --out sample_day.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from wattmesh.exchange.atomic_file import atomic_output
from wattmesh.exchange.units import NANO
from wattmesh.settlement.keys import Ed25519PrivateKey, peer_id_of
from wattmesh.settlement.records import Account, Cancel, Meter, Order, Reading

__all__ = [
    "DAY_START",
    "FEED_IN_PRICE",
    "INTERVAL_MS",
    "RETAIL_PRICE",
    "Household",
    "benchmark_log",
    "generate",
    "make_households",
    "write_log",
]

DAY_START = 1_718_928_000_000  # 2024-06-21 00:00 UTC: midsummer, a long PV day
INTERVAL_MS = 900_000
INTERVALS_PER_DAY = 96
RETAIL_PRICE = 300_000  # micro-currency per kWh: what the grid charges
FEED_IN_PRICE = 80_000  # what the grid pays for exports
MARKET = "energy"
PROSUMER_SHARE = 0.4
IOC_SHARE = 0.1
CANCEL_SHARE = 0.04


@dataclass(frozen=True, slots=True)
class Household:
    """One household of the generated neighbourhood (powers in W, energies in Wh)."""

    owner: str  # its libp2p peer id
    key: Ed25519PrivateKey
    prosumer: bool
    pv_peak: int
    base_load: int
    energy: int
    money: int
    bmax: int | None


def _key(seed: int, index: int) -> Ed25519PrivateKey:
    # The Ed25519 seed is a hash of the generator seed, so keys are as reproducible as the rest.
    material = hashlib.sha256(f"wattmesh sample household {seed} {index}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(material)


def _meter_key(seed: int, index: int) -> Ed25519PrivateKey:
    material = hashlib.sha256(f"wattmesh sample meter {seed} {index}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(material)


def make_households(count: int, seed: int, *, days: int = 1) -> list[Household]:
    """The neighbourhood: about 40% prosumers, the rest consumers.

    A replay has no meters, so nothing empties a consumer's battery or refills a
    prosumer's: in one day most consumers reach their Bmax. Logs of several days scale
    balances and caps by three times the days, so that trading goes on to the end (and a
    benchmark measures trading, not books full of orders their owners cannot execute).
    """
    scale = 1 if days == 1 else 3 * days
    rng = random.Random(f"households {seed}")
    homes = []
    for i in range(count):
        key = _key(seed, i)
        prosumer = rng.random() < PROSUMER_SHARE
        if prosumer:
            bmax = rng.randrange(10_000, 20_001, 500) * scale
            energy = int(bmax * rng.uniform(0.6, 0.9)) // 10 * 10
            money = rng.randrange(5, 21) * NANO * scale
            pv_peak = rng.randrange(3_000, 8_001, 250)
        else:
            bmax = None if rng.random() < 0.25 else rng.randrange(3_000, 8_001, 500) * scale
            energy = rng.randrange(0, 1_001, 50)
            money = rng.randrange(20, 61) * NANO * scale
            pv_peak = 0
        homes.append(
            Household(
                owner=peer_id_of(key),
                key=key,
                prosumer=prosumer,
                pv_peak=pv_peak,
                base_load=rng.randrange(150, 451, 10),
                energy=energy,
                money=money,
                bmax=bmax,
            )
        )
    return homes


def _pv(home: Household, hour: float) -> float:
    """PV output in W: a sine from sunrise at 05:00 to sunset at 21:00 UTC."""
    if not 5.0 < hour < 21.0:
        return 0.0
    return home.pv_peak * math.sin(math.pi * (hour - 5.0) / 16.0)


def _load(home: Household, hour: float) -> float:
    """Consumption in W: a base load with morning and evening peaks."""
    load = float(home.base_load)
    if 6.5 <= hour < 9.0:
        load += 900.0
    elif 17.0 <= hour < 22.0:
        load += 1_400.0
    elif 9.0 <= hour < 17.0:
        load += 250.0
    return load


def _day(
    homes: list[Household],
    rng: random.Random,
    day_start: int,
    sign: bool,
    meters: list[Ed25519PrivateKey] | None = None,
    day: int = 0,
) -> Iterator[dict[str, Any]]:
    """One day's orders and cancels (and with ``meters`` each interval's readings, placed
    at the interval's end), sorted by ts."""
    events: list[tuple[int, int, Order | Cancel | Reading]] = []
    for k in range(INTERVALS_PER_DAY):
        gate = day_start + k * INTERVAL_MS
        hour = (k + 0.5) / 4
        if meters is not None:  # no draw from rng: the orders stay those of the plain log
            for home, key in zip(homes, meters, strict=True):
                reading = Reading(peer_id_of(key), gate, gate + INTERVAL_MS,
                                  round(_pv(home, hour) / 4), round(_load(home, hour) / 4),
                                  day * INTERVALS_PER_DAY + k + 1)  # fmt: skip
                events.append((gate + INTERVAL_MS, len(events), reading.signed(key)))
        for home in homes:
            surplus = (_pv(home, hour) - _load(home, hour)) / 4  # Wh over the interval
            if home.prosumer and surplus > 50 and rng.random() < 0.85:
                side, qty = "ask", surplus * rng.uniform(0.6, 1.0)
                price = rng.randrange(FEED_IN_PRICE + 10_000, 240_001, 1_000)
            elif home.prosumer and hour >= 17 and rng.random() < 0.3:
                side, qty = "ask", rng.uniform(200, 600)  # from the battery, at peak prices
                price = rng.randrange(180_000, 280_001, 1_000)
            elif surplus < -50 and rng.random() < _bid_chance(hour):
                side, qty = "bid", -surplus * rng.uniform(0.5, 1.0)
                price = rng.randrange(140_000, RETAIL_PRICE - 9_999, 1_000)
            else:
                continue
            ts = gate - rng.randrange(1_000, INTERVAL_MS)
            tif = "ioc" if rng.random() < IOC_SHARE else "gtc"
            order = Order(
                MARKET, side, price, max(10, int(round(qty, -1))), home.owner, ts, gate, tif
            )
            if sign:
                order = order.signed(home.key)
            events.append((ts, len(events), order))
            if tif == "gtc" and rng.random() < CANCEL_SHARE and gate - ts > 2:
                cancel = Cancel(order.id, home.owner, rng.randrange(ts + 1, gate - 1))
                if sign:
                    cancel = cancel.signed(home.key)
                events.append((cancel.ts, len(events), cancel))
    events.sort(key=lambda e: e[:2])
    for _ts, _n, record in events:
        yield record.to_dict()


def _bid_chance(hour: float) -> float:
    if hour < 6.0:
        return 0.15
    if 6.5 <= hour < 9.0 or 17.0 <= hour < 22.0:
        return 0.6
    return 0.35


def generate(
    households: int = 24,
    seed: int = 1,
    *,
    days: int = 1,
    sign: bool = True,
    start: int = DAY_START,
    meters: bool = False,
) -> Iterator[dict[str, Any]]:
    """The log's events as dicts: account lines (and meter lines), then ``days`` days of
    orders and cancels (and readings)."""
    homes = make_households(households, seed, days=days)
    for home in homes:
        yield Account(home.owner, home.energy, home.money, home.bmax).to_dict()
    keys = [_meter_key(seed, i) for i in range(households)] if meters else None
    for home, key in zip(homes, keys or [], strict=False):
        yield Meter(peer_id_of(key), home.owner).to_dict()
    rng = random.Random(f"orders {seed}")
    for day in range(days):
        yield from _day(homes, rng, start + day * 86_400_000, sign, keys, day)


def write_log(
    out: str | os.PathLike[str] | IO[bytes],
    *,
    households: int = 24,
    seed: int = 1,
    days: int = 1,
    max_events: int | None = None,
    sign: bool = True,
    meters: bool = False,
) -> int:
    """Write a generated log as JSON Lines; returns the number of lines written.

    With ``max_events`` the log stops after that many lines (the rest of the day is cut).
    """
    if isinstance(out, (str, os.PathLike)):
        with atomic_output(out) as fp:  # whole or not at all
            return write_log(fp, households=households, seed=seed, days=days,
                             max_events=max_events, sign=sign, meters=meters)  # fmt: skip
    dumps = orjson.dumps
    buffer: list[bytes] = []
    written = 0
    for event in generate(households, seed, days=days, sign=sign, meters=meters):
        if max_events is not None and written >= max_events:
            break
        buffer.append(dumps(event))
        written += 1
        if len(buffer) >= 65_536:
            out.write(b"\n".join(buffer) + b"\n")
            buffer.clear()
    if buffer:
        out.write(b"\n".join(buffer) + b"\n")
    return written


def benchmark_log(
    out: str | os.PathLike[str] | IO[bytes],
    events: int = 1_000_000,
    *,
    households: int = 1_000,
    seed: int = 1,
    sign: bool = False,
) -> int:
    """A log of exactly ``events`` lines, unsigned by default, for benchmarks/.

    The days are ``ceil(events / (30 * households))`` (a day has about 45 lines per
    household, so they suffice); 1M events from 1000 households is the same log as
    ``python -m wattmesh.exchange.replay.sample_log --households 1000 --days 34 --events 1000000
    --no-sign``.
    """
    days = max(1, -(-events // (30 * households)))
    return write_log(out, households=households, seed=seed, days=days, max_events=events, sign=sign)


def main(argv: list[str] | None = None) -> int:
    """``python -m wattmesh.exchange.replay.sample_log``: write a generated log."""
    parser = argparse.ArgumentParser(
        prog="python -m wattmesh.exchange.replay.sample_log", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--households", type=int, default=24, help="default: 24")
    parser.add_argument("--seed", type=int, default=1, help="default: 1")
    parser.add_argument("--days", type=int, default=1, help="days of trading (default: 1)")
    parser.add_argument("--events", type=int, default=None, help="stop after this many lines")
    parser.add_argument("--no-sign", action="store_true", help="leave orders unsigned (faster)")
    parser.add_argument("--meters", action="store_true",
                        help="a meter per household, a signed reading per interval")  # fmt: skip
    parser.add_argument("--out", default="-", help="output file (default: stdout)")
    args = parser.parse_args(argv)
    if args.households < 1 or args.days < 1:
        parser.error("--households and --days must be at least 1")
    options = dict(
        households=args.households,
        seed=args.seed,
        days=args.days,
        max_events=args.events,
        sign=not args.no_sign,
        meters=args.meters,
    )
    if args.out == "-":
        write_log(sys.stdout.buffer, **options)
    else:
        write_log(args.out, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
