"""``wattmesh report DIR``: one self-contained HTML page per output folder, every plot
rendered by headless Chromium, notes for what the data cannot support, one clear line for
bad input (exchange/report.py; docs/analysis.md, "Reports")."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wattmesh.exchange.report import PLOTS, build_report

# Which plots each kind of folder draws (the rest are left out with a note).
DRAWN = {
    "results": {"price-volume", "supply-demand", "depth", "bmax"},
    "community": {"price-volume", "savings", "bmax"},
    "gode-sunder": {"price-volume", "supply-demand", "efficiency"},
}


@pytest.mark.parametrize("name", sorted(DRAWN))
def test_every_plot_renders_in_chromium(
    cli, analysis_folder: Path, chromium_context: Any, tmp_path: Path, name: str
) -> None:
    page_file = tmp_path / f"{name}.html"
    code, _, err = cli("report", analysis_folder / name, "--out", page_file)
    assert code == 0, err
    report = build_report(analysis_folder / name)
    drawn = {p.id for p in report.plots if p.svg is not None}
    assert drawn == DRAWN[name]
    requests: list[str] = []
    errors: list[str] = []
    chromium_context.on("request", lambda r: requests.append(r.url))
    page = chromium_context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    for pid in PLOTS:
        if pid in drawn:
            svg = page.locator(f"figure#{pid} svg")
            assert svg.count() == 1, pid
            box = svg.bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 100, pid
            assert page.locator(f"figure#{pid} svg path").count() > 5, pid  # drawn lines
        else:
            note = page.locator(f"p.omitted#{pid}")
            assert note.count() == 1 and "not drawn:" in note.inner_text(), pid
    assert errors == [] and requests == [page_file.as_uri()]  # nothing else was fetched


def test_the_page_is_self_contained_with_units_and_names(cli, analysis_folder, tmp_path):
    for name in DRAWN:
        out = tmp_path / f"{name}.html"
        assert cli("report", analysis_folder / name, "--out", out)[0] == 0
        text = out.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", text, re.I), name
        assert "<script" not in text and "<link" not in text and "<img" not in text
    replay = (tmp_path / "results.html").read_text()
    for unit in ("volume (kWh)", "price (currency per kWh)", "cumulative depth (kWh)"):
        assert unit in replay
    community = (tmp_path / "community.html").read_text()
    assert "saved against the grid alone (currency units)" in community
    assert all(f">{n}<" in community for n in ("p001", "c001"))  # households by name
    gode = (tmp_path / "gode-sunder.html").read_text()
    assert "allocative efficiency (%)" in gode


def test_the_default_page_is_in_the_folder_and_the_same_bytes_twice(cli, analysis_folder):
    folder = analysis_folder / "gode-sunder"
    assert cli("report", folder)[0] == 0
    first = (folder / "report.html").read_bytes()
    assert cli("report", folder)[0] == 0
    assert (folder / "report.html").read_bytes() == first


def test_bad_input_is_one_line_and_writes_nothing(cli, analysis_folder, tmp_path) -> None:
    code, _, err = cli("report", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "is not an output folder" in err
    code, _, err = cli("report", tmp_path / "missing")
    assert code == 2 and "is not a folder" in err
    out = tmp_path / "r.html"
    code, _, err = cli("report", analysis_folder / "results", "--interval", "5", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "--interval 5: no such interval" in err
    code, _, err = cli("report", analysis_folder / "community", "--interval", "5", "--out", out)
    assert code == 2 and "--interval" in err
    (tmp_path / "summary.json").write_text("[1, 2]")
    code, _, err = cli("report", tmp_path, "--out", out)
    assert code == 2 and "is not a JSON object" in err
    assert not out.exists()


def test_a_chosen_interval_is_drawn(cli, analysis_folder, tmp_path) -> None:
    intervals = pq.read_table(analysis_folder / "results" / "intervals.parquet")
    start = intervals.column("interval_start_ms").cast(pa.int64())[40].as_py()
    out = tmp_path / "r.html"
    assert cli("report", analysis_folder / "results", "--interval", start, "--out", out)[0] == 0
    when = dt.datetime.fromtimestamp(start / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
    assert out.read_text().count(f"interval starting {when} UTC") == 2  # curves and depth


def test_a_sweep_plots_each_metric_against_each_varied_parameter(
    cli, sweep_spec, tmp_path
) -> None:
    out = tmp_path / "sweep"
    spec = sweep_spec(
        'target = "simulate gode-sunder"\n[fixed]\nmarket = 1\nperiods = 1\n'
        '[grid]\nstrategy = ["zi-u", "zi-c"]\nshouts = [50, 200]\nseed = [0]\n'
    )
    assert cli("sweep", spec, "--out", out, "--workers", "1")[0] == 0
    code, _, err = cli("report", out)
    assert code == 0, err
    report = build_report(out)
    assert report.kind == "sweep"
    # The target's metrics, each against the parameters that took more than one value
    # (market and seed took one; the metrics are never taken for parameters).
    metrics = ("efficiency_pct", "alpha_last_pct", "dispersion_last", "mean_price", "trades")
    assert sorted(p.id for p in report.plots) == sorted(
        f"sweep-{m}-{p}" for m in metrics for p in ("strategy", "shouts")
    )
    assert "efficiency_pct (%)" in (out / "report.html").read_text()


def test_a_sweep_table_that_names_no_target_is_refused(cli, tmp_path) -> None:
    pq.write_table(pa.table({"shouts": [100, 200], "efficiency_pct": [80.0, 90.0]}),
                   tmp_path / "sweep.parquet")  # fmt: skip
    code, _, err = cli("report", tmp_path)
    assert code != 0 and "names no sweep target" in err and err.count("\n") == 1
    assert not (tmp_path / "report.html").exists()
