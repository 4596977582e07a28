"""The ``wattmesh`` command line. Thin: parsing, printing and exit codes; the work happens
in the library modules (``wattmesh.exchange.replay.replay``)."""

from __future__ import annotations

import functools
import gc
import signal
import sys
import threading
from enum import StrEnum
from io import RawIOBase
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from wattmesh.exchange.atomic_file import atomic_output, written_summary
from wattmesh.exchange.cli.terminal import (
    check_out_format,
    command_group,
    format_option,
    option_given,
    progress_bar,
)
from wattmesh.exchange.cli.terminal import fail as _fail
from wattmesh.exchange.clock import DEFAULT_INTERVAL_MS
from wattmesh.exchange.tables import DEFAULT_FORMAT, TableFormat
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.readings import DEFAULT_FEEDIN_PRICE, DEFAULT_RETAIL_PRICE

if TYPE_CHECKING:
    from wattmesh.exchange.replay.replay import ReplayResult

# A progress bar is worth drawing only for logs that take more than a moment.
PROGRESS_MIN_BYTES = 16 << 20


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"wattmesh {version('wattmesh')}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:  # fmt: skip
    """wattmesh: a peer-to-peer energy exchange for a neighbourhood."""


class Mode(StrEnum):
    """The replay mechanisms (replay.MODES)."""

    call = "call"
    cda = "cda"


class StpRule(StrEnum):
    """Self-trade prevention rules (replay.STP_RULES)."""

    none = "none"
    cancel_resting = "cancel-resting"
    cancel_incoming = "cancel-incoming"


def replay(
    ctx: typer.Context,
    log: Annotated[
        Path | None,
        typer.Argument(
            help="Order log, JSON Lines. Without it the bundled sample day is replayed.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        Mode,
        typer.Option(
            help="call: one call auction per delivery interval, the network's default "
            "mechanism (docs/design.md); cda: a continuous double auction, events in order.",
        ),
    ] = Mode.call,
    interval_ms: Annotated[
        int, typer.Option(min=1, help="Length of a delivery interval in ms (call mode).")
    ] = DEFAULT_INTERVAL_MS,
    stp: Annotated[
        StpRule,
        typer.Option(
            help="Self-trade prevention when one household meets itself.",
        ),
    ] = StpRule.none,
    trades: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Write one JSON line per fill to FILE ('-': stdout)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            file_okay=False,
            help="Write the tables (trades, intervals, accounts, refusals; by --format) and "
            "summary.json to DIR.",
        ),
    ] = None,
    fmt: Annotated[
        TableFormat, format_option("trades, intervals, accounts, rejects")
    ] = DEFAULT_FORMAT,
    book: Annotated[
        bool,
        typer.Option(
            "--book",
            help="With --out, call mode: also write book (.csv/.parquet): each auction's "
            "orders per price level, what they asked for and what Bmax and the balances "
            "let them execute (the depth wattmesh report draws).",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            help="Stop with exit code 2 at the first bad line (not JSON, bad record or "
            "signature) instead of refusing it and going on."
        ),
    ] = False,
    verify_signatures: Annotated[
        bool,
        typer.Option(
            help="Require every order and cancel to be signed by its owner, and every "
            "given order id to match its content."
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON (summary.json).")
    ] = False,
    ledger: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            dir_okay=False,
            help="Settle every fill into a new ledger FILE (must not exist or be empty): "
            "genesis, members with their opening balances, the trades and interval closes. "
            "Every trading owner needs an account line.",
        ),
    ] = None,
    storage_rate: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="With --ledger (call mode): charge storage fees of N nano per kWh stored per "
            "interval before each close, split 80% to storage providers (account lines with "
            "bmax), 10% education, 10% network. 0: no fees.",
        ),
    ] = 0,
    retail_price: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="P",
            help="Grid retail price (micro-currency per kWh) for energy a meter reading imports.",
        ),
    ] = DEFAULT_RETAIL_PRICE,
    feedin_price: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="P",
            help="Grid feed-in price (micro-currency per kWh) for energy a reading exports "
            "above Bmax.",
        ),
    ] = DEFAULT_FEEDIN_PRICE,
) -> None:
    """Replay an order log through the matching engine and summarize the result.

    Default mode: call (the network's default mechanism). The same log always gives the
    same bytes out. Refused lines are counted by reason and listed in DIR/rejects.jsonl.
    """
    # The replay's modules (the engine, the scanner) load here, not for every command.
    from wattmesh.exchange.replay import replay as replaying

    check_out_format(fmt, out, option_given(ctx, "fmt"))
    source, node_log = _open_log(log)
    if book and (out is None or mode is not Mode.call or node_log):
        _fail("--book writes the depth of each call auction into --out DIR: it needs --out "
              "and --mode call, and an order log (not a node log)")  # fmt: skip
    if node_log:
        assert log is not None
        given = [name for name in _COMMUNITY_RULED if option_given(ctx, name)]
        if given:
            flags = " and ".join(f"--{name.replace('_', '-')}" for name in given)
            _fail(f"{log} is a node log (wattmesh export-log): it settles under its "
                  f"community's own rules, so {flags} {'does' if len(given) == 1 else 'do'} "
                  "not apply")  # fmt: skip
        _replay_node_log(log, trades, out, fmt.value, as_json, ledger)
        return
    if storage_rate and ledger is None:
        _fail("--storage-rate needs --ledger (the fees are settled into the ledger)")
    options = replaying.ReplayOptions(
        mode=mode.value,
        interval_ms=interval_ms,
        stp=stp.value,
        strict=strict,
        verify_signatures=verify_signatures,
        retail_price=retail_price,
        feedin_price=feedin_price,
        book=book,
    )
    size = log.stat().st_size if log is not None else 0
    try:
        show = size >= PROGRESS_MIN_BYTES
        with progress_bar("replaying", size, show=show, in_bytes=True) as on_progress:
            result = replaying.replay(source, options, on_progress=on_progress)
    except replaying.BadLineError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot read {log}: {exc.strerror or exc}")
    finally:
        if isinstance(source, RawIOBase):
            source.close()
    _write_tables(result, trades, out, fmt.value)
    if ledger is not None:
        # The ledger's modules (its store, the keys, cryptography) load only for --ledger.
        import sqlite3

        from wattmesh.exchange.replay.to_ledger import ReplayLedgerError, settle_into_ledger
        from wattmesh.settlement.ledger import LedgerError

        try:
            settled = settle_into_ledger(result, ledger, storage_rate)
        except (ReplayLedgerError, LedgerError) as exc:
            _fail(f"--ledger: {exc}")
        except (OSError, sqlite3.Error) as exc:
            _fail(f"cannot write {ledger}: {getattr(exc, 'strerror', None) or exc}")
        sys.stderr.write(settled.line() + "\n")
    _show_summary(result, trades, as_json)
    note = _empty_or_garbage(result.summary(), "the bundled sample" if log is None else str(log))
    if note:
        sys.stderr.write(f"wattmesh: note: {note}\n")


def _open_log(log: Path | None) -> tuple[Path | RawIOBase | None, bool]:
    """The log to replay, and whether it is a node log (its first line says). A file is
    replayed from its path; a pipe (`/dev/stdin`, `<(...)`) can be read only once, so its
    first line, read to tell its kind, is given back ahead of the rest."""
    from wattmesh.exchange.replay.log_kind import ReadAgain, is_node_log, read_kind

    if log is None:
        return None, False
    try:
        if log.is_file():
            return log, is_node_log(log)
        fp = open(log, "rb")  # closed with the stream it becomes, or below
        node_log, head = read_kind(fp)
    except OSError as exc:
        _fail(f"cannot read {log}: {exc.strerror or exc}")
    if node_log:
        fp.close()
        _fail(f"{log} is a node log read from a pipe: replay it from its file (a node log "
              "is settled from the file wattmesh export-log writes)")  # fmt: skip
    return ReadAgain(head, fp), False


# The replay options a node log's community decides (docs/replay.md, "Node logs").
_COMMUNITY_RULED = ("mode", "interval_ms", "stp", "verify_signatures", "storage_rate",
                    "retail_price", "feedin_price")  # fmt: skip


def _write_tables(result: ReplayResult, trades: str | None, out: Path | None, fmt: str) -> None:
    """--trades and --out: each file whole or not at all."""
    if trades is None and out is None:
        return
    from wattmesh.exchange.replay import outputs

    try:
        if trades == "-":
            outputs.write_trades(result, sys.stdout.buffer)
            sys.stdout.flush()
        elif trades is not None:
            with atomic_output(trades) as fp:
                outputs.write_trades(result, fp)
        if out is not None:
            outputs.write_outputs(result, out, fmt)
    except OSError as exc:
        _fail(f"cannot write {exc.filename or trades or out}: {exc.strerror or exc}")


def _show_summary(result: ReplayResult, trades: str | None, as_json: bool) -> None:
    # The trades own stdout when they go there; the summary then goes to stderr.
    stream = sys.stderr if trades == "-" else sys.stdout
    summary = result.summary()
    if as_json:
        stream.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        stream.write(format_summary(summary))


def _replay_node_log(
    log: Path, trades: str | None, out: Path | None, fmt: str, as_json: bool, ledger: Path | None
) -> None:
    """Replay a node log (exchange/replay/node_log.py): settle it as its nodes did, write
    the same tables as an order log's, and say whether the ledger head is the node's."""
    import sqlite3

    from wattmesh.exchange.replay.node_log import (
        LedgerTargetError,
        NodeLogError,
        replay_node_log,
    )

    size = log.stat().st_size
    try:
        with progress_bar("replaying", size, show=size >= PROGRESS_MIN_BYTES,
                          in_bytes=True) as on_progress:  # fmt: skip
            done = replay_node_log(log, ledger, on_progress=on_progress)
    except LedgerTargetError as exc:
        _fail(f"--ledger: {exc}")
    except NodeLogError as exc:
        _fail(f"{log}: {exc}")
    except (OSError, sqlite3.Error) as exc:
        where = getattr(exc, "filename", None) or ledger or log
        _fail(f"{where}: {getattr(exc, 'strerror', None) or exc}")
    _write_tables(done.result, trades, out, fmt)
    sys.stderr.write(done.line(None if ledger is None else str(ledger)) + "\n")
    _show_summary(done.result, trades, as_json)


def _empty_or_garbage(summary: dict[str, Any], source: str) -> str | None:
    """One line when a log replayed nothing: empty, or not one line accepted."""
    if summary["events"] == 0:
        return f"{source} has no lines: nothing was replayed"
    if sum(summary["accepted"].values()) == 0:
        reasons = ", ".join(f"{c} {n:,}" for c, n in summary["refused_by_code"].items())
        return (f"not one of the {summary['events']:,} lines of {source} was accepted "
                f"({reasons}): is it an order log (docs/replay.md)? --strict stops at the "
                "first bad line and names it")  # fmt: skip
    return None


# wattmesh init, node, export-log, demo: the node's commands (exchange/cli/node.py) sit at
# the top level, as one group; a test checks these names against that group.
_NODE_COMMANDS = ("init", "node", "export-log", "demo")


def _new_root() -> typer.Typer:
    root = command_group("wattmesh: a peer-to-peer energy exchange for a neighbourhood.")
    root.callback()(_root)
    return root


def _mount(root: typer.Typer, only: str | None = None) -> bool:
    """Mount every command on ``root``, in the order the help lists them; with ``only``,
    just the top-level command or group of that name. Whether one was mounted.

    Each command's module is imported here, when it is mounted: a command line that names
    one command loads no other command's modules (the API client's, the meters', the
    simulations' cost 2 to 11 ms each)."""
    mounted = False

    def wanted(*names: str) -> bool:
        nonlocal mounted
        hit = only is None or only in names
        mounted = mounted or hit
        return hit

    if wanted("replay"):
        root.command()(replay)
    if wanted("simulate"):
        from wattmesh.exchange.cli.simulate_community import community
        from wattmesh.exchange.cli.simulate_gode_sunder import gode_sunder

        simulate = command_group(
            "Market simulations: Gode and Sunder's ZI markets, the Energo community."
        )
        simulate.command("gode-sunder")(gode_sunder)
        simulate.command("community")(community)
        root.add_typer(simulate, name="simulate")
    if wanted("sweep"):
        from wattmesh.exchange.cli.sweep import sweep

        root.command("sweep")(sweep)  # grids and samples of the above (docs/analysis.md)
    if wanted("ledger"):
        from wattmesh.exchange.cli.ledger import ledger_app

        root.add_typer(ledger_app, name="ledger")
    if wanted("meter"):
        from wattmesh.exchange.cli.meter import meter_app

        root.add_typer(meter_app, name="meter")
    if wanted("api"):
        from wattmesh.exchange.cli.api import api_app

        root.add_typer(api_app, name="api")
    if wanted("community"):
        from wattmesh.exchange.cli.community import community_app

        root.add_typer(community_app, name="community")
    if wanted("bot"):
        from wattmesh.exchange.cli.bot import bot

        root.command("bot")(bot)  # a trading bot through the node's API (docs/bots.md)
    if wanted("report"):
        from wattmesh.exchange.cli.report import report

        root.command("report")(report)  # an output folder as one HTML page (docs/analysis.md)
    if wanted(*_NODE_COMMANDS):
        from wattmesh.exchange.cli.node import node_app

        root.add_typer(node_app)
    return mounted


def _app_for(name: str) -> typer.Typer | None:
    """A root with only the command ``name`` mounted (None if there is none of that name).
    typer builds the parameters of every command mounted, about 30 ms for all of them:
    :func:`main` gives a command line that names a command a root with only that one."""
    root = _new_root()
    return root if _mount(root, name) else None


@functools.cache
def whole_tree() -> typer.Typer:
    """The root with every command mounted: the root's help, and names it does not know."""
    root = _new_root()
    _mount(root)
    return root


def __getattr__(name: str) -> typer.Typer:
    # `app` (the whole tree, for typer's CliRunner and the docs' tests) is built on first
    # use, so that importing this module for one command does not import every command.
    if name == "app":
        return whole_tree()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_summary(summary: dict[str, Any]) -> str:
    """The short human summary: events, fills, volume, VWAP and refusals by reason."""
    minutes = summary["interval_ms"] / 60_000
    span = f"{minutes:g}-minute intervals" if summary["mode"] == "call" else "continuous"
    accepted = summary["accepted"]
    vwap = summary["vwap"]
    price = "-" if vwap is None else f"{vwap:,} micro/kWh ({vwap / 1e6:.4f} per kWh)"
    refused = summary["refused_by_code"]
    reasons = ", ".join(f"{code} {count:,}" for code, count in refused.items())
    lines = [
        f"replayed {summary['events']:,} events, {summary['mode']} mode ({span})",
        f"accepted  {accepted['orders']:,} orders, {accepted['cancels']:,} cancels, "
        f"{accepted['accounts']:,} accounts",
        f"fills     {summary['fills']:,} in {summary['intervals']:,} intervals",
        f"volume    {summary['volume_wh']:,} Wh",
        f"vwap      {price}",
        f"refused   {summary['refused']:,}" + (f" ({reasons})" if reasons else ""),
    ]
    if summary.get("readings"):
        lines.insert(
            -1,
            f"readings  {summary['readings']:,} (grid: exported {summary['exported_wh']:,} Wh,"
            f" imported {summary['imported_wh']:,} Wh)",
        )
    slow = summary.get("python_path_lines", 0)
    if slow >= 1000 and slow * 20 >= summary["events"]:  # 5% or more of a big log: say why
        by_reason = sorted(summary["python_path_by_reason"].items(), key=lambda x: -x[1])
        why = ", ".join(f"{reason} {n:,}" for reason, n in by_reason)
        lines.insert(-1, f"python    {slow:,} lines ({slow / summary['events']:.0%}) took the "
                         f"slower Python path: {why}")  # fmt: skip
    return "\n".join(lines) + "\n"


# Commands that stop on SIGINT themselves, cleanly (a node closes its host and ledger).
_OWN_SIGNALS = ("node", "demo", "bot")
# Commands that talk to peers or to a node over sockets: SIGPIPE stays ignored for them.
_NETWORK = ("node", "demo", "bot", "api")
# Commands that talk to their own worker processes over pipes: a worker that died (a
# crashed point, or one ended by Ctrl-C) must be an error the command handles, not a
# SIGPIPE that ends it mid-write.
_WORKER_PIPES = ("sweep",)


class Interrupted(BaseException):
    """Ctrl-C in a command that writes files; a BaseException so that no ``except
    Exception`` (and not click, which turns KeyboardInterrupt into a blank line and
    "Aborted") catches it on the way out."""


def _interrupt(_signum: int, _frame: object) -> None:
    raise Interrupted()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``wattmesh`` console script.

    Errors (a wrong flag, a missing file, a bad line under --strict) are one line on
    stderr, ``wattmesh: error: ...``, and exit code 2.
    """
    args = sys.argv[1:] if argv is None else argv
    # A command line that names a command gets a root with only that command mounted (the
    # same usage lines and errors); the root's help, its options and unknown names get all.
    command = typer.main.get_command((_app_for(args[0]) if args else None) or whole_tree())
    previous = pipe = None
    if threading.current_thread() is threading.main_thread():
        if not args or args[0] not in _NETWORK + _WORKER_PIPES:
            # `wattmesh ... | head`: when the reader has all it wanted, end quietly, as
            # Unix tools do, instead of a "Broken pipe" error (an output file in
            # progress stays a temp file: atomic_file.py). Not for the commands that
            # talk to peers: a peer's closed socket must stay an error, not a signal.
            pipe = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        if not args or args[0] not in _OWN_SIGNALS:
            previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        code = command.main(args=args, prog_name="wattmesh", standalone_mode=False)
    except Interrupted:
        # Outputs are written whole or not at all (exchange/atomic_file.py): say which.
        sys.stderr.write(f"wattmesh: interrupted: {written_summary()}\n")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: a wrong flag, a missing file
        message = exc.format_message().strip()
        if message:  # (no message: the help was shown because no command was given)
            sys.stderr.write(f"wattmesh: error: {message}\n")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("wattmesh: aborted\n")
        sys.exit(1)
    except WattmeshError as exc:  # any of ours a command did not word itself: one line
        sys.stderr.write(f"wattmesh: error: {exc}\n")
        sys.exit(2)
    finally:
        if previous is not None:  # main() called in-process (tests): leave SIGINT as it was
            signal.signal(signal.SIGINT, previous)
        if pipe is not None:
            signal.signal(signal.SIGPIPE, pipe)
    if argv is None:
        # The console script exits next: the interpreter's final collection would walk
        # every object the command made (12-16 ms of a replay of a 300k-line log). Frozen
        # objects are left out of it, so an object in a reference cycle is not finalized
        # at exit: the commands close their stores and commit their outputs themselves.
        gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
