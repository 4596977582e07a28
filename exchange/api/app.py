"""The node's HTTP API and web page: the routes (docs/api.md).

One table, :data:`ENDPOINTS`, says for every route its method, path, request types and
summary; the router, the request checks and the OpenAPI document are all made from it,
so the document cannot drift from what the node answers. Requests are checked by msgspec
against the same types the document describes.

Every route runs on the node's own trio thread (``async``, never a worker thread), so it
sees the node's state between two of the node's own steps. Every write is the message the
gossip carries, signed with the household key and admitted by the same rules
(:meth:`HouseholdNode.submit`). Who may call what is decided before any route by
:class:`~wattmesh.exchange.api.guard.Guard`.

Starlette and msgspec, not FastAPI and pydantic: the node keeps them in memory all day,
and importing them costs about 1 MB where FastAPI and pydantic cost 11.5 MB.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
import orjson
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wattmesh.exchange.api import views
from wattmesh.exchange.api.events import EventHub
from wattmesh.exchange.api.guard import COOKIE
from wattmesh.exchange.api.refusal import ApiRefused, refusal_response
from wattmesh.exchange.api.tokens import READ, WRITE, Sessions, Tokens
from wattmesh.exchange.node.config import NodeConfigError, save_bot_config
from wattmesh.exchange.node.household import HouseholdNode
from wattmesh.exchange.node.wire import ORDERS, Batch, Refused
from wattmesh.matching import MAX_PRICE, MAX_QTY
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.ledger import LedgerError
from wattmesh.settlement.records import Cancel, Order, RecordError

__all__ = ["API", "ENDPOINTS", "Endpoint", "any_level_routes", "make_app", "openapi",
           "public_routes"]  # fmt: skip

API = "/api/v1"

# -- what requests carry -----------------------------------------------------------------

Price = Annotated[int, msgspec.Meta(ge=1, le=MAX_PRICE, description="micro-currency per kWh")]
Qty = Annotated[int, msgspec.Meta(ge=1, le=MAX_QTY, description="Wh")]
Wh = Annotated[int, msgspec.Meta(ge=0, le=MAX_QTY, description="Wh")]
I64 = 2**63 - 1  # SQLite's and the records' largest integer
Interval = Annotated[int, msgspec.Meta(ge=0, le=I64, description="an interval's start, ms")]
Side = Literal["bid", "ask"]
Tif = Literal["gtc", "ioc"]


class OrderIn(msgspec.Struct, forbid_unknown_fields=True):
    """An order for the household. ``interval`` defaults to the open one (the next whose
    gate is ahead); ``market`` to the community's."""

    side: Side
    price: Price
    qty: Qty
    interval: Interval | None = None
    market: str | None = None
    tif: Tif = "gtc"


class BatchItem(msgspec.Struct, forbid_unknown_fields=True):
    """One order of a batch."""

    side: Side
    price: Price
    qty: Qty
    market: str | None = None
    tif: Tif = "gtc"


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Orders and cancels of the household for one interval, under one signature."""

    orders: list[BatchItem] = []
    cancels: list[str] = []
    interval: Interval | None = None


class BotIn(msgspec.Struct, forbid_unknown_fields=True):
    """The threshold bot's settings; fields left out keep their value."""

    enabled: bool | None = None
    buy_price: Price | None = None
    sell_price: Price | None = None
    lower_wh: Wh | None = None
    upper_wh: Wh | None = None


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    """A one-time login code (printed by the node), or a token typed into the page."""

    code: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    token: Annotated[str, msgspec.Meta(max_length=256)] | None = None


Limit = Annotated[int, msgspec.Meta(ge=1, le=views.MAX_PAGE)]
After = Annotated[int, msgspec.Meta(ge=0, le=I64, description="the `next` of the last page")]
Before = Annotated[int, msgspec.Meta(ge=1, le=I64, description="the `prev` of the last page")]


class BookQuery(msgspec.Struct, forbid_unknown_fields=True):
    interval: Interval | None = None


class PageQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Oldest first after ``after``; or the newest ``limit`` with ``latest`` (below the
    head) or ``before`` (below that entry)."""

    after: After = 0
    before: Before | None = None
    latest: bool = False
    limit: Limit = 100

    def page(self) -> views.Page:
        if self.after and (self.latest or self.before is not None):
            raise ApiRefused("malformed", "after pages forward; latest and before page "
                             "backward: give one", "after")  # fmt: skip
        return views.Page(self.after, self.before, self.latest, self.limit)


class IntervalsQuery(PageQuery, forbid_unknown_fields=True):
    interval: Interval | None = None


class TradesQuery(PageQuery, forbid_unknown_fields=True):
    interval: Interval | None = None
    mine: bool = False


class CodeQuery(msgspec.Struct, forbid_unknown_fields=True):
    read_only: bool = False


class Refusal(msgspec.Struct):
    """Every refusal's body: ``{"error": {"code", "field", "message"}}``."""

    error: dict[str, str | None]


# -- the route table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One route: what it takes and what it does (``summary`` is the OpenAPI summary)."""

    method: str
    path: str  # under API; {name} is a path parameter
    name: str  # the handler in make_app
    summary: str
    body: type | None = None
    query: type | None = None
    status: int = 200
    public: bool = False  # no credential needed
    any_level: bool = False  # a write that a read-only credential may make too
    stream: bool = False  # text/event-stream


ENDPOINTS = (
    Endpoint("GET", "/health", "health", "Whether the node is up", public=True),
    Endpoint("POST", "/session", "login", "Exchange a login code or token for the page's "
             "session cookie", body=LoginIn, public=True),
    Endpoint("GET", "/session", "session", "The caller's access level (and a page's CSRF "
             "token)"),
    Endpoint("DELETE", "/session", "logout", "End the page's session", any_level=True),
    Endpoint("POST", "/login-codes", "login_code", "A one-time login code for the page",
             query=CodeQuery),
    Endpoint("GET", "/status", "status", "Peer id, addresses, peers, settled-through, "
             "disputes, refusals, the clock"),
    Endpoint("GET", "/balance", "balance", "E, M, Bmax, headroom, what open orders commit"),
    Endpoint("GET", "/book", "book", "An unsettled interval's call auction: orders, depth, "
             "plain and executable quotes", query=BookQuery),
    Endpoint("GET", "/orders", "orders", "The household's open orders"),
    Endpoint("GET", "/trades", "trades", "Trades, oldest first, paged by ledger entry",
             query=TradesQuery),
    Endpoint("GET", "/intervals", "intervals", "Settled intervals: price, volume, trades, "
             "digest, agreement", query=IntervalsQuery),
    Endpoint("GET", "/readings", "readings", "The household's meter readings in the ledger",
             query=PageQuery),
    Endpoint("GET", "/savings", "savings", "Savings against the grid alone"),
    Endpoint("GET", "/ledger/head", "ledger_head", "The ledger's head and whether it "
             "verifies"),
    Endpoint("GET", "/ledger/proof/{entry}", "proof", "An inclusion proof of a ledger entry"),
    Endpoint("POST", "/orders", "post_order", "Post one order, signed by the node",
             body=OrderIn, status=201),
    Endpoint("POST", "/batches", "post_batch", "Post orders and cancels for one interval "
             "under one signature", body=BatchIn, status=201),
    Endpoint("DELETE", "/orders/{order_id}", "cancel", "Cancel an open order"),
    Endpoint("GET", "/bot", "get_bot", "The threshold bot's settings"),
    Endpoint("PUT", "/bot", "put_bot", "Change the threshold bot (or turn it off), saved to "
             "node.toml", body=BotIn),
    Endpoint("GET", "/events", "events", "Server-Sent Events: interval-opened, gate-passed, "
             "interval-settled, own-accepted, own-refused, peer-joined, peer-left, dispute",
             stream=True),
    Endpoint("GET", "/openapi.json", "openapi", "This document", public=True),
)  # fmt: skip


def any_level_routes() -> tuple[tuple[str, str], ...]:
    """(method, path) of the writes any credential may make."""
    return tuple((e.method, API + e.path) for e in ENDPOINTS if e.any_level)


def public_routes() -> tuple[tuple[str, str], ...]:
    """(method, path) pairs that need no credential: the public endpoints, the page and
    its assets (a path ending in "/" is a prefix, except "/" itself)."""
    return (("GET", "/"), ("GET", "/static/"),
            *((e.method, API + e.path) for e in ENDPOINTS if e.public))  # fmt: skip


# -- checking requests -------------------------------------------------------------------

_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED = re.compile(r"field `([^`]+)`")


def _malformed(exc: msgspec.MsgspecError) -> ApiRefused:
    """A request msgspec refused, as ``malformed`` naming the field."""
    text = str(exc)
    at = _AT.search(text)
    named = _NAMED.search(text)
    field = at.group(1) if at and at.group(1) else (named.group(1) if named else None)
    return ApiRefused("malformed", _AT.sub("", text), field or None)


def _decode(data: bytes, kind: type) -> Any:
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.MsgspecError as exc:
        raise _malformed(exc) from None


def _query(request: Request, kind: type) -> Any:
    try:
        return msgspec.convert(dict(request.query_params), kind, strict=False)
    except msgspec.MsgspecError as exc:
        raise _malformed(exc) from None


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


# -- the OpenAPI document -----------------------------------------------------------------


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ENDPOINTS` (served at /api/v1/openapi.json)."""
    types = sorted({t for e in ENDPOINTS for t in (e.body, e.query) if t is not None},
                   key=lambda t: t.__name__) + [Refusal]  # fmt: skip
    _, schemas = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        op: dict[str, Any] = {"operationId": e.name, "summary": e.summary}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"{(\w+)}", e.path)]  # fmt: skip
        if e.query is not None:
            props = schemas[e.query.__name__]["properties"]
            params += [{"name": n, "in": "query", "required": False, "schema": s}
                       for n, s in props.items()]  # fmt: skip
        if params:
            op["parameters"] = params
        if e.body is not None:
            ref = {"$ref": f"#/components/schemas/{e.body.__name__}"}
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": ref}}}  # fmt: skip
        media = "text/event-stream" if e.stream else "application/json"
        refusal = {"$ref": "#/components/schemas/Refusal"}
        op["responses"] = {
            str(e.status): {"description": "OK", "content": {media: {"schema": {}}}},
            "4XX": {"description": "refused: a code of docs/refusals.md",
                    "content": {"application/json": {"schema": refusal}}},
        }  # fmt: skip
        if not e.public:
            op["security"] = [{"token": []}, {"session": []}]
        paths.setdefault(API + e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "wattmesh node API", "version": "1",
                 "description": "A household node's API (docs/api.md). Units: Wh, "
                 "nano-currency, micro-currency per kWh, ms since the epoch."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "token": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": COOKIE}}},
    }  # fmt: skip


# -- the routes --------------------------------------------------------------------------


def make_app(node: HouseholdNode, tokens: Tokens, sessions: Sessions, hub: EventHub) -> Starlette:
    """The API of ``node`` (wrap it in :class:`~wattmesh.exchange.api.guard.Guard`)."""
    reader = views.LedgerReader(node.ledger)  # walks of the ledger, off the node's loop
    member = node.community.member(node.peer_id)
    meters = frozenset(m.meter for m in member.meters) if member is not None else frozenset()
    document = orjson.dumps(openapi())

    async def submit(kind: str, data: bytes) -> Any:
        try:
            return await node.submit(kind, data)
        except Refused as exc:
            raise ApiRefused(exc.reason, exc.detail) from None

    def record(build: Callable[[], Any]) -> Any:
        try:
            return build()
        except RecordError as exc:
            raise ApiRefused("malformed", exc.problem, exc.field) from None

    def open_or(interval: int | None) -> int:
        return views.open_interval(node) if interval is None else interval

    # Each handler takes (request, body or query or None) and returns JSON-ready data or a
    # Response; the names are ENDPOINTS' names.

    async def health(_r: Request, _x: None) -> Any:
        return {"ok": True, "community": node.community.name, "peer_id": node.peer_id}

    async def login(_r: Request, body: LoginIn) -> Any:
        level = None
        if body.code:
            level = sessions.redeem(body.code)
        elif body.token:
            level = tokens.access_of(body.token)
        if level is None:
            raise ApiRefused("unauthorized", "that login code or token is not valid",
                             "token" if body.token else "code")
        sid, csrf = sessions.open(level)
        response = _json({"level": level, "csrf": csrf})
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/",
                            max_age=7 * 24 * 3600)  # fmt: skip
        return response

    async def session(request: Request, _x: None) -> Any:
        access = request.scope["state"]["access"]
        return {"level": access.level, "csrf": access.csrf}

    async def logout(request: Request, _x: None) -> Any:
        sessions.close(request.cookies.get(COOKIE, ""))
        response = _json({"ok": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    async def login_code(_r: Request, q: CodeQuery) -> Any:
        return {"code": sessions.new_code(READ if q.read_only else WRITE)}

    async def status(_r: Request, _x: None) -> Any:
        return views.status(node)

    async def balance(_r: Request, _x: None) -> Any:
        return views.balance(node)

    async def book(_r: Request, q: BookQuery) -> Any:
        t = q.interval
        if t is not None and t % node.community.interval_ms:
            raise ApiRefused("malformed", f"{t} is not the start of an interval", "interval")
        if t is not None and t < node.next_unsettled():
            raise ApiRefused("not-found", f"interval {t} is settled: see /intervals and "
                             "/trades", "interval")  # fmt: skip
        return views.book(node, t)

    async def orders(_r: Request, _x: None) -> Any:
        return views.own_orders(node)

    async def trades(_r: Request, q: TradesQuery) -> Any:
        page, me = q.page(), node.peer_id
        return await reader.read(lambda led: views.trades(led, page, me, interval=q.interval,
                                                          mine=q.mine))  # fmt: skip

    async def intervals(_r: Request, q: IntervalsQuery) -> Any:
        page, s = q.page(), node.status
        mismatched, disputed = frozenset(s.mismatched), frozenset(s.disputed)
        return await reader.read(lambda led: views.intervals(
            led, page, interval=q.interval, mismatched=mismatched, disputed=disputed))

    async def readings(_r: Request, q: PageQuery) -> Any:
        page = q.page()
        return await reader.read(lambda led: views.readings(led, page, meters))

    async def savings(_r: Request, _x: None) -> Any:
        me = node.peer_id
        return await reader.per_head("savings", lambda led: views.savings(led, me))

    async def ledger_head(_r: Request, _x: None) -> Any:
        head = node.ledger.head_text()
        return {"head": head, "verified": await reader.per_head("verify", views.verification)}

    async def proof(request: Request, _x: None) -> Any:
        entry = request.path_params["entry"]
        if not (entry.isascii() and entry.isdigit() and len(entry) <= 18):
            raise ApiRefused("malformed", f"{entry[:40]!r} is not a ledger entry number",
                             "entry")  # fmt: skip
        try:
            return node.ledger.prove(int(entry))
        except LedgerError as exc:
            raise ApiRefused("not-found", str(exc), "entry") from None

    async def post_order(_r: Request, body: OrderIn) -> Any:
        c = node.community
        t = open_or(body.interval)
        order = record(lambda: Order(body.market or c.market, body.side, body.price, body.qty,
                                     node.peer_id, c.now_ms(), t, body.tif).signed(node.key))
        await submit(ORDERS, canonical(order.to_dict()))
        return {"id": order.id, "interval": t, "ts": order.ts}

    async def post_batch(_r: Request, body: BatchIn) -> Any:
        c = node.community
        t = open_or(body.interval)
        items = []
        for i in body.orders:
            item = {"market": i.market or c.market, "side": i.side, "price": i.price,
                    "qty": i.qty}  # fmt: skip
            if i.tif != "gtc":  # a batch writes the default by omission
                item["tif"] = i.tif
            items.append(item)
        batch = record(lambda: Batch.of(node.key, t, c.now_ms(), items, body.cancels))
        await submit(ORDERS, batch.message())
        return {"ids": [o.id for o in batch.orders], "interval": t, "ts": batch.ts}

    async def cancel(request: Request, _x: None) -> Any:
        order_id = request.path_params["order_id"]
        made = record(lambda: Cancel(order_id, node.peer_id, node.community.now_ms())
                      .signed(node.key))  # fmt: skip
        await submit(ORDERS, canonical(made.to_dict()))
        return {"cancelled": order_id, "ts": made.ts}

    async def get_bot(_r: Request, _x: None) -> Any:
        return dataclasses.asdict(node.bot_config)

    async def put_bot(_r: Request, body: BotIn) -> Any:
        changes = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
        try:
            config = dataclasses.replace(node.bot_config, **changes)
        except NodeConfigError as exc:
            field = (exc.key or "").removeprefix("bot.") or None
            raise ApiRefused("malformed", exc.problem, field) from None
        if node.data_dir is not None:
            save_bot_config(node.data_dir, config)
        node.set_bot(config)
        return dataclasses.asdict(config)

    async def events(_r: Request, _x: None) -> Any:
        return _EventStream(hub)

    async def openapi_document(_r: Request, _x: None) -> Any:
        return Response(document, media_type="application/json")

    handlers = {f.__name__: f for f in (
        health, login, session, logout, login_code, status, balance, book, orders, trades,
        intervals, readings, savings, ledger_head, proof, post_order, post_batch, cancel,
        get_bot, put_bot, events)}  # fmt: skip
    handlers["openapi"] = openapi_document
    routes: list[Route | Mount] = [
        Route(API + e.path, _endpoint(e, handlers[e.name]), methods=[e.method], name=e.name)
        for e in ENDPOINTS
    ]
    static = resources.files("wattmesh.exchange.api") / "static"

    async def page(_request: Request) -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html",
                        headers={"cache-control": "no-store"})  # fmt: skip

    routes += [Route("/", page, methods=["GET"]),
               Mount("/static", StaticFiles(directory=str(static)), name="static")]  # fmt: skip

    async def refused(_request: Request, exc: Exception) -> Response:
        return refusal_response(exc)  # type: ignore[arg-type]

    async def http_error(_request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 500)
        if code == 404:
            return refusal_response(ApiRefused("not-found", "no such endpoint"))
        if code == 405:
            return refusal_response(ApiRefused("not-found", "no such method on this endpoint"))
        return refusal_response(ApiRefused("malformed", str(getattr(exc, "detail", exc))))

    app = Starlette(routes=routes, exception_handlers={ApiRefused: refused,
                                                      HTTPException: http_error})  # fmt: skip
    app.router.redirect_slashes = False  # a wrong path is a refusal, not a redirect
    return app


class _EventStream(StreamingResponse):
    """The event stream of one client. Its slot in the hub is held for exactly as long as
    the response runs, however it ends (even a client gone before the first frame), and a
    client that stops reading is dropped after SEND_TIMEOUT seconds."""

    SEND_TIMEOUT = 30.0

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.number, receive = hub.open()  # too-many-streams here: nothing held yet
        super().__init__(hub.frames(self.number, receive), media_type="text/event-stream",
                         headers={"cache-control": "no-store"})  # fmt: skip

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def timed_send(message: Any) -> None:
            with trio.fail_after(self.SEND_TIMEOUT):
                await send(message)

        try:
            await super().__call__(scope, receive, timed_send)
        except trio.TooSlowError:
            pass  # the client stopped reading; hypercorn closes the connection
        finally:
            self.hub.close(self.number)


def _endpoint(e: Endpoint, handler: Callable[[Request, Any], Awaitable[Any]]) -> Callable:
    """The Starlette endpoint of ``e``: check the body or query, call, answer JSON."""

    async def run(request: Request) -> Response:
        arg = None
        if e.body is not None:
            arg = _decode(await request.body(), e.body)
        elif e.query is not None:
            arg = _query(request, e.query)
        elif request.query_params:
            name = next(iter(request.query_params))
            raise ApiRefused("malformed", f"unknown query parameter {name[:40]!r}", name[:40])
        result = await handler(request, arg)
        return result if isinstance(result, Response) else _json(result, e.status)

    return run
