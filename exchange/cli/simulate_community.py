"""`wattmesh simulate community`: run the Energo community and report it.

A plain function with typer annotations; the `wattmesh` command mounts it:

    simulate.command("community")(community)

It prints a rich summary (or, with `--json`, one JSON object on stdout), writes PNG plots
with `--plot DIR`, and draws a progress bar on stderr when stderr is a terminal. The
simulation itself is `wattmesh.agents.community`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from wattmesh.exchange.cli.terminal import (
    check_out_format,
    fail,
    format_option,
    option_given,
    progress_bar,
)
from wattmesh.exchange.tables import DEFAULT_FORMAT, TableFormat
from wattmesh.exchange.units import MICRO, NANO, price_text
from wattmesh.settlement.readings import DEFAULT_FEEDIN_PRICE, DEFAULT_RETAIL_PRICE

if TYPE_CHECKING:
    from wattmesh.agents.community import CommunityResult

__all__ = ["community", "format_summary", "write_plots"]

PLOTS = ("community-prices.png", "community-balance.png", "community-savings.png")


def community(
    ctx: typer.Context,
    households: Annotated[int, typer.Option(min=1, help="Households in the community.")] = 130,
    prosumers: Annotated[
        int, typer.Option(min=0, help="How many of them are prosumers (the rest consume).")
    ] = 50,
    days: Annotated[int, typer.Option(min=1, max=3660, help="Days to simulate.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the profiles and the agents.")] = 0,
    bmax_cost: Annotated[
        int,
        typer.Option(
            "--bmax-cost",
            min=1,
            metavar="CU",
            help="Target storage cost per user Cu (currency units). Energo: "
            "Bmax = 4*Cu/(3*200) kWh = Cu/150 kWh.",
        ),
    ] = 300,
    retail_price: Annotated[
        int, typer.Option(min=1, metavar="P", help="Grid retail price, micro-currency per kWh.")
    ] = DEFAULT_RETAIL_PRICE,
    feedin_price: Annotated[
        int,
        typer.Option(min=1, metavar="P", help="Grid feed-in price, micro-currency per kWh."),
    ] = DEFAULT_FEEDIN_PRICE,
    prosumer_consumption: Annotated[
        int, typer.Option(min=0, help="A prosumer's average consumption, kWh per 30 days.")
    ] = 360,
    consumer_consumption: Annotated[
        int, typer.Option(min=0, help="A consumer's average consumption, kWh per 30 days.")
    ] = 1125,
    prosumer_production: Annotated[
        int, typer.Option(min=0, help="A prosumer's average production, kWh per 30 days.")
    ] = 360,
    plot: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            file_okay=False,
            help="Write community-prices.png, community-balance.png and "
            "community-savings.png to DIR.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as one JSON object.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", file_okay=False, show_default=False,
            help="Write the intervals and households tables (by --format) and "
            "summary.json to DIR (units in the column names).",
        ),
    ] = None,
    fmt: Annotated[TableFormat, format_option("intervals, households")] = DEFAULT_FORMAT,
) -> None:
    """Simulate an Energo community: threshold agents, a call auction every 15 minutes
    under Bmax caps, and each household's cost against the grid alone.

    Default: the Gabrich scenario, 130 households (50 prosumers at 360 kWh/month, 80
    consumers at 1125 kWh/month), 30 days. The same seed always gives the same bytes out.
    """
    # The simulation's modules (the agents, the engine, the tables) load here, not for
    # every command (tests/exchange/cli/test_startup.py).
    from wattmesh.agents.community import CommunityConfig, simulate
    from wattmesh.exchange.simulation_tables import community_tables, write_simulation
    from wattmesh.meters.profiles import INTERVALS_PER_DAY

    config = CommunityConfig(
        households=households,
        prosumers=prosumers,
        days=days,
        seed=seed,
        bmax_cost=bmax_cost,
        retail=retail_price,
        feed_in=feedin_price,
        prosumer_consumption=prosumer_consumption,
        consumer_consumption=consumer_consumption,
        prosumer_production=prosumer_production,
    )
    try:
        config.validate()
    except ValueError as exc:
        fail(str(exc))
    check_out_format(fmt, out, option_given(ctx, "fmt"))
    with progress_bar("simulating", config.days * INTERVALS_PER_DAY) as update:
        on_progress = (lambda done, _total: update(done)) if update else None
        result = simulate(config, on_progress=on_progress)
    if plot is not None:
        try:
            write_plots(result, plot)
        except OSError as exc:
            fail(f"cannot write plots to {plot}: {exc}")
    if out is not None:
        try:
            write_simulation(out, *community_tables(result.summary()), fmt.value)
        except OSError as exc:
            fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    if as_json:
        sys.stdout.write(orjson.dumps(result.summary(), option=orjson.OPT_SORT_KEYS).decode())
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        for part in format_summary(result):
            Console().print(part)


# -- the human summary ------------------------------------------------------------------


def _money(nano: int) -> str:
    return f"{nano / NANO:,.2f}"


def format_summary(result: CommunityResult) -> list[Any]:
    """The human report as a list of rich renderables (text and tables)."""
    from rich.table import Table

    from wattmesh.agents.community import CONSUMER, PROSUMER
    from wattmesh.meters.profiles import INTERVALS_PER_DAY

    s = result.summary()
    sc, tot, orders = s["scenario"], s["totals"], s["orders"]
    months = sc["days"] / 30
    prices = [p for p in s["intervals"]["price"] if p is not None]
    head = (
        f"[bold]Energo community[/]: {sc['households']} households "
        f"({sc['prosumers']} prosumers, {sc['consumers']} consumers), {sc['days']} days, "
        f"seed {sc['seed']}\n"
        f"Bmax {sc['bmax_wh']:,} Wh per household (Cu {sc['bmax_cost']} at "
        f"{sc['storage_price_per_kwh']}/kWh: Bmax = Cu/150 kWh); agents buy below "
        f"{sc['lower_threshold_wh']:,} Wh and sell above {sc['upper_threshold_wh']:,} Wh\n"
        f"grid: retail {price_text(sc['retail'])}, feed-in {price_text(sc['feed_in'])} per kWh"
    )

    market = Table(title="Market", show_header=False, title_justify="left")
    market.add_column()
    market.add_column(justify="right")
    market.add_row("traded", f"{tot['traded_wh'] / 1000:,.1f} kWh in {tot['fills']:,} fills")
    market.add_row(
        "intervals with trades", f"{tot['intervals_with_trades']:,} of {sc['intervals']:,}"
    )
    market.add_row("volume-weighted price", f"{price_text(tot['vwap'])} per kWh")
    if prices:
        market.add_row("clearing prices", f"{price_text(min(prices))} .. {price_text(max(prices))}")
    market.add_row(
        "bids posted / withdrawn", f"{orders['bids_posted']:,} / {orders['bids_withdrawn']:,}"
    )
    market.add_row(
        "asks posted / withdrawn", f"{orders['asks_posted']:,} / {orders['asks_withdrawn']:,}"
    )
    market.add_row(
        "bids held by the Bmax cap",
        f"{orders['bids_held']:,}, of which {orders['bids_held_then_executed']:,} executed "
        f"later ({orders['bought_after_hold'] / 1000:,.1f} kWh)",
    )
    market.add_row(
        "grid import / export",
        f"{tot['imported_wh'] / 1000:,.1f} / {tot['exported_wh'] / 1000:,.1f} kWh "
        f"(grid alone: {tot['grid_alone_imported_wh'] / 1000:,.1f} / "
        f"{tot['grid_alone_exported_wh'] / 1000:,.1f})",
    )

    costs = Table(
        title="Cost per household per 30 days (currency units)",
        caption="grid alone: the same meter and the same Bmax storage, no market",
        title_justify="left",
        caption_justify="left",
    )
    for name in ("", "households", "community", "grid alone", "saved", "saved min..max"):
        costs.add_column(name, justify="left" if not name else "right")
    rows = [(kind, s["by_kind"][kind]) for kind in (PROSUMER, CONSUMER)]
    for kind, g in rows:
        n = g["households"]
        if not n:
            continue
        per = n * months
        costs.add_row(
            kind + "s",
            str(n),
            _money(round(g["cost_nano"] / per)),
            _money(round(g["grid_alone_cost_nano"] / per)),
            _money(round(g["savings_nano"] / per)),
            f"{_money(round(g['min_savings_nano'] / months))} .. "
            f"{_money(round(g['max_savings_nano'] / months))}",
        )
    per = sc["households"] * months
    costs.add_row(
        "all",
        str(sc["households"]),
        _money(round(tot["cost_nano"] / per)),
        _money(round(tot["grid_alone_cost_nano"] / per)),
        _money(round(tot["savings_nano"] / per)),
        "",
    )

    day = Table(title="Average day (per hour of day)", title_justify="left")
    for name in ("hour", "traded kWh/day", "price", "bids held/day", "balance kWh"):
        day.add_column(name, justify="right")
    iv = s["intervals"]
    for hour in range(24):
        vol = money = held = bal = 0
        for t in range(hour * 4, len(iv["price"]), INTERVALS_PER_DAY):
            for q in range(t, min(t + 4, len(iv["price"]))):
                vol += iv["volume_wh"][q]
                money += iv["volume_wh"][q] * (iv["price"][q] or 0)
                held += iv["held_bids"][q]
                bal += iv["balance_wh"][q]
        if vol < 50 * sc["days"] and held < 0.05 * sc["days"]:  # shows as 0.0: skip
            continue
        day.add_row(
            f"{hour:02d}:00",
            f"{vol / 1000 / sc['days']:,.1f}",
            price_text(money // vol if vol else None),
            f"{held / sc['days']:,.1f}",
            f"{bal / 4 / sc['days'] / 1000:,.1f}",
        )
    return [head, market, costs, day]


# -- plots ------------------------------------------------------------------------------


def write_plots(result: CommunityResult, out: Path) -> list[Path]:
    """Write the three PNGs (prices, balance against caps, savings) to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wattmesh.agents.community import PROSUMER
    from wattmesh.meters.profiles import INTERVALS_PER_DAY

    out.mkdir(parents=True, exist_ok=True)
    cfg, iv = result.config, result.intervals
    n = cfg.households
    days = [t / INTERVALS_PER_DAY for t in range(len(iv.start))]
    paths = [out / name for name in PLOTS]

    fig, (whole, zoom) = plt.subplots(2, 1, figsize=(11, 7), height_ratios=(3, 2))
    _price_panel(whole, result, 0, len(days))
    whole.set_title("Clearing price per 15-minute interval (shaded: traded volume)")
    first = min(cfg.days, 3) * INTERVALS_PER_DAY
    _price_panel(zoom, result, 0, first, legend=False)
    zoom.set_title(f"The first {first // INTERVALS_PER_DAY} day(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, (ax, top) = plt.subplots(2, 1, figsize=(11, 7), height_ratios=(3, 2), sharex=True)
    p = cfg.prosumers
    pro = [b / 1000 for b in iv.prosumer_balance]
    con = [(b - x) / 1000 for b, x in zip(iv.balance, iv.prosumer_balance, strict=True)]
    ax.stackplot(days, pro, con, labels=["prosumers", "consumers"], colors=["#f5b041", "#5dade2"])
    ax.axhline(result.bmax * n / 1000, color="#b03a2e", lw=1, label="community cap (sum of Bmax)")
    if 0 < p < n:
        ax.axhline(result.bmax * p / 1000, color="#b9770e", lw=1, ls=":", label="prosumers' cap")
    ax.set_ylabel("balance after clearing (kWh)")
    ax.set_title(f"Community balance against its caps (Bmax {result.bmax:,} Wh per household)")
    ax.legend(loc="upper right", fontsize=8)
    top.plot(days, [b / 1000 for b in iv.max_balance], lw=0.8, color="#1f4e79",
             label="largest household balance")  # fmt: skip
    top.axhline(result.bmax / 1000, color="#b03a2e", lw=1, label="Bmax")
    top.axhline(result.upper / 1000, color="#7f8c8d", lw=1, ls=":", label="agents' upper threshold")
    top.set_ylim(0, result.bmax / 1000 * 1.25)
    top.set_xlabel("day")
    top.set_ylabel("kWh")
    top.legend(loc="upper right", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 4.5))
    months = cfg.days / 30
    ordered = sorted(result.households, key=lambda h: (h.kind != PROSUMER, -h.savings, h.index))
    colours = ["#f5b041" if h.kind == PROSUMER else "#5dade2" for h in ordered]
    ax.bar(range(len(ordered)), [h.savings / NANO / months for h in ordered], color=colours)
    ax.set_xlabel("household (prosumers, then consumers; each by savings)")
    ax.set_ylabel("saved per 30 days (currency units)")
    ax.set_title("Savings per household: community against the grid alone (same storage)")
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="#f5b041", label="prosumer"),
            Patch(color="#5dade2", label="consumer"),
        ],
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths


def _price_panel(
    ax: Any, result: CommunityResult, first: int, end: int, legend: bool = True
) -> None:
    """Clearing prices (dots) and traded volume (shaded, right axis) of intervals
    `first` to `end`, against the grid's retail and feed-in prices."""
    from wattmesh.meters.profiles import INTERVALS_PER_DAY

    cfg, iv = result.config, result.intervals
    days = [t / INTERVALS_PER_DAY for t in range(first, end)]
    vol = ax.twinx()
    # A filled step, not one bar per interval: thousands of bars take seconds to draw.
    volume = [v / 1000 for v in iv.volume[first:end]]
    vol.fill_between(days, volume, step="post", color="#c7d7ea", lw=0)
    vol.set_ylim(bottom=0)
    vol.set_ylabel("traded per interval (kWh)")
    ax.set_zorder(vol.get_zorder() + 1)
    ax.patch.set_visible(False)
    traded = [(d, p / MICRO) for d, p in zip(days, iv.price[first:end], strict=True) if p >= 0]
    if traded:
        x, y = zip(*traded, strict=True)
        ax.plot(x, y, ".", ms=2.5, color="#1f4e79", label="clearing price")
    ax.axhline(cfg.retail / MICRO, color="#b03a2e", lw=1, ls="--", label="grid retail")
    ax.axhline(cfg.feed_in / MICRO, color="#1e8449", lw=1, ls="--", label="grid feed-in")
    ax.set_ylim(0, cfg.retail / MICRO * 1.1)
    ax.set_xlim(days[0], days[-1] + 1 / INTERVALS_PER_DAY)
    ax.set_xlabel("day")
    ax.set_ylabel("price (currency per kWh)")
    if legend:
        ax.legend(loc="upper right", fontsize=8)
