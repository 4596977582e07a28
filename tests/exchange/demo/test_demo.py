"""``wattmesh demo`` (exchange/demo/run.py): a real run of three node processes through the
CLI, and the ledger fold behind its savings (a hand-made ledger)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from wattmesh.exchange.community_file import Community, MemberSpec, MeterSpec
from wattmesh.exchange.demo.accounts import fold_ledger
from wattmesh.exchange.demo.plan import bootstrap_peers, plan_households
from wattmesh.exchange.demo.run import Contention, DemoError, clock_speed, run_demo
from wattmesh.exchange.replay.node_log import export_log, replay_node_log
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.ledger import Ledger
from wattmesh.settlement.records import Reading

L = 900_000
START = 1_782_054_000_000  # 2026-06-21T15:00Z


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still there: a zombie of ours would be reaped by now; wait a moment for a stopping one.
    for _ in range(50):
        time.sleep(0.1)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
    return False


def test_demo_runs_three_nodes_to_agreement(tmp_path: Path, run_group) -> None:
    root = tmp_path / "demo"
    cmd = [sys.executable, "-m", "wattmesh.exchange.cli", "demo", "--households", "3",
           "--hours", "1", "--seconds-per-interval", "1.5", "--dir", str(root),
           "--out", str(tmp_path / "tables")]  # fmt: skip
    code, out = run_group(cmd, 150)
    pids = [int(p) for p in re.findall(r"\bpid (\d+)", out)]
    assert pids and all(_gone(p) for p in pids), out
    assert code == 0, out
    for name in ("house-1", "house-2", "house-3"):
        assert name in out
        assert (root / name / "ledger.sqlite").is_file()  # --dir keeps the data
    pages = re.findall(r"^  (house-\d)  web page http://127\.0\.0\.1:\d+/  "
                       r"login code [A-Z2-9]{4}-[A-Z2-9]{4}$", out, re.M)  # fmt: skip
    assert pages == ["house-1", "house-2", "house-3"], out
    # house-1's bot is its own process, trading through its node's API, stopped cleanly.
    assert "house-1 trades through `wattmesh bot`" in out
    bot_log = (root / "house-1" / "bot.log").read_text()
    assert re.search(r"^\d\d:\d\d  (ask|bid) [\d.]+ kWh at", bot_log, re.M), bot_log
    assert bot_log.rstrip().endswith("stopped (SIGTERM)"), bot_log
    assert "enabled = false" in (root / "house-1" / "node.toml").read_text()
    # Each household's market in plain words, under the money table.
    for name in ("house-1", "house-2", "house-3"):
        assert re.search(rf"^{name} sold [\d.]+ kWh to neighbours for €[\d.]+, bought [\d.]+ "
                         r"kWh from them for €[\d.]+, and (saved €[\d.]+ against|paid €[\d.]+ "
                         r"more than with) the grid alone\.$", out, re.M), out  # fmt: skip
    assert "Money per household (€)" in out
    assert "ledgers: 3 of 3 verified" in out
    # --out: the same run as tables, units in the column names.
    tables = tmp_path / "tables"
    with open(tables / "households.csv", newline="") as fp:
        households = list(csv.DictReader(fp))
    assert [h["name"] for h in households] == ["house-1", "house-2", "house-3"]
    sold = sum(int(h["sold_wh"]) for h in households)
    assert sold == sum(int(h["bought_wh"]) for h in households) > 0
    with open(tables / "intervals.csv", newline="") as fp:
        assert sum(int(r["volume_wh"]) for r in csv.DictReader(fp)) == sold
    assert orjson.loads((tables / "summary.json").read_bytes())["ok"] is True
    assert "digests: 4 of 4 intervals identical at all 3 nodes" in out
    assert "nodes: 3 of 3 exited 0 on SIGTERM" in out
    trades = re.search(r"traded: ([\d.,]+) kWh in (\d+) trades", out)
    assert trades is not None and int(trades[2]) >= 1 and float(trades[1]) > 0, out
    # One progress line per interval, 15:00 to 15:45 UTC.
    for hhmm in ("15:00", "15:15", "15:30", "15:45"):
        assert re.search(rf"^  {hhmm} UTC  ", out, re.M), out


def test_bad_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="at least 2"):
        run_demo(1, directory=tmp_path / "a")
    with pytest.raises(DemoError, match="seconds-per-interval"):
        run_demo(2, seconds_per_interval=0.1, directory=tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("mine")
    with pytest.raises(DemoError, match="not an empty directory"):
        run_demo(2, directory=tmp_path / "c")
    assert (tmp_path / "c" / "x").read_text() == "mine"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_plan_guarantees_a_trade_and_the_mesh_is_connected() -> None:
    for seed in range(5):
        plan = plan_households(5, seed)
        assert plan == plan_households(5, seed)  # the same for the same seed
        sellers = [h for h in plan if h.energy > h.bot.upper_wh]
        buyers = [h for h in plan if h.energy < h.bot.lower_wh]
        assert sellers and buyers
        assert min(h.bot.buy_price for h in plan) > max(h.bot.sell_price for h in plan)
        assert all(h.pv_peak_w for h in sellers) and not any(h.pv_peak_w for h in buyers)
    assert bootstrap_peers(3) == [[1, 2], [0, 2], [0, 1]]
    peers = bootstrap_peers(20, seed=1)
    assert all(len(p) >= 4 and i not in p for i, p in enumerate(peers))
    reached, todo = {0}, [0]
    while todo:
        for j in peers[todo.pop()]:
            if j not in reached:
                reached.add(j)
                todo.append(j)
    assert reached == set(range(20))
    assert clock_speed(2.5) == 360 and clock_speed(1.5) == 600


def _reading(key, seq: int, t: int, produced: int, consumed: int) -> dict:
    return Reading(peer_id_of(key), t, t + L, produced, consumed, seq).signed(key).to_dict()


def _trade(buyer: str, seller: str, qty: int, price: int, t: int) -> dict:
    return {"buyer": buyer, "seller": seller, "qty": qty, "price": price,
            "bid": f"b{t}", "ask": f"a{t}", "interval": t}  # fmt: skip


def test_fold_ledger_savings_against_the_grid_alone_twin(tmp_path: Path) -> None:
    ka, kb, ma, mb = (generate_key() for _ in range(4))
    a, b = peer_id_of(ka), peer_id_of(kb)
    meter_a, meter_b = peer_id_of(ma), peer_id_of(mb)
    community = Community(
        name="fold",
        start_ms=START,
        retail_price=230_000,
        feedin_price=80_000,
        members=(
            MemberSpec(a, bmax=5000, energy=4000, money=10**10, meters=(MeterSpec(meter_a),)),
            MemberSpec(b, bmax=3000, money=10**10, meters=(MeterSpec(meter_b),)),
        ),
    )
    t0, t1, t2 = START, START + L, START + 2 * L
    with Ledger.open(tmp_path / "ledger.sqlite") as led:
        led.append_batch(community.genesis_items(), ts=START)
        # t0: A sells B 2 kWh at 0.15.
        led.append_batch([("trade", _trade(b, a, 2000, 150_000, t0))], ts=t0)
        led.close_interval(t0, t0)
        # t1: readings. A: 2000 + 4000 - 500 = 5500 > 5000, exports 500 Wh;
        # B: 2000 - 2500 < 0, imports 500 Wh. The grid entries are added by the ledger.
        led.append_batch([("reading", _reading(ma, 1, t0, 4000, 500)),
                          ("reading", _reading(mb, 1, t0, 0, 2500))], ts=t1)  # fmt: skip
        led.close_interval(t1, t1)
        # t2: A sells B 1 kWh more at 0.15, and keeps 1 kWh less than its twin.
        led.append_batch([("trade", _trade(b, a, 1000, 150_000, t2))], ts=t2)
        led.close_interval(t2, t2)
        assert led.verify().ok
        closes = {e.body["interval"]: e.hash.hex() for e in led.entries(kind="interval_close")}
        entries = list(led.entries())

    acc = fold_ledger(entries)
    assert (acc.retail, acc.feedin) == (230_000, 80_000)
    ha, hb = acc.households[a], acc.households[b]
    # A: sold 3 kWh for 0.45, exported 500 Wh for 0.04; its twin (4 kWh + 3.5 kWh net
    # into 5 kWh of storage) exported 2.5 kWh for 0.20 and holds 5 kWh; A holds 4 kWh.
    assert (ha.produced, ha.consumed, ha.sold, ha.bought) == (4000, 500, 3000, 0)
    assert (ha.exported, ha.imported, ha.energy) == (500, 0, 4000)
    assert (ha.alone_exported, ha.alone_imported, ha.alone_energy) == (2500, 0, 5000)
    assert ha.received == 450_000_000 and ha.cost == -40_000_000 - 450_000_000
    assert ha.alone_cost == -200_000_000
    # B: bought 3 kWh for 0.45, imported 500 Wh for 0.115, holds 1 kWh; its twin imported
    # all of its 2.5 kWh for 0.575 and holds nothing.
    assert (hb.consumed, hb.bought, hb.imported, hb.energy) == (2500, 3000, 500, 1000)
    assert (hb.alone_imported, hb.alone_exported, hb.alone_energy) == (2500, 0, 0)
    assert hb.cost == 115_000_000 + 450_000_000 and hb.alone_cost == 575_000_000
    # Held energy counts at the run's average price (0.15): selling at that price is
    # neutral, so the savings are what the grid was spared: 2 kWh at retail - feed-in.
    assert acc.value_price == 150_000
    assert ha.held_value(150_000) == -150_000_000 and hb.held_value(150_000) == 150_000_000
    assert ha.savings(acc.value_price) == 140_000_000
    assert hb.savings(acc.value_price) == 160_000_000
    assert ha.savings(150_000) + hb.savings(150_000) == 2000 * (230_000 - 80_000)

    # Per interval: price, volume, trades, readings and the close hash.
    assert list(acc.intervals) == [t0, t1, t2]
    s0, s1, s2 = acc.intervals.values()
    assert (s0.price, s0.volume, s0.trades, s0.readings) == (150_000, 2000, 1, 0)
    assert (s1.price, s1.volume, s1.trades, s1.readings) == (None, 0, 0, 2)
    assert s2.volume == 1000 and [s.digest for s in (s0, s1, s2)] == [
        closes[t] for t in (t0, t1, t2)
    ]

    # Folding only through t1 leaves the last trade out.
    early = fold_ledger(entries, through=t1)
    assert list(early.intervals) == [t0, t1]
    assert early.households[a].sold == 2000 and early.households[a].energy == 5000
    assert early.households[a].savings(early.value_price) == 140_000_000


def test_loaded_and_stalled_nodes_still_agree(tmp_path: Path) -> None:
    """The bounded CI version of benchmarks/contention.py: five node processes beside a
    busy loop, one of them stopped (SIGSTOP) for a second every two seconds; every ledger
    verifies and every interval is certified and identical at every node."""
    contention = Contention(busy=1, every_s=2.0, pause_s=1.0, seed=1)
    result = run_demo(5, 1, seconds_per_interval=2.0, seed=1, directory=tmp_path / "run",
                      contention=contention)  # fmt: skip
    assert result.ok, result.problems
    assert contention.pauses >= 3
    assert len(result.intervals) == 4 and all(iv.agree for iv in result.intervals)
    for name in result.peer_ids:
        with Ledger.open(tmp_path / "run" / name / "ledger.sqlite", create=False) as led:
            closes = list(led.entries(kind="interval_close"))
            assert closes and all(led.certificate(e.body["interval"]) for e in closes)
            head = led.head_text()
        # What the loaded node settled replays from its exported log to its ledger head.
        log = tmp_path / f"{name}.jsonl"
        with open(log, "wb") as fp:
            assert export_log(tmp_path / "run" / name, fp).head == head
        assert replay_node_log(log).head == head


def test_demo_json_is_one_object_on_stdout(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "wattmesh.exchange.cli", "demo", "--households", "2",
           "--hours", "1", "--seconds-per-interval", "1.5", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = orjson.loads(proc.stdout)  # nothing else on stdout: progress is on stderr
    assert result["ok"] is True and result["problems"] == []
    assert [h["name"] for h in result["households"]] == ["house-1", "house-2"]
    assert len(result["intervals"]) == 4 and all(iv["agree"] for iv in result["intervals"])
    assert "every node settled" in proc.stderr
