"""tracebook conformance of the matching engine through ``wattmesh.matching.conformance``.

The CLI runs use the ``tracebook-conformance`` script of this interpreter's environment and
start the adapter with this interpreter, so they test the engine built in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tracebook.conformance import ConformanceConfig, run_conformance
from tracebook.core.order import SelfTradePolicy
from tracebook.events import MarketEvent

from wattmesh.matching.conformance import WattmeshAdapter

CLI = Path(sys.executable).parent / "tracebook-conformance"
ADAPTER = [sys.executable, "-m", "wattmesh.matching.conformance"]
CANDIDATE = shlex.join(ADAPTER)
STP_CASES = {
    "stp-cancel-resting": "CANCEL_RESTING",
    "stp-cancel-resting-deep": "CANCEL_RESTING",
    "stp-cancel-incoming": "CANCEL_INCOMING",
}
TIMEOUT = 10.0  # seconds per protocol message; the adapter answers in milliseconds


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_small_qualification(tmp_path: Path) -> None:
    # 3 x 50 events with seed 42 still covers all 13 capabilities (2 x 40 misses one, and
    # uncovered capabilities fail qualification).
    out = tmp_path / "qualification"
    result = _cli(
        "qualify",
        "--profile",
        "fifo-full-v1",
        "--seed",
        "42",
        "--traces",
        "3",
        "--events-per-trace",
        "50",
        "--candidate-cmd",
        CANDIDATE,
        "--output-dir",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "qualification.json").read_text())
    assert report["qualified"] is True
    assert report["candidate_engine"]["name"] == "wattmesh-matching"
    assert report["checks"]["fixed_cases"] == {"passed": 5, "total": 5, "complete": True}
    assert report["checks"]["generated_campaign"]["conformant"] is True
    assert report["checks"]["semantic_coverage"]["uncovered"] == []


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled suite as ``tracebook-conformance sample`` writes it."""
    target = tmp_path_factory.mktemp("tracebook") / "suite"
    result = _cli("sample", str(target), cwd=target.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@pytest.mark.parametrize("case", sorted(STP_CASES))
def test_stp_fixture(suite_dir: Path, tmp_path: Path, case: str) -> None:
    manifest = json.loads((suite_dir / "manifest.json").read_text())
    config = next(item["config"] for item in manifest["cases"] if item["name"] == case)
    assert config["self_trade_policy"] == STP_CASES[case]
    report_path = tmp_path / "report.json"
    result = _cli(
        "run",
        str(suite_dir / f"{case}.jsonl"),
        "--algorithm",
        config["matching_algorithm"],
        "--tick-size",
        config["tick_size"],
        "--self-trade-policy",
        config["self_trade_policy"],
        "--quantity-decimal-places",
        str(config["quantity_decimal_places"]),
        "--output",
        str(report_path),
        "--candidate-cmd",
        CANDIDATE,
        cwd=tmp_path,
    )
    report = json.loads(report_path.read_text())
    assert result.returncode == 0, json.dumps(report["divergence"], indent=2)
    assert report["conformant"] is True
    assert report["config"]["self_trade_policy"] == STP_CASES[case]


def _event(op: str, order_id: int | None = None, **fields: object) -> MarketEvent:
    return MarketEvent.from_mapping({"op": op, "symbol": "TEST", "order_id": order_id, **fields})


def _limit(order_id: int, side: str, price: float, qty: float, owner: int = -1) -> MarketEvent:
    return _event("new", order_id, side=side, price=price, quantity=qty, owner=owner)


@pytest.mark.parametrize(
    ("policy", "events"),
    [
        # Anonymous orders never self-match; -5 is an ordinary owner.
        (
            SelfTradePolicy.CANCEL_INCOMING,
            [
                _limit(1, "SELL", 100, 1),
                _limit(2, "BUY", 100, 0.5),
                _limit(3, "SELL", 100, 1, owner=-5),
                _limit(4, "BUY", 100, 2, owner=-5),
            ],
        ),
        # Off-grid prices snap half-even in binary64; sub-tick prices are rejected but the
        # book still appears in the state.
        (
            SelfTradePolicy.NONE,
            [
                _limit(1, "BUY", 1.015, 1, owner=1),
                _limit(2, "SELL", 1.005, 0.25, owner=2),
                _limit(3, "BUY", 0.004, 1, owner=3),
                _event("new", 4, side="SELL", order_type="MARKET", quantity=1e-13, owner=4),
            ],
        ),
        # Lifecycle rejections and a replacement that trades under its source id.
        (
            SelfTradePolicy.CANCEL_RESTING,
            [
                _limit(7, "BUY", 99, 2, owner=1),
                _limit(7, "BUY", 99, 2, owner=1),
                _event("reduce", 7, quantity=3),
                _event("replace", 7, quantity=0),
                _event("replace", 8, price=100),
                _limit(2**63, "SELL", 101, 1, owner=2),
                _event("replace", 7, price=101.0),
                _event("cancel", 7),
                _event("cancel", 1, symbol="NEVER"),
                _event("clear", symbol="OTHER"),
            ],
        ),
        # Finer quantities make the adapter rescale the book (MAX_QTY is 2**31 - 1):
        # queue positions must survive, down to 1/16 and decimal steps.
        (
            SelfTradePolicy.NONE,
            [
                _limit(1, "SELL", 100, 3, owner=1),
                _limit(2, "SELL", 100, 2, owner=2),
                _limit(3, "SELL", 100.01, 0.5, owner=3),
                _event("reduce", 1, quantity=0.125),
                _limit(4, "BUY", 100.01, 4.0625, owner=4),
                _event("replace", 2, quantity=0.1),
                _limit(5, "SELL", 100, 0.3, owner=5),
                _limit(6, "BUY", 100, 0.35, owner=6),
                _limit(7, "SELL", 99, 1000, owner=7),
            ],
        ),
    ],
    ids=["anonymous-owners", "tick-grid", "lifecycle", "rescaled-quantities"],
)
def test_edge_cases_in_process(policy: SelfTradePolicy, events: list[MarketEvent]) -> None:
    report = run_conformance(events, WattmeshAdapter, ConformanceConfig(self_trade_policy=policy))
    assert report.conformant, report.divergence


def _state_hash(state: dict) -> str:
    encoded = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


@pytest.mark.asyncio
async def test_stdio_session() -> None:
    proc = await asyncio.create_subprocess_exec(
        *ADAPTER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    async def send(message: dict) -> dict:
        proc.stdin.write((json.dumps(message) + "\n").encode())
        await asyncio.wait_for(proc.stdin.drain(), TIMEOUT)
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert line, "adapter closed stdout"
        return json.loads(line)

    def event(index: int, **fields: object) -> dict:
        return {"type": "event", "index": index, "event": {"symbol": "TEST", **fields}}

    try:
        ready = await send(
            {
                "type": "hello",
                "protocol": "tracebook.conformance",
                "protocol_version": 1,
                "config": {
                    "matching_algorithm": "fifo",
                    "tick_size": "0.01",
                    "self_trade_policy": "NONE",
                    "quantity_decimal_places": 12,
                },
            }
        )
        assert ready["type"] == "ready"
        assert ready["protocol_version"] == 1
        assert ready["engine"]["name"] == "wattmesh-matching"

        maker = await send(
            event(
                1,
                op="new",
                order_id=10,
                side="SELL",
                order_type="LIMIT",
                price=100.0,
                quantity=2.0,
                owner=7,
            )
        )
        assert maker["outcome"]["status"] == "applied"
        assert (maker["trades"], maker["resting_order_count"]) == ([], 1)

        taker = await send(
            event(
                2,
                op="new",
                order_id=11,
                side="BUY",
                order_type="LIMIT",
                price=100.01,
                quantity=0.5,
                owner=8,
            )
        )
        assert taker["outcome"]["status"] == "applied"
        assert taker["trades"] == [
            {
                "symbol": "TEST",
                "buy_order_id": 11,
                "sell_order_id": 10,
                "price": "100",
                "quantity": "0.5",
            }
        ]
        assert taker["resting_order_count"] == 1

        unknown = await send(event(3, op="cancel", order_id=999))
        assert unknown["index"] == 3
        assert unknown["outcome"]["status"] == "rejected"
        assert unknown["outcome"]["reason"] == "ORDER_NOT_ACTIVE"
        assert unknown["trades"] == []

        snapshot = await send({"type": "snapshot", "index": 3})
        assert snapshot["state"] == {
            "books": [
                {
                    "symbol": "TEST",
                    "bids": [],
                    "asks": [
                        {
                            "order_id": 10,
                            "price": "100",
                            "remaining_quantity": "1.5",
                            "owner": 7,
                            "order_type": "LIMIT",
                        }
                    ],
                }
            ]
        }
        assert _state_hash(snapshot["state"]) == unknown["state_hash"]

        assert await send({"type": "finish", "event_count": 3}) == {
            "type": "complete",
            "event_count": 3,
        }
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
