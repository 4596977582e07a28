"""The one table of refusal codes (settlement/refusals.py, docs/refusals.md) and the paths
that give them: replay, gossip admission, settlement and the meters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wattmesh.exchange.node.wire import REASONS as GOSSIP_CODES
from wattmesh.exchange.node.wire import Refused
from wattmesh.exchange.replay import rejects as replay
from wattmesh.meters.validate import REASONS as METER_CODES
from wattmesh.meters.validate import ReadingRefused
from wattmesh.settlement.refusals import REFUSALS, codes_of, refusal_text

DOC = Path(__file__).resolve().parents[2] / "docs" / "refusals.md"

REPLAY_CONSTANTS = {
    value
    for name, value in vars(replay).items()
    if name.isupper() and isinstance(value, str) and value in REFUSALS
}


def test_every_path_gives_only_codes_of_the_table():
    assert set(GOSSIP_CODES) == set(codes_of("gossip"))
    assert set(METER_CODES) == set(codes_of("meter"))
    assert replay.CODES == set(codes_of("replay"))
    # Every code constant replay names is one it may give, and it names them all.
    assert REPLAY_CONSTANTS == replay.CODES
    assert replay.BAD_LINE_CODES <= replay.CODES
    paths = ("replay", "gossip", "settle", "meter", "api")
    every = {code for path in paths for code in codes_of(path)}
    assert every == set(REFUSALS)  # no code that no path gives


def test_a_code_outside_the_table_is_refused_on_every_path():
    with pytest.raises(ValueError, match="not a gossip refusal code"):
        Refused("bogus", "x")
    with pytest.raises(ValueError, match="not a meter refusal code"):
        ReadingRefused("duplicate-id", "x")  # a replay code, not a meter's
    with pytest.raises(ValueError, match="not a refusal code"):
        refusal_text("bogus", "x")
    with pytest.raises(ValueError, match="no refusal path"):
        codes_of("http")
    assert refusal_text("late", "ts 5") == "late: ts 5"


def test_the_documented_table_is_the_table():
    rows = re.findall(r"^\| `([a-z-]+)` \| (.+?) \| (.+?) \|$", DOC.read_text(), re.M)
    assert [code for code, *_ in rows] == list(REFUSALS)
    for code, meaning, paths in rows:
        assert meaning == REFUSALS[code].meaning, code
        assert set(paths.split(", ")) == set(REFUSALS[code].paths), code
