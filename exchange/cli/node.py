"""The household node's commands (docs/node.md): ``wattmesh init`` sets up a data
directory, ``wattmesh node`` runs the node in it, ``wattmesh demo`` runs a small community
of nodes on this machine.

Mounted by the main CLI with ``app.add_typer(node_app)``: without a name, typer puts these
commands at the top level (``wattmesh init``, not ``wattmesh node init``). The work is in
``wattmesh.exchange.node.config``, ``node_process`` and ``demo``; this module parses
options and prints. Errors are one ``wattmesh: error: ...`` line and exit code 1.

Exit codes of ``init``: 0 the node is set up (its ledger exists), 2 the household's key is
not a member of the community (the message says what to send to whom), 1 a bad community
file, key or data directory (nothing changed).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from wattmesh.exchange.cli.terminal import command_group, fail
from wattmesh.exchange.node.defaults import default_data_dir
from wattmesh.settlement.errors import WattmeshError

node_app = command_group(
    "The household node: set up its data directory (init), run it (node), or run a "
    "small community of nodes on this machine (demo).",
    no_args_is_help=False,
)

EXIT_NOT_MEMBER = 2  # init: the key is not a member (errors exit 1)


@node_app.command()
def init(
    community: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            show_default=False,
            help="The community file (TOML, docs/node.md) from whoever keeps it (required).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            show_default=False,
            help="The node's data directory. Default: $XDG_DATA_HOME/wattmesh, else "
            "~/.local/share/wattmesh.",
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            metavar="KEYFILE",
            show_default=False,
            help="Use this household key (a libp2p Ed25519 key file, mode 0600) instead of "
            "making a new one; it is copied into the data directory.",
        ),
    ] = None,
) -> None:
    """Set up this household's node: key, community file, node.toml and ledger.

    Safe to run again: it keeps the key, the household's edits to node.toml and the
    ledger, and refuses (changing nothing) a community file other than the one the ledger
    was made from. Exit code 2 when the key is not a member of the community yet.
    """
    from wattmesh.exchange.node.config import init_data_dir

    if community is None:  # checked here, not by click, so that it exits 1 like other errors
        fail("--community FILE is required (the community file, docs/node.md)", code=1)
    target = data_dir if data_dir is not None else default_data_dir()
    try:
        result = init_data_dir(community, target, key_path=key)
    except WattmeshError as exc:  # a bad community file, node.toml, key or ledger
        fail(str(exc), code=1)
    except (OSError, sqlite3.Error) as exc:
        where = getattr(exc, "filename", None) or target
        fail(f"cannot write {where}: {getattr(exc, 'strerror', None) or exc}", code=1)
    typer.echo(result.message)
    if result.member:  # the node's page and API need a token; made once, kept after
        from wattmesh.exchange.api.tokens import TOKEN_FILE, ensure_token

        had = (result.data_dir / TOKEN_FILE).is_file()
        ensure_token(result.data_dir)
        what = "kept" if had else "created"
        typer.echo(f"{what:<9}{result.data_dir / TOKEN_FILE} (the API token: wattmesh api "
                   "token prints it)")  # fmt: skip
    if not result.member:
        raise typer.Exit(EXIT_NOT_MEMBER)


@node_app.command()
def node(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            show_default=False,
            help="The node's data directory (made by wattmesh init).",
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            metavar="MULTIADDR",
            show_default=False,
            help="Where to listen, e.g. /ip4/0.0.0.0/tcp/4001 (default: node.toml).",
        ),
    ] = None,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option(
            metavar="MULTIADDR",
            show_default=False,
            help="A peer to dial, ending in /p2p/<peer id>; repeat for more "
            "(default: node.toml's list).",
        ),
    ] = None,
    api_listen: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            show_default=False,
            help='Where the web page and API listen, or "off" (default: node.toml\'s [api] '
            "listen, 127.0.0.1:8480).",
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log at debug level, py-libp2p's own lines too."),
    ] = False,
) -> None:
    """Run this household's node until Ctrl-C (SIGINT) or SIGTERM.

    It gossips orders, readings and interval digests with its peers, settles every
    interval into its ledger after reconciling with them, and writes status.json and
    node.log in the data directory.
    """
    from wattmesh.exchange.node.config import (
        ApiConfig,
        load_node_config,
        parse_bootstrap,
        parse_listen,
    )
    from wattmesh.exchange.node.process import run_node

    target = data_dir if data_dir is not None else default_data_dir()
    try:
        config = load_node_config(target)
        if bootstrap:
            parse_bootstrap(bootstrap)
        if listen is not None:
            parse_listen(listen)
        api = None
        if api_listen is not None:
            api = ApiConfig(api_listen, config.api.rate, config.api.max_streams)
        run_node(config, listen, tuple(bootstrap) if bootstrap else None, api, verbose)
    except ValueError as exc:  # CommunityError, NodeConfigError, NodeStartError, LedgerError
        fail(str(exc), code=1)
    except OSError as exc:
        fail(f"{getattr(exc, 'filename', None) or target}: {exc.strerror or exc}", code=1)


@node_app.command("export-log")
def export_log(
    out: Annotated[
        str,
        typer.Option(metavar="FILE", show_default=False,
                     help="Where to write the log ('-': stdout)."),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            show_default=False,
            help="The node's data directory (default: the one wattmesh node uses).",
        ),
    ] = None,
) -> None:  # fmt: skip
    """Write what this node settled as a log that `wattmesh replay` replays.

    The log holds the community, then for every settled interval the orders, cancels and
    meter readings of its certified set (as signed) and its certificate. Replaying it
    rebuilds the node's trades and the same ledger head (docs/replay.md, "Node logs").
    The node may be running: its files are only read.
    """
    from wattmesh.exchange.atomic_file import atomic_output
    from wattmesh.exchange.replay.node_log import export_log as write_log

    target = data_dir if data_dir is not None else default_data_dir()
    try:
        if out == "-":
            summary = write_log(target, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            with atomic_output(out) as fp:
                summary = write_log(target, fp)
    except (ValueError, sqlite3.Error) as exc:  # NodeConfigError, CommunityError, NodeLogError
        fail(str(exc), code=1)
    except OSError as exc:  # the data directory's files are checked above: this is --out
        fail(f"cannot write {out}: {exc.strerror or exc}", code=1)
    sys.stderr.write(summary.line("stdout" if out == "-" else out) + "\n")


@node_app.command()
def demo(
    households: Annotated[
        int, typer.Option(min=2, metavar="N", help="How many household nodes to run.")
    ] = 4,
    hours: Annotated[
        int, typer.Option(min=1, metavar="H", help="Hours of 15-minute intervals to settle.")
    ] = 2,
    seconds_per_interval: Annotated[
        float,
        typer.Option(
            min=0.5,
            metavar="S",
            help="Wall seconds per 15-minute interval (the community clock's speed).",
        ),
    ] = 2.5,
    seed: Annotated[int, typer.Option(help="Seed of the households' meters and bots.")] = 0,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            file_okay=False,
            show_default=False,
            help="Keep the nodes' data directories in DIR (new or empty). Default: a "
            "temporary directory, removed at the end.",
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary directory at the end.")
    ] = False,
    linger: Annotated[
        bool,
        typer.Option(
            "--linger",
            help="Keep the community running after the last interval until Ctrl-C, so that "
            "you can open the nodes' web pages; then check and report as usual.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the result as one JSON object instead of tables."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", file_okay=False, show_default=False,
            help="Also write intervals.csv, households.csv, nodes.csv and summary.json to "
            "DIR (units in the column names).",
        ),
    ] = None,
) -> None:
    """Run a small community of real nodes on this machine and check their ledgers.

    Starts one `wattmesh node` process per household on 127.0.0.1, with simulated meters
    and threshold bots, on an accelerated clock from a sunny June morning; once every node
    has settled the last interval it stops them, verifies every ledger, compares the
    interval digests and reports prices, volumes and each household's savings against the
    grid alone. Each node serves its web page on its own port; the demo prints the pages'
    addresses with a login code each. Exit code 0 when every ledger verifies and all
    digests agree, else 1.
    """
    import signal as signals

    from rich.console import Console

    from wattmesh.exchange.demo.report import (
        demo_json,
        demo_tables,
        format_interval,
        format_report,
    )
    from wattmesh.exchange.demo.run import DemoError, run_demo
    from wattmesh.exchange.tables import write_tables

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # stop the nodes on the way out, as for Ctrl-C

    signals.signal(signals.SIGTERM, on_term)

    try:
        result = run_demo(
            households,
            hours,
            seconds_per_interval=seconds_per_interval,
            seed=seed,
            directory=data_dir,
            keep=keep,
            # With --json stdout carries the one object: progress goes to stderr.
            on_line=lambda line: typer.echo(line, err=as_json),
            on_interval=lambda iv: typer.echo(format_interval(iv), err=as_json),
            linger=linger,
        )
    except KeyboardInterrupt:
        sys.stderr.write("wattmesh: interrupted; every node was stopped\n")
        raise typer.Exit(130) from None
    except DemoError as exc:
        where = f" (data kept in {exc.root})" if exc.root is not None else ""
        sys.stderr.write(f"wattmesh: error: {exc}{where}\n")
        for line in exc.tail:
            sys.stderr.write(f"  | {line}\n")
        raise typer.Exit(1) from None
    except WattmeshError as exc:  # a bad community file, node.toml, key or ledger
        fail(str(exc), code=1)
    if out is not None:
        try:
            write_tables(out, *demo_tables(result))
        except OSError as exc:
            fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}", code=1)
    if as_json:
        sys.stdout.write(orjson.dumps(demo_json(result), option=orjson.OPT_SORT_KEYS).decode())
        sys.stdout.write("\n")
    else:
        console = Console()
        for part in format_report(result):
            console.print(part, soft_wrap=isinstance(part, str))  # sentences: one line each
    where = f"; data kept in {result.root}" if result.kept else ""
    if not result.ok:
        fail("; ".join(result.problems) + where, code=1)
    typer.echo(
        f"ok: {len(result.nodes)} nodes, {len(result.intervals)} intervals, "
        f"{result.wall_seconds:.0f} s{where}",
        err=as_json,
    )
