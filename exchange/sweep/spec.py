"""A sweep's spec (TOML): the target, its fixed parameters, and a grid or a random sample
of the others; expanded into points, each checked before anything runs.

    target = "simulate gode-sunder"

    [fixed]
    market = 1

    [grid]                       # the cartesian product, in the order written
    strategy = ["zi-u", "zi-c"]
    seed = [0, 1, 2]

or, instead of ``[grid]``::

    [sample]
    points = 20                  # how many points to draw
    seed = 7                     # the draw's seed: the same seed, the same points
    ranges = { shouts = [100, 2000] }           # uniform in [low, high] (both included)
    choices = { strategy = ["zi-u", "zi-c"] }   # uniform among the values

Parameter names and types are the target's (``targets.py``); every problem is a
:class:`SpecError` naming the spec file and what is wrong in it (docs/analysis.md).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import orjson

from wattmesh.exchange.sweep.targets import REQUIRED, TARGETS, Parameter, Target
from wattmesh.settlement.errors import WattmeshError

__all__ = ["Point", "SpecError", "SweepSpec", "identity_of", "load_spec", "parse_spec", "to_toml"]

_TOP = ("target", "fixed", "grid", "sample")
# More points than this is a typo more often than a plan (and one file per point).
MAX_POINTS = 1_000_000
_SAMPLE = ("points", "seed", "ranges", "choices")


class SpecError(WattmeshError, ValueError):
    """A spec that cannot run, with one line saying why."""


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a sweep: its index (the ``point`` key) and every parameter of the
    target, in the target's order, as the spec gives them (defaults filled in)."""

    index: int
    params: dict[str, Any]

    def label(self) -> str:
        """The parameters a person needs to find this point: ``strategy=zi-u, seed=2``."""
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """A parsed spec: where it came from, its text, its target, its TOML as a dict
    (``document``: what two sweeps compare), its points, and ``base``, the folder
    relative paths in it start from."""

    source: str
    text: str
    target: Target
    document: dict[str, Any]
    points: tuple[Point, ...]
    base: Path
    # sha256 of each file the points read, by absolute path: each file is read once.
    _digests: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def identity(self) -> bytes:
        """Canonical bytes of the spec's content, its paths made absolute: two specs with
        the same are one sweep (the same text in another folder names other files)."""
        return identity_of(self.document, self.base)

    def copy_text(self) -> str:
        """The spec as a sweep's folder keeps it: its text as written, or, when it names
        files by relative paths, the same spec with those paths made absolute (so the
        copy, in another folder, names the same files and is the same sweep)."""
        resolved = _resolved_document(self.document, self.base)
        if resolved == self.document:
            return self.text
        return f"# {self.source}, its relative paths made absolute\n" + to_toml(resolved)

    def run_params(self, point: Point) -> dict[str, Any]:
        """A point's parameters as the target runs them: paths made absolute."""
        return _resolved(self.target, point.params, self.base)

    def inputs(self, point: Point) -> dict[str, dict[str, str]]:
        """The files a point reads (its path parameters, the replay's log), each as its
        absolute path and the sha256 of its content, read when first asked for (before
        any point runs): a point stored with other inputs has not run on these files."""
        out = {}
        for name in self.target.paths:
            if point.params.get(name) is None:
                continue
            path = _absolute(self.base, point.params[name])
            if path not in self._digests:
                with open(path, "rb") as fp:
                    self._digests[path] = hashlib.file_digest(fp, "sha256").hexdigest()
            out[name] = {"path": path, "sha256": self._digests[path]}
        return out


def _absolute(base: Path, value: str) -> str:
    # normpath, so that "logs/../a.jsonl" and "a.jsonl" name one file to identity().
    return os.path.normpath(base / value)


def _resolved(target: Target, params: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(params)
    for name in target.paths:
        if out.get(name) is not None:
            out[name] = _absolute(base, out[name])
    return out


def _resolved_document(document: dict[str, Any], base: Path) -> dict[str, Any]:
    """A spec's TOML with the values of its target's path parameters made absolute
    (in [fixed], [grid] and sample.choices; anything not a string is left as it is)."""
    target = TARGETS.get(document.get("target"))  # type: ignore[arg-type]
    if target is None or not target.paths:
        return document

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return _absolute(base, value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    def fix_table(table: Any) -> Any:
        if not isinstance(table, dict):
            return table
        return {k: fix(v) if k in target.paths else v for k, v in table.items()}

    out = dict(document)
    for key in ("fixed", "grid"):
        if key in out:
            out[key] = fix_table(out[key])
    sample = out.get("sample")
    if isinstance(sample, dict) and "choices" in sample:
        out["sample"] = {**sample, "choices": fix_table(sample["choices"])}
    return out


def identity_of(document: dict[str, Any], base: Path) -> bytes:
    """Canonical bytes of a spec's TOML read from a file in ``base`` (its paths made
    absolute): what two sweeps compare."""
    resolved = _resolved_document(document, base)
    return orjson.dumps(resolved, option=orjson.OPT_SORT_KEYS, default=str)


def to_toml(document: dict[str, Any]) -> str:
    """TOML text of a spec's document (strings, integers, finite floats, booleans,
    lists and tables of them: all a spec holds) that reads back as the same document."""

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else value(k)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)  # repr round-trips a float; NaN and inf are refused in a spec
        if isinstance(v, str):
            return orjson.dumps(v).decode()  # JSON's string escapes are TOML's too
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"a spec cannot hold {v!r}")

    lines = [f"{key(k)} = {value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines += ["", f"[{key(name)}]"]
            lines += [f"{key(k)} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file; its relative paths start from its folder."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text (a sweep spec is TOML)") from None
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_spec(text, source=str(path), base=path.resolve().parent)


def parse_spec(text: str, *, source: str = "spec", base: Path | None = None) -> SweepSpec:
    """Parse and check a spec's TOML text and expand it into points."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}") from None

    def bad(message: str) -> SpecError:
        return SpecError(f"{source}: {message}")

    for key in document:
        if key not in _TOP:
            raise bad(f"unknown key {key!r} (a spec has {', '.join(_TOP)})")
    name = document.get("target")
    if name is None:
        raise bad(f"no target: say target = one of {_names(TARGETS)}")
    if name not in TARGETS:
        raise bad(f"unknown target {name!r}: one of {_names(TARGETS)}")
    target = TARGETS[name]
    fixed = _table(document, "fixed", bad)
    grid = _table(document, "grid", bad) if "grid" in document else None
    sample = _table(document, "sample", bad) if "sample" in document else None
    if (grid is None) == (sample is None):
        raise bad("a spec needs either a [grid] or a [sample] table (one of them)")

    def param(key: str, where: str) -> Parameter:
        p = target.parameter(key)
        if p is None:
            raise bad(f"unknown parameter {key!r} in [{where}]: {target.name} has "
                      f"{', '.join(q.name for q in target.parameters)}")  # fmt: skip
        return p

    def value(p: Parameter, v: Any, where: str) -> Any:
        try:
            return p.check(v)
        except TypeError as exc:
            raise bad(f"{where}: {exc}") from None

    given = {k: value(param(k, "fixed"), v, f"fixed.{k}") for k, v in fixed.items()}
    if grid is not None:
        axes = _grid_axes(grid, given, param, value, bad)
        count = math.prod(len(values) for values in axes.values())
        if count > MAX_POINTS:
            raise bad(f"the grid has {count:,} points, more than {MAX_POINTS:,}")
        varying = [dict(zip(axes, combo, strict=True))
                   for combo in itertools.product(*axes.values())]  # fmt: skip
    else:
        varying = _sample(sample, given, param, value, bad)

    base = base or Path.cwd()
    points = []
    for index, values in enumerate(varying):
        params = {}
        for p in target.parameters:
            v = values.get(p.name, given.get(p.name, p.default))
            if v is REQUIRED:
                raise bad(f"{target.name} needs {p.name}: give it in [fixed] or vary it")
            params[p.name] = v
        point = Point(index, params)
        try:
            target.check(_resolved(target, params, base))
        except ValueError as exc:
            raise bad(f"point {index} ({point.label()}): {exc}") from None
        points.append(point)
    return SweepSpec(source, text, target, document, tuple(points), base)


def _names(targets: dict[str, Target]) -> str:
    return ", ".join(repr(t) for t in targets)


def _table(document: dict[str, Any], key: str, bad: Any) -> dict[str, Any]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise bad(f"{key} must be a table ([{key}]), got {type(table).__name__}")
    return table


def _grid_axes(grid: dict[str, Any], given: dict[str, Any], param: Any, value: Any,
               bad: Any) -> dict[str, list[Any]]:  # fmt: skip
    if not grid:
        raise bad("the grid is empty: [grid] needs at least one parameter with a list of values")
    axes = {}
    for key, values in grid.items():
        p = param(key, "grid")
        if key in given:
            raise bad(f"{key} is both in [fixed] and in [grid]")
        if not isinstance(values, list):
            raise bad(f"grid.{key} must be a list of values, got {values!r}")
        if not values:
            raise bad(f"the grid is empty: grid.{key} has no values")
        axes[key] = [value(p, v, f"grid.{key}[{i}]") for i, v in enumerate(values)]
    return axes


def _sample(sample: dict[str, Any], given: dict[str, Any], param: Any, value: Any,
            bad: Any) -> list[dict[str, Any]]:  # fmt: skip
    for key in sample:
        if key not in _SAMPLE:
            raise bad(f"unknown key sample.{key} (a [sample] has {', '.join(_SAMPLE)}; "
                      "parameters go under sample.ranges or sample.choices)")  # fmt: skip
    points, seed = sample.get("points"), sample.get("seed")
    if type(points) is not int or not 1 <= points <= MAX_POINTS:
        raise bad(f"sample.points must be an integer in 1..{MAX_POINTS:,}, got {points!r}")
    if type(seed) is not int:
        raise bad(f"sample.seed must be an integer (the draw's seed), got {seed!r}")
    ranges, choices = sample.get("ranges", {}), sample.get("choices", {})
    for key, table in (("ranges", ranges), ("choices", choices)):
        if not isinstance(table, dict):
            raise bad(f"sample.{key} must be a table, got {table!r}")
    if not ranges and not choices:
        raise bad("the sample is empty: give parameters in sample.ranges or sample.choices")
    draws: dict[str, tuple[str, Any]] = {}
    for key, bounds in ranges.items():
        p = param(key, "sample.ranges")
        if p.kind not in (int, float):
            raise bad(f"sample.ranges.{key}: {key} is not a number: give it in sample.choices")
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise bad(f"sample.ranges.{key} must be [low, high], got {bounds!r}")
        low, high = (value(p, v, f"sample.ranges.{key}") for v in bounds)
        if low is None or high is None or low > high:
            raise bad(f"sample.ranges.{key}: need low <= high, got {bounds!r}")
        draws[key] = ("range", (low, high))
    for key, values in choices.items():
        p = param(key, "sample.choices")
        if key in draws:
            raise bad(f"{key} is both in sample.ranges and in sample.choices")
        if not isinstance(values, list) or not values:
            raise bad(f"sample.choices.{key} must be a list of at least one value")
        draws[key] = ("choice", [value(p, v, f"sample.choices.{key}[{i}]")
                                 for i, v in enumerate(values)])  # fmt: skip
    for key in draws:
        if key in given:
            raise bad(f"{key} is both in [fixed] and in [sample]")
    # One stream for the whole sample, drawn point by point in the spec's order: the same
    # spec gives the same points on any machine (Random(int) is portable).
    rng = Random(seed)
    out = []
    for _ in range(points):
        point = {}
        for key, (how, arg) in draws.items():
            if how == "choice":
                point[key] = arg[rng.randrange(len(arg))]
            elif isinstance(arg[0], int):
                point[key] = rng.randint(*arg)
            else:
                point[key] = rng.uniform(*arg)
        out.append(point)
    return out
