"""``wattmesh meter ...``: make a meter key, read signed readings from a source, verify them.

Mounted by the main CLI with ``app.add_typer(meter_app, name="meter")``. The work is in
``wattmesh.meters`` (docs/meters.md); this module parses options, draws progress and
prints. Bad input is one ``wattmesh: error: ...`` line and exit 2; ``verify`` exits 1
when a reading is refused, naming every refused reading and why.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import orjson
import typer

from wattmesh.exchange.atomic_file import atomic_output
from wattmesh.exchange.cli.terminal import command_group, fail, progress_bar
from wattmesh.meters.measurement import (
    DEFAULT_INTERVAL_MS,
    Measurement,
    MeasurementError,
    RegisterSample,
    intervals_from_registers,
)

if TYPE_CHECKING:
    from wattmesh.settlement.keys import Ed25519PrivateKey

meter_app = command_group(
    "Meter keys and signed readings: simulated, CSV, DSMR P1 and SunSpec sources."
)

DEFAULT_KEY = Path("meter.key")
PROGRESS_MIN_ITEMS = 2_000  # a bar is worth drawing only for inputs that take a moment


class Source(StrEnum):
    sim = "sim"
    csv = "csv"
    dsmr = "dsmr"
    sunspec = "sunspec"


@meter_app.command()
def keygen(
    out: Annotated[
        Path, typer.Option(help="Where to write the meter's private key (mode 0600).")
    ] = DEFAULT_KEY,
) -> None:
    """Make a new meter key and print the meter id (its peer id) to register it.

    Refuses to overwrite an existing key file: a meter's key is its identity.
    """
    from wattmesh.settlement.keys import generate_key, peer_id_of, save_key

    key = generate_key()
    try:
        save_key(out, key)
    except FileExistsError:
        fail(f"--out: {out} exists; a meter key is never overwritten (choose another path)")
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror}")
    typer.echo(peer_id_of(key))


@meter_app.command()
def read(
    source: Annotated[Source, typer.Option(help="Where the measurements come from.")],
    file: Annotated[
        Path | None, typer.Option(help="csv: the CSV file; dsmr: a file of P1 telegrams.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="dsmr: the P1 serial device, e.g. /dev/ttyUSB0.")
    ] = None,
    baudrate: Annotated[int, typer.Option(help="dsmr: serial speed (DSMR 5: 115200).")] = 115200,
    host: Annotated[str | None, typer.Option(help="sunspec: the inverter's address.")] = None,
    port: Annotated[int, typer.Option(help="sunspec: Modbus TCP port.")] = 502,
    unit: Annotated[int, typer.Option(help="sunspec: Modbus unit id.")] = 1,
    samples: Annotated[
        int | None, typer.Option(min=2, help="sunspec, dsmr --device: samples to take.")
    ] = None,
    period: Annotated[
        float, typer.Option(min=0.0, help="sunspec: seconds between samples.")
    ] = 10.0,
    start: Annotated[
        str, typer.Option(help="sim: first day, YYYY-MM-DD (UTC midnight).")
    ] = "2024-06-21",
    days: Annotated[int, typer.Option(min=1, help="sim: number of days.")] = 1,
    seed: Annotated[int, typer.Option(help="sim: noise seed.")] = 0,
    peak_w: Annotated[int, typer.Option(min=0, help="sim: PV array size, W peak.")] = 4000,
    annual_kwh: Annotated[
        int, typer.Option(min=0, help="sim: household consumption per year, kWh.")
    ] = 3500,
    site: Annotated[str, typer.Option(help="sim: weather site (see docs/meters-sim.md).")] = (
        "greensboro"
    ),
    load_profile: Annotated[str, typer.Option(help="sim: h25 or h0 (pvlib backend).")] = "h25",
    backend: Annotated[
        str, typer.Option(help="sim: auto, pvlib (needs wattmesh\\[sim]) or builtin.")
    ] = "auto",
    interval_ms: Annotated[
        int, typer.Option(min=1, help="Length of one reading in ms.")
    ] = DEFAULT_INTERVAL_MS,
    first_seq: Annotated[int, typer.Option(min=1, help="seq of the first reading.")] = 1,
    key: Annotated[Path, typer.Option(help="The meter's private key file.")] = DEFAULT_KEY,
    out: Annotated[
        Path | None, typer.Option(help="Write readings here (JSON Lines); default stdout.")
    ] = None,
) -> None:
    """Read measurements from a source and write them as signed readings, one per line.

    Examples:

        wattmesh meter read --source sim --days 7 --out week.jsonl

        wattmesh meter read --source csv --file meter.csv --key meter.key

        wattmesh meter read --source dsmr --file p1.txt

        wattmesh meter read --source sunspec --host 192.168.1.50 --samples 91 --period 10
    """
    from wattmesh.meters.signer import sign_measurements
    from wattmesh.settlement.keys import peer_id_of
    from wattmesh.settlement.records import RecordError

    meter_key = _load_key(key)
    measurements, expected = _measurements(
        source, file=file, device=device, baudrate=baudrate, host=host, port=port, unit=unit,
        samples=samples, period=period, start=start, days=days, seed=seed, peak_w=peak_w,
        annual_kwh=annual_kwh, site=site, load_profile=load_profile, backend=backend,
        interval_ms=interval_ms,
    )  # fmt: skip
    written = 0
    try:
        with _output(out) as fp:
            show = expected >= PROGRESS_MIN_ITEMS
            with progress_bar(f"{source} readings", max(expected, 1), show=show) as update:
                for r in sign_measurements(measurements, meter_key, first_seq):
                    fp.write(orjson.dumps(r.to_dict()) + b"\n")
                    written += 1
                    if update is not None and written % 256 == 0:
                        update(min(written, expected))
    except (MeasurementError, RecordError, ValueError, ConnectionError) as exc:
        kept = "" if out is None else f"; {out} was not written"
        fail(f"{source}: {exc} (after {written} reading{'' if written == 1 else 's'}{kept})")
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror or exc}")
    sys.stderr.write(f"{written} readings from meter {peer_id_of(meter_key)}\n")


@meter_app.command()
def verify(
    readings: Annotated[
        Path, typer.Argument(help="Readings, JSON Lines (as written by meter read).")
    ],
    meter_pub: Annotated[
        str,
        typer.Option(
            help="The meter: its id (peer id, 12D3Koo...) or its key file.", show_default=False
        ),
    ],
    max_power_w: Annotated[
        int | None, typer.Option(min=1, help="The meter's declared maximum power, W.")
    ] = None,
) -> None:
    """Check every reading of a file against one meter: signature, order, overlap and
    (with --max-power-w) impossible values. Exit 0 if all pass, else 1 with every refused
    reading named by its line and reason.

    Example: wattmesh meter verify week.jsonl --meter-pub 12D3KooW...
    """
    from wattmesh.meters.validate import ReadingRefused, ReadingValidator
    from wattmesh.settlement.records import Meter

    meter_id = _meter_id(meter_pub)
    validator = ReadingValidator([Meter(meter_id, "-", max_power_w)])
    refused = accepted = 0
    try:
        lines = readings.read_bytes().splitlines()
    except OSError as exc:
        fail(f"{readings}: cannot read: {exc.strerror}")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            validator.check(orjson.loads(line), now_ms=None)
            accepted += 1
        except orjson.JSONDecodeError as exc:
            typer.echo(f"line {n}: malformed: not JSON: {exc}")
            refused += 1
        except ReadingRefused as exc:
            typer.echo(f"line {n}: {exc}")
            refused += 1
    if refused:
        typer.echo(f"bad: {refused} of {accepted + refused} readings refused")
        raise typer.Exit(1)
    typer.echo(f"ok: {accepted} readings from meter {meter_id}")


# -- helpers --------------------------------------------------------------------------------


def _load_key(path: Path) -> Ed25519PrivateKey:
    from wattmesh.settlement.keys import KeyFileError, read_key_file

    try:
        return read_key_file(path, "--key")
    except KeyFileError as exc:
        hint = "" if path.exists() else f"; make one with: wattmesh meter keygen --out {path}"
        fail(f"{exc}{hint}")


def _meter_id(text: str) -> str:
    from wattmesh.settlement.keys import peer_id_of, public_key_from_peer_id

    if Path(text).is_file():
        return peer_id_of(_load_key(Path(text)))
    try:
        public_key_from_peer_id(text)
    except ValueError:
        fail(f"--meter-pub: {text!r:.60} is neither a key file nor a meter id (peer id)")
    return text


@contextmanager
def _output(path: Path | None) -> Iterator[IO[bytes]]:
    """stdout, or ``path`` written whole or not at all (an error or Ctrl-C part-way leaves
    any older file there untouched)."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    with atomic_output(path) as fp:
        yield fp


def _counted(path: Path, marker: bytes | None = None) -> int:
    """Lines of a file (or lines starting with ``marker``): a progress bar's total."""
    try:
        with path.open("rb") as fp:
            return sum(1 for line in fp if marker is None or line.startswith(marker))
    except OSError:
        return 0


def _measurements(
    source: Source, *, file: Path | None, device: str | None, baudrate: int, host: str | None,
    port: int, unit: int, samples: int | None, period: float, start: str, days: int,
    seed: int, peak_w: int, annual_kwh: int, site: str, load_profile: str, backend: str,
    interval_ms: int,
) -> tuple[Iterable[Measurement], int]:  # fmt: skip
    """The source's measurements and how many to expect (for the progress bar)."""
    if source is Source.sim:
        from wattmesh.meters.simulated import SimulationError, simulate

        try:
            day = date.fromisoformat(start)
        except ValueError:
            fail(f"--start: must be a date YYYY-MM-DD, got {start!r:.40}")
        start_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000
        try:
            sim = simulate(
                start_ms, days, seed=seed, peak_w=peak_w, annual_kwh=annual_kwh, site=site,
                load_profile=load_profile, backend=backend, interval_ms=interval_ms,
            )  # fmt: skip
        except (SimulationError, ValueError) as exc:
            fail(f"sim: {exc}")
        return sim, days * 86_400_000 // interval_ms
    if source is Source.csv:
        from wattmesh.meters.csv_source import read_csv

        path = _need_file(file, "csv")
        return read_csv(path, interval_ms), _counted(path) - 1
    if source is Source.dsmr:
        from wattmesh.meters import dsmr

        if (file is None) == (device is None):
            fail("dsmr: give exactly one of --file (telegrams) or --device (the P1 port)")
        if file is not None:
            path = _need_file(file, "dsmr")
            regs: Iterable[RegisterSample] = dsmr.read_telegram_file(path)
            return intervals_from_registers(regs, interval_ms), _counted(path, b"/") // 90
        regs = dsmr.read_serial(device, baudrate)  # type: ignore[arg-type]
        if samples is not None:
            regs = _take(regs, samples)
        return intervals_from_registers(regs, interval_ms), 0
    from wattmesh.meters import sunspec

    if host is None or samples is None:
        fail("sunspec: give --host and --samples (how many samples to take)")
    inverter = sunspec.SunSpecInverter(host, port, unit)
    regs = sunspec.poll(inverter, period, count=samples)
    return intervals_from_registers(regs, interval_ms), 0


def _need_file(file: Path | None, source: str) -> Path:
    if file is None:
        fail(f"{source}: --file is required")
    if not file.is_file():
        fail(f"--file: no such file {file}")
    return file


def _take(it: Iterable[RegisterSample], n: int) -> Iterator[RegisterSample]:
    for i, s in enumerate(it):
        if i >= n:
            return
        yield s
