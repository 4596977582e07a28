"""``wattmesh ledger ...``: verify, head, balances, show, export, prove and check-proof.

Mounted by the main CLI with ``app.add_typer(ledger_app, name="ledger")``. Bad input (no
such file, not a ledger, a malformed ``--expect-head``) is one ``wattmesh: error: ...`` line
and exit 2; ``verify`` exits 1 on a ledger that does not verify, naming the first bad entry,
and ``check-proof`` exits 1 on a well-formed proof that does not hold.
"""

from __future__ import annotations

import csv
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from wattmesh.exchange.cli.terminal import command_group, fail

# The ledger package (its schema, proofs, Merkle trees; the store for commands that open a
# file) loads in the commands, not for every command (tests/exchange/cli/test_startup.py).
if TYPE_CHECKING:
    from wattmesh.settlement.ledger import Ledger

ledger_app = command_group("Inspect and verify a node's hash-linked ledger (SQLite file).")

FileArg = Annotated[Path, typer.Argument(metavar="FILE", help="The ledger's SQLite file.")]

# Body fields that name an account, for --owner.
_OWNER_FIELDS = ("owner", "buyer", "seller", "meter", "fund", "authorised_by")


class Format(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    sqlite = "sqlite"
    parquet = "parquet"


def _open(path: Path) -> Ledger:
    from wattmesh.settlement.ledger import Ledger, LedgerError

    try:
        return Ledger.open(path, create=False)
    except LedgerError as exc:
        fail(str(exc))


@ledger_app.command()
def verify(
    file: FileArg,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:HASH",
            help="A head seen before: catches a truncated or rewritten history.",
        ),
    ] = None,
) -> None:
    """Recompute every seq, link, hash, body, signature and balance. Exit 0 if all hold,
    1 naming the first bad entry otherwise."""
    from wattmesh.settlement.ledger import parse_head

    head = None
    if expect_head is not None:
        try:
            head = parse_head(expect_head)
        except ValueError as exc:
            fail(f"--expect-head: {exc}")
    with _open(file) as ledger:
        result = ledger.verify(head)
    print(result)
    raise typer.Exit(0 if result.ok else 1)


@ledger_app.command()
def head(file: FileArg) -> None:
    """Print the last entry as SEQ:HASH (0:000...0 for an empty ledger)."""
    with _open(file) as ledger:
        print(ledger.head_text())


@ledger_app.command()
def balances(
    file: FileArg,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Balances per account: energy (Wh) and money (nano-currency), from the cache."""
    with _open(file) as ledger:
        bal = ledger.balances()
    if as_json:
        sys.stdout.write(orjson.dumps(bal, option=orjson.OPT_SORT_KEYS).decode() + "\n")
        return
    width = max((len(a) for a in bal), default=7)
    print(f"{'account':<{width}}  {'kind':<8}  {'energy_wh':>14}  {'money_nano':>22}")
    for acct, b in bal.items():
        print(f"{acct:<{width}}  {b['kind']:<8}  {b['energy']:>14}  {b['money']:>22}")


def _touches(body: dict, owner: str) -> bool:
    if any(body.get(f) == owner for f in _OWNER_FIELDS):
        return True
    for key in ("shares", "adjustments"):
        for item in body.get(key) or ():
            if isinstance(item, dict) and item.get("account") == owner:
                return True
    return owner in (body.get("funds") or {}).values() if "funds" in body else False


@ledger_app.command()
def show(
    file: FileArg,
    kind: Annotated[str | None, typer.Option(help="Only entries of this kind.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only entries naming this account.")] = None,
    since: Annotated[int, typer.Option(min=1, help="Start at this seq.")] = 1,
) -> None:
    """Print entries as JSON lines: seq, ts, kind, body, prev and hash (hex)."""
    from wattmesh.settlement.ledger import KINDS

    if kind is not None and kind not in KINDS:
        fail(f"--kind: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    out = sys.stdout
    with _open(file) as ledger:
        for e in ledger.entries(since=since, kind=kind):
            if owner is not None and not _touches(e.body, owner):
                continue
            out.write(orjson.dumps(e.to_dict()).decode() + "\n")


@ledger_app.command()
def export(
    file: FileArg,
    fmt: Annotated[
        Format,
        typer.Option("--format", help="jsonl, csv, sqlite or parquet (these two need --out)."),
    ] = Format.jsonl,
    out: Annotated[
        Path | None,
        typer.Option(metavar="PATH", show_default=False,
                     help="sqlite: the database FILE to write (replaced whole if it exists); "
                     "parquet: the folder DIR for one .parquet file per table."),
    ] = None,
) -> None:  # fmt: skip
    """Write every entry: jsonl and csv to stdout (csv columns seq,ts,kind,body,prev,hash,
    body as canonical JSON, hashes in hex); sqlite and parquet to --out, one table per
    entry kind with the body's fields as columns, the balances, and every account's
    balances after each interval (docs/ledger.md, "Export")."""
    tabular = fmt in (Format.sqlite, Format.parquet)
    if tabular != (out is not None):
        fail("--out goes with --format sqlite (a FILE) or parquet (a DIR); "
             "jsonl and csv go to stdout")  # fmt: skip
    if fmt is Format.sqlite and out is not None and out.is_dir():
        fail(f"--out {out} is a folder: --format sqlite writes one database FILE")
    if fmt is Format.parquet and out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out} is a file: --format parquet writes a folder DIR of tables")
    if fmt is Format.parquet:
        from wattmesh.exchange.tables import MissingPyarrowError, check_format

        try:
            check_format("parquet", "ledger export --format parquet")
        except MissingPyarrowError as exc:
            fail(str(exc))
    with _open(file) as ledger:
        if tabular:
            from wattmesh.exchange.ledger_tables import export_parquet
            from wattmesh.settlement.ledger.tables import export_tables

            assert out is not None
            try:
                counts = (export_tables if fmt is Format.sqlite else export_parquet)(ledger, out)
            except OSError as exc:
                fail(f"cannot write {out}: {exc.strerror or exc}")
            tables = ", ".join(f"{k} {n:,}" for k, n in counts.items())
            sys.stderr.write(f"{out}: {len(counts)} tables ({tables})\n")
            return
        if fmt is Format.jsonl:
            for e in ledger.entries():
                sys.stdout.write(orjson.dumps(e.to_dict()).decode() + "\n")
            return
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["seq", "ts", "kind", "body", "prev", "hash"])
        for seq, ts, k, body, prev, h in ledger.conn.execute(
            "SELECT seq, ts, kind, body, prev, hash FROM entries ORDER BY seq"
        ):
            w.writerow([seq, ts, k, body, prev.hex(), h.hex()])


@ledger_app.command()
def prove(
    file: FileArg,
    entry: Annotated[int, typer.Option("--entry", metavar="SEQ", help="The entry's seq.")],
) -> None:
    """Print an inclusion proof of entry SEQ under the Merkle root of the interval_close
    that covers it, as one JSON object (for check-proof)."""
    from wattmesh.settlement.ledger import LedgerError

    with _open(file) as ledger:
        try:
            proof = ledger.prove(entry)
        except LedgerError as exc:
            fail(f"--entry: {exc}")
    sys.stdout.write(orjson.dumps(proof).decode() + "\n")


@ledger_app.command("check-proof")
def check_proof_cmd(
    proof: Annotated[
        str, typer.Argument(metavar="PROOF", help="A proof file from prove, or - for stdin.")
    ],
) -> None:
    """Check an inclusion proof: print ok (exit 0), or what is wrong (exit 1; a malformed
    proof: exit 2). Whether its root is the ledger's is for the caller to trust."""
    from wattmesh.settlement.ledger import LedgerError, check_proof, parse_proof

    try:
        text = sys.stdin.buffer.read() if proof == "-" else Path(proof).read_bytes()
    except OSError as exc:
        fail(f"cannot read {proof}: {exc.strerror or exc}")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        fail(f"{proof}: not JSON: {exc}")
    try:
        parsed = parse_proof(doc)
    except LedgerError as exc:
        fail(f"{proof}: {exc}")
    problem = check_proof(parsed)
    print(f"bad proof: {problem}" if problem else "ok")
    raise typer.Exit(1 if problem else 0)
