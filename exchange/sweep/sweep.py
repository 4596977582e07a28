"""Run a sweep: check the spec and the folder, run the points not yet finished (locally
or on Ray), keep each as it arrives, and merge them all into ``sweep.parquet``.

Nothing here prints; ``wattmesh sweep`` (exchange/cli/sweep.py) does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattmesh.exchange.sweep import executors, table
from wattmesh.exchange.sweep.spec import Point, SweepSpec, load_spec
from wattmesh.exchange.sweep.store import FAILED, SweepFolder

__all__ = ["SweepOutcome", "run_sweep"]


@dataclass(slots=True)
class SweepOutcome:
    """What a run did: points in the spec, run now, finished before, and the failed ones
    with their errors (in point order)."""

    table: Path
    total: int
    ran: int
    skipped: int
    failed: list[tuple[Point, str]] = field(default_factory=list)


def run_sweep(
    spec: SweepSpec | str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_failed: Callable[[Point, str], None] | None = None,
) -> SweepOutcome:
    """Run every point of ``spec`` not finished in ``out`` yet and write
    ``out/sweep.parquet``.

    ``ray_address`` runs the points as Ray tasks on that cluster; otherwise they run on
    ``workers`` local processes (None: one per core). ``on_progress(done, total)`` follows
    every finished point (those of earlier runs count as done); ``on_failed(point, error)``
    hears of each point that raised. Raises SpecError, OutputError, RayUnavailable or
    PyarrowMissing before anything is written.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    table.require_pyarrow()  # before any point runs, not after all of them
    folder = SweepFolder(out, spec)
    folder.check()
    with ExitStack() as stack:
        # Connect first: an unreachable cluster is refused before the folder is made.
        on_ray = None if ray_address is None else stack.enter_context(
            executors.ray_cluster(ray_address))  # fmt: skip
        folder.claim()
        finished = folder.finished()
        todo = [p for p in spec.points if p.index not in finished]
        by_index = {p.index: p for p in todo}
        outcome = SweepOutcome(folder.table_path, len(spec.points), len(todo), len(finished))
        done = len(finished)
        if on_progress is not None:
            on_progress(done, outcome.total)

        def arrived(index: int, result: dict) -> None:
            nonlocal done
            point = by_index[index]
            # Stored and counted as one step, so that Ctrl-C's count of the points kept
            # is the number of files (it would miss one stored just before it).
            with _one_step():
                folder.store(point, result)
                done += 1
                if result["status"] == FAILED and on_failed is not None:
                    on_failed(point, result["error"])
                if on_progress is not None:
                    on_progress(done, outcome.total)

        tasks = [(p.index, spec.target.name, spec.run_params(p)) for p in todo]
        if tasks and on_ray is not None:
            on_ray(tasks, arrived)
        elif tasks:
            executors.run_local(tasks, workers, arrived)
    records = folder.records()
    outcome.failed = [(spec.points[r["point"]], r["error"])
                      for r in records if r["status"] == FAILED]  # fmt: skip
    table.write_table(folder.table_path, spec.target, records)
    return outcome


@contextmanager
def _one_step() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then act on it as it would have. Only
    in the main thread (the only one that can set a signal's handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(*caught[0])  # the command's handler: it raises (Interrupted)
    elif caught and previous == signal.SIG_DFL:
        raise KeyboardInterrupt
