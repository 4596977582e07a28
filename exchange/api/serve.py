"""Serving the API inside the node's ``trio.run``: Hypercorn's trio worker, beside the
libp2p host (docs/api.md). uvicorn is asyncio only, so it cannot share the node's loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from wattmesh.exchange.api.events import EventHub
from wattmesh.exchange.api.tokens import Sessions, Tokens, ensure_token
from wattmesh.exchange.node.config import ApiConfig
from wattmesh.exchange.node.household import HouseholdNode
from wattmesh.settlement.errors import WattmeshError

__all__ = ["ApiStartError", "RunningApi", "serve_api"]

logger = logging.getLogger("wattmesh.api")


class ApiStartError(WattmeshError, OSError):
    """The API cannot listen where it was told to (the message says why)."""


def _first(group: BaseExceptionGroup) -> OSError:
    """The first OSError of a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if isinstance(exc, OSError):
            return exc
    raise AssertionError("no OSError in the group")


@dataclass
class RunningApi:
    """A started API: its page address, its login codes, its event hub."""

    url: str  # e.g. http://127.0.0.1:8480/
    sessions: Sessions
    hub: EventHub

    def login_code(self) -> str:
        """A fresh one-time login code for the page."""
        return self.sessions.new_code()


async def serve_api(
    node: HouseholdNode,
    config: ApiConfig,
    data_dir: Path,
    *,
    task_status: trio.TaskStatus[RunningApi] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``node``'s API until cancelled; ``task_status.started`` gets the
    :class:`RunningApi` once it listens. Makes the API token if the data directory has
    none (a data directory made before the API existed)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from wattmesh.exchange.api.app import any_level_routes, make_app, public_routes
    from wattmesh.exchange.api.guard import Guard

    address = config.address
    assert address is not None, "the API is off"
    host, port = address
    ensure_token(data_dir)
    tokens, sessions, hub = Tokens(data_dir), Sessions(), EventHub(config.max_streams)
    guard = Guard(make_app(node, tokens, sessions, hub), tokens=tokens, sessions=sessions,
                  host=host, port=port, rate=config.rate, public=public_routes(),
                  any_level=any_level_routes())  # fmt: skip
    node.listeners.append(hub.publish)
    hc = Config()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("wattmesh.api.server")
    hc.graceful_timeout = 1.0
    # Not hc.read_timeout: it would also end every event stream whose client sends
    # nothing; a stalled request body is the Guard's to time out (BODY_SECONDS).
    try:
        async with trio.open_nursery() as nursery:
            try:
                binds = await nursery.start(serve, guard, hc)
            except* OSError as group:  # raised inside Hypercorn's own nurseries
                exc = _first(group)
                raise ApiStartError(
                    f"api.listen {config.listen}: cannot listen there: {exc.strerror or exc} "
                    "(another program uses the port? set [api] listen or --api-listen)"
                ) from None
            bound = int(binds[0].rsplit(":", 1)[1])
            guard.set_port(bound, host)
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            shown = f"[{shown}]" if ":" in shown else shown
            running = RunningApi(f"http://{shown}:{bound}/", sessions, hub)
            nursery.start_soon(hub.tick, node.community)
            nursery.start_soon(hub.flush)
            task_status.started(running)
    finally:
        if hub.publish in node.listeners:
            node.listeners.remove(hub.publish)
