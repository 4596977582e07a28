"""Records, canonical bytes, signatures and the ledger: the truth of who owns what."""

from .canonical import CanonicalError, canonical, record_id, sha256_hex
from .keys import (
    generate_key,
    load_key,
    peer_id,
    peer_id_of,
    public_key_from_peer_id,
    save_key,
    sign,
    verify,
)
from .records import (
    Account,
    Cancel,
    MarketSpec,
    Meter,
    Order,
    Reading,
    RecordError,
    Trade,
    parse_record,
    verify_signature,
)

__all__ = [
    "Account",
    "Cancel",
    "CanonicalError",
    "MarketSpec",
    "Meter",
    "Order",
    "Reading",
    "RecordError",
    "Trade",
    "canonical",
    "generate_key",
    "load_key",
    "parse_record",
    "peer_id",
    "peer_id_of",
    "public_key_from_peer_id",
    "record_id",
    "save_key",
    "sha256_hex",
    "sign",
    "verify",
    "verify_signature",
]
