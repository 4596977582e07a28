"""A sweep's targets (exchange/sweep/targets.py): parameters read from the library
functions behind the commands, and one point of each run to a row of typed metrics."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from wattmesh.agents import gode_sunder as gs
from wattmesh.agents.community import CommunityConfig
from wattmesh.exchange.replay import replay as replaying
from wattmesh.exchange.sweep.targets import TARGETS, Parameter, parameters_of


def names(target: str) -> list[str]:
    return [p.name for p in TARGETS[target].parameters]


def test_parameters_come_from_the_library_functions():
    assert names("simulate gode-sunder") == list(inspect.signature(gs.run_session).parameters)
    assert names("simulate community") == [f.name for f in dataclasses.fields(CommunityConfig)]
    # every option but `book`, which only keeps depth for --out and no metric reads
    assert names("replay") == ["log"] + [
        f.name for f in dataclasses.fields(replaying.ReplayOptions) if f.name != "book"
    ]
    kinds = {p.name: (p.kind, p.default) for p in TARGETS["replay"].parameters}
    assert kinds["interval_ms"] == (int, replaying.ReplayOptions().interval_ms)
    assert kinds["strict"] == (bool, False) and kinds["stp"] == (str, "none")


def test_a_new_field_is_a_new_parameter_and_an_unknown_type_is_refused():
    @dataclasses.dataclass
    class Options:
        rounds: int = 3
        label: str | None = None
        where: Path = Path(".")

    with pytest.raises(TypeError, match="parameter where: a sweep cannot hold"):
        parameters_of(Options)
    assert parameters_of(Options, skip=("where",)) == (
        Parameter("rounds", int, 3), Parameter("label", str, None, nullable=True))  # fmt: skip


@pytest.mark.parametrize(
    ("target", "params"),
    [
        ("simulate gode-sunder",
         {"market": 1, "strategy": "zi-c", "seed": 0, "periods": 2, "shouts": 100,
          "replace_own": False, "skip_dead": True}),
        ("simulate community",
         {f.name: f.default for f in dataclasses.fields(CommunityConfig)}
         | {"households": 12, "prosumers": 5, "days": 1}),
        ("replay", {"log": None} | dataclasses.asdict(replaying.ReplayOptions())),
    ],
)  # fmt: skip
def test_each_target_runs_a_point_into_its_typed_metrics(target: str, params: dict):
    t = TARGETS[target]
    t.check(params)
    metrics = t.run(params)
    assert list(metrics) == [name for name, _ in t.metrics]
    for name, kind in t.metrics:
        assert metrics[name] is None or type(metrics[name]) is kind, name
    assert any(metrics[name] for name, _ in t.metrics)  # it measured something


def test_a_gode_sunder_point_is_one_session_of_the_library():
    params = {"market": 2, "strategy": "zi-c", "seed": 3, "periods": 2, "shouts": 200,
              "replace_own": False, "skip_dead": True}  # fmt: skip
    metrics = TARGETS["simulate gode-sunder"].run(params)
    session = gs.run_session(gs.load_market(2), "zi-c", 3, 2, 200)
    assert metrics["trades"] == sum(len(p.trades) for p in session.periods)
    assert metrics["efficiency_pct"] == gs.summarize([session]).efficiency
    assert metrics["alpha_last_pct"] == session.periods[-1].alpha


def test_a_node_log_is_refused_by_a_replay_sweep(tmp_path: Path):
    (tmp_path / "node.jsonl").write_text('{"type": "community", "members": []}\n')
    params = {p.name: p.default for p in TARGETS["replay"].parameters}
    params["log"] = str(tmp_path / "node.jsonl")
    refused = r"^log: .*node\.jsonl is a node log \(it starts with a community line\): a sweep"
    with pytest.raises(ValueError, match=refused + " replays order logs"):
        TARGETS["replay"].check(params)
