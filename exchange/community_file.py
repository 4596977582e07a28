"""The community file: one TOML file, the same bytes at every member's node (docs/node.md).

It says who the members are, what each may hold (``bmax``) and brings (opening money and
energy), which meters belong to whom, and the market's rules: interval length, price
bounds, grid prices, fees and the limits a node applies to gossiped messages. From it a
node builds its ledger's opening batch (:meth:`Community.genesis_items`) and the topic
names it gossips on (a prefix of :attr:`Community.id`, so nodes with different files never
mix). Read with the standard library's ``tomllib``; written by :func:`dump_community`.

Layout (units: ms, Wh, prices in micro-currency per kWh, money in nano-currency)::

    name = "lindenweg"                  # required
    start_ms = 2026-11-21T00:00:00Z     # required: ms since the epoch or an offset datetime
    interval_ms = 900000                # 15 minutes
    grace_ms = 60000                    # default min(60000, interval_ms // 5)
    market = "energy"
    price_min = 1
    price_max = 10000000
    retail_price = 230000
    feedin_price = 80000
    fee_rate_ppm = 0
    storage_rate = 0                    # nano per kWh stored per interval
    max_skew_ms = 30000
    max_age_ms = 1800000                # default interval_ms * 2
    horizon = 4
    max_batch = 1000
    currency = "€"                      # optional: how money is shown (not in the ledger)

    [clock]                             # optional: an accelerated clock for demos and tests
    speed = 300
    origin_ms = 1795219200000

    [[member]]
    peer_id = "12D3KooW..."             # required: the household key's peer id
    bmax = 10000                        # required: Wh
    money = 5000000000                  # opening money, nano (default 0)
    energy = 2000                       # opening energy, Wh (default 0, at most bmax)
    storage = true                      # a storage provider (default false)
    name = "No. 3"                      # a display label, not in the ledger

    [[member.meter]]
    id = "12D3KooW..."                  # required: the meter key's peer id
    max_power_w = 8000                  # optional

Every problem is one :class:`CommunityError` line naming the file, the key and what is
wrong, e.g. ``community.toml: member[2].bmax: must be an integer >= 0, got true``.
``member[N]`` and ``meter[N]`` count the tables from 1 in file order. Unknown keys are
errors (a typo must not silently fall back to a default), and so are booleans where an
integer belongs.
"""

from __future__ import annotations

import difflib
import functools
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NoReturn

from wattmesh.exchange import clock
from wattmesh.matching import MAX_PRICE
from wattmesh.settlement.canonical import canonical, sha256_hex
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.keys import public_key_from_peer_id
from wattmesh.settlement.ledger.bodies import Opening, genesis_body, opening_items
from wattmesh.settlement.readings import DEFAULT_FEEDIN_PRICE, DEFAULT_RETAIL_PRICE
from wattmesh.settlement.records import MAX_NAME, MarketSpec

__all__ = [
    "Community",
    "CommunityError",
    "ConfigError",
    "MemberSpec",
    "MeterSpec",
    "add_member",
    "check_keys",
    "community_template",
    "dump_community",
    "load_community",
    "parse_community",
    "show_value",
    "toml_value",
]

_I64 = 2**63 - 1  # the ledger's and SQLite's largest integer
_MARKET = MarketSpec()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ConfigError(WattmeshError, ValueError):
    """A TOML settings file (or a value meant for one) that does not validate.

    ``key`` is the TOML key (``member[2].bmax``; None: the file as a whole), ``problem``
    what is wrong, ``source`` the file. ``str()`` is one line: ``source: key: problem``.
    """

    def __init__(self, key: str | None, problem: str, source: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.source = source
        super().__init__(": ".join(p for p in (source, key, problem) if p))

    # The field checks every settings file shares, raising the caller's own kind of error.

    @classmethod
    def bad(cls, key: str, what: str, value: Any) -> NoReturn:
        """Refuse ``value`` at ``key``: it must be ``what``."""
        raise cls(key, f"must be {what}, got {show_value(value)}")

    @classmethod
    def integer(cls, key: str, value: Any, lo: int = 0, hi: int = _I64) -> int:
        """``value`` if it is an integer in ``lo..hi`` (a bool is not), else refuse it."""
        if type(value) is not int or not lo <= value <= hi:
            if type(value) is int and value > hi:
                raise cls(key, f"must be at most {hi}, got {value}")
            cls.bad(
                key, f"an integer >= {lo}" if hi == _I64 else f"an integer in {lo}..{hi}", value
            )
        return value


class CommunityError(ConfigError):
    """A community file (or a value meant for one) that does not validate."""


@contextmanager
def _under(prefix: str) -> Iterator[None]:
    """Prefix the key of any CommunityError raised inside with ``prefix`` (a table)."""
    try:
        yield
    except CommunityError as exc:
        key = f"{prefix}.{exc.key}" if exc.key else prefix
        raise CommunityError(key, exc.problem, exc.source) from None


# -- values: checking and spelling ------------------------------------------------------


def show_value(value: Any) -> str:
    """How a bad value reads in an error: its TOML spelling where it has one, shortened."""
    try:
        text = toml_value(value)
    except TypeError:
        text = value.isoformat() if isinstance(value, date | time) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def toml_value(value: str | int | bool | list | tuple) -> str:
    """The TOML literal of a str, int, bool or a list of them (one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}  # fmt: skip


def _toml_string(text: str) -> str:
    # A TOML basic string: quote, backslash and control characters (DEL too) escaped.
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _name(key: str, value: Any) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        CommunityError.bad(key, f"a non-empty string of at most {MAX_NAME} characters", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        CommunityError.bad(key, "valid Unicode text", value)
    return value


def _peer_id(key: str, value: Any) -> str:
    if type(value) is not str:
        CommunityError.bad(key, "a peer id string (12D3KooW...)", value)
    try:
        public_key_from_peer_id(value)
    except ValueError as exc:
        raise CommunityError(key, str(exc)) from None
    return value


def _ms(key: str, value: Any) -> int:
    """Integer ms since the epoch, from an int or a TOML offset datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise CommunityError(
                key, f"{value.isoformat()} has no UTC offset; write e.g. 2026-11-21T00:00:00Z"
            )
        ms, rest = divmod(value - _EPOCH, timedelta(milliseconds=1))
        if rest:
            raise CommunityError(key, f"{value.isoformat()} is not a whole millisecond")
        value = ms
    elif isinstance(value, date | time):
        CommunityError.bad(key, "integer ms or an offset datetime like 2026-11-21T00:00:00Z", value)
    return CommunityError.integer(key, value)


# -- the records --------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterSpec:
    """A meter registered to a member: its key's peer id (TOML key ``id``) and, optionally,
    its maximum power in W (a reading claiming more energy than that is refused)."""

    meter: str
    max_power_w: int | None = None

    def __post_init__(self) -> None:
        _peer_id("id", self.meter)
        if self.max_power_w is not None:
            CommunityError.integer("max_power_w", self.max_power_w, 1)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.meter}
        if self.max_power_w is not None:
            d["max_power_w"] = self.max_power_w
        return d


@dataclass(frozen=True)
class MemberSpec:
    """A household: its peer id, its cap ``bmax`` (Wh), its opening money (nano) and energy
    (Wh), whether it provides storage (then it shares the storage fees), a display name
    (not in the ledger) and its meters."""

    peer_id: str
    bmax: int
    money: int = 0
    energy: int = 0
    storage: bool = False
    name: str | None = None
    meters: tuple[MeterSpec, ...] = ()

    def __post_init__(self) -> None:
        _peer_id("peer_id", self.peer_id)
        CommunityError.integer("bmax", self.bmax)
        CommunityError.integer("money", self.money)
        CommunityError.integer("energy", self.energy)
        if self.energy > self.bmax:
            raise CommunityError("energy", f"{self.energy} Wh is above bmax {self.bmax} Wh")
        if type(self.storage) is not bool:
            CommunityError.bad("storage", "true or false", self.storage)
        if self.name is not None:
            _name("name", self.name)
        object.__setattr__(self, "meters", tuple(self.meters))
        for i, m in enumerate(self.meters, 1):
            if not isinstance(m, MeterSpec):
                CommunityError.bad(f"meter[{i}]", "a MeterSpec", m)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "peer_id": self.peer_id, "bmax": self.bmax, "money": self.money,
            "energy": self.energy, "storage": self.storage,
        }  # fmt: skip
        if self.name is not None:
            d["name"] = self.name
        if self.meters:
            d["meter"] = [m.to_dict() for m in self.meters]
        return d


@dataclass(frozen=True, kw_only=True)
class Community:
    """A validated community file. ``grace_ms`` and ``max_age_ms`` left as None take their
    defaults (``min(60000, interval_ms // 5)`` and ``interval_ms * 2``); after construction
    they are always integers. Construction checks everything and raises CommunityError
    naming the TOML key."""

    name: str
    start_ms: int
    interval_ms: int = clock.DEFAULT_INTERVAL_MS
    grace_ms: int | None = None
    market: str = _MARKET.name
    price_min: int = _MARKET.min_price
    price_max: int = _MARKET.max_price
    retail_price: int = DEFAULT_RETAIL_PRICE
    feedin_price: int = DEFAULT_FEEDIN_PRICE
    fee_rate_ppm: int = 0
    storage_rate: int = 0
    max_skew_ms: int = 30_000
    max_age_ms: int | None = None
    horizon: int = 4
    max_batch: int = 1000
    # Each member's budget per interval, over its orders, cancels and batches (docs/node.md,
    # "Budgets"): what the node accepts, keeps and forwards of one member for one interval.
    max_orders_per_interval: int = 10_000
    max_messages_per_interval: int = 1_000
    max_bytes_per_interval: int = 4 << 20
    clock_speed: int = 1
    clock_origin_ms: int | None = None
    # How a person reads the money: a symbol or code, e.g. "€" or "EUR" (not in the
    # ledger, which keeps nano-currency; None: plain numbers).
    currency: str | None = None
    members: tuple[MemberSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        _name("name", self.name)
        CommunityError.integer("start_ms", self.start_ms)
        length = CommunityError.integer("interval_ms", self.interval_ms, 1)
        if self.start_ms % length:
            raise CommunityError(
                "start_ms",
                f"{self.start_ms} is not a multiple of interval_ms {length} (the start of an "
                f"interval); {self.start_ms - self.start_ms % length} is",
            )
        if self.grace_ms is None:
            object.__setattr__(self, "grace_ms", min(60_000, length // 5))
        if CommunityError.integer("grace_ms", self.grace_ms) >= length:
            raise CommunityError("grace_ms", f"{self.grace_ms} must be below interval_ms {length}")
        _name("market", self.market)
        CommunityError.integer("price_min", self.price_min, 1, MAX_PRICE)
        CommunityError.integer("price_max", self.price_max, 1, MAX_PRICE)
        if self.price_max < self.price_min:
            raise CommunityError(
                "price_max", f"{self.price_max} is below price_min {self.price_min}"
            )
        CommunityError.integer("retail_price", self.retail_price)
        CommunityError.integer("feedin_price", self.feedin_price)
        CommunityError.integer("fee_rate_ppm", self.fee_rate_ppm, 0, 1_000_000)
        CommunityError.integer("storage_rate", self.storage_rate)
        CommunityError.integer("max_skew_ms", self.max_skew_ms)
        if self.max_age_ms is None:
            object.__setattr__(self, "max_age_ms", length * 2)
        CommunityError.integer("max_age_ms", self.max_age_ms, 1)
        CommunityError.integer("horizon", self.horizon, 1)
        CommunityError.integer("max_batch", self.max_batch, 1)
        CommunityError.integer("max_orders_per_interval", self.max_orders_per_interval, 1)
        CommunityError.integer("max_messages_per_interval", self.max_messages_per_interval, 1)
        CommunityError.integer("max_bytes_per_interval", self.max_bytes_per_interval, 1)
        CommunityError.integer("clock.speed", self.clock_speed, 1)
        if self.currency is not None and (
            type(self.currency) is not str or not 1 <= len(self.currency) <= 8
            or not self.currency.isprintable() or self.currency != self.currency.strip()
        ):  # fmt: skip
            CommunityError.bad("currency", 'a symbol or code of 1 to 8 characters, like "€"',
                               self.currency)  # fmt: skip
        if self.clock_origin_ms is not None:
            CommunityError.integer("clock.origin_ms", self.clock_origin_ms)
        elif self.clock_speed != 1:
            # Without an origin community time is wall time, so a speed would be ignored.
            raise CommunityError(
                "clock.origin_ms",
                f"missing: clock speed {self.clock_speed} needs the wall time (ms) at which "
                "community time is start_ms",
            )
        object.__setattr__(self, "members", tuple(self.members))
        self._check_members()

    def _check_members(self) -> None:
        if not self.members:
            raise CommunityError("member", "at least one [[member]] table is needed")
        seen: dict[str, int] = {}
        meters: dict[str, str] = {}
        for i, m in enumerate(self.members, 1):
            if not isinstance(m, MemberSpec):
                CommunityError.bad(f"member[{i}]", "a MemberSpec", m)
            if m.peer_id in seen:
                raise CommunityError(
                    f"member[{i}].peer_id",
                    f"{m.peer_id} is already member[{seen[m.peer_id]}]",
                )
            seen[m.peer_id] = i
            for j, meter in enumerate(m.meters, 1):
                where = f"member[{i}].meter[{j}]"
                if meter.meter in meters:
                    raise CommunityError(
                        f"{where}.id", f"meter {meter.meter} is already {meters[meter.meter]}"
                    )
                meters[meter.meter] = where
        if self.storage_rate and not any(m.storage and m.bmax for m in self.members):
            raise CommunityError(
                "storage_rate",
                f"{self.storage_rate} needs a storage provider: a member with storage = true "
                "and bmax > 0 (providers receive 80% of the storage fees)",
            )

    # -- lookups --

    @functools.cached_property
    def _by_peer(self) -> dict[str, MemberSpec]:
        return {m.peer_id: m for m in self.members}

    @functools.cached_property
    def _meter_owners(self) -> dict[str, str]:
        return {meter.meter: m.peer_id for m in self.members for meter in m.meters}

    def member(self, peer_id: str) -> MemberSpec | None:
        """The member with this peer id, or None."""
        return self._by_peer.get(peer_id)

    def meter_owner(self, meter_id: str) -> str | None:
        """The peer id of the member a meter is registered to, or None."""
        return self._meter_owners.get(meter_id)

    @functools.cached_property
    def id(self) -> str:
        """Hex SHA-256 of the canonical JSON of :meth:`to_dict`: any change of content (not
        of comments or layout) gives another id."""
        return sha256_hex(canonical(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """The file's content with every default filled in, in the TOML layout (``clock``
        only when it is not wall time; absent optional values left out)."""
        d: dict[str, Any] = {
            "name": self.name, "start_ms": self.start_ms, "interval_ms": self.interval_ms,
            "grace_ms": self.grace_ms, "market": self.market, "price_min": self.price_min,
            "price_max": self.price_max, "retail_price": self.retail_price,
            "feedin_price": self.feedin_price, "fee_rate_ppm": self.fee_rate_ppm,
            "storage_rate": self.storage_rate, "max_skew_ms": self.max_skew_ms,
            "max_age_ms": self.max_age_ms, "horizon": self.horizon, "max_batch": self.max_batch,
            "max_orders_per_interval": self.max_orders_per_interval,
            "max_messages_per_interval": self.max_messages_per_interval,
            "max_bytes_per_interval": self.max_bytes_per_interval,
        }  # fmt: skip
        if self.currency is not None:  # absent by default: older files keep their id
            d["currency"] = self.currency
        if self.clock_speed != 1 or self.clock_origin_ms is not None:
            d["clock"] = {"speed": self.clock_speed}
            if self.clock_origin_ms is not None:
                d["clock"]["origin_ms"] = self.clock_origin_ms
        d["member"] = [m.to_dict() for m in self.members]
        return d

    # -- time --

    def now_ms(self) -> int:
        """Community time now, integer ms: wall time, or with a ``[clock]`` origin
        ``start_ms + (wall_ms - origin_ms) * speed``."""
        wall = clock.wall_clock_ms()
        if self.clock_origin_ms is None:
            return wall
        return self.start_ms + (wall - self.clock_origin_ms) * self.clock_speed

    def wall_seconds(self, community_ms: int) -> float:
        """How long a span of community time takes on the wall clock, in seconds."""
        return community_ms / self.clock_speed / 1000

    # -- the ledger --

    @property
    def genesis_ts(self) -> int:
        """The ts of the ledger's opening batch: the start of the first interval."""
        return self.start_ms

    def genesis_items(self) -> list[tuple[str, dict[str, Any]]]:
        """The ledger's opening batch (``Ledger.append_batch(items, ts=genesis_ts)``):
        genesis, then per member in peer id order its ``member`` entry and (when it brings
        energy or money) its ``opening``, then each meter in meter id order."""
        genesis = genesis_body(
            community=self.name, interval_ms=self.interval_ms, price_min=self.price_min,
            price_max=self.price_max, fee_rate_ppm=self.fee_rate_ppm,
            retail_price=self.retail_price, feedin_price=self.feedin_price,
            storage_rate=self.storage_rate,
        )  # fmt: skip
        members = sorted(self.members, key=lambda m: m.peer_id)
        items = [("genesis", genesis)] + opening_items(
            Opening(m.peer_id, m.bmax, m.storage, m.energy, m.money) for m in members
        )
        meters = [(meter, m.peer_id) for m in self.members for meter in m.meters]
        for meter, owner in sorted(meters, key=lambda x: x[0].meter):
            body: dict[str, Any] = {"meter": meter.meter, "owner": owner}
            if meter.max_power_w is not None:
                body["max_power_w"] = meter.max_power_w
            items.append(("meter", body))
        return items


# -- reading ------------------------------------------------------------------------------

_TOP_KEYS = (
    "name", "start_ms", "interval_ms", "grace_ms", "market", "price_min", "price_max",
    "retail_price", "feedin_price", "fee_rate_ppm", "storage_rate", "max_skew_ms",
    "max_age_ms", "horizon", "max_batch", "max_orders_per_interval",
    "max_messages_per_interval", "max_bytes_per_interval", "currency", "clock", "member",
)  # fmt: skip
_CLOCK_KEYS = ("speed", "origin_ms")
_MEMBER_KEYS = ("peer_id", "bmax", "money", "energy", "storage", "name", "meter")
_METER_KEYS = ("id", "max_power_w")


def check_keys(
    table: Mapping[str, Any],
    known: Iterable[str],
    required: Iterable[str] = (),
    *,
    prefix: str = "",
    error: type[ConfigError] = CommunityError,
) -> None:
    """Raise ``error`` naming ``prefix + key`` for a key of ``table`` not in ``known`` (with
    a did-you-mean hint) or a ``required`` key it lacks."""
    known = tuple(known)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"
            raise error(prefix + key, "unknown key" + hint)
    for key in required:
        if key not in table:
            raise error(prefix + key, "missing")


def _tables(key: str, value: Any) -> list[dict[str, Any]]:
    if type(value) is not list or not all(type(t) is dict for t in value):
        CommunityError.bad(key, f"[[{key}]] tables", value)
    return value


def _meter(t: dict[str, Any]) -> MeterSpec:
    check_keys(t, _METER_KEYS, ("id",))
    return MeterSpec(t["id"], t.get("max_power_w"))


def _member(t: dict[str, Any]) -> MemberSpec:
    check_keys(t, _MEMBER_KEYS, ("peer_id", "bmax"))
    meters = []
    for j, mt in enumerate(_tables("meter", t.get("meter", [])), 1):
        with _under(f"meter[{j}]"):
            meters.append(_meter(mt))
    return MemberSpec(
        peer_id=t["peer_id"], bmax=t["bmax"], money=t.get("money", 0),
        energy=t.get("energy", 0), storage=t.get("storage", False), name=t.get("name"),
        meters=tuple(meters),
    )  # fmt: skip


def _community(doc: dict[str, Any]) -> Community:
    check_keys(doc, _TOP_KEYS, ("name", "start_ms"))  # no members: Community says so
    fields = {k: v for k, v in doc.items() if k not in ("clock", "member")}
    fields["start_ms"] = _ms("start_ms", doc["start_ms"])
    if "clock" in doc:
        ck = doc["clock"]
        if type(ck) is not dict:
            CommunityError.bad("clock", "a [clock] table", ck)
        with _under("clock"):
            check_keys(ck, _CLOCK_KEYS)
            if "origin_ms" in ck:
                fields["clock_origin_ms"] = _ms("origin_ms", ck["origin_ms"])
        fields["clock_speed"] = ck.get("speed", 1)
    members = []
    for i, t in enumerate(_tables("member", doc.get("member", [])), 1):
        with _under(f"member[{i}]"):
            members.append(_member(t))
    return Community(**fields, members=tuple(members))


def parse_community(text: str | bytes, source: str = "<text>") -> Community:
    """Validate a community file's text (bytes: UTF-8). Raises CommunityError, one line
    naming ``source``, the key and the problem."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig")  # a BOM (some Windows editors write one) is fine
        doc = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise CommunityError(None, f"not UTF-8 text (byte {exc.start})", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise CommunityError(None, f"not valid TOML: {exc}", source) from None
    try:
        return _community(doc)
    except CommunityError as exc:
        raise CommunityError(exc.key, exc.problem, source) from None


def community_from_dict(doc: Any, source: str = "<dict>") -> Community:
    """Validate a community given as :meth:`Community.to_dict` gives it (as a node log
    carries it). Raises CommunityError naming ``source`` and the key."""
    if type(doc) is not dict:
        raise CommunityError(None, f"must be a table, got {show_value(doc)}", source)
    try:
        return _community(doc)
    except CommunityError as exc:
        raise CommunityError(exc.key, exc.problem, source) from None


def load_community(path: str | os.PathLike[str]) -> Community:
    """Read and validate the community file at ``path`` (CommunityError on any problem,
    including a file that cannot be read)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CommunityError(None, f"cannot read: {exc.strerror or exc}", str(path)) from None
    return parse_community(data, str(path))


# -- writing ------------------------------------------------------------------------------


# The last ms a datetime can show (year 9999); later times get no comment in dump_community.
_MAX_ISO_MS = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)


def _comment(ms: int) -> str:
    return f"  # {_iso(ms)}" if ms <= _MAX_ISO_MS else ""


def _iso(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return text.replace(".000Z", "Z")


def dump_community(c: Community) -> str:
    """The TOML text of ``c``, every value written out; ``load_community`` reads it back to
    an equal Community (and so to the same id)."""
    d = c.to_dict()
    lines = ["# wattmesh community file (docs/node.md): the same bytes at every member's node"]
    for key, value in d.items():
        if key in ("clock", "member"):
            continue
        comment = _comment(value) if key == "start_ms" else ""
        lines.append(f"{key} = {toml_value(value)}{comment}")
    if "clock" in d:
        lines += ["", "[clock]"]
        for key, value in d["clock"].items():
            comment = _comment(value) if key == "origin_ms" else ""
            lines.append(f"{key} = {toml_value(value)}{comment}")
    for member in d["member"]:
        lines += ["", "[[member]]"]
        for key, value in member.items():
            if key != "meter":
                lines.append(f"{key} = {toml_value(value)}")
        for meter in member.get("meter", ()):
            lines += ["", "[[member.meter]]"]
            lines += [f"{key} = {toml_value(value)}" for key, value in meter.items()]
    return "\n".join(lines) + "\n"


# -- a street's first file, and its members one by one ------------------------------------

_TEMPLATE = """\
# The community file of {name} (docs/setup.md, docs/node.md). Every member's node needs the
# same bytes: once households have run `wattmesh init` with it, changing it means a new
# community. Units: ms, Wh, prices in micro-currency per kWh (230000 = 0.23 per kWh),
# money in nano-currency (10**9 = 1.00).

name = {name_value}
start_ms = {start} when the first interval starts (UTC)
interval_ms = 900000  # 15-minute delivery intervals
retail_price = 230000  # what the grid charges per kWh: no one buys from a neighbour above it
feedin_price = 80000  # what the grid pays per kWh: no one sells to a neighbour below it
fee_rate_ppm = 0  # a trade fee in parts per million of its value (0: none)
currency = "€"  # how a person sees money: a symbol or code (the files keep nano-currency)
storage_rate = 0  # nano per kWh stored per interval, shared by the storage providers

# One [[member]] per household; `wattmesh community add` appends the stanza that a
# household's `wattmesh init` prints. bmax: the Wh it may hold in storage.
"""


def community_template(name: str, start_ms: int, first: MemberSpec) -> str:
    """A commented community file for a new street, with ``first`` (the keeper's own
    household) as its only member. It parses to a valid :class:`Community`."""
    _name("name", name)
    when = f"  # {_iso(start_ms)}," if start_ms <= _MAX_ISO_MS else "  #"
    text = _TEMPLATE.format(name=name, name_value=toml_value(name),
                            start=toml_value(start_ms) + when)  # fmt: skip
    text = add_member(text, first)
    parse_community(text, "the template")  # it must stay a valid file
    return text


def add_member(text: str, member: MemberSpec) -> str:
    """``text`` (a community file) with ``member``'s stanza appended, leaving every other
    line and comment as it was. CommunityError if the peer id (or a meter) is there
    already, or the result does not validate."""
    try:
        tables = tomllib.loads(text).get("member", [])
    except tomllib.TOMLDecodeError as exc:
        raise CommunityError(None, f"not valid TOML: {exc}") from None
    tables = tables if isinstance(tables, list) else []
    if any(isinstance(t, dict) and t.get("peer_id") == member.peer_id for t in tables):
        raise CommunityError("member.peer_id", f"{member.peer_id} is a member already")
    taken = {m.get("id") for t in tables if isinstance(t, dict)
             for m in t.get("meter", []) if isinstance(m, dict)}  # fmt: skip
    for meter in member.meters:
        if meter.meter in taken:
            raise CommunityError("member.meter.id", f"meter {meter.meter} is registered already")
    d = member.to_dict()
    lines = ["", "[[member]]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in d.items() if k != "meter"]
    for meter in d.get("meter", ()):
        lines += ["", "[[member.meter]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in meter.items()]
    out = text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    parse_community(out, "the community file")
    return out
