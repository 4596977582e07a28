"""``wattmesh init`` and node.toml (exchange/node/config.py, exchange/cli/node.py)."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from wattmesh.exchange.community_file import (
    Community,
    CommunityError,
    MemberSpec,
    MeterSpec,
    dump_community,
    parse_community,
)
from wattmesh.exchange.node.config import (
    BotConfig,
    InitError,
    MeterConfig,
    NodeConfigError,
    default_data_dir,
    init_data_dir,
    load_node_config,
    write_node_config,
)
from wattmesh.settlement.keys import (
    Ed25519PrivateKey,
    KeyFileError,
    load_key,
    peer_id_of,
    save_key,
)
from wattmesh.settlement.ledger import Ledger

START = 1_795_219_200_000


def fixed_key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


ALICE, BOB = fixed_key(1), fixed_key(2)
A, B, METER = peer_id_of(ALICE), peer_id_of(BOB), peer_id_of(fixed_key(9))


def community(**changes) -> Community:
    c = Community(
        name="lindenweg",
        start_ms=START,
        members=(
            MemberSpec(A, 10_000, money=5_000_000_000, energy=2_000, meters=(MeterSpec(METER),)),
            MemberSpec(B, 6_000),
        ),
    )
    return dataclasses.replace(c, **changes)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """alice.key, community.toml (alice and bob) and a data dir path (not created)."""
    key = tmp_path / "alice.key"
    save_key(key, ALICE)
    com = tmp_path / "lindenweg.toml"
    com.write_text(dump_community(community()))
    return {"key": key, "community": com, "data": tmp_path / "node"}


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` with its bytes (nothing added, removed or changed)."""
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def head(path: Path) -> str:
    with Ledger.open(path, create=False) as led:
        return led.head_text()


def test_init_creates_key_config_community_copy_and_ledger(files: dict[str, Path]) -> None:
    data = files["data"]
    r = init_data_dir(files["community"], data, key_path=files["key"])
    assert (r.peer_id, r.member, r.ledger_created, r.created_key) == (A, True, True, True)
    names = ("household.key", "community.toml", "node.toml", "ledger.sqlite")
    assert set(r.created) == {data / n for n in names}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "household.key").stat().st_mode) == 0o600
    assert peer_id_of(load_key(data / "household.key")) == A
    assert (data / "community.toml").read_bytes() == files["community"].read_bytes()
    c = community()
    with Ledger.open(data / "ledger.sqlite", create=False) as led:
        assert led.verify().ok
        assert [(e.kind, e.body, e.ts) for e in led.entries()] == [
            (k, b, START) for k, b in c.genesis_items()
        ]
        assert led.balances()[A]["energy"] == 2_000
    cfg = load_node_config(data)
    assert (cfg.community, cfg.key, cfg.ledger, cfg.store) == (
        data / "community.toml", data / "household.key", data / "ledger.sqlite",
        data / "messages.sqlite")  # fmt: skip
    assert (cfg.listen, cfg.bootstrap, cfg.bot, cfg.meter) == (
        "/ip4/0.0.0.0/tcp/4001", (), BotConfig(), MeterConfig())  # fmt: skip
    assert A in r.message and f"wattmesh node --data-dir {data} --bootstrap" in r.message


def test_second_run_keeps_everything(files: dict[str, Path]) -> None:
    data = files["data"]
    init_data_dir(files["community"], data, key_path=files["key"])
    key_bytes = (data / "household.key").read_bytes()
    before = head(data / "ledger.sqlite")
    edited = (data / "node.toml").read_text().replace("enabled = false", "enabled = true")
    (data / "node.toml").write_text(edited)
    r = init_data_dir(files["community"], data)
    assert (r.created_key, r.ledger_created, r.created) == (False, False, ())
    assert (data / "household.key").read_bytes() == key_bytes
    assert head(data / "ledger.sqlite") == before
    assert load_node_config(data).bot.enabled is True  # the household's edit survives


def test_a_generated_key_that_is_no_member_gets_exit_2_and_no_ledger(
    files: dict[str, Path],
) -> None:
    data = files["data"]
    r = init_data_dir(files["community"], data)
    assert (r.member, r.ledger_created, r.created_key) == (False, False, True)
    assert not (data / "ledger.sqlite").exists()
    assert (data / "node.toml").exists() and (data / "household.key").exists()
    assert r.peer_id == peer_id_of(load_key(data / "household.key"))
    # The stanza in the message is exactly what the keeper appends to the file.
    stanza = r.message[r.message.index("[[member]]") :].split("\n\n")[0]
    updated = files["community"].read_text() + "\n" + stanza + "\n"
    assert parse_community(updated).member(r.peer_id) is not None
    # With the updated file the same data dir becomes a member's node, same key.
    files["community"].write_text(updated)
    again = init_data_dir(files["community"], data)
    assert (again.member, again.ledger_created, again.peer_id) == (True, True, r.peer_id)
    assert (data / "community.toml").read_text() == updated


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"retail_price": 240_000}, "ledger.sqlite was made from another community file"),
        ({"start_ms": START + 900_000}, "ledger.sqlite was made from another community file"),
        (
            {
                "members": (
                    MemberSpec(
                        A,
                        10_000,
                        money=5_000_000_000,
                        energy=2_000,
                        meters=(MeterSpec(METER),),
                        name="Alice",
                    ),
                    MemberSpec(B, 6_000),
                )
            },
            "community.toml differs from",
        ),
    ],  # fmt: skip
    ids=["genesis body", "genesis ts", "only a name"],
)
def test_another_community_file_is_refused_and_nothing_changes(
    files: dict[str, Path], tmp_path: Path, change: dict, why: str
) -> None:
    data = files["data"]
    init_data_dir(files["community"], data, key_path=files["key"])
    before = snapshot(data)
    other = tmp_path / "other.toml"
    other.write_text(dump_community(community(**change)))
    with pytest.raises(InitError, match=why) as info:
        init_data_dir(other, data)
    assert "\n" not in str(info.value)
    assert snapshot(data) == before


def test_a_ledger_with_a_longer_opening_batch_is_refused(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # The second member's entries come last (no meters, the higher peer id): without it the
    # file's opening batch is a prefix of the ledger's, which still belongs to another file.
    later = peer_id_of(fixed_key(4))
    assert A < later
    two = community(members=(MemberSpec(A, 10_000), MemberSpec(later, 6_000)))
    one = community(members=(MemberSpec(A, 10_000),))
    data = files["data"]
    files["community"].write_text(dump_community(two))
    init_data_dir(files["community"], data, key_path=files["key"])
    (data / "community.toml").unlink()  # so only the ledger can tell
    other = tmp_path / "one.toml"
    other.write_text(dump_community(one))
    with pytest.raises(InitError, match="made from another community file"):
        init_data_dir(other, data)
    assert not (data / "community.toml").exists()


def test_a_bad_community_file_writes_nothing(files: dict[str, Path]) -> None:
    files["community"].write_text(
        files["community"].read_text().replace("bmax = 6000", "bmax = true")
    )
    with pytest.raises(CommunityError, match=r"member\[2\]\.bmax: .*got true"):
        init_data_dir(files["community"], files["data"], key_path=files["key"])
    assert not files["data"].exists()


def test_key_problems(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["data"]
    init_data_dir(files["community"], data, key_path=files["key"])
    before = snapshot(data)
    bob = tmp_path / "bob.key"
    save_key(bob, BOB)
    with pytest.raises(InitError, match=f"already has the key of {A}"):
        init_data_dir(files["community"], data, key_path=bob)
    assert snapshot(data) == before
    # The same key again is fine.
    assert init_data_dir(files["community"], data, key_path=files["key"]).member
    os.chmod(bob, 0o644)
    with pytest.raises(KeyFileError, match="--key: .*chmod 600"):
        init_data_dir(files["community"], tmp_path / "d2", key_path=bob)
    assert not (tmp_path / "d2").exists()


def test_a_broken_node_toml_is_reported_not_overwritten(files: dict[str, Path]) -> None:
    data = files["data"]
    init_data_dir(files["community"], data, key_path=files["key"])
    (data / "node.toml").write_text("lisen = 3\n")
    with pytest.raises(NodeConfigError, match=r"node\.toml: lisen: unknown key \(did you mean"):
        init_data_dir(files["community"], data)
    assert (data / "node.toml").read_text() == "lisen = 3\n"


# -- node.toml --


def test_write_node_config_reads_back(tmp_path: Path) -> None:
    peer = f"/ip4/192.168.1.7/tcp/4001/p2p/{B}"
    bot = BotConfig(enabled=True, buy_price=250_000, sell_price=90_000, lower_wh=0, upper_wh=9)
    meter = MeterConfig(source="simulated", key="m/meter.key", peak_w=0, seed=-3)
    path = write_node_config(
        tmp_path, listen="/ip4/127.0.0.1/tcp/0", bootstrap=[peer], bot=bot, meter=meter,
        log_level="debug",
    )  # fmt: skip
    text = path.read_text()
    settings = [line for line in text.splitlines() if " = " in line]
    assert all("  # " in line for line in settings)  # every key explains itself
    cfg = load_node_config(tmp_path)
    assert (cfg.listen, cfg.bootstrap, cfg.bot, cfg.meter, cfg.log_level) == (
        "/ip4/127.0.0.1/tcp/0", (peer,), bot, meter, "debug")  # fmt: skip
    assert cfg.meter_key == tmp_path / "m" / "meter.key"
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("lisen = 3", "lisen", "unknown key (did you mean listen?)"),
        ("[bot]\nenabeld = true", "bot.enabeld", "unknown key"),
        ("[bot]\nbuy_price = true", "bot.buy_price", "got true"),
        ("[bot]\nbuy_price = 0", "bot.buy_price", "1..2147483647"),
        ("[bot]\nlower_wh = 5000", "bot.upper_wh", "must be above lower_wh 5000"),
        ('[meter]\nsource = "p1"', "meter.source", '"none" or "simulated"'),
        ('[meter]\nbackend = "fast"', "meter.backend", '"builtin"'),
        ('listen = "/ip4/300.0.0.1/tcp/1"', "listen", "not a multiaddr"),
        ('bootstrap = ["/ip4/10.0.0.1/tcp/4001"]', "bootstrap[1]", "/p2p/<peer id>"),
        ('bootstrap = "/ip4/10.0.0.1/tcp/4001"', "bootstrap", "a list of multiaddrs"),
        ('log_level = "loud"', "log_level", '"debug" or "info"'),
        ('ledger = ""', "ledger", "a file path"),
        ("bot = 3", "bot", "a [bot] table"),
    ],
)
def test_node_toml_errors_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    (tmp_path / "node.toml").write_text(text + "\n")
    with pytest.raises(NodeConfigError) as info:
        load_node_config(tmp_path)
    err = info.value
    assert (err.key, err.source) == (key, str(tmp_path / "node.toml")), str(err)
    assert problem in err.problem and "\n" not in str(err)


def test_an_empty_node_toml_means_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text("")
    cfg = load_node_config(tmp_path)
    assert cfg.key == tmp_path / "household.key" and cfg.bot == BotConfig()


def test_missing_data_dir_or_node_toml_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="no data directory .*run `wattmesh init"):
        load_node_config(tmp_path / "nope")
    with pytest.raises(NodeConfigError, match="no node.toml in .*run `wattmesh init"):
        load_node_config(tmp_path)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "wattmesh"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "wattmesh"


# -- the command --


def test_cli_init_member_then_rerun(cli, files: dict[str, Path]) -> None:
    data = files["data"]
    args = ("init", "--community", str(files["community"]), "--data-dir", str(data))
    code, out, err = cli(*args, "--key", str(files["key"]))
    assert (code, err) == (0, ""), err
    for name in ("household.key", "community.toml", "node.toml", "ledger.sqlite"):
        assert f"created  {data / name}" in out
    assert f"peer id {A}" in out
    assert f"next: wattmesh node --data-dir {data} --bootstrap" in out
    token = data / "api-token"
    assert f"created  {token}" in out and token.stat().st_mode & 0o777 == 0o600
    first = token.read_text()
    code, out, _ = cli(*args)
    assert code == 0 and "created" not in out and f"kept     {data / 'ledger.sqlite'}" in out
    assert token.read_text() == first  # a rerun keeps the token
    code, out, _ = cli("api", "token", "--data-dir", data)
    assert (code, out.strip()) == (0, first.strip())
    code, out, _ = cli("api", "token", "--data-dir", data, "--rotate")
    assert code == 0 and out.strip() != first.strip() and token.read_text().strip() == out.strip()


def test_cli_default_data_dir_and_non_member(
    cli, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    code, out, err = cli("init", "--community", str(files["community"]))
    data = tmp_path / "xdg" / "wattmesh"
    assert code == 2 and err == ""
    peer = peer_id_of(load_key(data / "household.key"))
    assert f"{peer} is not a member of lindenweg" in out and "[[member]]" in out
    assert not (data / "ledger.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--community", "{tmp}/nope.toml"), "nope.toml: cannot read"),
        (("--community", "{tmp}/bad.toml"), "bad.toml: horizon: must be an integer >= 1"),
        ((), "--community FILE is required"),
        (("--community", "{com}", "--key", "{tmp}/no.key"), "--key: no key file"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(
    cli, files: dict[str, Path], tmp_path: Path, args: tuple[str, ...], problem: str
) -> None:
    (tmp_path / "bad.toml").write_text(
        files["community"].read_text().replace("horizon = 4", "horizon = 0")
    )
    argv = [a.format(tmp=tmp_path, com=files["community"]) for a in args]
    code, out, err = cli("init", *argv, "--data-dir", str(files["data"]))
    assert code == 1 and out == ""
    [line] = err.splitlines()
    assert line.startswith("wattmesh: error: ") and problem in line
    assert not files["data"].exists()


def test_installed_script_bad_file_one_line(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nstart_ms = 0\nhorizn = 3\n')
    script = Path(sys.executable).with_name("wattmesh")
    done = subprocess.run(
        [str(script), "init", "--community", str(bad), "--data-dir", str(files["data"])],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == b""
    [line] = done.stderr.decode().splitlines()
    assert line == f"wattmesh: error: {bad}: horizn: unknown key (did you mean horizon?)"


def test_community_file_in_docs_is_valid() -> None:
    # docs/node.md shows a full community file; it must load.
    doc = (Path(__file__).resolve().parents[3] / "docs" / "node.md").read_text()
    start = doc.index("```toml\n", doc.index("## Community file")) + len("```toml\n")
    example = doc[start : doc.index("```", start)]
    c = parse_community(example, "docs/node.md")
    assert tomllib.loads(example)["name"] == c.name and len(c.members) >= 2
