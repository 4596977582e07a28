"""What a sweep can run: ``simulate gode-sunder``, ``simulate community`` and ``replay``.

Each target's parameters (names, types, defaults) are read from the library function or
options class behind its command, not written out again here: ``run_session`` for
Gode–Sunder, ``CommunityConfig`` for the community, ``replay`` with ``ReplayOptions`` for
replay. A new field there is a new sweep parameter. Each target also checks one point's
values with the library's own checks before anything runs, runs one point with the
library code unchanged, and turns its result into one row of metrics.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import statistics
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattmesh.agents import gode_sunder as gs
from wattmesh.agents.community import CommunityConfig, simulate
from wattmesh.exchange.replay import replay as replaying
from wattmesh.exchange.replay.log_kind import is_node_log

__all__ = ["REQUIRED", "TARGETS", "Parameter", "Target", "target_named"]

REQUIRED: Any = inspect.Parameter.empty  # a parameter the spec must give

# Values a spec can hold for a parameter, and the column types of the table.
KINDS = (bool, int, float, str)


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter of a target: its value's type, its default (REQUIRED: none), and
    whether it may be absent (None)."""

    name: str
    kind: type
    default: Any = REQUIRED
    nullable: bool = False

    def check(self, value: Any) -> Any:
        """``value`` as this parameter holds it; TypeError naming the type it needs."""
        if value is None and self.nullable:
            return None
        # bool is an int to Python, not to a spec: `shouts = true` is a wrong type.
        if self.kind is float and type(value) in (int, float):
            # NaN and inf would not come back the same (NaN != NaN: never finished).
            if not math.isfinite(value):
                raise TypeError(f"{self.name} needs a finite number, got {value}")
            return float(value)
        if type(value) is self.kind:
            return value
        raise TypeError(f"{self.name} needs {_KIND_NAMES[self.kind]}, got {_shown(value)}")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _shown(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}  # fmt: skip
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


def _parameter(name: str, hint: Any, default: Any) -> Parameter:
    """A parameter from a type hint: one of KINDS, or one of them or None."""
    nullable = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else hint
    if hint not in KINDS:
        raise TypeError(f"parameter {name}: a sweep cannot hold {hint!r} (give an override)")
    return Parameter(name, hint, default, nullable)


def parameters_of(
    source: Callable[..., Any] | type,
    *,
    skip: tuple[str, ...] = (),
    overrides: Mapping[str, Parameter] | None = None,
) -> tuple[Parameter, ...]:
    """The parameters of a function (its signature) or of a dataclass (its fields), in
    their order; ``overrides`` replaces those a spec holds differently (a market's
    number for a ``Market``), ``skip`` leaves out what a sweep does not set."""
    overrides = overrides or {}
    hints = typing.get_type_hints(source)
    if dataclasses.is_dataclass(source):
        found = [(f.name, f.default) for f in dataclasses.fields(source)]
        found = [(n, REQUIRED if d is dataclasses.MISSING else d) for n, d in found]
    else:
        found = [(p.name, p.default) for p in inspect.signature(source).parameters.values()]
    out = []
    for name, default in found:
        if name in skip:
            continue
        out.append(overrides.get(name) or _parameter(name, hints[name], default))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Target:
    """A command a sweep runs: its parameters, the metrics of one point (name -> type;
    every metric may be None, as it is for a failed point), a check of one point's
    values (ValueError naming the value), and the run of one point (parameters in,
    metrics out)."""

    name: str
    parameters: tuple[Parameter, ...]
    metrics: tuple[tuple[str, type], ...]
    check: Callable[[dict[str, Any]], None]
    run: Callable[[dict[str, Any]], dict[str, Any]]
    paths: tuple[str, ...] = ()  # parameters that are files: relative to the spec's folder

    def parameter(self, name: str) -> Parameter | None:
        """The parameter called ``name``, or None."""
        return next((p for p in self.parameters if p.name == name), None)


# -- simulate gode-sunder: one session (one seed) per point -------------------------------


def _gode_sunder_check(params: dict[str, Any]) -> None:
    gs.load_market(params["market"])
    gs.check_session(params["strategy"], params["periods"], params["shouts"])


def _gode_sunder_run(params: dict[str, Any]) -> dict[str, Any]:
    args = dict(params)
    market = gs.load_market(args.pop("market"))
    session = gs.run_session(market, **args)
    summary = gs.summarize([session])
    prices = [t.price for p in session.periods for t in p.trades]
    return {
        "efficiency_pct": summary.efficiency,
        "alpha_last_pct": summary.alpha_by_period[-1],
        "dispersion_last": summary.dispersion_by_period[-1],
        "mean_price": statistics.fmean(prices) if prices else None,
        "trades": len(prices),
    }


GODE_SUNDER = Target(
    name="simulate gode-sunder",
    parameters=parameters_of(gs.run_session, overrides={"market": Parameter("market", int)}),
    metrics=(
        ("efficiency_pct", float),
        ("alpha_last_pct", float),
        ("dispersion_last", float),
        ("mean_price", float),
        ("trades", int),
    ),  # fmt: skip
    check=_gode_sunder_check,
    run=_gode_sunder_run,
)


# -- simulate community -------------------------------------------------------------------


def _community_check(params: dict[str, Any]) -> None:
    CommunityConfig(**params).validate()


def _community_run(params: dict[str, Any]) -> dict[str, Any]:
    report = simulate(CommunityConfig(**params)).summary()
    totals, orders = report["totals"], report["orders"]
    held = report["intervals"]["held_bids"]
    return {
        "savings_nano": totals["savings_nano"],
        "cost_nano": totals["cost_nano"],
        "grid_alone_cost_nano": totals["grid_alone_cost_nano"],
        "traded_wh": totals["traded_wh"],
        "vwap_micro_per_kwh": totals["vwap"],
        "fills": totals["fills"],
        "imported_wh": totals["imported_wh"],
        "exported_wh": totals["exported_wh"],
        "bmax_wh": report["scenario"]["bmax_wh"],
        "bids_posted": orders["bids_posted"],
        "bids_held": orders["bids_held"],
        # How often the cap bound: the share of intervals in which it held a bid.
        "bmax_bound_share": sum(1 for n in held if n) / len(held),
    }


COMMUNITY = Target(
    name="simulate community",
    parameters=parameters_of(CommunityConfig),
    metrics=(
        ("savings_nano", int),
        ("cost_nano", int),
        ("grid_alone_cost_nano", int),
        ("traded_wh", int),
        ("vwap_micro_per_kwh", int),
        ("fills", int),
        ("imported_wh", int),
        ("exported_wh", int),
        ("bmax_wh", int),
        ("bids_posted", int),
        ("bids_held", int),
        ("bmax_bound_share", float),
    ),  # fmt: skip
    check=_community_check,
    run=_community_run,
)


# -- replay -------------------------------------------------------------------------------


def _replay_check(params: dict[str, Any]) -> None:
    log = params["log"]
    if log is not None and not Path(log).is_file():
        raise ValueError(f"log: no such file {log}")
    # replay() reads any file as an order log: a node log would be all refused lines.
    try:
        node_log = log is not None and is_node_log(log)
    except OSError as exc:
        raise ValueError(f"log: cannot read {log}: {exc.strerror or exc}") from None
    if node_log:
        raise ValueError(
            f"log: {log} is a node log (it starts with a community line): a sweep replays "
            "order logs; replay a node log with `wattmesh replay`"
        )
    replaying.ReplayOptions(**{k: v for k, v in params.items() if k != "log"})


def _replay_run(params: dict[str, Any]) -> dict[str, Any]:
    options = replaying.ReplayOptions(**{k: v for k, v in params.items() if k != "log"})
    summary = replaying.replay(params["log"], options).summary()
    return {
        "events": summary["events"],
        "fills": summary["fills"],
        "volume_wh": summary["volume_wh"],
        "turnover_nano": summary["turnover_nano"],
        "vwap_micro_per_kwh": summary["vwap"],
        "refused": summary["refused"],
        "intervals": summary["intervals"],
        "owners": summary["owners"],
    }


REPLAY = Target(
    name="replay",
    # The log: a path (relative ones from the spec's folder); absent: the bundled sample.
    parameters=parameters_of(
        replaying.replay,
        skip=("options", "on_progress"),
        overrides={"log": Parameter("log", str, None, nullable=True)},
    )
    # `book` only keeps each auction's depth for `--out DIR --book`: no metric reads it.
    + parameters_of(replaying.ReplayOptions, skip=("book",)),
    metrics=(
        ("events", int),
        ("fills", int),
        ("volume_wh", int),
        ("turnover_nano", int),
        ("vwap_micro_per_kwh", int),
        ("refused", int),
        ("intervals", int),
        ("owners", int),
    ),  # fmt: skip
    check=_replay_check,
    run=_replay_run,
    paths=("log",),
)

TARGETS = {t.name: t for t in (GODE_SUNDER, COMMUNITY, REPLAY)}


def target_named(name: str) -> Target:
    """The target called ``name``; KeyError if there is none."""
    return TARGETS[name]
