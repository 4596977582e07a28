"""``wattmesh api``: the node's API credentials (docs/api.md, "Who may do what").

``token`` prints (making it if missing) or rotates the full or read-only token of a data
directory; ``login-code`` asks the running node for a one-time login code for its page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattmesh.exchange.cli.terminal import command_group, fail
from wattmesh.exchange.node.defaults import default_data_dir
from wattmesh.settlement.errors import WattmeshError

api_app = command_group("The node's web page and API: tokens and login codes (docs/api.md).")

DataDir = Annotated[
    Path | None,
    typer.Option(metavar="DIR", show_default=False,
                 help="The node's data directory (default: as wattmesh init)."),
]  # fmt: skip


@api_app.command()
def token(
    data_dir: DataDir = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="The read-only token (an auditor, a screen).")
    ] = False,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Replace it: the old one stops working at once.")
    ] = False,
) -> None:
    """Print the API token of a data directory (made if missing; mode 0600).

    Example: ``curl -H "Authorization: Bearer $(wattmesh api token)"
    http://127.0.0.1:8480/api/v1/balance``
    """
    # The credentials' module (secrets, hmac) loads here, not for every command.
    from wattmesh.exchange.api.tokens import ensure_token, rotate_token

    target = data_dir if data_dir is not None else default_data_dir()
    if not target.is_dir():
        fail(f"no data directory {target}: run wattmesh init first", code=1)
    make = rotate_token if rotate else ensure_token
    try:
        typer.echo(make(target, read_only=read_only))
    except OSError as exc:
        fail(f"{target}: cannot write the token: {exc.strerror or exc}", code=1)


@api_app.command("login-code")
def login_code(
    data_dir: DataDir = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="A code for a page that may only read.")
    ] = False,
) -> None:
    """Ask the running node for a one-time login code for its web page (good once, for ten
    minutes), and print the page's address with it."""
    import httpx

    from wattmesh.exchange.api.tokens import ensure_token
    from wattmesh.exchange.node.config import load_node_config

    target = data_dir if data_dir is not None else default_data_dir()
    try:
        config = load_node_config(target)
    except WattmeshError as exc:
        fail(str(exc), code=1)
    address = config.api.address
    if address is None:
        fail(f"{target}/node.toml: [api] listen is \"off\"; the node serves no page", code=1)
    host, port = address
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        r = httpx.post(f"{url}/api/v1/login-codes", timeout=5,
                       params={"read_only": "true"} if read_only else None,
                       headers={"authorization": f"Bearer {ensure_token(target)}"})  # fmt: skip
    except httpx.HTTPError as exc:
        fail(f"{url}: the node does not answer ({exc}); is `wattmesh node` running?", code=1)
    if r.status_code != 200:
        fail(f"{url}: the node refused: {r.text[:200]}", code=1)
    typer.echo(f"{url}/  login code {r.json()['code']}")
