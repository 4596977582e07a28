"""What the `wattmesh` commands share about the terminal: the one-line error, the
``--format`` option of output folders, and the progress bar. Bars are drawn with rich on
stderr, and only when stderr is a terminal, so pipes and captured output stay clean."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer

from wattmesh.exchange.tables import (
    INSTALL_ANALYSIS,
    MissingPyarrowError,
    TableFormat,
    check_format,
)


def command_group(help: str, *, no_args_is_help: bool = True) -> typer.Typer:
    """A group of ``wattmesh`` commands, every one made the same way: no shell-completion
    commands, help when called bare, and no rich tracebacks (errors are one line, see
    :func:`fail` and ``app.main``)."""
    return typer.Typer(
        add_completion=False,
        no_args_is_help=no_args_is_help,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        help=help,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def fail(message: str, code: int = 2) -> NoReturn:
    """Report an error as one line on stderr and exit with ``code`` (2 unless told)."""
    sys.stderr.write(f"wattmesh: error: {message}\n")
    raise typer.Exit(code)


def format_option(tables: str) -> Any:
    """The ``--format csv|parquet|both`` option of a command whose ``--out DIR`` writes
    ``tables`` (its default and rule: exchange/tables.py)."""
    return typer.Option(
        "--format",
        help=f"--out's tables ({tables}): csv, parquet (typed .parquet files; needs "
        f"pyarrow: {INSTALL_ANALYSIS}) or both.",
    )



def check_out_format(fmt: TableFormat, out: object, given: bool) -> None:
    """Fail in one line before any work: ``--format`` without ``--out``, or a format that
    needs pyarrow when it is missing."""
    if out is None:
        if given:
            fail("--format chooses --out's tables: give --out DIR")
        return
    try:
        check_format(fmt.value, f"--out {out}")
    except MissingPyarrowError as exc:
        fail(str(exc))


def option_given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (not its default). By name: typer carries its own
    copy of click, whose enum is not click's."""
    return getattr(ctx.get_parameter_source(name), "name", None) != "DEFAULT"


def stderr_is_terminal() -> bool:
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # captured or replaced streams
        return False


@contextmanager
def progress_bar(
    label: str, total: int, *, show: bool = True, in_bytes: bool = False
) -> Iterator[Callable[[int], None] | None]:
    """Yield `update(completed)` for a bar up to `total`, or None when no bar is drawn
    (`show` is false, or stderr is not a terminal)."""
    if not show or not stderr_is_terminal():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    with Progress(
        label,
        BarColumn(),
        DownloadColumn() if in_bytes else MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)
