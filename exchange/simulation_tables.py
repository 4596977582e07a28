"""What ``wattmesh simulate ... --out DIR`` writes: each simulation's per-period and
per-household (or per-trader) results as tables (CSV and/or Parquet by ``--format``,
exchange/tables.py) and ``summary.json`` (gode-sunder's names it: ``"simulation":
"gode-sunder"``; community's has its ``scenario``, as it always had).

- gode-sunder: ``periods`` (one row per seed and period: efficiency, alpha, dispersion,
  trades), ``trades`` (every trade of every session), ``schedule`` (each trader's unit
  values and costs: the demand and supply curves); prices are the experiment's currency
  units.
- community: ``intervals`` (one row per 15-minute interval) and ``households`` (one row
  per household, by name, with its cost against the grid alone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wattmesh.agents import gode_sunder as gs
from wattmesh.exchange.tables import DEFAULT_FORMAT, ColumnTable, write_table_set

__all__ = ["community_tables", "gode_sunder_tables", "write_simulation"]

SIMULATIONS = ("gode-sunder", "community")


def gode_sunder_tables(
    market: gs.Market, results: list[gs.SessionResult], summary: dict[str, Any]
) -> tuple[dict[str, ColumnTable], dict[str, Any]]:
    """The tables and the summary of a Gode-Sunder run (``summary``: the --json object)."""
    periods: list[tuple] = []
    trades: list[tuple] = []
    for session in results:
        for p in session.periods:
            periods.append((session.seed, p.period, p.shouts, len(p.trades), p.surplus,
                            p.efficiency, p.alpha, p.dispersion))  # fmt: skip
            trades.extend((session.seed, p.period, t.shout, t.buyer, t.seller, t.price, t.value,
                           t.cost) for t in p.trades)  # fmt: skip
    schedule = [("buyer", i, u, v) for i, units in enumerate(market.buyers)
                for u, v in enumerate(units)]  # fmt: skip
    schedule += [("seller", i, u, c) for i, units in enumerate(market.sellers)
                 for u, c in enumerate(units)]  # fmt: skip
    eq = market.equilibrium
    tables = {
        "periods": _table(("seed", "period", "shouts", "trades", "surplus", "efficiency_pct",
                           "alpha_pct", "dispersion"),
                          ("int", "int", "int", "int", "int", "float", "float", "float"),
                          periods),
        "trades": _table(("seed", "period", "shout", "buyer", "seller", "price", "value",
                          "cost"), ("int",) * 8, trades),
        "schedule": _table(("role", "trader", "unit", "value"), ("str", "int", "int", "int"),
                           schedule),
    }  # fmt: skip
    rest = {
        "simulation": "gode-sunder",
        **summary,
        "periods": len(results[0].periods) if results else 0,
        "equilibrium": {
            "price": eq.price,
            "price_low": eq.price_low,
            "price_high": eq.price_high,
            "quantity": eq.quantity,
            "surplus": eq.surplus,
        },  # fmt: skip
        "price_min": market.price_min,
        "price_max": market.price_max,
    }
    return tables, rest


# Report keys whose unit the name does not say yet.
_UNITS = {"price": "price_micro_per_kwh", "buy_price": "buy_price_micro_per_kwh",
          "sell_price": "sell_price_micro_per_kwh", "start_ms": "interval_start_ms"}  # fmt: skip


def community_tables(report: dict[str, Any]) -> tuple[dict[str, ColumnTable], dict[str, Any]]:
    """The tables from a community run's --json report: one row per interval, one per
    household; the rest (scenario, totals, orders) as the summary."""
    columns = report["intervals"]
    names = list(columns)
    intervals = ColumnTable(
        tuple(_UNITS.get(n, n) for n in names),
        tuple("time" if n == "start_ms" else "int" for n in names),
        tuple(columns[n] for n in names),
    )
    people = report["households"]
    keys = list(people[0]) if people else []
    households = ColumnTable(
        tuple(_UNITS.get(k, k) for k in keys),
        tuple("str" if k in ("name", "kind") else "int" for k in keys),
        tuple(tuple(h[k] for h in people) for k in keys),
    )
    rest = {k: v for k, v in report.items() if k not in ("intervals", "households")}
    return {"intervals": intervals, "households": households}, rest


def write_simulation(
    folder: str | os.PathLike[str],
    tables: dict[str, ColumnTable],
    summary: dict[str, Any],
    fmt: str = DEFAULT_FORMAT,
) -> list[Path]:
    """Write the tables (by ``fmt``) and summary.json to ``folder``, together and whole."""
    return write_table_set(folder, tables, summary, fmt)


def _table(names: tuple[str, ...], kinds: tuple[str, ...], rows: list[tuple]) -> ColumnTable:
    columns = tuple(zip(*rows, strict=True)) if rows else tuple(() for _ in names)
    return ColumnTable(names, kinds, columns)
