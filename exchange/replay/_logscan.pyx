# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The replay's line scanner and id tables, in C (used by ``wattmesh.exchange.replay.replay``).

Contract
--------
:class:`Scanner` reads a buffer of order-log lines and applies, in C, the lines it can
prove are ordinary; it hands every other line back to the Python path in
``exchange/replay/replay.py``, which stays the reference for behaviour and refusal reasons.

A line is applied here (the *fast path*) only when all of this holds:

- Shape: exactly ``{"key":value,...}`` and nothing else on the line: no whitespace
  anywhere (so no ``\\r``), each key at most once, keys from the order or cancel set.
  Values are strings of plain printable ASCII (0x20..0x7e) with no backslash (so no
  escapes), unsigned integers of at most 18 digits without a leading zero (so no sign,
  fraction or exponent, and the value fits int64), or ``null`` (``interval`` only).
  Such a line is valid JSON and ``orjson.loads`` gives exactly the values read here.
- Order: ``type`` "order"; ``market``, ``side``, ``price``, ``qty``, ``owner``, ``ts``
  and ``id`` present; ``interval`` and ``tif`` optional (null and "gtc"); ``sig``
  optional. Every value passes the same range checks as ``settlement.records`` (price
  within the market's bounds, ``qty`` up to the engine's MAX_QTY, names 1..128
  characters, ``sig`` 128 lower-case hex), so records would accept the line with the
  same values. ``id`` is any such string of 1..128 characters: a 64 lower-case hex id is
  keyed by its first 16 digits, any other by the first 8 bytes of its SHA-256, computed
  here in C (``exchange/engine_keys.py`` is the rule). Keys may come in any order. Owner
  and market are already known (they got their handle and venue on the Python path).
- Cancel: ``type`` "cancel"; ``id``, ``owner``, ``ts``; optional ``sig``; the same checks.
- The outcome is an acceptance: an order whose key is free and, in call mode, that is
  before its gate with a valid interval and not ``fok``; a cancel of the live order
  holding that id, by its owner, before the gate. (cda cancels: liveness is known only
  when the engine runs the batch, so a batch cancel that finds its order gone comes back
  as a ``not-live`` refusal with the reason the Python path gives. call cancels of a
  known order by its owner that are late are refused here and kept, below, for the
  Python path to write the same ``late`` refusal without reading the line again.)
- The Python path has already seen the first valid order or cancel (``first_ts``), and
  ``--verify-signatures`` is off (signatures need the Python path).

Anything else (account lines, bad lines, escapes, reordered-but-odd values, unknown
owners, refusals, key collisions) is returned as ``SLOW`` *before* any state
changes for that line, and the Python path handles it with the same tables.

State kept here (one source of truth for both paths): owner <-> handle, market <-> index,
order key -> (id, owner, market, interval, call auction), the log's clock and line count,
call mode's pending auctions (rows as C columns, cancelled keys), and cda mode's batch of
engine events (``Book.run`` columns). Ids and owners live as bytes in a C arena (a
64-hex id as its 32 bytes); fills keep references into it (``id_refs``), and Python
strings are made only for outputs (``id_texts``, refusals).

``scan`` returns one of:

- ``DONE``: the buffer is consumed;
- ``SLOW``: line ``lineno`` (already counted), bytes ``line_start:line_end``, needs the
  Python path; ``pos`` is after it;
- ``CLEAR`` (call): intervals with gate ``<= gate_ts`` must clear before the line at
  ``pos`` (not consumed yet; scan again after clearing);
- ``FLUSH`` (cda): the batch must run (``run_batch``) before the line at ``pos``.

Whatever it returns, ``take_late`` then adds the late call cancels it refused on the way
to the replay's rejects, in line order (before the line it stopped at): each a cancel in
the fast shape, of a known order by its owner, at or after its order's gate (``ts >=
interval``) or after that interval cleared (``interval <= clock``), the clock having moved
to its ts. Scanning on past them, where each one used to return to Python, took a sixth
off call mode on a log with 29k late cancels in 300k lines.

Refused lines (late call cancels, cda cancels whose order is gone) go into the columns of
a ``Rejects`` (exchange/replay/rejects.py) as numbers and the line's bytes, written here in
C (``_reserve_rejects``); rejects.py words them when they are read, as the Python path
words its own.

Reading ahead
-------------
Finding a line's end, parsing it and keying its id depend only on its bytes and the price
bounds, so they run on a second thread while the chunk before is applied: ``parse(buf,
start, end, thread)`` reads a chunk's lines (``_parse_chunk``) into an array of ``Line``
records, one per line, blank ones and unparsed ones (SLOW) included, and
``read_ahead(buf, have, fd, want, bom, thread)`` first reads the chunk's bytes from a
file descriptor (a regular file), then its complete lines; ``read_done`` waits and says
what was read. ``scan`` of a range read ahead then only applies its records, prefetching
the key slot of the line AHEAD lines on; a scan of any other range reads its lines itself
(``_read_line``), as every scan did before.

The reader is one pthread per replay (``_reader_run``), started by the first chunk posted
with ``thread`` and ended by ``stop`` (the replay calls it when the log is consumed or an
exception ends it), by ``release_tables`` or at deallocation: it takes one chunk at a time
through a mutex and condition variable, holds no Python object and never the GIL, and
reads no table of the scanner (the order slots move when they grow). It is born with every
signal blocked, so signals stay with the thread that runs Python. The replay's thread
waits for it with the GIL released. At most two chunks are held, the one applied and the
next; each keeps its buffer exported (a bytearray cannot be resized under the reader) until
a scan of it returns ``DONE`` or ``stop``. The caller writes a buffer again only once the
chunk after it has been applied (replay.py's two buffers take turns), so a slow line's
text, ``take_late`` and ``run_batch`` still read refused lines from it after its DONE. At
most MAX_LINES_AHEAD lines of a chunk are read ahead; if there are more (blank or very
short lines), or the record array cannot grow, the scan reads the rest itself.
"""

cimport cpython.array as carray
cimport cython
from cpython.bytearray cimport (
    PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE,
    PyByteArray_Resize,
)
from libc.errno cimport EINTR, errno
from posix.unistd cimport read as os_read
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT32_MAX, INT64_MAX, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset, strerror

from _native cimport (  # matching/_native.pxd
    grow, mix, next_cap, resize, wm_scratch_alloc, wm_sha256,
)

from array import array

cdef extern from *:
    """
    #define WM_ONES 0x0101010101010101ULL
    #define WM_HIGHS 0x8080808080808080ULL
    /* Nonzero iff some byte of w is < 0x20, > 0x7e, '"' or a backslash: a word of eight
       bytes is plain string content exactly when this is zero (exact as a boolean). */
    static inline uint64_t wm_special(uint64_t w) {
        uint64_t lo = (w - WM_ONES * 0x20) & ~w;
        uint64_t hi = (w + WM_ONES * 0x01) | w;
        uint64_t q = w ^ (WM_ONES * 0x22);
        uint64_t b = w ^ (WM_ONES * 0x5c);
        return (lo | hi | ((q - WM_ONES) & ~q) | ((b - WM_ONES) & ~b)) & WM_HIGHS;
    }
    static inline uint64_t wm_load(const unsigned char* p) {
        uint64_t w; memcpy(&w, p, 8); return w;
    }
    /* The engine key of an id that is not 64 hex digits: the first 8 bytes of the id's
       SHA-256, big-endian (exchange/engine_keys.py). */
    static uint64_t wm_sha256_key(const unsigned char* p, size_t n) {
        uint32_t h[8];
        wm_sha256(p, n, h);
        return ((uint64_t)h[0] << 32) | h[1];
    }
    """
    uint64_t wm_special(uint64_t w) nogil
    uint64_t wm_load(const unsigned char* p) nogil
    uint64_t wm_sha256_key(const unsigned char* p, size_t n) nogil
    void wm_prefetch "__builtin_prefetch"(const void* p) nogil
    int wm_ctz "__builtin_ctzll"(unsigned long long x) nogil

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t  # opaque here: only handed back to pthread
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t* thread, const void* attr, void* (*run)(void*) noexcept nogil,
                       void* arg)
    int pthread_join(pthread_t thread, void** result)
    int pthread_mutex_init(pthread_mutex_t* m, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_cond_init(pthread_cond_t* c, const void* attr)
    int pthread_cond_destroy(pthread_cond_t* c)
    int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m)
    int pthread_cond_broadcast(pthread_cond_t* c)

cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    int SIG_SETMASK
    int sigfillset(sigset_t* s)
    int pthread_sigmask(int how, const sigset_t* s, sigset_t* old)

cdef extern from *:
    """
    #ifdef __GLIBC__
    #include <malloc.h>
    static int wm_fix_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
    #else
    static int wm_fix_mmap_threshold(int bytes) { (void)bytes; return 0; }
    #endif
    """
    int wm_fix_mmap_threshold(int bytes) nogil


def map_large_blocks(int threshold=256 << 10) -> bool:
    """Have malloc serve every block of ``threshold`` bytes or more by its own mapping, for
    the rest of the process (glibc; elsewhere nothing changes, and False is returned).

    glibc's threshold otherwise slides up to 32 MiB each time such a block is freed (the
    batch columns, a rehashed table), after which the growing tables and fill columns are
    realloc'd inside the heap: copied, leaving holes behind. A 1M-event cda replay peaked
    about 25 MiB higher that way, and spent longer copying; mapped blocks grow in place
    (mremap) and are returned to the kernel whole when freed."""
    return wm_fix_mmap_threshold(threshold) == 1


DONE = 0
SLOW = 1
CLEAR = 2
FLUSH = 3

cdef enum:
    S_DONE = 0
    S_SLOW = 1
    S_CLEAR = 2
    S_FLUSH = 3
    S_REFUSED = 4
    K_ORDER = 1
    K_CANCEL = 2
    # Book.run kinds, sides and tifs (wattmesh.matching)
    E_LIMIT = 0
    E_CANCEL = 1
    C_BID = 0
    C_ASK = 1
    C_GTC = 0
    C_IOC = 1
    C_FOK = 2
    MAX_NAME = 128
    BATCH_MAX = 1 << 16
    AHEAD = 4           # scan: lines read ahead have their slot prefetched this far on
    # At most this many lines of a chunk are read ahead (160 bytes of record each, 2.6 MB);
    # the scan reads the rest itself. A 1 MiB chunk of the usual lines has 4-7k of them,
    # one of blank or very short lines up to a million: 160 MB of records without a cap.
    MAX_LINES_AHEAD = 1 << 14

# Key bits of a parsed line
cdef enum:
    F_TYPE = 1 << 0
    F_MARKET = 1 << 1
    F_SIDE = 1 << 2
    F_PRICE = 1 << 3
    F_QTY = 1 << 4
    F_OWNER = 1 << 5
    F_TS = 1 << 6
    F_INTERVAL = 1 << 7
    F_TIF = 1 << 8
    F_ID = 1 << 9
    F_SIG = 1 << 10

cdef int64_t NO_INTERVAL = -1
cdef int64_t C_MAX_QTY = (1 << 31) - 1
cdef uint32_t NO_OWNER = 0xFFFFFFFF

ctypedef struct Line:
    int kind
    uint32_t seen
    const unsigned char* market
    Py_ssize_t market_len
    const unsigned char* owner
    Py_ssize_t owner_len
    const unsigned char* oid
    Py_ssize_t oid_len
    int side
    int tif
    int64_t price
    int64_t qty
    int64_t ts
    int64_t interval     # NO_INTERVAL: null or absent
    # Where the line is, and what _read_line made of it
    Py_ssize_t start
    Py_ssize_t end       # its newline (or the end of the buffer)
    bint parsed          # in the fast shape with valid values (_parse)
    bint hex64           # its id is 64 lower-case hex digits, packed into `packed`
    uint64_t key         # its id's engine key
    unsigned char packed[32]


ctypedef struct Chunk:      # a chunk's lines, read ahead (Scanner.parse, _parse_chunk)
    const unsigned char* base   # the buffer (held exported by the scanner: not resized)
    Py_ssize_t start
    Py_ssize_t end
    int64_t min_price
    int64_t max_price
    Line* lines                 # every line of base[start:end] in order, blank ones too
    size_t n
    size_t cap
    size_t cur                  # the line at the scanner's pos
    bint complete               # all of them (else malloc failed after n: read the rest)
    bint live                   # parsed and not consumed yet
    bint running                # the reader thread has it (under Reader.lock)
    # Scanner.read_ahead: the bytes are read first, from a file descriptor
    int fd                      # -1: the bytes are in the buffer already (parse)
    Py_ssize_t have             # read to base + have (an unfinished line before it)
    Py_ssize_t want             # at most this many bytes
    bint bom                    # the file's first read: a UTF-8 byte order mark is skipped
    Py_ssize_t got              # bytes read (0: the end of the file)
    int err                     # the read's errno, or 0
    bint lines_too              # read_ahead: the lines are read too (else the bytes only)


ctypedef struct Reader:     # the thread that reads chunks ahead, and what it shares
    pthread_mutex_t lock
    pthread_cond_t wake         # a chunk posted or read, or quit
    Chunk chunks[2]
    int job                     # the chunk posted and not taken yet, or -1
    bint quit
    bint started
    pthread_t thread


ctypedef struct Entry:      # the order holding a key (replay's "by_key"): 24 bytes
    uint64_t key
    uint64_t id_ref         # its id in the id arena: offset << 8 | length, or HEX64_REF
                            # for a 64 lower-case hex id kept as its 32 bytes (id_refs)
    uint32_t owner
    int32_t where           # call: the auction its row went to (which holds the interval
                            # and market); cda: its market (the interval plays no part)


ctypedef struct Slot:       # open addressing: key -> entry index (-1 empty)
    uint64_t key
    int32_t idx


ctypedef struct KeySlot:    # the order table's slots: 8 bytes, a million orders' worth
    uint32_t tag            # of slots is 16 MB; the entry itself holds the whole key
    int32_t idx


cdef inline uint32_t _tag(uint64_t key) noexcept nogil:
    return <uint32_t>(key ^ (key >> 32))


ctypedef struct Late:       # call: a late cancel refused in C (take_late)
    int64_t line
    int64_t ts
    int64_t interval
    int64_t clock
    Py_ssize_t start
    Py_ssize_t end


ctypedef struct Auction:    # call: the orders of one (interval, market), as columns
    int64_t interval
    int32_t market
    int pending
    size_t n
    size_t cap
    size_t n_cancelled
    uint8_t* side
    int64_t* price
    int64_t* qty
    uint64_t* key
    uint32_t* owner
    int64_t* ts


cdef inline uint64_t _hash_bytes(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """A hash of n bytes, a word at a time."""
    cdef uint64_t h = <uint64_t>n * <uint64_t>0x9e3779b97f4a7c15
    cdef uint64_t w = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        h = (h ^ wm_load(p + i)) * <uint64_t>0xff51afd7ed558ccd
        h ^= h >> 29
        i += 8
    if i < n:
        memcpy(&w, p + i, n - i)
        h = (h ^ w) * <uint64_t>0xff51afd7ed558ccd
    return mix(h)


# -- parsing (pure C) -----------------------------------------------------------------------
# Hex digit values; 16 for anything else.
cdef uint8_t HEX[256]
memset(HEX, 16, 256)
for _c in range(10):
    HEX[48 + _c] = _c
for _c in range(6):
    HEX[97 + _c] = 10 + _c


# An id of 64 lower-case hex digits (an order's SHA-256, as the network writes them) is
# kept in the id arena as its 32 bytes: half the memory of the text.
cdef enum:
    HEX64_REF = 255     # the length byte of an id reference (ids are at most 128 bytes)

cdef const char* HEX_DIGITS = b"0123456789abcdef"


cdef inline bint _hex64_pack(const unsigned char* p, Py_ssize_t n,
                             unsigned char* out) noexcept nogil:
    """Whether ``p`` is a 64 lower-case hex id, writing its 32 bytes to ``out`` on the way:
    one pass where checking, keying and packing took four."""
    cdef uint8_t acc = 0, hi, lo
    cdef int k
    if n != 64:
        return False
    for k in range(32):
        hi = HEX[p[2 * k]]
        lo = HEX[p[2 * k + 1]]
        acc |= hi | lo
        out[k] = <unsigned char>((hi << 4) | (lo & 15))
    return not (acc & 16)


cdef inline uint64_t _packed_key(const unsigned char* packed) noexcept nogil:
    """The engine key of a 64-hex id from its packed bytes: its first 8, big-endian (the
    first 16 hex digits as an integer)."""
    cdef uint64_t v = 0
    cdef int k
    for k in range(8):
        v = (v << 8) | packed[k]
    return v


cdef str _hex64_text(const unsigned char* raw):
    """The 64 lower-case hex digits of 32 bytes kept for a 64-hex id (HEX64_REF)."""
    cdef char text[64]
    cdef int i
    for i in range(32):
        text[2 * i] = HEX_DIGITS[raw[i] >> 4]
        text[2 * i + 1] = HEX_DIGITS[raw[i] & 15]
    return PyUnicode_DecodeUTF8(text, 64, NULL)


cdef inline const unsigned char* _hex_string(const unsigned char* p, const unsigned char* end,
                                             Py_ssize_t n) noexcept nogil:
    """p at an opening quote; exactly ``n`` lower-case hex digits and the closing quote.
    Returns the position after the quote, or NULL."""
    cdef uint8_t acc = 0
    cdef Py_ssize_t i
    if end - p < n + 2 or p[0] != 34 or p[n + 1] != 34:
        return NULL
    for i in range(1, n + 1):
        acc |= HEX[p[i]]
    if acc & 16:
        return NULL
    return p + n + 2


cdef inline const unsigned char* _string(const unsigned char* p, const unsigned char* end,
                                         const unsigned char** start,
                                         Py_ssize_t* n) noexcept nogil:
    """p at an opening quote; a plain printable-ASCII string without escapes. Returns the
    position after the closing quote, or NULL."""
    cdef const unsigned char* q
    cdef unsigned char c
    cdef uint64_t m
    if p >= end or p[0] != 34:  # '"'
        return NULL
    q = p + 1
    while q + 8 <= end:
        m = wm_special(wm_load(q))
        if m:  # its lowest flagged byte is the first special one (no false flag below it)
            q += wm_ctz(m) >> 3
            break
        q += 8
    while q < end:
        c = q[0]
        if c == 34:
            start[0] = p + 1
            n[0] = q - p - 1
            return q + 1
        if c < 0x20 or c > 0x7e or c == 92:  # control, non-ASCII, backslash
            return NULL
        q += 1
    return NULL


cdef inline const unsigned char* _uint(const unsigned char* p, const unsigned char* end,
                                       int64_t* out) noexcept nogil:
    """An unsigned JSON integer of 1..18 digits, no leading zero, followed by ',' or '}'."""
    cdef int64_t v = 0
    cdef const unsigned char* q = p
    while q < end and q[0] >= 48 and q[0] <= 57:
        v = v * 10 + (q[0] - 48)
        q += 1
        if q - p > 18:
            return NULL
    if q == p or q >= end or (q[0] != 44 and q[0] != 125):
        return NULL
    if p[0] == 48 and q - p > 1:
        return NULL
    out[0] = v
    return q


cdef inline bint _eq(const unsigned char* p, Py_ssize_t n, const char* lit,
                     Py_ssize_t m) noexcept nogil:
    return n == m and memcmp(p, lit, m) == 0


cdef int _parse(const unsigned char* p, const unsigned char* end, Line* L,
                int64_t min_price, int64_t max_price) noexcept nogil:
    """0 if the line is an order or cancel in the fast shape with valid values, else 1."""
    cdef const unsigned char* k
    cdef Py_ssize_t kn
    cdef const unsigned char* s
    cdef Py_ssize_t sn
    cdef const unsigned char* typ = NULL
    cdef Py_ssize_t typ_n = 0
    cdef uint32_t bit
    cdef int64_t v
    L.seen = 0
    L.interval = NO_INTERVAL
    L.tif = C_GTC
    if p >= end or p[0] != 123:  # '{'
        return 1
    p += 1
    while True:
        p = _string(p, end, &k, &kn)
        if p == NULL or p >= end or p[0] != 58:  # ':'
            return 1
        p += 1
        # Which key, and its value
        if _eq(k, kn, b"type", 4):
            bit = F_TYPE
            p = _string(p, end, &typ, &typ_n)
        elif _eq(k, kn, b"market", 6):
            bit = F_MARKET
            p = _string(p, end, &L.market, &L.market_len)
        elif _eq(k, kn, b"side", 4):
            bit = F_SIDE
            p = _string(p, end, &s, &sn)
            if p != NULL:
                if _eq(s, sn, b"bid", 3):
                    L.side = C_BID
                elif _eq(s, sn, b"ask", 3):
                    L.side = C_ASK
                else:
                    return 1
        elif _eq(k, kn, b"price", 5):
            bit = F_PRICE
            p = _uint(p, end, &L.price)
        elif _eq(k, kn, b"qty", 3):
            bit = F_QTY
            p = _uint(p, end, &L.qty)
        elif _eq(k, kn, b"owner", 5):
            bit = F_OWNER
            p = _string(p, end, &L.owner, &L.owner_len)
        elif _eq(k, kn, b"ts", 2):
            bit = F_TS
            p = _uint(p, end, &L.ts)
        elif _eq(k, kn, b"interval", 8):
            bit = F_INTERVAL
            if end - p >= 4 and memcmp(p, b"null", 4) == 0:
                p += 4
                L.interval = NO_INTERVAL
            else:
                p = _uint(p, end, &L.interval)
        elif _eq(k, kn, b"tif", 3):
            bit = F_TIF
            p = _string(p, end, &s, &sn)
            if p != NULL:
                if _eq(s, sn, b"gtc", 3):
                    L.tif = C_GTC
                elif _eq(s, sn, b"ioc", 3):
                    L.tif = C_IOC
                elif _eq(s, sn, b"fok", 3):
                    L.tif = C_FOK
                else:
                    return 1
        elif _eq(k, kn, b"id", 2):
            bit = F_ID
            p = _string(p, end, &L.oid, &L.oid_len)
        elif _eq(k, kn, b"sig", 3):
            bit = F_SIG
            p = _hex_string(p, end, 128)
        else:
            return 1
        if p == NULL or (L.seen & bit) or p >= end:
            return 1
        L.seen |= bit
        if p[0] == 44:  # ','
            p += 1
            continue
        if p[0] == 125 and p + 1 == end:  # '}' ends the line
            break
        return 1
    # Values: the checks of settlement.records, or stricter.
    if not (L.seen & F_TYPE):
        return 1
    if _eq(typ, typ_n, b"order", 5):
        if (L.seen & (F_MARKET | F_SIDE | F_PRICE | F_QTY | F_OWNER | F_TS | F_ID)
                != (F_MARKET | F_SIDE | F_PRICE | F_QTY | F_OWNER | F_TS | F_ID)):
            return 1
        if L.market_len < 1 or L.market_len > MAX_NAME:
            return 1
        if L.price < min_price or L.price > max_price or L.price < 1:
            return 1
        if L.qty < 1 or L.qty > C_MAX_QTY:
            return 1
        L.kind = K_ORDER
    elif _eq(typ, typ_n, b"cancel", 6):
        if L.seen & (F_MARKET | F_SIDE | F_PRICE | F_QTY | F_INTERVAL | F_TIF):
            return 1
        if (L.seen & (F_OWNER | F_TS | F_ID)) != (F_OWNER | F_TS | F_ID):
            return 1
        L.kind = K_CANCEL
    else:
        return 1
    if L.owner_len < 1 or L.owner_len > MAX_NAME:
        return 1
    if L.oid_len < 1 or L.oid_len > MAX_NAME:
        return 1
    return 0


cdef inline uint64_t _id_key(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """The engine key of an id (exchange/engine_keys.py): a 64 lower-case hex id's first
    16 digits as an integer, any other id's first 8 bytes of SHA-256, big-endian (the
    scanner's _apply keys its lines the same way, from the packed bytes)."""
    cdef unsigned char packed[32]
    if _hex64_pack(p, n, packed):
        return _packed_key(packed)
    return wm_sha256_key(p, <size_t>n)


cdef inline void _read_one(const unsigned char* base, Py_ssize_t pos, Py_ssize_t end, Line* L,
                           int64_t min_price, int64_t max_price) noexcept nogil:
    """Find the line at ``pos`` and parse it; a parsed line gets its id's key. Depends on
    the bytes and the price bounds only: the worker thread runs it (_parse_chunk)."""
    cdef const unsigned char* nl = <const unsigned char*>memchr(base + pos, 10, end - pos)
    L.start = pos
    L.end = nl - base if nl != NULL else end
    L.parsed = (L.end > pos
                and _parse(base + pos, base + L.end, L, min_price, max_price) == 0)
    if not L.parsed:
        return
    L.hex64 = _hex64_pack(L.oid, L.oid_len, L.packed)
    L.key = _packed_key(L.packed) if L.hex64 else wm_sha256_key(L.oid, <size_t>L.oid_len)


cdef void* _parse_chunk(void* arg) noexcept nogil:
    """Read every line of a chunk into its ``lines`` (a worker thread's whole job, or
    Scanner.parse's own for a small chunk): no Python object, no scanner table. If the
    array cannot grow, it stops there (``complete`` stays false) and the scanner reads the
    rest itself, as it reads any chunk not parsed ahead."""
    cdef Chunk* c = <Chunk*>arg
    cdef Py_ssize_t pos, r, end
    cdef size_t cap
    cdef Line* grown
    c.n = 0
    if c.fd >= 0:  # read the bytes first; the chunk is its complete lines
        while True:
            r = os_read(c.fd, <void*>(c.base + c.have), <size_t>c.want)
            if r >= 0 or errno != EINTR:
                break
        c.err = errno if r < 0 else 0
        c.got = r if r > 0 else 0
        end = c.have + c.got
        c.start = 3 if (c.bom and c.got >= 3 and memcmp(c.base, b"\xef\xbb\xbf", 3) == 0) else 0
        c.end = end
        while c.end > c.start and c.base[c.end - 1] != 10:  # after the last newline
            c.end -= 1
        if not c.lines_too:  # every line goes to Python (Scanner.all_slow)
            return NULL
    pos = c.start
    while pos < c.end:
        if c.n == MAX_LINES_AHEAD:  # the scan reads the rest itself (complete stays false)
            return NULL
        if c.n == c.cap:
            cap = next_cap(c.cap, c.n + 1)
            grown = <Line*>realloc(c.lines, cap * sizeof(Line))
            if grown == NULL:
                return NULL
            c.lines = grown
            c.cap = cap
        _read_one(c.base, pos, c.end, &c.lines[c.n], c.min_price, c.max_price)
        pos = c.lines[c.n].end + 1
        c.n += 1
    c.complete = True
    return NULL


cdef void* _reader_run(void* arg) noexcept nogil:
    """The reader thread: read each chunk posted (Reader.job) until told to quit."""
    cdef Reader* rd = <Reader*>arg
    cdef int k
    pthread_mutex_lock(&rd.lock)
    while True:
        while rd.job < 0 and not rd.quit:
            pthread_cond_wait(&rd.wake, &rd.lock)
        if rd.quit:
            break
        k = rd.job
        rd.job = -1
        pthread_mutex_unlock(&rd.lock)
        _parse_chunk(&rd.chunks[k])
        pthread_mutex_lock(&rd.lock)
        rd.chunks[k].running = False
        pthread_cond_broadcast(&rd.wake)
    pthread_mutex_unlock(&rd.lock)
    return NULL


# wm_sha256 picks its block function (SHA-NI or portable) on its first call; make that
# call here, once, so that a worker thread and the main thread never both make it.
_id_key(b"wattmesh", 8)


def new_buffer(Py_ssize_t n) -> bytearray:
    """A bytearray of ``n`` bytes, not zeroed: a read buffer (bytearray(n) writes n zero
    bytes first, 2 MiB for a one-line log)."""
    return PyByteArray_FromStringAndSize(NULL, n)


def utf8_take(const uint32_t[::1] index, const int32_t[::1] offsets,
              const unsigned char[::1] data) -> tuple:
    """Arrow string buffers (int32 offsets, UTF-8 bytes) of the strings ``index`` picks
    from a string column given as its ``offsets`` and ``data``: replay's Parquet owner
    columns from the fills' owner handles, with no str made."""
    cdef Py_ssize_t i, n = index.shape[0], m = offsets.shape[0] - 1
    cdef int64_t total = 0
    cdef uint32_t h
    for i in range(n):
        h = index[i]
        if h >= m:
            raise IndexError(h)
        total += offsets[h + 1] - offsets[h]
    if total >= (1 << 31):
        raise ValueError("utf8_take: more than 2**31 bytes")
    cdef carray.array out_offsets = array("i", bytes(4 * (n + 1)))
    cdef int32_t* off = <int32_t*>out_offsets.data.as_voidptr
    out = bytearray(total)
    cdef unsigned char[::1] view
    cdef unsigned char* dst = NULL
    if total:
        view = out
        dst = &view[0]
    cdef int32_t at = 0, length
    for i in range(n):
        h = index[i]
        length = offsets[h + 1] - offsets[h]
        if length:
            memcpy(dst + at, &data[offsets[h]], length)
        at += length
        off[i + 1] = at
    return out_offsets, out


def id_key(bytes oid) -> int:
    """The engine key the scanner gives ``oid`` (its UTF-8 bytes); for tests, which hold it
    to ``exchange.engine_keys.order_key``."""
    return _id_key(<const unsigned char*>oid, len(oid))


# -- refused lines ----------------------------------------------------------------------------
ctypedef struct RejectRows:  # where the rows _reserve_rejects made room for go
    int64_t* line
    uint8_t* code
    uint8_t* form
    int64_t* numbers        # three a row
    int64_t* text_end
    unsigned char* text     # the first new row's bytes
    int64_t text_at         # their offset in the text column


cdef int _reserve_rejects(object rejects, size_t n, size_t text_bytes,
                          RejectRows* rows) except -1:
    """Make room for ``n`` rows holding ``text_bytes`` of line text at the end of the
    columns of ``rejects`` (exchange/replay/rejects.py, ``Rejects``), and point ``rows``
    at it; the caller writes every field of every row."""
    cdef carray.array line = rejects.lines
    cdef carray.array code = rejects.codes
    cdef carray.array form = rejects.forms
    cdef carray.array numbers = rejects.numbers
    cdef carray.array text_end = rejects.text_ends
    cdef bytearray text = rejects.text
    cdef Py_ssize_t old = len(line), at = PyByteArray_GET_SIZE(text)
    if (line.ob_descr.typecode != b"q" or code.ob_descr.typecode != b"B"
            or form.ob_descr.typecode != b"B" or numbers.ob_descr.typecode != b"q"
            or text_end.ob_descr.typecode != b"q" or len(code) != old or len(form) != old
            or len(numbers) != 3 * old or len(text_end) != old):
        raise ValueError("rejects: columns of the wrong type or length")
    try:
        PyByteArray_Resize(text, at + <Py_ssize_t>text_bytes)
        carray.resize_smart(line, old + n)
        carray.resize_smart(code, old + n)
        carray.resize_smart(form, old + n)
        carray.resize_smart(numbers, 3 * (old + n))
        carray.resize_smart(text_end, old + n)
    except BaseException:  # no room (or text is exported): the columns stay as they were
        carray.resize(line, old)
        carray.resize(code, old)
        carray.resize(form, old)
        carray.resize(numbers, 3 * old)
        carray.resize(text_end, old)
        PyByteArray_Resize(text, at)
        raise
    rows.line = <int64_t*>line.data.as_voidptr + old
    rows.code = <uint8_t*>code.data.as_voidptr + old
    rows.form = <uint8_t*>form.data.as_voidptr + old
    rows.numbers = <int64_t*>numbers.data.as_voidptr + 3 * old
    rows.text_end = <int64_t*>text_end.data.as_voidptr + old
    rows.text = <unsigned char*>PyByteArray_AS_STRING(text) + at
    rows.text_at = at
    return 0


# -- the scanner ----------------------------------------------------------------------------
# No tp_clear: the cyclic collector must not drop the buffers a reader thread may still be
# reading into; __dealloc__ stops the thread first (_free_tables), then they go.
@cython.no_gc_clear
cdef class Scanner:
    """Tables and the fast path of one replay (see the module docstring)."""

    # configuration
    cdef readonly bint call
    cdef bint all_slow
    cdef int64_t interval_ms
    cdef int64_t min_price
    cdef int64_t max_price
    # progress
    cdef public int64_t lineno
    cdef public int64_t blank
    cdef public int64_t clock
    cdef public bint have_first_ts
    cdef readonly int64_t accepted_orders
    cdef readonly int64_t accepted_cancels
    cdef readonly Py_ssize_t pos
    cdef readonly Py_ssize_t line_start
    cdef readonly Py_ssize_t line_end
    cdef readonly int64_t gate_ts
    cdef int64_t late_ts         # S_REFUSED: the cancel's ts and its order's interval
    cdef int64_t late_interval
    # call: late cancels refused since the last take_late()
    cdef Late* late
    cdef size_t late_n
    cdef size_t late_cap
    # ids arena and owners arena
    cdef unsigned char* id_arena
    cdef size_t ids_n
    cdef size_t ids_cap
    cdef unsigned char* names
    cdef size_t names_n
    cdef size_t names_cap
    # owners: handle -> (offset, length); hash slots -> handle
    cdef size_t* own_off
    cdef uint32_t* own_len
    cdef uint64_t* own_hash
    cdef size_t n_owners
    cdef size_t own_cap
    cdef int32_t* own_slots
    cdef size_t own_mask
    # markets (few): index -> (offset, length) in the names arena
    cdef size_t* mk_off
    cdef uint32_t* mk_len
    cdef size_t n_markets
    cdef size_t mk_cap
    # orders: entries and key slots
    cdef Entry* entries
    cdef size_t n_entries
    cdef size_t ent_cap
    cdef KeySlot* slots
    cdef size_t slot_mask
    # call: auctions, pending ones, cancelled (auction, key) pairs
    cdef Auction* auctions
    cdef size_t n_auctions
    cdef size_t auc_cap
    cdef int32_t* pend
    cdef size_t n_pend
    cdef size_t pend_cap
    cdef int64_t next_gate_c
    cdef int32_t last_auction
    cdef Slot* cx            # key -> auction (idx); several slots may share a key
    cdef size_t cx_mask
    cdef size_t cx_n
    # cda: the batch of engine events
    cdef uint8_t* b_kind
    cdef uint8_t* b_side
    cdef int64_t* b_price
    cdef int64_t* b_qty
    cdef uint64_t* b_oid
    cdef uint64_t* b_ref     # the event's order's id reference (its entry's id_ref)
    cdef uint32_t* b_owner
    cdef uint8_t* b_tif
    cdef int64_t* b_ts
    cdef int64_t* b_line
    cdef Py_ssize_t* b_start
    cdef Py_ssize_t* b_end
    cdef size_t b_n
    cdef size_t b_cap
    cdef readonly int32_t batch_market
    cdef readonly bint released  # release_tables(): only the id and name arenas are left
    # Lines read ahead (parse): the chunk being applied and the next one, each with its
    # buffer held exported (a bytearray cannot be resized under a reader) while live.
    cdef Reader rd
    cdef list held
    cdef int last_posted         # the chunk read_ahead gave the reader last (-1: none)

    def __cinit__(self, bint call, interval_ms, bint fast, int64_t min_price,
                  int64_t max_price):
        self.call = call
        self.all_slow = not fast or interval_ms > INT64_MAX
        self.interval_ms = interval_ms if interval_ms <= INT64_MAX else 1
        self.min_price = min_price
        self.max_price = max_price
        self.clock = -1
        self.last_auction = -1
        self.batch_market = -1
        self.next_gate_c = INT64_MAX
        self.held = [None, None]
        self.last_posted = -1
        self.rd.job = -1
        pthread_mutex_init(&self.rd.lock, NULL)
        pthread_cond_init(&self.rd.wake, NULL)
        self._rehash_slots(1 << 16)
        self._rehash_owners(1 << 10)
        self._rehash_cx(1 << 10)

    def __dealloc__(self):
        self._free_tables()  # the reader thread stopped, the line records freed
        pthread_cond_destroy(&self.rd.wake)
        pthread_mutex_destroy(&self.rd.lock)
        free(self.id_arena)
        free(self.names)
        free(self.own_off)
        free(self.own_len)
        free(self.own_hash)
        free(self.own_slots)
        free(self.mk_off)
        free(self.mk_len)

    def release_tables(self) -> None:
        """Free every table but the id and owner arenas, once the log is consumed: the
        order entries and their slots (about 56 bytes an order), call mode's auctions and
        cancelled keys, cda's batch columns, the line records read ahead (the reader
        thread ends first). What stays is what the fills' id references and
        :meth:`id_texts` / :meth:`id_utf8` read, so the outputs are written with about 60
        MB less held for a million orders (and less for a forked Parquet writer to
        inherit). Every method that needs the tables raises afterwards."""
        if not self.released:
            self._free_tables()

    cdef void _free_tables(self) noexcept:
        """Free the tables release_tables frees, and mark them released."""
        cdef size_t i
        cdef int k
        self._stop_reader()
        for k in range(2):  # the line records read ahead (a MiB or two): the log is read
            free(self.rd.chunks[k].lines)
            self.rd.chunks[k].lines = NULL
            self.rd.chunks[k].cap = self.rd.chunks[k].n = 0
            self.rd.chunks[k].live = False
        for i in range(self.n_auctions):
            self._free_rows(&self.auctions[i])
        free(self.entries)
        free(self.slots)
        free(self.auctions)
        free(self.pend)
        free(self.cx)
        free(self.b_kind)
        free(self.b_side)
        free(self.b_price)
        free(self.b_qty)
        free(self.b_oid)
        free(self.b_ref)
        free(self.b_owner)
        free(self.b_tif)
        free(self.b_ts)
        free(self.b_line)
        free(self.b_start)
        free(self.b_end)
        free(self.late)
        self.late = NULL
        self.late_n = self.late_cap = 0
        self.entries = NULL
        self.slots = NULL
        self.auctions = NULL
        self.pend = NULL
        self.cx = NULL
        self.b_kind = self.b_side = self.b_tif = NULL
        self.b_price = self.b_qty = self.b_ts = self.b_line = NULL
        self.b_oid = self.b_ref = NULL
        self.b_owner = NULL
        self.b_start = self.b_end = NULL
        self.n_entries = self.ent_cap = self.slot_mask = 0
        self.n_auctions = self.auc_cap = self.n_pend = self.pend_cap = 0
        self.cx_mask = self.cx_n = self.b_n = self.b_cap = 0
        self.released = True

    cdef int _tables(self) except -1:
        if self.released:
            raise RuntimeError("the scanner's tables were released (release_tables)")
        return 0

    # -- hash tables ---------------------------------------------------------------------
    cdef int _rehash_slots(self, size_t cap) except -1:
        # On huge pages where the kernel allows (wm_scratch_alloc): every line's key lands
        # on a random slot of tens of MB, and with 4 KiB pages nearly every such load also
        # missed the TLB (two-thirds of _scan's samples sat on the slot's prefetch; call
        # mode of the 1M-event log took about 10% less CPU with huge pages).
        cdef KeySlot* s = <KeySlot*>wm_scratch_alloc(cap * sizeof(KeySlot))
        cdef size_t i, h
        if s == NULL:
            raise MemoryError()
        for i in range(cap):
            s[i].idx = -1
        for i in range(self.n_entries):
            h = mix(self.entries[i].key) & (cap - 1)
            while s[h].idx != -1:
                h = (h + 1) & (cap - 1)
            s[h].tag = _tag(self.entries[i].key)
            s[h].idx = <int32_t>i
        free(self.slots)
        self.slots = s
        self.slot_mask = cap - 1
        return 0

    @property
    def order_slots(self) -> int:
        """How many slots the order-key table has now (it holds at most half as many)."""
        return self.slot_mask + 1 if self.slots != NULL else 0

    def reserve(self, Py_ssize_t orders) -> None:
        """Size the order-key slots for ``orders`` orders at once (replay's estimate from
        the log's size), so that they are not rehashed again and again as they fill. More
        orders still grow them; fewer leave them larger than needed (8 bytes a slot)."""
        if orders > INT32_MAX:  # entries are int32 indices (and the doubling would wrap)
            raise ValueError(f"reserve: at most {INT32_MAX} orders, got {orders}")
        self._tables()
        cdef size_t cap = self.slot_mask + 1
        if orders <= 0:
            return
        while <size_t>(orders + 1) * 2 > cap:  # the rule _store grows by
            cap *= 2
        if cap > self.slot_mask + 1:
            self._rehash_slots(cap)

    cdef inline int32_t _find(self, uint64_t key) noexcept nogil:
        cdef size_t h = mix(key) & self.slot_mask
        cdef uint32_t tag = _tag(key)
        cdef KeySlot* s
        while True:
            s = &self.slots[h]
            if s.idx == -1 or (s.tag == tag and self.entries[s.idx].key == key):
                return s.idx
            h = (h + 1) & self.slot_mask

    cdef int32_t _put(self, uint64_t key, const unsigned char* oid, size_t oid_len,
                      uint32_t owner, int32_t where) except -2:
        """Set the entry of ``key`` (new, or taken over); returns its index."""
        cdef unsigned char packed[32]
        cdef bint hex64 = _hex64_pack(oid, oid_len, packed)
        return self._store(self._find(key), key, oid, oid_len, packed if hex64 else NULL,
                           owner, where)

    cdef int32_t _store(self, int32_t i, uint64_t key, const unsigned char* oid,
                        size_t oid_len, const unsigned char* packed, uint32_t owner,
                        int32_t where) except -2:
        """Set entry ``i`` (``_find(key)``; -1: a new one) to the order with id ``oid``,
        given as its 32 packed bytes when it is a 64-hex id (else ``packed`` is NULL)."""
        cdef size_t h
        cdef Entry* e
        if i == -1:
            if (self.n_entries + 1) * 2 > self.slot_mask + 1:
                self._rehash_slots((self.slot_mask + 1) * 2)
            if self.n_entries + 1 > self.ent_cap:
                self.entries = <Entry*>grow(self.entries, &self.ent_cap, self.n_entries + 1,
                                             sizeof(Entry))
            i = <int32_t>self.n_entries
            self.n_entries += 1
            h = mix(key) & self.slot_mask
            while self.slots[h].idx != -1:
                h = (h + 1) & self.slot_mask
            self.slots[h].tag = _tag(key)
            self.slots[h].idx = i
        cdef bint hex64 = packed != NULL
        cdef size_t kept = 32 if hex64 else oid_len
        if self.ids_n + kept > self.ids_cap:
            self.id_arena = <unsigned char*>grow(self.id_arena, &self.ids_cap, self.ids_n + kept, 1)
        if hex64:
            memcpy(self.id_arena + self.ids_n, packed, 32)
        else:
            memcpy(self.id_arena + self.ids_n, oid, oid_len)
        e = &self.entries[i]
        e.key = key
        e.id_ref = (<uint64_t>self.ids_n << 8) | (HEX64_REF if hex64 else oid_len)
        e.owner = owner
        e.where = where
        self.ids_n += kept
        return i

    cdef int _rehash_owners(self, size_t cap) except -1:
        cdef int32_t* s = <int32_t*>malloc(cap * sizeof(int32_t))
        cdef size_t i, h
        if s == NULL:
            raise MemoryError()
        for i in range(cap):
            s[i] = -1
        for i in range(self.n_owners):
            h = self.own_hash[i] & (cap - 1)
            while s[h] != -1:
                h = (h + 1) & (cap - 1)
            s[h] = <int32_t>i
        free(self.own_slots)
        self.own_slots = s
        self.own_mask = cap - 1
        return 0

    cdef inline uint32_t _owner(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        cdef uint64_t hv = _hash_bytes(p, n)
        cdef size_t h = hv & self.own_mask
        cdef int32_t o
        while True:
            o = self.own_slots[h]
            if o == -1:
                return NO_OWNER
            if (self.own_hash[o] == hv and self.own_len[o] == n
                    and memcmp(self.names + self.own_off[o], p, n) == 0):
                return <uint32_t>o
            h = (h + 1) & self.own_mask

    cdef int _rehash_cx(self, size_t cap) except -1:
        cdef Slot* s = <Slot*>malloc(cap * sizeof(Slot))
        cdef size_t i, h
        if s == NULL:
            raise MemoryError()
        for i in range(cap):
            s[i].idx = -1
        if self.cx != NULL:
            for i in range(self.cx_mask + 1):
                if self.cx[i].idx != -1:
                    h = mix(self.cx[i].key) & (cap - 1)
                    while s[h].idx != -1:
                        h = (h + 1) & (cap - 1)
                    s[h] = self.cx[i]
        free(self.cx)
        self.cx = s
        self.cx_mask = cap - 1
        return 0

    cdef inline bint _cancelled(self, int32_t auction, uint64_t key) noexcept nogil:
        """Was ``key`` cancelled in ``auction`` (the Python path's auction.cancelled)?"""
        cdef size_t h
        if self.auctions[auction].n_cancelled == 0:
            return False
        h = mix(key) & self.cx_mask
        while self.cx[h].idx != -1:
            if self.cx[h].key == key and self.cx[h].idx == auction:
                return True
            h = (h + 1) & self.cx_mask
        return False

    cdef int _cancel_in(self, int32_t auction, uint64_t key) except -1:
        cdef size_t h
        if (self.cx_n + 1) * 2 > self.cx_mask + 1:
            self._rehash_cx((self.cx_mask + 1) * 2)
        h = mix(key) & self.cx_mask
        while self.cx[h].idx != -1:
            h = (h + 1) & self.cx_mask
        self.cx[h].key = key
        self.cx[h].idx = auction
        self.cx_n += 1
        self.auctions[auction].n_cancelled += 1
        return 0

    # -- call auctions -------------------------------------------------------------------
    cdef void _free_rows(self, Auction* a) noexcept:
        free(a.side)
        free(a.price)
        free(a.qty)
        free(a.key)
        free(a.owner)
        free(a.ts)
        a.side = NULL
        a.price = NULL
        a.qty = NULL
        a.key = NULL
        a.owner = NULL
        a.ts = NULL
        a.n = 0
        a.cap = 0

    cdef int32_t _auction(self, int64_t interval, int32_t market) except -2:
        """The pending auction of (interval, market), created if needed."""
        cdef int32_t i = self.last_auction
        cdef size_t j
        cdef Auction* a
        if i >= 0 and self.auctions[i].interval == interval and self.auctions[i].market == market:
            return i
        for j in range(self.n_pend):
            i = self.pend[j]
            if self.auctions[i].interval == interval and self.auctions[i].market == market:
                self.last_auction = i
                return i
        if self.n_auctions + 1 > self.auc_cap:
            self.auctions = <Auction*>grow(self.auctions, &self.auc_cap, self.n_auctions + 1,
                                            sizeof(Auction))
        if self.n_pend + 1 > self.pend_cap:
            self.pend = <int32_t*>grow(self.pend, &self.pend_cap, self.n_pend + 1,
                                        sizeof(int32_t))
        i = <int32_t>self.n_auctions
        self.n_auctions += 1
        a = &self.auctions[i]
        memset(a, 0, sizeof(Auction))
        a.interval = interval
        a.market = market
        a.pending = 1
        self.pend[self.n_pend] = i
        self.n_pend += 1
        if interval < self.next_gate_c:
            self.next_gate_c = interval
        self.last_auction = i
        return i

    cdef int _add_row(self, int32_t i, uint64_t key, uint32_t owner, int side, int64_t price,
                      int64_t qty, int64_t ts) except -1:
        """Add an order's row to auction ``i`` (its entry's ``where``)."""
        cdef Auction* a = &self.auctions[i]
        cdef size_t cap
        if a.n == a.cap:
            cap = a.cap
            a.side = <uint8_t*>grow(a.side, &cap, a.n + 1, sizeof(uint8_t))
            cap = a.cap
            a.price = <int64_t*>grow(a.price, &cap, a.n + 1, sizeof(int64_t))
            cap = a.cap
            a.qty = <int64_t*>grow(a.qty, &cap, a.n + 1, sizeof(int64_t))
            cap = a.cap
            a.key = <uint64_t*>grow(a.key, &cap, a.n + 1, sizeof(uint64_t))
            cap = a.cap
            a.owner = <uint32_t*>grow(a.owner, &cap, a.n + 1, sizeof(uint32_t))
            cap = a.cap
            a.ts = <int64_t*>grow(a.ts, &cap, a.n + 1, sizeof(int64_t))
            a.cap = cap
        a.side[a.n] = <uint8_t>side
        a.price[a.n] = price
        a.qty[a.n] = qty
        a.key[a.n] = key
        a.owner[a.n] = owner
        a.ts[a.n] = ts
        a.n += 1
        return 0

    cdef inline bint _call_live(self, int32_t e) noexcept nogil:
        cdef int32_t a = self.entries[e].where
        return a >= 0 and self.auctions[a].pending and not self._cancelled(a, self.entries[e].key)

    # -- cda batch -----------------------------------------------------------------------
    cdef int _batch_push(self, uint8_t kind, int side, int64_t price, int64_t qty,
                         uint64_t oid, uint64_t ref, uint32_t owner, int tif, int64_t ts,
                         Py_ssize_t start, Py_ssize_t end) except -1:
        cdef size_t cap
        cdef size_t need = self.b_n + 1
        if need > self.b_cap:
            # The batch's columns grow together, to one capacity.
            cap = next_cap(self.b_cap, need)
            self.b_kind = <uint8_t*>resize(self.b_kind, cap, 1)
            self.b_side = <uint8_t*>resize(self.b_side, cap, 1)
            self.b_price = <int64_t*>resize(self.b_price, cap, 8)
            self.b_qty = <int64_t*>resize(self.b_qty, cap, 8)
            self.b_oid = <uint64_t*>resize(self.b_oid, cap, 8)
            self.b_ref = <uint64_t*>resize(self.b_ref, cap, 8)
            self.b_owner = <uint32_t*>resize(self.b_owner, cap, 4)
            self.b_tif = <uint8_t*>resize(self.b_tif, cap, 1)
            self.b_ts = <int64_t*>resize(self.b_ts, cap, 8)
            self.b_line = <int64_t*>resize(self.b_line, cap, 8)
            self.b_start = <Py_ssize_t*>resize(self.b_start, cap, sizeof(Py_ssize_t))
            self.b_end = <Py_ssize_t*>resize(self.b_end, cap, sizeof(Py_ssize_t))
            self.b_cap = cap
        cdef size_t i = self.b_n
        self.b_kind[i] = kind
        self.b_side[i] = <uint8_t>side
        self.b_price[i] = price
        self.b_qty[i] = qty
        self.b_oid[i] = oid
        self.b_ref[i] = ref
        self.b_owner[i] = owner
        self.b_tif[i] = <uint8_t>tif
        self.b_ts[i] = ts
        self.b_line[i] = self.lineno + 1  # counted once the line is consumed
        self.b_start[i] = start
        self.b_end[i] = end
        self.b_n = need
        return 0

    # -- the fast path -------------------------------------------------------------------
    cdef int _apply(self, Line* L, Py_ssize_t start, Py_ssize_t end) except -1:
        """Apply one parsed line, or say why not (S_SLOW, S_CLEAR, S_FLUSH) before any
        change."""
        cdef int32_t m = -1
        cdef size_t j
        cdef uint32_t h
        cdef uint64_t key
        cdef int32_t e, a
        cdef Entry* en
        cdef int64_t clock, interval
        cdef const unsigned char* packed = L.packed if L.hex64 else NULL
        if not self.have_first_ts:
            return S_SLOW
        key = L.key
        h = self._owner(L.owner, L.owner_len)
        if h == NO_OWNER:
            return S_SLOW
        e = self._find(key)
        if L.kind == K_ORDER:
            for j in range(self.n_markets):
                if (self.mk_len[j] == L.market_len
                        and memcmp(self.names + self.mk_off[j], L.market, L.market_len) == 0):
                    m = <int32_t>j
                    break
            if m < 0 or e != -1:  # a new market, or the key is held: Python decides
                return S_SLOW
            if self.call:
                if L.ts > self.clock and self.n_pend and L.ts >= self.next_gate_c:
                    self.gate_ts = L.ts
                    return S_CLEAR
                clock = L.ts if L.ts > self.clock else self.clock
                if (L.interval == NO_INTERVAL or L.interval % self.interval_ms != 0
                        or L.tif == C_FOK or L.interval <= clock):
                    return S_SLOW
                self.clock = clock
                a = self._auction(L.interval, m)
                self._store(-1, key, L.oid, L.oid_len, packed, h, a)
                self._add_row(a, key, h, L.side, L.price, L.qty, L.ts)
            else:
                if self.b_n and (self.batch_market != m or self.b_n >= BATCH_MAX):
                    return S_FLUSH
                if L.ts > self.clock:
                    self.clock = L.ts
                e = self._store(-1, key, L.oid, L.oid_len, packed, h, m)
                self.batch_market = m
                self._batch_push(E_LIMIT, L.side, L.price, L.qty, key,
                                 self.entries[e].id_ref, h, L.tif, L.ts, start, end)
            self.accepted_orders += 1
            return 0
        # A cancel of the live order holding this id, by its owner.
        if e == -1:
            return S_SLOW
        en = &self.entries[e]
        if not self._same_id(en, L.oid, L.oid_len, packed) or en.owner != h:
            return S_SLOW
        if self.call:
            if L.ts > self.clock and self.n_pend and L.ts >= self.next_gate_c:
                self.gate_ts = L.ts
                return S_CLEAR
            clock = L.ts if L.ts > self.clock else self.clock
            interval = self.auctions[en.where].interval
            if L.ts >= interval or interval <= clock:
                # Late (at or after its gate, or its interval already cleared): refused,
                # with the reason the Python path gives (replay.late_cancel_reason).
                self.clock = clock
                self.late_ts = L.ts
                self.late_interval = interval
                return S_REFUSED
            if not self._call_live(e):
                return S_SLOW
            self.clock = clock
            self._cancel_in(en.where, key)
            self.accepted_cancels += 1
        else:
            if self.b_n and (self.batch_market != en.where or self.b_n >= BATCH_MAX):
                return S_FLUSH
            if L.ts > self.clock:
                self.clock = L.ts
            self.batch_market = en.where
            self._batch_push(E_CANCEL, 0, 0, 0, key, en.id_ref, h, 0, L.ts, start, end)
        return 0

    cdef int _push_late(self, Py_ssize_t start, Py_ssize_t end) except -1:
        """Keep the late cancel just refused (line ``lineno``) for take_late."""
        cdef Late* t
        if self.late_n + 1 > self.late_cap:
            self.late = <Late*>grow(self.late, &self.late_cap, self.late_n + 1, sizeof(Late))
        t = &self.late[self.late_n]
        t.line = self.lineno
        t.ts = self.late_ts
        t.interval = self.late_interval
        t.clock = self.clock
        t.start = start
        t.end = end
        self.late_n += 1
        return 0

    cdef inline void _read_line(self, const unsigned char* base, Py_ssize_t pos,
                                Py_ssize_t end, Line* L) noexcept nogil:
        """Find the line at ``pos`` and parse it; a parsed line gets its id's key, and
        the slot that key hashes to is prefetched (a cache miss, mostly, in tens of MB of
        slots), so that the miss overlaps the work on the line before it."""
        cdef const unsigned char* nl
        if self.all_slow:
            nl = <const unsigned char*>memchr(base + pos, 10, end - pos)
            L.start = pos
            L.end = nl - base if nl != NULL else end
            L.parsed = False
            return
        _read_one(base, pos, end, L, self.min_price, self.max_price)
        if L.parsed:
            wm_prefetch(&self.slots[mix(L.key) & self.slot_mask])

    cdef int _scan(self, const unsigned char* base, Py_ssize_t pos,
                   Py_ssize_t end) except -1:
        cdef Line lines[2]
        cdef Line* L = &lines[0]
        cdef Line* ahead = &lines[1]
        cdef Line* swap
        cdef bint have_ahead = False
        cdef int r
        while pos < end:
            if have_ahead:  # the line at pos was read with the one before
                swap = L
                L = ahead
                ahead = swap
                have_ahead = False
            else:
                self._read_line(base, pos, end, L)
            if L.end == pos:  # an empty line
                self.lineno += 1
                self.blank += 1
                pos = L.end + 1
                continue
            if L.end + 1 < end:  # read the next line now: its slot loads meanwhile
                self._read_line(base, L.end + 1, end, ahead)
                have_ahead = True
            r = self._apply(L, pos, L.end) if L.parsed else S_SLOW
            if r == S_CLEAR or r == S_FLUSH:
                self.pos = pos
                return r
            self.lineno += 1
            if r == S_REFUSED:
                self._push_late(pos, L.end)
                pos = L.end + 1
                continue
            if r == S_SLOW:
                self.line_start = pos
                self.line_end = L.end
                self.pos = L.end + 1 if L.end < end else end
                return r
            pos = L.end + 1
        self.pos = end
        return S_DONE

    cdef int _scan_lines(self, Chunk* c, size_t i, Py_ssize_t end) except -1:
        """_scan over the lines a chunk has read ahead, from its line ``i`` (at the
        scanner's pos): the same steps and returns, with the slot of the line AHEAD lines
        on prefetched from its key, read on the other thread."""
        cdef Line* L
        cdef size_t n = c.n
        cdef Py_ssize_t pos
        cdef int r
        while i < n:
            L = &c.lines[i]
            pos = L.start
            if i + AHEAD < n and c.lines[i + AHEAD].parsed:
                wm_prefetch(&self.slots[mix(c.lines[i + AHEAD].key) & self.slot_mask])
            if L.end == pos:  # an empty line
                self.lineno += 1
                self.blank += 1
                i += 1
                continue
            r = self._apply(L, pos, L.end) if L.parsed else S_SLOW
            if r == S_CLEAR or r == S_FLUSH:
                self.pos = pos
                c.cur = i
                return r
            self.lineno += 1
            i += 1
            if r == S_REFUSED:
                self._push_late(pos, L.end)
                continue
            if r == S_SLOW:
                self.line_start = pos
                self.line_end = L.end
                self.pos = L.end + 1 if L.end < end else end
                c.cur = i
                return r
        c.cur = i
        if c.complete:
            self.pos = end
            return S_DONE
        # The array could not grow past line n: the rest is read here.
        pos = c.lines[n - 1].end + 1 if n else c.start
        if pos >= end:
            self.pos = end
            return S_DONE
        return self._scan(c.base, pos, end)

    cdef void _join(self, Chunk* c) noexcept:
        """Wait, with the GIL released, until the reader thread has read ``c`` (if it
        has it)."""
        if not self.rd.started:
            return
        with nogil:
            pthread_mutex_lock(&self.rd.lock)
            while c.running:
                pthread_cond_wait(&self.rd.wake, &self.rd.lock)
            pthread_mutex_unlock(&self.rd.lock)

    cdef void _stop_reader(self) noexcept:
        """End the reader thread, if it runs, once it has read what it has."""
        if not self.rd.started:
            return
        with nogil:
            pthread_mutex_lock(&self.rd.lock)
            self.rd.quit = True
            pthread_cond_broadcast(&self.rd.wake)
            pthread_mutex_unlock(&self.rd.lock)
            pthread_join(self.rd.thread, NULL)
        self.rd.started = False
        self.rd.quit = False
        self.rd.job = -1
        self.rd.chunks[0].running = False  # a chunk posted and not taken was not read
        self.rd.chunks[1].running = False

    cdef void _drop(self, int k) noexcept:
        """Forget chunk ``k``'s lines (its array stays for the next chunk) and let its
        buffer go."""
        self._join(&self.rd.chunks[k])
        self.rd.chunks[k].live = False
        self.rd.chunks[k].n = 0
        self.held[k] = None

    # -- Python API ------------------------------------------------------------------------
    def parse(self, buf not None, Py_ssize_t start, Py_ssize_t end, bint thread) -> None:
        """Read the lines of ``buf[start:end]`` ahead of :meth:`scan`, on a thread of its
        own when ``thread`` (else here and now): each line found, parsed and keyed as
        ``scan`` would, so that ``scan(buf, start, end)`` and the calls that resume it
        only apply them. The replay reads its next chunk this way while it applies the
        one before (replay.py, ``consume``).

        At most two chunks are held: the one being scanned and the next. A chunk is let
        go when a scan of it returns DONE, or by :meth:`stop`; until then ``buf`` is held
        exported (a bytearray cannot be resized) and must not be written. A scan of any
        other range reads its lines itself, as before."""
        self._tables()
        cdef const unsigned char[::1] view = buf
        cdef Chunk* c
        cdef int k
        if start < 0 or end > view.shape[0] or start > end:
            raise ValueError("parse: bad range")
        if self.all_slow or start == end:  # every line goes to Python: nothing to read
            return
        k = self._free_chunk()
        c = &self.rd.chunks[k]
        c.base = &view[0]
        c.start = start
        c.end = end
        c.fd = -1
        self._post(k, buf, thread)

    def read_ahead(self, buf not None, Py_ssize_t have, int fd, Py_ssize_t want, bint bom,
                   bint thread) -> None:
        """Read up to ``want`` bytes from ``fd`` into ``buf`` after its first ``have``
        (an unfinished line, copied there by the caller) and read ahead the complete lines
        (up to the last newline), as :meth:`parse` does, on the reader thread when
        ``thread``. ``bom``: the file's first read, where a UTF-8 byte order mark is
        skipped. :meth:`read_done` says what was read."""
        self._tables()
        cdef unsigned char[::1] view = buf  # writable
        cdef Chunk* c
        cdef int k
        if have < 0 or want <= 0 or have + want > view.shape[0]:
            raise ValueError("read_ahead: bad range")
        if fd < 0:
            raise ValueError(f"read_ahead: {fd} is not a file descriptor")
        k = self._free_chunk()
        c = &self.rd.chunks[k]
        c.base = &view[0]
        c.fd = fd
        c.have = have
        c.want = want
        c.bom = bom
        c.got = 0
        c.err = 0
        self._post(k, buf, thread)

    def read_done(self) -> tuple:
        """Wait for the last :meth:`read_ahead`; returns (bytes read, start, end, end of the
        bytes): ``buf[start:end]`` are its complete lines, ``buf[end:]`` up to the end of
        the bytes an unfinished one. Raises OSError if the read failed."""
        cdef int k = self.last_posted
        cdef Chunk* c
        if k < 0 or self.rd.chunks[k].fd < 0:
            raise RuntimeError("read_done: no read_ahead")
        c = &self.rd.chunks[k]
        self._join(c)
        result = (c.got, c.start, c.end, c.have + c.got)
        if c.err:
            self._drop(k)
            raise OSError(c.err, strerror(c.err))
        if c.start >= c.end:  # no complete line: nothing to scan, the buffer is free
            self._drop(k)
        return result

    cdef int _free_chunk(self) except -1:
        """The chunk not held (there are two), once the reader is done with the other."""
        cdef int k = 0 if not self.rd.chunks[0].live else 1
        if self.rd.chunks[k].live:
            raise RuntimeError("parse: two chunks are held already")
        self._join(&self.rd.chunks[1 - k])  # one job at a time: the other chunk's is done
        if self.rd.chunks[k].cap == 0:  # from this thread (later growth is the reader's)
            self.rd.chunks[k].lines = <Line*>resize(NULL, 1024, sizeof(Line))
            self.rd.chunks[k].cap = 1024
        return k

    cdef int _post(self, int k, object buf, bint thread) except -1:
        """Hand chunk ``k`` (its base and range or read set) to the reader thread, or
        read it here."""
        cdef Chunk* c = &self.rd.chunks[k]
        cdef sigset_t every, before
        c.min_price = self.min_price
        c.max_price = self.max_price
        c.lines_too = not self.all_slow
        c.n = 0
        c.cur = 0
        c.complete = False
        self.held[k] = memoryview(buf)
        c.live = True
        self.last_posted = k
        if thread and not self.rd.started:
            # Born with every signal blocked, so that they all go to this thread, as they
            # did before: Python's handlers run here, and nothing interrupts the reader.
            sigfillset(&every)
            pthread_sigmask(SIG_SETMASK, &every, &before)
            self.rd.started = pthread_create(&self.rd.thread, NULL, _reader_run, &self.rd) == 0
            pthread_sigmask(SIG_SETMASK, &before, NULL)
        if thread and self.rd.started:
            pthread_mutex_lock(&self.rd.lock)
            c.running = True
            self.rd.job = k
            pthread_cond_broadcast(&self.rd.wake)
            pthread_mutex_unlock(&self.rd.lock)
        else:  # small, or no thread to be had: read here
            with nogil:
                _parse_chunk(c)
        return 0

    def stop(self) -> None:
        """End the reader thread (once it has read what it has) and let every chunk go:
        the replay calls it when the log is consumed or an exception ends it, so no
        thread outlives it. A later :meth:`parse` starts a thread again."""
        self._stop_reader()
        self._drop(0)
        self._drop(1)

    @property
    def reader_running(self) -> bool:
        """Whether the thread that reads chunks ahead (:meth:`parse`) is running."""
        return self.rd.started

    @property
    def late_count(self) -> int:
        """call: how many late cancels take_late would give now."""
        return self.late_n

    def take_late(self, rejects, const unsigned char[::1] buf not None, uint8_t code,
                  uint8_t form) -> None:
        """call: add the late cancels refused since the last call to ``rejects`` (a
        ``Rejects``), in line order, with ``code`` and ``form``: the numbers of each are
        the cancel's ts, its order's interval and the log's clock then, its text its line
        in ``buf``, the buffer last scanned."""
        cdef size_t i, n = self.late_n, total = 0
        cdef Late* t
        cdef RejectRows rows
        for i in range(n):
            t = &self.late[i]
            if t.start < 0 or t.end < t.start or t.end > buf.shape[0]:
                raise ValueError("take_late: a line outside the buffer")
            total += <size_t>(t.end - t.start)
        if n == 0:
            return
        _reserve_rejects(rejects, n, total, &rows)
        total = 0
        for i in range(n):
            t = &self.late[i]
            rows.line[i] = t.line
            rows.code[i] = code
            rows.form[i] = form
            rows.numbers[3 * i] = t.ts
            rows.numbers[3 * i + 1] = t.interval
            rows.numbers[3 * i + 2] = t.clock
            if t.end > t.start:
                memcpy(rows.text + total, &buf[t.start], t.end - t.start)
            total += <size_t>(t.end - t.start)
            rows.text_end[i] = rows.text_at + <int64_t>total
        self.late_n = 0

    def scan(self, const unsigned char[::1] buf not None, Py_ssize_t pos, Py_ssize_t end):
        """Apply lines of ``buf[pos:end]`` until one needs Python; returns the status."""
        self._tables()
        if end > buf.shape[0] or pos < 0:
            raise ValueError("scan: bad range")
        cdef int k = self._held_chunk(&buf[0] if end > 0 else NULL, pos, end)
        cdef int r
        cdef size_t i
        if end == 0 or pos >= end:
            r = S_DONE
            self.pos = end
        elif k >= 0 and self._line_at(&self.rd.chunks[k], pos, &i):
            r = self._scan_lines(&self.rd.chunks[k], i, end)
        else:
            r = self._scan(&buf[0], pos, end)
        if r == S_DONE and k >= 0:  # the chunk is consumed: its buffer may be reused
            self._drop(k)
        return r

    cdef int _held_chunk(self, const unsigned char* base, Py_ssize_t pos,
                         Py_ssize_t end) noexcept:
        """Which chunk read ahead holds the lines of ``base[pos:end]`` (its worker done),
        or -1."""
        cdef Chunk* c
        cdef int k
        if base == NULL:
            return -1
        for k in range(2):
            c = &self.rd.chunks[k]
            if c.live and c.base == base and c.end == end and c.start <= pos:
                self._join(c)
                return k
        return -1

    cdef bint _line_at(self, Chunk* c, Py_ssize_t pos, size_t* at) noexcept:
        """Whether a line of ``c`` starts at ``pos`` (where the last scan left it, mostly),
        and which."""
        cdef size_t i = c.cur, lo = 0, hi = c.n
        if i < c.n and c.lines[i].start == pos:
            at[0] = i
            return True
        while lo < hi:  # the first line starting at or after pos
            i = (lo + hi) // 2
            if c.lines[i].start < pos:
                lo = i + 1
            else:
                hi = i
        at[0] = lo
        return lo < c.n and c.lines[lo].start == pos

    def owner_handle(self, str owner):
        """The handle of ``owner``, or None."""
        cdef bytes b = owner.encode("utf-8", "surrogatepass")
        cdef uint32_t h = self._owner(<const unsigned char*>b, len(b))
        return None if h == NO_OWNER else h

    def add_owner(self, str owner) -> int:
        """Register a new owner; returns its handle (handles count from 0)."""
        cdef bytes b = owner.encode("utf-8", "surrogatepass")
        cdef Py_ssize_t n = len(b)
        cdef size_t h, cap, i
        if self._owner(<const unsigned char*>b, n) != NO_OWNER:
            raise ValueError(f"owner {owner!r} is already known")
        if (self.n_owners + 1) * 2 > self.own_mask + 1:
            self._rehash_owners((self.own_mask + 1) * 2)
        if self.n_owners + 1 > self.own_cap:
            cap = next_cap(self.own_cap, self.n_owners + 1)
            self.own_off = <size_t*>resize(self.own_off, cap, sizeof(size_t))
            self.own_len = <uint32_t*>resize(self.own_len, cap, 4)
            self.own_hash = <uint64_t*>resize(self.own_hash, cap, 8)
            self.own_cap = cap
        if self.names_n + n > self.names_cap:
            self.names = <unsigned char*>grow(self.names, &self.names_cap, self.names_n + n, 1)
        memcpy(self.names + self.names_n, <const unsigned char*>b, n)
        i = self.n_owners
        self.own_off[i] = self.names_n
        self.own_len[i] = <uint32_t>n
        self.own_hash[i] = _hash_bytes(<const unsigned char*>b, n)
        self.names_n += n
        self.n_owners += 1
        h = self.own_hash[i] & self.own_mask
        while self.own_slots[h] != -1:
            h = (h + 1) & self.own_mask
        self.own_slots[h] = <int32_t>i
        return i

    def add_market(self, str name) -> int:
        """Register a market name (the Python path keeps its venue); returns its index."""
        cdef bytes b = name.encode("utf-8", "surrogatepass")
        cdef Py_ssize_t n = len(b)
        cdef size_t cap
        if self.n_markets + 1 > self.mk_cap:
            cap = next_cap(self.mk_cap, self.n_markets + 1)
            self.mk_off = <size_t*>resize(self.mk_off, cap, sizeof(size_t))
            self.mk_len = <uint32_t*>resize(self.mk_len, cap, 4)
            self.mk_cap = cap
        if self.names_n + n > self.names_cap:
            self.names = <unsigned char*>grow(self.names, &self.names_cap, self.names_n + n, 1)
        memcpy(self.names + self.names_n, <const unsigned char*>b, n)
        self.mk_off[self.n_markets] = self.names_n
        self.mk_len[self.n_markets] = <uint32_t>n
        self.names_n += n
        self.n_markets += 1
        return self.n_markets - 1

    cdef str _id(self, int32_t e):
        return self._ref_text(self.entries[e].id_ref)

    cdef str _ref_text(self, uint64_t r):
        if (r & 0xFF) == HEX64_REF:
            return _hex64_text(self.id_arena + (r >> 8))
        return PyUnicode_DecodeUTF8(<const char*>(self.id_arena + (r >> 8)),
                                    <Py_ssize_t>(r & 0xFF), "surrogatepass")

    cdef bint _same_id(self, Entry* en, const unsigned char* oid, Py_ssize_t n,
                       const unsigned char* packed) noexcept nogil:
        """Whether the entry's id is the text ``oid`` (n bytes; ``packed``: its 32 bytes
        if it is a 64-hex id, else NULL)."""
        cdef const unsigned char* raw = self.id_arena + (en.id_ref >> 8)
        cdef uint64_t length = en.id_ref & 0xFF
        if length != HEX64_REF:
            return <Py_ssize_t>length == n and memcmp(raw, oid, n) == 0
        return packed != NULL and memcmp(raw, packed, 32) == 0

    def entry(self, uint64_t key):
        """The order holding ``key``: (id, owner handle, market index, interval), or None.
        The interval is its auction's in call mode and None in cda, where no rule uses it."""
        self._tables()
        cdef int32_t e = self._find(key)
        cdef Entry* en
        cdef Auction* a
        if e == -1:
            return None
        en = &self.entries[e]
        if self.call:
            a = &self.auctions[en.where]
            return (self._id(e), en.owner, a.market, a.interval)
        return (self._id(e), en.owner, en.where, None)

    def put_order(self, uint64_t key, str oid, uint32_t owner, int32_t market, interval,
                  int side, int64_t price, int64_t qty, int64_t ts) -> None:
        """Record an accepted order as the holder of ``key`` (call mode: add its row)."""
        self._tables()
        cdef bytes b = oid.encode("utf-8", "surrogatepass")
        cdef int32_t a
        if not self.call:
            self._put(key, <const unsigned char*>b, len(b), owner, market)
            return
        if interval is None:
            raise ValueError("put_order: a call auction's order needs its interval")
        a = self._auction(interval, market)
        self._put(key, <const unsigned char*>b, len(b), owner, a)
        self._add_row(a, key, owner, side, price, qty, ts)

    def call_live(self, uint64_t key) -> bool:
        """call: is the holder of ``key`` still live (pending and not cancelled)?"""
        self._tables()
        cdef int32_t e = self._find(key)
        return e != -1 and self._call_live(e)

    def call_pending(self, uint64_t key) -> bool:
        """call: is the holder of ``key`` in an auction that has not cleared yet (cancelled
        or not)? Its key cannot pass to another order before then: the auction drops the
        rows of a cancelled key when it clears."""
        self._tables()
        cdef int32_t e = self._find(key)
        cdef int32_t a
        if e == -1:
            return False
        a = self.entries[e].where
        return a >= 0 and self.auctions[a].pending

    def call_cancel(self, uint64_t key) -> bool:
        """call: withdraw the holder of ``key`` if it is live; returns whether it was."""
        self._tables()
        cdef int32_t e = self._find(key)
        if e == -1 or not self._call_live(e):
            return False
        self._cancel_in(self.entries[e].where, key)
        return True

    @property
    def next_gate(self):
        """call: the smallest pending interval, or 2**63 when none is pending."""
        return self.next_gate_c if self.n_pend else 2**63

    def take_interval(self, int64_t interval) -> list:
        """call: remove the pending auctions of ``interval``; returns [(market index,
        (sides, prices, qtys, keys, owners, ts))] with the live rows as array columns."""
        self._tables()
        out = []
        cdef size_t j = 0
        cdef size_t k, n, r
        cdef int32_t i
        cdef Auction* a
        cdef carray.array sides, prices, qtys, keys, owners, tss
        while j < self.n_pend:
            i = self.pend[j]
            a = &self.auctions[i]
            if a.interval != interval:
                j += 1
                continue
            n = 0
            for k in range(a.n):
                if not self._cancelled(i, a.key[k]):
                    n += 1
            sides = carray.clone(array("B"), n, False)
            prices = carray.clone(array("q"), n, False)
            qtys = carray.clone(array("q"), n, False)
            keys = carray.clone(array("Q"), n, False)
            owners = carray.clone(array("I"), n, False)
            tss = carray.clone(array("q"), n, False)
            r = 0
            for k in range(a.n):
                if not self._cancelled(i, a.key[k]):
                    sides.data.as_uchars[r] = a.side[k]
                    (<int64_t*>prices.data.as_voidptr)[r] = a.price[k]
                    (<int64_t*>qtys.data.as_voidptr)[r] = a.qty[k]
                    (<uint64_t*>keys.data.as_voidptr)[r] = a.key[k]
                    (<uint32_t*>owners.data.as_voidptr)[r] = a.owner[k]
                    (<int64_t*>tss.data.as_voidptr)[r] = a.ts[k]
                    r += 1
            out.append((a.market, (sides, prices, qtys, keys, owners, tss)))
            a.pending = 0
            self._free_rows(a)
            self.n_pend -= 1
            self.pend[j] = self.pend[self.n_pend]
        self.last_auction = -1
        self.next_gate_c = INT64_MAX
        for j in range(self.n_pend):
            if self.auctions[self.pend[j]].interval < self.next_gate_c:
                self.next_gate_c = self.auctions[self.pend[j]].interval
        return out

    def id_refs(self, const uint64_t[::1] keys) -> array:
        """References to the ids of the orders holding ``keys`` now, 8 bytes each: where
        the id's bytes sit in the id arena, and how many (the arena only grows, so a
        reference stays good when another order takes its key over later). A fill keeps
        these instead of a str: :meth:`id_texts` makes the text when an output needs it."""
        self._tables()
        cdef Py_ssize_t i, n = keys.shape[0]
        cdef int32_t e
        cdef carray.array out = array("Q", bytes(8 * n))
        cdef uint64_t* ref = <uint64_t*>out.data.as_voidptr
        for i in range(n):
            if i + 8 < n:  # the slots are read at random: start the load 8 keys ahead
                wm_prefetch(&self.slots[mix(keys[i + 8]) & self.slot_mask])
            e = self._find(keys[i])
            if e == -1:
                raise KeyError(keys[i])
            ref[i] = self.entries[e].id_ref
        return out

    def id_texts(self, const uint64_t[::1] refs) -> list:
        """The ids that :meth:`id_refs` references name, as str."""
        cdef Py_ssize_t i
        cdef uint64_t r
        out = []
        for i in range(refs.shape[0]):
            r = refs[i]
            if (r & 0xFF) == HEX64_REF:
                out.append(_hex64_text(self.id_arena + (r >> 8)))
            else:
                out.append(PyUnicode_DecodeUTF8(<const char*>(self.id_arena + (r >> 8)),
                                                <Py_ssize_t>(r & 0xFF), "surrogatepass"))
        return out

    def id_utf8(self, const uint64_t[::1] refs) -> tuple:
        """The ids that :meth:`id_refs` references name, as the two buffers of an Arrow
        string column (replay's Parquet trades): the offsets (``array('i')``, one more than
        ``refs``) and the UTF-8 bytes of all the ids, joined. No str is made. At most 2**23
        references at a time (int32 offsets: an id has at most 128 bytes)."""
        cdef Py_ssize_t i, n = refs.shape[0]
        cdef uint64_t r
        cdef int32_t total = 0
        cdef int k
        if n > (1 << 23):
            raise ValueError("id_utf8: at most 2**23 references at a time")
        cdef carray.array offsets = array("i", bytes(4 * (n + 1)))
        cdef int32_t* off = <int32_t*>offsets.data.as_voidptr
        for i in range(n):
            r = refs[i]
            total += 64 if (r & 0xFF) == HEX64_REF else <int32_t>(r & 0xFF)
            off[i + 1] = total
        data = bytearray(total)
        if total == 0:
            return offsets, data
        cdef unsigned char[::1] view = data
        cdef unsigned char* out = &view[0]
        cdef const unsigned char* raw
        for i in range(n):
            r = refs[i]
            raw = self.id_arena + (r >> 8)
            if (r & 0xFF) == HEX64_REF:
                for k in range(32):
                    out[off[i] + 2 * k] = HEX_DIGITS[raw[k] >> 4]
                    out[off[i] + 2 * k + 1] = HEX_DIGITS[raw[k] & 15]
            else:
                memcpy(out + off[i], raw, r & 0xFF)
        return offsets, data

    @property
    def batch_size(self) -> int:
        return self.b_n

    def run_batch(self, book, rejects, const unsigned char[::1] buf not None, uint8_t code,
                  uint8_t form):
        """cda: run the batch through ``book.run``; returns (BatchResult, the ts of each
        fill, and the references of each fill's bid and ask ids, as :meth:`id_refs`
        gives them). The cancels whose order was no longer live go to ``rejects`` (a
        ``Rejects``) with ``code`` and ``form``, in line order: the first number of each
        is its order's id reference, its text its line in ``buf``, the buffer of the
        batch's lines."""
        self._tables()
        cdef size_t n = self.b_n
        cdef size_t i, n_refused = 0, total = 0, r
        cdef RejectRows rows
        cdef Py_ssize_t k, m
        if n == 0:
            raise ValueError("run_batch: the batch is empty")
        for i in range(n):  # a cancel may be refused: its line must be in buf
            if self.b_kind[i] == E_CANCEL and (self.b_start[i] < 0 or self.b_end[i] < self.b_start[i]
                                               or self.b_end[i] > buf.shape[0]):
                raise ValueError("run_batch: a line outside the buffer")
        res = book.run(<uint8_t[:n]>self.b_kind, <uint8_t[:n]>self.b_side,
                       <int64_t[:n]>self.b_price, <int64_t[:n]>self.b_qty,
                       <uint64_t[:n]>self.b_oid, <uint32_t[:n]>self.b_owner,
                       <uint8_t[:n]>self.b_tif)
        cdef const uint8_t[::1] status = res.status
        cdef const int64_t[::1] event = res.event
        for i in range(n):
            if status[i] == 0:
                if self.b_kind[i] == E_CANCEL:
                    self.accepted_cancels += 1
            elif self.b_kind[i] == E_CANCEL:
                n_refused += 1
                total += <size_t>(self.b_end[i] - self.b_start[i])
            else:
                raise RuntimeError(f"the book refused the order with key {self.b_oid[i]}")
        if n_refused:
            _reserve_rejects(rejects, n_refused, total, &rows)
            r = total = 0
            for i in range(n):
                if status[i] == 0 or self.b_kind[i] != E_CANCEL:
                    continue
                rows.line[r] = self.b_line[i]
                rows.code[r] = code
                rows.form[r] = form
                rows.numbers[3 * r] = <int64_t>self.b_ref[i]
                rows.numbers[3 * r + 1] = 0
                rows.numbers[3 * r + 2] = 0
                if self.b_end[i] > self.b_start[i]:
                    memcpy(rows.text + total, &buf[self.b_start[i]],
                           self.b_end[i] - self.b_start[i])
                total += <size_t>(self.b_end[i] - self.b_start[i])
                rows.text_end[r] = rows.text_at + <int64_t>total
                r += 1
        m = event.shape[0]
        cdef const uint64_t[::1] bid = res.bid
        cdef const uint64_t[::1] ask = res.ask
        if bid.shape[0] != m or ask.shape[0] != m:
            raise RuntimeError("the book's fill columns have different lengths")
        cdef carray.array fill_ts = array("q", bytes(8 * m))
        cdef carray.array bid_refs = array("Q", bytes(8 * m))
        cdef carray.array ask_refs = array("Q", bytes(8 * m))
        cdef int64_t* at = <int64_t*>fill_ts.data.as_voidptr
        cdef uint64_t* bref = <uint64_t*>bid_refs.data.as_voidptr
        cdef uint64_t* aref = <uint64_t*>ask_refs.data.as_voidptr
        cdef int64_t ev
        for k in range(m):
            ev = event[k]
            if ev < 0 or <size_t>ev >= n:
                raise RuntimeError(f"the book named event {ev} of a batch of {n}")
            at[k] = self.b_ts[ev]
            # One side of a fill is mostly the order of the event that caused it: its id
            # reference is the batch's, with no lookup; the other side is looked up, as
            # id_refs does (no entry changes hands within a batch: a key held already
            # sends its line to the Python path, which runs the batch first).
            if k + 8 < m:
                wm_prefetch(&self.slots[mix(bid[k + 8]) & self.slot_mask])
                wm_prefetch(&self.slots[mix(ask[k + 8]) & self.slot_mask])
            bref[k] = self.b_ref[ev] if bid[k] == self.b_oid[ev] else self._ref_of(bid[k])
            aref[k] = self.b_ref[ev] if ask[k] == self.b_oid[ev] else self._ref_of(ask[k])
        self.b_n = 0
        self.batch_market = -1
        return res, fill_ts, bid_refs, ask_refs

    cdef uint64_t _ref_of(self, uint64_t key) except? 0:
        """The id reference of the order holding ``key`` (KeyError if none)."""
        cdef int32_t e = self._find(key)
        if e == -1:
            raise KeyError(key)
        return self.entries[e].id_ref


# -- helpers over result columns --------------------------------------------------------------
def volume_turnover(const int64_t[::1] qty, const int64_t[::1] price) -> tuple:
    """(sum of qty, sum of qty * price) over the fills' columns, exact: a summary's volume
    and turnover in C (the Python sums took 0.1 s of a million-fill summary). Each
    product is below 2**62 (qty and price are below 2**31); the sums run in 128 bits."""
    cdef Py_ssize_t i, n = qty.shape[0]
    cdef uint64_t lo = 0, hi = 0, prod, vlo = 0, vhi = 0, q
    if price.shape[0] != n:
        raise ValueError("volume_turnover: columns of different lengths")
    for i in range(n):
        if qty[i] < 0 or price[i] < 0 or qty[i] >= (1 << 31) or price[i] >= (1 << 31):
            raise ValueError(f"volume_turnover: row {i} is out of range")
        q = <uint64_t>qty[i]
        vlo += q
        if vlo < q:
            vhi += 1
        prod = q * <uint64_t>price[i]
        lo += prod
        if lo < prod:
            hi += 1
    return (<object>vhi << 64) | vlo, (<object>hi << 64) | lo


def cda_buckets(const int64_t[::1] ts, const int64_t[::1] market_starts, list market_values,
                const int64_t[::1] qty, const int64_t[::1] price, int64_t length) -> dict:
    """cda intervals.csv: {(interval start, market): [volume, turnover, fills]} over the
    fills' columns (ts, qty, price as int64 arrays; the market as runs: each run's first
    row and its value, replay.Runs), bucketing each fill by the interval of its ts. Sums
    run in C over runs of fills with the same bucket (turnover in 128 bits) and are added
    to the dict as Python ints when the bucket changes."""
    cdef Py_ssize_t n = ts.shape[0]
    cdef Py_ssize_t i, run = -1, n_runs = market_starts.shape[0]
    cdef int64_t t, q, p, start = 0, prev_start = 0
    cdef int64_t vol = 0, fills = 0
    cdef uint64_t lo = 0, hi = 0, prod
    cdef object m = None, prev_m = None
    cdef dict out = {}
    if (qty.shape[0] != n or price.shape[0] != n or length <= 0
            or len(market_values) != n_runs or (n and (n_runs == 0 or market_starts[0] != 0))):
        raise ValueError("cda_buckets: columns of different lengths or a bad length")
    for i in range(n + 1):
        if i < n:
            t = ts[i]
            if run + 1 < n_runs and market_starts[run + 1] == i:
                run += 1
                m = market_values[run]
            start = t - t % length
        if fills and (i == n or start != prev_start or (m is not prev_m and m != prev_m)):
            b = out.get((prev_start, prev_m))
            if b is None:
                b = out[(prev_start, prev_m)] = [0, 0, 0]
            b[0] += vol
            b[1] += (<object>hi << 64) | lo
            b[2] += fills
            vol = 0
            fills = 0
            lo = 0
            hi = 0
        if i == n:
            break
        q = qty[i]
        p = price[i]
        prod = <uint64_t>(q * p)  # both below 2**31: the product fits
        lo += prod
        if lo < prod:
            hi += 1
        vol += q
        fills += 1
        prev_start = start
        prev_m = m
    return out
