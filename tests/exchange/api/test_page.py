"""The household's web page (exchange/api/static, docs/dashboard.md) in a real browser:
Debian's Chromium driven by Playwright against alice's API on a street of two real nodes
(conftest.py; one 15-minute interval lasts 2 wall seconds).

The tests are plain functions: Playwright's sync API refuses to run inside an event loop,
so the nodes run under trio in a thread of their own (:class:`Served`) and the browser is
driven from the test's thread. Every wait is bounded; a page that did not follow the event
stream would time out waiting for a settled interval or a trade.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Locator, Page, expect

from wattmesh.exchange.api import views
from wattmesh.exchange.api.tokens import READ
from wattmesh.exchange.node.wire import Batch, Refused

# WATTMESH_SCREENSHOTS=1 writes the screenshots of docs/dashboard.md into docs/img; a
# plain run leaves the checkout as it was.
DOCS_IMG = Path(__file__).parents[3] / "docs" / "img"
SCREENSHOTS = os.environ.get("WATTMESH_SCREENSHOTS") == "1"
STARTUP_S = 30  # two nodes, a gossip mesh and the API
LIFETIME_S = 180  # the street stops by itself after this, whatever the test does
JOIN_S = 15
WAIT_MS = 5000  # most waits: a few intervals of 2 s


class Served:
    """The ``api_street`` setting served by a trio thread until :meth:`stop`."""

    def __init__(self, api_street: Callable[..., Any], *, bob_trades: bool) -> None:
        self._api_street = api_street
        self._bob_trades = bob_trades
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="api-street", daemon=True)
        self.url = ""
        self.code = ""
        self.read_code = ""
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start the street; returns once alice's API listens."""
        self._thread.start()
        if not self._ready.wait(STARTUP_S):
            raise AssertionError(f"the street did not start within {STARTUP_S} s")
        if self.error is not None:
            error, self.error = self.error, None  # raised once, here
            raise error

    def stop(self) -> None:
        """Stop the street and join its thread (also after a failed test)."""
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        self._thread.join(JOIN_S)
        assert not self._thread.is_alive(), f"the street did not stop within {JOIN_S} s"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to the test's thread by start() or stop()
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        with trio.fail_after(LIFETIME_S):
            # The API's default rate (20 per second): the page must live within it.
            async with self._api_street(rate=20) as s:
                self.url, self.code = s.api.url, s.api.login_code()
                self.read_code = s.api.sessions.new_code(READ)
                self._stop = trio.Event()
                self._token = trio.lowlevel.current_trio_token()
                async with trio.open_nursery() as nursery:
                    if self._bob_trades:
                        nursery.start_soon(_bob_trades, s)
                    self._ready.set()
                    await self._stop.wait()
                    nursery.cancel_scope.cancel()


async def _bob_trades(s: Any) -> None:
    """bob bids in every interval, one interval ahead so his orders are in the book when it
    opens, at prices that move. While he holds no energy he also asks below his bids: an
    order he cannot honour, so the plain quote crosses and the executable one does not."""
    bob, c = s.bob, s.bob.community
    posted: set[int] = set()
    while True:
        open_t = views.open_interval(bob)
        for t in (open_t, open_t + c.interval_ms):
            if t in posted:
                continue
            posted.add(t)
            top = 190_000 + 10_000 * (t // c.interval_ms % 4)
            items = [
                {"market": c.market, "side": "bid", "price": top, "qty": 600},
                {"market": c.market, "side": "bid", "price": top - 30_000, "qty": 400},
            ]
            if bob.ledger.balances().get(bob.peer_id, {}).get("energy", 0) == 0:
                items.append({"market": c.market, "side": "ask", "price": 100_000, "qty": 800})
            with contextlib.suppress(Refused):  # late: the gate passed meanwhile
                await s.bob_posts(Batch.of(bob.key, t, c.now_ms(), items).message())
        await trio.sleep(0.1)


@dataclass
class Browser:
    """A page in a fresh Chromium profile, with every URL it requested and its errors."""

    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_only(self, base: str) -> None:
        """Nothing went anywhere but the node (no CDN, no font, no telemetry)."""
        assert self.requests, "the page requested nothing?"
        elsewhere = [u for u in self.requests if not u.startswith(base)]
        assert not elsewhere, f"requests to other hosts: {elsewhere}"
        assert not self.errors, f"script errors: {self.errors}"


def _served(api_street: Callable[..., Any], *, bob_trades: bool) -> Iterator[Served]:
    served = Served(api_street, bob_trades=bob_trades)
    try:
        served.start()
        yield served
    finally:
        served.stop()


@pytest.fixture
def street(api_street: Callable[..., Any]) -> Iterator[Served]:
    """alice's API with bob trading against her."""
    yield from _served(api_street, bob_trades=True)


@pytest.fixture
def quiet_street(api_street: Callable[..., Any]) -> Iterator[Served]:
    """alice's API, nobody trading."""
    yield from _served(api_street, bob_trades=False)


@pytest.fixture
def browser(chromium_context: Any) -> Iterator[Browser]:
    """Chromium, headless, in a fresh profile (the root conftest's ``chromium_context``)."""
    context = chromium_context
    page = context.pages[0] if context.pages else context.new_page()
    b = Browser(page)
    context.on("request", lambda r: b.requests.append(r.url))
    page.on("pageerror", lambda e: b.errors.append(str(e)))
    yield b


def _screenshot(target: Page | Locator, name: str, **options: Any) -> None:
    """Write a screenshot for docs/dashboard.md when asked (SCREENSHOTS)."""
    if not SCREENSHOTS:
        return
    data = target.screenshot(**options)
    with contextlib.suppress(OSError):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        (DOCS_IMG / name).write_bytes(data)


def _submit_order(page: Page, side: str, price: str, qty: str, ahead: int = 0) -> None:
    page.select_option("#order-side", side)
    page.select_option("#order-interval", str(ahead))
    page.fill("#order-price", price)
    page.fill("#order-qty", qty)
    page.click("#order-form button[type=submit]")


def _posted_id(page: Page, before: str) -> str:
    """The id of the order the form just posted (the result line names it)."""
    page.wait_for_function(
        "b => (document.querySelector('#order-result').dataset.id || '') !== b",
        arg=before,
        timeout=WAIT_MS,
    )
    oid = page.locator("#order-result").get_attribute("data-id")
    assert oid
    return oid


def test_page_without_login_shows_only_the_login_form(
    quiet_street: Served, browser: Browser
) -> None:
    """No session: the login form, no data, no stream; then a read-only session."""
    page = browser.page
    page.goto(quiet_street.url)
    expect(page.locator("#login-panel")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#login-code")).to_be_editable()
    expect(page.locator("#dashboard")).to_be_hidden()
    for data in ("#balance-energy", "#money", "#savings", "#health", "#events"):
        expect(page.locator(data)).to_be_empty()
    _screenshot(page, "dashboard-login.png", clip={"x": 0, "y": 0, "width": 1280, "height": 420})
    # It asked the node only whether it has a session: no data, no event stream.
    api = sorted({u.split("?")[0] for u in browser.requests if "/api/" in u})
    assert api == [quiet_street.url + "api/v1/session"]
    # A wrong code is refused where the household can see it, and still shows no data.
    page.fill("#login-code", "AAAA-AAAA")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("unauthorized", timeout=WAIT_MS)
    expect(page.locator("#dashboard")).to_be_hidden()
    expect(page.locator("#balance-energy")).to_be_empty()

    # A read-only code (an auditor's second screen): the data, but no forms that write.
    page.fill("#login-code", quiet_street.read_code)
    page.click("#login button[type=submit]")
    expect(page.locator("#balance-energy")).to_have_text("5.00 kWh of 10.00 kWh", timeout=WAIT_MS)
    expect(page.locator("#order-form")).to_be_hidden()
    expect(page.locator("#bot-form")).to_be_hidden()
    expect(page.locator("#login-error")).to_be_empty()
    browser.assert_only(quiet_street.url)


def test_dashboard_logs_in_follows_the_stream_and_posts_orders(
    street: Served, browser: Browser
) -> None:
    """Log in with the code; live intervals; post, see, cancel; a refusal; trades; bot."""
    page = browser.page
    page.goto(street.url)
    page.fill("#login-code", street.code)
    page.click("#login button[type=submit]")
    expect(page.locator("#dashboard")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#login-panel")).to_be_hidden()
    expect(page.locator("#balance-energy")).to_have_text("5.00 kWh of 10.00 kWh", timeout=WAIT_MS)
    expect(page.locator("#money")).to_have_text("100.00")
    expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    expect(page.locator("#health")).to_contain_text("1 of 1 other members (bob)")  # its name

    # A settled interval arrives through the stream, without a reload (which would lose
    # the marker): the page only refetches what an event says changed.
    page.evaluate("window.sameLoad = true")
    page.wait_for_selector("#intervals[data-loaded]", state="attached", timeout=WAIT_MS)
    seen = int(page.locator("#intervals").get_attribute("data-count") or 0)
    page.wait_for_function(
        "n => Number(document.querySelector('#intervals').dataset.count) > n",
        arg=seen,
        timeout=WAIT_MS,
    )
    expect(page.locator("#events")).to_contain_text("settled")
    expect(page.locator("#interval-table tbody tr[data-interval]").first).to_be_visible()
    assert page.evaluate("window.sameLoad === true")

    # An ask for the open interval, posted just after it opened so its gate is 2 s away:
    # it shows in the book and among the household's orders.
    opened = page.evaluate("document.body.dataset.open")
    page.wait_for_function("o => document.body.dataset.open !== o", arg=opened, timeout=WAIT_MS)
    _submit_order(page, "ask", "0.15", "0.5")
    ask = _posted_id(page, "")
    expect(page.locator(f'#book-orders tr[data-id="{ask}"]')).to_contain_text("0.1500/kWh")
    expect(page.locator(f'#orders tr[data-id="{ask}"]')).to_contain_text("0.50 kWh")
    # bob's ask below it cannot execute (he holds nothing): the plain quote shows it, the
    # executable quote shows alice's.
    quote = page.locator("#quote tbody tr")
    expect(quote.nth(0)).to_contain_text("0.1000/kWh")
    expect(quote.nth(1)).to_contain_text("0.1500/kWh")
    _screenshot(page.locator("#book"), "dashboard-book.png")

    # A bid three intervals ahead, then cancelled with its button.
    _submit_order(page, "bid", "0.05", "0.2", ahead=3)
    bid = _posted_id(page, ask)
    row = page.locator(f'#orders tr[data-id="{bid}"]')
    expect(row).to_contain_text("0.0500/kWh", timeout=WAIT_MS)
    row.locator("button.cancel").click()
    expect(row).to_have_count(0, timeout=WAIT_MS)

    # An order the API refuses (price 0): the refusal's code and field are shown.
    _submit_order(page, "ask", "0", "0.5")
    refusal = page.locator("#refusal")
    expect(refusal).to_contain_text("malformed (price)", timeout=WAIT_MS)
    expect(refusal).to_have_attribute("data-code", "malformed")

    # The ask traded with bob's bid when its interval settled: trades and balance follow.
    expect(page.locator("#trades tbody")).to_contain_text("sold", timeout=3 * WAIT_MS // 2)
    expect(page.locator("#balance-energy")).to_have_text("4.50 kWh of 10.00 kWh", timeout=WAIT_MS)
    expect(page.locator("#savings")).not_to_be_empty()

    # The threshold bot, switched on from the page, sells down to 2 kWh in later intervals.
    page.check("#bot-enabled")
    page.fill("#bot-sell", "0.12")
    page.fill("#bot-upper", "2")
    page.click("#bot-form button[type=submit]")
    expect(page.locator("#bot-result")).to_contain_text(
        "sells at 0.1200/kWh above 2.00 kWh", timeout=WAIT_MS
    )
    sold = page.locator("#trades tbody tr")
    before = sold.count()
    page.wait_for_function(
        "n => document.querySelectorAll('#trades tbody tr').length > n",
        arg=before,
        timeout=3 * WAIT_MS,
    )
    expect(page.locator("#balance-energy")).not_to_have_text("4.50 kWh of 10.00 kWh")
    if SCREENSHOTS:
        page.wait_for_timeout(2000)  # one more interval in the chart of the screenshot
    _screenshot(page, "dashboard.png", full_page=True)
    assert page.evaluate("window.sameLoad === true")
    browser.assert_only(street.url)
