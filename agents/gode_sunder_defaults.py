"""The default size of a Gode and Sunder session: periods, shouts per period and seeds.

Their one home, re-exported by ``wattmesh.agents.gode_sunder``. A module of its own so
that ``wattmesh simulate gode-sunder``'s option defaults do not load the simulation (its
traders, the engine, the markets' data) for every ``wattmesh`` command.
"""

from __future__ import annotations

PERIODS = 6
SHOUTS = 2000
SEEDS = 20
