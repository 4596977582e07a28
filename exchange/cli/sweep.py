"""``wattmesh sweep``: run a grid or a random sample of a command's parameters and merge
the points into one Parquet table (docs/analysis.md, "Sweeps").

A plain typer function, mounted by the root command (``app.command("sweep")(sweep)``).
The sweep itself is ``wattmesh.exchange.sweep``, imported when the command runs (it loads
the engine, and pyarrow and Ray when asked for).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from wattmesh.exchange.cli.terminal import fail, progress_bar

__all__ = ["sweep"]


def sweep(
    spec: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, show_default=False,
            help="The sweep's spec (TOML): its target, fixed parameters, and a [grid] or "
            "a [sample] (docs/analysis.md).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            metavar="DIR", file_okay=False, show_default=False,
            help="Output folder: spec.toml, points/ (one file per finished point) and "
            "sweep.parquet. Run again to resume: finished points are not run again.",
        ),
    ],
    workers: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", show_default=False,
                     help="Local worker processes (default: one per core; 1: in this "
                     "process)."),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray", metavar="ADDRESS", show_default=False,
            help="Run each point as a Ray task on an existing Ray cluster: auto (the one "
            "`ray start --head` started on this machine), HOST:PORT or ray://HOST:10001. "
            "Needs pip install 'wattmesh[scale]'.",
        ),
    ] = None,
) -> None:  # fmt: skip
    """Run a sweep of simulate gode-sunder, simulate community or replay over a grid or
    a random sample of their parameters; one row per point in DIR/sweep.parquet.

    Exit code 0 when every point ran, 1 when any point failed (each is named on stderr
    and kept in the table with its error), 2 for a bad spec, folder or option.
    """
    if ray is not None and workers is not None:
        fail("--workers is for local processes; with --ray the cluster places the points")
    from wattmesh.exchange.sweep.executors import RayUnavailable
    from wattmesh.exchange.sweep.spec import Point, SpecError, load_spec
    from wattmesh.exchange.sweep.store import OutputError
    from wattmesh.exchange.sweep.sweep import run_sweep
    from wattmesh.exchange.sweep.table import PyarrowMissing

    def failed(point: Point, error: str) -> None:
        sys.stderr.write(f"wattmesh: point {point.index} failed ({point.label()}): {error}\n")

    try:
        the_spec = load_spec(spec)
    except SpecError as exc:
        fail(str(exc))
    done = 0

    def progress(count: int, _total: int) -> None:
        nonlocal done
        done = count
        if update is not None:
            update(count)

    try:
        with progress_bar("sweeping", len(the_spec.points)) as update:
            outcome = run_sweep(the_spec, out, workers=workers, ray_address=ray,
                                on_progress=progress, on_failed=failed)  # fmt: skip
    except OutputError as exc:
        fail(str(exc))
    except RayUnavailable as exc:
        fail(f"--ray: {exc}")
    except PyarrowMissing as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    except BaseException as exc:
        if isinstance(exc, Exception | SystemExit):
            raise
        # Ctrl-C (the root command's Interrupted): say what is kept, not every file.
        sys.stderr.write(f"wattmesh: interrupted: {done:,} of {len(the_spec.points):,} points "
                         f"are finished and kept in {out}; the same command resumes\n")  # fmt: skip
        raise typer.Exit(130) from None
    total, failures = outcome.total, len(outcome.failed)
    sys.stdout.write(
        f"{total:,} point{'s' if total != 1 else ''}: {total - failures:,} ok, {failures:,} "
        f"failed ({outcome.ran:,} run now, {outcome.skipped:,} finished before) -> "
        f"{outcome.table}\n"
    )
    if outcome.failed:
        raise typer.Exit(1)
