"""Node logs (exchange/replay/node_log.py): a street of real node processes runs
(``wattmesh demo --dir``), one household exports what its node settled, and replaying that
log gives the node's trades and the node's ledger head; a log changed anywhere is refused
naming the line, or (a changed community) replays to closes that say where they differ.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from wattmesh.exchange.replay.node_log import NodeLogError, replay_node_log
from wattmesh.settlement.ledger import Ledger

WATTMESH = [sys.executable, "-m", "wattmesh.exchange.cli"]


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory, run_group: Callable) -> Path:
    """Three households' data directories after an hour of real trading (four intervals)."""
    root = tmp_path_factory.mktemp("street") / "street"
    code, out = run_group([*WATTMESH, "demo", "--households", "3", "--hours", "1",
                           "--seconds-per-interval", "1.5", "--dir", str(root)], 150)  # fmt: skip
    assert code == 0, out
    return root


@pytest.fixture(scope="module")
def day(street: Path) -> Path:
    """house-2's exported log, through the documented command."""
    out = street.parent / "day.jsonl"
    cmd = [*WATTMESH, "export-log", "--data-dir", str(street / "house-2"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "4 settled intervals" in proc.stderr
    return out


def node_trades(ledger: Path) -> list[tuple]:
    with Ledger.open(ledger, create=False) as led:
        return [(e.body["interval"], e.body["buyer"], e.body["seller"], e.body["bid"],
                 e.body["ask"], e.body["qty"], e.body["price"])
                for e in led.entries(kind="trade")]  # fmt: skip


def test_the_exported_log_replays_to_the_nodes_trades_and_ledger_head(
    street: Path, day: Path, tmp_path: Path, cli: Callable
) -> None:
    node_ledger = street / "house-2" / "ledger.sqlite"
    code, verified, _ = cli("ledger", "verify", node_ledger)
    assert code == 0
    node_head = verified.split("head ")[1].strip()
    rebuilt = tmp_path / "rebuilt.db"
    code, out, err = cli("replay", day, "--ledger", rebuilt, "--out", tmp_path / "tables")
    assert code == 0, err
    assert f"head {node_head}; every close is the node's (4 of 4)" in err
    assert "replayed" in out and "call mode" in out
    code, again, _ = cli("ledger", "verify", rebuilt)
    assert code == 0 and again == verified.replace(str(node_ledger), str(rebuilt))
    # The replay's trades are the node's, row for row.
    with open(tmp_path / "tables" / "trades.csv", newline="") as fp:
        rows = [(int(r["interval_start_ms"]), r["buyer"], r["seller"], r["bid"], r["ask"],
                 int(r["qty_wh"]), int(r["price_micro_per_kwh"]))
                for r in csv.DictReader(fp)]  # fmt: skip
    assert rows and rows == node_trades(node_ledger)
    summary = orjson.loads((tmp_path / "tables" / "summary.json").read_bytes())
    assert summary["intervals"] == 4 and summary["readings"] > 0
    assert summary["accepted"]["orders"] > 0 and summary["refused"] == 0
    # The other households' ledgers are the same ledger, so every export replays to it.
    for house in ("house-1", "house-3"):
        log = tmp_path / f"{house}.jsonl"
        code, _, err = cli("export-log", "--data-dir", street / house, "--out", log)
        assert code == 0, err
        assert replay_node_log(log).head == node_head


def test_a_node_log_replays_to_the_same_bytes(day: Path, tmp_path: Path, cli: Callable) -> None:
    outs = []
    for k in range(2):
        code, _, err = cli("replay", day, "--out", tmp_path / f"o{k}",
                           "--trades", tmp_path / f"t{k}")  # fmt: skip
        assert code == 0, err
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / f"o{k}").iterdir())})
        outs[-1]["trades"] = (tmp_path / f"t{k}").read_bytes()
    assert outs[0] == outs[1] and b'"mode":"call"' in outs[0]["trades"]


def test_the_community_decides_the_rules_of_a_node_log(day: Path, cli: Callable) -> None:
    code, out, err = cli("replay", day, "--mode", "cda", "--retail-price", "1")
    assert code == 2 and out == ""
    assert "is a node log" in err and "--mode and --retail-price do not apply" in err
    assert len(err.strip().splitlines()) == 1


def lines_of(day: Path) -> list[bytes]:
    return day.read_bytes().splitlines()


def first(lines: list[bytes], kind: bytes) -> int:
    return next(i for i, line in enumerate(lines) if b'"type":"%s"' % kind in line)


def forge_price(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = next(i for i, line in enumerate(lines) if b'"price":' in line and b'"orders"' in line)
    d = orjson.loads(lines[i])
    d["orders"][0]["price"] += 1000
    lines[i] = orjson.dumps(d, option=orjson.OPT_SORT_KEYS)
    return lines, i + 1, "bad-signature"


def drop_message(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = first(lines, b"batch")
    close = next(k for k in range(i, len(lines)) if b'"type":"close"' in lines[k])
    del lines[i]
    return lines, close, "set digest"  # the close moved up one line


def move_message(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    close = first(lines, b"close")
    later = next(i for i in range(close + 1, len(lines)) if b'"type":"batch"' in lines[i])
    lines.insert(close, lines.pop(later))  # into the interval before its own
    return lines, close + 1, "is for interval"


def forge_vote(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = first(lines, b"close")
    d = orjson.loads(lines[i])
    sig = d["certificate"]["votes"][0]["sig"]
    d["certificate"]["votes"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    lines[i] = orjson.dumps(d, option=orjson.OPT_SORT_KEYS)
    return lines, i + 1, "is not signed by it"


def cut_short(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    close = max(i for i, line in enumerate(lines) if b'"type":"close"' in line)
    del lines[close]
    start = max(i for i, line in enumerate(lines) if b'"type":"close"' in line) + 1
    return lines, start + 1, "no close line"


def two_communities(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    lines.insert(2, lines[0])
    return lines, 3, "a second community line"


def not_json(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    lines.insert(1, b"{nope")
    return lines, 2, "not JSON"


@pytest.mark.parametrize(
    "tamper",
    [forge_price, drop_message, move_message, forge_vote, cut_short, two_communities, not_json],
)
def test_a_changed_node_log_is_refused_naming_its_line(
    tamper: Callable, day: Path, tmp_path: Path, cli: Callable
) -> None:
    lines, lineno, why = tamper(lines_of(day))
    log = tmp_path / "changed.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(NodeLogError, match=f"^line {lineno}: .*{why}"):
        replay_node_log(log)
    # Through the command: one line, exit 2, no ledger and no tables left behind.
    code, out, err = cli("replay", log, "--ledger", tmp_path / "x.db", "--out", tmp_path / "o")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"line {lineno}: " in err and why in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changed.jsonl"]


def test_another_community_replays_to_other_closes_and_says_from_where(
    day: Path, tmp_path: Path
) -> None:
    lines = lines_of(day)
    d = orjson.loads(lines[0])
    d["community"]["member"][0]["money"] += 1  # one nano more for one household
    lines[0] = orjson.dumps(d, option=orjson.OPT_SORT_KEYS)
    log = tmp_path / "other.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    done = replay_node_log(log)
    first_interval = orjson.loads(lines[first(lines, b"close")])["interval"]
    assert done.same_closes == 0 and done.first_difference == first_interval
    assert f"the first that differs is interval {first_interval}" in done.line(None)


def test_export_log_errors_are_one_line(street: Path, tmp_path: Path, cli: Callable) -> None:
    code, out, err = cli("export-log", "--data-dir", tmp_path / "none", "--out", tmp_path / "d")
    assert code == 1 and "no data directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
    target = tmp_path / "missing" / "day.jsonl"
    code, out, err = cli("export-log", "--data-dir", street / "house-1", "--out", target)
    assert code == 1
    assert err == f"wattmesh: error: cannot write {target}: No such file or directory\n"
    code, out, err = cli("replay", tmp_path / "none.jsonl")
    assert code == 2 and "does not exist" in err


def test_a_ledger_the_replay_cannot_keep_is_refused_naming_the_option(
    day: Path, tmp_path: Path, cli: Callable
) -> None:
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"something")
    code, _, err = cli("replay", day, "--ledger", taken)
    assert code == 2 and err.startswith("wattmesh: error: --ledger: ") and "not empty" in err
    assert taken.read_bytes() == b"something"
    code, _, err = cli("replay", day, "--ledger", tmp_path / "missing" / "x.db")
    assert code == 2 and err.startswith("wattmesh: error: --ledger: cannot write ")
