"""``wattmesh meter keygen|read|verify`` (exchange/cli/meter.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from wattmesh.settlement.keys import load_key, peer_id_of
from wattmesh.settlement.records import Reading

DATA = Path(__file__).resolve().parents[2] / "meters" / "data" / "dsmr"


@pytest.fixture
def key(cli, tmp_path: Path) -> Path:
    path = tmp_path / "meter.key"
    code, out, _ = cli("meter", "keygen", "--out", str(path))
    assert code == 0 and out.strip() == peer_id_of(load_key(path))
    return path


def readings(path: Path) -> list[Reading]:
    return [Reading.from_dict(orjson.loads(x)) for x in path.read_bytes().splitlines()]


def test_keygen_never_overwrites_a_meter_key(cli, key: Path) -> None:
    before = key.read_bytes()
    code, _, err = cli("meter", "keygen", "--out", str(key))
    assert code == 2 and "exists" in err and err.count("\n") == 1
    assert key.read_bytes() == before


def test_read_sim_writes_signed_readings_that_verify(cli, tmp_path: Path, key: Path) -> None:
    out = tmp_path / "r.jsonl"
    code, _, err = cli("meter", "read", "--source", "sim", "--backend", "builtin",
                       "--days", "2", "--key", str(key), "--out", str(out))  # fmt: skip
    assert code == 0 and "192 readings" in err
    rs = readings(out)
    assert len(rs) == 192 and [r.seq for r in rs] == list(range(1, 193))
    assert all(r.verify_signature() and r.meter == peer_id_of(load_key(key)) for r in rs)
    code, text, _ = cli("meter", "verify", str(out), "--meter-pub", str(key))
    assert code == 0 and text.startswith("ok: 192 readings")


def test_read_csv_and_dsmr_sources(cli, tmp_path: Path, key: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("start,end,produced_wh,consumed_wh\n0,900000,5,7\n900000,1800000,0,3\n")
    out = tmp_path / "c.jsonl"
    assert cli("meter", "read", "--source", "csv", "--file", str(csv), "--key", str(key),
               "--out", str(out))[0] == 0  # fmt: skip
    assert [(r.produced, r.consumed) for r in readings(out)] == [(5, 7), (0, 3)]
    out = tmp_path / "d.jsonl"
    telegrams = str(DATA / "sequence_fluvius_1h.txt")
    code, _, err = cli("meter", "read", "--source", "dsmr", "--file", telegrams,
                       "--key", str(key), "--out", str(out))  # fmt: skip
    assert code == 0, err
    rs = readings(out)
    assert len(rs) == 4 and all(r.end - r.start == 900_000 for r in rs)


def test_verify_names_every_refused_reading(cli, tmp_path: Path, key: Path) -> None:
    out = tmp_path / "r.jsonl"
    cli("meter", "read", "--source", "sim", "--backend", "builtin", "--key", str(key),
        "--out", str(out))  # fmt: skip
    lines = out.read_bytes().splitlines()
    forged = orjson.loads(lines[3])
    forged["consumed"] += 1
    lines[3] = orjson.dumps(forged)
    lines.append(lines[10])  # a replayed reading
    lines.insert(0, b"{not json")
    out.write_bytes(b"\n".join(lines) + b"\n")
    code, text, _ = cli("meter", "verify", str(out), "--meter-pub", peer_id_of(load_key(key)))
    assert code == 1
    assert "line 1: malformed" in text
    assert "line 5: bad-signature" in text
    assert "line 98: out-of-order" in text
    assert text.strip().endswith("bad: 3 of 98 readings refused")
    code, text, _ = cli("meter", "verify", str(out), "--meter-pub", str(key),
                        "--max-power-w", "100")  # fmt: skip
    assert code == 1 and "impossible" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "csv"], "csv: --file is required"),
        (["--source", "csv", "--file", "nope.csv"], "--file: no such file"),
        (["--source", "dsmr"], "exactly one of --file"),
        (["--source", "sunspec"], "give --host and --samples"),
        (["--source", "sim", "--start", "21/06/2024"], "--start: must be a date"),
        (["--source", "sim", "--backend", "magic"], "sim: "),
    ],
)
def test_read_refuses_bad_options_with_one_line(cli, key: Path, args, message) -> None:
    code, out, err = cli("meter", "read", "--key", str(key), *args)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


def test_read_without_a_key_says_how_to_make_one(cli, tmp_path: Path) -> None:
    code, _, err = cli("meter", "read", "--source", "sim", "--key", str(tmp_path / "none.key"))
    assert code == 2 and "wattmesh meter keygen" in err
