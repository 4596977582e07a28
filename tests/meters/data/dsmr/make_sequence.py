"""Derive multi-telegram P1 files from the real sample telegrams in this folder.

A real P1 capture over an hour is not available, so each sequence takes one real telegram,
changes its timestamp (0-0:1.0.0) and energy registers (1-0:1.8.1/2, 1-0:2.8.1/2) and
recomputes the CRC16 (dsmr-parser's own function), leaving every other line as the meter
wrote it. Run ``python tests/meters/data/dsmr/make_sequence.py`` to rewrite the files; the DSMR
tests check that the committed files are exactly what this script builds.
"""

from __future__ import annotations

import re
from pathlib import Path

from dsmr_parser.parsers import TelegramParser

HERE = Path(__file__).resolve().parent

_REGISTERS = ("1.8.1", "1.8.2", "2.8.1", "2.8.2")


def derive(telegram: str, stamp: str, wh: dict[str, int]) -> str:
    """``telegram`` with timestamp ``stamp`` (``YYMMDDhhmmssX``), the kWh registers named in
    ``wh`` (e.g. ``{"1.8.1": 301548}``, in Wh) replaced, and its CRC recomputed."""
    text, n = re.subn(r"^(0-0:1\.0\.0)\(\d{12}[SW]\)", rf"\1({stamp})", telegram, flags=re.M)
    assert n == 1, "no timestamp line"
    for obis, value in wh.items():
        assert obis in _REGISTERS and value >= 0
        kwh = f"{value // 1000:06d}.{value % 1000:03d}"
        pattern = rf"^(1-0:{re.escape(obis)})\(\d+\.\d+\*kWh\)"
        text, n = re.subn(pattern, rf"\g<1>({kwh}*kWh)", text, flags=re.M)
        assert n == 1, f"no register {obis}"
    body = text[: text.index("!") + 1]
    return f"{body}{TelegramParser.crc16(body):04X}\r\n"


def _read(name: str) -> str:
    return (HERE / name).read_bytes().decode("ascii")


# Belgian (Fluvius) meter, 2023-11-02, winter time (UTC+1), around noon: one hour of a
# prosumer's telegrams, thinned to a few minutes apart, crossing four 15-minute boundaries
# (two telegrams exactly on one). Tariff 1 is the Belgian day tariff.
# (local time, 1-0:1.8.1, 1-0:1.8.2, 1-0:2.8.1, 1-0:2.8.2), registers in Wh.
FLUVIUS_HOUR = [
    ("231102115740W", 301548, 270014, 5, 0),
    ("231102120500W", 301600, 270014, 40, 0),
    ("231102121450W", 301700, 270014, 120, 0),
    ("231102121500W", 301702, 270014, 125, 0),
    ("231102122430W", 301760, 270014, 300, 0),
    ("231102123010W", 301800, 270014, 420, 0),
    ("231102123945W", 301830, 270014, 600, 0),
    ("231102124500W", 301845, 270014, 700, 0),
    ("231102125220W", 301900, 270014, 700, 0),
    ("231102130005W", 301980, 270014, 700, 0),
    ("231102130230W", 302000, 270014, 700, 0),
]

# Dutch meter, night of 2023-10-29 when summer time ends: 02:00-03:00 local happens twice,
# first as summer time (S, UTC+2) then as winter time (W, UTC+1). Night tariff 1 rises.
NL_DST_END = [
    ("231029015500S", 4426),
    ("231029021000S", 4436),
    ("231029022500S", 4456),
    ("231029024000S", 4486),
    ("231029025500S", 4526),
    ("231029021000W", 4576),
    ("231029022500W", 4636),
    ("231029024000W", 4706),
    ("231029025500W", 4786),
    ("231029031000W", 4876),
]


def build_fluvius_hour() -> str:
    base = _read("fluvius_v171_alt.txt")
    return "".join(
        derive(base, stamp, {"1.8.1": c1, "1.8.2": c2, "2.8.1": p1, "2.8.2": p2})
        for stamp, c1, c2, p1, p2 in FLUVIUS_HOUR
    )


def build_nl_dst_end() -> str:
    base = _read("v5_iskra.txt")
    return "".join(derive(base, stamp, {"1.8.1": c1}) for stamp, c1 in NL_DST_END)


FILES = {
    "sequence_fluvius_1h.txt": build_fluvius_hour,
    "sequence_nl_dst_end.txt": build_nl_dst_end,
}


def main() -> None:
    for name, build in FILES.items():
        (HERE / name).write_bytes(build().encode("ascii"))
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
