"""The matching engine: a continuous double auction and a call auction under Energo caps.

    from wattmesh.matching import Accounts, Book, Markets, CallAuction, BID, ASK

See docs/matching.md for the rules, the per-order and batch APIs, and examples.
"""

from wattmesh.matching._engine import (
    ASK,
    BID,
    CANCEL,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    MAX_ACCOUNT_OWNER,
    MAX_PRICE,
    MAX_QTY,
    REDUCE,
    STP_CANCEL_INCOMING,
    STP_CANCEL_RESTING,
    STP_NONE,
    Accounts,
    Book,
    CallAuction,
    Markets,
)
from wattmesh.matching.types import (
    BatchResult,
    Clearing,
    ClearingArrays,
    Fill,
    Quote,
    RestingOrder,
)

__all__ = [
    "ASK",
    "BID",
    "CANCEL",
    "FOK",
    "GTC",
    "IOC",
    "LIMIT",
    "MARKET",
    "MAX_ACCOUNT_OWNER",
    "MAX_PRICE",
    "MAX_QTY",
    "REDUCE",
    "STP_CANCEL_INCOMING",
    "STP_CANCEL_RESTING",
    "STP_NONE",
    "Accounts",
    "Book",
    "CallAuction",
    "Markets",
    "BatchResult",
    "Clearing",
    "ClearingArrays",
    "Fill",
    "Quote",
    "RestingOrder",
]
