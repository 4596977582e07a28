"""Where a node keeps its files and what it listens on by default (docs/node.md, "The data
directory"). Kept apart from :mod:`.config`, which validates node.toml and brings the
community file, keys and ledger with it, so that a command that only needs a default
(``wattmesh --help``, ``wattmesh bot``) starts without loading them."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_API_LISTEN", "DEFAULT_FILES", "DEFAULT_LISTEN", "NODE_TOML",
           "default_data_dir"]  # fmt: skip

NODE_TOML = "node.toml"
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"
DEFAULT_API_LISTEN = "127.0.0.1:8480"  # loopback: only this machine reaches the API
DEFAULT_FILES = {
    "community": "community.toml",
    "key": "household.key",
    "ledger": "ledger.sqlite",
    "store": "messages.sqlite",
}


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/wattmesh``, or ``~/.local/share/wattmesh`` (XDG Base Directory:
    a relative XDG_DATA_HOME is ignored)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "wattmesh"
