"""The one base of wattmesh's errors.

Every error wattmesh raises on purpose (a bad record, a refused message, a wrong file, a
ledger that does not verify, a meter that cannot be read) is a :class:`WattmeshError`,
and its text is one line that names what is wrong. So the command line turns any of them
into ``wattmesh: error: ...`` in one place. Each error keeps its older base as well
(``ValueError``, ``ConnectionError``, ...) so code that caught those still does.

It lives in ``settlement`` because every part of wattmesh but the engine uses
``settlement``; the engine (``matching``) depends on nothing of ours and raises Python's
own ``ValueError`` for bad arguments.
"""

from __future__ import annotations

__all__ = ["RecordError", "WattmeshError"]


class WattmeshError(Exception):
    """Something wattmesh refuses or cannot do; ``str(exc)`` says what, in one line."""


class RecordError(WattmeshError, ValueError):
    """A record that does not validate. ``field`` names the culprit (None: the whole record).

    Re-exported by ``settlement.records``, its users' usual door; it lives here so that a
    rule that only raises it (``settlement.readings``) does not load the records and the
    keys they verify with."""

    def __init__(self, field: str | None, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)
