"""Records, canonical bytes, signatures and the ledger: the truth of who owns what.

The names below are the package's public surface. Those of ``keys`` and ``records`` load on
first use (PEP 562), so importing one module of the package (``settlement.errors``, say)
does not load the Ed25519 keys (``cryptography``) and every record with it: the command
line starts faster. ``canonical`` loads at once: it is small, and its function must not
be shadowed by its module's name.
"""

from __future__ import annotations

import importlib
from typing import Any

from .canonical import CanonicalError, canonical, record_id, sha256_hex

# Where each lazily loaded name lives: the one list of them (__all__ is made from it).
_HOMES = {
    "keys": ("generate_key", "load_key", "peer_id", "peer_id_of", "public_key_from_peer_id",
             "save_key", "sign", "verify"),
    "records": ("Account", "Cancel", "MarketSpec", "Meter", "Order", "Reading", "RecordError",
                "Trade", "parse_record", "verify_signature"),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = ["CanonicalError", "canonical", "record_id", "sha256_hex", *sorted(_HOME_OF)]


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
