"""Canonical JSON bytes, the only bytes that are ever hashed or signed.

``canonical(obj)`` is ``orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)`` restricted to str,
int, bool, None, list and dict with str keys (docs/design.md, "Conventions"). Everything else,
floats above all, is refused with a :class:`CanonicalError` naming where the bad value is.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from wattmesh.settlement.errors import WattmeshError

__all__ = ["CanonicalError", "canonical", "record_id", "sha256_hex"]

# orjson refuses containers nested this deep or deeper ("Recursion limit reached").
MAX_DEPTH = 255
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1  # orjson's own range: signed 64-bit below zero, unsigned above

# PASSTHROUGH_SUBCLASS makes orjson refuse str subclasses as keys and values.
_OPTION = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
_dumps = orjson.dumps
_EncodeError = orjson.JSONEncodeError
# Exact types only: subclasses (IntEnum, str subclasses) are refused, because their repr,
# equality or future orjson handling could differ from the plain value they stand for.
_SCALARS = frozenset({str, int, bool, type(None)})
_all_scalars = _SCALARS.issuperset


class CanonicalError(WattmeshError, ValueError):
    """A value that has no canonical JSON form; the message starts with its path."""


def canonical(obj: Any) -> bytes:
    """Return the canonical JSON bytes of ``obj`` or raise :class:`CanonicalError`."""
    # Hot path: a flat dict of scalars (an order body) is checked by one C-level set test;
    # anything else by a yes/no walk. Paths are only built (by _explain) once we know
    # something is wrong, so valid input pays for no string formatting. Dict keys are left
    # to orjson, which refuses non-str keys and (with PASSTHROUGH_SUBCLASS) str subclasses.
    if (type(obj) is dict and _all_scalars(map(type, obj.values()))) or _ok_guarded(obj):
        try:
            return _dumps(obj, option=_OPTION)
        except _EncodeError as exc:  # key type, int out of range, lone surrogate, too deep
            _explain(obj, "$", 1)
            raise CanonicalError(f"$: {exc}") from exc
    _explain(obj, "$", 1)
    raise CanonicalError(f"$: cannot be encoded as canonical JSON: {obj!r:.80}")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def record_id(body: dict[str, Any]) -> str:
    """The id of a record body: hex SHA-256 of its canonical bytes."""
    return hashlib.sha256(canonical(body)).hexdigest()


def _ok_guarded(obj: Any) -> bool:
    try:
        return _ok(obj)
    except RecursionError:  # a cycle, or nesting far beyond what orjson accepts anyway
        return False


def _ok(obj: Any) -> bool:
    """True if every value in ``obj`` has an allowed type (keys and ranges: orjson's job)."""
    t = type(obj)
    if t is dict:
        values = obj.values()
    elif t is list:
        values = obj
    else:
        return t in _SCALARS
    if _all_scalars(map(type, values)):
        return True
    for v in values:
        tv = type(v)
        if tv in _SCALARS or ((tv is dict or tv is list) and _ok(v)):
            continue
        return False
    return True


def _explain(obj: Any, path: str, depth: int) -> None:
    """Raise CanonicalError for the first bad value under ``obj``; return if none found."""
    t = type(obj)
    if t is dict or t is list:
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"{path}: nested deeper than {MAX_DEPTH - 1} levels (a cycle?)")
        if t is list:
            for i, v in enumerate(obj):
                _explain(v, f"{path}[{i}]", depth + 1)
            return
        for k, v in obj.items():
            if type(k) is not str:
                raise CanonicalError(
                    f"{path}: object key {k!r:.40} ({type(k).__name__}) is not a str"
                )
            _explain(v, _child(path, k), depth + 1)
        return
    if t is str:
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError(
                f"{path}: str {obj!r:.40} is not valid UTF-8 (lone surrogate)"
            ) from None
        return
    if t is int:
        if not INT_MIN <= obj <= INT_MAX:
            raise CanonicalError(
                f"{path}: int {obj} is outside the range orjson encodes, [-2**63, 2**64-1]"
            )
        return
    if t is bool or obj is None:
        return
    if t is float:
        raise CanonicalError(f"{path}: float {obj!r} is not allowed in canonical JSON")
    hint = " (use a list)" if t is tuple else ""
    raise CanonicalError(
        f"{path}: {t.__name__} is not allowed in canonical JSON{hint}; "
        "only str, int, bool, None, list and dict with str keys are"
    )


def _child(path: str, key: str) -> str:
    # $.name for plain keys, $['odd key'] otherwise, so a path always reads back unambiguously.
    if key.isidentifier() and key.isascii():
        return f"{path}.{key}"
    return f"{path}[{key!r:.40}]"
