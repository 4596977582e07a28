"""A sweep's spec (exchange/sweep/spec.py): grids and samples expand into points with
every parameter of the target; each bad spec is one line naming what is wrong."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from wattmesh.exchange.sweep.spec import SpecError, parse_spec, to_toml


def test_a_grid_is_the_cartesian_product_in_the_order_written():
    spec = parse_spec(
        'target = "simulate gode-sunder"\n[fixed]\nmarket = 2\n'
        '[grid]\nstrategy = ["zi-u", "zi-c"]\nseed = [5, 6, 7]\n'
    )
    assert [p.index for p in spec.points] == list(range(6))
    assert [(p.params["strategy"], p.params["seed"]) for p in spec.points] == [
        ("zi-u", 5),
        ("zi-u", 6),
        ("zi-u", 7),
        ("zi-c", 5),
        ("zi-c", 6),
        ("zi-c", 7),
    ]
    # Every parameter of the target, in its order: fixed, varied and defaults.
    assert spec.points[0].params == {
        "market": 2,
        "strategy": "zi-u",
        "seed": 5,
        "periods": 6,
        "shouts": 2000,
        "replace_own": False,
        "skip_dead": True,
    }
    assert spec.points[4].label().startswith("market=2, strategy=zi-c, seed=6, periods=6")


SAMPLE = """target = "simulate community"
[fixed]
days = 1
[sample]
points = 40
seed = {seed}
ranges = {{ bmax_cost = [100, 900], households = [10, 30] }}
choices = {{ prosumers = [0, 5, 10] }}
"""


def test_a_sample_draws_its_points_from_its_seed():
    spec = parse_spec(SAMPLE.format(seed=7))
    points = [p.params for p in spec.points]
    assert len(points) == 40 and all(p["days"] == 1 for p in points)
    assert all(100 <= p["bmax_cost"] <= 900 and 10 <= p["households"] <= 30 for p in points)
    assert {p["prosumers"] for p in points} == {0, 5, 10}
    assert len({p["bmax_cost"] for p in points}) > 20  # drawn, not one value
    assert [p.params for p in parse_spec(SAMPLE.format(seed=7)).points] == points
    assert [p.params for p in parse_spec(SAMPLE.format(seed=8)).points] != points


def test_a_float_range_of_an_integer_parameter_is_a_wrong_type():
    with pytest.raises(SpecError, match=r"sample\.ranges\.days: days needs an integer"):
        parse_spec(
            'target = "simulate community"\n[sample]\npoints = 2\nseed = 1\n'
            "ranges = { days = [1.5, 3] }\n"
        )


GS = 'target = "simulate gode-sunder"\n[fixed]\nmarket = 1\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GS + "[grid]\nshout = [100]\n",
            "unknown parameter 'shout' in [grid]: simulate gode-sunder has market, strategy,",
        ),
        (GS + "strategy = 'zi-c'\n[grid]\n", "the grid is empty: [grid] needs at least one"),
        (GS + "[grid]\nstrategy = ['zi-c']\nseed = []\n", "the grid is empty: grid.seed has no"),
        (
            GS + "[grid]\nstrategy = ['zi-c']\nseed = ['1']\n",
            "grid.seed[0]: seed needs an integer, got a string ('1')",
        ),
        (
            GS + "[grid]\nstrategy = ['zi-c']\nseed = [true]\n",
            "grid.seed[0]: seed needs an integer, got a boolean (True)",
        ),
        (GS + "[grid]\nstrategy = ['zi-c']\nseed = 3\n", "grid.seed must be a list of values"),
        (
            'target = "simulate foo"\n[grid]\nseed = [1]\n',
            "unknown target 'simulate foo': one of 'simulate gode-sunder', 'simulate community',"
            " 'replay'",
        ),
        ("[grid]\nseed = [1]\n", "no target: say target = one of"),
        (GS + "strategy = 'zi-c'\n", "a spec needs either a [grid] or a [sample] table"),
        (
            GS + "strategy = 'zi-c'\n[grid]\nseed = [1]\n[sample]\npoints = 1\nseed = 1\n",
            "a spec needs either a [grid] or a [sample] table",
        ),
        (
            'target = "simulate gode-sunder"\n[grid]\nstrategy = ["zi-c"]\nseed = [1]\n',
            "simulate gode-sunder needs market: give it in [fixed] or vary it",
        ),
        (
            GS + "[grid]\nstrategy = ['zi-c', 'zi-x']\nseed = [1]\n",
            "point 1 (market=1, strategy=zi-x, seed=1, periods=6, shouts=2000, replace_own=False, "
            "skip_dead=True): strategy: must be one of zi-u, zi-c, zip, got 'zi-x'",
        ),
        (GS + "[grid]\nmarket = [2]\n", "market is both in [fixed] and in [grid]"),
        (
            GS + "strategy = 'zi-c'\n[sample]\npoints = 0\nseed = 1\nchoices = { seed = [1] }\n",
            "sample.points must be an integer in 1..1,000,000, got 0",
        ),
        (
            GS + "strategy = 'zi-c'\n[sample]\npoints = 2\nseed = 1\nranges = { seed = [5, 1] }\n",
            "sample.ranges.seed: need low <= high, got [5, 1]",
        ),
        (
            GS + "[sample]\npoints = 2\nseed = 1\nranges = { strategy = ['a', 'b'] }\n",
            "sample.ranges.strategy: strategy is not a number: give it in sample.choices",
        ),
        (
            GS + "strategy = 'zi-c'\n[sample]\npoints = 2\nseed = 1\n",
            "the sample is empty: give parameters in sample.ranges or sample.choices",
        ),
        (
            GS + "strategy = 'zi-c'\n[sample]\npoints = 2\nseed = 1\nshouts = [1, 2]\n",
            "unknown key sample.shouts",
        ),
        ('target = "replay"\n[grid]\nlog = ["nowhere.jsonl"]\n', "log: no such file"),
        (
            'target = "replay"\n[grid]\nmode = ["call", "auction"]\n',
            "point 1 (log=None, mode=auction, ",
        ),
        ('target = "replay"\nmode = "cda"\n', "unknown key 'mode' (a spec has target, fixed,"),
        ("target = ", "not valid TOML: "),
        (
            GS
            + "[grid]\nstrategy = ['zi-c']\nseed = ["
            + ", ".join(map(str, range(1001)))
            + "]\nshouts = ["
            + ", ".join(map(str, range(1, 1001)))
            + "]\n",
            "the grid has 1,001,000 points, more than 1,000,000",
        ),
    ],
)
def test_a_bad_spec_is_one_line_naming_what_is_wrong(text: str, message: str):
    with pytest.raises(SpecError) as exc:
        parse_spec(text, source="s.toml")
    line = str(exc.value)
    assert "\n" not in line and line.startswith("s.toml: "), line
    assert message in line


def test_a_spec_written_back_as_toml_reads_as_the_same_document():
    document = {
        "target": "replay",
        "fixed": {"strict": True, "interval_ms": 900000, "log": 'a "quoted"\\ name, ünï\n'},
        "sample": {
            "points": 3,
            "seed": -1,
            "ranges": {"retail_price": [1, 2], "x": [0.1, 1e-07, 1e20]},
            "choices": {"odd key": ["zi-u", ""]},
        },
    }
    assert tomllib.loads(to_toml(document)) == document


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_float_that_cannot_round_trip_is_refused(monkeypatch: pytest.MonkeyPatch, value: str):
    from wattmesh.exchange.sweep import targets

    real = targets.TARGETS["simulate gode-sunder"]
    ratio = targets.Parameter("ratio", float, 0.5)
    with_float = dataclasses.replace(real, parameters=(*real.parameters, ratio))
    monkeypatch.setitem(targets.TARGETS, real.name, with_float)
    base = 'target = "simulate gode-sunder"\n[fixed]\nmarket = 1\nstrategy = "zi-u"\n'
    assert parse_spec(base + "[grid]\nseed = [0]\nratio = [0.25]\n").points[0].params["ratio"]
    with pytest.raises(SpecError, match=rf"^spec: grid.ratio\[1\]: ratio needs a finite "
                                        rf"number, got {value}$"):  # fmt: skip
        parse_spec(base + f"[grid]\nseed = [0]\nratio = [0.25, {value}]\n")
