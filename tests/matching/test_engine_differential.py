"""Differential tests: the Cython engine against the pure-Python reference model.

Hypothesis draws random event streams over a narrow price range (so orders cross often)
and few owners (so self-trades and shared caps happen), with caps on (random accounts,
some with ``bmax=None``, some owners without an account) and off. After every event the
two implementations must agree on the call's result, the fills, both sides of the book in
priority order, the quotes and every balance. The call auction and the batch APIs
(`Book.run`, `CallAuction.clear_arrays`) are compared the same way, and so are several
markets sharing one `Accounts` (`Markets`), books with more blocked households than
the engine's cursor remembers, and books over hundreds of price levels (the engine's level
index splits, joins and empties its chunks).
"""

from __future__ import annotations

import random
from array import array
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from wattmesh.matching import (
    CANCEL,
    LIMIT,
    MARKET,
    MAX_PRICE,
    MAX_QTY,
    REDUCE,
    Accounts,
    Book,
    CallAuction,
    Markets,
)
from wattmesh.matching.reference import (
    ASK,
    BID,
    FOK,
    GTC,
    IOC,
    RefAccounts,
    RefBook,
    RefCallAuction,
    RefMarkets,
)

OWNERS = 4
PRICES = st.integers(95, 105)
QTYS = st.integers(1, 20)
STP = st.sampled_from(["none", "cancel-resting", "cancel-incoming"])
# One bug reported per test, shrunk without the (slow) explain phase.
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)

# Money that limits (a few Wh at prices near 100) or that never does, so Bmax binds too.
MONEY = st.one_of(st.integers(0, 4_000), st.just(10**9))
# An account: (energy, money, extra headroom or None for bmax=None); None: no account.
ACCOUNT = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 40), MONEY, st.one_of(st.none(), st.integers(0, 40))),
)
# Caps on three times in four; caps off (accounts=None) otherwise.
ACCOUNTS = st.tuples(st.integers(0, 3), st.lists(ACCOUNT, min_size=OWNERS, max_size=OWNERS)).map(
    lambda t: t[1] if t[0] else None
)

OWNER = st.integers(0, OWNERS - 1)
PICK = st.integers(0, 10_000)  # chooses one of the ids used so far
KINDS = ["submit"] * 6 + ["market", "cancel", "reduce", "replace", "deposit"]
# One flat record per event; each kind reads the fields it needs (see apply_op).
OP = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from([BID, ASK]),
    PRICES,
    QTYS,
    OWNER,
    st.sampled_from([GTC, GTC, IOC, FOK]),
    st.integers(0, 9),  # reuse: 0 reuses an id (a duplicate if it is live)
    PICK,
    st.integers(0, 40),  # deposit: energy
    MONEY,  # deposit: money
)
STREAM = st.lists(OP, min_size=10, max_size=60)


def make_accounts(rows: list | None) -> tuple[Accounts | None, RefAccounts | None]:
    """The same accounts for the engine and for the reference (None: caps off)."""
    if rows is None:
        return None, None
    eng, ref = Accounts(), RefAccounts()
    for owner, row in enumerate(rows):
        if row is not None:
            energy, money, extra = row
            bmax = None if extra is None else max(1, energy + extra)
            eng.set(owner, energy, money, bmax)
            ref.set(owner, energy, money, bmax)
    return eng, ref


def outcome(call: Any, *args: Any) -> Any:
    """The call's result, or the type of the error it raised."""
    try:
        return call(*args)
    except ValueError:
        return ValueError


def book_state(book: Any, accounts: Any) -> tuple:
    balances = None if accounts is None else [accounts.get(o) for o in range(OWNERS)]
    return (
        [tuple(o) for o in book.orders(BID)],
        [tuple(o) for o in book.orders(ASK)],
        tuple(book.quotes()),
        len(book),
        balances,
    )


def apply_op(book: Any, accounts: Any, op: tuple, oids: list[int]) -> Any:
    """Apply one event; `oids` is the list of ids used so far (grows on new ids)."""
    kind, side, price, qty, owner, tif, reuse, pick, energy, money = op
    if kind == "submit":
        oid = oids[pick % len(oids)] if reuse == 0 and oids else len(oids) + 1
        if oid not in oids:
            oids.append(oid)
        return outcome(book.submit, oid, side, price, qty, owner, tif)
    if kind == "market":
        oids.append(len(oids) + 1)
        return outcome(book.market, oids[-1], side, qty, owner, IOC if tif == GTC else tif)
    if not oids and kind in ("cancel", "reduce", "replace"):
        return None
    if kind == "cancel":
        return book.cancel(oids[pick % len(oids)])
    if kind == "reduce":
        return outcome(book.reduce, oids[pick % len(oids)], qty)
    if kind == "replace":
        oids.append(len(oids) + 1)
        return outcome(book.replace, oids[pick % (len(oids) - 1)], oids[-1], price, qty)
    if kind == "deposit":
        if accounts is None:
            return None
        row = accounts.get(owner)
        bmax = None if row is None else row[2]
        if bmax is not None:
            energy = min(energy, bmax)
        accounts.set(owner, energy, money, bmax)
        return book.uncross()
    raise AssertionError(kind)


@SETTINGS
@given(stream=STREAM, rows=ACCOUNTS, stp=STP)
def test_book_matches_reference_after_every_event(
    stream: list, rows: list | None, stp: str
) -> None:
    eng_acc, ref_acc = make_accounts(rows)
    eng, ref = Book(eng_acc, stp=stp), RefBook(ref_acc, stp=stp)
    eng_ids: list[int] = []
    ref_ids: list[int] = []
    for step, op in enumerate(stream):
        got = apply_op(eng, eng_acc, op, eng_ids)
        want = apply_op(ref, ref_acc, op, ref_ids)
        where = f"event {step}: {op}"
        assert got == want, where
        assert [tuple(f) for f in eng.take_fills()] == [tuple(f) for f in ref.take_fills()], where
        assert book_state(eng, eng_acc) == book_state(ref, ref_acc), where


# ---------------------------------------------------------------------------------------
# Batch API: Book.run against the per-call API
# ---------------------------------------------------------------------------------------

RUN_OP = st.tuples(
    st.sampled_from([LIMIT] * 5 + [MARKET, CANCEL, REDUCE]),
    st.sampled_from([BID, ASK]),
    PRICES,
    st.integers(0, 20),  # qty (0 is refused); for REDUCE the amount removed
    OWNER,
    st.sampled_from([GTC, GTC, IOC, FOK]),  # a MARKET's GTC is sent as IOC
    PICK,
)


def columns(stream: list) -> dict[str, array]:
    """The stream as `Book.run` columns. New ids are 1, 2, ...; a LIMIT reuses an id
    (a duplicate if live) when its pick is below 1_000; CANCEL/REDUCE name a used id or
    an unknown one."""
    cols: dict[str, list[int]] = {k: [] for k in ("kinds", "sides", "prices", "qtys", "oids")}
    cols.update(owners=[], tifs=[])
    used: list[int] = []
    for kind, side, price, qty, owner, tif, pick in stream:
        if kind == MARKET and tif == GTC:
            tif = IOC
        if kind in (LIMIT, MARKET) and not (kind == LIMIT and pick < 1_000 and used):
            oid = len(used) + 1
            used.append(oid)
        elif used and pick % 7:
            oid = used[pick % len(used)]
        else:
            oid = 10**9 + pick  # an id nobody used
        for name, value in zip(
            ("kinds", "sides", "prices", "qtys", "oids", "owners", "tifs"),
            (kind, side, price, qty, oid, owner, tif),
            strict=True,
        ):
            cols[name].append(value)
    types = dict(kinds="B", sides="B", prices="q", qtys="q", oids="Q", owners="I", tifs="B")
    return {name: array(types[name], values) for name, values in cols.items()}


def per_call(book: Any, c: dict[str, array], take: bool = True) -> tuple[list[int], list[tuple]]:
    """Apply the columns one call at a time; statuses and fills tagged with the event
    (`take=False`: leave the fills where they are, for a book in a Markets)."""
    status, fills = [], []
    for i in range(len(c["kinds"])):
        kind, oid, qty = c["kinds"][i], c["oids"][i], c["qtys"][i]
        side, owner, tif = c["sides"][i], c["owners"][i], c["tifs"][i]
        if kind == LIMIT:
            ok = outcome(book.submit, oid, side, c["prices"][i], qty, owner, tif) is not ValueError
        elif kind == MARKET:
            ok = outcome(book.market, oid, side, qty, owner, tif) is not ValueError
        elif kind == CANCEL:
            ok = book.cancel(oid)
        else:
            ok = outcome(book.reduce, oid, qty) is True
        status.append(0 if ok else 1)
        if take:
            fills.extend((i, *tuple(f)) for f in book.take_fills())
    return status, fills


@SETTINGS
@given(stream=st.lists(RUN_OP, min_size=10, max_size=80), rows=ACCOUNTS, stp=STP)
def test_batch_run_matches_per_call(stream: list, rows: list | None, stp: str) -> None:
    c = columns(stream)
    eng_acc, ref_acc = make_accounts(rows)
    batch_acc, _ = make_accounts(rows)
    book = Book(batch_acc, stp=stp)
    res = book.run(
        c["kinds"], c["sides"], c["prices"], c["qtys"], c["oids"], c["owners"], c["tifs"]
    )
    batch_fills = list(
        zip(
            res.event,
            res.bid,
            res.ask,
            res.price,
            res.qty,
            res.buyer,
            res.seller,
            res.aggressor,
            strict=True,
        )
    )
    for single_book, acc in (
        (Book(eng_acc, stp=stp), eng_acc),
        (RefBook(ref_acc, stp=stp), ref_acc),
    ):
        status, fills = per_call(single_book, c)
        assert list(res.status) == status
        assert batch_fills == fills
        assert book_state(book, batch_acc) == book_state(single_book, acc)


def test_batch_run_over_a_book_past_the_caches_matches_per_call() -> None:
    """`Book.run` prefetches each row's index slot a few rows ahead once the order index
    has outgrown the caches (2**16 slots): 40,000 resting orders, then cancels, crossing
    orders, duplicates and unknown ids in one batch, against the same events one call at
    a time (the reference's own differential tests are the small batches above)."""
    rng = random.Random(17)
    stream = [(LIMIT, BID if k % 2 else ASK, 90 + k % 10 if k % 2 else 101 + k % 10,
               rng.randint(1, 20), rng.randrange(OWNERS), GTC, 5_000)
              for k in range(40_000)]  # fmt: skip
    stream += [(rng.choice([LIMIT, LIMIT, CANCEL, CANCEL, REDUCE, MARKET]),
                rng.choice([BID, ASK]), rng.randint(85, 115), rng.randint(0, 20),
                rng.randrange(OWNERS), rng.choice([GTC, IOC, FOK]), rng.randint(0, 10_000))
               for _ in range(20_000)]  # fmt: skip
    c = columns(stream)
    book = Book()
    res = book.run(c["kinds"], c["sides"], c["prices"], c["qtys"], c["oids"], c["owners"],
                   c["tifs"])  # fmt: skip
    batch_fills = list(zip(res.event, res.bid, res.ask, res.price, res.qty, res.buyer,
                           res.seller, res.aggressor, strict=True))  # fmt: skip
    assert len(book) > 30_000 and len(batch_fills) > 1_000
    single_book = Book()
    status, fills = per_call(single_book, c)
    assert list(res.status) == status
    assert batch_fills == fills
    assert book_state(book, None) == book_state(single_book, None)


# ---------------------------------------------------------------------------------------
# Several markets on one Accounts
# ---------------------------------------------------------------------------------------

# Added in this order; they re-cross by name ("a", "b", "c"), not in this order.
MARKET_NAMES = ("b", "c", "a")
ROWS = st.lists(ACCOUNT, min_size=OWNERS, max_size=OWNERS)


def make_markets(rows: list, stp: str) -> tuple:
    eng_acc, ref_acc = make_accounts(rows)
    eng, ref = Markets(eng_acc, stp=stp), RefMarkets(ref_acc, stp=stp)
    for name in MARKET_NAMES:
        eng.add(name)
        ref.add(name)
    return eng, eng_acc, ref, ref_acc


def engine_fill_events(markets: Markets) -> list[tuple]:
    ev, bid, ask, price, qty, buyer, seller, aggr, market = markets.take_fill_arrays()
    names = markets.names
    return [
        (e, names[m], (b, a, p, q, bu, se, ag))
        for e, b, a, p, q, bu, se, ag, m in zip(
            ev, bid, ask, price, qty, buyer, seller, aggr, market, strict=True
        )
    ]


def assert_no_book_crossed(markets: Any) -> None:
    """docs/design.md: no executable bid crosses an executable ask, in any book, at rest."""
    for name in MARKET_NAMES:
        q = markets[name].quotes()
        assert q.exec_bid is None or q.exec_ask is None or q.exec_bid < q.exec_ask, name


@SETTINGS
@given(
    stream=st.lists(st.tuples(st.integers(0, 2), OP), min_size=10, max_size=60),
    rows=ROWS,
    stp=STP,
)
def test_markets_match_reference_after_every_event(stream: list, rows: list, stp: str) -> None:
    eng, eng_acc, ref, ref_acc = make_markets(rows, stp)
    eng_ids: dict[str, list[int]] = {name: [] for name in MARKET_NAMES}
    ref_ids: dict[str, list[int]] = {name: [] for name in MARKET_NAMES}
    for step, (m, op) in enumerate(stream):
        name = MARKET_NAMES[m]
        got = apply_op(eng[name], eng_acc, op, eng_ids[name])
        want = apply_op(ref[name], ref_acc, op, ref_ids[name])
        where = f"event {step}: {name} {op}"
        assert got == want, where
        want_fills = [(e, mk, tuple(f)) for e, mk, f in ref.take_fill_events()]
        assert engine_fill_events(eng) == want_fills, where
        for book_name in MARKET_NAMES:
            assert book_state(eng[book_name], eng_acc) == book_state(ref[book_name], ref_acc)
        assert_no_book_crossed(eng)
        assert_no_book_crossed(ref)


@SETTINGS
@given(
    before=st.lists(st.tuples(st.integers(0, 2), OP), max_size=20),
    stream=st.lists(RUN_OP, min_size=10, max_size=60),
    rows=ROWS,
    stp=STP,
)
def test_batch_in_markets_matches_per_call(
    before: list, stream: list, rows: list, stp: str
) -> None:
    """`Book.run` on one book of a Markets: the same statuses and fills (with their
    events and markets, other books included) as one call at a time, in the engine and
    in the reference."""
    c = columns(stream)
    results = []
    for impl in ("batch", "engine", "reference"):
        eng, eng_acc, ref, ref_acc = make_markets(rows, stp)
        markets, acc = (ref, ref_acc) if impl == "reference" else (eng, eng_acc)
        ids: dict[str, list[int]] = {name: [] for name in MARKET_NAMES}
        for m, op in before:
            apply_op(markets[MARKET_NAMES[m]], acc, op, ids[MARKET_NAMES[m]])
        if impl == "reference":
            ref.take_fill_events()
        else:
            eng.take_fill_arrays()
        book = markets["b"]
        start = book.pending_fills
        if impl == "batch":
            res = book.run(
                c["kinds"], c["sides"], c["prices"], c["qtys"], c["oids"], c["owners"], c["tifs"]
            )
            names = markets.names
            fills = [
                (e, names[mk], (b, a, p, q, bu, se, ag))
                for e, b, a, p, q, bu, se, ag, mk in zip(
                    res.event, res.bid, res.ask, res.price, res.qty, res.buyer, res.seller,
                    res.aggressor, res.market, strict=True,
                )
            ]  # fmt: skip
            status = list(res.status)
        else:
            status = []
            fills = []
            for i in range(len(c["kinds"])):
                one = {k: v[i : i + 1] for k, v in c.items()}
                status += per_call(book, one, take=False)[0]
                got = (
                    ref.take_fill_events()
                    if impl == "reference"
                    else [(e, mk, f) for e, mk, f in engine_fill_events(eng)]
                )
                fills += [(i, mk, tuple(f)) for _e, mk, f in got]
        assert start == 0
        state = [book_state(markets[name], acc) for name in MARKET_NAMES]
        results.append((status, fills, state))
    assert results[0] == results[1] == results[2]


# ---------------------------------------------------------------------------------------
# Many price levels: the engine's level index (chunks of 64 keys split, joined, emptied)
# ---------------------------------------------------------------------------------------

# Bids rest at 1000..1499 and asks at 1450..1949, `depth` ticks from their side's top, so
# they cross only near the top, and hundreds of levels come and go: new levels anywhere
# (deep inserts), levels emptied anywhere by cancels and reductions (deep drops). One
# order in 25 goes through: priced up to 39 ticks into the other side's scale, it sweeps
# the levels down to there (fills across many levels). A stream first builds the book up
# (mostly orders: 110-140 levels a side, so chunks split), then drains it (mostly
# cancels: chunks join and empty). Streams this long are drawn from a seed: as
# hypothesis lists they would be too large for it to draw or shrink.
BUILD_KINDS = ["submit"] * 10 + ["market", "cancel", "reduce", "replace"]
DRAIN_KINDS = ["submit"] + ["cancel"] * 8 + ["market", "reduce", "replace"]


def deep_op(rng: random.Random, kinds: list[str]) -> tuple:
    """One event as `apply_op`'s record (a new id for every order)."""
    side = rng.choice([BID, ASK])
    through = rng.randrange(25) == 0
    depth = rng.randrange(40 if through else 500)
    on_bid_scale = (side == BID) != through
    price = 1499 - depth if on_bid_scale else 1450 + depth
    tif = rng.choice([GTC] * 8 + [IOC, FOK])
    owner, qty, pick = rng.randrange(OWNERS), rng.randint(1, 20), rng.randrange(10_000)
    return (rng.choice(kinds), side, price, qty, owner, tif, 1, pick, 0, 0)


@settings(SETTINGS, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(500, 900), rows=ACCOUNTS, stp=STP)
def test_book_over_many_price_levels_matches_reference(
    depth_from_orders: Any, seed: int, n: int, rows: list | None, stp: str
) -> None:
    rng = random.Random(seed)
    stream = [deep_op(rng, BUILD_KINDS) for _ in range(n)]
    stream += [deep_op(rng, DRAIN_KINDS) for _ in range(2 * n)]
    eng_acc, ref_acc = make_accounts(rows)
    eng, ref = Book(eng_acc, stp=stp), RefBook(ref_acc, stp=stp)
    eng_ids: list[int] = []
    ref_ids: list[int] = []
    for step, op in enumerate(stream):
        where = f"event {step}: {op}"
        assert apply_op(eng, eng_acc, op, eng_ids) == apply_op(ref, ref_acc, op, ref_ids), where
        assert [tuple(f) for f in eng.take_fills()] == [tuple(f) for f in ref.take_fills()], where
        if step % 10 == 0 or step == len(stream) - 1:
            assert book_state(eng, eng_acc) == book_state(ref, ref_acc), where
            for side in (BID, ASK):
                assert eng.depth(side) == depth_from_orders(ref, side), where


# ---------------------------------------------------------------------------------------
# Many blocked households: more than the engine's cursor remembers (64)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_many_blocked_households_match_reference(seed: int) -> None:
    """200 households, most of them blocked (buyers at Bmax, sellers without energy) and
    their orders at the best prices, so the engine's blocked prefix overflows; deposits
    and fills unblock some of them."""
    rng = random.Random(seed)
    owners = 200
    eng_acc, ref_acc = Accounts(), RefAccounts()
    for o in range(owners):
        bmax = rng.randint(1, 30)
        energy = rng.choice([0, bmax, bmax, bmax, rng.randint(0, bmax)])
        money = rng.choice([10**9, 10**9, rng.randint(0, 3_000)])
        eng_acc.set(o, energy, money, bmax)
        ref_acc.set(o, energy, money, bmax)
    stp = rng.choice(["none", "cancel-resting", "cancel-incoming"])
    eng, ref = Book(eng_acc, stp=stp), RefBook(ref_acc, stp=stp)
    live: list[int] = []
    for oid in range(1, 700):
        kind = rng.random()
        owner = rng.randrange(owners)
        if kind < 0.7 or not live:
            side = rng.choice([BID, ASK])
            energy, _money, bmax = ref_acc.get(owner)
            if side == BID and energy == bmax:
                price = rng.randint(103, 110)  # blocked, and ahead of the rest
            elif side == ASK and energy == 0:
                price = rng.randint(90, 97)
            else:
                price = rng.randint(95, 105)
            args = (oid, side, price, rng.randint(1, 20), owner)
            tif = rng.choice([GTC] * 8 + [IOC, FOK])
            assert eng.submit(*args, tif) == ref.submit(*args, tif)
            live.append(oid)
        elif kind < 0.85:
            pick = rng.choice(live)
            assert eng.cancel(pick) == ref.cancel(pick)
        else:
            row = ref_acc.get(owner)
            # Half the time the energy stays (a household at Bmax stays blocked while its
            # money changes): the engine must keep its blocked prefix and stay right.
            energy = rng.choice([row[0], rng.randint(0, row[2])])
            money = rng.choice([0, 500, 10**9])
            eng_acc.set(owner, energy, money, row[2])
            ref_acc.set(owner, energy, money, row[2])
            assert eng.uncross() == ref.uncross()
        assert [tuple(f) for f in eng.take_fills()] == [tuple(f) for f in ref.take_fills()]
        assert book_state(eng, eng_acc)[:4] == book_state(ref, ref_acc)[:4]
        assert [eng_acc.get(o) for o in range(owners)] == [ref_acc.get(o) for o in range(owners)]


# ---------------------------------------------------------------------------------------
# Call auction
# ---------------------------------------------------------------------------------------

AUCTION_ORDER = st.tuples(st.sampled_from([BID, ASK]), PRICES, QTYS, OWNER, st.integers(0, 3))


def fill_tuples(fills: Any) -> list[tuple]:
    return [tuple(f) for f in fills]


def clearing(auction: Any, accounts: Any) -> tuple:
    result = auction.clear()
    balances = None if accounts is None else [accounts.get(o) for o in range(OWNERS)]
    return (
        result.price,
        fill_tuples(result.fills),
        result.volume,
        result.orders,
        result.executable_orders,
        balances,
        len(auction),
    )


@SETTINGS
@given(
    orders=st.lists(AUCTION_ORDER, max_size=30),
    cancels=st.lists(PICK, max_size=4),
    rows=ACCOUNTS,
    stp=STP,
    seed=st.integers(0, 2**32 - 1),
)
def test_call_auction_matches_reference(
    orders: list, cancels: list, rows: list | None, stp: str, seed: int
) -> None:
    rows_with_oid = [(oid, *row) for oid, row in enumerate(orders, start=1)]
    cancelled = {rows_with_oid[p % len(rows_with_oid)][0] for p in cancels} if orders else set()
    results = []
    for impl_accounts, impl_auction, shuffle in (
        (Accounts, CallAuction, False),
        (RefAccounts, RefCallAuction, False),
        (Accounts, CallAuction, True),
        (RefAccounts, RefCallAuction, True),
    ):
        acc = None
        if rows is not None:
            acc = impl_accounts()
            for owner, row in enumerate(rows):
                if row is not None:
                    energy, money, extra = row
                    acc.set(owner, energy, money, None if extra is None else max(1, energy + extra))
        auction = impl_auction(acc, stp=stp)
        arrival = rows_with_oid[:]
        if shuffle:
            random.Random(seed).shuffle(arrival)
        for oid, side, price, qty, owner, ts in arrival:
            auction.add(oid, side, price, qty, owner, ts)
        for oid in cancelled:
            assert auction.cancel(oid) is True
        pending = (
            tuple(auction.quotes()),
            fill_tuples(auction.orders(BID)),
            fill_tuples(auction.orders(ASK)),
        )
        results.append((pending, clearing(auction, acc)))
    engine, reference, engine_shuffled, reference_shuffled = results
    assert engine == reference
    assert engine_shuffled == engine
    assert reference_shuffled == reference


@SETTINGS
@given(orders=st.lists(AUCTION_ORDER, max_size=30), rows=ACCOUNTS, stp=STP)
def test_clear_arrays_matches_add_and_clear(orders: list, rows: list | None, stp: str) -> None:
    acc_a, _ = make_accounts(rows)
    acc_b, _ = make_accounts(rows)
    one = CallAuction(acc_a, stp=stp)
    for oid, (side, price, qty, owner, ts) in enumerate(orders, start=1):
        one.add(oid, side, price, qty, owner, ts)
    want = one.clear()
    cols = list(zip(*orders, strict=True)) if orders else [[], [], [], [], []]
    two = CallAuction(acc_b, stp=stp)
    got = two.clear_arrays(
        array("B", cols[0]),
        array("q", cols[1]),
        array("q", cols[2]),
        array("Q", range(1, len(orders) + 1)),
        array("I", cols[3]),
        array("q", cols[4]),
    )
    assert (got.price, got.volume, got.orders, got.executable_orders) == (
        want.price,
        want.volume,
        want.orders,
        want.executable_orders,
    )
    assert list(zip(got.bid, got.ask, got.qty, got.buyer, got.seller, strict=True)) == [
        (f.bid, f.ask, f.qty, f.buyer, f.seller) for f in want.fills
    ]
    for owner in range(OWNERS):
        assert (acc_a is None) or acc_a.get(owner) == acc_b.get(owner)
    assert [list(c) for c in two.last_depth()] == [list(c) for c in one.last_depth()]


def clear_arrays_as_the_reference(auction: CallAuction, orders: list, oids: list,
                                  want: Any) -> None:  # fmt: skip
    """``auction.clear_arrays`` of ``orders`` (side, price, qty, owner, ts) with ``oids``
    gives the reference's clearing ``want``: price, volume, executable orders, fills."""
    cols = list(zip(*orders, strict=True)) if orders else [[], [], [], [], []]
    got = auction.clear_arrays(
        array("B", cols[0]), array("q", cols[1]), array("q", cols[2]), array("Q", oids),
        array("I", cols[3]), array("q", cols[4]),
    )  # fmt: skip
    assert (got.price, got.volume, got.executable_orders) == (
        want.price, want.volume, want.executable_orders,
    )  # fmt: skip
    assert list(zip(got.bid, got.ask, got.qty, got.buyer, got.seller, strict=True)) == [
        (f.bid, f.ask, f.qty, f.buyer, f.seller) for f in want.fills
    ]


# Prices anywhere in the engine's range, with levels that differ only in one 11-bit digit
# of the sort key (so the radix sort's digit skipping is exercised), and ids that share
# their high or low bits (so the duplicate check's buckets and tables are).
WIDE_PRICE = st.one_of(
    st.integers(1, MAX_PRICE),
    st.sampled_from([1, 2, 2047, 2048, 2049, 1 << 22, (1 << 22) + 1, (1 << 22) + 2048,
                     MAX_PRICE - 1, MAX_PRICE]),
)  # fmt: skip
ORDER_ID = st.one_of(
    st.integers(0, 2**64 - 1), st.integers(0, 40), st.integers(2**63, 2**63 + 40),
    st.integers(0, 40).map(lambda i: i << 53),
)  # fmt: skip


@SETTINGS
@given(data=st.data(), rows=ACCOUNTS)
def test_clear_arrays_sorts_wide_prices_and_any_ids_as_the_reference(
    data: st.DataObject, rows: list | None
) -> None:
    levels = data.draw(st.lists(WIDE_PRICE, min_size=1, max_size=6))
    orders = data.draw(
        st.lists(
            st.tuples(st.sampled_from([BID, ASK]), st.sampled_from(levels), QTYS, OWNER,
                      st.integers(0, 3)),
            max_size=40,
        )
    )  # fmt: skip
    oids = data.draw(st.lists(ORDER_ID, min_size=len(orders), max_size=len(orders), unique=True))
    _, ref_acc = make_accounts(rows)
    eng_acc, _ = make_accounts(rows)
    reference = RefCallAuction(ref_acc)
    for oid, (side, price, qty, owner, ts) in zip(oids, orders, strict=True):
        reference.add(oid, side, price, qty, owner, ts)
    clear_arrays_as_the_reference(CallAuction(eng_acc), orders, oids, reference.clear())


def plain_depth(orders: list) -> list[tuple[int, int, int]]:
    """(side, price, qty) per price level, best first, bids then asks: what docs/matching.md
    calls the plain depth, summed straight from the orders."""
    levels: dict[tuple[int, int], int] = {}
    for side, price, qty, *_ in orders:
        levels[(side, price)] = levels.get((side, price), 0) + qty
    bids = sorted(((s, p, q) for (s, p), q in levels.items() if s == BID), key=lambda r: -r[1])
    asks = sorted((s, p, q) for (s, p), q in levels.items() if s == ASK)
    return bids + asks


def spread_orders(seed: int, n: int, spread: int) -> list[tuple[int, int, int, int, int]]:
    """n orders (side, price, qty, owner, ts) with prices spread over 10**spread around a
    mid, drawn from ``seed`` (hypothesis's lists stay short: a few orders each)."""
    rng = random.Random(seed)
    half = 10**spread // 2
    return [
        (rng.choice([BID, ASK]), 10**7 + rng.randint(-half, half), rng.randint(1, 20),
         rng.randrange(OWNERS), rng.randint(0, 5))
        for _ in range(n)
    ]  # fmt: skip


# Prices spread over a span wide enough that each side's keys fall in many of the clearing's
# buckets (each sorted only when the walk reaches it), with many orders per interval.
# Some intervals are large enough that buckets hold hundreds of orders (sorted by radix
# passes, not only by comparisons).
SPREAD_ORDERS = st.builds(
    spread_orders,
    st.integers(0, 2**32 - 1),
    st.one_of(st.integers(0, 300), st.integers(1_000, 3_000)),
    st.integers(1, 7),
)


@settings(SETTINGS, max_examples=150)
@given(batches=st.lists(SPREAD_ORDERS, min_size=1, max_size=2), rows=ACCOUNTS, stp=STP)
def test_clear_arrays_over_many_price_buckets_matches_the_reference(
    batches: list, rows: list | None, stp: str
) -> None:
    """One auction clears interval after interval, each as the reference clears it, and
    its depth is the whole book per level: the plain quantities summed from the orders,
    the executable ones as the fully sorted path (`add` then `clear`) commits them."""
    eng_acc, ref_acc = make_accounts(rows)
    auction = CallAuction(eng_acc, stp=stp)
    oids = iter(range(1, 10**6))
    for orders in batches:
        ids = [next(oids) for _ in orders]
        reference = RefCallAuction(ref_acc, stp=stp)
        sorted_path = CallAuction(make_accounts(rows)[0], stp=stp)
        for oid, (side, price, qty, owner, ts) in zip(ids, orders, strict=True):
            reference.add(oid, side, price, qty, owner, ts)
        clear_arrays_as_the_reference(auction, orders, ids, reference.clear())
        sides, prices, qtys, execs = auction.last_depth()
        assert list(zip(sides, prices, qtys, strict=True)) == plain_depth(orders)
        if len(batches) == 1:  # the sorted path's accounts have not seen earlier batches
            for oid, (side, price, qty, owner, ts) in zip(ids, orders, strict=True):
                sorted_path.add(oid, side, price, qty, owner, ts)
            sorted_path.clear()
            assert list(execs) == list(sorted_path.last_depth()[3])
        elif eng_acc is None:
            assert list(execs) == list(qtys)


@SETTINGS
@given(data=st.data())
def test_clear_arrays_finds_any_repeated_id(data: st.DataObject) -> None:
    oids = data.draw(st.lists(ORDER_ID, min_size=1, max_size=60, unique=True))
    twice = data.draw(st.sampled_from(oids))
    oids.insert(data.draw(st.integers(0, len(oids))), twice)
    n = len(oids)
    auction = CallAuction()
    with pytest.raises(ValueError, match=f"oid: {twice} appears more than once"):
        auction.clear_arrays(
            array("B", [i % 2 for i in range(n)]), array("q", [100] * n), array("q", [1] * n),
            array("Q", oids),
        )  # fmt: skip
    assert len(auction) == 0


def colliding_ids(n: int) -> list[int]:
    """Ids that all fall in slot 0 of the duplicate check's tables: multiples of the
    inverse of its multiplier, what someone who read the engine could grind order ids
    towards. The buckets hash with another multiplier, so each gets about n / 2048."""
    inverse = pow(0x9E3779B97F4A7C15, -1, 2**64)
    return [c * inverse % 2**64 for c in range(1, n + 1)]


@pytest.mark.parametrize("n", [2, 500, 100_000])
def test_clear_arrays_finds_a_repeated_id_among_ids_made_to_collide(n: int) -> None:
    oids = colliding_ids(n)
    cols = (array("B", [i % 2 for i in range(n + 1)]), array("q", [100] * (n + 1)),
            array("q", [1] * (n + 1)))  # fmt: skip
    result = CallAuction().clear_arrays(*cols[:3], array("Q", oids + [1]))
    assert result.orders == n + 1  # no duplicate: none reported
    twice = oids[n // 2]
    with pytest.raises(ValueError, match=f"oid: {twice} appears more than once"):
        CallAuction().clear_arrays(*cols, array("Q", oids + [twice]))


# ---------------------------------------------------------------------------------------
# Regular reproducers of engine bugs found by the tests above
# ---------------------------------------------------------------------------------------


def test_large_money_balance_does_not_wrap() -> None:
    """A seller's money may start just below the engine's 2**62 limit; two sales of
    MAX_QTY at MAX_PRICE must not wrap it past 2**63 into a negative balance. The engine
    may refuse the trade (an error) or record it exactly, as the reference does."""
    seller, buyer = 1, 2  # the buyer has no account: no limit
    start = 2**62 - 1
    acc = Accounts()
    acc.set(seller, start, start, None)
    book = Book(acc)
    for i in range(2):
        book.submit(10 + i, BID, MAX_PRICE, MAX_QTY, buyer)
        try:
            book.submit(20 + i, ASK, MAX_PRICE, MAX_QTY, seller)
        except (ValueError, OverflowError):
            pass
    sold = sum(f.qty for f in book.take_fills())
    _energy, money, _bmax = acc.get(seller)
    assert money == start + sold * MAX_PRICE
