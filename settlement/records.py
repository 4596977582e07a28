"""Typed, validated records: markets, orders, cancels, trades, accounts and meter readings.

Each record maps one line of the JSON Lines order log (``to_dict`` / ``from_dict``) and
refuses bad input with a :class:`RecordError` naming the field. Construction validates
too, so every instance is well formed; ``from_dict`` adds the shape checks (missing and
unknown fields) and, for orders, the market's price bounds.

Validation is written out by hand, one inline test per field with the message built only
on failure, because the replay validates millions of these.

The signed and hashed *body* of an order or cancel is its log form with defaults filled
in, with ``type`` (so an order's bytes can never pass for a cancel's) and without ``id``
and ``sig``. An order's id is the hex SHA-256 of the canonical body (docs/design.md).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from wattmesh.settlement.errors import RecordError

from .canonical import CanonicalError, record_id

if TYPE_CHECKING:
    from .keys import Ed25519PrivateKey

# settlement.keys (and with it cryptography, ~9 MB and 20 ms) loads when a record is
# signed or a signature checked, so a replay without --verify-signatures never loads it.


def _sign(key: Ed25519PrivateKey, body: dict) -> str:
    from .keys import sign

    return sign(key, body)


def _verify(signer: str, body: dict, sig: str) -> bool:
    from .keys import verify

    return verify(signer, body, sig)


__all__ = [
    "Account",
    "Cancel",
    "MAX_NAME",
    "MarketSpec",
    "Meter",
    "Order",
    "Reading",
    "RecordError",
    "Trade",
    "parse_record",
    "verify_signature",
]

MAX_NAME = 128  # longest owner, market or id string
_I64 = 2**63 - 1  # every integer must fit the engine's int64 columns and SQLite
_SIDES = ("bid", "ask")
_TIFS = ("gtc", "ioc", "fok")
_MODES = ("cda", "call")


def _is_sig_hex(value: Any) -> bool:
    # fromhex plus the round trip beats a regex here, and refuses upper case and spaces.
    if type(value) is not str or len(value) != 128:
        return False
    try:
        return bytes.fromhex(value).hex() == value
    except ValueError:
        return False


# Failure helpers: only reached once a fast inline check has failed, so they may be slow.


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail_int(field: str, value: Any, what: str) -> NoReturn:
    if type(value) is int and value > _I64:
        raise RecordError(field, f"{value} is above the largest allowed value {_I64}")
    raise RecordError(field, f"must be {what}, got {_show(value)}")


def _fail_count(field: str, value: Any) -> NoReturn:
    _fail_int(field, value, "a positive integer")


def _fail_amount(field: str, value: Any) -> NoReturn:
    _fail_int(field, value, "a non-negative integer")


def _fail_ms(field: str, value: Any) -> NoReturn:
    if type(value) is int and value < 0:
        raise RecordError(field, f"must be non-negative integer milliseconds, got {value}")
    _fail_int(field, value, "integer milliseconds")


def _fail_name(field: str, value: Any) -> NoReturn:
    if type(value) is str and value:
        raise RecordError(field, f"must be at most {MAX_NAME} characters, got {len(value)}")
    raise RecordError(field, f"must be a non-empty string, got {_show(value)}")


def _fail_choice(field: str, value: Any, choices: tuple[str, ...]) -> NoReturn:
    allowed = " or ".join(", ".join(repr(c) for c in choices).rsplit(", ", 1))
    raise RecordError(field, f"must be {allowed}, got {_show(value)}")


def _fail_sig(value: Any) -> NoReturn:
    raise RecordError("sig", f"must be 128 lower-case hex characters, got {_show(value)}")


def _check_shape(d: Any, kind: str, allowed: frozenset[str]) -> None:
    if type(d) is not dict:
        raise RecordError(None, f"{kind}: must be a JSON object, got {type(d).__name__}")
    if not allowed.issuperset(d):
        unknown = sorted(str(k) for k in d if k not in allowed)
        raise RecordError(unknown[0], "unknown field")
    tag = d.get("type", kind)
    if tag != kind:
        raise RecordError("type", f"must be {kind!r}, got {_show(tag)}")


def _id_of(body: dict[str, Any]) -> str:
    try:
        return record_id(body)
    except CanonicalError as exc:  # e.g. a str with a lone surrogate; name its field
        field = str(exc).split(":", 1)[0].removeprefix("$.") or None
        raise RecordError(field, str(exc).split(": ", 1)[-1]) from None


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """A market: its name and price bounds, integer micro-currency per kWh (inclusive)."""

    name: str = "energy"
    min_price: int = 1
    max_price: int = 10_000_000

    def __post_init__(self) -> None:
        if type(self.name) is not str or not 0 < len(self.name) <= MAX_NAME:
            _fail_name("name", self.name)
        if type(self.min_price) is not int or not 0 < self.min_price <= _I64:
            _fail_count("min_price", self.min_price)
        if type(self.max_price) is not int or not self.min_price <= self.max_price <= _I64:
            if type(self.max_price) is int and self.max_price < self.min_price:
                raise RecordError("max_price", f"{self.max_price} is below min_price")
            _fail_count("max_price", self.max_price)


_DEFAULT_MARKET = MarketSpec()
Markets = Mapping[str, MarketSpec] | MarketSpec | None


def _market_for(name: str, markets: Markets) -> MarketSpec:
    if markets is None:
        return _DEFAULT_MARKET
    if type(markets) is MarketSpec:
        return markets
    spec = markets.get(name)  # type: ignore[union-attr]
    if spec is None:
        raise RecordError("market", f"unknown market {_show(name)}")
    return spec


_SHARED = {w: w for w in ("bid", "ask", "gtc", "ioc", "fok")}  # one object per word
_intern = sys.intern
_ORDER_KEYS = frozenset(
    ("type", "id", "market", "side", "price", "qty", "owner", "ts", "interval", "tif", "sig")
)


# init=False: the generated frozen __init__ stores each field through object.__setattr__,
# which made construction about half of from_dict's time. The hand-written __init__ below
# validates each argument and stores it straight through the slot's descriptor.
@dataclass(frozen=True, slots=True, init=False)
class Order:
    """A limit order. ``id=""`` (the default) means: compute it from the body.

    ``dataclasses.replace`` keeps the old id; pass ``id=""`` to recompute it.
    """

    market: str
    side: str  # "bid" | "ask"
    price: int  # micro-currency per kWh
    qty: int  # Wh
    owner: str
    ts: int  # ms since the epoch
    interval: int | None = None  # start of the delivery interval, ms
    tif: str = "gtc"  # "gtc" | "ioc" | "fok"
    id: str = ""
    sig: str | None = None

    def __init__(
        self,
        market: str,
        side: str,
        price: int,
        qty: int,
        owner: str,
        ts: int,
        interval: int | None = None,
        tif: str = "gtc",
        id: str = "",
        sig: str | None = None,
    ) -> None:
        if type(market) is not str or not 0 < len(market) <= MAX_NAME:
            _fail_name("market", market)
        if (side != "bid" and side != "ask") or type(side) is not str:
            _fail_choice("side", side, _SIDES)
        if type(price) is not int or not 0 < price <= _I64:
            _fail_count("price", price)
        if type(qty) is not int or not 0 < qty <= _I64:
            _fail_count("qty", qty)
        if type(owner) is not str or not 0 < len(owner) <= MAX_NAME:
            _fail_name("owner", owner)
        if type(ts) is not int or not 0 <= ts <= _I64:
            _fail_ms("ts", ts)
        if interval is not None and (type(interval) is not int or not 0 <= interval <= _I64):
            _fail_ms("interval", interval)
        if (tif != "gtc" and tif != "ioc" and tif != "fok") or type(tif) is not str:
            _fail_choice("tif", tif, _TIFS)
        if sig is not None and not _is_sig_hex(sig):
            _fail_sig(sig)
        if id != "" and (type(id) is not str or len(id) > MAX_NAME):
            _fail_name("id", id)
        # Equal words share one object: a node holds every open order and a replay every
        # order of its Python path, and a parsed "energy" or "bid" each costs 50 bytes more.
        _set_market(self, _intern(market))
        _set_side(self, _SHARED[side])
        _set_price(self, price)
        _set_qty(self, qty)
        _set_owner(self, owner)
        _set_ts(self, ts)
        _set_interval(self, interval)
        _set_tif(self, _SHARED[tif])
        _set_sig(self, sig)
        _set_id(self, id or _id_of(self.body()))

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], markets: Markets = None, *, check_id: bool = False
    ) -> Order:
        """Validate one order log line (``type`` optional, ``id`` computed when absent).

        ``markets``: a MarketSpec whose bounds apply, or a name -> MarketSpec mapping in
        which ``market`` must be found; None means the default MarketSpec. With
        ``check_id`` a given id must equal :meth:`computed_id` (do this for network input).
        """
        _check_shape(d, "order", _ORDER_KEYS)
        get = d.get
        oid = get("id")
        if oid is None:
            oid = ""
        elif oid == "":
            _fail_name("id", oid)
        try:
            order = cls(
                d["market"],
                d["side"],
                d["price"],
                d["qty"],
                d["owner"],
                d["ts"],
                get("interval"),
                get("tif", "gtc"),
                oid,
                get("sig"),
            )
        except KeyError as exc:
            raise RecordError(exc.args[0], "missing") from None
        spec = _market_for(order.market, markets)
        price = order.price
        if price > spec.max_price:
            raise RecordError("price", f"{price} is above the market's maximum {spec.max_price}")
        if price < spec.min_price:
            raise RecordError("price", f"{price} is below the market's minimum {spec.min_price}")
        if check_id and oid:
            expected = order.computed_id()
            if oid != expected:
                raise RecordError("id", f"does not match the order's content, {expected}")
        return order

    def body(self) -> dict[str, Any]:
        """The signed and hashed content: the log line without ``id`` and ``sig``."""
        return {
            "type": "order",
            "market": self.market,
            "side": self.side,
            "price": self.price,
            "qty": self.qty,
            "owner": self.owner,
            "ts": self.ts,
            "interval": self.interval,
            "tif": self.tif,
        }

    def computed_id(self) -> str:
        """The id this order's content names: hex SHA-256 of its canonical body."""
        return _id_of(self.body())

    def to_dict(self) -> dict[str, Any]:
        """The log line: the body plus ``id``, and ``sig`` when signed."""
        d = self.body()
        d["id"] = self.id
        if self.sig is not None:
            d["sig"] = self.sig
        return d

    def signed(self, key: Ed25519PrivateKey) -> Order:
        """A copy signed by ``key``, which must be the owner's (owner = its peer id)."""
        _check_signer(self.owner, key)
        return dataclasses.replace(self, sig=_sign(key, self.body()))


(
    _set_market,
    _set_side,
    _set_price,
    _set_qty,
    _set_owner,
    _set_ts,
    _set_interval,
    _set_tif,
    _set_id,
    _set_sig,
) = (Order.__dict__[f.name].__set__ for f in dataclasses.fields(Order))


_CANCEL_KEYS = frozenset(("type", "id", "owner", "ts", "sig"))


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel of order ``id`` by its owner. ``id`` names the target and is in the body."""

    id: str
    owner: str
    ts: int
    sig: str | None = None

    def __post_init__(self) -> None:
        v: Any = self.id
        if type(v) is not str or not 0 < len(v) <= MAX_NAME:
            _fail_name("id", v)
        v = self.owner
        if type(v) is not str or not 0 < len(v) <= MAX_NAME:
            _fail_name("owner", v)
        v = self.ts
        if type(v) is not int or not 0 <= v <= _I64:
            _fail_ms("ts", v)
        v = self.sig
        if v is not None and not _is_sig_hex(v):
            _fail_sig(v)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cancel:
        """Validate one cancel log line (``type`` optional)."""
        _check_shape(d, "cancel", _CANCEL_KEYS)
        try:
            return cls(d["id"], d["owner"], d["ts"], d.get("sig"))
        except KeyError as exc:
            raise RecordError(exc.args[0], "missing") from None

    def body(self) -> dict[str, Any]:
        """The signed content: the log line without ``sig``."""
        return {"type": "cancel", "id": self.id, "owner": self.owner, "ts": self.ts}

    def computed_id(self) -> str:
        """The id of this cancel message itself (for de-duplication), not of its target."""
        return _id_of(self.body())

    def to_dict(self) -> dict[str, Any]:
        """The log line: the body, plus ``sig`` when signed."""
        d = self.body()
        if self.sig is not None:
            d["sig"] = self.sig
        return d

    def signed(self, key: Ed25519PrivateKey) -> Cancel:
        """A copy signed by ``key``, which must be the owner's (owner = its peer id)."""
        _check_signer(self.owner, key)
        return dataclasses.replace(self, sig=_sign(key, self.body()))


def _check_signer(signer_id: str, key: Ed25519PrivateKey, field: str = "owner") -> None:
    from .keys import peer_id_of

    signer = peer_id_of(key)
    if signer != signer_id:
        raise ValueError(f"{field} is {signer_id!r} but the key belongs to {signer!r}")


def verify_signature(record: Order | Cancel) -> bool:
    """True iff the record carries a valid signature by its owner (a peer id).

    This checks the signature only; for an order from the network also check that
    ``record.id == record.computed_id()`` (or parse it with ``check_id=True``).
    """
    sig = record.sig
    return sig is not None and _verify(record.owner, record.body(), sig)


_TRADE_KEYS = frozenset(
    ("type", "seq", "mode", "interval", "ts", "buyer", "seller", "bid", "ask", "qty", "price")
)


@dataclass(frozen=True, slots=True)
class Trade:
    """One fill: ``qty`` Wh from ``seller`` to ``buyer`` at ``price``; bid/ask are order ids."""

    seq: int
    mode: str  # "cda" | "call"
    interval: int | None
    ts: int
    buyer: str
    seller: str
    bid: str
    ask: str
    qty: int
    price: int

    def __post_init__(self) -> None:
        v: Any = self.seq
        if type(v) is not int or not 0 <= v <= _I64:
            _fail_amount("seq", v)
        v = self.mode
        if (v != "cda" and v != "call") or type(v) is not str:
            _fail_choice("mode", v, _MODES)
        v = self.interval
        if v is not None and (type(v) is not int or not 0 <= v <= _I64):
            _fail_ms("interval", v)
        v = self.ts
        if type(v) is not int or not 0 <= v <= _I64:
            _fail_ms("ts", v)
        for name in ("buyer", "seller", "bid", "ask"):
            v = getattr(self, name)
            if type(v) is not str or not 0 < len(v) <= MAX_NAME:
                _fail_name(name, v)
        v = self.qty
        if type(v) is not int or not 0 < v <= _I64:
            _fail_count("qty", v)
        v = self.price
        if type(v) is not int or not 0 < v <= _I64:
            _fail_count("price", v)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trade:
        """Validate a trade dict (an optional ``"type": "trade"`` is accepted)."""
        _check_shape(d, "trade", _TRADE_KEYS)
        try:
            return cls(
                d["seq"],
                d["mode"],
                d["interval"],
                d["ts"],
                d["buyer"],
                d["seller"],
                d["bid"],
                d["ask"],
                d["qty"],
                d["price"],
            )
        except KeyError as exc:
            raise RecordError(exc.args[0], "missing") from None

    def to_dict(self) -> dict[str, Any]:
        """The trade as a plain dict (no ``type`` key)."""
        return {
            "seq": self.seq,
            "mode": self.mode,
            "interval": self.interval,
            "ts": self.ts,
            "buyer": self.buyer,
            "seller": self.seller,
            "bid": self.bid,
            "ask": self.ask,
            "qty": self.qty,
            "price": self.price,
        }


_ACCOUNT_KEYS = frozenset(("type", "owner", "energy", "money", "bmax"))


@dataclass(frozen=True, slots=True)
class Account:
    """Opening balances: ``energy`` Wh, ``money`` nano-currency, cap ``bmax`` Wh (or None)."""

    owner: str
    energy: int
    money: int
    bmax: int | None = None

    def __post_init__(self) -> None:
        v: Any = self.owner
        if type(v) is not str or not 0 < len(v) <= MAX_NAME:
            _fail_name("owner", v)
        v = self.energy
        if type(v) is not int or not 0 <= v <= _I64:
            _fail_amount("energy", v)
        v = self.money
        if type(v) is not int or not 0 <= v <= _I64:
            _fail_amount("money", v)
        v = self.bmax
        if v is not None:
            if type(v) is not int or not 0 < v <= _I64:
                _fail_count("bmax", v)
            if self.energy > v:
                raise RecordError("energy", f"{self.energy} is above bmax {v}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Account:
        """Validate one account log line (``type`` optional; ``bmax`` required, may be null)."""
        _check_shape(d, "account", _ACCOUNT_KEYS)
        try:
            return cls(d["owner"], d["energy"], d["money"], d["bmax"])
        except KeyError as exc:
            raise RecordError(exc.args[0], "missing") from None

    def to_dict(self) -> dict[str, Any]:
        """The log line."""
        return {
            "type": "account",
            "owner": self.owner,
            "energy": self.energy,
            "money": self.money,
            "bmax": self.bmax,
        }


_METER_KEYS = frozenset(("type", "meter", "owner", "max_power_w"))


@dataclass(frozen=True, slots=True)
class Meter:
    """A meter registered to one household: its peer id, the owner, and its declared
    maximum power in W (None: not declared, no limit), which bounds what one reading may
    claim: at most ``max_power_w`` × the reading's duration."""

    meter: str
    owner: str
    max_power_w: int | None = None

    def __post_init__(self) -> None:
        for name in ("meter", "owner"):
            v: Any = getattr(self, name)
            if type(v) is not str or not 0 < len(v) <= MAX_NAME:
                _fail_name(name, v)
        v = self.max_power_w
        if v is not None and (type(v) is not int or not 0 < v <= _I64):
            _fail_count("max_power_w", v)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Meter:
        """Validate one meter line (``type`` optional; ``max_power_w`` optional)."""
        _check_shape(d, "meter", _METER_KEYS)
        try:
            return cls(d["meter"], d["owner"], d.get("max_power_w"))
        except KeyError as exc:
            raise RecordError(exc.args[0], "missing") from None

    def to_dict(self) -> dict[str, Any]:
        """The log line (``max_power_w`` only when declared)."""
        d: dict[str, Any] = {"type": "meter", "meter": self.meter, "owner": self.owner}
        if self.max_power_w is not None:
            d["max_power_w"] = self.max_power_w
        return d

    def max_wh(self, duration_ms: int) -> int | None:
        """The most energy (Wh) the meter can measure in ``duration_ms``; None: no limit."""
        if self.max_power_w is None:
            return None
        return self.max_power_w * duration_ms // 3_600_000


_READING_KEYS = frozenset(("type", "meter", "start", "end", "produced", "consumed", "seq", "sig"))


@dataclass(frozen=True, slots=True)
class Reading:
    """What one meter measured over ``[start, end)`` (ms): ``produced`` and ``consumed`` Wh.

    ``meter`` is the meter's own peer id (its Ed25519 key, registered to one household by a
    ``meter`` ledger entry); ``seq`` counts the meter's readings from 1. The signature covers
    the body, which includes ``type`` so a reading's bytes never pass for an order's.
    This checks the record's form only; :mod:`wattmesh.meters.validate` checks it against
    the meter's registration and history.
    """

    meter: str
    start: int
    end: int
    produced: int
    consumed: int
    seq: int
    sig: str | None = None

    def __post_init__(self) -> None:
        v: Any = self.meter
        if type(v) is not str or not 0 < len(v) <= MAX_NAME:
            _fail_name("meter", v)
        for name in ("start", "end"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= _I64:
                _fail_ms(name, v)
        if self.end <= self.start:
            raise RecordError("end", f"must be after start {self.start}, got {self.end}")
        for name in ("produced", "consumed"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= _I64:
                _fail_amount(name, v)
        v = self.seq
        if type(v) is not int or not 0 < v <= _I64:
            _fail_count("seq", v)
        v = self.sig
        if v is not None and not _is_sig_hex(v):
            _fail_sig(v)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reading:
        """Validate one reading line (``type`` optional)."""
        _check_shape(d, "reading", _READING_KEYS)
        try:
            return cls(
                d["meter"], d["start"], d["end"], d["produced"], d["consumed"], d["seq"],
                d.get("sig"),
            )  # fmt: skip
        except KeyError as exc:
            raise RecordError(exc.args[0], "missing") from None

    def body(self) -> dict[str, Any]:
        """The signed content: the log line without ``sig``."""
        return {
            "type": "reading",
            "meter": self.meter,
            "start": self.start,
            "end": self.end,
            "produced": self.produced,
            "consumed": self.consumed,
            "seq": self.seq,
        }

    def computed_id(self) -> str:
        """The id of this reading (hex SHA-256 of its body), for de-duplication."""
        return _id_of(self.body())

    def to_dict(self) -> dict[str, Any]:
        """The log line: the body, plus ``sig`` when signed."""
        d = self.body()
        if self.sig is not None:
            d["sig"] = self.sig
        return d

    def signed(self, key: Ed25519PrivateKey) -> Reading:
        """A copy signed by ``key``, which must be the meter's (meter = its peer id)."""
        _check_signer(self.meter, key, "meter")
        return dataclasses.replace(self, sig=_sign(key, self.body()))

    def verify_signature(self) -> bool:
        """True iff the reading carries a valid signature by its meter's key."""
        return self.sig is not None and _verify(self.meter, self.body(), self.sig)


def parse_record(
    d: dict[str, Any], markets: Markets = None
) -> Account | Order | Cancel | Meter | Reading:
    """Validate one order-log line, dispatching on its ``type``."""
    if type(d) is not dict:
        raise RecordError(None, f"a log line must be a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    if kind == "order":
        return Order.from_dict(d, markets)
    if kind == "cancel":
        return Cancel.from_dict(d)
    if kind == "account":
        return Account.from_dict(d)
    if kind == "reading":
        return Reading.from_dict(d)
    if kind == "meter":
        return Meter.from_dict(d)
    if kind is None:
        raise RecordError("type", "missing")
    raise RecordError(
        "type",
        f"must be 'account', 'order', 'cancel', 'meter' or 'reading', got {_show(kind)}",
    )
