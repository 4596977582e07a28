"""The ``wattmesh`` command line: ``wattmesh replay`` (wattmesh.exchange.cli.app)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

T0 = 1_718_928_000_000


def write_log(path: Path, *lines: dict | str) -> Path:
    path.write_bytes(
        b"".join((orjson.dumps(x) if isinstance(x, dict) else x.encode()) + b"\n" for x in lines)
    )
    return path


@pytest.fixture
def order(make_order):
    """The log line of ``owner``'s unsigned 100 Wh order."""

    def build(owner: str, side: str, price: int, ts: int, interval: int | None = T0) -> dict:
        return make_order(owner, side, price, 100, ts, interval).to_dict()

    return build


def test_replay_without_a_log_replays_the_bundled_sample_in_call_mode(console):
    code, out, err = console("replay")
    assert code == 0 and err == ""
    assert "call mode" in out
    fills = int(out.split("fills")[1].split()[0].replace(",", ""))
    assert fills > 0
    for word in ("events", "volume", "vwap", "refused"):
        assert word in out


def test_help_says_call_is_the_default_mode(console, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps help to the terminal's width
    code, out, _err = console("replay", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Default mode: call" in text
    for flag in ("--mode", "--interval-ms", "--stp", "--trades", "--out", "--strict",
                 "--verify-signatures"):  # fmt: skip
        assert flag in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--bogus"], "No such option: --bogus"),
        (["replay", "--mode", "auction"], "'auction' is not one of"),
        (["replay", "--interval-ms", "0"], "--interval-ms"),
        (["replay", "--stp", "maybe"], "--stp"),
        (["replay", "no/such/log.jsonl"], "does not exist"),
        (["replay", "--trades", "no/such/dir/trades.jsonl"], "cannot write"),
        (["nonsense"], "No such command"),
    ],
)
def test_a_wrong_flag_or_a_missing_file_is_one_error_line_and_exit_code_2(
    console, args, message
):
    code, out, err = console(*args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("wattmesh: error: ")
    assert message in err


def test_strict_exits_2_at_the_first_bad_line_naming_it(order, console, tmp_path):
    log = write_log(
        tmp_path / "bad.jsonl",
        order("s", "ask", 200_000, T0 - 10),
        '{"type": "order", "price": 1}',
        "not json",
    )
    code, out, err = console("replay", str(log), "--strict")
    assert code == 2 and out == ""
    assert err == "wattmesh: error: line 2: bad-record: market: missing\n"

    code, out, err = console("replay", str(log))  # without --strict: refused, go on
    assert code == 0 and "refused   2 (bad-json 1, bad-record 1)" in out


def test_trades_and_out_files_are_written_and_agree(console, tmp_path):
    code, out, _err = console(
        "replay", "--mode", "cda", "--trades", str(tmp_path / "t.jsonl"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0
    trades = [orjson.loads(x) for x in (tmp_path / "t.jsonl").read_bytes().splitlines()]
    csv_lines = (tmp_path / "out" / "trades.csv").read_text().splitlines()
    assert csv_lines[0] == ("seq,mode,interval_start_ms,ts_ms,buyer,seller,bid,ask,qty_wh,"
                            "price_micro_per_kwh")  # fmt: skip
    assert len(csv_lines) - 1 == len(trades) > 0
    assert all(t["mode"] == "cda" and t["interval"] is None for t in trades)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["fills"] == len(trades)
    assert f"fills     {len(trades):,}" in out


def test_trades_to_stdout_keep_stdout_pure_json_lines(console):
    code, out, err = console("replay", "--trades", "-")
    assert code == 0
    trades = [orjson.loads(line) for line in out.splitlines()]
    assert len(trades) > 0 and [t["seq"] for t in trades] == list(range(1, len(trades) + 1))
    assert "fills" in err  # the summary moved to stderr


def test_json_summary(console, tmp_path):
    code, out, _err = console("replay", "--json", "--out", str(tmp_path))
    assert code == 0
    assert orjson.loads(out) == orjson.loads((tmp_path / "summary.json").read_bytes())


def test_the_same_log_gives_the_same_bytes_out(console, tmp_path):
    outputs = []
    for name in ("one", "two"):
        code, out, _err = console(
            "replay", "--trades", str(tmp_path / f"{name}.jsonl"),
            "--out", str(tmp_path / name),
        )  # fmt: skip
        assert code == 0
        files = sorted((tmp_path / name).iterdir())
        outputs.append(
            (out, (tmp_path / f"{name}.jsonl").read_bytes(), [f.read_bytes() for f in files])
        )
    assert outputs[0] == outputs[1]


def test_verify_signatures_on_the_sample_refuses_nothing(console):
    code, out, _err = console("replay", "--verify-signatures")
    assert code == 0 and "refused   0\n" in out


def test_no_progress_bar_garbles_captured_output(console, tmp_path):
    code, _out, err = console("replay", "--mode", "cda")
    assert code == 0 and err == ""


def test_the_installed_console_script_runs():
    script = Path(sys.executable).with_name("wattmesh")
    done = subprocess.run(
        [str(script), "replay", "--mode", "cda", "--json"], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["fills"] > 0
    done = subprocess.run([str(script), "replay", "--nope"], capture_output=True, check=False)
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("wattmesh: error: No such option: --nope")


def test_version_and_short_help(console):
    from importlib.metadata import version

    code, out, _err = console("--version")
    assert (code, out.strip()) == (0, f"wattmesh {version('wattmesh')}")
    for args in (("-h",), ("ledger", "-h"), ("replay", "-h")):
        code, out, err = console(*args)
        assert code == 0 and "Usage: wattmesh" in out and err == "", args


def test_a_reader_that_stops_early_is_no_error(tmp_path):
    """``wattmesh replay --trades - | head -0``: the reader is gone before the first
    write; the command ends quietly by SIGPIPE, as Unix tools do: no error line, no
    traceback."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "wattmesh.exchange.cli", "replay", "--trades", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # the replay takes a while: every write meets a closed pipe
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGPIPE, (proc.returncode, err)
    assert err == b"", err


def test_commands_that_talk_to_peers_keep_sigpipe_ignored(monkeypatch):
    """A peer's closed socket must be an error the node handles, never a signal that
    kills it: only the other commands end quietly on a closed stdout."""
    import signal

    from wattmesh.exchange.cli import app

    seen = []
    monkeypatch.setattr(app.typer.main, "get_command", lambda _app: _Probe(seen))
    for args in (["node"], ["demo"], ["bot"], ["api", "token"], ["replay"]):
        with pytest.raises(SystemExit):
            app.main(args)
    assert seen == [signal.SIG_IGN] * 4 + [signal.SIG_DFL]
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # restored


class _Probe:
    """Stands in for the click command: records SIGPIPE's handler while it runs."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def main(self, **_kwargs) -> int:
        import signal

        self.seen.append(signal.getsignal(signal.SIGPIPE))
        return 0


def test_an_empty_or_garbage_log_says_so_in_one_line(console, tmp_path):
    empty = write_log(tmp_path / "empty.jsonl")
    code, out, err = console("replay", empty)
    assert code == 0 and "replayed 0 events" in out
    assert err == f"wattmesh: note: {empty} has no lines: nothing was replayed\n"
    garbage = write_log(tmp_path / "garbage.jsonl", "garbage", "<html>")
    code, out, err = console("replay", garbage)
    assert code == 0 and err.count("\n") == 1
    assert err.startswith(f"wattmesh: note: not one of the 2 lines of {garbage} was accepted "
                          "(bad-json 2)") and "--strict" in err  # fmt: skip
    code, _out, err = console("replay", "--strict", garbage)
    assert code == 2 and err.startswith("wattmesh: error: line 1: bad-json")


def test_a_log_from_a_pipe_is_replayed_whole_and_a_node_log_there_refused(tmp_path):
    """`cat LOG | wattmesh replay /dev/stdin`: the line read to tell the log's kind is
    replayed with the rest, so a pipe gives the summary its file gives (the check used to
    consume the lines it buffered: 2,000 lines replayed as 1,937, one line as none). A
    node log is settled from its file: from a pipe it is one clear error."""
    from wattmesh.exchange.replay.replay import bundled_sample

    data = bundled_sample().read_bytes()
    log = tmp_path / "sample.jsonl"
    log.write_bytes(data)
    run = [sys.executable, "-m", "wattmesh.exchange.cli", "replay"]
    for mode in ("call", "cda"):
        from_file = subprocess.run([*run, str(log), "--mode", mode, "--json"],
                                   capture_output=True, timeout=120, check=True)  # fmt: skip
        piped = subprocess.run([*run, "/dev/stdin", "--mode", mode, "--json"], input=data,
                               capture_output=True, timeout=120, check=True)  # fmt: skip
        assert orjson.loads(piped.stdout) == orjson.loads(from_file.stdout)
        assert orjson.loads(piped.stdout)["events"] == data.count(b"\n")
    one = data.split(b"\n", 1)[0] + b"\n"
    piped = subprocess.run([*run, "/dev/stdin", "--json"], input=one, capture_output=True,
                           timeout=120, check=True)  # fmt: skip
    assert orjson.loads(piped.stdout)["events"] == 1
    node_log = b'\n{"type":"community","name":"street"}\n'
    res = subprocess.run([*run, "/dev/stdin"], input=node_log, capture_output=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 2 and res.stdout == b""
    assert res.stderr.decode() == (
        "wattmesh: error: /dev/stdin is a node log read from a pipe: replay it from its file "
        "(a node log is settled from the file wattmesh export-log writes)\n"
    )
