"""``wattmesh --help`` starts without the heavy modules its commands load when they run
(README, "Performance": start-up). Checked by what is imported, not by a clock."""

from __future__ import annotations

import subprocess
import sys

# Each costs 10 to 300 ms to import, and only some commands need it.
HEAVY = ("httpx", "cryptography", "sqlite_utils", "pandas", "numpy", "libp2p", "trio",
         "matplotlib", "wattmesh.exchange.replay._logscan", "wattmesh.settlement.ledger.store",
         "wattmesh.exchange.node.config", "wattmesh.settlement.keys", "pyarrow", "polars",
         "duckdb", "ray", "wattmesh.exchange.sweep.targets")  # fmt: skip


# Each of our own library modules below costs 2 to 15 ms and belongs to a few commands
# only: the command modules import them in the command's body (exchange/cli/), and
# simulate gode-sunder's option defaults come from agents/gode_sunder_defaults.py.
COMMAND_ONLY = ("wattmesh.agents.gode_sunder", "wattmesh.agents.traders",
                "wattmesh.agents.metrics", "wattmesh.agents.community",
                "wattmesh.agents.threshold", "wattmesh.meters.profiles",
                "wattmesh.exchange.simulation_tables", "wattmesh.exchange.api.tokens",
                "wattmesh.settlement.ledger", "wattmesh.settlement.merkle")  # fmt: skip


def loaded_by(args: list[str]) -> set[str]:
    code = ("import sys\n"
            "from wattmesh.exchange.cli.app import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    return set(res.stderr.split())


def test_help_and_version_load_none_of_the_heavy_modules() -> None:
    for args in (
        [],
        ["--help"],
        ["--version"],
        ["replay", "--help"],
        ["bot", "--help"],
        ["ledger", "--help"],
        ["sweep", "--help"],
    ):
        assert loaded_by(args) & set(HEAVY) == set(), args


def test_help_and_a_replay_load_no_other_commands_modules() -> None:
    for args in ([], ["--help"], ["replay", "--help"], ["simulate", "--help"],
                 ["replay", "--json"]):  # fmt: skip
        assert loaded_by(args) & set(COMMAND_ONLY) == set(), args


# The command modules of exchange/cli/ other than replay's (which lives in app.py).
OTHER_COMMANDS = tuple(f"wattmesh.exchange.cli.{name}" for name in (
    "api", "bot", "community", "ledger", "meter", "node", "report", "simulate_community",
    "simulate_gode_sunder", "sweep"))  # fmt: skip


def test_a_replay_loads_no_other_commands_cli_module_and_no_pydantic() -> None:
    """What a replay pays before its first line is what separates it from an orjson loop
    (README, "Performance"). typer 0.29 coerces every argument through pydantic (50-80 ms
    a run): pyproject.toml keeps typer below it."""
    loaded = loaded_by(["replay", "--json"])
    assert "wattmesh.exchange.replay._logscan" in loaded
    assert loaded & {*OTHER_COMMANDS, "pydantic"} == set()


def test_a_replay_of_a_file_loads_only_what_it_uses(tmp_path) -> None:
    """A replay of a file with only a summary loads neither the outputs' writers nor
    sqlite3 (only --ledger and node logs use it) nor importlib.resources (the bundled
    sample's): 5-8 ms of start-up, a few percent of a 300k-line replay."""
    log = tmp_path / "one.jsonl"
    log.write_bytes(b'{"type":"account","owner":"a","energy":0,"money":0}\n')
    loaded = loaded_by(["replay", str(log), "--json"])
    assert "wattmesh.exchange.replay._logscan" in loaded
    unused = {"sqlite3", "importlib.resources", "wattmesh.exchange.replay.outputs"}
    assert loaded & unused == set()
    assert "wattmesh.exchange.replay.outputs" in loaded_by(
        ["replay", str(log), "--out", str(tmp_path / "out")]
    )


def test_help_loads_no_secrets() -> None:
    """Temporary file names come from os.urandom (exchange/atomic_file.py) and the API
    tokens' module loads in `wattmesh api`: secrets and hmac stay out of --help."""
    assert loaded_by(["--help"]) & {"secrets", "hmac"} == set()


def test_a_command_still_loads_what_it_needs() -> None:
    assert {"wattmesh.matching._engine", "wattmesh.exchange.replay._logscan"} <= loaded_by(
        ["replay", "--json"]
    )


def test_writing_parquet_loads_neither_pandas_nor_pyarrow_compute(tmp_path) -> None:
    """pyarrow's pa.array and its casts load pandas (0.3-0.6 s) and pyarrow.compute
    (0.1 s): replay's Parquet is built from buffers instead (exchange/tables.py)."""
    loaded = loaded_by(["replay", "--mode", "cda", "--out", str(tmp_path), "--format",
                        "parquet"])  # fmt: skip
    assert "pyarrow.parquet" in loaded
    assert loaded & {"pandas", "pyarrow.compute"} == set()


def test_both_formats_leave_the_parquet_tables_to_a_child_process(tmp_path) -> None:
    """--format both (the default): the CSV here, the Parquet tables in a forked child at
    the same time (exchange/replay/outputs.py), so this process never loads pyarrow."""
    loaded = loaded_by(["replay", "--mode", "cda", "--out", str(tmp_path)])
    assert "pyarrow" not in loaded
    assert {p.name for p in tmp_path.iterdir()} >= {"trades.csv", "trades.parquet"}


def test_a_replay_without_ledger_or_signatures_loads_no_keys_and_no_ledger() -> None:
    """cryptography (~9 MB, 20 ms) and the ledger's store load only for --ledger or
    --verify-signatures (settlement/records.py signs and checks through keys lazily)."""
    loaded = loaded_by(["replay", "--json"])
    assert "wattmesh.exchange.replay._logscan" in loaded
    assert loaded & {"cryptography", "wattmesh.settlement.keys",
                     "wattmesh.settlement.ledger.store", "multiprocessing"} == set()  # fmt: skip


def test_a_command_line_gets_a_root_with_only_its_command(console, capsys, monkeypatch) -> None:
    """main() mounts only the command a line names (typer builds every mounted command's
    parameters, about 30 ms for all of them); each one's help is the same as on the
    whole tree, and the root's help and unknown names still get every command."""
    import typer

    from wattmesh.exchange.cli.app import app

    whole_tree = typer.main.get_command(app)
    names = set(whole_tree.commands)
    assert {"replay", "simulate", "ledger", "init", "node", "demo"} <= names
    built: list[set[str]] = []
    get_command = typer.main.get_command

    def recording(typer_app: typer.Typer) -> object:
        command = get_command(typer_app)
        built.append(set(command.commands))
        return command

    monkeypatch.setattr(typer.main, "get_command", recording)
    for name in sorted(names):
        code, out, _err = console(name, "--help")
        whole_tree.main([name, "--help"], prog_name="wattmesh", standalone_mode=False)
        assert (code, out) == (0, capsys.readouterr().out), name
    node_commands = {"init", "node", "export-log", "demo"}  # one group, mounted together
    assert built == [node_commands if name in node_commands else {name} for name in sorted(names)]
    built.clear()
    assert console("--help")[0] == 0 and console("no-such-command")[0] == 2
    assert built == [names, names]


def test_the_console_script_leaves_its_objects_out_of_the_exits_collection(tmp_path) -> None:
    """main() run as the console script (no argv) freezes what it made before it exits, so
    the interpreter's final collection does not walk it (12-16 ms after a replay); main
    called with its arguments (tests, the demo's nodes in process) freezes nothing."""
    log = tmp_path / "one.jsonl"
    log.write_text('{"type":"account","owner":"a","energy":0,"money":0,"bmax":100}\n')
    code = ("import gc, sys\n"
            "from wattmesh.exchange.cli.app import main\n"
            "args = sys.argv[1:]\n"
            "if args[0] == 'script':\n    sys.argv = ['wattmesh', *args[1:]]\n"
            "try:\n    main(None if args[0] == 'script' else args[1:])\nexcept SystemExit:\n"
            "    pass\n"
            "print(gc.get_freeze_count(), file=sys.stderr)")  # fmt: skip
    frozen = {}
    for how in ("script", "argv"):
        res = subprocess.run([sys.executable, "-c", code, how, "replay", str(log), "--json"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stderr
        frozen[how] = int(res.stderr.split()[-1])
    assert frozen["script"] > 10_000 and frozen["argv"] == 0


LOADING = """
import gc, sys
during = []  # for each collection: did it start while the CLI's root module was loading?

def watch(phase, info):
    if phase == "start":
        app = sys.modules.get("wattmesh.exchange.cli.app")
        during.append(app is not None and not hasattr(app, "main"))

gc.callbacks.append(watch)
sys.argv = ["wattmesh", *sys.argv[2:]]
try:
    if sys.argv_how == "entry":
        from wattmesh.exchange.cli.entry import main
    else:
        from wattmesh.exchange.cli.app import main
    main()
except SystemExit:
    pass
print(sum(during), gc.isenabled(), file=sys.stderr)
"""


def test_the_console_script_loads_the_cli_without_collecting(tmp_path) -> None:
    """The console script (exchange/cli/entry.py) loads the CLI with the cyclic collector
    off (and freezes what loading made): no collection starts while it loads (importing it
    with the collector on starts several), and the collector is on again for the command."""
    log = tmp_path / "one.jsonl"
    log.write_text('{"type":"account","owner":"a","energy":0,"money":0,"bmax":100}\n')
    seen = {}
    for how in ("entry", "app"):
        code = LOADING.replace("sys.argv_how", repr(how))
        res = subprocess.run([sys.executable, "-c", code, how, "replay", str(log), "--json"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stderr
        collections, enabled = res.stderr.split()[-2:]
        seen[how] = (int(collections), enabled)
    assert seen["entry"] == (0, "True")
    assert seen["app"][0] > 0  # the check sees collections where there are some
