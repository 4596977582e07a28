"""Run a household node as a process: ``wattmesh node`` (docs/node.md, "Running a node").

Loads the data directory's node.toml, community file, key, ledger and message store,
then runs :class:`~wattmesh.exchange.node.household.HouseholdNode` under trio until SIGINT or
SIGTERM, and closes it cleanly (peers see it leave within a fraction of a second).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import sys
from functools import partial
from pathlib import Path
from typing import IO

import trio

from wattmesh.exchange.community_file import load_community
from wattmesh.exchange.node.collector import QuietCollector
from wattmesh.exchange.node.config import ApiConfig, NodeConfig
from wattmesh.exchange.node.household import HouseholdNode
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.keys import load_key, peer_id_of
from wattmesh.settlement.ledger import Ledger

__all__ = ["NodeStartError", "check_port_free", "lock_data_dir", "open_node", "run_node"]

LOCK_FILE = "node.lock"


class NodeStartError(WattmeshError, ValueError):
    """The node cannot start (the message says why); nothing was changed."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data directory's lock for the life of the process (one node per data
    directory: two would write one ledger). Returns the open lock file; the lock goes
    when it is closed or the process ends, however it ends."""
    path = data_dir / LOCK_FILE
    try:
        fp = path.open("a+")
    except OSError as exc:
        raise NodeStartError(f"{path}: cannot open the lock file: {exc.strerror}") from None
    try:
        fcntl.flock(fp, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fp.seek(0)
        pid = fp.read().strip() or "unknown"
        fp.close()
        raise NodeStartError(
            f"{data_dir}: another node is running on this data directory (pid {pid}); stop it first"
        ) from None
    fp.seek(0)
    fp.truncate()
    fp.write(f"{os.getpid()}\n")
    fp.flush()
    return fp


def check_port_free(listen: str, option: str = "--listen or in node.toml") -> None:
    """Refuse a listen address whose TCP port another socket holds. py-libp2p binds with
    SO_REUSEPORT, so a second node on the same port would start and share it; a probe
    bind without that option fails if anyone is bound there."""
    parts = listen.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        return  # not a plain TCP address: libp2p reports its own errors
    host, port = parts[1], int(parts[3]) if parts[3].isdigit() else 0
    if port == 0:
        return
    family = socket.AF_INET if parts[0] == "ip4" else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NodeStartError(
                    f"{listen}: port {port} is already in use (another node or program"
                    f" listens there); choose another with {option}"
                ) from None
            raise NodeStartError(f"{listen}: cannot listen there: {exc.strerror}") from None


def _tcp(host: str, port: int) -> str:
    """The multiaddr of a TCP address, for check_port_free."""
    return f"/ip6/{host}/tcp/{port}" if ":" in host else f"/ip4/{host}/tcp/{port}"


def _setup_logging(level: str, log_file: Path | None, verbose: bool = False) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    # py-libp2p's lines are noise to a household (an INFO line every 10 s, an ERROR each
    # time a neighbour leaves), and the node reports what matters itself (status.json:
    # peers, refusals, transport counts): they go to our handlers only with --verbose.
    # Some of its modules set their own loggers' levels, so silence is a handler that
    # drops everything (not a level), and no propagation to ours.
    lib = logging.getLogger("libp2p")
    lib.propagate = False
    lib.handlers[:] = handlers if verbose else [logging.NullHandler()]
    lib.setLevel(logging.INFO if verbose else logging.CRITICAL)


def open_node(config: NodeConfig) -> HouseholdNode:
    """Build the node of a data directory (NodeStartError with one line if it cannot)."""
    community = load_community(config.community)
    key = load_key(config.key)
    me = peer_id_of(key)
    if community.member(me) is None:
        raise NodeStartError(
            f"{config.key}: {me} is not a member of {community.name} (run wattmesh init with "
            "the community file that lists it)"
        )
    if not config.ledger.is_file():
        raise NodeStartError(f"no ledger at {config.ledger}: run wattmesh init first")
    ledger = Ledger.open(config.ledger, create=False)
    if ledger.genesis() is None or ledger.genesis().get("community") != community.name:
        raise NodeStartError(f"{config.ledger} is not the ledger of {community.name}")
    meter_key = None
    if config.meter.source != "none":  # every meter signs with its own key
        meter_key = load_key(config.meter_key)
    store = MessageStore.open(config.store)
    return HouseholdNode(
        community,
        key,
        ledger,
        store,
        data_dir=config.data_dir,
        bot=config.bot,
        meter=config.meter,
        meter_key=meter_key,
    )


async def _serve(
    node: HouseholdNode, listen: str, bootstrap: tuple[str, ...], api: ApiConfig
) -> None:
    stop = trio.Event()
    log = logging.getLogger("wattmesh.node")
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    logging.getLogger("wattmesh.node").info(
                        "%s: stopping", signal.Signals(signum).name
                    )
                    stop.set()
                    return

        nursery.start_soon(on_signal)
        await nursery.start(partial(node.run, listen, bootstrap, stop=stop))
        node.listeners.append(QuietCollector())  # full collections only after settling
        api_scope = trio.CancelScope()
        if api.address is not None and node.data_dir is not None:
            from wattmesh.exchange.api.serve import serve_api

            async def serve(task_status: trio.TaskStatus[object]) -> None:
                with api_scope:
                    await serve_api(node, api, node.data_dir, task_status=task_status)  # type: ignore[arg-type]

            running = await nursery.start(serve)
            log.info("web page and API at %s; login code %s (once, within 10 minutes; "
                     "`wattmesh api login-code` makes another)", running.url,
                     running.login_code())  # fmt: skip
        await stop.wait()
        api_scope.cancel()  # the node's run() ends by itself: peers see it leave
        nursery.cancel_scope.deadline = trio.current_time() + 5


def run_node(
    config: NodeConfig,
    listen: str | None = None,
    bootstrap: tuple[str, ...] | None = None,
    api: ApiConfig | None = None,
    verbose: bool = False,
) -> None:
    """Run the node of ``config`` until SIGINT or SIGTERM; ``listen``, ``bootstrap`` and
    ``api`` override node.toml's. Raises NodeStartError (or the community file's, key's
    or ledger's own error) before anything runs."""
    lock = lock_data_dir(config.data_dir)
    try:
        address = listen or config.listen
        api = api if api is not None else config.api
        check_port_free(address)
        if api.address is not None:
            check_port_free(_tcp(*api.address), "--api-listen or [api] listen in node.toml")
        _setup_logging("debug" if verbose else config.log_level, config.data_dir / "node.log",
                       verbose)
        node = open_node(config)
        try:
            trio.run(
                _serve,
                node,
                address,
                tuple(config.bootstrap if bootstrap is None else bootstrap),
                api,
            )
        finally:
            node.store.close()
            node.ledger.close()
    finally:
        lock.close()
