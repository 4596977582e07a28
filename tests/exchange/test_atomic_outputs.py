"""Outputs are never half-written (exchange/atomic_file.py): a failure or Ctrl-C part-way
leaves any older file as it was and no temporary file behind, and an interrupted command
says in one line that nothing was written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from wattmesh.exchange.atomic_file import StagedFiles, atomic_output, write_atomic
from wattmesh.exchange.cli.app import app
from wattmesh.exchange.replay.sample_log import benchmark_log
from wattmesh.settlement.keys import generate_key, save_key

# The sample's outputs (it refuses no line: no rejects.jsonl).
OUTPUTS = ("trades.csv", "intervals.csv", "accounts.csv", "summary.json", "trades.parquet",
           "intervals.parquet", "accounts.parquet", "rejects.parquet")  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failure_part_way_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    write_atomic(target, b"old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as fp:
        fp.write(b"new, half")
        raise RuntimeError("the source failed")
    assert snapshot(tmp_path) == {"out.jsonl": b"old\n"}
    with atomic_output(target) as fp:
        fp.write(b"new\n")
    assert snapshot(tmp_path) == {"out.jsonl": b"new\n"}


def test_staged_files_change_together_or_not_at_all(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), StagedFiles(tmp_path) as files:
        files.open("a").write(b"new")
        files.open("b").write(b"ne")
        raise KeyboardInterrupt
    assert snapshot(tmp_path) == {"a": b"old", "b": b"old"}
    with StagedFiles(tmp_path) as files:
        files.open("a").write(b"new")
        with files.open("b") as fp:  # a writer may close its file itself
            fp.write(b"new")
    assert snapshot(tmp_path) == {"a": b"new", "b": b"new"}


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "big.jsonl"
    benchmark_log(path, events=100_000)
    return path


@pytest.mark.parametrize("stage", ["trades.csv", "trades.parquet", "summary.json"])
def test_an_interrupted_replay_keeps_the_old_outputs_and_says_so(
    tmp_path: Path, big_log: Path, stage: str, interrupt_when
) -> None:
    """Ctrl-C while replay is writing (its temporary file for ``stage`` exists): the old
    outputs stay, byte for byte, and stderr is one line."""
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "wattmesh.exchange.cli", "replay"]
    subprocess.run([*cli, "--out", str(out)], check=True, capture_output=True)  # the sample
    old = snapshot(out)
    code, err = interrupt_when([*cli, str(big_log), "--out", str(out)],
                               lambda: any(out.glob(f".{stage}.*.tmp")))  # fmt: skip
    now = snapshot(out)
    assert set(now) - {"rejects.jsonl"} == set(OUTPUTS), now.keys()  # no temporary file left
    if code == 130:
        assert err.splitlines() == ["wattmesh: interrupted: nothing was written"]
        assert now == old
    else:  # it finished between the look and the signal: a whole new, consistent set
        assert code == 0, err
        summary = orjson.loads(now["summary.json"])
        assert now["trades.csv"].count(b"\n") == summary["fills"] + 1


def test_meter_read_with_a_bad_row_leaves_the_old_file(tmp_path: Path) -> None:
    key = tmp_path / "meter.key"
    save_key(key, generate_key())
    csv = tmp_path / "m.csv"
    csv.write_text("start,end,produced_wh,consumed_wh\n0,900000,5,7\n900000,1800000,x,3\n")
    out = tmp_path / "week.jsonl"
    out.write_bytes(b"older readings\n")
    res = CliRunner().invoke(
        app, ["meter", "read", "--source", "csv", "--file", str(csv), "--key", str(key),
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 2, res.stderr
    assert f"{out} was not written" in res.stderr
    assert snapshot(tmp_path) == {
        "m.csv": csv.read_bytes(), "meter.key": key.read_bytes(), "week.jsonl": b"older readings\n"
    }  # fmt: skip


def test_the_files_kept_for_an_interrupt_message_do_not_grow_without_bound(tmp_path: Path):
    # A sweep writes one file per point: a million points must not be a million paths kept.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from wattmesh.exchange import atomic_file\n"
        "for i in range(500):\n"
        "    atomic_file.write_atomic(Path(sys.argv[1]) / f'{i:03d}.json', b'{}')\n"
        "print(len(atomic_file.committed()))\n"
        "print(atomic_file.written_summary())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                          capture_output=True, text=True)  # fmt: skip
    kept, summary = done.stdout.splitlines()
    assert int(kept) < 500
    named = ", ".join(str(tmp_path / f"{i:03d}.json") for i in range(int(kept)))
    assert summary == (f"only these were written, each whole: {named} and {500 - int(kept)} "
                       "more")  # fmt: skip
