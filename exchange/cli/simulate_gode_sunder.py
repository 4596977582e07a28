"""``wattmesh simulate gode-sunder``: Gode and Sunder's markets with ZI-U, ZI-C or ZIP
traders; efficiency per period and overall, as JSON, and plots.

The command is a plain typer function; the ``wattmesh`` CLI mounts it with
``simulate.command("gode-sunder")(gode_sunder)``. Printing and plotting live here; the
simulation lives in ``wattmesh.agents.gode_sunder``.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from wattmesh.agents.gode_sunder_defaults import PERIODS, SEEDS, SHOUTS
from wattmesh.exchange.cli.terminal import (
    check_out_format,
    format_option,
    option_given,
    progress_bar,
)
from wattmesh.exchange.cli.terminal import fail as _fail
from wattmesh.exchange.tables import DEFAULT_FORMAT, TableFormat

if TYPE_CHECKING:
    from wattmesh.agents import gode_sunder as gs

# The period lengths of the efficiency-against-shouts plot (shouts per period).
SWEEP_SHOUTS = (50, 100, 200, 500, 1000, 2000, 4000)
SWEEP_STRATEGIES = ("zi-u", "zi-c")
# A learning strategy's plots add its mean price per period beside this one's, the baseline
# that does not learn (same seeds, periods and shouts).
CONVERGENCE_BASELINE = "zi-c"
LEARNING = ("zip",)
# A progress bar is worth drawing only for runs of at least this many turns.
PROGRESS_MIN_TURNS = 200_000


class Strategy(StrEnum):
    """Trader strategies (wattmesh.agents.traders.STRATEGIES)."""

    zi_u = "zi-u"
    zi_c = "zi-c"
    zip = "zip"


def gode_sunder(
    ctx: typer.Context,
    market: Annotated[
        int,
        typer.Option(min=1, max=5, show_default=False, help="Gode and Sunder's market, 1 to 5."),
    ],
    strategy: Annotated[
        Strategy,
        typer.Option(
            show_default=False,
            help="zi-u: uniform over the price range; zi-c: uniform within the unit's value "
            "or cost (never a loss); zip: adaptive margins (Cliff 1997).",
        ),
    ],
    periods: Annotated[int, typer.Option(min=1, help="Periods per session.")] = PERIODS,
    shouts: Annotated[
        int, typer.Option(min=1, help="Shouts (turns) per period: the period's length.")
    ] = SHOUTS,
    seeds: Annotated[int, typer.Option(min=1, help="Sessions, with seeds 0 to N-1.")] = SEEDS,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON object: {"market", "strategy", "shouts", "seeds", '
            '"efficiency", "efficiency_by_period", "alpha", "dispersion", "trades"}; '
            "alpha, dispersion and trades are per period (means over seeds).",
        ),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            file_okay=False,
            help="Write PNGs to DIR: the schedules with the equilibrium, the trade prices "
            "across periods (first seed), and efficiency against shouts per period "
            f"({SWEEP_SHOUTS[0]} to {SWEEP_SHOUTS[-1]}) for ZI-U and ZI-C; for zip also the "
            "mean price per period against the equilibrium, ZIP beside ZI-C.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes (default: one per core for big runs)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", file_okay=False, show_default=False,
            help="Write the periods (one row per seed and period), trades and schedule "
            "tables (by --format) and summary.json to DIR.",
        ),
    ] = None,
    fmt: Annotated[TableFormat, format_option("periods, trades, schedule")] = DEFAULT_FORMAT,
) -> None:
    """Run Gode and Sunder's (1993) market on the CDA engine and report allocative
    efficiency per period and overall (mean and spread over seeds).

    The same options always give the same bytes out.
    """
    # The simulation (its traders, the engine, the markets' data) loads here, not for
    # every command (tests/exchange/cli/test_startup.py).
    from wattmesh.agents import gode_sunder as gs

    check_out_format(fmt, out, option_given(ctx, "fmt"))
    the_market = gs.load_market(market)
    seed_list = list(range(seeds))
    sweep = plot is not None
    converge = sweep and strategy.value in LEARNING
    total_turns = seeds * periods * shouts
    total_sessions = seeds
    if sweep:
        total_turns += len(SWEEP_STRATEGIES) * seeds * periods * sum(SWEEP_SHOUTS)
        total_sessions += len(SWEEP_STRATEGIES) * len(SWEEP_SHOUTS) * seeds
    if converge:
        total_turns += seeds * periods * shouts
        total_sessions += seeds
    curves: dict[str, list[tuple[int, float, float]]] = {}
    prices: dict[str, list[float | None]] = {}
    with progress_bar(
        "simulating", total_sessions, show=total_turns >= PROGRESS_MIN_TURNS
    ) as update:
        done = itertools.count(1)
        tick = (lambda _session: update(next(done))) if update else None
        results = gs.run_sessions(
            the_market,
            strategy.value,
            seed_list,
            periods,
            shouts,
            workers=workers,
            on_session=tick,
        )
        summary = gs.summarize(results)
        if converge:
            baseline = gs.run_sessions(
                the_market,
                CONVERGENCE_BASELINE,
                seed_list,
                periods,
                shouts,
                workers=workers,
                on_session=tick,
            )
            prices[strategy.value] = summary.price_by_period
            prices[CONVERGENCE_BASELINE] = gs.summarize(baseline).price_by_period
        if sweep:
            for name in SWEEP_STRATEGIES:
                curves[name] = gs.efficiency_by_shouts(
                    the_market,
                    name,
                    SWEEP_SHOUTS,
                    seed_list,
                    periods,
                    workers=workers,
                    on_session=tick,
                )
    if plot is not None:
        try:
            write_plots(plot, the_market, results[0], curves, seeds, prices)
        except OSError as exc:
            _fail(f"cannot write plots to {plot}: {exc.strerror or exc}")
    if out is not None:
        from wattmesh.exchange.simulation_tables import gode_sunder_tables, write_simulation

        try:
            tables = gode_sunder_tables(the_market, results, summary_json(summary))
            write_simulation(out, *tables, fmt.value)
        except OSError as exc:
            _fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    if as_json:
        sys.stdout.write(orjson.dumps(summary_json(summary), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_summary(the_market, summary, periods))


def summary_json(summary: gs.Summary) -> dict[str, Any]:
    """The ``--json`` object; percentages and means rounded to 4 decimals."""
    return {
        "market": summary.market,
        "strategy": summary.strategy,
        "shouts": summary.shouts,
        "seeds": summary.seeds,
        "efficiency": _round(summary.efficiency),
        "efficiency_by_period": [_round(x) for x in summary.efficiency_by_period],
        "alpha": [_round(x) for x in summary.alpha_by_period],
        "dispersion": [_round(x) for x in summary.dispersion_by_period],
        "trades": [_round(x) for x in summary.trades_by_period],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def format_summary(market: gs.Market, summary: gs.Summary, periods: int) -> str:
    """The human report: the market's equilibrium, then measures per period and overall."""
    eq = market.equilibrium
    quantity = f"{eq.quantity}"
    if eq.quantity_max > eq.quantity:
        quantity += f" (up to {eq.quantity_max} with zero-gain units)"
    price = f"{eq.price:g}"
    if eq.price_high > eq.price_low:
        price += f" (midpoint of {eq.price_low}..{eq.price_high})"
    lines = [
        f"Gode-Sunder market {market.number}: {len(market.buyers)} buyers, "
        f"{len(market.sellers)} sellers; equilibrium price {price}, quantity {quantity}, "
        f"max surplus {eq.surplus} per period",
        f"{summary.strategy}, {summary.shouts} shouts per period, {periods} periods, "
        f"{summary.seeds} seeds (mean ± sd over seeds)",
        "",
        f"{'period':<8}{'efficiency %':>16}{'alpha %':>10}{'dispersion':>12}{'trades':>8}",
    ]
    for k in range(periods):
        alpha = summary.alpha_by_period[k]
        lines.append(
            f"{k + 1:<8}"
            f"{summary.efficiency_by_period[k]:>9.2f} ± {summary.efficiency_sd_by_period[k]:<5.2f}"
            f"{'-' if alpha is None else f'{alpha:.2f}':>10}"
            f"{summary.dispersion_by_period[k]:>12.2f}"
            f"{summary.trades_by_period[k]:>8.1f}"
        )
    lines.append(f"{'overall':<8}{summary.efficiency:>9.2f} ± {summary.efficiency_sd:.2f}")
    return "\n".join(lines) + "\n"


def write_plots(
    directory: Path,
    market: gs.Market,
    session: gs.SessionResult,
    curves: dict[str, list[tuple[int, float, float]]],
    seeds: int,
    prices: dict[str, list[float | None]] | None = None,
) -> list[Path]:
    """Write the PNGs (named ``gode-sunder-market<N>-...``): schedules, prices, efficiency
    against shouts, and, given ``prices`` (strategy -> mean price per period), the
    convergence plot. Returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    stem = f"gode-sunder-market{market.number}"
    paths = [
        directory / f"{stem}-schedules.png",
        directory / f"{stem}-{session.strategy}-prices.png",
        directory / f"{stem}-efficiency-by-shouts.png",
    ]
    draws: list[Callable[[Any], None]] = [
        lambda ax: _draw_schedules(ax, market),
        lambda ax: _draw_prices(ax, market, session),
        lambda ax: _draw_efficiency(ax, market, curves, seeds),
    ]
    if prices:
        paths.append(directory / f"{stem}-convergence.png")
        draws.append(lambda ax: _draw_convergence(ax, market, session, prices, seeds))
    for path, draw in zip(paths, draws, strict=True):
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
        draw(ax)
        fig.tight_layout()
        # No timestamp in the metadata, so the same run writes the same bytes.
        fig.savefig(path, metadata={"Software": None})
        plt.close(fig)
    return paths


def _steps(limits: Sequence[int]) -> tuple[list[int], list[int]]:
    """A step curve through sorted unit limits: x = units so far, y = the unit's limit."""
    xs, ys = [0], [limits[0]]
    for k, limit in enumerate(limits):
        xs += [k, k + 1]
        ys += [limit, limit]
    return xs[1:], ys[1:]


def _draw_schedules(ax: Any, market: gs.Market) -> None:
    eq = market.equilibrium
    ax.plot(*_steps(sorted(market.values, reverse=True)), color="tab:blue", label="demand")
    ax.plot(*_steps(sorted(market.costs)), color="tab:red", label="supply")
    ax.axhline(eq.price, color="grey", linestyle="--", linewidth=0.8)
    ax.plot([eq.quantity], [eq.price], "ko", label=f"equilibrium ({eq.quantity}, {eq.price:g})")
    if eq.quantity_max > eq.quantity:
        ax.plot([eq.quantity_max], [eq.price], "ko", fillstyle="none", label="zero-gain units")
    ax.set_xlabel("units")
    ax.set_ylabel("price")
    ax.set_ylim(market.price_min - 1, market.price_max + 1)
    ax.set_title(f"Gode-Sunder market {market.number}: schedules")
    ax.legend(loc="upper right", fontsize="small")


def _draw_prices(ax: Any, market: gs.Market, session: gs.SessionResult) -> None:
    eq = market.equilibrium
    x = 0
    for period in session.periods:
        xs = list(range(x, x + len(period.trades)))
        ax.plot(xs, [t.price for t in period.trades], ".-", color="tab:blue", linewidth=0.6)
        x += len(period.trades)
        ax.axvline(x - 0.5, color="lightgrey", linewidth=0.8)
    ax.axhline(eq.price, color="black", linestyle="--", linewidth=0.8, label=f"P* = {eq.price:g}")
    ax.set_xlabel("trade (periods separated by grey lines)")
    ax.set_ylabel("price")
    ax.set_ylim(market.price_min - 1, market.price_max + 1)
    ax.set_title(
        f"Market {market.number}, {session.strategy}: trade prices, seed {session.seed}, "
        f"{session.shouts} shouts/period"
    )
    ax.legend(loc="upper right", fontsize="small")


def _draw_efficiency(
    ax: Any, market: gs.Market, curves: dict[str, list[tuple[int, float, float]]], seeds: int
) -> None:
    for name, rows in curves.items():
        xs = [r[0] for r in rows]
        ax.errorbar(
            xs, [r[1] for r in rows], yerr=[r[2] for r in rows], marker="o", capsize=3, label=name
        )
    ax.set_xscale("log")
    ax.set_xlabel("shouts per period")
    ax.set_ylabel("efficiency % (mean ± sd over seeds)")
    ax.set_ylim(0, 102)
    ax.set_title(f"Market {market.number}: efficiency against period length ({seeds} seeds)")
    ax.legend(loc="lower right", fontsize="small")


def _draw_convergence(
    ax: Any,
    market: gs.Market,
    session: gs.SessionResult,
    prices: dict[str, list[float | None]],
    seeds: int,
) -> None:
    eq = market.equilibrium
    if eq.price_high > eq.price_low:
        ax.axhspan(eq.price_low, eq.price_high, color="lightgrey", alpha=0.5, linewidth=0)
    ax.axhline(eq.price, color="black", linestyle="--", linewidth=0.8, label=f"P* = {eq.price:g}")
    for name, by_period in prices.items():
        points = [(k + 1, p) for k, p in enumerate(by_period) if p is not None]
        ax.plot([k for k, _ in points], [p for _, p in points], "o-", label=name)
    ax.set_xticks(range(1, len(session.periods) + 1))
    ax.set_xlabel("period")
    ax.set_ylabel(f"mean trade price (mean over {seeds} seeds)")
    ax.set_title(f"Market {market.number}: mean price per period, {session.shouts} shouts/period")
    ax.legend(loc="best", fontsize="small")
