"""Which kind of log a file is, read from its first line alone, so that `wattmesh replay`
can choose its path without loading the node's modules: a node log (exchange/replay/
node_log.py) starts with a community line; anything else is an order log."""

from __future__ import annotations

import os
from typing import Any

import orjson

__all__ = ["CLOSE_LINE", "COMMUNITY_LINE", "is_node_log"]

COMMUNITY_LINE = "community"
CLOSE_LINE = "close"
_FIRST_LINE_MAX = 16 << 20  # a community line is far shorter, even with a thousand members


def is_node_log(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` starts (after blank lines) with a community line."""
    with open(path, "rb") as fp:
        while raw := fp.readline(_FIRST_LINE_MAX):
            if raw.strip():
                return line_type(raw.removeprefix(b"\xef\xbb\xbf")) == COMMUNITY_LINE
    return False


def line_type(raw: bytes) -> Any:
    """The ``type`` of a JSON object line; None for anything else."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return d.get("type") if type(d) is dict else None
