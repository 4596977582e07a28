"""``wattmesh report DIR``: an output folder as one self-contained HTML page of plots.

The folder is a replay's (``replay --out``), a simulation's (``simulate gode-sunder`` or
``simulate community --out``) or a sweep's (``sweep.parquet``); which, is read from its
``summary.json`` and the files present (:func:`detect`). Each plot is drawn with
matplotlib (Agg) as inline SVG, text kept as text, so the page needs nothing from outside
(no script, no font, no URL). A plot the folder's data cannot support is left out with a
one-line note saying why. docs/analysis.md, "Reports", lists the plots per kind.
"""

from __future__ import annotations

import csv
import html
import io
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from wattmesh.exchange.tables import INSTALL_ANALYSIS
from wattmesh.settlement.errors import WattmeshError

__all__ = ["KINDS", "PLOTS", "Report", "ReportError", "build_report", "detect", "write_report"]

KINDS = ("replay", "gode-sunder", "community", "sweep")
# Every plot a report may hold, by id, in page order; each is drawn or noted.
PLOTS = {
    "price-volume": "Price and volume per interval",
    "supply-demand": "Supply and demand with the clearing point",
    "depth": "Book depth, plain and executable (the Energo overlap)",
    "efficiency": "Allocative efficiency per period",
    "savings": "Savings per household against the grid",
    "bmax": "How often Bmax bound",
}
MICRO = 1_000_000  # micro-currency per currency unit
NANO = 1_000_000_000
BID_COLOUR, ASK_COLOUR, LINE_COLOUR = "#2a9d4b", "#e07b24", "#3465a4"


class ReportError(WattmeshError):
    """The folder is not an output folder, or an option does not fit it."""


@dataclass(frozen=True, slots=True)
class Plot:
    """One plot of the page: its SVG and caption, or the note saying why it is left out."""

    id: str
    title: str
    svg: str | None
    text: str  # the caption, or the reason it was left out


@dataclass(frozen=True, slots=True)
class Report:
    kind: str
    folder: Path
    facts: list[tuple[str, str]]
    plots: list[Plot]


class _Unsupported(WattmeshError):
    """The data cannot support a plot: the message says why (one line on the page; caught
    where the plot is drawn, never shown as an error)."""


# -- reading a folder ---------------------------------------------------------------------


def detect(folder: Path) -> str:
    """Which output a folder holds: replay, gode-sunder, community or sweep."""
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder")
    if (folder / "sweep.parquet").is_file():
        return "sweep"
    summary = _summary(folder)
    if summary is None:
        raise ReportError(
            f"{folder} is not an output folder of wattmesh replay, simulate or "
            "sweep: it has no summary.json (or sweep.parquet)"
        )
    if summary.get("simulation") == "gode-sunder" and _has(folder, "periods"):
        return "gode-sunder"
    if "scenario" in summary and _has(folder, "intervals") and _has(folder, "households"):
        return "community"
    if "mode" in summary and "fills" in summary and _has(folder, "intervals"):
        return "replay"
    raise ReportError(
        f"{folder}/summary.json is not that of a replay or a simulation "
        "(or the folder lacks its tables)"
    )


def _summary(folder: Path) -> dict[str, Any] | None:
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} is not a JSON object")
    return data


def _has(folder: Path, stem: str) -> bool:
    return (folder / f"{stem}.parquet").is_file() or (folder / f"{stem}.csv").is_file()


def read_table(folder: Path, stem: str) -> dict[str, list[Any]] | None:
    """A table of the folder as columns (Parquet if there and pyarrow is installed, else
    CSV); instants as epoch ms; None when the folder has neither file."""
    pq_path, csv_path = folder / f"{stem}.parquet", folder / f"{stem}.csv"
    if pq_path.is_file():
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            pq = None
        if pq is not None:
            table = pq.read_table(pq_path)
            columns = {}
            for name in table.column_names:
                col = table.column(name)
                if pa.types.is_timestamp(col.type):
                    col = col.cast(pa.int64())
                columns[name] = col.to_pylist()
            return columns
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fp:
            reader = csv.reader(fp)
            header = next(reader, [])
            rows = list(reader)
        return {name: [_cell(r[i]) for r in rows] for i, name in enumerate(header)}
    if pq_path.is_file():
        raise ReportError(f"{pq_path} needs pyarrow to read: {INSTALL_ANALYSIS}")
    return None


def _cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


# -- the plots ----------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 3.6) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "wattmesh", "font.size": 9})
    return plt.subplots(figsize=(width, height))


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(
        buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
    )
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML


def _times(ms: list[int]) -> list[Any]:
    import datetime as dt

    return [dt.datetime.fromtimestamp(t / 1000, dt.UTC) for t in ms]


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=mdates.UTC))
    ax.set_xlabel("interval start (UTC)")
    for label in ax.get_xticklabels():
        label.set_rotation(20)


def _price_volume(
    starts: list[int], prices: list[int | None], volumes: list[int], what: str
) -> str:
    fig, ax = _figure()
    when = _times(starts)
    ax.bar(
        when,
        [v / 1000 for v in volumes],
        width=(when[1] - when[0]) * 0.9 if len(when) > 1 else 0.01,
        color="#b8c7dc",
        label="volume",
    )
    ax.set_ylabel("volume (kWh)")
    _time_axis(ax)
    ax2 = ax.twinx()
    ax2.plot(
        when,
        [None if p is None else p / MICRO for p in prices],
        ".-",
        color=LINE_COLOUR,
        markersize=3,
        label=what,
    )
    ax2.set_ylabel(f"{what} (currency per kWh)")
    return _svg(fig)


def _steps(levels: list[tuple[int, int]]) -> tuple[list[float], list[float]]:
    """(cumulative kWh, price) points of a step curve over (price, Wh) levels in order."""
    xs, ys, total = [0.0], [], 0
    for price, wh in levels:
        ys.append(price / MICRO)
        total += wh
        xs.append(total / 1000)
    return xs, ys


def _book_of(book: dict[str, list[Any]], interval: int) -> dict[str, list[tuple[int, int, int]]]:
    sides: dict[str, list[tuple[int, int, int]]] = {"bid": [], "ask": []}
    for start, side, price, qty, execu in zip(
        book["interval_start_ms"],
        book["side"],
        book["price_micro_per_kwh"],
        book["qty_wh"],
        book["executable_wh"],
        strict=True,
    ):
        if start == interval:
            sides[side].append((price, qty, execu))
    return sides


def _supply_demand_book(
    sides: dict[str, list[tuple[int, int, int]]], price: int | None, volume: int, when: str
) -> str:
    fig, ax = _figure(6.5, 4.0)
    for side, colour, name in (("bid", BID_COLOUR, "demand"), ("ask", ASK_COLOUR, "supply")):
        xs, ys = _steps([(p, e) for p, _q, e in sides[side] if e])
        if ys:
            ax.stairs(
                ys, xs, baseline=None, color=colour, linewidth=2, label=f"{name} (executable)"
            )
        xs, ys = _steps([(p, q) for p, q, _e in sides[side]])
        if ys:
            ax.stairs(
                ys,
                xs,
                baseline=None,
                color=colour,
                linewidth=1,
                linestyle=":",
                label=f"{name} (all orders)",
            )
    if price is not None:
        ax.plot(
            [volume / 1000],
            [price / MICRO],
            "o",
            color="black",
            label=f"clearing: {price / MICRO:.4f} per kWh, {volume / 1000:g} kWh",
        )
    ax.set_xlabel("cumulative energy (kWh)")
    ax.set_ylabel("price (currency per kWh)")
    ax.set_title(f"interval starting {when} UTC")
    ax.legend(loc="best", fontsize=7)
    return _svg(fig)


def _depth(sides: dict[str, list[tuple[int, int, int]]], when: str) -> str:
    fig, ax = _figure(6.5, 4.0)
    best: dict[str, dict[str, float | None]] = {}
    for side, colour in (("bid", BID_COLOUR), ("ask", ASK_COLOUR)):
        levels = sides[side]
        best[side] = {
            "plain": levels[0][0] / MICRO if levels else None,
            "exec": next((p / MICRO for p, _q, e in levels if e), None),
        }
        for k, style, name in ((1, "-", "all orders"), (2, "--", "executable")):
            total, xs, ys = 0, [], []
            for level in levels:
                total += level[k]
                xs.append(level[0] / MICRO)
                ys.append(total / 1000)
            if xs:
                ax.step(
                    xs,
                    ys,
                    style,
                    where="post",
                    color=colour,
                    label=f"{'bids' if side == 'bid' else 'asks'}: {name}",
                )
    bid, ask = best["bid"], best["ask"]
    crossed = bid["plain"] is not None and ask["plain"] is not None and bid["plain"] > ask["plain"]
    executable = bid["exec"] is not None and ask["exec"] is not None and bid["exec"] >= ask["exec"]
    if crossed and not executable:  # quoted across, yet nothing can trade
        ax.axvspan(
            ask["plain"],
            bid["plain"],
            color="#f2d7d5",
            alpha=0.5,
            label="the Energo overlap: plain quotes cross, executable ones do not",
        )
    for side in ("bid", "ask"):
        if best[side]["exec"] is not None:
            ax.axvline(best[side]["exec"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("price (currency per kWh)")
    ax.set_ylabel("cumulative depth (kWh)")
    ax.set_title(f"interval starting {when} UTC; dotted lines: the executable quote")
    ax.legend(loc="best", fontsize=7)
    return _svg(fig)


def _bars(labels: list[str], values: list[float], ylabel: str, title: str = "") -> str:
    fig, ax = _figure(max(6.0, 0.25 * len(labels) + 2), 3.8)
    colours = [BID_COLOUR if v >= 0 else ASK_COLOUR for v in values]
    ax.bar(range(len(values)), values, color=colours)
    ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 12 else 0, fontsize=7)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("household")
    if title:
        ax.set_title(title)
    return _svg(fig)


# -- per kind -----------------------------------------------------------------------------


def _when(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _replay(folder: Path, summary: dict[str, Any], interval: int | None) -> Report:
    iv = read_table(folder, "intervals") or {}
    book = read_table(folder, "book")
    starts = iv.get("interval_start_ms", [])
    facts = [
        ("mode", summary["mode"]),
        ("events", f"{summary['events']:,}"),
        ("fills", f"{summary['fills']:,}"),
        ("volume", f"{summary['volume_wh'] / 1000:,.1f} kWh"),
        ("VWAP", "-" if summary["vwap"] is None else f"{summary['vwap'] / MICRO:.4f} per kWh"),
        ("intervals", f"{len(starts):,}"),
    ]
    if interval is not None and interval not in starts:
        raise ReportError(
            f"--interval {interval}: no such interval in {folder}/intervals "
            f"(starts run from {min(starts, default='-')} to "
            f"{max(starts, default='-')}, epoch ms)"
        )

    def price_volume() -> str:
        if not starts:
            raise _Unsupported("the replay cleared no interval")
        by_start: dict[int, list[Any]] = {}
        for s, p, v in zip(starts, iv["price_micro_per_kwh"], iv["volume_wh"], strict=True):
            cell = by_start.setdefault(s, [None, 0])
            cell[1] += v
            if p is not None:
                cell[0] = p if cell[0] is None else max(cell[0], p)
        keys = sorted(by_start)
        return _price_volume(
            keys,
            [by_start[k][0] for k in keys],
            [by_start[k][1] for k in keys],
            "clearing price" if summary["mode"] == "call" else "VWAP",
        )

    chosen = deepest = interval
    if chosen is None and starts:  # the busiest interval; for depth, the one most held back
        chosen = max(zip(iv["volume_wh"], starts, strict=True))[1]
        deepest = chosen
        if summary["mode"] == "call":
            held = [
                (o - e, v, s)
                for o, e, v, s in zip(
                    iv["orders"], iv["executable_orders"], iv["volume_wh"], starts, strict=True
                )
            ]
            deepest = max(held)[2]

    def need_book(chosen: int | None) -> dict[str, list[tuple[int, int, int]]]:
        if summary["mode"] != "call":
            raise _Unsupported(
                "a continuous (cda) replay has no auction per interval: "
                "replay with --mode call --book"
            )
        if book is None:
            raise _Unsupported(
                "the folder has no book table: replay with --book to keep each "
                "auction's orders per price level"
            )
        assert chosen is not None
        sides = _book_of(book, chosen)
        if not sides["bid"] and not sides["ask"]:
            raise _Unsupported(f"the interval starting {_when(chosen)} had no orders")
        return sides

    def supply_demand() -> str:
        sides = need_book(chosen)
        assert chosen is not None
        row = starts.index(chosen)
        return _supply_demand_book(
            sides, iv["price_micro_per_kwh"][row], iv["volume_wh"][row], _when(chosen)
        )

    def depth() -> str:
        sides = need_book(deepest)
        assert deepest is not None
        return _depth(sides, _when(deepest))

    def bmax() -> str:
        if summary["mode"] != "call" or not starts:
            raise _Unsupported("only a call-mode replay counts each auction's executable orders")
        held = [o - e for o, e in zip(iv["orders"], iv["executable_orders"], strict=True)]
        bound = sum(1 for h in held if h)
        fig, ax = _figure()
        when = _times(starts)
        ax.bar(
            when, held, width=(when[1] - when[0]) * 0.9 if len(when) > 1 else 0.01, color=ASK_COLOUR
        )
        ax.set_ylabel("orders held back by caps (count)")
        ax.set_title(
            f"Bmax or a balance bound in {bound} of {len(held)} auctions "
            f"({100 * bound / len(held):.0f}%)"
        )
        _time_axis(ax)
        return _svg(fig)

    draw: dict[str, Callable[[], str] | str] = {
        "price-volume": price_volume,
        "supply-demand": supply_demand,
        "depth": depth,
        "efficiency": "a replay has no units' values and costs, so no maximum surplus to "
        "measure efficiency against (simulate gode-sunder has)",
        "savings": "a replay's tables hold no meter readings or grid-alone costs: simulate "
        "community (or wattmesh demo) reports savings against the grid",
        "bmax": bmax,
    }
    captions = {
        "price-volume": "Bars: energy traded per interval (kWh); line: the "
        + ("clearing price" if summary["mode"] == "call" else "volume-weighted price")
        + " (currency per kWh; gaps where nothing traded).",
        "supply-demand": "Bids (demand) and asks (supply) of the busiest interval (or "
        "--interval), cumulated in priority order; solid: what the caps let execute, dotted: "
        "all orders; the dot is the clearing price and volume.",
        "depth": "The interval where the caps held back most orders (or --interval). "
        "Cumulative depth by price: solid all orders, dashed what Bmax, the "
        "balances and money let execute; where the plain quotes cross but the executable "
        "ones do not, orders are quoted that cannot trade (the Energo overlap).",
        "bmax": "Per call auction: orders whose households could not execute them (Bmax "
        "headroom, energy or money), the count the auction reports as orders minus "
        "executable orders.",
    }
    return Report("replay", folder, facts, _plots(draw, captions))


def _gode_sunder(folder: Path, summary: dict[str, Any]) -> Report:
    periods = read_table(folder, "periods") or {}
    trades = read_table(folder, "trades") or {}
    schedule = read_table(folder, "schedule")
    eq = summary["equilibrium"]
    facts = [
        ("market", str(summary["market"])),
        ("strategy", summary["strategy"]),
        ("seeds", str(summary["seeds"])),
        ("shouts per period", str(summary["shouts"])),
        ("efficiency", f"{summary['efficiency']:.2f}%"),
        ("equilibrium", f"price {eq['price']:g}, quantity {eq['quantity']}"),
    ]

    def price_volume() -> str:
        if not trades.get("price"):
            raise _Unsupported("no trade happened")
        per: dict[int, list[int]] = {}
        for p, price in zip(trades["period"], trades["price"], strict=True):
            per.setdefault(p, []).append(price)
        keys = sorted(per)
        seeds = summary["seeds"]
        fig, ax = _figure()
        ax.bar(keys, [len(per[k]) / seeds for k in keys], color="#b8c7dc")
        ax.set_xlabel("period")
        ax.set_ylabel("trades per period (units, mean over seeds)")
        ax2 = ax.twinx()
        ax2.plot(keys, [statistics.fmean(per[k]) for k in keys], "o-", color=LINE_COLOUR)
        ax2.axhline(eq["price"], color="grey", linestyle=":", linewidth=1)
        ax2.set_ylabel("mean trade price (currency units)")
        return _svg(fig)

    def supply_demand() -> str:
        if schedule is None:
            raise _Unsupported("the folder has no schedule table")
        values = sorted(
            (v for r, v in zip(schedule["role"], schedule["value"], strict=True) if r == "buyer"),
            reverse=True,
        )
        costs = sorted(
            v for r, v in zip(schedule["role"], schedule["value"], strict=True) if r == "seller"
        )
        fig, ax = _figure(6.5, 4.0)
        ax.stairs(
            values,
            range(len(values) + 1),
            baseline=None,
            color=BID_COLOUR,
            linewidth=2,
            label="demand (buyers' values)",
        )
        ax.stairs(
            costs,
            range(len(costs) + 1),
            baseline=None,
            color=ASK_COLOUR,
            linewidth=2,
            label="supply (sellers' costs)",
        )
        ax.plot(
            [eq["quantity"]],
            [eq["price"]],
            "o",
            color="black",
            label=f"equilibrium: price {eq['price']:g}, {eq['quantity']} units",
        )
        ax.set_xlabel("quantity (units)")
        ax.set_ylabel("price (currency units)")
        ax.legend(loc="best", fontsize=7)
        return _svg(fig)

    def efficiency() -> str:
        if not periods.get("period"):
            raise _Unsupported("no period was run")
        per: dict[int, list[float]] = {}
        for p, e in zip(periods["period"], periods["efficiency_pct"], strict=True):
            per.setdefault(p, []).append(e)
        keys = sorted(per)
        means = [statistics.fmean(per[k]) for k in keys]
        sds = [statistics.stdev(per[k]) if len(per[k]) > 1 else 0.0 for k in keys]
        fig, ax = _figure()
        ax.errorbar(keys, means, yerr=sds, fmt="o-", color=LINE_COLOUR, capsize=3)
        ax.set_xlabel("period")
        ax.set_ylabel("allocative efficiency (%)")
        ax.set_ylim(min(0.0, min(means) - 5), 105)
        ax.set_title(f"mean and spread over {summary['seeds']} seeds")
        return _svg(fig)

    draw: dict[str, Callable[[], str] | str] = {
        "price-volume": price_volume,
        "supply-demand": supply_demand,
        "depth": "Gode and Sunder's market trades single units continuously: no book is recorded",
        "efficiency": efficiency,
        "savings": "Gode and Sunder's traders are not households: there is no grid to save against",
        "bmax": "Gode and Sunder's markets have no storage caps (Bmax)",
    }
    captions = {
        "price-volume": "Per period: bars, the number of trades (mean over seeds); line, "
        "the mean trade price (currency units); dotted, the equilibrium price.",
        "supply-demand": "The market's schedule: buyers' unit values (demand) and sellers' "
        "unit costs (supply); the dot is the competitive equilibrium.",
        "efficiency": "Realised surplus over the maximum surplus per period, mean and "
        "standard deviation over seeds.",
    }
    return Report("gode-sunder", folder, facts, _plots(draw, captions))


def _community(folder: Path, summary: dict[str, Any]) -> Report:
    iv = read_table(folder, "intervals") or {}
    hs = read_table(folder, "households") or {}
    sc, tot = summary["scenario"], summary["totals"]
    facts = [
        ("households", f"{sc['households']} ({sc['prosumers']} prosumers)"),
        ("days", str(sc["days"])),
        ("Bmax", f"{sc['bmax_wh'] / 1000:g} kWh"),
        ("traded", f"{tot['traded_wh'] / 1000:,.1f} kWh"),
        ("saved against the grid", f"{tot['savings_nano'] / NANO:,.2f}"),
    ]
    starts = iv.get("interval_start_ms", [])

    def price_volume() -> str:
        if not starts:
            raise _Unsupported("the simulation has no interval")
        return _price_volume(starts, iv["price_micro_per_kwh"], iv["volume_wh"], "clearing price")

    def savings() -> str:
        if not hs.get("name"):
            raise _Unsupported("the simulation has no household")
        values = [s / NANO for s in hs["savings_nano"]]
        return _bars(
            hs["name"],
            values,
            "saved against the grid alone (currency units)",
            f"{sc['days']} days; p… prosumers, c… consumers",
        )

    def bmax() -> str:
        if not starts:
            raise _Unsupported("the simulation has no interval")
        held = iv["held_bids"]
        bound = sum(1 for h in held if h)
        fig, ax = _figure()
        when = _times(starts)
        ax.plot(when, held, color=ASK_COLOUR, linewidth=0.8)
        ax.set_ylabel("bids held by Bmax (count)")
        ax.set_title(
            f"Bmax bound in {bound} of {len(held)} intervals ({100 * bound / len(held):.0f}%)"
        )
        _time_axis(ax)
        return _svg(fig)

    draw: dict[str, Callable[[], str] | str] = {
        "price-volume": price_volume,
        "supply-demand": "the community simulation keeps no order book per interval "
        "(replay a log with --book for curves)",
        "depth": "the community simulation keeps no order book per interval (replay a log "
        "with --book for depth)",
        "efficiency": "the community's households have no unit values and costs, so no "
        "maximum surplus to measure efficiency against (simulate gode-sunder has)",
        "savings": savings,
        "bmax": bmax,
    }
    captions = {
        "price-volume": "Bars: energy traded per 15-minute interval (kWh); line: the "
        "clearing price (currency per kWh; gaps where nothing traded).",
        "savings": "Each household's cost with the grid alone (same meter, same storage) "
        "less its cost in the community; negative: the market cost it money.",
        "bmax": "Per interval: bids whose remaining quantity was more than the household's "
        "Bmax headroom, so the engine could not execute all of it.",
    }
    return Report("community", folder, facts, _plots(draw, captions))


def _sweep(folder: Path) -> Report:
    table = read_table(folder, "sweep") or {}
    n = len(next(iter(table.values()), []))
    target = _sweep_target(folder)
    metrics = [m for m, _kind in target.metrics if m in table]
    params = [
        p.name for p in target.parameters
        if p.name in table and len({_key(v) for v in table[p.name]}) > 1
    ]  # fmt: skip
    facts = [
        ("points", f"{n:,}"),
        ("varied", ", ".join(params) or "nothing"),
        ("metrics", ", ".join(metrics) or "none"),
    ]
    plots: list[Plot] = []
    if not metrics:
        plots.append(
            Plot("sweep", "Metrics against parameters", None,
                 f"the sweep's table has none of {target.name}'s metric columns")
        )  # fmt: skip
    elif not params:
        plots.append(
            Plot(
                "sweep",
                "Metrics against parameters",
                None,
                "no parameter takes more than one value",
            )
        )
    for metric in metrics:
        for param in params:
            title = f"{metric} against {param}"
            svg = _sweep_plot(table[param], table[metric], param, metric)
            plots.append(
                Plot(
                    f"sweep-{metric}-{param}",
                    title,
                    svg,
                    f"Each point's {metric} (dots) and the mean per value of {param} (line).",
                )
            )
    return Report("sweep", folder, facts, plots)


def _sweep_target(folder: Path) -> Any:
    """The sweep target whose points the folder's sweep.parquet holds, as its schema
    metadata names it (exchange/sweep/table.py): which columns are parameters and which
    metrics is the target's to say (exchange/sweep/targets.py), not a guess from names."""
    import pyarrow.parquet as pq

    from wattmesh.exchange.sweep.table import TARGET_KEY
    from wattmesh.exchange.sweep.targets import TARGETS

    name = (pq.read_schema(folder / "sweep.parquet").metadata or {}).get(TARGET_KEY)
    target = TARGETS.get(name.decode(errors="replace")) if name else None
    if target is None:
        raise ReportError(
            f"{folder / 'sweep.parquet'} names no sweep target "
            f"({TARGET_KEY.decode()}): not a table `wattmesh sweep` wrote"
        )
    return target


def _key(v: Any) -> Any:
    return "" if v is None else v


def _sweep_plot(xs: list[Any], ys: list[Any], param: str, metric: str) -> str:
    fig, ax = _figure(6.5, 3.6)
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and x is not None]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in pairs)
    by_value: dict[Any, list[Any]] = {}
    for x, y in pairs:  # one pass: a sampled parameter may take a value per point
        by_value.setdefault(x, []).append(y)
    values = sorted(by_value, key=lambda v: (str(type(v)), v))
    index = {v: i for i, v in enumerate(values)}
    pos = (lambda x: x) if numeric else index.__getitem__
    ax.plot(
        [pos(x) for x, _ in pairs],
        [y for _, y in pairs],
        "o",
        alpha=0.4,
        color=LINE_COLOUR,
        markersize=4,
    )
    means = [statistics.fmean(by_value[v]) for v in values]
    ax.plot([pos(v) for v in values], means, "-", color="black")
    if not numeric:
        ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_xlabel(param)
    ax.set_ylabel(_metric_label(metric))
    return _svg(fig)


def _metric_label(metric: str) -> str:
    units = {"_pct": "%", "_wh": "Wh", "_nano": "nano-currency", "_s": "s"}
    for suffix, unit in units.items():
        if metric.endswith(suffix):
            return f"{metric} ({unit})"
    if metric in ("mean_price", "vwap"):
        return f"{metric} (price units of the simulation)"
    if metric == "alpha":
        return "alpha, Smith's (%)"
    return metric


def _plots(draw: dict[str, Callable[[], str] | str], captions: dict[str, str]) -> list[Plot]:
    plots = []
    for pid, title in PLOTS.items():
        how = draw[pid]
        if isinstance(how, str):
            plots.append(Plot(pid, title, None, how))
            continue
        try:
            plots.append(Plot(pid, title, how(), captions[pid]))
        except _Unsupported as why:
            plots.append(Plot(pid, title, None, str(why)))
    return plots


# -- the page -----------------------------------------------------------------------------


def build_report(folder: str | os.PathLike[str], interval: int | None = None) -> Report:
    """The report of an output folder (raises :class:`ReportError` naming what is wrong)."""
    path = Path(folder)
    kind = detect(path)
    if interval is not None and kind != "replay":
        raise ReportError(f"--interval chooses a replay's call auction: a {kind} folder has none")
    if kind == "sweep":
        return _sweep(path)
    summary = _summary(path)
    assert summary is not None
    try:
        if kind == "replay":
            return _replay(path, summary, interval)
        return {"gode-sunder": _gode_sunder, "community": _community}[kind](path, summary)
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, ReportError):
            raise
        raise ReportError(
            f"{path} looks like a {kind} folder but its tables are not as "
            f"wattmesh writes them ({type(exc).__name__}: {exc})"
        ) from None


_STYLE = """body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin:1.5rem 0 .3rem}
table.facts td{padding:.1rem .8rem .1rem 0}figure{margin:0 0 1rem}
figure svg{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#555}
p.omitted{color:#777;font-style:italic}"""


def render(report: Report) -> str:
    """The page: one HTML document with the plots inline as SVG; no script, no link."""
    esc = html.escape
    title = f"wattmesh report: {report.kind} ({report.folder.name or report.folder})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<table class="facts">',
    ]
    parts += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in report.facts]
    parts.append("</table>")
    for plot in report.plots:
        if plot.svg is None:
            parts.append(
                f'<p class="omitted" id="{esc(plot.id)}"><b>{esc(plot.title)}</b>: '
                f"not drawn: {esc(plot.text)}.</p>"
            )
        else:
            parts.append(
                f'<figure class="plot" id="{esc(plot.id)}"><h2>{esc(plot.title)}</h2>'
                f"{plot.svg}<figcaption>{esc(plot.text)}</figcaption></figure>"
            )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    interval: int | None = None,
) -> tuple[Path, Report]:
    """Write the page (default ``folder/report.html``) whole or not at all."""
    from wattmesh.exchange.atomic_file import write_atomic

    report = build_report(folder, interval)
    target = Path(out) if out is not None else Path(folder) / "report.html"
    write_atomic(target, render(report).encode("utf-8"))
    return target, report
