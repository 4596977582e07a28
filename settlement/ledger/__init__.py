"""The hash-linked ledger: one SQLite file per node (docs/design.md, "Ledger"; docs/ledger.md).

Table ``entries(seq INTEGER PRIMARY KEY, ts, kind, body, prev, hash)``: ``seq`` counts from 1
with no gaps, ``body`` is the canonical JSON text of the body, ``prev`` and ``hash`` are
32 raw bytes (BLOB; shown as hex by the CLI). The hashed bytes of an entry are::

    prev (32 raw bytes) || canonical([seq, ts, kind, body])

where the first ``prev`` is 32 zero bytes. Balances (energy Wh, money nano) are a fold of
the entries: every entry is turned into *postings* ``(account, dE, dM)`` that sum to zero,
with external counterparties (``@grid``, ``@bank``, ``@meters``) standing for the world
outside the community. Member and fund balances may never go negative; external accounts
may. A cache of the fold (``balances``, ``members``, ``meters``, ``meta``) is written in the
same SQLite transaction as the entries, so one batch is all-or-nothing, crash included.

The package, one module a part: ``schema`` (entry kinds, fields, accounts, the entry hash),
``fold`` (each kind's rules and the balances they fold to), ``store`` (SQLite and
:class:`Ledger`), ``verify`` (checking a file from its rows) and ``proofs`` (inclusion
proofs). Import from here: the modules are its layout, not its interface. :class:`Ledger`
loads on first use (PEP 562): it brings the fold, the keys and the certificates, which a
command that only names a kind or checks a proof does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .proofs import PROOF_FIELDS, check_proof, parse_proof
from .schema import (
    EXTERNAL,
    FUNDS,
    KINDS,
    MAX_NAME,
    STORAGE_FUNDS,
    ZERO_HASH,
    LedgerEntry,
    LedgerError,
    VerifyResult,
    entry_hash,
    parse_head,
)

if TYPE_CHECKING:
    from .store import Ledger

__all__ = [
    "EXTERNAL",
    "FUNDS",
    "STORAGE_FUNDS",
    "KINDS",
    "MAX_NAME",
    "ZERO_HASH",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "PROOF_FIELDS",
    "VerifyResult",
    "check_proof",
    "entry_hash",
    "parse_head",
    "parse_proof",
]


def __getattr__(name: str) -> Any:
    if name == "Ledger":
        from .store import Ledger

        globals()["Ledger"] = Ledger
        return Ledger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
