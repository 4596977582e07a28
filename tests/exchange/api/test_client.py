"""The asyncio client of the node's API (exchange/api/client.py): against a real ``wattmesh
node`` process (the ``live_street`` fixture), against a scripted transport for what a
live node does not show on demand (a reconnect, a rate limit, a proxy's error page), and
the complete bot of docs/api.md, run as it is printed there."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from wattmesh.exchange.api.client import (
    STREAM_OPENED,
    ApiError,
    ApiUnreachable,
    Event,
    NodeClient,
    TokenFileError,
    read_token,
)
from wattmesh.settlement.errors import WattmeshError

DOCS = Path(__file__).resolve().parents[3] / "docs" / "api.md"


@pytest_asyncio.fixture
async def alice(live_street) -> AsyncIterator[NodeClient]:
    async with NodeClient(live_street.url, live_street.token()) as node:
        yield node


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- reads and writes on a live node ------------------------------------------------------


@pytest.mark.asyncio
async def test_reads_status_balance_and_health(alice, live_street):
    status = await alice.status()
    assert status["community"]["name"] == "live-street" and status["members"] == 2
    clock = status["clock"]
    assert clock["interval_ms"] == live_street.interval_ms
    assert clock["open_interval"] % live_street.interval_ms == 0
    assert clock["open_interval"] > clock["now"]
    assert 0 <= clock["gate_in_s"] <= live_street.interval_s + 0.01
    balance = await alice.balance()
    assert balance["owner"] == status["peer_id"]
    assert balance["bmax"] == 10_000 and 0 < balance["energy"] <= 8_000
    assert balance["headroom"] == balance["bmax"] - balance["energy"]
    assert balance["money"] > 0
    # Pages: the newest first, then back from there; each page oldest first.
    newest = await alice.intervals(latest=True, limit=1)
    if newest["items"]:
        [last] = newest["items"]
        assert last["interval"] <= (await alice.status())["settled_through"]
        if newest["prev"] is not None:
            older = await alice.intervals(before=newest["prev"], limit=5)
            assert all(i["entry"] < last["entry"] for i in older["items"])
            assert [i["entry"] for i in older["items"]] == sorted(i["entry"]
                                                                  for i in older["items"])
    assert (await alice.health())["peer_id"] == status["peer_id"]
    assert (await alice.session())["level"] == "write"


@pytest.mark.asyncio
async def test_posted_order_is_in_orders_and_book_until_cancelled(alice, live_street):
    # One interval past the open one: its gate is at least an interval away, and at 0.90
    # per kWh it is above every bid, so it stays in the book while the test looks.
    t = (await alice.status())["clock"]["open_interval"] + live_street.interval_ms
    posted = await alice.post_order("ask", 900_000, 250, interval=t)
    assert posted["interval"] == t and len(posted["id"]) == 64
    mine = {o["id"]: o for o in await alice.orders()}
    assert {k: mine[posted["id"]][k] for k in ("side", "price", "qty", "interval")} == \
        {"side": "ask", "price": 900_000, "qty": 250, "interval": t}  # fmt: skip
    book = await alice.book(t)
    assert book["interval"] == t
    assert posted["id"] in [o["id"] for o in book["orders"]]
    assert any(level["price"] == 900_000 and level["qty"] >= 250 for level in book["depth"]["ask"])
    assert (await alice.balance())["committed_energy"] >= 250

    assert (await alice.cancel(posted["id"]))["cancelled"] == posted["id"]
    assert posted["id"] not in [o["id"] for o in await alice.orders()]
    assert posted["id"] not in [o["id"] for o in (await alice.book(t))["orders"]]


@pytest.mark.asyncio
async def test_a_batch_posts_all_its_orders_and_cancels_them(alice, live_street):
    t = (await alice.status())["clock"]["open_interval"] + live_street.interval_ms
    orders = [{"side": "ask", "price": 950_000, "qty": 100},
              {"side": "ask", "price": 960_000, "qty": 200}]  # fmt: skip
    posted = await alice.post_batch(orders, interval=t)
    assert posted["interval"] == t and len(posted["ids"]) == 2
    mine = {o["id"]: o for o in await alice.orders()}
    assert [(mine[i]["price"], mine[i]["qty"]) for i in posted["ids"]] == [
        (950_000, 100),
        (960_000, 200),
    ]
    await alice.post_batch([], cancels=posted["ids"], interval=t)
    assert not set(posted["ids"]) & {o["id"] for o in await alice.orders()}


@pytest.mark.asyncio
async def test_refusals_raise_api_error_with_the_code(alice, live_street):
    t = (await alice.status())["clock"]["open_interval"]
    with pytest.raises(ApiError) as price:
        await alice.post_order("ask", 0, 100)
    assert (price.value.status, price.value.code, price.value.field) == (422, "malformed", "price")
    with pytest.raises(ApiError) as late:
        await alice.post_order("bid", 100_000, 100, interval=t - 2 * live_street.interval_ms)
    assert (late.value.code, late.value.field) == ("late", "interval")
    with pytest.raises(ApiError) as unknown:
        await alice.cancel("ab" * 32)
    assert (unknown.value.status, unknown.value.code) == (404, "unknown-order")
    assert isinstance(unknown.value, WattmeshError)
    assert str(late.value).startswith("late (field interval): ")

    async with NodeClient(live_street.url, "not-the-token") as stranger:
        with pytest.raises(ApiError) as refused:
            await stranger.balance()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


@pytest.mark.asyncio
async def test_a_node_that_is_not_there_is_unreachable():
    url = f"http://127.0.0.1:{_free_port()}"
    async with NodeClient(url, "token", timeout=2) as node:
        with pytest.raises(ApiUnreachable) as gone:
            await node.status()
    assert isinstance(gone.value, WattmeshError) and isinstance(gone.value, ConnectionError)
    assert f"cannot reach the node's API at {url}" in str(gone.value)


def test_read_token_says_what_is_wrong_with_the_file(tmp_path):
    with pytest.raises(TokenFileError, match="no such token file"):
        read_token(tmp_path / "api-token")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TokenFileError, match="not a token file"):
        read_token(tmp_path / "empty")
    (tmp_path / "api-token").write_text("  s3cr3t-token\n")
    assert read_token(tmp_path / "api-token") == "s3cr3t-token"


# -- the event stream ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_events_bring_intervals_opening_and_settling(alice, live_street):
    seen: list[Event] = []
    async with asyncio.timeout(3 * live_street.interval_s + 5):
        async with aclosing(alice.events()) as events:
            async for event in events:
                seen.append(event)
                names = {e.name for e in seen}
                if {"interval-opened", "interval-settled"} <= names and seen[-1].name in (
                    "interval-opened", "interval-settled",
                ):  # fmt: skip
                    break
    assert seen[0] == Event(None, STREAM_OPENED, {"last_event_id": None})
    ids = [e.id for e in seen[1:]]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # the node counts up by one
    opened = next(e for e in seen if e.name == "interval-opened")
    settled = next(e for e in seen if e.name == "interval-settled")
    assert opened.data["interval"] % live_street.interval_ms == 0
    assert set(settled.data) >= {"interval", "price", "volume", "trades", "digest", "fills"}
    assert settled.data["interval"] < opened.data["interval"] + live_street.interval_ms


def _sse(*frames: str) -> bytes:
    return "".join(frames).encode()


@pytest.mark.asyncio
async def test_events_reconnect_with_last_event_id_and_parse_every_frame():
    requests: list[httpx.Request] = []
    bodies = [
        _sse("retry: 10\n\n", ": heartbeat\n\n",
             'id: 7\nevent: gate-passed\ndata: {"interval": 1}\n\n',
             'id: 8\nevent: split\ndata: {"a":\ndata: 1}\n\n'),
        _sse('id: 9\nevent: interval-opened\ndata: {"interval": 2}\n\n'),
    ]  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = bodies[min(len(requests), len(bodies)) - 1]
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    got: list[Event] = []
    async with NodeClient("http://node.test/", "tok", transport=httpx.MockTransport(answer)) as c:
        async with asyncio.timeout(5), aclosing(c.events()) as events:
            async for event in events:
                got.append(event)
                if len(got) == 5:
                    break
    assert got == [
        Event(None, STREAM_OPENED, {"last_event_id": None}),
        Event(7, "gate-passed", {"interval": 1}),
        Event(8, "split", {"a": 1}),
        Event(None, STREAM_OPENED, {"last_event_id": 8}),
        Event(9, "interval-opened", {"interval": 2}),
    ]
    assert requests[0].url == "http://node.test/api/v1/events"
    assert requests[0].headers["authorization"] == "Bearer tok"
    assert "last-event-id" not in requests[0].headers
    assert requests[1].headers["last-event-id"] == "8"


def _refusal(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "field": None,
                                                  "message": f"{code} here"}})  # fmt: skip


@pytest.mark.asyncio
async def test_a_full_stream_is_tried_again_and_a_refused_token_raises_at_once():
    calls: list[int] = []

    def full_then_open(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:  # every stream taken, for now
            return _refusal(503, "too-many-streams")
        return httpx.Response(200, content=_sse('id: 1\nevent: gate-passed\ndata: {}\n\n'),
                              headers={"content-type": "text/event-stream"})  # fmt: skip

    async with NodeClient("http://node.test", "tok",
                          transport=httpx.MockTransport(full_then_open)) as c:  # fmt: skip
        async with asyncio.timeout(10), aclosing(c.events()) as events:
            first = await anext(events)
    assert first == Event(None, STREAM_OPENED, {"last_event_id": None}) and len(calls) == 2

    async with NodeClient("http://node.test", "tok", transport=httpx.MockTransport(
            lambda _r: _refusal(401, "unauthorized"))) as c:  # fmt: skip
        with pytest.raises(ApiError) as refused:
            async with asyncio.timeout(5):
                async for _event in c.events():
                    pass
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")

    async with NodeClient("http://node.test", "tok", transport=httpx.MockTransport(
            lambda _r: _refusal(503, "too-many-streams"))) as c:  # fmt: skip
        with pytest.raises(ApiError) as full:
            async with asyncio.timeout(5):
                async for _event in c.events(reconnect_for=0.0):
                    pass
    assert (full.value.status, full.value.code) == (503, "too-many-streams")


@pytest.mark.asyncio
async def test_rate_limited_requests_are_sent_again_and_error_pages_become_api_errors():
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/balance"):
            if len(calls) == 1:
                return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {
                    "code": "rate-limited", "field": None, "message": "too many"}})  # fmt: skip
            return httpx.Response(200, json={"energy": 1})
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    async with NodeClient("127.0.0.1:9", "tok", transport=httpx.MockTransport(answer)) as c:
        assert c.url == "http://127.0.0.1:9"
        assert await c.balance() == {"energy": 1}
        with pytest.raises(ApiError) as proxy:
            await c.status()
    assert calls == ["/api/v1/balance", "/api/v1/balance", "/api/v1/status"]
    assert (proxy.value.status, proxy.value.code) == (502, "http-502")
    assert "Bad Gateway" in proxy.value.message


# -- the complete bot of docs/api.md -----------------------------------------------------


def docs_bot() -> str:
    """The Python block under "### A complete bot" in docs/api.md, as printed there."""
    section = DOCS.read_text().split("\n### A complete bot\n", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "docs/api.md: one Python block under 'A complete bot'"
    return blocks[0]


def test_the_docs_bot_is_about_thirty_lines_and_ruff_clean(tmp_path):
    import subprocess

    code = docs_bot()
    assert 25 <= len(code.splitlines()) <= 45
    path = tmp_path / "surplus_bot.py"
    path.write_text(code)
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    config = DOCS.parents[1] / "pyproject.toml"  # the project's rules, line length 100
    res = subprocess.run([str(ruff), "check", "--config", str(config), str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.asyncio
async def test_the_complete_bot_in_the_docs_posts_asks_the_node_accepts(alice, live_street,
                                                                        tmp_path):  # fmt: skip
    balance = await alice.balance()
    assert balance["energy"] - balance["committed_energy"] > 3_000, "alice has a surplus"
    path = tmp_path / "surplus_bot.py"
    path.write_text(docs_bot())
    accepted: list[str] = []

    async def listen() -> None:
        async for event in alice.events():
            if event.name == "own-accepted":
                accepted.append(event.data["id"])

    listener = asyncio.create_task(listen())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), live_street.url, str(live_street.token_file), "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 3 * live_street.interval_s + 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    try:
        assert proc.returncode == 0, err.decode()
        asks = [line for line in out.decode().splitlines() if line.startswith("ask ")]
        assert len(asks) == 2, out.decode()  # one per interval, alice having a surplus
        ids = [line.rsplit(": ", 1)[1] for line in asks]
        for line in asks:
            match = re.fullmatch(r"ask (\d+) Wh at (\d+): [0-9a-f]{64}", line)
            assert match is not None, line
            qty, price = int(match[1]), int(match[2])
            assert 0 < qty <= 1_000 and price > 0
        async with asyncio.timeout(2):  # the node said so on the stream before it answered
            while not set(ids) <= set(accepted):
                await asyncio.sleep(0.05)
    finally:
        listener.cancel()
        with suppress(asyncio.CancelledError):
            await listener
