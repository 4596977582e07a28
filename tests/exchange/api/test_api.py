"""The node's HTTP API against a real two-node street (docs/api.md): reads, writes that
are the gossip's messages, refusals with their codes, and the event stream.

Every refusal is checked for its code and status, and for changing nothing."""

from __future__ import annotations

import re

import orjson
import pytest
import trio

from wattmesh.exchange.api.guard import MAX_BODY_BYTES
from wattmesh.exchange.api.tokens import ensure_token, rotate_token
from wattmesh.exchange.node.config import load_node_config
from wattmesh.settlement.canonical import canonical
from wattmesh.settlement.records import Order
from wattmesh.settlement.refusals import codes_of

pytestmark = pytest.mark.anyio
API_CODES = set(codes_of("api"))


def refusal(response, status: int, code: str, field: str | None = "any") -> dict:
    """The refusal body of ``response``, checked for status, code (from the table) and
    field (unless "any")."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and code in API_CODES, error
    if field != "any":
        assert error["field"] == field, error
    assert error["message"]
    return error


async def state(s) -> tuple:
    """What a refusal must leave as it was: alice's open orders, and every message of hers
    her node holds (gossip would carry them). Not the ledger head or the open book: both
    move with the clock (an interval settles every 2 s)."""
    orders = (await s.client.get("/api/v1/orders")).json()
    held = sorted(m.id for t in s.alice.store.open_intervals() for m in s.alice.store.pending(t)
                  if m.signer == s.alice.peer_id)  # fmt: skip
    return orders, held


async def ahead(s) -> int:
    """An interval far enough from its gate for a test's few steps: the one after the open
    one (the open one's gate may pass between two requests)."""
    clock = (await s.client.get("/api/v1/status")).json()["clock"]
    return clock["open_interval"] + clock["interval_ms"]


async def test_reads_show_the_household_and_its_street(api_street):
    async with api_street() as s:
        status = (await s.client.get("/api/v1/status")).json()
        assert status["peer_id"] == s.alice.peer_id and status["peers"] == 1
        assert status["peer_ids"] == [s.bob.peer_id]
        assert status["names"] == {s.alice.peer_id: "alice", s.bob.peer_id: "bob"}
        assert status["community"]["price_max"] == s.alice.community.price_max
        assert status["community"]["interval_ms"] == 900_000
        clock = status["clock"]
        assert clock["open_interval"] > clock["now"] and clock["gate_in_s"] <= 2.0
        balance = (await s.client.get("/api/v1/balance")).json()
        assert (balance["energy"], balance["bmax"], balance["headroom"]) == (5_000, 10_000, 5_000)
        assert balance["money"] == 10**11
        head = (await s.client.get("/api/v1/ledger/head")).json()
        assert head["head"] == s.alice.ledger.head_text() and head["verified"]["ok"] is True
        health = (await s.client.get("/api/v1/health")).json()
        assert health == {"ok": True, "community": "api-street", "peer_id": s.alice.peer_id}


async def test_an_order_posted_is_gossiped_and_settles_against_a_neighbours(api_street):
    async with api_street() as s:
        t = await ahead(s)
        r = await s.client.post("/api/v1/orders", json={"side": "ask", "price": 150_000,
                                                        "qty": 800, "interval": t})  # fmt: skip
        assert r.status_code == 201, r.text
        posted = r.json()
        assert posted["interval"] == t
        mine = (await s.client.get("/api/v1/orders")).json()
        assert [o["id"] for o in mine] == [posted["id"]]
        book = (await s.client.get("/api/v1/book", params={"interval": t})).json()
        assert book["interval"] == t and book["depth"]["ask"] == [
            {"price": 150_000, "qty": 800, "cumulative": 800}
        ]
        assert book["quote"]["ask"] == book["executable_quote"]["ask"] == 150_000
        balance = (await s.client.get("/api/v1/balance")).json()
        assert balance["committed_energy"] == 800
        # The same message reached bob's node by gossip.
        await s.until(lambda: s.bob.store.order(posted["id"]) is not None, "bob holds it")
        bid = Order("energy", "bid", 250_000, 500, s.bob.peer_id, s.bob.community.now_ms(), t)
        await s.bob_posts(canonical(bid.signed(s.bob.key).to_dict()))
        await s.until(lambda: t in s.alice.closes, "the interval settled", 15)
        trades = (await s.client.get("/api/v1/trades", params={"interval": t})).json()
        [trade] = trades["items"]
        assert (trade["seller"], trade["buyer"], trade["qty"]) == (s.alice.peer_id,
                                                                   s.bob.peer_id, 500)
        assert trade["price"] == (150_000 + 250_000) // 2
        [iv] = (await s.client.get("/api/v1/intervals", params={"interval": t})).json()["items"]
        assert (iv["price"], iv["volume"], iv["digest"]) == (trade["price"], 500,
                                                             s.alice.closes[t][0])
        proof = (await s.client.get(f"/api/v1/ledger/proof/{trade['entry']}")).json()
        assert proof["entry"] == trade["entry"] and proof["interval"] == t
        savings = (await s.client.get("/api/v1/savings")).json()
        assert savings["sold"] == 500 and savings["received"] == 500 * trade["price"]


async def test_a_batch_and_a_cancel_are_one_signed_message_each(api_street):
    async with api_street() as s:
        t = await ahead(s)
        r = await s.client.post("/api/v1/batches", json={"interval": t, "orders": [
            {"side": "ask", "price": 140_000, "qty": 300},
            {"side": "ask", "price": 160_000, "qty": 200}]})  # fmt: skip
        assert r.status_code == 201, r.text
        ids = r.json()["ids"]
        assert sorted(o["id"] for o in (await s.client.get("/api/v1/orders")).json()) == sorted(ids)
        r = await s.client.delete(f"/api/v1/orders/{ids[0]}")
        assert r.status_code == 200, r.text
        assert [o["id"] for o in (await s.client.get("/api/v1/orders")).json()] == [ids[1]]
        book = (await s.client.get("/api/v1/book", params={"interval": t})).json()
        assert [o["id"] for o in book["orders"]] == [ids[1]]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"side": "ask", "price": 0, "qty": 100}, 422, "malformed", "price"),
        ({"side": "sell", "price": 1, "qty": 100}, 422, "malformed", "side"),
        ({"side": "ask", "price": "100", "qty": 100}, 422, "malformed", "price"),
        ({"side": "ask", "price": 100, "qty": 100, "extra": 1}, 422, "malformed", "extra"),
        ({"side": "ask", "price": 100, "qty": 100, "market": "heat"}, 422, "wrong-market",
         "market"),
        ({"side": "ask", "price": 100, "qty": 100, "interval": 0}, 422, "late", "interval"),
    ],
)  # fmt: skip
async def test_a_refused_order_names_its_code_and_field_and_changes_nothing(
    api_street, body, status, code, field
):
    async with api_street() as s:
        before = await state(s)
        refusal(await s.client.post("/api/v1/orders", json=body), status, code, field)
        assert await state(s) == before


async def test_refused_requests_change_nothing(api_street):
    async with api_street() as s:
        before = await state(s)
        refusal(await s.client.delete("/api/v1/orders/" + "ab" * 32), 404, "unknown-order")
        refusal(await s.client.post("/api/v1/orders", content=b"{not json",
                                    headers={"content-type": "application/json"}),
                422, "malformed")  # fmt: skip
        refusal(await s.client.get("/api/v1/nothing-here"), 404, "not-found")
        refusal(await s.client.get("/api/v1/ledger/proof/999999"), 404, "not-found", "entry")
        big = orjson.dumps({"orders": [{"side": "ask", "price": 1, "qty": 1}] * 5_000})
        assert len(big) > MAX_BODY_BYTES
        refusal(await s.client.post("/api/v1/batches", content=big,
                                    headers={"content-type": "application/json"}),
                413, "too-large")  # fmt: skip
        assert await state(s) == before


async def test_who_may_do_what(api_street):
    async with api_street() as s:
        before = await state(s)
        order = {"side": "ask", "price": 150_000, "qty": 100}
        async with s.anonymous() as anon:
            refusal(await anon.get("/api/v1/balance"), 401, "unauthorized")
            refusal(await anon.post("/api/v1/orders", json=order), 401, "unauthorized")
            assert (await anon.get("/api/v1/health")).status_code == 200
            assert (await anon.get("/")).status_code == 200  # the page's shell holds no data
            spec = (await anon.get("/api/v1/openapi.json")).json()
            assert {"/api/v1/orders", "/api/v1/events", "/api/v1/book"} <= set(spec["paths"])
        async with s.anonymous(authorization="Bearer wrong") as wrong:
            refusal(await wrong.get("/api/v1/status"), 401, "unauthorized")
        read = ensure_token(s.data_dir, read_only=True)
        async with s.anonymous(authorization=f"Bearer {read}") as reader:
            assert (await reader.get("/api/v1/balance")).status_code == 200
            refusal(await reader.post("/api/v1/orders", json=order), 403, "forbidden")
            refusal(await reader.put("/api/v1/bot", json={"enabled": True}), 403, "forbidden")
        # A rotated token stops working at once; the new one works.
        new = rotate_token(s.data_dir)
        refusal(await s.client.get("/api/v1/status"), 401, "unauthorized")
        s.client.headers["authorization"] = f"Bearer {new}"
        assert (await s.client.get("/api/v1/status")).status_code == 200
        assert await state(s) == before


async def test_other_origins_and_other_host_names_are_refused(api_street):
    async with api_street() as s:
        before = await state(s)
        order = {"side": "ask", "price": 150_000, "qty": 100}
        # A page of another origin, even with the token (a browser would send the cookie).
        r = await s.client.post("/api/v1/orders", json=order,
                                headers={"origin": "http://evil.example"})  # fmt: skip
        refusal(r, 403, "bad-origin")
        assert "access-control-allow-origin" not in r.headers
        # DNS rebinding: a name that resolves to 127.0.0.1 but is not this node's.
        port = s.base.rsplit(":", 1)[1]
        r = await s.client.get("/api/v1/balance", headers={"host": f"evil.example:{port}"})
        refusal(r, 400, "bad-host")
        # The node's own page is fine.
        r = await s.client.get("/api/v1/balance", headers={"origin": s.base})
        assert r.status_code == 200
        assert await state(s) == before


async def test_a_page_logs_in_with_a_one_time_code_and_writes_only_with_its_csrf_token(
    api_street,
):
    async with api_street() as s:
        code = (await s.client.post("/api/v1/login-codes")).json()["code"]
        async with s.anonymous() as page:
            refusal(await page.post("/api/v1/session", json={"code": "AAAA-AAAA"}), 401,
                    "unauthorized", "code")  # fmt: skip
            r = await page.post("/api/v1/session", json={"code": code})
            assert r.status_code == 200
            cookie = r.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            csrf = r.json()["csrf"]
            assert (await page.get("/api/v1/balance")).status_code == 200
            order = {"side": "ask", "price": 150_000, "qty": 100}
            refusal(await page.post("/api/v1/orders", json=order), 403, "forbidden")
            assert (await page.get("/api/v1/orders")).json() == []
            r = await page.post("/api/v1/orders", json=order, headers={"x-csrf-token": csrf})
            assert r.status_code == 201, r.text
        async with s.anonymous() as again:  # a code works once
            refusal(await again.post("/api/v1/session", json={"code": code}), 401,
                    "unauthorized")  # fmt: skip


async def test_the_rate_limit_refuses_a_burst_and_the_next_second_is_served(api_street):
    async with api_street(rate=5) as s:
        codes = [(await s.client.get("/api/v1/health")).status_code for _ in range(20)]
        assert codes[:10] == [200] * 10  # a burst of twice the rate
        assert 429 in codes[10:]
        r = await s.client.get("/api/v1/health")
        refusal(r, 429, "rate-limited")
        assert r.headers["retry-after"] == "1"
        await trio.sleep(1.0)
        assert (await s.client.get("/api/v1/health")).status_code == 200


async def test_the_bot_is_changed_at_run_time_and_saved_to_node_toml(api_street):
    async with api_street() as s:
        r = await s.client.put("/api/v1/bot", json={"enabled": True, "sell_price": 130_000,
                                                    "upper_wh": 3_000})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["sell_price"] == 130_000 and s.alice.bot is not None
        saved = load_node_config(s.data_dir).bot
        assert (saved.enabled, saved.sell_price, saved.upper_wh) == (True, 130_000, 3_000)
        toml = (s.data_dir / "node.toml").read_text()
        refusal(await s.client.put("/api/v1/bot", json={"lower_wh": 5_000}), 422, "malformed",
                "upper_wh")  # fmt: skip
        assert (s.data_dir / "node.toml").read_text() == toml
        assert (await s.client.get("/api/v1/bot")).json()["sell_price"] == 130_000
        # The bot posts its ask (5000 Wh held > 3000) for the next interval it reaches.
        await s.until(lambda: any(o["side"] == "ask" for o in _own(s)), "the bot's ask", 10)
        # Changing it again posts no second set for an interval it posted for.
        posted = {o["interval"] for o in _own(s)}
        for price in (131_000, 132_000):
            assert (await s.client.put("/api/v1/bot", json={"sell_price": price})).is_success
        await trio.sleep(0.2)  # its act() ran
        for t in posted:
            assert len([o for o in _own(s) if o["interval"] == t]) == 1, _own(s)
        r = await s.client.put("/api/v1/bot", json={"enabled": False})
        assert r.status_code == 200 and s.alice.bot is None
        assert load_node_config(s.data_dir).bot.enabled is False


def _own(s) -> list[dict]:
    from wattmesh.exchange.api.views import own_orders

    return own_orders(s.alice)


async def _events(s, client, until: set[str], seconds: float = 10) -> list[tuple[str, dict]]:
    """Read the event stream until every event name in ``until`` has come."""
    seen: list[tuple[str, dict]] = []
    with trio.fail_after(seconds):
        async with client.stream("GET", "/api/v1/events") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            name = None
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name is not None:
                    seen.append((name, orjson.loads(line[6:])))
                    if until <= {n for n, _ in seen}:
                        return seen
    return seen


async def test_the_event_stream_tells_a_bot_what_it_needs(api_street):
    async with api_street() as s:
        async with trio.open_nursery() as nursery:
            got: list = []

            async def listen() -> None:
                got.extend(await _events(s, s.client, {"interval-opened", "gate-passed",
                                                       "own-accepted", "own-refused",
                                                       "interval-settled"}))  # fmt: skip

            nursery.start_soon(listen)
            await s.until(lambda: s.api.hub.streams == 1, "the stream is open")
            r = await s.client.post("/api/v1/orders", json={"side": "ask", "price": 150_000,
                                                            "qty": 100})  # fmt: skip
            oid = r.json()["id"]
            await s.client.post("/api/v1/orders", json={"side": "ask", "price": 100,
                                                        "qty": 100, "interval": 0})  # fmt: skip
        accepted = next(d for n, d in got if n == "own-accepted")
        assert accepted["id"] == oid and accepted["kind"] == "order"
        assert accepted["orders"] == [oid] and accepted["cancels"] == []
        refused = next(d for n, d in got if n == "own-refused")
        assert refused["code"] == "late"
        settled = next(d for n, d in got if n == "interval-settled")
        assert {"interval", "price", "volume", "digest", "fills"} <= set(settled)
        opened = next(d for n, d in got if n == "interval-opened")
        gate = next(d for n, d in got if n == "gate-passed")
        assert opened["interval"] == gate["interval"] + s.alice.community.interval_ms
        # An interval's gate passes before it settles (the stream may open in between).
        for i, (name, data) in enumerate(got):
            if name == "gate-passed":
                assert ("interval-settled", data["interval"]) not in [
                    (n, d.get("interval")) for n, d in got[:i]]  # fmt: skip


async def test_the_number_of_streams_is_bounded(api_street):
    async with api_street(max_streams=1) as s, trio.open_nursery() as nursery:
        async def hold() -> None:
            async with s.client.stream("GET", "/api/v1/events") as r:
                async for _ in r.aiter_lines():
                    pass

        nursery.start_soon(hold)
        await s.until(lambda: s.api.hub.streams == 1, "one stream open")
        refusal(await s.client.get("/api/v1/events"), 503, "too-many-streams")
        nursery.cancel_scope.cancel()


def test_the_documented_statuses_are_the_apis():
    """docs/api.md's table of statuses is exchange/api/refusal.py's."""
    from pathlib import Path

    from wattmesh.exchange.api.refusal import HTTP_STATUS

    doc = (Path(__file__).resolve().parents[3] / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| (\d{3}) \| (.+?) \|$", doc, re.M)
    documented = {code: int(status) for status, codes in rows
                  for code in re.findall(r"`([a-z-]+)`", codes)}  # fmt: skip
    assert documented == HTTP_STATUS
    assert set(HTTP_STATUS) <= API_CODES


async def test_login_code_asks_the_running_node(api_street, cli):
    from wattmesh.exchange.node.config import ApiConfig, write_node_config

    async with api_street() as s:
        port = s.base.rsplit(":", 1)[1]
        write_node_config(s.data_dir, api=ApiConfig(f"127.0.0.1:{port}"))
        code, out, err = await trio.to_thread.run_sync(
            lambda: cli("api", "login-code", "--data-dir", s.data_dir))
        assert code == 0, err
        url, _, login = out.strip().partition("  login code ")
        assert url == f"{s.base}/"
        async with s.anonymous() as page:
            assert (await page.post("/api/v1/session", json={"code": login})).status_code == 200
        code, out, err = await trio.to_thread.run_sync(
            lambda: cli("api", "login-code", "--data-dir", s.data_dir, "--read-only"))
        assert code == 0, err
        async with s.anonymous() as page:
            r = await page.post("/api/v1/session", json={"code": out.split()[-1]})
            assert r.json()["level"] == "read"
            refusal(await page.post("/api/v1/orders", json={"side": "ask", "price": 1,
                    "qty": 1}, headers={"x-csrf-token": r.json()["csrf"]}), 403,
                    "forbidden")  # fmt: skip
        write_node_config(s.data_dir, api=ApiConfig("off"))
        code, _out, err = await trio.to_thread.run_sync(
            lambda: cli("api", "login-code", "--data-dir", s.data_dir))
        assert code == 1 and '"off"' in err


async def test_the_households_readings_are_shown_once_settled(api_street):
    from wattmesh.exchange.node.wire import READINGS
    from wattmesh.settlement.keys import peer_id_of
    from wattmesh.settlement.records import Reading

    async with api_street() as s:
        c = s.alice.community
        end = c.now_ms() - c.now_ms() % c.interval_ms  # the last boundary passed
        start = end - c.interval_ms
        meter = s.alice_meter
        reading = Reading(peer_id_of(meter), start, end, 700, 200, 1).signed(meter)
        await s.alice.submit(READINGS, canonical(reading.to_dict()))
        await s.until(lambda: s.alice.ledger.meter_seq(reading.meter) == 1, "it settled", 15)
        [shown] = (await s.client.get("/api/v1/readings")).json()["items"]
        assert {k: shown[k] for k in ("meter", "start", "end", "produced", "consumed", "seq")} \
            == {"meter": reading.meter, "start": start, "end": end, "produced": 700,
                "consumed": 200, "seq": 1}  # fmt: skip
        balance = (await s.client.get("/api/v1/balance")).json()
        assert balance["energy"] == 5_000 + 700 - 200


def test_the_openapi_document_is_the_route_table():
    """Every route is documented with its method, parameters and body; every reference in
    the document resolves; a route needing a credential says so."""
    from wattmesh.exchange.api.app import API, ENDPOINTS, openapi

    doc = openapi()
    assert doc["openapi"].startswith("3.")
    ops = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    assert ops == {(API + e.path, e.method) for e in ENDPOINTS}
    refs = re.findall(r'"\$ref": ?"#/components/schemas/(\w+)"', orjson.dumps(doc).decode())
    assert refs and set(refs) <= set(doc["components"]["schemas"])
    for e in ENDPOINTS:
        op = doc["paths"][API + e.path][e.method.lower()]
        assert ("security" in op) is (not e.public), e
        if e.body is not None:
            assert op["requestBody"]["required"] is True
        if e.query is not None:
            documented = {p["name"] for p in op["parameters"] if p["in"] == "query"}
            assert documented == set(e.query.__struct_fields__)
    order = doc["components"]["schemas"]["OrderIn"]
    assert order["required"] == ["side", "price", "qty"]
    assert order["properties"]["price"]["minimum"] == 1


async def test_pages_go_forward_from_the_oldest_and_backward_from_the_newest(api_street):
    async with api_street() as s:
        await s.until(lambda: len(s.alice.closes) >= 3, "three settled intervals", 20)
        want = [e.seq for e in s.alice.ledger.entries(kind="interval_close")]

        async def walk(params: dict, cursor: str, to: str) -> list[list[int]]:
            pages = []
            while True:
                r = (await s.client.get("/api/v1/intervals", params=params)).json()
                pages.append([i["entry"] for i in r["items"]])
                if r[cursor] is None:
                    return pages
                params = {**params, to: r[cursor]}
                params.pop("latest", None)

        # More intervals may settle while we walk: the walks start with what we know.
        forward = await walk({"limit": 1}, "next", "after")
        assert [e for p in forward for e in p][: len(want)] == want
        assert all(len(p) == 1 for p in forward[:-1])
        backward = await walk({"limit": 1, "latest": "true"}, "prev", "before")
        newest = [e for p in reversed(backward) for e in p]
        assert newest[: len(want)] == want
        assert all(p == sorted(p) for p in backward)  # each page oldest first
        assert backward[0][-1] == max(newest)  # the first backward page ends at the head
        refusal(await s.client.get("/api/v1/intervals", params={"after": 3, "latest": "true"}),
                422, "malformed", "after")  # fmt: skip
        refusal(await s.client.get("/api/v1/intervals", params={"limit": 0}), 422,
                "malformed", "limit")  # fmt: skip


async def test_a_neighbours_order_tells_the_stream_the_book_changed(api_street):
    async with api_street() as s, trio.open_nursery() as nursery:
        got: list = []

        async def listen() -> None:
            got.extend(await _events(s, s.client, {"book-changed"}))

        nursery.start_soon(listen)
        await s.until(lambda: s.api.hub.streams == 1, "the stream is open")
        clock = (await s.client.get("/api/v1/status")).json()["clock"]
        t = clock["open_interval"] + clock["interval_ms"]  # far from its gate
        bid = Order("energy", "bid", 250_000, 500, s.bob.peer_id, s.bob.community.now_ms(), t)
        await s.bob_posts(canonical(bid.signed(s.bob.key).to_dict()))
    assert ("book-changed", {"interval": t}) in got


async def test_odd_requests_are_refusals_not_errors(api_street):
    async with api_street() as s:
        before = await state(s)
        for path, code, field in (
            ("/api/v1/ledger/proof/%C2%B2", "malformed", "entry"),  # "²" is a digit to Python
            (f"/api/v1/trades?after={2**70}", "malformed", "after"),
            (f"/api/v1/intervals?before={2**70}", "malformed", "before"),
            ("/api/v1/book?interval=5", "malformed", "interval"),
            ("/api/v1/book?interval=0", "not-found", "interval"),  # settled long ago
            ("/api/v1/balance?x=1", "malformed", "x"),
            ("/api/v1/orders/", "not-found", None),  # no redirect to another path
        ):
            r = await s.client.get(path)
            refusal(r, 422 if code == "malformed" else 404, code, field)
        assert await state(s) == before


async def test_rotating_the_token_ends_the_pages_it_opened(api_street):
    async with api_street() as s:
        code = (await s.client.post("/api/v1/login-codes")).json()["code"]
        unused = (await s.client.post("/api/v1/login-codes")).json()["code"]
        async with s.anonymous() as page:
            assert (await page.post("/api/v1/session", json={"code": code})).is_success
            assert (await page.get("/api/v1/balance")).is_success
            new = rotate_token(s.data_dir)
            refusal(await page.get("/api/v1/balance"), 401, "unauthorized")
            refusal(await page.post("/api/v1/session", json={"code": unused}), 401,
                    "unauthorized")  # fmt: skip
        s.client.headers["authorization"] = f"Bearer {new}"
        assert (await s.client.get("/api/v1/balance")).is_success


async def test_a_read_only_page_can_log_out(api_street):
    async with api_street() as s:
        code = (await s.client.post("/api/v1/login-codes",
                                    params={"read_only": "true"})).json()["code"]  # fmt: skip
        async with s.anonymous() as page:
            csrf = (await page.post("/api/v1/session", json={"code": code})).json()["csrf"]
            refusal(await page.delete("/api/v1/session"), 403, "forbidden")  # no CSRF
            assert (await page.delete("/api/v1/session",
                                      headers={"x-csrf-token": csrf})).is_success  # fmt: skip
            refusal(await page.get("/api/v1/balance"), 401, "unauthorized")


async def test_refusals_count_against_the_client_address(api_street):
    async with api_street(rate=5) as s:
        async with s.anonymous(authorization="Bearer wrong") as wrong:
            codes = [(await wrong.get("/api/v1/status")).status_code for _ in range(20)]
        assert codes[:10] == [401] * 10 and 429 in codes[10:]


async def _raw(s, request: bytes) -> trio.SocketStream:
    host, port = s.base.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(request)
    return stream


async def test_a_stalled_body_is_refused_and_a_dropped_stream_frees_its_slot(api_street):
    from wattmesh.exchange.api import guard

    async with api_street(max_streams=1) as s:
        host = s.base.removeprefix("http://")
        guard_seconds, guard.BODY_SECONDS = guard.BODY_SECONDS, 0.5
        try:
            stream = await _raw(s, b"POST /api/v1/session HTTP/1.1\r\nHost: " + host.encode()
                                + b"\r\nContent-Length: 60000\r\n\r\n{")  # fmt: skip
            answer = b""
            with trio.fail_after(5):
                while b"slow-request" not in answer:
                    chunk = await stream.receive_some(4096)
                    assert chunk, answer  # the node must answer before closing
                    answer += chunk
            await stream.aclose()
        finally:
            guard.BODY_SECONDS = guard_seconds
        assert answer.startswith(b"HTTP/1.1 408") and b"slow-request" in answer
        # Streams whose clients leave at once, before a frame: the slot comes back.
        request = (b"GET /api/v1/events HTTP/1.1\r\nHost: " + host.encode()
                   + b"\r\nAuthorization: Bearer " + s.token.encode() + b"\r\n\r\n")
        for _ in range(4):
            await (await _raw(s, request)).aclose()
        await s.until(lambda: s.api.hub.streams == 0, "the slots freed", 5)
        async with s.client.stream("GET", "/api/v1/events") as r:
            assert r.status_code == 200


async def test_a_websocket_is_refused_before_any_route(api_street):
    async with api_street() as s:
        host = s.base.removeprefix("http://")
        stream = await _raw(s, b"GET /api/v1/events HTTP/1.1\r\nHost: " + host.encode()
                            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer "
                            + s.token.encode() + b"\r\n\r\n")  # fmt: skip
        with trio.fail_after(5):
            answer = await stream.receive_some(4096)
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 403"), answer
        assert s.api.hub.streams == 0


def test_docs_show_every_endpoint_by_example():
    """docs/api.md's "Every endpoint, by example" has one row per route of the table."""
    from pathlib import Path

    from wattmesh.exchange.api.app import ENDPOINTS

    doc = (Path(__file__).resolve().parents[3] / "docs" / "api.md").read_text()
    section = doc.split("## Every endpoint, by example", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"^\| `(GET|POST|PUT|DELETE) (/[^`]*)` \| `curl", section, re.M)
    assert sorted(shown) == sorted((e.method, e.path) for e in ENDPOINTS)
