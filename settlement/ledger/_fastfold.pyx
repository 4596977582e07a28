# cython: language_level=3
"""The ledger's fast path for trades, compiled (used by ``store.Ledger``'s append and by
``verify``).

Contract
--------
:func:`append_trades` takes the items of a batch from ``start`` on and folds, in compiled
code, the run of *clean* trades it finds there: for each it applies exactly what
``fold.LedgerState.apply`` and its trade rule would (the balances, ``seq``, ``ts`` and
``first_trade``), writes the canonical body (the exact trade keyset, every value a plain
``str`` or ``int`` in range, so ``orjson.dumps`` with sorted keys is the canonical form,
and written directly in C when the names are plain ASCII),
chains its hash (:func:`chain_hash`) and adds its row and its body (the append makes
its :class:`LedgerEntry` only when asked: ``schema.WrittenEntries``). It stops, before any
change for that item, at the first item that is anything else: another kind, a field
missing, extra or out of range, an unknown member, a trade with itself, a price outside the genesis
bounds, a balance that would go negative, above Bmax or out of range, an obligation left
open (a reading's grid entry, a storage group), or the first entry of a ledger.
:func:`verify_trade` does the same for one stored trade while a file is verified. The
Python fold then takes what they leave, with its own checks and error messages: it stays
the one reference, and ``tests/settlement/test_ledger_fastfold.py`` holds the two
together.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcpy

import orjson

from _native cimport wm_sha256_bytes  # matching/_native.pxd

from .schema import I64, KEYSETS, MAX_NAME

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    long long PyLong_AsLongLong(object v) except? -1

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Decimal digits of v at o; returns the end. */
    static char* wm_put_int(char* o, long long v) {
        char tmp[24];
        int n = 0;
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        do { tmp[n++] = (char)(48 + u % 10); u /= 10; } while (u);
        if (v < 0) *o++ = 45;  /* '-' */
        while (n) *o++ = tmp[--n];
        return o;
    }
    /* Whether s is printable ASCII without a quote (0x22) or backslash (0x5c): then its
       JSON string is the characters themselves between quotes, as orjson writes it. */
    static int wm_plain(const char* s, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c < 0x20 || c > 0x7e || c == 0x22 || c == 0x5c) return 0;
        }
        return 1;
    }
    static char* wm_put_str(char* o, const char* s, Py_ssize_t n) {
        *o++ = 0x22; memcpy(o, s, (size_t)n); o += n; *o++ = 0x22;
        return o;
    }
    static char* wm_put_lit(char* o, const char* s) {
        size_t n = strlen(s); memcpy(o, s, n); return o + n;
    }
    """
    char* wm_put_int(char* o, long long v) nogil
    int wm_plain(const char* s, Py_ssize_t n) nogil
    char* wm_put_str(char* o, const char* s, Py_ssize_t n) nogil
    char* wm_put_lit(char* o, const char* s) nogil

_DUMPS = orjson.dumps
_LOADS = orjson.loads
_SORTED = orjson.OPT_SORT_KEYS
_TRADE_KEYS = KEYSETS["trade"]

# The longest body _plain_trade_bytes writes: four names of MAX_NAME bytes, three
# integers of at most 20 characters and the keys. A C constant, so checked against
# schema.MAX_NAME here: a longer name there must grow the buffer too.
cdef enum:
    NAME_BYTES = 128
    TRADE_BUF = 4 * NAME_BYTES + 3 * 20 + 96

if MAX_NAME != NAME_BYTES:
    raise ImportError(f"_fastfold: NAME_BYTES is {NAME_BYTES}, schema.MAX_NAME {MAX_NAME}")


cdef bytes _plain_trade_bytes(str ask, str bid, str buyer, object interval, object price,
                              object qty, str seller):
    """The canonical bytes of a trade body whose names are plain (printable ASCII, no
    quote or backslash), written directly: exactly what ``orjson.dumps`` with sorted keys
    gives (a property test holds them together). None for any other name: orjson then
    writes it, escapes included."""
    cdef char buf[TRADE_BUF]
    cdef char* o = buf
    # Non-ASCII names (and lone surrogates, which have no UTF-8) are left to orjson.
    if not (PyUnicode_IS_ASCII(ask) and PyUnicode_IS_ASCII(bid) and PyUnicode_IS_ASCII(buyer)
            and PyUnicode_IS_ASCII(seller)):
        return None
    cdef Py_ssize_t na = PyUnicode_GET_LENGTH(ask), nb = PyUnicode_GET_LENGTH(bid)
    cdef Py_ssize_t nbu = PyUnicode_GET_LENGTH(buyer), ns = PyUnicode_GET_LENGTH(seller)
    cdef const char* a = <const char*>PyUnicode_DATA(ask)
    cdef const char* b = <const char*>PyUnicode_DATA(bid)
    cdef const char* bu = <const char*>PyUnicode_DATA(buyer)
    cdef const char* se = <const char*>PyUnicode_DATA(seller)
    if (na > MAX_NAME or nb > MAX_NAME or nbu > MAX_NAME or ns > MAX_NAME
            or not (wm_plain(a, na) and wm_plain(b, nb) and wm_plain(bu, nbu)
                    and wm_plain(se, ns))):
        return None
    o = wm_put_lit(o, '{"ask":')
    o = wm_put_str(o, a, na)
    o = wm_put_lit(o, ',"bid":')
    o = wm_put_str(o, b, nb)
    o = wm_put_lit(o, ',"buyer":')
    o = wm_put_str(o, bu, nbu)
    o = wm_put_lit(o, ',"interval":')
    o = wm_put_int(o, PyLong_AsLongLong(interval))
    o = wm_put_lit(o, ',"price":')
    o = wm_put_int(o, PyLong_AsLongLong(price))
    o = wm_put_lit(o, ',"qty":')
    o = wm_put_int(o, PyLong_AsLongLong(qty))
    o = wm_put_lit(o, ',"seller":')
    o = wm_put_str(o, se, ns)
    o[0] = b'}'
    return PyBytes_FromStringAndSize(buf, o + 1 - buf)


cpdef bytes chain_hash(bytes prev, long long seq, long long ts, bytes kind, bytes body):
    """sha256(prev || b'[seq,ts,"kind",body]') for a body already in canonical form and a
    plain kind: ``schema.entry_hash`` (the definition), without building the list. The one
    form every path hashes with: append, the compiled trade fold and verify."""
    if prev is None or kind is None or body is None:  # typed bytes arguments admit None
        raise TypeError("chain_hash: prev, kind and body must be bytes, not None")
    cdef Py_ssize_t nk = PyBytes_GET_SIZE(kind), nbody = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t need = PyBytes_GET_SIZE(prev) + nk + nbody + 64
    cdef char small[1024]
    cdef bytearray big = None
    cdef char* buf = small
    cdef char* o
    cdef unsigned char digest[32]
    if need > 1024:
        big = bytearray(need)
        buf = big
    o = buf
    memcpy(o, PyBytes_AS_STRING(prev), PyBytes_GET_SIZE(prev))
    o += PyBytes_GET_SIZE(prev)
    o[0] = b'['
    o = wm_put_int(o + 1, seq)
    o[0] = b','
    o = wm_put_int(o + 1, ts)
    o[0] = b','
    o[1] = b'"'
    memcpy(o + 2, PyBytes_AS_STRING(kind), nk)
    o += 2 + nk
    o[0] = b'"'
    o[1] = b','
    memcpy(o + 2, PyBytes_AS_STRING(body), nbody)
    o += 2 + nbody
    o[0] = b']'
    wm_sha256_bytes(<unsigned char*>buf, o + 1 - buf, digest)
    return PyBytes_FromStringAndSize(<char*>digest, 32)


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
    body_bytes = _plain_trade_bytes(ask, bid, buyer, interval, price, qty, seller)
    if body_bytes is None:
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
                  list bodies):
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
        h = chain_hash(prev, seq, ets, b"trade", body_bytes)
        rows.append((seq, ets, "trade",
                     PyUnicode_DecodeUTF8(PyBytes_AS_STRING(body_bytes),
                                          PyBytes_GET_SIZE(body_bytes), NULL),
                     prev, h))
        bodies.append(body)
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
