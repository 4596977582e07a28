"""The community file (exchange/community_file.py): parsing, errors, genesis, the clock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.exchange.community_file import (
    Community,
    CommunityError,
    MemberSpec,
    MeterSpec,
    dump_community,
    load_community,
    parse_community,
)
from wattmesh.settlement.keys import Ed25519PrivateKey, peer_id_of
from wattmesh.settlement.ledger import Ledger


def pid(n: int) -> str:
    """A fixed peer id per n (keys from a fixed seed, so failures are reproducible)."""
    return peer_id_of(Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32))


A, B, C, M1, M2, M3 = (pid(n) for n in range(1, 7))
START = 1_795_219_200_000  # 2026-11-21T00:00:00Z


def toml(doc: dict[str, Any]) -> str:
    """A TOML text from {key: raw TOML value}, "member": [{..., "meter": [{...}]}]."""
    lines = [f"{k} = {v}" for k, v in doc.items() if k not in ("clock", "member")]
    if "clock" in doc:
        lines += ["[clock]", *(f"{k} = {v}" for k, v in doc["clock"].items())]
    for m in doc.get("member", []):
        lines += ["[[member]]", *(f"{k} = {v}" for k, v in m.items() if k != "meter")]
        for meter in m.get("meter", []):
            lines += ["[[member.meter]]", *(f"{k} = {v}" for k, v in meter.items())]
    return "\n".join(lines) + "\n"


def base() -> dict[str, Any]:
    return {
        "name": '"lindenweg"',
        "start_ms": str(START),
        "member": [
            {"peer_id": f'"{A}"', "bmax": "10000", "energy": "2000", "money": "5000000000",
             "storage": "true", "meter": [{"id": f'"{M1}"', "max_power_w": "8000"}]},
            {"peer_id": f'"{B}"', "bmax": "5000", "meter": [{"id": f'"{M2}"'}]},
        ],
    }  # fmt: skip


def full() -> Community:
    return Community(
        name='Linden "weg" \\ 3\x7f',
        start_ms=START,
        interval_ms=300_000,
        grace_ms=10_000,
        market="power",
        price_min=5,
        price_max=900_000,
        retail_price=250_000,
        feedin_price=70_000,
        fee_rate_ppm=1500,
        storage_rate=12,
        max_skew_ms=5_000,
        max_age_ms=1_000_000,
        horizon=8,
        max_batch=50,
        clock_speed=300,
        clock_origin_ms=1_700_000_000_000,
        members=(
            MemberSpec(C, 7000, money=3, energy=7000, name="Nr.\t7 ☀", meters=(MeterSpec(M3),)),
            MemberSpec(A, 10000, storage=True, meters=(MeterSpec(M1, 8000), MeterSpec(M2, 1))),
            MemberSpec(B, 0),
        ),
    )


def test_a_minimal_file_takes_every_default() -> None:
    c = parse_community(f'name = "x"\nstart_ms = 0\n[[member]]\npeer_id = "{A}"\nbmax = 1\n')
    assert (c.interval_ms, c.grace_ms, c.max_age_ms) == (900_000, 60_000, 1_800_000)
    assert (c.market, c.price_min, c.price_max) == ("energy", 1, 10_000_000)
    assert (c.retail_price, c.feedin_price, c.fee_rate_ppm, c.storage_rate) == (
        230_000, 80_000, 0, 0)  # fmt: skip
    assert (c.max_skew_ms, c.horizon, c.max_batch) == (30_000, 4, 1000)
    assert (c.clock_speed, c.clock_origin_ms) == (1, None)
    assert c.members == (MemberSpec(A, 1),)


def test_short_intervals_get_a_proportional_grace_and_age() -> None:
    doc = base() | {"interval_ms": "60000"}
    c = parse_community(toml(doc))
    assert (c.grace_ms, c.max_age_ms) == (12_000, 120_000)


def test_dump_reads_back_to_an_equal_community(tmp_path: Path) -> None:
    c = full()
    path = tmp_path / "community.toml"
    path.write_text(dump_community(c), encoding="utf-8")
    back = load_community(path)
    assert back == c and back.id == c.id
    assert back.members[0].name == "Nr.\t7 ☀"  # file order kept, odd text survives


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(min_size=1, max_size=128),
    label=st.text(min_size=1, max_size=128),
    speed=st.integers(1, 10_000),
    money=st.integers(0, 2**63 - 1),
)
def test_round_trip_any_text_and_numbers(name: str, label: str, speed: int, money: int) -> None:
    c = Community(
        name=name, start_ms=0, clock_speed=speed, clock_origin_ms=5,
        members=(MemberSpec(A, 2**63 - 1, money=money, name=label),),
    )  # fmt: skip
    assert parse_community(dump_community(c)) == c


def test_explicit_defaults_give_the_same_id_and_any_change_another() -> None:
    c = parse_community(toml(base()))
    explicit = base() | {"interval_ms": "900000", "grace_ms": "60000", "horizon": "4"}
    assert parse_community(toml(explicit)).id == c.id
    changed = base() | {"retail_price": "230001"}
    assert parse_community(toml(changed)).id != c.id
    assert len(c.id) == 64 and int(c.id, 16) >= 0


def test_start_may_be_an_offset_datetime() -> None:
    for spelling in ("2026-11-21T00:00:00Z", "2026-11-21T01:00:00+01:00"):
        c = parse_community(toml(base() | {"start_ms": spelling}))
        assert c.start_ms == START and c.genesis_ts == START


def test_lookups() -> None:
    c = parse_community(toml(base()))
    assert c.member(B) == MemberSpec(B, 5000, meters=(MeterSpec(M2),))
    assert c.member(C) is None
    assert (c.meter_owner(M1), c.meter_owner(M2), c.meter_owner(A)) == (A, B, None)


def _set(path: str, value: str):
    """An edit of base(): set the raw value at 'key', 'member.1.key' or
    'member.1.meter.0.key' (0-based indexes into base())."""

    def edit(doc: dict[str, Any]) -> None:
        parts = path.split(".")
        target: Any = doc
        for p in parts[:-1]:
            target = target[int(p)] if p.isdigit() else target[p]
        target[parts[-1]] = value

    return edit


def _drop(path: str):
    def edit(doc: dict[str, Any]) -> None:
        parts = path.split(".")
        target: Any = doc
        for p in parts[:-1]:
            target = target[int(p)] if p.isdigit() else target[p]
        del target[parts[-1]]

    return edit


ERRORS = [
    # (edit of base(), the key the error must name, a fragment of the problem)
    (_set("intervall_ms", "900000"), "intervall_ms", "unknown key (did you mean interval_ms?)"),
    (_set("member.1.bmx", "1"), "member[2].bmx", "unknown key"),
    (_set("member.0.meter.0.max_power", "1"), "member[1].meter[1].max_power", "unknown key"),
    (_set("clock", {"sped": "3"}), "clock.sped", "unknown key"),
    (_set("member.1.bmax", "true"), "member[2].bmax", "must be an integer >= 0, got true"),
    (_set("horizon", "false"), "horizon", "got false"),
    (_set("member.0.storage", "1"), "member[1].storage", "must be true or false, got 1"),
    (_set("member.0.money", "1.5"), "member[1].money", "got 1.5"),
    (_set("member.0.money", '"5"'), "member[1].money", 'got "5"'),
    (
        _set("member.1.peer_id", '"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"'),
        "member[2].peer_id",
        "not an Ed25519 peer id",
    ),
    (_set("member.1.meter.0.id", '"alice-meter"'), "member[2].meter[1].id", "not an Ed25519"),
    (_set("member.1.peer_id", f'"{A}"'), "member[2].peer_id", "is already member[1]"),
    (
        _set("member.1.meter.0.id", f'"{M1}"'),
        "member[2].meter[1].id",
        "is already member[1].meter[1]",
    ),
    (_set("start_ms", str(START + 1)), "start_ms", "not a multiple of interval_ms 900000"),
    (_set("start_ms", "2026-11-21T00:00:00"), "start_ms", "has no UTC offset"),
    (_set("start_ms", "2026-11-21"), "start_ms", "got 2026-11-21"),
    (_set("grace_ms", "900000"), "grace_ms", "must be below interval_ms 900000"),
    (_set("member.0.energy", "10001"), "member[1].energy", "above bmax 10000"),
    (_set("price_max", "0"), "price_max", "must be an integer in 1..2147483647"),
    (_set("price_min", "20000000"), "price_max", "below price_min 20000000"),
    (_set("price_max", "3000000000"), "price_max", "must be at most 2147483647"),
    (_set("fee_rate_ppm", "1000001"), "fee_rate_ppm", "at most 1000000"),
    (_set("interval_ms", "0"), "interval_ms", "must be an integer >= 1"),
    (_set("name", '""'), "name", "non-empty string"),
    (_drop("name"), "name", "missing"),
    (_drop("member.1.bmax"), "member[2].bmax", "missing"),
    (_drop("member.0.meter.0.id"), "member[1].meter[1].id", "missing"),
    (_set("member", []), "member", "at least one [[member]]"),
    (_set("clock", {"speed": "300"}), "clock.origin_ms", "missing: clock speed 300"),
    (_set("clock", {"speed": "0", "origin_ms": "0"}), "clock.speed", "integer >= 1"),
]


def _no_provider(doc: dict[str, Any]) -> None:
    doc["storage_rate"] = "5"
    doc["member"][0]["storage"] = "false"


ERRORS.append((_no_provider, "storage_rate", "needs a storage provider"))


@pytest.mark.parametrize(("edit", "key", "problem"), ERRORS, ids=[e[1] for e in ERRORS])
def test_each_error_is_one_line_naming_file_and_key(edit, key: str, problem: str) -> None:
    doc = base()
    edit(doc)
    text = toml(doc)
    with pytest.raises(CommunityError) as info:
        parse_community(text, "community.toml")
    err = info.value
    assert (err.key, err.source) == (key, "community.toml"), str(err)
    assert problem in err.problem, str(err)
    assert str(err) == f"community.toml: {key}: {err.problem}"
    assert "\n" not in str(err)
    assert isinstance(err, ValueError)


def test_storage_provider_needs_bmax() -> None:
    doc = base() | {"storage_rate": "5"}
    doc["member"][0]["bmax"] = "0"
    doc["member"][0]["energy"] = "0"
    with pytest.raises(CommunityError, match="storage_rate: 5 needs a storage provider"):
        parse_community(toml(doc))
    doc["member"][0]["bmax"] = "1"
    assert parse_community(toml(doc)).storage_rate == 5


def test_syntax_errors_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CommunityError, match=r"^c\.toml: not valid TOML: .*line 2"):
        parse_community('name = "x"\nstart_ms = \n', "c.toml")
    with pytest.raises(CommunityError, match="not UTF-8"):
        parse_community(b'name = "\xff"', "c.toml")
    missing = tmp_path / "nope.toml"
    with pytest.raises(CommunityError, match=f"^{missing}: cannot read: No such file"):
        load_community(missing)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(CommunityError, match="^member: at least one"):
        Community(name="x", start_ms=0)
    with pytest.raises(CommunityError, match="^energy: 6 Wh is above bmax 5 Wh"):
        MemberSpec(A, 5, energy=6)
    with pytest.raises(CommunityError, match="^bmax: must be an integer >= 0, got true"):
        MemberSpec(A, True)


def test_genesis_items_open_a_ledger_with_the_openings(tmp_path: Path) -> None:
    c = full()
    items = c.genesis_items()
    kinds = [k for k, _ in items]
    # genesis; members in peer id order, each with its opening when it brings something;
    # then the meters in meter id order.
    owners = sorted([A, B, C])
    expected = ["genesis"]
    for o in owners:
        expected += ["member"] + (["opening"] if o == C else [])
    assert kinds == expected + ["meter"] * 3
    assert [b["owner"] for k, b in items if k == "member"] == owners
    assert [b["meter"] for k, b in items if k == "meter"] == sorted([M1, M2, M3])
    genesis = items[0][1]
    assert genesis["storage_rate"] == 12 and set(genesis["funds"]) == {
        "fees", "education", "network"}  # fmt: skip
    with Ledger.open(tmp_path / "l.sqlite") as led:
        led.append_batch(items, ts=c.genesis_ts)
        assert led.verify().ok
        bal = led.balances()
        for m in c.members:
            assert (bal[m.peer_id]["energy"], bal[m.peer_id]["money"]) == (m.energy, m.money)
        assert led.genesis() == genesis
        rows = led.conn.execute("SELECT meter, owner, max_power_w FROM meters").fetchall()
        assert sorted(rows) == sorted([(M1, A, 8000), (M2, A, 1), (M3, C, None)])
        members = led.conn.execute("SELECT owner, bmax, storage FROM members").fetchall()
        assert sorted(members) == sorted([(A, 10000, 1), (B, 0, 0), (C, 7000, 0)])
        assert [e.ts for e in led.entries()] == [START] * len(items)


def test_without_storage_fees_the_genesis_has_no_rate() -> None:
    genesis = parse_community(toml(base())).genesis_items()[0][1]
    assert "storage_rate" not in genesis and genesis["funds"] == {"fees": "fund:fees"}
    assert genesis["community"] == "lindenweg" and genesis["interval_ms"] == 900_000


def test_accelerated_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    origin = 1_700_000_000_000
    c = parse_community(toml(base() | {"clock": {"speed": "300", "origin_ms": str(origin)}}))
    monkeypatch.setattr(time, "time_ns", lambda: (origin + 1500) * 1_000_000 + 999)
    assert c.now_ms() == START + 1500 * 300
    assert c.wall_seconds(900_000) == 3.0  # a 15-minute interval passes in 3 s
    monkeypatch.setattr(time, "time_ns", lambda: (origin - 10) * 1_000_000)
    assert c.now_ms() == START - 3000  # before the origin: community time before start


def test_without_an_origin_community_time_is_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    c = parse_community(toml(base()))
    monkeypatch.setattr(time, "time_ns", lambda: 1_800_000_000_123_456_789)
    assert c.now_ms() == 1_800_000_000_123
    assert c.wall_seconds(900_000) == 900.0
    slow = parse_community(toml(base() | {"clock": {"origin_ms": "1800000000000"}}))
    assert slow.now_ms() == START + 123  # speed 1 with an origin: shifted, not faster
