"""``wattmesh sweep`` (exchange/cli/sweep.py): the summary line, exit codes, a point that
crashes in a worker process named with its parameters, and bad input refused in one line
with nothing written."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wattmesh.exchange.replay.replay import bundled_sample


def test_a_sweep_runs_and_a_second_run_resumes(cli, sweep_spec, tmp_path: Path):
    spec, out = sweep_spec(), tmp_path / "out"
    code, stdout, err = cli("sweep", spec, "--out", out, "--workers", 2)
    assert (code, err) == (0, "")
    assert (
        stdout
        == f"6 points: 6 ok, 0 failed (6 run now, 0 finished before) -> {out}/sweep.parquet\n"
    )
    assert (out / "spec.toml").read_text() == spec.read_text()
    assert sorted(p.name for p in (out / "points").iterdir()) == [f"{i:06d}.json" for i in range(6)]
    code, stdout, _ = cli("sweep", spec, "--out", out)
    assert code == 0 and "(0 run now, 6 finished before)" in stdout


def test_a_point_that_crashes_in_its_worker_is_named_and_the_others_finish(
    cli, sweep_spec, tmp_path: Path
):
    lines = bundled_sample().read_bytes().splitlines(keepends=True)[:300]
    (tmp_path / "good.jsonl").write_bytes(b"".join(lines))
    (tmp_path / "bad.jsonl").write_bytes(b"".join(lines[:100]) + b"not json\n")
    spec = sweep_spec(
        'target = "replay"\n[fixed]\nstrict = true\n'
        '[grid]\nlog = ["good.jsonl", "bad.jsonl"]\nmode = ["call", "cda"]\n'
    )
    code, stdout, err = cli("sweep", spec, "--out", tmp_path / "out", "--workers", 2)
    assert code == 1
    assert "4 points: 2 ok, 2 failed (4 run now, 0 finished before)" in stdout
    failed = sorted(err.splitlines())
    assert len(failed) == 2
    for line, (i, mode) in zip(failed, ((2, "call"), (3, "cda")), strict=True):
        assert line.startswith(
            f"wattmesh: point {i} failed (log=bad.jsonl, mode={mode}, interval_ms=900000, "
            "stp=none, strict=True, verify_signatures=False, retail_price=230000, "
            "feedin_price=80000): BadLineError: line 101: bad-json: not JSON"
        ), line
    rows = pq.read_table(tmp_path / "out" / "sweep.parquet").to_pylist()
    assert [(r["log"], r["mode"], r["status"]) for r in rows] == [
        ("good.jsonl", "call", "ok"),
        ("good.jsonl", "cda", "ok"),
        ("bad.jsonl", "call", "failed"),
        ("bad.jsonl", "cda", "failed"),
    ]
    assert rows[0]["fills"] > 0 and rows[2]["fills"] is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            'target = "simulate gode-sunder"\n[fixed]\nmarket = 1\n[grid]\nshout = [100]\n',
            "unknown parameter 'shout' in [grid]",
        ),
        ('target = "simulate gode-sunder"\n[fixed]\nmarket = 1\n[grid]\n', "the grid is empty"),
        (
            'target = "simulate community"\n[grid]\ndays = ["7"]\n',
            "grid.days[0]: days needs an integer, got a string ('7')",
        ),
        ('target = "simulate market"\n[grid]\ndays = [7]\n', "unknown target 'simulate market'"),
    ],
)
def test_a_bad_spec_is_one_line_and_nothing_is_written(
    cli, sweep_spec, tmp_path: Path, spec: str, message: str
):
    path = sweep_spec(spec)
    code, stdout, err = cli("sweep", path, "--out", tmp_path / "out")
    assert (code, stdout) == (2, "")
    assert err.startswith(f"wattmesh: error: {path}: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "out").exists()


def test_an_output_folder_of_another_sweep_is_refused(cli, sweep_spec, tmp_path: Path):
    out = tmp_path / "out"
    assert cli("sweep", sweep_spec(), "--out", out, "--workers", 1)[0] == 0
    other = sweep_spec(sweep_spec().read_text().replace("shouts = 100", "shouts = 50"), "b.toml")
    code, _, err = cli("sweep", other, "--out", out)
    assert code == 2
    assert err == (
        f"wattmesh: error: {out} holds another sweep's results (its spec.toml is "
        f"not {other}): choose another --out, or remove that folder\n"
    )


def test_workers_and_ray_do_not_go_together(cli, sweep_spec, tmp_path: Path):
    code, _, err = cli(
        "sweep", sweep_spec(), "--out", tmp_path / "o", "--workers", 2, "--ray", "auto"
    )
    assert code == 2 and "--workers is for local processes" in err


@pytest.mark.parametrize(
    ("module", "option", "line"),
    [
        (
            "ray",
            ["--ray", "auto"],
            "wattmesh: error: --ray: Ray is not installed: pip install 'wattmesh[scale]'\n",
        ),
        (
            "pyarrow",
            [],
            "wattmesh: error: pyarrow is not installed: pip install 'wattmesh[analysis]'\n",
        ),
    ],
)
def test_a_missing_extra_says_how_to_install_it(
    cli, sweep_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module, option, line
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    code, _, err = cli("sweep", sweep_spec(), "--out", tmp_path / "out", *option)
    assert (code, err) == (2, line)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", [1, 2])  # in this process; worker processes ended at once
def test_an_interrupted_sweep_keeps_its_finished_points_and_resumes(
    cli, sweep_spec, interrupt_when, tmp_path: Path, workers: int
):
    seeds = ", ".join(map(str, range(150)))  # zip, 500 shouts: about 10 ms a point
    spec = sweep_spec('target = "simulate gode-sunder"\n[fixed]\nmarket = 1\nstrategy = "zip"\n'
                      f"periods = 2\nshouts = 500\n[grid]\nseed = [{seeds}]\n")  # fmt: skip
    out = tmp_path / "out"
    command = [sys.executable, "-m", "wattmesh.exchange.cli", "sweep", str(spec), "--out",
               str(out), "--workers", str(workers)]  # fmt: skip
    code, err = interrupt_when(command, lambda: len(list((out / "points").glob("*.json"))) >= 2)
    kept = len(list((out / "points").glob("*.json")))
    assert code == 130 and 2 <= kept < 150
    assert err == (f"wattmesh: interrupted: {kept} of 150 points are finished and "
                            f"kept in {out}; the same command resumes\n")  # fmt: skip
    assert not (out / "sweep.parquet").exists() and not list(out.rglob(".*.tmp"))
    code, stdout, _ = cli("sweep", spec, "--out", out, "--workers", 2)
    assert code == 0 and f"({150 - kept} run now, {kept} finished before)" in stdout


def test_a_ray_address_where_nothing_listens_is_refused_at_once(cli, sweep_spec, tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = cli("sweep", sweep_spec(), "--out", tmp_path / "out", "--ray",
                       f"127.0.0.1:{port}")  # fmt: skip
    assert code == 2
    assert err == (f"wattmesh: error: --ray: cannot reach a Ray cluster at 127.0.0.1:{port}: "
                   "Connection refused (start one with `ray start --head`)\n")  # fmt: skip
    assert not (tmp_path / "out").exists()
