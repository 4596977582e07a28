"""Running a sweep (exchange/sweep/sweep.py): one typed row per point, resumable (a
finished point is never run again), a crashed point reported with its parameters while
the others go on, and an output folder of another sweep refused."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wattmesh.exchange.sweep import targets
from wattmesh.exchange.sweep.spec import parse_spec
from wattmesh.exchange.sweep.store import OutputError
from wattmesh.exchange.sweep.sweep import run_sweep
from wattmesh.exchange.sweep.table import sweep_table

GS = "simulate gode-sunder"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "analysis.md"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every Gode–Sunder point run in this process, by its parameters (run with
    workers=1, so the points run here); a point with seed 1 and zi-u raises."""
    calls: list[dict] = []
    real = targets.TARGETS[GS]

    def run(params: dict) -> dict:
        calls.append(params)
        if params["seed"] == 1 and params["strategy"] == "zi-u":
            raise RuntimeError("the point broke")
        return real.run(params)

    monkeypatch.setitem(targets.TARGETS, GS, dataclasses.replace(real, run=run))
    return calls


def test_a_second_run_reruns_nothing_finished(sweep_spec, tmp_path: Path, counted: list):
    spec, out = sweep_spec(), tmp_path / "out"
    first = run_sweep(spec, out, workers=1)
    assert (first.total, first.ran, first.skipped, len(counted)) == (6, 6, 0, 6)
    assert [(p.index, e) for p, e in first.failed] == [(1, "RuntimeError: the point broke")]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    table = (out / "sweep.parquet").read_bytes()

    counted.clear()
    second = run_sweep(spec, out, workers=1)
    # Only the failed point runs again; the finished ones' files are not even rewritten.
    assert [c["seed"] for c in counted] == [1] and (second.ran, second.skipped) == (1, 5)
    assert {
        p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir() if p.name != "000001.json"
    } == {k: v for k, v in stamps.items() if k != "000001.json"}
    assert (out / "sweep.parquet").read_bytes() == table

    counted.clear()
    (out / "points" / "000004.json").unlink()  # as if stopped before point 4 finished
    third = run_sweep(spec, out, workers=1)
    assert [(c["strategy"], c["seed"]) for c in counted] == [("zi-u", 1), ("zi-c", 1)]
    assert (third.ran, third.skipped) == (2, 4)
    assert (out / "sweep.parquet").read_bytes() == table


def test_a_crashed_point_is_a_row_with_its_error_and_the_others_finish(
    sweep_spec, tmp_path: Path, counted: list
):
    outcome = run_sweep(sweep_spec(), tmp_path / "out", workers=1)
    assert len(counted) == 6 and len(outcome.failed) == 1
    point, error = outcome.failed[0]
    assert point.params["strategy"] == "zi-u" and point.params["seed"] == 1
    table = pq.read_table(tmp_path / "out" / "sweep.parquet")
    rows = table.to_pylist()
    assert [r["point"] for r in rows] == list(range(6))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "ok", "ok", "ok"]
    assert rows[1]["error"] == "RuntimeError: the point broke" and rows[1]["trades"] is None
    assert all(r["error"] is None and r["trades"] > 0 for i, r in enumerate(rows) if i != 1)


def test_the_table_has_a_typed_column_per_parameter_and_metric(sweep_spec, tmp_path: Path):
    run_sweep(sweep_spec(), tmp_path / "out", workers=2)
    table = pq.read_table(tmp_path / "out" / "sweep.parquet")
    schema = table.schema
    assert schema.names == [
        "point",
        "market",
        "strategy",
        "seed",
        "periods",
        "shouts",
        "replace_own",
        "skip_dead",
        "efficiency_pct",
        "alpha_last_pct",
        "dispersion_last",
        "mean_price",
        "trades",
        "status",
        "error",
    ]
    assert [
        schema.field(n).type
        for n in ("point", "strategy", "replace_own", "efficiency_pct", "trades")
    ] == [  # fmt: skip
        pa.int64(),
        pa.string(),
        pa.bool_(),
        pa.float64(),
        pa.int64(),
    ]
    assert schema.metadata[b"wattmesh.sweep.target"] == b"simulate gode-sunder"
    assert table.column("seed").to_pylist() == [0, 1, 2, 0, 1, 2]
    assert table.column("status").to_pylist() == ["ok"] * 6


def test_the_same_spec_gives_the_same_bytes_whoever_ran_the_points(sweep_spec, tmp_path: Path):
    spec = sweep_spec()
    run_sweep(spec, tmp_path / "here", workers=1)
    run_sweep(spec, tmp_path / "pool", workers=2)
    here = (tmp_path / "here" / "sweep.parquet").read_bytes()
    assert (tmp_path / "pool" / "sweep.parquet").read_bytes() == here
    # In whatever order the points arrive, the rows are in point order.
    records = [
        __import__("orjson").loads(p.read_bytes())
        for p in sorted((tmp_path / "here" / "points").iterdir())
    ]
    target = targets.TARGETS[GS]
    assert sweep_table(target, records[::-1]).equals(sweep_table(target, records))


def test_a_folder_of_another_sweep_is_refused_and_left_as_it_was(sweep_spec, tmp_path: Path):
    out = tmp_path / "out"
    run_sweep(sweep_spec(), out, workers=1)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = sweep_spec(
        'target = "simulate gode-sunder"\n[fixed]\nmarket = 2\nperiods = 1\nshouts = 50\n'
        '[grid]\nstrategy = ["zi-c"]\nseed = [0]\n',
        name="other.toml",
    )
    with pytest.raises(OutputError, match=re.escape(
            f"{out} holds another sweep's results (its spec.toml is not {other}): choose "
            "another --out, or remove that folder")):  # fmt: skip
        run_sweep(other, out, workers=1)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # The same spec written differently (comments, order, spacing) is the same sweep.
    same = sweep_spec("# again\n" + sweep_spec().read_text().replace("\n\n", "\n"), "same.toml")
    assert run_sweep(same, out, workers=1).skipped == 6


def test_a_folder_with_other_files_is_refused(sweep_spec, tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not empty and holds no sweep"):
        run_sweep(sweep_spec(), tmp_path / "out", workers=1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


def sweeps_section() -> str:
    """docs/analysis.md's "## Sweeps" section (up to the next section of that level)."""
    return DOCS.read_text().split("## Sweeps\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_example_spec_runs_and_the_sample_parses(tmp_path: Path):
    example, *others = re.findall(r"```toml\n(.*?)```", sweeps_section(), re.S)
    (tmp_path / "efficiency.toml").write_text(example)
    outcome = run_sweep(tmp_path / "efficiency.toml", tmp_path / "out")
    assert (outcome.total, outcome.failed) == (8, [])
    assert pq.read_table(outcome.table).num_rows == 8
    assert [len(parse_spec(text).points) for text in others] == [50]


def test_the_docs_name_every_parameter_and_metric():
    text = sweeps_section()
    missing = [f"{t.name}: {name}" for t in targets.TARGETS.values()
               for name in [p.name for p in t.parameters] + [m for m, _ in t.metrics]
               if f"`{name}`" not in text]  # fmt: skip
    assert missing == []


def test_a_folder_left_by_a_kill_before_the_spec_was_copied_is_taken(sweep_spec, tmp_path: Path):
    # What a run killed between making the folder and copying the spec into it leaves.
    (tmp_path / "out" / "points").mkdir(parents=True)
    assert run_sweep(sweep_spec(), tmp_path / "out", workers=1).ran == 6


def test_the_spec_is_copied_before_the_points_folder_is_made(
    sweep_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out, seen = tmp_path / "out", []
    mkdir = Path.mkdir

    def watched(self: Path, *args, **kwargs) -> None:
        if self == out / "points":
            seen.append((out / "spec.toml").exists())
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", watched)
    run_sweep(sweep_spec(), out, workers=1)
    assert seen == [True]


REPLAY_SPEC = 'target = "replay"\n[grid]\nlog = ["orders.jsonl"]\nmode = ["call", "cda"]\n'


def write_log(folder: Path, lines: int) -> Path:
    """The bundled sample's first ``lines`` lines as ``folder/orders.jsonl``."""
    from wattmesh.exchange.replay.replay import bundled_sample

    folder.mkdir(parents=True, exist_ok=True)
    head = bundled_sample().read_bytes().splitlines(keepends=True)[:lines]
    (folder / "orders.jsonl").write_bytes(b"".join(head))
    return folder / "orders.jsonl"


def test_the_same_spec_text_beside_another_log_is_another_sweep(tmp_path: Path):
    out = tmp_path / "out"
    for name, lines in (("a", 200), ("b", 300)):
        write_log(tmp_path / name, lines)
        (tmp_path / name / "spec.toml").write_text(REPLAY_SPEC)
    assert run_sweep(tmp_path / "a" / "spec.toml", out, workers=1).ran == 2
    with pytest.raises(OutputError, match="holds another sweep's results"):
        run_sweep(tmp_path / "b" / "spec.toml", out, workers=1)


def test_a_log_changed_since_the_last_run_runs_its_points_again(tmp_path: Path):
    log, out = write_log(tmp_path, 200), tmp_path / "out"
    (tmp_path / "spec.toml").write_text(REPLAY_SPEC)
    first = run_sweep(tmp_path / "spec.toml", out, workers=1)
    events = pq.read_table(first.table).column("events").to_pylist()
    assert run_sweep(tmp_path / "spec.toml", out, workers=1).ran == 0
    write_log(tmp_path, 300)
    again = run_sweep(tmp_path / "spec.toml", out, workers=1)
    assert (again.ran, again.skipped) == (2, 0)
    now = pq.read_table(again.table).column("events").to_pylist()
    assert all(n > e for n, e in zip(now, events, strict=True))
    record = orjson.loads((out / "points" / "000000.json").read_bytes())
    assert record["inputs"] == {
        "log": {"path": str(log), "sha256": hashlib.sha256(log.read_bytes()).hexdigest()}
    }


def test_the_copied_spec_resumes_its_sweep_from_the_output_folder(tmp_path: Path):
    log, out = write_log(tmp_path / "logs", 200), tmp_path / "out"
    (tmp_path / "logs" / "spec.toml").write_text("# two modes\n" + REPLAY_SPEC)
    assert run_sweep(tmp_path / "logs" / "spec.toml", out, workers=1).ran == 2
    copy = out / "spec.toml"
    assert tomllib.loads(copy.read_text())["grid"]["log"] == [str(log)]
    resumed = run_sweep(copy, out, workers=1)
    assert (resumed.ran, resumed.skipped) == (0, 2)
    # and the original spec still is the same sweep as its copy
    assert run_sweep(tmp_path / "logs" / "spec.toml", out, workers=1).skipped == 2
