"""The asyncio client of a node's HTTP API, for bots (docs/bots.md, docs/api.md).

::

    async with NodeClient("http://127.0.0.1:8480", read_token(path)) as node:
        print(await node.balance())
        posted = await node.post_order("ask", 150_000, 800)
        async for event in node.events():
            ...

Every method is one request (``events`` is one long one) and returns the API's JSON as
it is: Wh, nano-currency, micro-currency per kWh, community ms. A refusal raises
:class:`ApiError` with the API's code; a node that cannot be reached raises
:class:`ApiUnreachable`; both are :class:`~wattmesh.settlement.errors.WattmeshError`
(one line of text each).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict

import httpx
import orjson

from wattmesh.settlement.errors import WattmeshError

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "Balance",
    "Event",
    "NodeClient",
    "OrderItem",
    "Posted",
    "PostedBatch",
    "STREAM_OPENED",
    "TokenFileError",
    "read_token",
]

API = "/api/v1"
STREAM_OPENED = "stream-opened"  # the client's own event: the stream (re)connected
RATE_RETRIES = 3  # a rate-limited request is tried again this often (it changed nothing)
# The node sends a heartbeat every 15 s; three missed ones mean the connection is dead.
STREAM_READ_TIMEOUT = 45.0

Side = Literal["bid", "ask"]


class ApiError(WattmeshError):
    """The node refused a request: HTTP ``status``, the refusal ``code`` (settlement/
    refusals.py, path ``api``; ``http-<status>`` for an answer that is no refusal), the
    request ``field`` it is about (or None) and the node's one-line ``message``."""

    def __init__(self, status: int, code: str, field: str | None, message: str) -> None:
        where = f" (field {field})" if field else ""
        super().__init__(f"{code}{where}: {message}")
        self.status, self.code, self.field, self.message = status, code, field, message


class ApiUnreachable(WattmeshError, ConnectionError):
    """No answer from the node's API (not running, wrong address, connection lost)."""


class TokenFileError(WattmeshError, ValueError):
    """A token file that cannot be used (missing, unreadable, empty)."""


def read_token(path: str | Path) -> str:
    """The API token in ``path`` (``api-token`` in the node's data directory), or
    :class:`TokenFileError` saying why there is none."""
    path = Path(path).expanduser()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TokenFileError(
            f"{path}: no such token file (it is api-token in the node's data directory; "
            "`wattmesh api token` prints it)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise TokenFileError(f"{path}: cannot read the token file: {reason}") from None
    if not token or any(c.isspace() for c in token):
        raise TokenFileError(f"{path}: not a token file (expected one line with the token)")
    return token


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the stream: its ``id`` (counting up by one at the node; None for the
    client's own :data:`STREAM_OPENED`), its ``name`` and its JSON ``data``."""

    id: int | None
    name: str
    data: dict[str, Any]


class Balance(TypedDict):
    """``GET balance``: Wh, nano-currency."""

    owner: str
    energy: int
    money: int
    bmax: int
    headroom: int
    committed_energy: int
    committed_money: int


class OrderItem(TypedDict):
    """One order of a batch: price in micro-currency per kWh, qty in Wh."""

    side: Side
    price: int
    qty: int


class Posted(TypedDict):
    """``POST orders``: the order's id, its interval and its signed ts."""

    id: str
    interval: int
    ts: int


class PostedBatch(TypedDict):
    """``POST batches``: the orders' ids (in the batch's order), interval and ts."""

    ids: list[str]
    interval: int
    ts: int


def _api_error(response: httpx.Response) -> ApiError:
    """The ApiError of a 4xx/5xx answer (its refusal body, or the status alone)."""
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, str(error["code"]), error.get("field"),
                        str(error.get("message", "")))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, f"http-{response.status_code}", None, text)


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters without the ones left at None (booleans as the API spells them)."""
    return {k: (str(v).lower() if isinstance(v, bool) else v)
            for k, v in params.items() if v is not None}  # fmt: skip


class NodeClient:
    """A client of one node's API (``url``: what the node prints, e.g.
    ``http://127.0.0.1:8480/``), sending ``token`` as a bearer token. Use it as an async
    context manager; ``transport`` is for tests (an ``httpx`` transport)."""

    def __init__(
        self, url: str, token: str, *, timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        base = url.strip().rstrip("/")
        base = base.removesuffix(API)  # the API's own address works too
        if not base.startswith(("http://", "https://")):
            base = "http://" + base  # "127.0.0.1:8480", as node.toml writes it
        self.url = base
        self._http = httpx.AsyncClient(
            base_url=base + API, timeout=timeout, transport=transport,
            headers={"authorization": f"Bearer {token}", "accept": "application/json"},
        )  # fmt: skip

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (the context manager does it)."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, *, json: Any = None,
                       params: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        for attempt in range(RATE_RETRIES + 1):
            try:
                response = await self._http.request(method, path, json=json,
                                                    params=_clean(params or {}))  # fmt: skip
            except httpx.TransportError as exc:
                raise ApiUnreachable(self._unreachable(exc)) from None
            if response.status_code == 429 and attempt < RATE_RETRIES:
                # A refused request reached no route, so sending it again is safe.
                await asyncio.sleep(min(5.0, float(response.headers.get("retry-after", 1))))
                continue
            if response.status_code >= 400:
                raise _api_error(response)
            return response.json()
        raise AssertionError("not reached")  # the last attempt returns or raises

    def _unreachable(self, exc: Exception) -> str:
        reason = str(exc) or type(exc).__name__
        return f"cannot reach the node's API at {self.url}: {reason}"

    # -- reads --

    async def health(self) -> dict[str, Any]:
        """``{"ok", "community", "peer_id"}`` (needs no credential)."""
        return await self._request("GET", "/health")

    async def session(self) -> dict[str, Any]:
        """The token's access: ``{"level": "write" | "read", ...}``."""
        return await self._request("GET", "/session")

    async def status(self) -> dict[str, Any]:
        """Peer id, peers, settled-through, refusals and ``clock`` (``now``,
        ``interval_ms``, ``open_interval``, ``gate_in_s``)."""
        return await self._request("GET", "/status")

    async def balance(self) -> Balance:
        """The household's energy, money, Bmax, headroom and open commitments."""
        return await self._request("GET", "/balance")

    async def book(self, interval: int | None = None) -> dict[str, Any]:
        """The call auction of an unsettled interval (default: the open one)."""
        return await self._request("GET", "/book", params={"interval": interval})

    async def orders(self) -> list[dict[str, Any]]:
        """The household's open orders."""
        return await self._request("GET", "/orders")

    async def trades(self, interval: int | None = None, *, after: int = 0, limit: int = 100,
                     mine: bool = False, latest: bool = False,
                     before: int | None = None) -> dict[str, Any]:  # fmt: skip
        """One page of trades, oldest first: ``{"items", "next", "prev"}``. Forward from
        ``after`` (pass ``next`` as ``after``), or the newest ``limit`` with ``latest``
        or below ``before`` (pass ``prev`` as ``before``)."""
        params = {"interval": interval, "limit": limit, "mine": mine,
                  **_page(after, latest, before)}  # fmt: skip
        return await self._request("GET", "/trades", params=params)

    async def intervals(self, interval: int | None = None, *, after: int = 0,
                        limit: int = 100, latest: bool = False,
                        before: int | None = None) -> dict[str, Any]:  # fmt: skip
        """One page of settled intervals, paged as :meth:`trades`."""
        params = {"interval": interval, "limit": limit, **_page(after, latest, before)}
        return await self._request("GET", "/intervals", params=params)

    async def readings(self, *, after: int = 0, limit: int = 100, latest: bool = False,
                       before: int | None = None) -> dict[str, Any]:  # fmt: skip
        """One page of the household's meter readings, paged as :meth:`trades`."""
        params = {"limit": limit, **_page(after, latest, before)}
        return await self._request("GET", "/readings", params=params)

    async def savings(self) -> dict[str, Any]:
        """The household against its grid-alone twin."""
        return await self._request("GET", "/savings")

    async def ledger_head(self) -> dict[str, Any]:
        """The ledger's head and whether it verifies."""
        return await self._request("GET", "/ledger/head")

    async def bot(self) -> dict[str, Any]:
        """The node's own threshold bot's settings."""
        return await self._request("GET", "/bot")

    # -- writes --

    async def post_order(self, side: Side, price: int, qty: int, interval: int | None = None,
                         tif: Literal["gtc", "ioc"] = "gtc",
                         market: str | None = None) -> Posted:  # fmt: skip
        """Post one order (price in micro-currency per kWh, qty in Wh) for ``interval``
        (default: the open one)."""
        body = _clean({"side": side, "price": price, "qty": qty, "interval": interval,
                       "tif": tif, "market": market})  # fmt: skip
        return await self._request("POST", "/orders", json=body)

    async def post_batch(self, orders: Iterable[OrderItem | Mapping[str, Any]],
                         cancels: Iterable[str] = (),
                         interval: int | None = None) -> PostedBatch:  # fmt: skip
        """Post orders and cancels for one interval (default: the open one) under one
        signature: all are admitted or none."""
        body = _clean({"orders": [dict(o) for o in orders], "cancels": list(cancels),
                       "interval": interval})  # fmt: skip
        return await self._request("POST", "/batches", json=body)

    async def cancel(self, order_id: str) -> dict[str, Any]:
        """Cancel one of the household's open orders: ``{"cancelled", "ts"}``."""
        return await self._request("DELETE", f"/orders/{order_id}")

    async def set_bot(self, **changes: Any) -> dict[str, Any]:
        """Change the node's own threshold bot (``enabled``, ``buy_price``,
        ``sell_price``, ``lower_wh``, ``upper_wh``); returns its new settings."""
        return await self._request("PUT", "/bot", json=changes)

    # -- the stream --

    async def events(self, *, reconnect_for: float = 60.0) -> AsyncIterator[Event]:
        """The node's events, as they happen, for as long as the caller iterates.

        A lost connection is opened again after the node's retry delay, with
        ``Last-Event-ID``; each time the stream opens (the first time too) the iterator
        yields ``Event(None, STREAM_OPENED, {"last_event_id": ...})`` first, so a bot can
        look at the state it may have missed (the node does not replay events; an id
        that skips shows that some were missed). A refusal that passes (all streams
        taken, the rate, a 5xx) is retried like a lost connection. Raises
        :class:`ApiUnreachable` after ``reconnect_for`` seconds without a connection (or
        that refusal's :class:`ApiError`), and :class:`ApiError` at once for any other
        refusal (the token). Close it with ``contextlib.aclosing`` when leaving early.
        """
        last_id: int | None = None
        retry = 2.0
        down_since: float | None = None
        headers = {"accept": "text/event-stream", "cache-control": "no-store"}
        timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT)
        while True:
            if last_id is not None:
                headers["last-event-id"] = str(last_id)
            try:
                async with self._http.stream("GET", "/events", headers=headers,
                                             timeout=timeout) as response:  # fmt: skip
                    if response.status_code >= 400:
                        await response.aread()
                        error = _api_error(response)
                        if error.code not in PASSING and response.status_code < 500:
                            raise error
                        raise _Passing(error)
                    down_since = None
                    yield Event(None, STREAM_OPENED, {"last_event_id": last_id})
                    parser = _SseParser()
                    async for line in response.aiter_lines():
                        frame = parser.feed(line)
                        if frame is None:
                            continue
                        if frame.retry is not None:
                            retry = frame.retry / 1000
                        if frame.event is None:
                            continue
                        if frame.id is not None:
                            last_id = frame.id
                        yield frame.event
            except (httpx.TransportError, httpx.StreamError, _Passing) as exc:
                now = time.monotonic()
                down_since = now if down_since is None else down_since
                if now - down_since >= reconnect_for:
                    if isinstance(exc, _Passing):
                        raise exc.error from None
                    raise ApiUnreachable(self._unreachable(exc)) from None
            # The stream ended (the node closed it) or broke: open it again, after a pause.
            await asyncio.sleep(retry)


def _page(after: int, latest: bool, before: int | None) -> dict[str, Any]:
    """A page's cursor parameters, only those given (the API refuses after with either
    of the others)."""
    if latest or before is not None:
        return {"latest": latest or None, "before": before}
    return {"after": after}


# Refusals of the stream that pass by themselves: retried, not raised at once.
PASSING = ("too-many-streams", "rate-limited")


class _Passing(WattmeshError):  # a signal inside events(), never raised out of it
    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Frame:
    id: int | None = None
    retry: int | None = None  # ms
    event: Event | None = None


class _SseParser:
    """Server-Sent Events frames from a stream's lines (the WHATWG rules, less what the
    node never sends): ``feed`` each line, get a frame at each blank line."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.data: list[str] = []

    def feed(self, line: str) -> _Frame | None:
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self.data.append(value)
            else:
                self.fields[name] = value
            return None
        fields, data = self.fields, self.data
        self.fields, self.data = {}, []
        frame = _Frame()
        if fields.get("id", "").isdigit():
            frame.id = int(fields["id"])
        if fields.get("retry", "").isdigit():
            frame.retry = int(fields["retry"])
        if data:
            payload = orjson.loads("\n".join(data))
            frame.event = Event(frame.id, fields.get("event", "message"), payload)
        return frame
