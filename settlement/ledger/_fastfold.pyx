# cython: language_level=3
"""The ledger's fast path for trades and trade fees, compiled (used by ``store.Ledger``'s
append and by ``verify``).

Contract
--------
:func:`append_run` takes the items of a batch from ``start`` on and folds, in compiled
code, the run of *clean* trades and trade fees it finds there: for each it applies
exactly what ``fold.LedgerState.apply`` and its rule would (the balances, ``seq``, ``ts``
and ``first_trade``), writes the canonical body in C (the exact keyset, every value a
plain ``str`` or ``int`` in range and every name printable ASCII without a quote or
backslash, so the bytes are those ``orjson.dumps`` with sorted keys gives), chains its
hash (:func:`chain_hash`) and adds its six columns and its body (the append makes its
:class:`LedgerEntry` only when asked: ``schema.WrittenEntries``). It stops, before any
change for that item, at the first item that is anything else: another kind, a storage
fee, a field missing, extra or out of range, a name that needs escaping or is not ASCII,
an unknown member, a trade with itself, a price outside the genesis bounds, a balance
that would go negative, above Bmax or out of range, an obligation left open (a reading's
grid entry, a storage group), or the first entry of a ledger.

:func:`verify_run` walks stored rows the same way while a file is verified: a row whose
seq, link and hash hold and whose body is exactly the canonical layout of a clean trade or
trade fee (scanned in C, never parsed into a dict) is folded here; at the first row that
is anything else it stops and hands that row back, changing nothing for it. The Python
fold then takes what they leave, with its own checks and error messages: it stays the one
reference, and ``tests/settlement/test_ledger_fastfold.py`` holds the two together.
"""

from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_FromStringAndSize,
    PyByteArray_GET_SIZE,
)
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.list cimport PyList_Append
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_CheckExact
from libc.string cimport memcmp, memcpy

from _native cimport wm_sha256_bytes  # matching/_native.pxd

from .schema import MAX_NAME

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    object PyUnicode_New(Py_ssize_t size, unsigned int maxchar)
    bint PyLong_CheckExact(object v)
    long long PyLong_AsLongLongAndOverflow(object v, int* overflow)

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
    static char* wm_put_lit(char* o, const char* s) {
        size_t n = strlen(s); memcpy(o, s, n); return o + n;
    }
    /* The scanner of stored bodies: each step matches the next bytes of [*p, end) or
       fails (returns 0) without saying why; the Python fold says why. */
    static int wm_lit(const char** p, const char* end, const char* s) {
        size_t n = strlen(s);
        if ((size_t)(end - *p) < n || memcmp(*p, s, n) != 0) return 0;
        *p += n;
        return 1;
    }
    /* A plain name (see wm_plain) of 1 to max bytes, up to its closing quote (not taken). */
    static int wm_name(const char** p, const char* end, Py_ssize_t max,
                       const char** s, Py_ssize_t* n) {
        const char* q = *p;
        while (q < end) {
            unsigned char c = (unsigned char)*q;
            if (c == 0x22) break;
            if (c < 0x20 || c > 0x7e || c == 0x5c) return 0;
            q++;
        }
        if (q == end || q == *p || q - *p > max) return 0;
        *s = *p; *n = q - *p; *p = q;
        return 1;
    }
    /* A non-negative integer as orjson writes it (no sign, no leading zero), <= 2**63-1. */
    static int wm_uint(const char** p, const char* end, long long* v) {
        const char* q = *p;
        unsigned long long u = 0;
        int digits = 0;
        while (q < end && *q >= 48 && *q <= 57) {
            if (++digits > 19) return 0;
            u = u * 10 + (unsigned long long)(*q - 48);
            q++;
        }
        if (digits == 0 || (digits > 1 && **p == 48) || u > 9223372036854775807ULL) return 0;
        *v = (long long)u; *p = q;
        return 1;
    }
    /* A balance pair (energy, money) of exact ints in the 64-bit range. */
    static int wm_pair(PyObject* t, long long* e, long long* m) {
        int o1 = 0, o2 = 0;
        PyObject *a, *b;
        if (t == NULL || !PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2) return 0;
        a = PyTuple_GET_ITEM(t, 0);
        b = PyTuple_GET_ITEM(t, 1);
        if (!PyLong_CheckExact(a) || !PyLong_CheckExact(b)) return 0;
        *e = PyLong_AsLongLongAndOverflow(a, &o1);
        *m = PyLong_AsLongLongAndOverflow(b, &o2);
        return !o1 && !o2 && *e != LLONG_MIN && *m != LLONG_MIN;
    }
    /* An exact int in [0, 2**63-1]. */
    static int wm_i64(PyObject* v, long long* out) {
        int o = 0;
        if (v == NULL || !PyLong_CheckExact(v)) return 0;
        *out = PyLong_AsLongLongAndOverflow(v, &o);
        return !o && *out >= 0;
    }
    #define wm_add(a, b, r) __builtin_add_overflow(a, b, r)
    #define wm_sub(a, b, r) __builtin_sub_overflow(a, b, r)
    #define wm_mul(a, b, r) __builtin_mul_overflow(a, b, r)
    """
    char* wm_put_int(char* o, long long v) nogil
    int wm_plain(const char* s, Py_ssize_t n) nogil
    char* wm_put_lit(char* o, const char* s) nogil
    int wm_lit(const char** p, const char* end, const char* s) nogil
    int wm_name(const char** p, const char* end, Py_ssize_t mx, const char** s,
                Py_ssize_t* n) nogil
    int wm_uint(const char** p, const char* end, long long* v) nogil
    int wm_pair(PyObject* t, long long* e, long long* m)
    int wm_i64(PyObject* v, long long* out)
    bint wm_add(long long a, long long b, long long* r) nogil
    bint wm_sub(long long a, long long b, long long* r) nogil
    bint wm_mul(long long a, long long b, long long* r) nogil

# The longest line hashed here: prev, seq and ts, the kind, and a trade body of four
# names of MAX_NAME bytes, three integers of at most 19 digits and the keys. A C constant,
# so checked against schema.MAX_NAME here: a longer name there must grow the buffer too.
cdef enum:
    NAME_BYTES = 128
    LINE_BUF = 32 + 2 * 20 + 16 + 4 * NAME_BYTES + 3 * 20 + 96

if MAX_NAME != NAME_BYTES:
    raise ImportError(f"_fastfold: NAME_BYTES is {NAME_BYTES}, schema.MAX_NAME {MAX_NAME}")


cdef inline char* _line_head(char* o, const char* prev, long long seq, long long ts,
                             const char* kind, Py_ssize_t nk, Py_ssize_t nprev=32) noexcept:
    """``prev || [seq,ts,"kind",`` at o: the hashed line up to its body (``prev`` is a
    hash, 32 bytes, wherever a line is chained)."""
    memcpy(o, prev, nprev)
    o[nprev] = b'['
    o = wm_put_int(o + nprev + 1, seq)
    o[0] = b','
    o = wm_put_int(o + 1, ts)
    o[0] = b','
    o[1] = b'"'
    memcpy(o + 2, kind, nk)
    o += 2 + nk
    o[0] = b'"'
    o[1] = b','
    return o + 2


cpdef bytes chain_hash(bytes prev, long long seq, long long ts, bytes kind, bytes body):
    """sha256(prev || b'[seq,ts,"kind",body]') for a body already in canonical form and a
    plain kind: ``schema.entry_hash`` (the definition), without building the list. The one
    form every path hashes with: append, the compiled fold and verify."""
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
    o = _line_head(buf, PyBytes_AS_STRING(prev), seq, ts, PyBytes_AS_STRING(kind), nk,
                   PyBytes_GET_SIZE(prev))
    memcpy(o, PyBytes_AS_STRING(body), nbody)
    o += nbody
    o[0] = b']'
    wm_sha256_bytes(<unsigned char*>buf, o + 1 - buf, digest)
    return PyBytes_FromStringAndSize(<char*>digest, 32)


cdef class _Fold:
    """What the fold of a run reads and writes, held in C for the run: ``seq``, ``ts`` and
    ``first_trade`` are written back to the ``LedgerState`` when the run ends (``done``);
    the balances stay the state's own dict."""

    cdef object st
    cdef dict members, bal
    cdef object fees  # the account of the genesis fund "fees" (None: no fee here)
    cdef long long seq, ts, first_trade, price_min, price_max
    cdef bint usable

    def __cinit__(self, st):
        cdef object g = st.genesis
        cdef object seq = st.seq, ts = st.ts, first = st.first_trade
        self.st = st
        self.usable = False
        if (type(g) is not dict or st.pending is not None or st.storage_group is not None
                or type(st.members) is not dict or type(st.bal) is not dict):
            return
        if not (wm_i64(<PyObject*>seq, &self.seq) and self.seq >= 1
                and wm_i64(<PyObject*>ts, &self.ts)
                and wm_i64(<PyObject*>first, &self.first_trade)
                and wm_i64(PyDict_GetItem(g, "price_min"), &self.price_min)
                and wm_i64(PyDict_GetItem(g, "price_max"), &self.price_max)):
            return
        self.members = st.members
        self.bal = st.bal
        self.fees = st.funds.get("fees")
        self.usable = True

    cdef done(self):
        if self.usable and self.seq != self.st.seq:
            self.st.seq = self.seq
            self.st.ts = self.ts
            self.st.first_trade = self.first_trade

    cdef bint trade(self, str buyer, str seller, long long qty, long long price,
                    long long seq) except -1:
        """Apply one trade of plain values if the Python rule would take it (True), or
        change nothing (False)."""
        cdef PyObject* mb = PyDict_GetItem(self.members, buyer)
        cdef long long bmax, be, bm, se, sm, money, ex, mx, ey, my
        if qty <= 0 or price < self.price_min or price > self.price_max:
            return False
        if mb == NULL or PyDict_GetItem(self.members, seller) == NULL or buyer == seller:
            return False
        if not PyTuple_CheckExact(<object>mb) or PyTuple_GET_SIZE(<object>mb) != 2:
            return False
        if not (wm_i64(PyTuple_GET_ITEM(<object>mb, 0), &bmax)
                and wm_pair(PyDict_GetItem(self.bal, buyer), &be, &bm)
                and wm_pair(PyDict_GetItem(self.bal, seller), &se, &sm)):
            return False
        # Any overflow, negative or above Bmax: the Python rule refuses it, in its words.
        if (wm_mul(qty, price, &money) or wm_add(be, qty, &ex) or wm_sub(bm, money, &mx)
                or wm_sub(se, qty, &ey) or wm_add(sm, money, &my)):
            return False
        if mx < 0 or ey < 0 or ex < 0 or my < 0 or ex > bmax:
            return False
        self.bal[buyer] = (ex, mx)
        self.bal[seller] = (ey, my)
        if self.first_trade == 0:
            self.first_trade = seq
        return True

    cdef bint fee(self, str owner, long long amount, long long trade, long long seq) except -1:
        """Apply one trade fee (``trade`` an earlier seq, no ``interval``) into the fund
        "fees" if the Python rule would take it (True), or change nothing (False)."""
        cdef long long oe, om, fe, fm, m1, m2
        if (self.fees is None or amount < 1 or trade < 1 or trade >= seq
                or PyDict_GetItem(self.members, owner) == NULL or owner == self.fees):
            return False
        if not (wm_pair(PyDict_GetItem(self.bal, owner), &oe, &om)
                and wm_pair(PyDict_GetItem(self.bal, self.fees), &fe, &fm)):
            return False
        if wm_sub(om, amount, &m1) or wm_add(fm, amount, &m2):
            return False
        if oe < 0 or m1 < 0 or fe < 0 or m2 < 0:
            return False
        self.bal[owner] = (oe, m1)
        self.bal[self.fees] = (fe, m2)
        return True


cdef inline bint _exact_keys(dict body, Py_ssize_t n) noexcept:
    """Whether ``body`` has ``n`` keys, each a str and not a subclass of it: the keys the
    canonical form accepts (a str subclass equal to "ask" would pass the lookups below,
    and the reference refuses it)."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    if PyDict_Size(body) != n:
        return False
    while PyDict_Next(body, &pos, &key, &value):
        if not PyUnicode_CheckExact(<object>key):
            return False
    return True


cdef inline object _get(dict d, str key):
    """d[key], or None where it is missing (None is no plain value either)."""
    cdef PyObject* v = PyDict_GetItem(d, key)
    return None if v == NULL else <object>v


cdef inline bint _plain_name(object v, Py_ssize_t lo, const char** s, Py_ssize_t* n):
    """Whether v is an exact str of lo..MAX_NAME plain characters (see wm_plain)."""
    if not PyUnicode_CheckExact(v) or not PyUnicode_IS_ASCII(v):
        return False
    n[0] = PyUnicode_GET_LENGTH(v)
    s[0] = <const char*>PyUnicode_DATA(v)
    return lo <= n[0] <= NAME_BYTES and wm_plain(s[0], n[0])


cdef inline char* _put_name(char* o, const char* key, const char* s, Py_ssize_t n):
    o = wm_put_lit(o, key)
    o[0] = b'"'
    memcpy(o + 1, s, n)
    o[n + 1] = b'"'
    return o + n + 2


cdef object _ascii(const char* s, Py_ssize_t n):
    """A str of n ASCII bytes (checked plain by the caller)."""
    cdef object out = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(out), s, n)
    return out


def append_run(st, list items, Py_ssize_t start, object now, bytearray prev,
               list columns, list bodies):
    """Fold the clean trades and trade fees of ``items`` from ``start`` on (see the module
    docstring), adding each entry's six columns ``seq, ts, kind, body text, prev, hash``
    to ``columns`` (the hashes as ``bytearray``, see ``store._insert_entries``; ``prev``
    is the previous entry's) and its body to ``bodies``; returns (the index of the first
    item not taken, the hash of the last entry taken, as given or made here)."""
    cdef _Fold f = _Fold(st)
    cdef Py_ssize_t i = start, n = len(items), nk
    cdef object item, kind, body, ets_o, ask, bid, buyer, seller, owner, text
    cdef long long seq, ets, qty, price, interval, amount, trade
    cdef const char* s[4]
    cdef Py_ssize_t sl[4]
    cdef char line[LINE_BUF]
    cdef char* o
    cdef char* b0
    cdef bytearray h
    cdef unsigned char digest[32]
    if not f.usable or prev is None or PyByteArray_GET_SIZE(prev) != 32:
        return i, prev
    try:
        while i < n:
            item = items[i]
            if not PyTuple_CheckExact(item):
                break
            nk = PyTuple_GET_SIZE(item)
            if nk == 3:
                ets_o = <object>PyTuple_GET_ITEM(item, 2)
            elif nk == 2:
                ets_o = now
            else:
                break
            kind = <object>PyTuple_GET_ITEM(item, 0)
            body = <object>PyTuple_GET_ITEM(item, 1)
            if not PyUnicode_CheckExact(kind) or not PyDict_CheckExact(body):
                break
            if not wm_i64(<PyObject*>ets_o, &ets) or ets < f.ts:
                break
            seq = f.seq + 1
            if kind == "trade":
                if not _exact_keys(body, 7):
                    break
                ask = _get(body, "ask")
                bid = _get(body, "bid")
                buyer = _get(body, "buyer")
                seller = _get(body, "seller")
                if not (_plain_name(ask, 1, &s[0], &sl[0]) and _plain_name(bid, 1, &s[1], &sl[1])
                        and _plain_name(buyer, 1, &s[2], &sl[2])
                        and _plain_name(seller, 1, &s[3], &sl[3])
                        and wm_i64(PyDict_GetItem(body, "interval"), &interval)
                        and wm_i64(PyDict_GetItem(body, "price"), &price)
                        and wm_i64(PyDict_GetItem(body, "qty"), &qty)):
                    break
                if not f.trade(buyer, seller, qty, price, seq):
                    break
                b0 = _line_head(line, PyByteArray_AS_STRING(prev), seq, ets, "trade", 5)
                o = _put_name(b0, '{"ask":', s[0], sl[0])
                o = _put_name(o, ',"bid":', s[1], sl[1])
                o = _put_name(o, ',"buyer":', s[2], sl[2])
                o = wm_put_int(wm_put_lit(o, ',"interval":'), interval)
                o = wm_put_int(wm_put_lit(o, ',"price":'), price)
                o = wm_put_int(wm_put_lit(o, ',"qty":'), qty)
                o = _put_name(o, ',"seller":', s[3], sl[3])
                o[0] = b'}'
                o[1] = b']'
                kind = "trade"
            elif kind == "fee":
                if not _exact_keys(body, 3):
                    break
                owner = _get(body, "owner")
                if not (_plain_name(owner, 1, &s[0], &sl[0])
                        and wm_i64(PyDict_GetItem(body, "amount"), &amount)
                        and wm_i64(PyDict_GetItem(body, "trade"), &trade)):
                    break
                if not f.fee(owner, amount, trade, seq):
                    break
                b0 = _line_head(line, PyByteArray_AS_STRING(prev), seq, ets, "fee", 3)
                o = wm_put_int(wm_put_lit(b0, '{"amount":'), amount)
                o = _put_name(o, ',"owner":', s[0], sl[0])
                o = wm_put_int(wm_put_lit(o, ',"trade":'), trade)
                o[0] = b'}'
                o[1] = b']'
                kind = "fee"
            else:
                break
            wm_sha256_bytes(<unsigned char*>line, o + 2 - line, digest)
            h = PyByteArray_FromStringAndSize(<char*>digest, 32)
            text = _ascii(b0, o + 1 - b0)
            f.seq = seq
            f.ts = ets
            PyList_Append(columns, seq)
            PyList_Append(columns, ets_o)
            PyList_Append(columns, kind)
            PyList_Append(columns, text)
            PyList_Append(columns, prev)
            PyList_Append(columns, h)
            PyList_Append(bodies, body)
            prev = h
            i += 1
    finally:
        f.done()
    return i, prev


cdef inline bint _scan_trade(const char* p, const char* end, const char** s, Py_ssize_t* sl,
                             long long* interval, long long* price, long long* qty):
    """Whether [p, end) is exactly the canonical body of a trade with plain names and
    non-negative integers: the names' spans and the integers out."""
    return (wm_lit(&p, end, '{"ask":"') and wm_name(&p, end, NAME_BYTES, &s[0], &sl[0])
            and wm_lit(&p, end, '","bid":"') and wm_name(&p, end, NAME_BYTES, &s[1], &sl[1])
            and wm_lit(&p, end, '","buyer":"')
            and wm_name(&p, end, NAME_BYTES, &s[2], &sl[2])
            and wm_lit(&p, end, '","interval":') and wm_uint(&p, end, interval)
            and wm_lit(&p, end, ',"price":') and wm_uint(&p, end, price)
            and wm_lit(&p, end, ',"qty":') and wm_uint(&p, end, qty)
            and wm_lit(&p, end, ',"seller":"')
            and wm_name(&p, end, NAME_BYTES, &s[3], &sl[3])
            and wm_lit(&p, end, '"}') and p == end)


cdef inline bint _scan_fee(const char* p, const char* end, const char** s, Py_ssize_t* sl,
                           long long* amount, long long* trade):
    """Whether [p, end) is exactly the canonical body of a trade fee with a plain owner."""
    return (wm_lit(&p, end, '{"amount":') and wm_uint(&p, end, amount)
            and wm_lit(&p, end, ',"owner":"')
            and wm_name(&p, end, NAME_BYTES, &s[0], &sl[0])
            and wm_lit(&p, end, '","trade":') and wm_uint(&p, end, trade)
            and wm_lit(&p, end, '}') and p == end)


def verify_run(st, rows, bytes prev, long long expected, long long exp_seq,
               object seen_expect, list covered):
    """Walk ``rows`` (an iterator of ``seq, ts, kind, body, prev, hash`` with text as
    bytes) from entry ``expected`` on, folding the clean trades and trade fees (see the
    module docstring) as ``verify.verify_rows`` would: each one's hash goes to
    ``covered``, and is the ``seen_expect`` if its seq is ``exp_seq``. Returns (the first
    row not taken, or None at the end; then ``prev``, ``expected`` and ``seen_expect`` as
    they are after the rows taken)."""
    cdef _Fold f = _Fold(st)
    cdef object row, owner, buyer, seller
    cdef PyObject* seq_o
    cdef PyObject* ts_o
    cdef PyObject* kind_o
    cdef PyObject* body_o
    cdef PyObject* p_o
    cdef PyObject* h_o
    cdef long long seq, ts, qty, price, interval, amount, trade
    cdef const char* s[4]
    cdef Py_ssize_t sl[4]
    cdef const char* b
    cdef Py_ssize_t nb, nk
    cdef char line[LINE_BUF]
    cdef char* o
    cdef unsigned char digest[32]
    cdef bint is_trade
    row = next(rows, None)
    if not f.usable or prev is None or PyBytes_GET_SIZE(prev) != 32:
        return row, prev, expected, seen_expect
    try:
        while row is not None:
            if not PyTuple_CheckExact(row) or PyTuple_GET_SIZE(row) != 6:
                break
            seq_o = PyTuple_GET_ITEM(row, 0)
            ts_o = PyTuple_GET_ITEM(row, 1)
            kind_o = PyTuple_GET_ITEM(row, 2)
            body_o = PyTuple_GET_ITEM(row, 3)
            p_o = PyTuple_GET_ITEM(row, 4)
            h_o = PyTuple_GET_ITEM(row, 5)
            if not (wm_i64(seq_o, &seq) and seq == expected and wm_i64(ts_o, &ts)
                    and ts >= f.ts):
                break
            if not (PyBytes_CheckExact(<object>kind_o) and PyBytes_CheckExact(<object>body_o)
                    and PyBytes_CheckExact(<object>p_o) and PyBytes_CheckExact(<object>h_o)
                    and PyBytes_GET_SIZE(<object>p_o) == 32
                    and PyBytes_GET_SIZE(<object>h_o) == 32
                    and memcmp(PyBytes_AS_STRING(<object>p_o), PyBytes_AS_STRING(prev), 32)
                    == 0):
                break
            nk = PyBytes_GET_SIZE(<object>kind_o)
            b = PyBytes_AS_STRING(<object>body_o)
            nb = PyBytes_GET_SIZE(<object>body_o)
            if nk == 5 and memcmp(PyBytes_AS_STRING(<object>kind_o), b"trade", 5) == 0:
                is_trade = True
                if not _scan_trade(b, b + nb, s, sl, &interval, &price, &qty):
                    break
            elif nk == 3 and memcmp(PyBytes_AS_STRING(<object>kind_o), b"fee", 3) == 0:
                is_trade = False
                if not _scan_fee(b, b + nb, s, sl, &amount, &trade):
                    break
            else:
                break
            # The scan bounds the body, so the line fits the buffer.
            o = _line_head(line, PyBytes_AS_STRING(prev), seq, ts,
                           PyBytes_AS_STRING(<object>kind_o), nk)
            memcpy(o, b, nb)
            o[nb] = b']'
            wm_sha256_bytes(<unsigned char*>line, o + nb + 1 - line, digest)
            if memcmp(digest, PyBytes_AS_STRING(<object>h_o), 32) != 0:
                break
            if is_trade:
                buyer = _ascii(s[2], sl[2])
                seller = _ascii(s[3], sl[3])
                if not f.trade(buyer, seller, qty, price, seq):
                    break
            else:
                owner = _ascii(s[0], sl[0])
                if not f.fee(owner, amount, trade, seq):
                    break
            f.seq = seq
            f.ts = ts
            prev = <bytes><object>h_o
            PyList_Append(covered, prev)
            if seq == exp_seq:
                seen_expect = prev
            expected += 1
            row = next(rows, None)
    finally:
        f.done()
    return row, prev, expected, seen_expect
