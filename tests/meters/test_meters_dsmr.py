"""DSMR P1 telegrams -> register samples -> interval measurements (wattmesh.meters.dsmr).

The real telegrams in tests/meters/data/dsmr/ come from dsmr-parser's test suite (see the README
there); the two sequence files are derived from them by make_sequence.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import threading
import tty
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser

from wattmesh.meters.dsmr import (
    DsmrError,
    P1PortError,
    parse_telegram,
    read_serial,
    read_telegram_file,
    read_telegrams,
)
from wattmesh.meters.measurement import Measurement, RegisterSample, intervals_from_registers

DATA = Path(__file__).parent / "data" / "dsmr"
SEQUENCE = DATA / "sequence_fluvius_1h.txt"
DST_END = DATA / "sequence_nl_dst_end.txt"


def _load_make_sequence():
    spec = importlib.util.spec_from_file_location("dsmr_make_sequence", DATA / "make_sequence.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_sequence = _load_make_sequence()


def ms(*args: int) -> int:
    """ms since the epoch of a UTC date and time."""
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000


def text(name: str) -> str:
    return (DATA / name).read_bytes().decode("ascii")


def with_crc(telegram: str) -> str:
    """``telegram`` (ending at its ``!`` line) with its CRC line recomputed."""
    body = telegram[: telegram.index("!") + 1]
    return f"{body}{TelegramParser.crc16(body):04X}\r\n"


def without_line(telegram: str, prefix: str) -> str:
    kept = [line for line in telegram.split("\r\n") if not line.startswith(prefix)]
    assert len(kept) == telegram.count("\r\n")  # exactly one line removed
    return with_crc("\r\n".join(kept))


def replace_line(telegram: str, prefix: str, line: str) -> str:
    new, n = re.subn(rf"^{re.escape(prefix)}[^\r\n]*", line, telegram, flags=re.M)
    assert n == 1
    return with_crc(new)


# --- real telegrams ------------------------------------------------------------------------

# (file, UTC time of its 0-0:1.0.0, produced Wh = 2.8.1 + 2.8.2, consumed Wh = 1.8.1 + 1.8.2),
# each value read off the telegram text.
REAL = [
    # 161113205757W: 20:57:57 CET; 1581.123 + 1435.706 kWh; 0 + 0
    ("v4_2_kaifa.txt", ms(2016, 11, 13, 19, 57, 57), 0, 1_581_123 + 1_435_706),
    # 170102192002W; 1.8.x 4.426 + 2.399 kWh; 2.8.x 2.444 + 0 kWh
    ("v5_iskra.txt", ms(2017, 1, 2, 18, 20, 2), 2_444, 4_426 + 2_399),
    # 200426223325S: 22:33:25 CEST; 2130.115 + 245.467 kWh
    ("v5_iskra_two_mbus.txt", ms(2020, 4, 26, 20, 33, 25), 0, 2_130_115 + 245_467),
    # Belgian: 200512135409S; 0.034 + 15.758 kWh; 0.000 + 0.011 kWh
    ("fluvius_v171.txt", ms(2020, 5, 12, 11, 54, 9), 11, 34 + 15_758),
    # Belgian: 231102121548W; 301.548 + 270.014 kWh; 0.005 + 0 kWh
    ("fluvius_v171_alt.txt", ms(2023, 11, 2, 11, 15, 48), 5, 301_548 + 270_014),
    # Registers in Wh, not kWh: 221006155014S; 5017120 + 1528646 Wh; 0 + 58 Wh
    ("sagemcom_t210_d_r.txt", ms(2022, 10, 6, 13, 50, 14), 58, 5_017_120 + 1_528_646),
    # 230724150730S; 47.719 + 125.921 kWh; 401.829 + 225.348 kWh
    ("v5_eon_hungary.txt", ms(2023, 7, 24, 13, 7, 30), 401_829 + 225_348, 47_719 + 125_921),
]


@pytest.mark.parametrize(("name", "ts", "produced", "consumed"), REAL)
def test_real_telegram_gives_exact_wh_registers(
    name: str, ts: int, produced: int, consumed: int
) -> None:
    expected = RegisterSample(ts, produced, consumed)
    assert parse_telegram(text(name)) == expected
    assert list(read_telegram_file(DATA / name)) == [expected]


@pytest.mark.parametrize("name", ["fluvius_v171.txt", "fluvius_v171_alt.txt"])
def test_fluvius_telegrams_with_the_belgian_spec(name: str) -> None:
    spec = telegram_specifications.BELGIUM_FLUVIUS
    assert parse_telegram(text(name), spec=spec) == parse_telegram(text(name))


def test_telegram_without_crc_is_refused() -> None:
    # DSMR 3 telegrams end in a bare "!": nothing protects their digits.
    with pytest.raises(DsmrError, match=r"^telegram 1 \(line 1\): .*checksum") as info:
        list(read_telegram_file(DATA / "v3_no_crc.txt"))
    assert (info.value.number, info.value.line) == (1, 1)


# --- sequences -------------------------------------------------------------------------------


def test_committed_sequences_are_what_make_sequence_builds() -> None:
    for name, build in make_sequence.FILES.items():
        assert (DATA / name).read_bytes() == build().encode("ascii"), name


def test_sequence_gives_15_minute_measurements() -> None:
    # Local times are CET (UTC+1): 12:00 local = 11:00 UTC. Registers (Wh), from
    # make_sequence.FLUVIUS_HOUR (tariff 2 stays at 270014 throughout):
    #   11:57:40 c1=301548 p1=5    <- registers at 12:00 (last telegram before it)
    #   12:15:00 c1=301702 p1=125  <- exactly on the boundary
    #   12:24:30 c1=301760 p1=300  <- last before 12:30 (next one is 12:30:10)
    #   12:45:00 c1=301845 p1=700  <- exactly on the boundary
    #   12:52:20 c1=301900 p1=700  <- last before 13:00 (next one is 13:00:05)
    expected = [
        Measurement(ms(2023, 11, 2, 11, 0), ms(2023, 11, 2, 11, 15), 125 - 5, 301702 - 301548),
        Measurement(ms(2023, 11, 2, 11, 15), ms(2023, 11, 2, 11, 30), 300 - 125, 301760 - 301702),
        Measurement(ms(2023, 11, 2, 11, 30), ms(2023, 11, 2, 11, 45), 700 - 300, 301845 - 301760),
        Measurement(ms(2023, 11, 2, 11, 45), ms(2023, 11, 2, 12, 0), 0, 301900 - 301845),
    ]
    samples = list(read_telegram_file(SEQUENCE))
    assert len(samples) == 11
    assert samples[0] == RegisterSample(ms(2023, 11, 2, 10, 57, 40), 5, 301548 + 270014)
    assert list(intervals_from_registers(samples)) == expected


def test_summer_time_end_keeps_utc_continuous() -> None:
    # 2023-10-29: 02:10S is 00:10 UTC, 02:10W an hour later, 01:10 UTC.
    samples = list(read_telegram_file(DST_END))
    assert [s.ts for s in samples[:2]] == [ms(2023, 10, 28, 23, 55), ms(2023, 10, 29, 0, 10)]
    assert samples[5].ts == ms(2023, 10, 29, 1, 10)
    assert all(a.ts < b.ts for a, b in itertools.pairwise(samples))
    measured = list(intervals_from_registers(samples))
    # Eight 15-minute intervals from 00:00 to 02:00 UTC: the two local 02:00-03:00 hours.
    assert [(m.start, m.end) for m in measured] == [
        (ms(2023, 10, 29, 0, 0) + k * 900_000, ms(2023, 10, 29, 0, 15) + k * 900_000)
        for k in range(8)
    ]
    # Tariff 1 rose 10, 20, ..., 90 Wh between telegrams 15 minutes apart.
    assert [m.consumed for m in measured] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert {m.produced for m in measured} == {0}


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("230715120000S", ms(2023, 7, 15, 10, 0)),  # CEST = UTC+2
        ("230115120000W", ms(2023, 1, 15, 11, 0)),  # CET = UTC+1
        ("231029023000S", ms(2023, 10, 29, 0, 30)),  # the repeated hour, first time
        ("231029023000W", ms(2023, 10, 29, 1, 30)),  # the repeated hour, second time
        ("230326030000S", ms(2023, 3, 26, 1, 0)),  # right after the spring-forward gap
    ],
)
def test_local_time_with_dst_flag_to_utc(stamp: str, utc: int) -> None:
    telegram = make_sequence.derive(text("v5_iskra.txt"), stamp, {})
    assert parse_telegram(telegram).ts == utc


@pytest.mark.parametrize(
    "stamp",
    [
        "230115120000S",  # summer flag in January
        "230715120000W",  # winter flag in July
        "230326023000S",  # 02:30 does not exist on 2023-03-26
    ],
)
def test_dst_flag_contradicting_the_date_is_refused(stamp: str) -> None:
    telegram = make_sequence.derive(text("v5_iskra.txt"), stamp, {})
    with pytest.raises(DsmrError, match=r"0-0:1\.0\.0.*(summer|winter) time"):
        parse_telegram(telegram)


# --- bad telegrams -------------------------------------------------------------------------


def corrupt_third_telegram(tmp_path: Path) -> tuple[Path, int]:
    """The sequence file with one digit changed in telegram 3; returns it and its first line."""
    lines = SEQUENCE.read_bytes().split(b"\r\n")
    headers = [i for i, line in enumerate(lines) if line.startswith(b"/")]
    first = headers[2]
    i = next(i for i in range(first, len(lines)) if lines[i].startswith(b"1-0:1.8.1("))
    assert lines[i] == b"1-0:1.8.1(000301.700*kWh)"
    lines[i] = b"1-0:1.8.1(000301.790*kWh)"
    path = tmp_path / "corrupt.txt"
    path.write_bytes(b"\r\n".join(lines))
    return path, first + 1


def test_one_changed_digit_fails_the_crc_and_names_the_telegram(tmp_path: Path) -> None:
    path, line = corrupt_third_telegram(tmp_path)
    samples = read_telegram_file(path)
    assert next(samples).consumed_total == 301548 + 270014
    assert next(samples).consumed_total == 301600 + 270014
    with pytest.raises(DsmrError, match=rf"^telegram 3 \(line {line}\): CRC checksum failed"):
        next(samples)


def test_skipping_bad_telegrams_loses_no_energy(tmp_path: Path) -> None:
    path, line = corrupt_third_telegram(tmp_path)
    skipped: list[DsmrError] = []
    samples = list(read_telegram_file(path, on_bad=skipped.append))
    assert len(samples) == 10
    assert [(e.number, e.line) for e in skipped] == [(3, line)]
    # Telegram 3 (12:14:50) was not on a boundary: the measurements are unchanged.
    good = list(intervals_from_registers(read_telegram_file(SEQUENCE)))
    assert list(intervals_from_registers(samples)) == good


@pytest.mark.parametrize(
    ("prefix", "obis"),
    [
        ("1-0:1.8.1(", "1-0:1.8.1"),
        ("1-0:1.8.2(", "1-0:1.8.2"),
        ("1-0:2.8.1(", "1-0:2.8.1"),
        ("1-0:2.8.2(", "1-0:2.8.2"),
        ("0-0:1.0.0(", "0-0:1.0.0"),
    ],
)
def test_missing_register_is_named(prefix: str, obis: str) -> None:
    telegram = without_line(text("v4_2_kaifa.txt"), prefix)
    with pytest.raises(DsmrError, match=rf"register {re.escape(obis)} .*missing"):
        parse_telegram(telegram)


def test_missing_register_in_a_file_names_telegram_and_register(tmp_path: Path) -> None:
    good = text("v5_iskra.txt")
    bad = without_line(good, "1-0:2.8.2(")
    path = tmp_path / "p1.txt"
    path.write_bytes((good + bad).encode("ascii"))
    line = good.count("\r\n") + 1
    with pytest.raises(DsmrError, match=rf"^telegram 2 \(line {line}\): register 1-0:2\.8\.2"):
        list(read_telegram_file(path))


def test_register_that_is_not_whole_wh_is_refused() -> None:
    telegram = replace_line(text("v5_iskra.txt"), "1-0:1.8.1(", "1-0:1.8.1(000004.4265*kWh)")
    with pytest.raises(DsmrError, match=r"1-0:1\.8\.1 .*4\.4265 kWh is not a whole"):
        parse_telegram(telegram)


def test_lf_line_ends_still_verify(tmp_path: Path) -> None:
    # An editor or a git checkout may turn CRLF into LF; the CRC is over the CRLF form.
    path = tmp_path / "lf.txt"
    path.write_bytes(SEQUENCE.read_bytes().replace(b"\r\n", b"\n"))
    assert list(read_telegram_file(path)) == list(read_telegram_file(SEQUENCE))


def test_incomplete_telegrams_and_stray_text_are_bad() -> None:
    telegram = text("v5_iskra.txt").encode("ascii")
    lines = telegram.splitlines(keepends=True)
    stream = [b"0-0:96.13.0()\r\n", b"!1234\r\n", b"\r\n"]  # tail of a telegram begun earlier
    stream += lines[:10]  # telegram 1, cut off
    stream += lines  # telegram 2, whole
    stream += lines[:5]  # telegram 3, cut off by the end
    with pytest.raises(DsmrError, match=r"^lines 1-2: text outside a telegram"):
        list(read_telegrams(stream))
    skipped: list[DsmrError] = []
    assert len(list(read_telegrams(stream, on_bad=skipped.append))) == 1
    assert [str(e).split(":", 1)[0] for e in skipped] == [
        "lines 1-2",
        "telegram 1 (line 4)",
        "telegram 3 (line 54)",
    ]
    assert "no '!' CRC line" in str(skipped[1])


# --- serial port, through a pseudo-terminal --------------------------------------------------


class FakeMeter:
    """The master side of a pty, writing telegrams in a loop like a P1 port (faster)."""

    def __init__(self, telegrams: list[str], period_s: float = 0.02) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)  # never block if nobody reads
        self.device = os.ttyname(self.slave)
        self._data = [t.encode("latin-1") for t in telegrams]
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-p1-meter", daemon=True)

    def _run(self) -> None:
        for data in itertools.cycle(self._data):
            if self._stop.wait(self._period_s):
                return
            try:
                os.write(self.master, data)
            except BlockingIOError:
                pass

    def __enter__(self) -> FakeMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        assert not self._thread.is_alive()
        os.close(self.master)
        os.close(self.slave)


def sequence_telegrams() -> list[str]:
    telegrams = re.findall(r"/.*?![0-9A-F]{4}\r\n", text(SEQUENCE.name), flags=re.S)
    assert len(telegrams) == 11
    return telegrams


def no_leftover_threads() -> None:
    assert [t.name for t in threading.enumerate() if t.name == "fake-p1-meter"] == []


@pytest.fixture
def expected_cycle() -> Iterator[list[RegisterSample]]:
    yield list(read_telegram_file(SEQUENCE))
    no_leftover_threads()


def test_serial_reads_telegrams_from_a_pty(expected_cycle: list[RegisterSample]) -> None:
    with FakeMeter(sequence_telegrams()) as meter:
        samples = read_serial(meter.device, idle_timeout_s=2)
        got = list(itertools.islice(samples, 4))
        samples.close()  # closes the port
    # The port may open mid-telegram and the stream loops: expect 4 consecutive telegrams.
    first = expected_cycle.index(got[0])
    n = len(expected_cycle)
    assert got == [expected_cycle[(first + k) % n] for k in range(4)]


def test_serial_bad_crc_stops_the_read_or_is_skipped() -> None:
    good = sequence_telegrams()[:3]
    bad = good[1].replace("1-0:1.8.1(000301.600", "1-0:1.8.1(000301.699")
    assert bad != good[1]
    with FakeMeter([good[0], bad, good[2]]) as meter:
        samples = read_serial(meter.device, idle_timeout_s=2)
        with pytest.raises(DsmrError, match=r"^telegram \d+: CRC checksum failed"):
            list(itertools.islice(samples, 10))
        skipped: list[DsmrError] = []
        samples = read_serial(meter.device, idle_timeout_s=2, on_bad=skipped.append)
        got = list(itertools.islice(samples, 4))
        samples.close()
    assert {s.consumed_total for s in got} <= {301548 + 270014, 301700 + 270014}
    assert len(skipped) >= 1 and all("CRC" in str(e) for e in skipped)
    no_leftover_threads()


def test_serial_silence_garbage_and_missing_device() -> None:
    with FakeMeter([]) as meter:
        with pytest.raises(P1PortError, match=r"no data for 0\.2 s"):
            next(read_serial(meter.device, idle_timeout_s=0.2))
    # What a 7E1 port read as 8N1, or a wrong baud rate, gives: bytes but never a telegram.
    with FakeMeter(["\xff\x00garbage!" * 512], period_s=0.001) as meter:
        with pytest.raises(P1PortError, match=r"bytes without a whole telegram"):
            next(read_serial(meter.device, idle_timeout_s=2))
    with pytest.raises(P1PortError, match=r"^P1 port /dev/no-such-p1-port: cannot open"):
        next(read_serial("/dev/no-such-p1-port"))


@pytest.mark.parametrize(
    "kwargs",
    [{"baudrate": 0}, {"bytesize": 6}, {"parity": "X"}, {"idle_timeout_s": 0}],
)
def test_serial_arguments_are_checked_before_opening(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        read_serial("/dev/no-such-p1-port", **kwargs)
