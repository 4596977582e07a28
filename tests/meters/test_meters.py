"""Meter readings: register arithmetic, signing, validation, CSV input, transfer checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattmesh.meters.csv_source import read_csv
from wattmesh.meters.measurement import (
    Measurement,
    MeasurementError,
    RegisterSample,
    intervals_from_registers,
)
from wattmesh.meters.signer import sign_measurements
from wattmesh.meters.transfer import check_transfer
from wattmesh.meters.validate import REASONS, ReadingRefused, ReadingValidator
from wattmesh.settlement.keys import generate_key, peer_id_of
from wattmesh.settlement.records import Meter, Reading, RecordError

MIN = 60_000
IV = 15 * MIN
T0 = 1_718_928_000_000  # 2024-06-21 00:00 UTC, a multiple of 15 minutes
KEY = generate_key()
METER = peer_id_of(KEY)


# -- registers to intervals -------------------------------------------------------------


def test_intervals_from_registers_take_the_register_at_each_boundary() -> None:
    samples = [RegisterSample(T0 + t * MIN, p, c) for t, p, c in [
        (3, 0, 0), (15, 10, 100), (20, 15, 120), (30, 20, 150), (31, 21, 151), (50, 50, 200),
        (61, 60, 260)]]  # fmt: skip
    got = list(intervals_from_registers(samples, IV))
    # 00:03 opens the interval at 00:15; the last interval (01:00-) is unfinished.
    assert got == [
        Measurement(T0 + 15 * MIN, T0 + 30 * MIN, 10, 50),
        Measurement(T0 + 30 * MIN, T0 + 45 * MIN, 1, 1),  # register at 00:45 = 00:31's
        Measurement(T0 + 45 * MIN, T0 + 60 * MIN, 29, 49),
    ]


def test_registers_that_go_down_or_back_in_time_are_refused() -> None:
    down = [RegisterSample(T0, 5, 5), RegisterSample(T0 + MIN, 4, 6)]
    with pytest.raises(MeasurementError, match="sample 2: produced register went down"):
        list(intervals_from_registers(down, IV))
    back = [RegisterSample(T0, 5, 5), RegisterSample(T0 - 1, 5, 5)]
    with pytest.raises(MeasurementError, match="sample 2: time goes backwards"):
        list(intervals_from_registers(back, IV))


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(1, 40 * MIN), st.integers(0, 500),
                                st.integers(0, 500)), min_size=2, max_size=60))  # fmt: skip
def test_register_intervals_are_contiguous_and_add_up(steps) -> None:
    """Whole intervals, back to back, and their energy is the register difference between
    the first and last boundary."""
    ts, p, c = T0 + 7 * MIN, 1_000, 2_000
    samples = [RegisterSample(ts, p, c)]
    for dt, dp, dc in steps:
        ts, p, c = ts + dt, p + dp, c + dc
        samples.append(RegisterSample(ts, p, c))
    got = list(intervals_from_registers(samples, IV))
    for a, b in zip(got, got[1:], strict=False):
        assert a.end == b.start
    for m in got:
        assert m.start % IV == 0 and m.end - m.start == IV
        assert m.produced >= 0 and m.consumed >= 0
    if got:

        def at(t: int) -> RegisterSample:
            return [s for s in samples if s.ts <= t][-1]

        first, last = at(got[0].start), at(got[-1].end)
        assert sum(m.produced for m in got) == last.produced_total - first.produced_total
        assert sum(m.consumed for m in got) == last.consumed_total - first.consumed_total
        assert got[-1].end <= samples[-1].ts


# -- signing and validation ---------------------------------------------------------------


def readings(*flows: tuple[int, int], key=KEY, start: int = T0) -> list[Reading]:
    ms = [Measurement(start + i * IV, start + (i + 1) * IV, p, c) for i, (p, c) in enumerate(flows)]
    return list(sign_measurements(ms, key))


def test_signed_readings_carry_the_meter_id_seq_and_a_valid_signature() -> None:
    rs = readings((100, 20), (0, 300))
    assert [r.seq for r in rs] == [1, 2] and {r.meter for r in rs} == {METER}
    assert all(r.verify_signature() for r in rs)
    assert Reading.from_dict(rs[0].to_dict()) == rs[0]
    with pytest.raises(RecordError, match="consumed"):
        list(sign_measurements([Measurement(T0, T0 + IV, 1, -1)], KEY))
    with pytest.raises(RecordError, match="end"):
        list(sign_measurements([Measurement(T0, T0, 1, 1)], KEY))


def validator(max_power_w: int | None = 10_000) -> ReadingValidator:
    return ReadingValidator([Meter(METER, "ann", max_power_w)], clock_skew_ms=MIN)


def test_the_validator_accepts_a_good_stream_and_names_each_refusal() -> None:
    v = validator()
    good = readings((100, 20), (0, 300), (2_500, 0))  # 2500 Wh in 15 min = 10 kW: the most
    for r in good:
        assert v.check(r.to_dict(), now_ms=T0 + 3 * IV) == r
    other = generate_key()
    nxt = T0 + 3 * IV
    cases = {
        "malformed": {**readings((1, 1), start=nxt)[0].to_dict(), "produced": -1},
        "unknown-meter": readings((1, 1), key=other, start=nxt)[0],
        "bad-signature": Reading(METER, nxt, nxt + IV, 1, 1, 4, sig=good[0].sig),
        "out-of-order": Reading(METER, nxt, nxt + IV, 1, 1, 3).signed(KEY),
        "overlap": Reading(METER, nxt - MIN, nxt + IV, 1, 1, 4).signed(KEY),
        "future": Reading(METER, nxt + IV, nxt + 2 * IV + 1, 1, 1, 4).signed(KEY),
        "impossible": Reading(METER, nxt, nxt + IV, 2_501, 0, 4).signed(KEY),
    }
    assert set(cases) == set(REASONS)
    for reason, bad in cases.items():
        with pytest.raises(ReadingRefused) as exc:
            v.check(bad, now_ms=nxt + IV)
        assert exc.value.reason == reason, str(exc.value)
    # Nothing refused moved the meter's history: the next good reading is still accepted.
    assert v.check(Reading(METER, nxt, nxt + IV, 1, 1, 4).signed(KEY), now_ms=nxt + IV)


def test_a_future_reading_within_the_skew_is_accepted_and_replays_skip_the_clock() -> None:
    [r] = readings((1, 1))
    assert validator().check(r, now_ms=r.end - MIN)  # ends one minute ahead: the skew
    with pytest.raises(ReadingRefused, match="future"):
        validator().check(r, now_ms=r.end - MIN - 1)
    assert validator().check(r, now_ms=None)  # a replay has no "now"


# -- CSV ----------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.csv"
    p.write_text(text)
    return p


def test_csv_intervals_with_ms_and_iso_times(tmp_path: Path) -> None:
    p = write(tmp_path, "start,end,produced_wh,consumed_wh\n"
                        f"{T0},{T0 + IV},120,30\n"
                        "2024-06-21T02:15:00+02:00,2024-06-21T00:30:00Z,0,45\n\n")  # fmt: skip
    assert list(read_csv(p)) == [Measurement(T0, T0 + IV, 120, 30),
                                 Measurement(T0 + IV, T0 + 2 * IV, 0, 45)]  # fmt: skip


def test_csv_registers_become_intervals(tmp_path: Path) -> None:
    rows = f"{T0},1000,5000\n{T0 + IV},1100,5040\n{T0 + 2 * IV},1100,5100\n"
    p = write(tmp_path, "timestamp,produced_total_wh,consumed_total_wh\n" + rows)
    assert list(read_csv(p)) == [Measurement(T0, T0 + IV, 100, 40),
                                 Measurement(T0 + IV, T0 + 2 * IV, 0, 60)]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,what\n", "m.csv:1: header must be"),
        ("", "empty file"),
        (f"start,end,produced_wh,consumed_wh\n{T0},{T0 + IV},1.5,0\n",
         "m.csv:2: produced_wh: must be a whole non-negative number of Wh, got '1.5'"),
        (f"start,end,produced_wh,consumed_wh\n{T0},{T0 + IV},1,0\n{T0},{T0 + IV},-3,0\n",
         "m.csv:3: start: overlaps"),
        ("start,end,produced_wh,consumed_wh\n2024-06-21T00:00:00,2024-06-21T00:15:00,1,0\n",
         "m.csv:2: start: '2024-06-21T00:00:00' has no UTC offset"),
        (f"start,end,produced_wh,consumed_wh\n{T0 + IV},{T0},1,0\n", "m.csv:2: end: must be after"),
        (f"start,end,produced_wh,consumed_wh\n{T0},{T0 + IV},1\n", "m.csv:2: expected 4 columns"),
        (f"timestamp,produced_total_wh,consumed_total_wh\n{T0},10,10\n{T0 + IV},9,10\n",
         "m.csv:3: produced_total_wh: a register cannot go down"),
    ],
)  # fmt: skip
def test_a_bad_csv_row_is_named_by_its_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MeasurementError) as exc:
        list(read_csv(write(tmp_path, text)))
    assert message in str(exc.value)


# -- transfers (MaxCoin) --------------------------------------------------------------------


def test_a_transfer_is_flagged_when_losses_are_off_by_more_than_the_tolerance() -> None:
    storage = generate_key()

    def pair(sent: int, received: int) -> tuple[Reading, Reading]:
        [s] = readings((sent, 0))
        [r] = readings((0, received), key=storage)
        return s, r

    ok = check_transfer(*pair(10_000, 9_700), loss_ppm=30_000, tolerance_wh=10)  # 3% loss
    assert not ok.flagged and ok.expected_loss_wh == 300 and ok.loss_wh == 300
    edge = check_transfer(*pair(10_000, 9_690), loss_ppm=30_000, tolerance_wh=10)
    assert not edge.flagged  # 310 Wh lost: exactly at the tolerance
    bad = check_transfer(*pair(10_000, 9_689), loss_ppm=30_000, tolerance_wh=10)
    assert bad.flagged and "a loss of 311 Wh" in bad.problem
    double = check_transfer(*pair(10_000, 10_400), loss_ppm=30_000, tolerance_wh=10)
    assert double.flagged and double.loss_wh == -400  # more arrived than left
    s, _ = pair(1, 1)
    [late] = readings((0, 1), key=storage, start=T0 + IV)
    assert "different intervals" in check_transfer(s, late, 0, 100).problem
