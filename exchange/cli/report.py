"""``wattmesh report DIR``: an output folder (replay, simulation or sweep) as one
self-contained HTML page of plots (the work: exchange/report.py; docs/analysis.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from wattmesh.exchange.cli.terminal import fail


def report(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            show_default=False,
            help="An output folder of replay --out, simulate ... --out or a sweep.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.html",
            dir_okay=False,
            show_default=False,
            help="Where to write the page (default: DIR/report.html).",
        ),
    ] = None,
    interval: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default=False,
            help="Replay: the interval (its start, epoch ms, as in intervals.csv) "
            "whose supply, demand and depth to draw (default: the busiest).",
        ),
    ] = None,
) -> None:
    """Turn DIR into one HTML file with its plots inline (opens offline): price and volume,
    supply and demand with the clearing point, plain and executable depth, efficiency per
    period, savings per household, how often Bmax bound; a plot the data cannot support is
    left out with a note saying why."""
    from wattmesh.exchange.report import ReportError, write_report

    try:
        path, made = write_report(folder, out, interval)
    except ReportError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    drawn = sum(1 for p in made.plots if p.svg is not None)
    sys.stderr.write(
        f"{path}: {made.kind} report, {drawn} plots"
        f"{f', {len(made.plots) - drawn} left out' if drawn < len(made.plots) else ''}\n"
    )
