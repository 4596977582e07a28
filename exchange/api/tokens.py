"""Who may use a node's API: bearer tokens, one-time login codes, and page sessions.

Two token files live in the data directory, each mode 0600 (docs/api.md, "Who may do what"):

- ``api-token``: full access, reads and writes (made by ``wattmesh init``, rotated by
  ``wattmesh api token --rotate``);
- ``api-token-read``: reads only, for an auditor or a second screen (made on demand by
  ``wattmesh api token --read-only``).

The node re-reads a file when it changes, so a rotation takes effect without a restart,
and a changed token file also ends every page session and unused login code: whoever
had the old token loses what they opened with it.
The web page never carries a token in a URL: the node prints a one-time login code (and
``wattmesh api login-code`` asks the node for a fresh one), the page exchanges it (or a
token typed into its form) for an HttpOnly, SameSite=Strict session cookie, and every
write from the page also carries the session's CSRF token in a header.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from wattmesh.exchange.atomic_file import write_atomic

__all__ = [
    "READ",
    "READ_TOKEN_FILE",
    "TOKEN_FILE",
    "WRITE",
    "Access",
    "Sessions",
    "Tokens",
    "ensure_token",
    "rotate_token",
]

TOKEN_FILE = "api-token"
READ_TOKEN_FILE = "api-token-read"
WRITE, READ = "write", "read"  # what a credential may do; WRITE includes READ
LOGIN_CODE_SECONDS = 600  # a login code is good for ten minutes, once
SESSION_SECONDS = 7 * 24 * 3600
MAX_LOGIN_CODES = 8  # outstanding codes; the oldest goes first
MAX_SESSIONS = 64


def _token_path(data_dir: Path, read_only: bool) -> Path:
    return Path(data_dir) / (READ_TOKEN_FILE if read_only else TOKEN_FILE)


def _write_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    write_atomic(path, (token + "\n").encode(), mode=0o600)
    return token


def ensure_token(data_dir: str | os.PathLike[str], *, read_only: bool = False) -> str:
    """The token in the data directory (full, or read-only), made first if missing."""
    path = _token_path(Path(data_dir), read_only)
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    return _write_token(path)


def rotate_token(data_dir: str | os.PathLike[str], *, read_only: bool = False) -> str:
    """Replace the token with a new one; the old one stops working at once."""
    return _write_token(_token_path(Path(data_dir), read_only))


class Tokens:
    """The data directory's tokens, re-read whenever a file changes. ``generation``
    counts the changes of either file's token after the first read."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self._seen: dict[str, tuple[tuple[int, int, int], str | None]] = {}
        self.generation = 0
        self.refresh()

    def refresh(self) -> int:
        """Re-read a token file that changed (a stat each); the generation."""
        for read_only in (False, True):
            self._current(read_only)
        return self.generation

    def _current(self, read_only: bool) -> str | None:
        path = _token_path(self.data_dir, read_only)
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)  # a rotation is a new file
        except FileNotFoundError:
            stamp, token = (0, 0, 0), None
        else:
            cached = self._seen.get(path.name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            token = path.read_text().strip() or None
        cached = self._seen.get(path.name)
        if cached is not None and cached[1] != token:
            self.generation += 1
        self._seen[path.name] = (stamp, token)
        return token

    def access_of(self, token: str) -> str | None:
        """WRITE, READ, or None for a token that is neither (compared in constant time)."""
        given = token.encode()
        for read_only, access in ((False, WRITE), (True, READ)):
            current = self._current(read_only)
            if current is not None and hmac.compare_digest(given, current.encode()):
                return access
        return None


@dataclass(frozen=True)
class Access:
    """A request's credential: what it may do, and the key its rate is counted under."""

    level: str  # WRITE or READ
    key: str  # "token:<first 8 chars of its hash>" or "session:<id prefix>"
    csrf: str | None = None  # a page session's CSRF token: writes must echo it


@dataclass
class _Session:
    level: str
    csrf: str
    expires: float


class Sessions:
    """One-time login codes and the page sessions they open (in memory: a restarted node
    asks the household to log in again)."""

    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._codes: dict[str, tuple[str, float]] = {}  # code -> (level, expires)
        self._sessions: dict[str, _Session] = {}

    def new_code(self, level: str = WRITE) -> str:
        """A fresh login code like ``K7QX-M2PD``, good once within ten minutes."""
        now = self._clock()  # type: ignore[operator]
        self._codes = {c: v for c, v in self._codes.items() if v[1] > now}
        while len(self._codes) >= MAX_LOGIN_CODES:
            self._codes.pop(next(iter(self._codes)))
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
        raw = "".join(secrets.choice(alphabet) for _ in range(8))
        code = f"{raw[:4]}-{raw[4:]}"
        self._codes[code] = (level, now + LOGIN_CODE_SECONDS)
        return code

    def redeem(self, code: str) -> str | None:
        """The level of a valid, unused code (then used up), else None."""
        entry = self._codes.pop(code.strip().upper(), None)
        if entry is None or entry[1] <= self._clock():  # type: ignore[operator]
            return None
        return entry[0]

    def open(self, level: str) -> tuple[str, str]:
        """A new session of ``level``: (session id for the cookie, CSRF token)."""
        now = self._clock()  # type: ignore[operator]
        self._sessions = {s: v for s, v in self._sessions.items() if v.expires > now}
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self._sessions[sid] = _Session(level, csrf, now + SESSION_SECONDS)
        return sid, csrf

    def access_of(self, sid: str) -> Access | None:
        s = self._sessions.get(sid)
        if s is None or s.expires <= self._clock():  # type: ignore[operator]
            return None
        return Access(s.level, f"session:{sid[:8]}", s.csrf)

    def close(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def revoke_all(self) -> None:
        """End every session and forget every unused code (a token changed)."""
        self._codes.clear()
        self._sessions.clear()
