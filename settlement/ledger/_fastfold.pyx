# cython: language_level=3
"""The ledger's fast path for trades, compiled (used by ``store.Ledger``'s append and by
``verify``).

Contract
--------
:func:`append_trades` takes the items of a batch from ``start`` on and folds, in compiled
code, the run of *clean* trades it finds there: for each it applies exactly what
``fold.LedgerState.apply`` and its trade rule would (the balances, ``seq``, ``ts`` and
``first_trade``), writes the canonical body (the exact trade keyset, every value a plain
``str`` or ``int`` in range, so ``orjson.dumps`` with sorted keys is the canonical form),
chains its hash and adds its row and :class:`LedgerEntry`. It stops, before any change for
that item, at the first item that is anything else: another kind, a field missing, extra
or out of range, an unknown member, a trade with itself, a price outside the genesis
bounds, a balance that would go negative, above Bmax or out of range, an obligation left
open (a reading's grid entry, a storage group), or the first entry of a ledger.
:func:`verify_trade` does the same for one stored trade while a file is verified. The
Python fold then takes what they leave, with its own checks and error messages: it stays
the one reference, and ``tests/settlement/test_ledger_fastfold.py`` holds the two
together.
"""

import hashlib

import orjson

from .schema import I64, KEYSETS, MAX_NAME, LedgerEntry

_SHA256 = hashlib.sha256
_DUMPS = orjson.dumps
_LOADS = orjson.loads
_SORTED = orjson.OPT_SORT_KEYS
_TRADE_KEYS = KEYSETS["trade"]


cdef bytes _fold_trade(st, object body, long long seq, object ets, bytes stored=None):
    """Apply one trade if it is clean (and, with ``stored``, its canonical bytes are
    exactly those) and return its canonical bytes; None (nothing changed) if the Python
    fold must take it."""
    cdef object members = st.members
    cdef object bal = st.bal
    cdef object genesis = st.genesis
    cdef object buyer, seller, qty, price, bid, ask, interval, bx, by, mb, money
    cdef object ex, mx, ey, my
    cdef bytes body_bytes
    if (genesis is None or st.pending is not None or st.storage_group is not None
            or seq == 1):
        return None
    if type(body) is not dict or body.keys() != _TRADE_KEYS:
        return None
    if type(ets) is not int or ets < st.ts or ets > I64:
        return None
    buyer = body["buyer"]
    seller = body["seller"]
    qty = body["qty"]
    price = body["price"]
    bid = body["bid"]
    ask = body["ask"]
    interval = body["interval"]
    if (type(buyer) is not str or type(seller) is not str or buyer == seller
            or buyer not in members or seller not in members):
        return None
    if type(qty) is not int or not 0 < qty <= I64:
        return None
    if type(price) is not int or not genesis["price_min"] <= price <= genesis["price_max"]:
        return None
    if (type(bid) is not str or not 0 < len(bid) <= MAX_NAME
            or type(ask) is not str or not 0 < len(ask) <= MAX_NAME):
        return None
    if type(interval) is not int or interval < 0 or interval > I64:
        return None
    bx = bal.get(buyer)
    by = bal.get(seller)
    if bx is None or by is None:
        return None
    money = qty * price
    ex = bx[0] + qty
    mx = bx[1] - money
    ey = by[0] - qty
    my = by[1] + money
    mb = members[buyer]
    if mx < 0 or ey < 0 or ex < 0 or my < 0 or ex > mb[0]:
        return None
    if not (-I64 <= ex <= I64 and -I64 <= mx <= I64 and -I64 <= ey <= I64
            and -I64 <= my <= I64):
        return None
    try:  # a lone surrogate in a name has no canonical form: the Python fold says so
        body_bytes = _DUMPS(body, option=_SORTED)
    except orjson.JSONEncodeError:
        return None
    if stored is not None and body_bytes != stored:  # not in canonical form
        return None
    # Clean: apply it as the Python fold would.
    bal[buyer] = (ex, mx)
    bal[seller] = (ey, my)
    if not st.first_trade:
        st.first_trade = seq
    st.seq = seq
    st.ts = ets
    return body_bytes


def append_trades(st, list items, Py_ssize_t start, object now, bytes prev, list rows,
                  list entries):
    """Fold the clean trades of ``items`` from ``start`` on (see the module docstring);
    returns (the index of the first item not taken, the hash of the last entry taken)."""
    cdef Py_ssize_t i = start, n = len(items)
    cdef object item, kind, body, ets
    cdef long long seq
    cdef bytes body_bytes
    while i < n:
        item = items[i]
        if type(item) is not tuple:
            break
        if len(item) == 3:
            kind, body, ets = item
        elif len(item) == 2:
            kind, body = item
            ets = now
        else:
            break
        if kind != "trade":
            break
        seq = st.seq + 1
        body_bytes = _fold_trade(st, body, seq, ets)
        if body_bytes is None:
            break
        h = _SHA256(b'%s[%d,%d,"trade",%s]' % (prev, seq, ets, body_bytes)).digest()
        rows.append((seq, ets, "trade", body_bytes.decode(), prev, h))
        entries.append(LedgerEntry(seq, ets, "trade", body, prev, h))
        prev = h
        i += 1
    return i, prev


def verify_trade(st, long long seq, object ts, bytes body_b):
    """Fold one stored trade whose hash has been checked, if it is clean and its body is
    canonical; returns whether it did (if not, nothing changed: the Python fold takes
    it and says what is wrong)."""
    try:
        body = _LOADS(body_b)
    except orjson.JSONDecodeError:
        return False
    return _fold_trade(st, body, seq, ts, body_b) is not None
