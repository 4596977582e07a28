"""The API's gate, in front of every route: host, origin, size, credential and rate.

One ASGI middleware, so no route can forget a check (docs/api.md, "Who may do what"):

1. **Host.** The Host header must name this node: ``127.0.0.1``, ``localhost`` or ``[::1]``
   with the API's port, the address it listens on, or (listening on every address) any IP
   literal. A DNS name pointed at a loopback node by an attacker (DNS rebinding) is
   refused with ``bad-host``.
2. **Origin.** A request that carries ``Origin`` (browsers add it to cross-origin requests
   and to every write) must come from the node's own page: ``bad-origin`` otherwise. No
   CORS header is ever sent, so other pages cannot read answers either.
3. **Size and time.** A body above :data:`MAX_BODY_BYTES` is refused with ``too-large``
   (413) before the route sees it; one that has not all arrived within
   :data:`BODY_SECONDS` with ``slow-request`` (408), so a client cannot hold a
   connection by sending it a byte at a time.
4. **Credential.** ``Authorization: Bearer <token>`` or the page's session cookie. Reads
   need any credential, writes a full one (``forbidden`` for a read-only one; ending
   one's own session needs any); a page session's write must echo its CSRF token in
   ``X-CSRF-Token`` (``forbidden``). A changed token file ends every page session and
   unused login code. The page
   itself, its assets and the endpoints marked public (the health check, the OpenAPI
   document and the login: ``app.public_routes``) need none.
5. **Rate.** A token bucket per credential, and per client address for every request
   without a valid one (refused ones included): ``rate-limited`` (429, with Retry-After)
   above ``rate`` requests per second, bursts of twice that.

A refused request reaches no route, so it changes nothing. Only HTTP goes through: a
WebSocket is closed at once (the API has none), so no route can be reached unchecked.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, MutableMapping
from hashlib import sha256
from typing import Any

import trio

from wattmesh.exchange.api.refusal import ApiRefused, refusal_response
from wattmesh.exchange.api.tokens import WRITE, Access, Sessions, Tokens

__all__ = ["BODY_SECONDS", "COOKIE", "CSRF_HEADER", "MAX_BODY_BYTES", "Guard"]

MAX_BODY_BYTES = 64 * 1024  # a batch of the largest budget fits; nothing larger is needed
BODY_SECONDS = 10.0  # a request body must arrive whole within this
COOKIE = "wattmesh_session"
CSRF_HEADER = "x-csrf-token"
_READ_METHODS = ("GET", "HEAD")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _is_public(method: str, path: str, public: tuple[tuple[str, str], ...]) -> bool:
    """Whether (method, path) is one of ``public``: (method, path or a prefix ending in
    "/"; "/" itself is only the page)."""
    for m, p in public:
        if method == m and (path == p or (p.endswith("/") and p != "/" and path.startswith(p))):
            return True
    return False


def _allowed_hosts(host: str, port: int) -> tuple[set[str], bool]:
    """The Host header values this node answers to, and whether any IP literal goes
    (when it listens on every address, it cannot know which of its addresses is used)."""
    names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    wildcard = host in ("0.0.0.0", "::")
    if not wildcard:
        names.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return names, wildcard


def _ip_literal_host(value: str) -> bool:
    host = value.rsplit(":", 1)[0] if not value.startswith("[") else value[1:value.find("]")]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at


class Guard:
    """The ASGI middleware described in the module docstring. ``scope["state"]["access"]``
    is the request's :class:`Access` (None on a public route without credential)."""

    def __init__(
        self, app: ASGIApp, *, tokens: Tokens, sessions: Sessions, host: str, port: int,
        rate: int, public: tuple[tuple[str, str], ...],
        any_level: tuple[tuple[str, str], ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.app = app
        self.public = public
        self.any_level = any_level  # writes any credential may make (its own logout)
        self.generation = tokens.generation
        self.tokens, self.sessions = tokens, sessions
        self.port = port
        self.hosts, self.any_ip = _allowed_hosts(host, port)
        self.rate, self.burst = float(rate), float(2 * rate)
        self.clock = clock
        self.buckets: dict[str, _Bucket] = {}

    def set_port(self, port: int, host: str) -> None:
        """The port actually bound (a listen port of 0 picks one)."""
        self.port = port
        self.hosts, self.any_ip = _allowed_hosts(host, port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy: no WebSockets
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        try:
            access = self._check(scope)
            body = await self._read_body(scope, receive)
        except ApiRefused as refused:
            await self._refuse(refused, scope, receive, send)
            return
        scope.setdefault("state", {})["access"] = access
        sent = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then: http.disconnect, when the client goes

        await self.app(scope, replay, send)

    # -- the checks, in order --

    def _check(self, scope: Scope) -> Access | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.tokens.refresh() != self.generation:  # a token was rotated or removed
            self.generation = self.tokens.generation
            self.sessions.revoke_all()
        client = f"client:{(scope.get('client') or ('?', 0))[0]}"
        try:
            access = self._access(headers)
        except ApiRefused:  # a wrong token counts against its address
            self._take(client)
            raise
        self._take(access.key if access is not None else client)
        host = headers.get("host", "")
        if host not in self.hosts and not (self.any_ip and _ip_literal_host(host)):
            raise ApiRefused("bad-host", f"Host {host[:80]!r} does not name this node")
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            raise ApiRefused("bad-origin", f"requests from {origin[:80]!r} are not accepted")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            raise ApiRefused("too-large", f"the body is above {MAX_BODY_BYTES} bytes")
        method, path = scope["method"], scope["path"]
        public = _is_public(method, path, self.public)
        if access is None:
            if public:
                return None
            raise ApiRefused("unauthorized", "send Authorization: Bearer <token> or log in")
        if method not in _READ_METHODS and not public:
            if access.level != WRITE and (method, path) not in self.any_level:
                raise ApiRefused("forbidden", "this credential may read, not write")
            if access.csrf is not None and not hmac.compare_digest(
                headers.get(CSRF_HEADER, "").encode(), access.csrf.encode()
            ):
                raise ApiRefused("forbidden", "a page's write must carry its X-CSRF-Token")
        return access

    def _access(self, headers: dict[str, str]) -> Access | None:
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            level = self.tokens.access_of(token.strip()) if scheme.lower() == "bearer" else None
            if level is None:
                raise ApiRefused("unauthorized", "the bearer token is not valid (rotated?)")
            return Access(level, "token:" + sha256(token.strip().encode()).hexdigest()[:8])
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return self.sessions.access_of(value)  # an expired session: as none
        return None

    def _take(self, key: str) -> None:
        now = self.clock()
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= 4096:  # forget the idle: buckets full again by now
                self.buckets = {k: v for k, v in self.buckets.items()
                                if v.tokens + (now - v.at) * self.rate < self.burst}  # fmt: skip
            if len(self.buckets) >= 4096:  # all busy: keep the most recent half
                recent = sorted(self.buckets.items(), key=lambda kv: kv[1].at)[-2048:]
                self.buckets = dict(recent)
            b = self.buckets[key] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens < 1:
            raise ApiRefused("rate-limited", f"more than {self.rate:g} requests per second")
        b.tokens -= 1

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        with trio.move_on_after(BODY_SECONDS):
            return await self._read_whole_body(receive)
        raise ApiRefused("slow-request", f"the body did not arrive within {BODY_SECONDS:g} s")

    async def _read_whole_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiRefused("too-large", f"the body is above {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _refuse(self, refused: ApiRefused, scope: Scope, receive: Receive,
                      send: Send) -> None:  # fmt: skip
        headers = {"retry-after": "1"} if refused.code == "rate-limited" else None
        if refused.code == "slow-request":  # the rest of the body is not read: close
            headers = {"connection": "close"}
        await refusal_response(refused, headers)(scope, receive, send)
