"""Which kind of log a file is, read from its first line alone, so that `wattmesh replay`
can choose its path without loading the node's modules: a node log (exchange/replay/
node_log.py) starts with a community line; anything else is an order log."""

from __future__ import annotations

import io
import os
from typing import IO, Any

import orjson

__all__ = ["CLOSE_LINE", "COMMUNITY_LINE", "ReadAgain", "is_node_log", "read_kind"]

COMMUNITY_LINE = "community"
CLOSE_LINE = "close"
_FIRST_LINE_MAX = 16 << 20  # a community line is far shorter, even with a thousand members


def is_node_log(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` starts (after blank lines) with a community line."""
    with open(path, "rb") as fp:
        return read_kind(fp)[0]


def read_kind(fp: IO[bytes]) -> tuple[bool, bytes]:
    """Read ``fp`` up to its first line that is not blank: whether that line starts a node
    log, and the bytes read. A pipe cannot be read twice: :class:`ReadAgain` gives those
    bytes back ahead of the rest."""
    head = []
    while raw := fp.readline(_FIRST_LINE_MAX):
        head.append(raw)
        if raw.strip():
            return line_type(raw.removeprefix(b"\xef\xbb\xbf")) == COMMUNITY_LINE, b"".join(head)
    return False, b"".join(head)


class ReadAgain(io.RawIOBase):
    """A binary stream of ``head`` and then the rest of ``rest``: a pipe's log after
    :func:`read_kind` has read its first line."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(b)  # type: ignore[attr-defined]

    def close(self) -> None:
        self._rest.close()
        super().close()


def line_type(raw: bytes) -> Any:
    """The ``type`` of a JSON object line; None for anything else."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return d.get("type") if type(d) is dict else None
