"""What the demo sets up: the households (storage, PV, bots, prices), who dials whom,
and free loopback ports (docs/node.md, "What it sets up")."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from wattmesh.exchange import clock
from wattmesh.exchange.node.config import (
    BotConfig,
    MeterConfig,
)
from wattmesh.exchange.units import MICRO, NANO
from wattmesh.meters.simulated import DEFAULT_SITE, SITES

__all__ = [
    "HouseholdSetup",
    "SUNNY_START_MS",
    "bootstrap_peers",
    "clock_text",
    "free_ports",
    "plan_households",
]


INTERVAL_MS = clock.DEFAULT_INTERVAL_MS  # 15-minute intervals
# 2026-06-21 15:00 UTC: 10:00 at the simulated meters' site (Greensboro, UTC-5, docs/
# meters-sim.md), a sunny June morning, so the PV households have energy to sell.
SUNNY_START_MS = int(datetime(2026, 6, 21, 15, 0, tzinfo=UTC).timestamp() * 1000)
SITE_OFFSET_MS = SITES[DEFAULT_SITE].utc_offset_h * 3_600_000  # the builtin meter's site
OPENING_MONEY = 50 * NANO  # 50.00 each: far more than two hours of bids and bills
FULL_MESH_MAX = 8  # up to this many nodes every node dials every other
MESH_DEGREE = 4  # above it, each node dials this many others (its ring neighbour included)
STOP_TIMEOUT_S = 20.0  # how long a node may take to exit after SIGTERM
STATUS = "status.json"  # the node's status file (exchange/node/household.py writes it)
STDERR = "node.stderr"  # the node's stderr: its log lines (as node.log) and any traceback
DEMO_CURRENCY = "€"  # the demo street's money, as its community file names it
BOT_LOG = "bot.log"  # the external bot's output (house-1 trades through `wattmesh bot`)
EXTERNAL_BOT = 0  # the household whose bot runs as its own process, over its node's API

# -- the households -----------------------------------------------------------------------


@dataclass(frozen=True)
class HouseholdSetup:
    """One demo household: its meter, storage, opening balances and bot."""

    name: str
    pv_peak_w: int  # 0: no PV
    annual_kwh: int
    meter_seed: int
    bmax: int  # Wh
    energy: int  # opening energy, Wh
    money: int  # opening money, nano
    bot: BotConfig

    @property
    def meter(self) -> MeterConfig:
        return MeterConfig(
            source="simulated",
            peak_w=self.pv_peak_w,
            annual_kwh=self.annual_kwh,
            seed=self.meter_seed,
            backend="builtin",
        )

    def describe(self) -> str:
        pv = f"PV {self.pv_peak_w / 1000:.1f} kWp" if self.pv_peak_w else "no PV     "
        b = self.bot
        return (
            f"{pv}  uses {self.annual_kwh:,} kWh/yr  storage {self.bmax / 1000:.1f} kWh, "
            f"opens with {self.energy / 1000:.1f}; bot buys below {b.lower_wh / 1000:.1f} kWh "
            f"at {b.buy_price / MICRO:.2f}, sells above {b.upper_wh / 1000:.1f} kWh at "
            f"{b.sell_price / MICRO:.2f}"
        )


def plan_households(n: int, seed: int = 0) -> list[HouseholdSetup]:
    """``n`` households, the same for the same seed. Even indexes (house-1, house-3, ...)
    have PV and open with storage 85% full, above their bot's upper threshold (60% of
    bmax), so they offer energy at once; the others have no PV and open with empty
    storage, below the lower threshold (30%), so they bid at once. Bid prices (0.15-0.20)
    are all above ask prices (0.10-0.14): the first auction with both sides trades."""
    rng = random.Random(f"wattmesh-demo:{seed}")
    out = []
    for i in range(n):
        pv = i % 2 == 0
        bmax = rng.randrange(6000, 10_001, 500)
        lower, upper = bmax * 30 // 100, bmax * 60 // 100
        energy = bmax * 85 // 100 if pv else 0
        out.append(
            HouseholdSetup(
                name=f"house-{i + 1}",
                pv_peak_w=rng.randrange(4000, 6001, 100) if pv else 0,
                annual_kwh=rng.randrange(3000, 4501, 100),
                meter_seed=seed * 1000 + i,
                bmax=bmax,
                energy=energy,
                money=OPENING_MONEY,
                bot=BotConfig(
                    enabled=True,
                    buy_price=rng.randrange(150_000, 200_001, 5_000),
                    sell_price=rng.randrange(100_000, 140_001, 5_000),
                    lower_wh=lower,
                    upper_wh=upper,
                ),
            )
        )
    return out


def bootstrap_peers(n: int, seed: int = 0) -> list[list[int]]:
    """Whom each node dials: every other node for ``n <= 8``; above that its ring
    neighbour and 3 others drawn with ``seed`` (the ring keeps the mesh connected)."""
    if n <= FULL_MESH_MAX:
        return [[j for j in range(n) if j != i] for i in range(n)]
    rng = random.Random(f"wattmesh-demo-mesh:{seed}")
    out = []
    for i in range(n):
        ring = (i + 1) % n
        others = [j for j in range(n) if j not in (i, ring)]
        out.append([ring, *sorted(rng.sample(others, MESH_DEGREE - 1))])
    return out


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def clock_text(ms: int) -> str:
    """An interval's community time as a person reads it (UTC, HH:MM)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")
