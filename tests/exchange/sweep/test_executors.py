"""Local worker processes (exchange/sweep/executors.py): a point that kills its worker
process is the only failed point, and Ctrl-C ends the running points at once.

The points here run a test module's function (``run_local(..., run=...)``), written into
the test's folder and driven by a fresh interpreter: a worker process imports a point's
function by its module's name, which the test modules (imported by path) do not have."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

POINTS = """
import os, signal, time
from pathlib import Path

def run(target, params):
    if params.get("started"):
        Path(params["started"]).touch()
        time.sleep(params["sleep"])
        Path(params["finished"]).touch()
    if params.get("crash") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if params.get("crash") == "exit":
        os._exit(3)
    return {"status": "ok", "metrics": {"value": params["value"]}, "error": None}
"""

DRIVER = """
import json, sys, time
from pathlib import Path
from points import run
from wattmesh.exchange.sweep.executors import run_local


def main(tasks, started):
    results = []

    def arrived(index, result):
        results.append([index, result])
        if started:  # Ctrl-C once the slow point runs, as the CLI's SIGINT handler does
            deadline = time.monotonic() + 30
            while not Path(started).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise KeyboardInterrupt

    try:
        run_local([tuple(t) for t in tasks], 2, arrived, run=run)
    except KeyboardInterrupt:
        print("interrupted")
    print(json.dumps(results))


if __name__ == "__main__":  # (the worker processes import this file too)
    main(json.loads(sys.argv[1]), sys.argv[2])
"""


def drive(tmp_path: Path, tasks: list, started: str = "") -> list[str]:
    (tmp_path / "points.py").write_text(POINTS)
    (tmp_path / "driver.py").write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), json.dumps(tasks), started],
        capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path,
    )  # fmt: skip
    return done.stdout.splitlines()


def test_a_point_that_kills_its_worker_is_the_only_failed_point(tmp_path: Path):
    crash = {3: "kill", 6: "exit"}
    tasks = [[i, "t", {"value": i, "crash": crash.get(i)}] for i in range(10)]
    (line,) = drive(tmp_path, tasks)
    results = json.loads(line)
    assert sorted(i for i, _ in results) == list(range(10))  # each point once
    by_index = dict(results)
    assert {i for i, r in by_index.items() if r["status"] == "failed"} == {3, 6}
    assert by_index[3] == {"status": "failed", "metrics": None,
                           "error": "WorkerDied: the point's worker process died "
                                    "(killed by signal 9, SIGKILL)"}  # fmt: skip
    assert by_index[6]["error"] == "WorkerDied: the point's worker process died (exit code 3)"
    assert all(by_index[i]["metrics"] == {"value": i} for i in by_index if i not in crash)


def test_ctrl_c_ends_the_running_points_without_waiting_for_them(tmp_path: Path):
    started, finished = tmp_path / "started", tmp_path / "finished"
    slow = {"value": 0, "started": str(started), "finished": str(finished), "sleep": 5}
    tasks = [[0, "t", slow]] + [[i, "t", {"value": i}] for i in range(1, 20)]
    lines = drive(tmp_path, tasks, str(started))
    assert lines[0] == "interrupted" and len(json.loads(lines[1])) == 1
    # The slow point was running when Ctrl-C came; its worker was ended, not waited for.
    assert started.exists() and not finished.exists()
