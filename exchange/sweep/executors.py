"""Where a sweep's points run: local worker processes, this process, or Ray tasks on a
Ray cluster. Each runs the same :func:`run_point` and hands every result back as it
arrives, in whatever order the points finish (the table is sorted by point later)."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from wattmesh.exchange.sweep.store import FAILED, OK
from wattmesh.exchange.sweep.targets import TARGETS
from wattmesh.settlement.errors import WattmeshError

__all__ = ["RayUnavailable", "Task", "ray_cluster", "run_local", "run_point"]

# (point index, target name, the parameters the target runs with)
Task = tuple[int, str, dict[str, Any]]
OnResult = Callable[[int, dict[str, Any]], None]

INSTALL_RAY = "pip install 'wattmesh[scale]'"


class RayUnavailable(WattmeshError):
    """Ray is not installed, or the cluster cannot be reached."""


def run_point(target: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one point: ``{"status": "ok", "metrics": {...}, "error": None}``, or a failed
    point with the exception's type and message (the other points go on)."""
    try:
        metrics = TARGETS[target].run(params)
    except Exception as exc:  # any crash of the point is its result, not the sweep's
        return {"status": FAILED, "metrics": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"status": OK, "metrics": metrics, "error": None}


def _failed(why: str) -> dict[str, Any]:
    return {"status": FAILED, "metrics": None, "error": why}


def run_local(tasks: Sequence[Task], workers: int | None, on_result: OnResult) -> None:
    """Run the tasks on ``workers`` local processes (None: one per core); 1 runs them in
    this process, one after another."""
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        for index, target, params in tasks:
            on_result(index, run_point(target, params))
        return
    # Workers start from a fresh server process, not a fork of this one: a fork would copy
    # whatever threads this process runs (a progress bar's, a Ray driver's) mid-flight.
    context = multiprocessing.get_context("forkserver")
    # The server imports the engine and the targets once; each worker forks with them.
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        pending: dict[Future[dict[str, Any]], int] = {
            pool.submit(run_point, target, params): index for index, target, params in tasks
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # the worker process died (BrokenProcessPool)
                    result = _failed(f"{type(exc).__name__}: {exc}")
                on_result(index, result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# How long a cluster's address may take to accept a connection before it is refused.
CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """Refuse at once an address where nothing listens: ``ray.init`` itself waits for a
    minute or more before it gives up on one. ("auto" is Ray's own look-up, and quick.)"""
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayUnavailable(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or exc} (start one "
            "with `ray start --head`)"
        ) from None


@contextmanager
def ray_cluster(address: str) -> Iterator[Callable[[Sequence[Task], OnResult], None]]:
    """Connect to the Ray cluster at ``address`` ("auto", "host:6379", "ray://host:10001")
    and yield ``run(tasks, on_result)``, which runs each task as a Ray task. A driver
    already connected (``ray.init`` done) is used as it is and left connected."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"Ray is not installed: {INSTALL_RAY}") from None
    connected_here = False
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except Exception as exc:  # Ray raises many kinds here; each is one line to us
            lines = str(exc).strip().splitlines()
            # Ray turns token authentication on by itself only for "auto" (Ray 2.5x+).
            hint = "start one with `ray start --head`"
            if address != "auto":
                hint = "a cluster with token authentication needs RAY_AUTH_MODE=token here"
            raise RayUnavailable(
                f"cannot reach a Ray cluster at {address}: "
                f"{lines[0] if lines else type(exc).__name__} ({hint})"
            ) from None
        connected_here = True

    def run(tasks: Sequence[Task], on_result: OnResult) -> None:
        # No retries: a point that kills its worker is a failed point, not three runs.
        remote = ray.remote(max_retries=0)(run_point)
        pending = {remote.remote(target, params): index for index, target, params in tasks}
        refs = list(pending)
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the task's worker died, or its node was lost
                    result = _failed(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                on_result(pending.pop(ref), result)

    try:
        yield run
    finally:
        if connected_here:
            ray.shutdown()
