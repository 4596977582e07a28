"""``wattmesh community new|add`` (exchange/cli/community.py): a street's first community
file, from the keeper's own key to every household's ledger."""

from __future__ import annotations

import re
from pathlib import Path

from wattmesh.exchange.community_file import load_community
from wattmesh.settlement.keys import load_key, peer_id_of
from wattmesh.settlement.ledger import Ledger


def test_a_keeper_starts_a_street_and_a_neighbour_joins_it(cli, tmp_path: Path):
    street, keeper, neighbour = tmp_path / "street.toml", tmp_path / "keeper", tmp_path / "n5"
    code, out, err = cli("community", "new", "elm-street", "--out", street, "--data-dir",
                         keeper, "--start", "2026-12-14T00:00Z")  # fmt: skip
    assert code == 0, err
    key = keeper / "household.key"
    assert key.stat().st_mode & 0o777 == 0o600  # the keeper's first key, no trick needed
    me = peer_id_of(load_key(key))
    c = load_community(street)
    assert (c.name, [m.peer_id for m in c.members]) == ("elm-street", [me])
    assert c.start_ms == 1_797_206_400_000  # 2026-12-14T00:00Z
    # A neighbour's init prints its stanza (exit 2: not a member yet) ...
    code, out, _ = cli("init", "--community", street, "--data-dir", neighbour)
    assert code == 2 and "wattmesh community add" in out
    [theirs] = re.findall(r'peer_id = "(12D3KooW\w+)"', out)
    # ... the keeper adds it; every comment of the file stays.
    before = street.read_text()
    code, out, err = cli("community", "add", street, "--peer-id", theirs, "--bmax", 8000,
                         "--name", "No. 5", "--money", 10**9)  # fmt: skip
    assert (code, out.strip()) == (0, f"added No. 5 to {street}"), err
    after = street.read_text()
    assert after.startswith(before) and "# 15-minute delivery intervals" in after
    members = load_community(street).members
    assert [(m.peer_id, m.bmax, m.name) for m in members] == [(me, 10_000, None),
                                                              (theirs, 8_000, "No. 5")]
    # Both households init with the final file: one community, one opening.
    heads = []
    for d in (keeper, neighbour):
        code, out, err = cli("init", "--community", street, "--data-dir", d)
        assert code == 0, out + err
        with Ledger.open(d / "ledger.sqlite", create=False) as led:
            heads.append(led.head_text())
    assert heads[0] == heads[1]


def test_refusals_change_nothing(cli, tmp_path: Path):
    street = tmp_path / "street.toml"
    code, _, err = cli("community", "new", "elm-street", "--out", street, "--data-dir",
                       tmp_path / "k", "--start", "2026-12-14T00:07Z")  # fmt: skip
    assert code == 1 and "not the start of a 15-minute interval" in err and not street.exists()
    assert cli("community", "new", "elm-street", "--out", street, "--data-dir",
               tmp_path / "k")[0] == 0  # fmt: skip
    text = street.read_text()
    code, _, err = cli("community", "new", "other", "--out", street)
    assert code == 1 and "exists already" in err
    me = load_community(street).members[0].peer_id
    for args, problem in (
        (("--peer-id", me, "--bmax", 1), "is a member already"),
        (("--peer-id", "not-a-peer-id", "--bmax", 1), "peer_id"),
    ):
        code, _, err = cli("community", "add", street, *args)
        assert code == 1 and problem in err and err.count("\n") == 1, err
        assert street.read_text() == text
