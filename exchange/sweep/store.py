"""A sweep's output folder: its spec, one file per finished point, the merged table.

    DIR/spec.toml          the spec, copied on the first run (its paths made absolute)
    DIR/points/000007.json one point: its parameters, input files (path, sha256),
                           status, metrics or error
    DIR/sweep.parquet      every point, one row each (``table.py``)

Each file is written whole or not at all (``atomic_file``), so a sweep stopped at any
moment resumes from the points it stored. A folder that holds another spec's sweep, or
other files and no sweep, is refused before anything is written.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import orjson

from wattmesh.exchange.atomic_file import write_atomic
from wattmesh.exchange.sweep.spec import Point, SweepSpec, identity_of
from wattmesh.settlement.errors import WattmeshError

__all__ = ["OK", "FAILED", "OutputError", "SweepFolder"]

SPEC_NAME = "spec.toml"
POINTS = "points"
TABLE_NAME = "sweep.parquet"
OK = "ok"
FAILED = "failed"


class OutputError(WattmeshError):
    """An output folder a sweep may not write into, with one line saying why."""


class SweepFolder:
    """The output folder of one spec's sweep."""

    def __init__(self, path: str | Path, spec: SweepSpec) -> None:
        self.path = Path(path)
        self.spec = spec

    @property
    def table_path(self) -> Path:
        return self.path / TABLE_NAME

    def _point_path(self, index: int) -> Path:
        return self.path / POINTS / f"{index:06d}.json"

    def check(self) -> None:
        """Raise OutputError unless the folder is new, empty, or holds this spec's sweep."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path} is not a folder")
        copy = self.path / SPEC_NAME
        if copy.exists():
            try:
                theirs = tomllib.loads(copy.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                theirs = None
            # The copy's relative paths (a copy of an earlier version's) from its folder.
            if theirs is None or identity_of(theirs, self.path.resolve()) != self.spec.identity():
                raise OutputError(
                    f"{self.path} holds another sweep's results (its {SPEC_NAME} is not "
                    f"{self.spec.source}): choose another --out, or remove that folder"
                )
        elif self.path.is_dir() and not _only_empty_points(self.path):
            raise OutputError(
                f"{self.path} is not empty and holds no sweep (no {SPEC_NAME}): choose a new "
                "or an empty folder"
            )

    def claim(self) -> None:
        """Check the folder (:meth:`check`), then make it and copy the spec into it
        (``SweepSpec.copy_text``: its paths absolute, so the copy runs the same sweep)."""
        self.check()
        # The spec first: a folder with a spec.toml is this sweep's, whatever else a kill
        # left out of it (a points/ made first would leave a folder of no sweep).
        self.path.mkdir(parents=True, exist_ok=True)
        copy = self.path / SPEC_NAME
        if not copy.exists():
            write_atomic(copy, self.spec.copy_text().encode())
        (self.path / POINTS).mkdir(exist_ok=True)

    def finished(self) -> set[int]:
        """The points already run to the end: stored with status ok, the same
        parameters and the same input files, by content (a failed point runs again, and
        so does one whose log was changed since)."""
        # A file is compared by its absolute path and content (``inputs``), not as the
        # spec wrote it: the copy in this folder names it by its absolute path.
        paths = self.spec.target.paths
        done = set()
        for point in self.spec.points:
            record = self.load(point.index)
            if (
                record is not None
                and record["status"] == OK
                and _without(record["params"], paths) == _without(point.params, paths)
                and record.get("inputs", {}) == self.spec.inputs(point)
            ):
                done.add(point.index)
        return done

    def load(self, index: int) -> dict[str, Any] | None:
        """A stored point, or None if there is none (or it cannot be read)."""
        try:
            return orjson.loads(self._point_path(index).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None

    def store(self, point: Point, result: dict[str, Any]) -> None:
        """Keep one point's result: ``{"status", "metrics", "error"}`` from the runner."""
        record = {"point": point.index, "params": point.params, **result}
        if inputs := self.spec.inputs(point):
            record["inputs"] = inputs
        write_atomic(self._point_path(point.index), _canonical(record) + b"\n")

    def records(self) -> list[dict[str, Any]]:
        """Every point of the spec that has a stored result, in point order."""
        found = (self.load(p.index) for p in self.spec.points)
        return [r for r in found if r is not None]


def _without(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in names}


def _only_empty_points(folder: Path) -> bool:
    """Whether ``folder`` holds nothing, or only an empty ``points/`` (what a run of an
    earlier version, killed before it copied the spec, left)."""
    entries = list(folder.iterdir())
    if not entries:
        return True
    points = folder / POINTS
    return entries == [points] and points.is_dir() and not any(points.iterdir())


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
