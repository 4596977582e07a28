"""``wattmesh community``: a street's community file, before anyone trades (docs/setup.md).

``new`` writes a commented file with the keeper's own household as its first member
(making the keeper's key when there is none: the keeper needs no other trick to get one);
``add`` appends a household's stanza, the one its ``wattmesh init`` printed. Both check
the result as every node will, and never leave a half-written file.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from wattmesh.exchange.atomic_file import write_atomic
from wattmesh.exchange.cli.terminal import command_group, fail
from wattmesh.exchange.clock import DEFAULT_INTERVAL_MS
from wattmesh.exchange.node.defaults import DEFAULT_FILES, default_data_dir
from wattmesh.settlement.errors import WattmeshError

community_app = command_group(
    "A street's community file: start one (new), add households to it (add)."
)

Bmax = Annotated[int, typer.Option(min=0, metavar="WH", help="Wh it may hold in storage.")]


def _start(text: str | None) -> int:
    """The first interval's start: an ISO time with its offset, or the next full hour."""
    if text is None:
        now = int(time.time() * 1000)
        return now - now % 3_600_000 + 3_600_000
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--start: {text!r} is not a time like 2026-12-14T00:00Z", code=1)
    if moment.tzinfo is None:
        fail(f"--start: {text!r} needs its offset (Z for UTC, or +01:00)", code=1)
    ms = int(moment.timestamp() * 1000)
    if ms % DEFAULT_INTERVAL_MS:
        fail(f"--start: {text} is not the start of a 15-minute interval", code=1)
    return ms


@community_app.command()
def new(
    name: Annotated[str, typer.Argument(help="The community's name, e.g. elm-street.")],
    out: Annotated[Path, typer.Option(metavar="FILE", help="The file to write (new).")],
    bmax: Bmax = 10_000,
    start: Annotated[
        str | None,
        typer.Option(metavar="TIME", show_default=False,
                     help="When the first interval starts, e.g. 2026-12-14T00:00Z "
                     "(default: the next full hour)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", show_default=False,
                     help="The keeper's data directory (default: as wattmesh init): its "
                     "household key is used, or made there."),
    ] = None,
) -> None:  # fmt: skip
    """Start a community file with your own household as its first member.

    Example: ``wattmesh community new elm-street --out street.toml``, then send the file
    to your neighbours; each runs ``wattmesh init --community street.toml`` and sends you
    the stanza it prints, and you add it with ``wattmesh community add``.
    """
    from wattmesh.exchange.community_file import MemberSpec, community_template
    from wattmesh.settlement.keys import generate_key, peer_id_of, read_key_file, save_key

    if out.exists():
        fail(f"--out: {out} exists already; choose another name (or add to it)", code=1)
    d = data_dir if data_dir is not None else default_data_dir()
    key_file = d / DEFAULT_FILES["key"]
    try:
        if key_file.exists():
            key, made = read_key_file(key_file, "household key"), False
        else:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            key, made = generate_key(), True
            save_key(key_file, key)
        text = community_template(name, _start(start), MemberSpec(peer_id_of(key), bmax))
        write_atomic(out, text.encode())
    except WattmeshError as exc:
        fail(str(exc), code=1)
    except OSError as exc:
        fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}", code=1)
    typer.echo(f"{'created' if made else 'kept':<9}{key_file} (your household key)")
    typer.echo(f"created  {out}, with you ({peer_id_of(key)}) as its first member")
    typer.echo("next: send it to your neighbours; add the stanza each one's `wattmesh init "
               f"--community {out.name}` prints with `wattmesh community add {out}`; "
               "once everyone is in, send the final file to all and run wattmesh init")


@community_app.command()
def add(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The community file.")],
    peer_id: Annotated[str, typer.Option(help="The household's peer id (from its init).")],
    bmax: Bmax,
    name: Annotated[
        str | None, typer.Option(show_default=False, help="A display name, e.g. 'No. 5'.")
    ] = None,
    money: Annotated[int, typer.Option(min=0, help="Opening money, nano-currency.")] = 0,
    energy: Annotated[int, typer.Option(min=0, help="Opening energy, Wh.")] = 0,
    storage: Annotated[bool, typer.Option("--storage", help="It provides storage.")] = False,
    meter: Annotated[
        list[str] | None,
        typer.Option(metavar="PEER_ID", show_default=False,
                     help="A meter's peer id (wattmesh meter keygen); repeat for more."),
    ] = None,
) -> None:  # fmt: skip
    """Add a household to a community file (before anyone has a ledger from it).

    Example: ``wattmesh community add street.toml --peer-id 12D3KooW... --bmax 8000
    --name 'No. 5'``. Every other line and comment of the file stays as it was.
    """
    from wattmesh.exchange.community_file import CommunityError, MemberSpec, MeterSpec, add_member

    try:
        text = file.read_text()
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}", code=1)
    try:
        member = MemberSpec(peer_id, bmax, money=money, energy=energy, storage=storage,
                            name=name, meters=tuple(MeterSpec(m) for m in meter or ()))  # fmt: skip
        write_atomic(file, add_member(text, member).encode())
    except CommunityError as exc:
        fail(f"{file}: {exc}", code=1)
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror or exc}", code=1)
    typer.echo(f"added {name or peer_id} to {file}")
