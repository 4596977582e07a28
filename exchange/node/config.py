"""A household node's data directory, its ``node.toml``, and ``wattmesh init`` (docs/node.md).

The data directory (default ``$XDG_DATA_HOME/wattmesh``, else ``~/.local/share/wattmesh``)::

    community.toml    a copy of the community file the node was set up with
    household.key     the household's Ed25519 key (0600): its peer id is its account
    node.toml         this node's settings, commented, for the household to edit
    ledger.sqlite     the node's copy of the community ledger (members only)
    messages.sqlite   orders, cancels and readings heard from the network (made by the node)

:func:`init_data_dir` sets one up: it checks everything first and writes nothing when a
check fails, keeps what is already there (the key, the household's edits to node.toml, the
ledger), and creates the ledger's opening batch only for a member of the community.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiaddr import Multiaddr

from wattmesh.exchange.atomic_file import write_atomic
from wattmesh.exchange.community_file import (
    Community,
    CommunityError,
    ConfigError,
    check_keys,
    parse_community,
    show_value,
    toml_value,
)
from wattmesh.exchange.node.defaults import (
    DEFAULT_API_LISTEN,
    DEFAULT_FILES,
    DEFAULT_LISTEN,
    NODE_TOML,
    default_data_dir,
)
from wattmesh.matching import MAX_PRICE, MAX_QTY
from wattmesh.meters.simulated import BACKENDS as METER_BACKENDS
from wattmesh.settlement.errors import WattmeshError
from wattmesh.settlement.keys import (
    Ed25519PrivateKey,
    generate_key,
    peer_id_of,
    public_key_from_peer_id,
    read_key_file,
    save_key,
)
from wattmesh.settlement.ledger import Ledger

__all__ = [
    "ApiConfig",
    "BotConfig",
    "DEFAULT_API_LISTEN",
    "DEFAULT_LISTEN",
    "InitError",
    "InitResult",
    "MeterConfig",
    "NODE_TOML",
    "NodeConfig",
    "NodeConfigError",
    "default_data_dir",
    "init_data_dir",
    "ledger_problem",
    "load_node_config",
    "write_node_config",
    "parse_api_listen",
    "parse_bootstrap",
    "parse_listen",
    "save_bot_config",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
METER_SOURCES = ("none", "simulated", "dsmr", "sunspec", "csv")
_I64 = 2**63 - 1


class NodeConfigError(ConfigError):
    """A node.toml (or a value meant for one) that does not validate. ``str()`` is one
    line: ``source: key: problem``."""


class InitError(WattmeshError, ValueError):
    """``wattmesh init`` refused (the message says why); nothing was changed."""


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices or type(value) is not str:
        NodeConfigError.bad(key, " or ".join(f'"{c}"' for c in choices), value)
    return value


def _relpath(key: str, value: Any) -> str:
    if type(value) is not str or not value or "\0" in value:
        NodeConfigError.bad(key, "a file path (relative to the data directory)", value)
    return value


# -- the records --------------------------------------------------------------------------


@dataclass(frozen=True)
class BotConfig:
    """The Energo threshold agent trading for the household (agents/threshold.py): a bid
    at ``buy_price`` when the balance is below ``lower_wh``, an ask at ``sell_price`` when
    it is above ``upper_wh``. Prices in micro-currency per kWh, thresholds in Wh."""

    enabled: bool = False
    buy_price: int = 200_000
    sell_price: int = 120_000
    lower_wh: int = 1_000
    upper_wh: int = 4_000

    def __post_init__(self) -> None:
        if type(self.enabled) is not bool:
            NodeConfigError.bad("bot.enabled", "true or false", self.enabled)
        NodeConfigError.integer("bot.buy_price", self.buy_price, 1, MAX_PRICE)
        NodeConfigError.integer("bot.sell_price", self.sell_price, 1, MAX_PRICE)
        NodeConfigError.integer("bot.lower_wh", self.lower_wh, 0, MAX_QTY)
        NodeConfigError.integer("bot.upper_wh", self.upper_wh, 0, MAX_QTY)
        if self.upper_wh <= self.lower_wh:
            raise NodeConfigError(
                "bot.upper_wh", f"{self.upper_wh} must be above lower_wh {self.lower_wh}"
            )


@dataclass(frozen=True)
class MeterConfig:
    """Where the node's meter readings come from (meters/live.py), signed with the meter
    key at ``key``: ``"none"`` (no meter), ``"simulated"`` (meters/simulated.py, with
    ``peak_w``, ``annual_kwh``, ``seed``, ``backend``), or a real meter read live:
    ``"dsmr"`` (a P1 port at ``device``, ``baudrate``), ``"sunspec"`` (an inverter at
    ``host``, ``port``, ``unit``) or ``"csv"`` (a growing file at ``path``). ``poll_ms``:
    wall ms between reads of an inverter or a file. Paths are relative to the data dir."""

    source: str = "none"
    key: str = "meter.key"
    peak_w: int = 4000
    annual_kwh: int = 3500
    seed: int = 0
    backend: str = "builtin"
    device: str = "/dev/ttyUSB0"
    baudrate: int = 115200
    host: str = ""
    port: int = 502
    unit: int = 1
    path: str = "meter.csv"
    poll_ms: int = 10_000

    def __post_init__(self) -> None:
        _choice("meter.source", self.source, METER_SOURCES)
        _relpath("meter.key", self.key)
        NodeConfigError.integer("meter.peak_w", self.peak_w, 0)
        NodeConfigError.integer("meter.annual_kwh", self.annual_kwh, 0)
        NodeConfigError.integer("meter.seed", self.seed, -_I64)
        _choice("meter.backend", self.backend, METER_BACKENDS)
        if type(self.device) is not str or not self.device or "\0" in self.device:
            NodeConfigError.bad("meter.device", "a serial device, FIFO or file path", self.device)
        NodeConfigError.integer("meter.baudrate", self.baudrate, 1, 4_000_000)
        if type(self.host) is not str or any(c.isspace() or c == "\0" for c in self.host):
            NodeConfigError.bad("meter.host", "a host name or IP address", self.host)
        if self.source == "sunspec" and not self.host:
            raise NodeConfigError("meter.host", 'missing: source "sunspec" needs the '
                                  "inverter's address")  # fmt: skip
        NodeConfigError.integer("meter.port", self.port, 1, 65535)
        NodeConfigError.integer("meter.unit", self.unit, 0, 247)
        _relpath("meter.path", self.path)
        NodeConfigError.integer("meter.poll_ms", self.poll_ms, 10, 3_600_000)


def parse_api_listen(value: Any) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); ``"off"`` -> None."""
    if value == "off":
        return None
    if type(value) is not str or ":" not in value:
        NodeConfigError.bad("api.listen", 'HOST:PORT like "127.0.0.1:8480", or "off"', value)
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        NodeConfigError.bad("api.listen", 'HOST:PORT like "127.0.0.1:8480", or "off"', value)
    return host, int(port)


@dataclass(frozen=True)
class ApiConfig:
    """The node's HTTP API and web page (docs/api.md): where it listens (``"off"``: no
    API), the requests per second each credential may make (with bursts of twice that),
    and how many event streams may be open at once."""

    listen: str = DEFAULT_API_LISTEN
    rate: int = 20
    max_streams: int = 8

    def __post_init__(self) -> None:
        parse_api_listen(self.listen)
        NodeConfigError.integer("api.rate", self.rate, 1, 10_000)
        NodeConfigError.integer("api.max_streams", self.max_streams, 1, 1_000)

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port), or None when the API is off."""
        return parse_api_listen(self.listen)


@dataclass(frozen=True)
class NodeConfig:
    """A node's settings; the file paths are resolved against the data directory."""

    data_dir: Path
    community: Path
    key: Path
    ledger: Path
    store: Path
    listen: str = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    bot: BotConfig = field(default_factory=BotConfig)
    meter: MeterConfig = field(default_factory=MeterConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    log_level: str = "info"

    @property
    def meter_key(self) -> Path:
        """The meter's key file (``meter.key`` in node.toml, relative to the data dir)."""
        return self.data_dir / self.meter.key


def parse_listen(value: Any) -> str:
    if type(value) is not str:
        NodeConfigError.bad("listen", "a multiaddr like /ip4/0.0.0.0/tcp/4001", value)
    try:
        Multiaddr(value)
    except Exception as exc:  # multiaddr raises several kinds of errors for a bad string
        raise NodeConfigError("listen", f"not a multiaddr: {exc}") from None
    return value


def parse_bootstrap(value: Any) -> tuple[str, ...]:
    if type(value) not in (list, tuple):
        NodeConfigError.bad("bootstrap", "a list of multiaddrs", value)
    for i, addr in enumerate(value, 1):
        key = f"bootstrap[{i}]"
        if type(addr) is not str:
            NodeConfigError.bad(key, "a multiaddr string", addr)
        try:
            peer = Multiaddr(addr).value_for_protocol("p2p")
        except Exception as exc:  # a bad string, or no /p2p/ part
            raise NodeConfigError(
                key, f"{addr!r} must be a multiaddr ending in /p2p/<peer id> ({exc})"
            ) from None
        try:
            public_key_from_peer_id(str(peer))
        except ValueError as exc:
            raise NodeConfigError(key, str(exc)) from None
    return tuple(value)


# -- reading ------------------------------------------------------------------------------

_TOP_KEYS = ("community", "key", "ledger", "store", "listen", "bootstrap", "log_level", "bot",
             "meter", "api")  # fmt: skip
_BOT_KEYS = ("enabled", "buy_price", "sell_price", "lower_wh", "upper_wh")
_METER_KEYS = ("source", "key", "peak_w", "annual_kwh", "seed", "backend", "device", "baudrate",
               "host", "port", "unit", "path", "poll_ms")  # fmt: skip
_API_KEYS = ("listen", "rate", "max_streams")


def _table(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    t = doc.get(key, {})
    if type(t) is not dict:
        NodeConfigError.bad(key, f"a [{key}] table", t)
    return t


def _config(data_dir: Path, doc: dict[str, Any]) -> NodeConfig:
    check_keys(doc, _TOP_KEYS, error=NodeConfigError)
    paths = {k: data_dir / _relpath(k, doc.get(k, v)) for k, v in DEFAULT_FILES.items()}
    bot, meter, api = _table(doc, "bot"), _table(doc, "meter"), _table(doc, "api")
    check_keys(bot, _BOT_KEYS, prefix="bot.", error=NodeConfigError)
    check_keys(meter, _METER_KEYS, prefix="meter.", error=NodeConfigError)
    check_keys(api, _API_KEYS, prefix="api.", error=NodeConfigError)
    return NodeConfig(
        data_dir=data_dir,
        **paths,
        listen=parse_listen(doc.get("listen", DEFAULT_LISTEN)),
        bootstrap=parse_bootstrap(doc.get("bootstrap", [])),
        bot=BotConfig(**bot),
        meter=MeterConfig(**meter),
        api=ApiConfig(**api),
        log_level=_choice("log_level", doc.get("log_level", "info"), LOG_LEVELS),
    )


def load_node_config(data_dir: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate ``data_dir/node.toml``. NodeConfigError (one line naming the file
    and the key) on any problem; a missing data dir or node.toml says to run init first."""
    data_dir = Path(data_dir)
    path = data_dir / NODE_TOML
    hint = f"run `wattmesh init --community FILE --data-dir {data_dir}` first"
    if not data_dir.is_dir():
        raise NodeConfigError(None, f"no data directory {data_dir}: {hint}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise NodeConfigError(None, f"no {NODE_TOML} in {data_dir}: {hint}") from None
    except OSError as exc:
        raise NodeConfigError(None, f"cannot read: {exc.strerror or exc}", str(path)) from None
    except UnicodeDecodeError as exc:
        raise NodeConfigError(None, f"not UTF-8 text (byte {exc.start})", str(path)) from None
    try:
        return _config(data_dir, tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise NodeConfigError(None, f"not valid TOML: {exc}", str(path)) from None
    except NodeConfigError as exc:
        raise NodeConfigError(exc.key, exc.problem, str(path)) from None


# -- writing ------------------------------------------------------------------------------

_TEMPLATE = """\
# wattmesh node settings for this household (docs/node.md). Edit freely: `wattmesh init`
# never overwrites this file. File paths are relative to this directory.

community = {community}  # the community file, the same at every member's node
key = {key}  # this household's private key; its peer id is the household's account
ledger = {ledger}  # this node's copy of the community ledger
store = {store}  # orders, cancels and readings heard from the network
listen = {listen}  # libp2p address to listen on (open this TCP port to neighbours)
bootstrap = {bootstrap}  # neighbours' nodes to dial at start: /ip4/ADDR/tcp/PORT/p2p/PEER_ID
log_level = {log_level}  # debug, info, warning or error

[bot]  # the threshold agent: trades for the household when its balance crosses a threshold
enabled = {bot.enabled}  # true: let the agent post orders for this household
buy_price = {bot.buy_price}  # bid price, micro-currency per kWh (230000 = 0.23 per kWh)
sell_price = {bot.sell_price}  # ask price, micro-currency per kWh
lower_wh = {bot.lower_wh}  # below this energy balance (Wh) bid back up to upper_wh
upper_wh = {bot.upper_wh}  # above this energy balance (Wh) offer the surplus

[meter]  # where this node's meter readings come from (docs/meters-real.md)
source = {meter.source}  # "none", "simulated", "dsmr" (P1 port), "sunspec" (inverter) or "csv"
key = {meter.key}  # the meter's own key (make it: wattmesh meter keygen --out meter.key)
peak_w = {meter.peak_w}  # simulated: PV array size, W peak (0: no PV)
annual_kwh = {meter.annual_kwh}  # simulated: household consumption per year, kWh
seed = {meter.seed}  # simulated: noise seed
backend = {meter.backend}  # simulated: "builtin", "pvlib" (needs wattmesh[sim]) or "auto"
device = {meter.device}  # dsmr: the P1 serial device, or a FIFO or file telegrams go to
baudrate = {meter.baudrate}  # dsmr: the serial port's speed (DSMR 4 and 5: 115200)
host = {meter.host}  # sunspec: the inverter's IP address or host name
port = {meter.port}  # sunspec: its Modbus TCP port
unit = {meter.unit}  # sunspec: its Modbus unit id
path = {meter.path}  # csv: the file a logger appends rows to (docs/meters.md, "CSV")
poll_ms = {meter.poll_ms}  # sunspec and csv (and a dsmr file): ms between reads

[api]  # the node's HTTP API and web page (docs/api.md); its token is in api-token
listen = {api.listen}  # HOST:PORT, or "off"; 0.0.0.0 exposes it to the LAN (docs/api.md)
rate = {api.rate}  # requests per second per token or page session (bursts of twice that)
max_streams = {api.max_streams}  # event streams (pages, bots) open at once
"""


def write_node_config(
    data_dir: str | os.PathLike[str],
    *,
    listen: str = DEFAULT_LISTEN,
    bootstrap: Iterable[str] = (),
    bot: BotConfig = BotConfig(),  # noqa: B008 (frozen, so one shared default is safe)
    meter: MeterConfig = MeterConfig(),  # noqa: B008
    api: ApiConfig = ApiConfig(),  # noqa: B008
    log_level: str = "info",
) -> Path:
    """Write ``data_dir/node.toml`` (atomically, replacing any) as a commented template
    with the default file names and these settings; return its path. The values are
    checked first (NodeConfigError)."""
    parse_listen(listen)
    bootstrap = parse_bootstrap(list(bootstrap))
    _choice("log_level", log_level, LOG_LEVELS)
    values = {k: toml_value(v) for k, v in DEFAULT_FILES.items()}
    text = _TEMPLATE.format(
        **values,
        listen=toml_value(listen),
        bootstrap=toml_value(list(bootstrap)),
        log_level=toml_value(log_level),
        bot=_Literals(bot),
        meter=_Literals(meter),
        api=_Literals(api),
    )
    path = Path(data_dir) / NODE_TOML
    write_atomic(path, text.encode())  # mode 0644: node.toml holds no secret
    return path


def save_bot_config(data_dir: str | os.PathLike[str], bot: BotConfig) -> Path:
    """Write ``bot`` into node.toml's ``[bot]`` table, keeping every other line and every
    comment as the household left them (atomically; the result is checked first)."""
    path = Path(data_dir) / NODE_TOML
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    values = {k: toml_value(getattr(bot, k)) for k in _BOT_KEYS}
    start = next((i for i, line in enumerate(lines) if line.split("#")[0].strip() == "[bot]"),
                 None)  # fmt: skip
    if start is None:
        lines += ["", "[bot]"]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))  # fmt: skip
    for i in range(start + 1, end):
        key, eq, rest = lines[i].partition("=")
        if eq and key.strip() in values:
            comment = rest[rest.index("#"):] if "#" in rest else ""
            value = values.pop(key.strip())
            lines[i] = f"{key.strip()} = {value}" + (f"  {comment}" if comment else "")
    lines[end:end] = [f"{k} = {v}" for k, v in values.items()]  # keys the file lacked
    text = "\n".join(lines) + "\n"
    _config(Path(data_dir), tomllib.loads(text))  # never write a file the node cannot read
    write_atomic(path, text.encode())
    return path


class _Literals:
    """``{bot.buy_price}`` in the template: the TOML literal of an attribute."""

    def __init__(self, obj: object) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> str:
        return toml_value(getattr(self._obj, name))


# -- wattmesh init ------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    """What :func:`init_data_dir` did. ``member``: the key's peer id is in the community
    file (then the ledger exists afterwards); ``created``: the files it made."""

    data_dir: Path
    peer_id: str
    created_key: bool
    member: bool
    ledger_created: bool
    message: str
    created: tuple[Path, ...] = ()


def _read_community(path: Path) -> tuple[bytes, Community]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommunityError(None, f"cannot read: {exc.strerror or exc}", str(path)) from None
    return data, parse_community(data, str(path))


def ledger_problem(path: Path, community: Community) -> str | None:
    """None if the ledger at ``path`` is empty; '' if its opening batch is the one
    ``community`` gives; else what differs."""
    want = [(k, b, community.genesis_ts) for k, b in community.genesis_items()]
    with Ledger.open(path, create=False) as led:
        if len(led) == 0:
            return None
        got = [(e.kind, e.body, e.ts) for e in itertools.islice(led.entries(), len(want) + 1)]
    extra = got[len(want) :]
    # The batch is longer (say a member more) if the next entry is one of its kinds at its ts.
    longer = (
        bool(extra)
        and extra[0][0] in ("member", "opening", "meter")
        and (extra[0][2] == community.genesis_ts)
    )
    if got[: len(want)] == want and not longer:
        return ""
    for i, (g, w) in enumerate(zip(got, want, strict=False), 1):
        if g != w:
            return f"entry {i}: {_difference(g, w)}"
    return f"its opening batch has more than the {len(want)} entries the file gives"


def _difference(got: tuple[str, dict, int], want: tuple[str, dict, int]) -> str:
    """The first difference between a ledger entry and the one the file gives, briefly."""
    if got[0] != want[0]:
        return f"a {got[0]} entry where the file gives a {want[0]}"
    if got[2] != want[2]:
        return f"ts {got[2]} where the file's start_ms is {want[2]}"
    for k in sorted(got[1].keys() | want[1].keys()):
        a, b = got[1].get(k), want[1].get(k)
        if a != b:
            return f"{got[0]} {k} is {show_value(a)} where the file gives {show_value(b)}"
    return "differs"  # not reached: the entries differ somewhere


def _stanza(peer_id: str, community: Community) -> str:
    bmax = int(statistics.median(m.bmax for m in community.members))
    return (
        f"[[member]]\npeer_id = {toml_value(peer_id)}\n"
        f"bmax = {bmax}  # Wh you may hold (the community's median); agree it with the keeper"
    )


def init_data_dir(
    community_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    key_path: str | os.PathLike[str] | None = None,
) -> InitResult:
    """Set up (or check) a node's data directory for the community file at
    ``community_path``; see the module docstring and docs/node.md.

    Raises CommunityError (a bad community file), NodeConfigError (a bad existing
    node.toml), InitError (a different community file or ledger already there, a key that
    cannot be used) or LedgerError (an existing ledger.sqlite that is not a ledger), in
    every case before anything is written. OSError if writing fails.
    """
    community_path, data_dir = Path(community_path), Path(data_dir)
    data, community = _read_community(community_path)  # first: a bad file writes nothing
    if data_dir.exists() and not data_dir.is_dir():
        raise InitError(f"--data-dir: {data_dir} exists and is not a directory")
    config_file = data_dir / NODE_TOML
    if config_file.exists():  # keep the household's paths and edits; refuse a broken file
        cfg = load_node_config(data_dir)
        paths = {"community": cfg.community, "key": cfg.key, "ledger": cfg.ledger}
    else:
        paths = {k: data_dir / DEFAULT_FILES[k] for k in ("community", "key", "ledger")}

    # Every check before the first write.
    key: Ed25519PrivateKey | None = None
    if paths["key"].exists():
        key = read_key_file(paths["key"], "household key")
        if key_path is not None:
            given = read_key_file(Path(key_path), "--key")
            if peer_id_of(given) != peer_id_of(key):
                raise InitError(
                    f"--key: {data_dir} already has the key of {peer_id_of(key)} "
                    f"({paths['key']}); {key_path} is {peer_id_of(given)}. One data "
                    "directory is one household: use another --data-dir"
                )
    elif key_path is not None:
        key = read_key_file(Path(key_path), "--key")
    ledger_state = None  # None: no ledger (or an empty one); "": this community's
    if paths["ledger"].exists():
        ledger_state = ledger_problem(paths["ledger"], community)
        if ledger_state:
            raise InitError(
                f"{paths['ledger']} was made from another community file ({ledger_state}); "
                "use another --data-dir for this community"
            )
    old_copy = paths["community"].read_bytes() if paths["community"].exists() else None
    if old_copy is not None and old_copy != data and ledger_state is not None:
        raise InitError(
            f"{paths['community']} differs from {community_path}: its ledger was made from "
            "the copy already there; use another --data-dir for another community file"
        )

    # The writes. Without a ledger nothing depends on an older copy of the community file
    # yet (a household that was not a member yet gets the updated file), so it is replaced.
    done: list[str] = []  # one line per file: created, replaced or kept
    created: list[Path] = []

    def note(what: str, path: Path, why: str = "") -> None:
        done.append(f"{what:<9}{path}{f' ({why})' if why else ''}")
        if what == "created":
            created.append(path)

    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
        data_dir.chmod(0o700)  # the umask may have taken bits away; a key lives here
    created_key = not paths["key"].exists()
    household = key if key is not None else generate_key()  # key: loaded, or from --key
    if created_key:
        save_key(paths["key"], household)
        note("created", paths["key"], "a new key" if key is None else f"copied from {key_path}")
    else:
        note("kept", paths["key"])
    peer = peer_id_of(household)
    if old_copy is None:
        write_atomic(paths["community"], data)
        note("created", paths["community"])
    elif old_copy != data:
        write_atomic(paths["community"], data)
        note("replaced", paths["community"], "no ledger had been made from the old copy")
    else:
        note("kept", paths["community"])
    if config_file.exists():
        note("kept", config_file)
    else:
        write_node_config(data_dir)
        note("created", config_file)
    member = community.member(peer) is not None
    ledger_created = member and ledger_state is None
    if ledger_created:
        _create_ledger(paths["ledger"], community)
        note("created", paths["ledger"], "the community's opening batch")
    elif paths["ledger"].exists():
        note("kept", paths["ledger"])
    lines = [*done, f"peer id {peer}", f"community {community.name} (id {community.id[:16]})"]
    if member:
        with Ledger.open(paths["ledger"], create=False) as led:
            lines.append(f"ledger head {led.head_text()}")
        lines.append(
            f"next: wattmesh node --data-dir {data_dir} --bootstrap "
            "/ip4/ADDRESS/tcp/4001/p2p/PEER_ID (a neighbour's node)"
        )
    else:
        lines += [
            f"{peer} is not a member of {community.name}: no ledger was created.",
            "Send this stanza to whoever keeps the community file:",
            "",
            _stanza(peer, community),
            "",
            "(they add it with `wattmesh community add FILE --peer-id PEER_ID --bmax WH`)",
            f"then run `wattmesh init --community UPDATED_FILE --data-dir {data_dir}` with "
            "the updated file.",
        ]
    return InitResult(
        data_dir=data_dir,
        peer_id=peer,
        created_key=created_key,
        member=member,
        ledger_created=ledger_created,
        message="\n".join(lines),
        created=tuple(created),
    )


def _create_ledger(path: Path, community: Community) -> None:
    """Write the community's opening batch into a new (or empty) ledger at ``path``; a
    file this call made is removed again if that fails."""
    existed = path.exists()
    try:
        with Ledger.open(path) as led:
            led.append_batch(community.genesis_items(), ts=community.genesis_ts)
    except BaseException:
        if not existed:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        raise
