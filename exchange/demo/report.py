"""The demo's text: one line per settled interval, and the closing report as rich
tables (the market, each household's savings, the nodes)."""

from __future__ import annotations

from typing import Any

from wattmesh.exchange.demo.accounts import HouseholdAccount
from wattmesh.exchange.demo.plan import clock_text
from wattmesh.exchange.demo.run import DemoResult, IntervalReport
from wattmesh.exchange.units import NANO, money_text, price_text

__all__ = [
    "format_interval",
    "format_report",
]


# -- text ---------------------------------------------------------------------------------


def _kwh(wh: int) -> str:
    return f"{wh / 1000:,.2f}"


def _money(nano: int) -> str:
    return f"{nano / NANO:,.4f}"


def format_interval(iv: IntervalReport) -> str:
    """One progress line: community time, price per kWh, volume, trades, readings."""
    market = (
        f"price {price_text(iv.price)}/kWh  volume {iv.volume / 1000:6.3f} kWh  "
        f"{iv.trades} trade{'s' if iv.trades != 1 else ''}"
        if iv.trades
        else "no trades"
    )
    return f"  {clock_text(iv.interval)} UTC  {market:<44}  {iv.readings} readings"


_SUMMED = tuple(f for f in HouseholdAccount.__dataclass_fields__ if f not in ("owner", "bmax"))


def format_report(result: DemoResult) -> list[Any]:
    """The report as rich renderables: intervals, energy, money, nodes, the verdict."""
    from rich.table import Table

    accounts = result.accounts
    price = accounts.value_price if accounts is not None else 0
    total = HouseholdAccount("all")  # the households' sums
    out: list[Any] = []

    ivt = Table(title="Intervals", title_justify="left")
    for name in ("UTC", "price/kWh", "kWh", "trades", "readings", "digest", "agree"):
        ivt.add_column(name, justify="left" if name in ("digest", "UTC") else "right")
    for iv in result.intervals:
        digest = next((d for d in iv.digests.values() if d), None)
        agreeing = sum(1 for d in iv.digests.values() if d is not None and d == digest)
        ivt.add_row(
            clock_text(iv.interval), price_text(iv.price), _kwh(iv.volume), str(iv.trades),
            str(iv.readings), (digest or "-")[:12],
            f"{agreeing}/{len(iv.digests)}" if iv.agree else f"[red]{agreeing}/{len(iv.digests)}",
        )  # fmt: skip
    out.append(ivt)

    if accounts is not None:
        energy = Table(title="Energy per household (kWh)", title_justify="left")
        for name in ("", "PV kWp", "produced", "consumed", "bought", "sold", "imported",
                     "exported"):  # fmt: skip
            energy.add_column(name, justify="left" if not name else "right")
        unit = result.currency or "currency units"
        money = Table(title=f"Money per household ({unit})", title_justify="left")
        for name in ("", "market\ncost", "alone\ncost", "held\nkWh", "alone\nheld",
                     "held\nvalue", "savings"):  # fmt: skip
            money.add_column(name, justify="left" if not name else "right")
        for h in result.households:
            a = result.account(h.name)
            if a is None:
                continue
            pv = f"{h.pv_peak_w / 1000:.1f}" if h.pv_peak_w else "-"
            energy.add_row(
                h.name, pv, _kwh(a.produced), _kwh(a.consumed), _kwh(a.bought), _kwh(a.sold),
                _kwh(a.imported), _kwh(a.exported),
            )  # fmt: skip
            money.add_row(
                h.name, _money(a.cost), _money(a.alone_cost), _kwh(a.energy),
                _kwh(a.alone_energy), _money(a.held_value(price)), _money(a.savings(price)),
            )  # fmt: skip
            for f in _SUMMED:
                setattr(total, f, getattr(total, f) + getattr(a, f))
        energy.add_row(
            "all", "", _kwh(total.produced), _kwh(total.consumed), _kwh(total.bought),
            _kwh(total.sold), _kwh(total.imported), _kwh(total.exported), style="bold",
        )  # fmt: skip
        money.add_row(
            "all", _money(total.cost), _money(total.alone_cost), _kwh(total.energy),
            _kwh(total.alone_energy), _money(total.held_value(price)),
            _money(total.savings(price)), style="bold",
        )  # fmt: skip
        out += [
            energy,
            money,
            "\n".join(_in_words(h.name, a, price, result.currency) for h in result.households
                      if (a := result.account(h.name)) is not None),  # fmt: skip
            "alone: the household's grid-alone twin: the same readings and storage,"
            " no market\n"
            "cost: grid bill - feed-in credit + paid for trades - received + fees\n"
            "held value: the energy held at the end beyond the twin's, at the run's\n"
            f"  average trade price {price_text(price)}/kWh\n"
            "savings: alone cost - market cost + held value\n",
        ]

    nodes = Table(title="Nodes", title_justify="left")
    for name in ("", "pid", "exit", "peers", "agreements", "disputed", "refusals", "ledger"):
        nodes.add_column(name, justify="left" if name in ("", "refusals", "ledger") else "right")
    for r in result.nodes:
        refusals = ", ".join(f"{k} {v}" for k, v in sorted(r.refusals.items())) or "0"
        nodes.add_row(
            r.name, str(r.pid), "killed" if r.killed else str(r.exit_code), str(r.peers),
            str(r.agreements), str(len(r.disputed)), refusals,
            "verified" if r.verified else f"[red]{r.verify}",
        )  # fmt: skip
    out.append(nodes)

    n = len(result.nodes)
    verified = sum(1 for r in result.nodes if r.verified)
    agreeing = sum(1 for iv in result.intervals if iv.agree)
    stopped = sum(1 for r in result.nodes if r.exit_code == 0 and not r.killed)
    head = result.nodes[0].head[:24] if verified else "-"
    lines = [
        f"ledgers: {verified} of {n} verified (head {head}...)",
        f"digests: {agreeing} of {len(result.intervals)} intervals identical at all {n} nodes",
        f"nodes: {stopped} of {n} exited 0 on SIGTERM",
    ]
    if accounts is not None:
        trades = sum(s.trades for s in accounts.intervals.values())
        lines.append(
            f"traded: {accounts.volume / 1000:,.3f} kWh in {trades} trades at an average "
            f"{price_text(price)}/kWh"
        )
        lines.append(
            f"savings against the grid alone: {_money(total.savings(price))} for the community"
        )
    out.append("\n".join(lines))
    return out


def _in_words(name: str, a: HouseholdAccount, price: int, currency: str | None) -> str:
    """One household's market in a sentence, e.g. ``house-1 sold 5.40 kWh to neighbours
    for €0.86, bought 0.00 kWh from them for €0.00, and saved €0.06 against the grid
    alone.`` (money to the cent: a person's reading of the table above)."""

    def cents(nano: int) -> str:
        return money_text(nano, currency)

    saved = a.savings(price)
    verdict = (f"saved {cents(saved)} against the grid alone" if saved >= 0 else
               f"paid {cents(-saved)} more than with the grid alone")  # fmt: skip
    return (f"{name} sold {_kwh(a.sold)} kWh to neighbours for {cents(a.received)}, bought "
            f"{_kwh(a.bought)} kWh from them for {cents(a.paid)}, and {verdict}.")


# -- for analysis: one JSON object, or tables ---------------------------------------------


def demo_tables(result: DemoResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--out``'s tables (intervals.csv, households.csv, nodes.csv; units in the column
    names) and its summary.json, all integers (Wh, nano-currency, micro per kWh)."""
    intervals = (
        ["interval_start_ms", "price_micro_per_kwh", "volume_wh", "money_nano", "trades",
         "readings", "digest", "agree"],
        ([iv.interval, iv.price, iv.volume, iv.money, iv.trades, iv.readings, iv.digest,
          iv.agree] for iv in result.intervals),
    )  # fmt: skip
    accounts = result.accounts
    price = accounts.value_price if accounts is not None else 0
    rows = []
    for h in result.households:
        a = result.account(h.name)
        if a is None:
            continue
        rows.append([h.name, result.peer_ids[h.name], h.pv_peak_w, h.bmax, a.produced,
                     a.consumed, a.bought, a.sold, a.paid, a.received, a.imported, a.exported,
                     a.fees, a.energy, a.cost, a.alone_cost, a.held_value(price),
                     a.savings(price)])  # fmt: skip
    households = (
        ["name", "peer_id", "pv_peak_w", "bmax_wh", "produced_wh", "consumed_wh", "bought_wh",
         "sold_wh", "paid_nano", "received_nano", "imported_wh", "exported_wh", "fees_nano",
         "energy_wh", "cost_nano", "alone_cost_nano", "held_value_nano", "savings_nano"],
        rows,
    )  # fmt: skip
    nodes = (
        ["name", "exit_code", "killed", "verified", "head", "agreements", "disputed",
         "refusals", "peers"],
        ([r.name, r.exit_code, r.killed, r.verified, r.head, r.agreements, len(r.disputed),
          sum(r.refusals.values()), r.peers] for r in result.nodes),
    )  # fmt: skip
    summary = {
        "ok": result.ok, "problems": result.problems, "currency": result.currency,
        "intervals": len(result.intervals), "households": len(result.households),
        "value_price_micro_per_kwh": price,
        "traded_wh": accounts.volume if accounts is not None else 0,
        "wall_ms": round(result.wall_seconds * 1000),
    }  # fmt: skip
    tables = {"intervals.csv": intervals, "households.csv": households, "nodes.csv": nodes}
    return tables, summary


def demo_json(result: DemoResult) -> dict[str, Any]:
    """The whole result as one JSON-ready object: the summary and every table's rows."""
    tables, summary = demo_tables(result)
    out: dict[str, Any] = dict(summary)
    for name, (header, rows) in tables.items():
        out[name.removesuffix(".csv")] = [dict(zip(header, row, strict=True)) for row in rows]
    return out
