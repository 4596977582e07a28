"""Where a sweep's points run: local worker processes, this process, or Ray tasks on a
Ray cluster. Each runs the same :func:`run_point` and hands every result back as it
arrives, in whatever order the points finish (the table is sorted by point later)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
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


Run = Callable[[str, dict[str, Any]], dict[str, Any]]

# Points handed to the pool at once, per worker: enough to keep each worker busy while
# its next result travels back, few enough that a pool that breaks leaves few suspects
# and Ctrl-C leaves little to cancel (the rest of the points wait here, not in the pool).
IN_FLIGHT_PER_WORKER = 2


def run_local(
    tasks: Sequence[Task], workers: int | None, on_result: OnResult, *, run: Run = run_point
) -> None:
    """Run the tasks on ``workers`` local processes (None: one per core); 1 runs them in
    this process, one after another. ``run(target, params)`` runs one point (the tests
    give their own).

    A point that kills its worker process (an OOM kill, a segfault, ``os._exit``) breaks
    the pool: the points it was running then run again one at a time, each in a process
    of its own, so the one that kills its process is a failed point (:func:`_died`) and
    the others finish; the points not started yet go on in a new pool. Ctrl-C (or any
    error) ends the running points at once and runs no more."""
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        for index, target, params in tasks:
            on_result(index, run(target, params))
        return
    # Workers start from a fresh server process, not a fork of this one: a fork would copy
    # whatever threads this process runs (a progress bar's, a Ray driver's) mid-flight.
    context = multiprocessing.get_context("forkserver")
    # The server imports the engine and the targets once; each worker forks with them.
    context.set_forkserver_preload([__name__])
    todo = deque(tasks)
    while todo:
        for index, target, params in _run_pool(context, workers, todo, on_result, run):
            on_result(index, _run_alone(context, run, target, params))


def _run_pool(
    context: Any, workers: int, todo: deque[Task], on_result: OnResult, run: Run
) -> list[Task]:
    """Run tasks from ``todo`` on a pool until it is empty or the pool breaks; return the
    tasks the pool held when it broke (one of them killed it), in point order."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    held: dict[Future[dict[str, Any]], Task] = {}
    try:
        broken = False
        while not broken and (todo or held):
            while todo and len(held) < IN_FLIGHT_PER_WORKER * workers:
                task = todo.popleft()
                try:
                    held[pool.submit(run, task[1], task[2])] = task
                except BrokenProcessPool:  # it broke since the last wait
                    todo.appendleft(task)
                    broken = True
                    break
            done, _ = wait(held, return_when=FIRST_COMPLETED)
            broken = broken or any(isinstance(f.exception(), BrokenProcessPool) for f in done)
            if broken:
                wait(held)  # a broken pool ends every future it holds at once
                done = set(held)
            suspects = []
            for future in done:
                task = held.pop(future)
                error = future.exception()
                if isinstance(error, BrokenProcessPool):
                    suspects.append(task)
                elif error is not None:  # the result could not come back (pickling)
                    on_result(task[0], _failed(f"{type(error).__name__}: {error}"))
                else:
                    on_result(task[0], future.result())
    except BaseException:
        _abandon(pool)
        raise
    pool.shutdown(wait=True)
    return sorted(suspects) if broken else []


def _abandon(pool: ProcessPoolExecutor) -> None:
    """Cancel the points not started and end the running ones now: after Ctrl-C nobody
    waits for a point that may take minutes (its result would not be kept anyway)."""
    # The pool's own processes: Python 3.11 has no public way to end them
    # (ProcessPoolExecutor.kill_workers() comes in 3.14), and shutdown(wait=False) alone
    # lets the interpreter's exit wait for the running points.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    for process in processes:
        process.join()


def _run_alone(context: Any, run: Run, target: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one point in a process of its own: its result, or a failed point naming how
    the process died."""
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_send_result, args=(send, run, target, params))
    try:
        process.start()
        send.close()  # else the read below never sees the end of a dead process's pipe
        try:
            result = receive.recv()
        except EOFError:  # the process died before it sent a result
            result = None
        process.join()
    except BaseException:
        process.kill()
        process.join()
        raise
    finally:
        receive.close()
    return _failed(_died(process.exitcode)) if result is None else result


def _send_result(send: Any, run: Run, target: str, params: dict[str, Any]) -> None:
    send.send(run(target, params))
    send.close()


def _died(exitcode: int | None) -> str:
    """The error of a point whose worker process died: its exit code, or the signal."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by signal {-exitcode}, {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"WorkerDied: the point's worker process died ({how})"


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
