# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: language = c++
"""The matching engine: a continuous double auction (`Book`) and a call auction
(`CallAuction`) under Energo's caps, with the hot loops in typed C.

Semantics are documented in docs/matching.md; `wattmesh.matching.reference` is the plain
Python model of the same rules that the tests compare this engine against.

Layout in memory (a `Book`):
- orders live in a pool of C structs, linked FIFO per price level, found by key through
  an open-addressing hash table (a key and its pool slot in one 16-byte slot; once the
  table outgrows the caches, `run` prefetches the slot of the id a few rows ahead);
- price levels live in a pool of C structs too (a level keeps its slot while others come
  and go; each order knows its level), each side's linked in priority order from its best
  level, so walks, fills and cancels never search for a level;
- each side finds a price's level, and where a new level goes, through a sorted array of
  its levels' keys (each with its level's slot, in one int64) cut into chunks of at most
  64, with a directory of chunks and each one's largest entry: a new or emptied level
  anywhere in the book moves at most a chunk's entries, and the top chunk is checked
  first. (One sorted array of levels made each new level at a random depth move every
  better level: a fifth of a replay of spread-out prices.)
- fills go to a growable C buffer; Python objects are made only when asked for.
"""

cimport cpython.array as carray
cimport cython
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove, memset

from _native cimport grow, grow_scratch, mix, next_cap, resize, wm_prefetch  # _native.pxd

import weakref
from array import array

from wattmesh.matching.types import (
    BatchResult,
    Clearing,
    ClearingArrays,
    Fill,
    Quote,
    RestingOrder,
)

cdef extern from * nogil:
    """
    #include <algorithm>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    /* One order in a call auction's priority order. It carries what the commit and the
       walk read, so after the sort they run over this array alone, front to back. */
    struct wm_key { int64_t ts; uint64_t oid; int32_t pkey; uint32_t owner; int32_t qty;
                    int32_t exec_qty; };  /* 32 bytes: the sorts move every key */
    struct wm_key_less {  /* a functor, so std::sort inlines the comparison */
        bool operator()(const wm_key& a, const wm_key& b) const {
            if (a.pkey != b.pkey) return a.pkey < b.pkey;
            if (a.ts != b.ts) return a.ts < b.ts;
            return a.oid < b.oid;
        }
    };
    /* Sort each run of equal prices, usually a handful of keys, by the full key. */
    static inline void wm_sort_price_runs(wm_key* k, size_t n) {
        size_t i = 0;
        while (i < n) {
            size_t j = i + 1;
            while (j < n && k[j].pkey == k[i].pkey) j++;
            if (j - i > 1) std::sort(k + i, k + j, wm_key_less());
            i = j;
        }
    }
    /* Sort by (pkey, ts, oid). Prices span a small range, so a stable LSD radix sort on
       pkey (11-bit digits, only as many passes as the range needs) puts the keys in price
       order; then each run of equal prices, usually short, is sorted by the full key.
       `tmp` holds n keys: the caller keeps it across clearings, so that a million keys'
       worth of memory is not faulted in again each time. */
    static inline void wm_sort_keys(wm_key* k, size_t n, wm_key* tmp) {
        if (n < 2) return;
        if (n <= 128) {  /* a radix pass costs its 2048 counters, more than this sort */
            std::sort(k, k + n, wm_key_less());
            return;
        }
        int64_t lo = k[0].pkey, hi = k[0].pkey;
        for (size_t i = 1; i < n; i++) {
            if (k[i].pkey < lo) lo = k[i].pkey;
            if (k[i].pkey > hi) hi = k[i].pkey;
        }
        uint64_t range = (uint64_t)(hi - lo);
        wm_key* src = k;
        wm_key* dst = tmp;
        for (int shift = 0; shift < 64 && (range >> shift); shift += 11) {
            size_t count[2048] = {0};
            for (size_t i = 0; i < n; i++) count[((uint64_t)(src[i].pkey - lo) >> shift) & 2047]++;
            size_t pos = 0;
            for (int d = 0; d < 2048; d++) { size_t c = count[d]; count[d] = pos; pos += c; }
            for (size_t i = 0; i < n; i++) dst[count[((uint64_t)(src[i].pkey - lo) >> shift) & 2047]++] = src[i];
            wm_key* t = src; src = dst; dst = t;
        }
        if (src != k) memcpy(k, src, n * sizeof(wm_key));
        wm_sort_price_runs(k, n);
    }
    /* Keys built straight from the columns, each side's placed in order of its coarse
       digit: the highest 11-bit digit of the side's key ((uint32)pkey: bids' -price
       wraps above every ask price and still falls as the price rises) in which two of its
       keys differ (`bid_varying`/`ask_varying`: the key bits that vary). One pass, and
       the buckets are few enough (at most 2048, usually far fewer) that its writes stay in
       cache. Each bucket is then a contiguous range of keys, every one of them before
       every key of the next bucket in priority, and is sorted by wm_sort_keys only when
       the walk reaches it (in cache: a bucket is a few thousand keys when prices are
       spread, one price when they are not), so the keys of prices that cannot trade are
       never sorted. Bids go to keys[0, nb), asks to keys[nb, n); `ends` gets 2 * 2048
       bucket ends, a side's in ascending digit order (absolute positions). `exec_qty`
       starts at `qty`, as without caps. Side 0 is a bid (BID). The caller has checked
       every row. */
    static inline void wm_bucket_place(const uint8_t* sides, const int64_t* prices,
                                       const int64_t* qtys, const uint64_t* oids,
                                       const uint32_t* owners, const int64_t* ts, size_t n,
                                       size_t nb, uint32_t bid_varying, uint32_t ask_varying,
                                       wm_key* keys, size_t* ends) {
        size_t (*count)[2048] = (size_t (*)[2048])ends;
        uint32_t varying[2] = {bid_varying, ask_varying};
        size_t base[2] = {0, nb};
        int shift[2] = {0, 0};
        for (int s = 0; s < 2; s++) {
            for (int d = 2; d > 0; d--)
                if ((varying[s] >> (11 * d)) & 2047) { shift[s] = 11 * d; break; }
        }
        memset(ends, 0, 2 * 2048 * sizeof(size_t));
        for (size_t i = 0; i < n; i++) {
            int s = sides[i] != 0;
            uint32_t k = s ? (uint32_t)prices[i] : (uint32_t)-prices[i];
            count[s][(k >> shift[s]) & 2047]++;
        }
        for (int s = 0; s < 2; s++) {
            size_t pos = base[s];
            for (int v = 0; v < 2048; v++) {
                size_t c = count[s][v]; count[s][v] = pos; pos += c;
            }
        }
        for (size_t i = 0; i < n; i++) {
            int s = sides[i] != 0;
            int64_t price = prices[i];
            int32_t pkey = s ? (int32_t)price : (int32_t)-price;
            wm_key* out = &keys[count[s][((uint32_t)pkey >> shift[s]) & 2047]++];
            out->pkey = pkey;
            out->ts = ts ? ts[i] : 0;
            out->oid = oids[i];
            out->owner = owners ? owners[i] : 0;
            out->qty = (int32_t)qtys[i];
            out->exec_qty = (int32_t)qtys[i];
        }
        /* count[s][v] is now the end of bucket v of side s */
    }
    /* Whether an id occurs twice among n (then *dup is one). One pass puts the ids into
       2048 buckets (wm_dup_bucket: the top 11 bits of a multiplicative hash, so ids of any
       shape spread), so that the writes stay in cache; then each bucket's ids go into a
       small open-addressing table, a power of two at least twice the bucket (the caller
       gives `table` room for four times the largest), which stays in L1 for a usual
       bucket of a few hundred ids. The table hashes with another multiplier, so ids made
       to share a bucket do not share a slot for it; ids made to collide in a table make
       that bucket fall back to a sort (see the probe budget below): n log n at worst.
       `start[b + 1]` holds how many ids fall in bucket b (the caller counts them in its
       pass over the rows); `buf` holds n ids. */
    static inline size_t wm_dup_bucket(uint64_t id) {
        return (size_t)((id * 0xD6E8FEB86659FD93ULL) >> 53);
    }
    static inline size_t wm_dup_buckets(const uint64_t* ids, size_t n, uint64_t* buf,
                                        size_t* start) {
        size_t largest = 0;
        start[0] = 0;
        for (size_t d = 0; d < 2048; d++) {
            if (start[d + 1] > largest) largest = start[d + 1];
            start[d + 1] += start[d];
        }
        for (size_t i = 0; i < n; i++) buf[start[wm_dup_bucket(ids[i])]++] = ids[i];
        return largest;  /* start[d] is now the end of bucket d */
    }
    static inline int wm_find_duplicate(uint64_t* buf, const size_t* end, uint64_t* table,
                                        uint64_t* dup) {
        size_t from = 0;
        for (size_t d = 0; d < 2048; d++) {
            size_t to = end[d], m = to - from;
            if (m > 1) {
                int bits = 4;
                while (((size_t)1 << bits) < 2 * m) bits++;
                size_t mask = ((size_t)1 << bits) - 1;
                /* Ids chosen to collide (the slot is a fixed function of the id) would make
                   the probing quadratic: past this many probes the bucket is sorted
                   instead, so the worst case stays n log n. */
                size_t budget = 8 * m + 64;
                int zeros = 0;  /* 0 marks an empty slot, so id 0 is counted apart */
                memset(table, 0, (mask + 1) * sizeof(uint64_t));
                for (size_t i = from; i < to && budget; i++) {
                    uint64_t id = buf[i];
                    if (id == 0) {
                        if (zeros++) { *dup = 0; return 1; }
                        continue;
                    }
                    size_t h = (size_t)((id * 0x9E3779B97F4A7C15ULL) >> (64 - bits));
                    while (table[h] && budget) {
                        if (table[h] == id) { *dup = id; return 1; }
                        h = (h + 1) & mask;
                        budget--;
                    }
                    table[h] = id;
                }
                if (!budget) {
                    std::sort(buf + from, buf + to);
                    for (size_t i = from + 1; i < to; i++)
                        if (buf[i] == buf[i - 1]) { *dup = buf[i]; return 1; }
                }
            }
            from = to;
        }
        return 0;
    }
    /* The first of keys[0, n) (ascending, n >= 1, keys[n - 1] >= key) that is at least
       key. Branch-free: each halving picks its half arithmetically, so the search costs
       no mispredicted branches (which half a level's key falls in is a coin toss). */
    static inline int wm_lower_bound(const int64_t* keys, int n, int64_t key) {
        const int64_t* base = keys;
        while (n > 1) {
            int half = n >> 1;
            base += (base[half - 1] < key) * half;  /* no branch: setcc and a multiply */
            n -= half;
        }
        return (int)(base - keys);
    }
    """
    ctypedef struct wm_key:
        int64_t ts
        uint64_t oid
        int32_t pkey  # -price for bids, price for asks: prices fit 31 bits (MAX_PRICE)
        uint32_t owner
        int32_t qty
        int32_t exec_qty
    void wm_sort_keys(wm_key* k, size_t n, wm_key* tmp)
    void wm_bucket_place(const uint8_t* sides, const int64_t* prices, const int64_t* qtys,
                         const uint64_t* oids, const uint32_t* owners, const int64_t* ts,
                         size_t n, size_t nb, uint32_t bid_varying, uint32_t ask_varying,
                         wm_key* keys, size_t* ends)
    size_t wm_dup_bucket(uint64_t id)
    size_t wm_dup_buckets(const uint64_t* ids, size_t n, uint64_t* buf, size_t* start)
    int wm_find_duplicate(uint64_t* buf, const size_t* end, uint64_t* table, uint64_t* dup)
    int wm_lower_bound(const int64_t* keys, int n, int64_t key)

# Public constants (also exported by wattmesh.matching).
BID = 0
ASK = 1
GTC = 0
IOC = 1
FOK = 2
LIMIT = 0
CANCEL = 1
MARKET = 2
REDUCE = 3
STP_NONE = 0
STP_CANCEL_RESTING = 1
STP_CANCEL_INCOMING = 2
#: Account handles are dense small integers (they index arrays): 0 .. MAX_ACCOUNT_OWNER-1.
MAX_ACCOUNT_OWNER = 1 << 24
#: Largest price and quantity the engine accepts: their product stays inside int64.
MAX_PRICE = (1 << 31) - 1
MAX_QTY = (1 << 31) - 1

cdef enum:
    C_BID = 0
    C_ASK = 1
    C_GTC = 0
    C_IOC = 1
    C_FOK = 2
    K_LIMIT = 0
    K_CANCEL = 1
    K_MARKET = 2
    K_REDUCE = 3
    S_NONE = 0
    S_RESTING = 1
    S_INCOMING = 2
    NO_AGGRESSOR = 255

cdef int64_t C_MAX_PRICE = (1 << 31) - 1
cdef int64_t C_MAX_QTY = (1 << 31) - 1
cdef int64_t UNLIMITED = (<int64_t>1) << 62
cdef int32_t NIL = -1

_STP_NAMES = {"none": 0, "cancel-resting": 1, "cancel-incoming": 2}


cdef int _stp_code(object stp) except -1:
    if isinstance(stp, str):
        code = _STP_NAMES.get(stp)
        if code is None:
            raise ValueError(
                f"stp: must be one of none, cancel-resting, cancel-incoming; got {stp!r}"
            )
        return code
    if stp in (0, 1, 2):
        return stp
    raise ValueError(f"stp: must be one of none, cancel-resting, cancel-incoming; got {stp!r}")




ctypedef struct FillRec:
    uint64_t bid
    uint64_t ask
    int64_t price
    int64_t qty
    int64_t event
    uint32_t buyer
    uint32_t seller
    uint32_t market      # the book's index in its Markets (0 for a book on its own)
    uint8_t aggressor


cdef class _FillBuffer:
    """Fills recorded in C, turned into Python objects or arrays only on request, and the
    event counter they are stamped with. Books of one `Markets` share one buffer, so their
    fills and events form one sequence."""

    cdef FillRec* recs
    cdef size_t n
    cdef size_t cap
    cdef int64_t event

    def __dealloc__(self):
        free(self.recs)

    cdef inline int push(self, uint64_t bid, uint64_t ask, int64_t price, int64_t qty,
                         uint32_t buyer, uint32_t seller, uint8_t aggressor,
                         int64_t event, uint32_t market=0) except -1:
        if self.n == self.cap:
            self.recs = <FillRec*>grow(self.recs, &self.cap, self.n + 1, sizeof(FillRec))
        cdef FillRec* r = &self.recs[self.n]
        r.bid = bid
        r.ask = ask
        r.price = price
        r.qty = qty
        r.buyer = buyer
        r.seller = seller
        r.aggressor = aggressor
        r.event = event
        r.market = market
        self.n += 1
        return 0

    cdef list to_list(self, size_t start):
        cdef list out = []
        cdef size_t i
        cdef FillRec* r
        for i in range(start, self.n):
            r = &self.recs[i]
            out.append(Fill(r.bid, r.ask, r.price, r.qty, r.buyer, r.seller,
                            None if r.aggressor == NO_AGGRESSOR else r.aggressor))
        return out

    cdef list to_market_list(self, size_t start, list names):
        """(market name, Fill) per fill, for a `Markets`."""
        cdef list out = []
        cdef size_t i
        cdef FillRec* r
        for i in range(start, self.n):
            r = &self.recs[i]
            out.append((names[r.market], Fill(r.bid, r.ask, r.price, r.qty, r.buyer, r.seller,
                                              None if r.aggressor == NO_AGGRESSOR
                                              else r.aggressor)))
        return out

    cdef tuple to_columns(self, size_t start, int64_t event_base):
        """Columns event, bid, ask, price, qty, buyer, seller, aggressor, market as
        array.array."""
        cdef size_t n = self.n - start
        cdef size_t i
        cdef carray.array ev = _new_array("q", n)
        cdef carray.array bid = _new_array("Q", n)
        cdef carray.array ask = _new_array("Q", n)
        cdef carray.array price = _new_array("q", n)
        cdef carray.array qty = _new_array("q", n)
        cdef carray.array buyer = _new_array("I", n)
        cdef carray.array seller = _new_array("I", n)
        cdef carray.array aggr = _new_array("B", n)
        cdef carray.array market = _new_array("I", n)
        cdef uint32_t* p_market = <uint32_t*>market.data.as_voidptr
        cdef int64_t* p_ev = <int64_t*>ev.data.as_voidptr
        cdef uint64_t* p_bid = <uint64_t*>bid.data.as_voidptr
        cdef uint64_t* p_ask = <uint64_t*>ask.data.as_voidptr
        cdef int64_t* p_price = <int64_t*>price.data.as_voidptr
        cdef int64_t* p_qty = <int64_t*>qty.data.as_voidptr
        cdef uint32_t* p_buyer = <uint32_t*>buyer.data.as_voidptr
        cdef uint32_t* p_seller = <uint32_t*>seller.data.as_voidptr
        cdef uint8_t* p_aggr = <uint8_t*>aggr.data.as_voidptr
        cdef FillRec* r
        for i in range(n):
            r = &self.recs[start + i]
            p_ev[i] = r.event - event_base
            p_bid[i] = r.bid
            p_ask[i] = r.ask
            p_price[i] = r.price
            p_qty[i] = r.qty
            p_buyer[i] = r.buyer
            p_seller[i] = r.seller
            p_aggr[i] = r.aggressor
            p_market[i] = r.market
        return (ev, bid, ask, price, qty, buyer, seller, aggr, market)


cdef class _PairColumns:
    """One call-auction clearing's fills as the columns bid, ask, qty, buyer, seller
    (array.array), written by the walk straight from C. `open` makes room for as many
    fills as a clearing can make (each fill uses up a bid or an ask, so fewer than its
    orders), and `close` cuts the columns to the fills made: no record per fill to copy
    out afterwards, and pages only for the fills made."""

    cdef carray.array bid, ask, qty, buyer, seller
    cdef uint64_t* p_bid
    cdef uint64_t* p_ask
    cdef int64_t* p_qty
    cdef uint32_t* p_buyer
    cdef uint32_t* p_seller
    cdef size_t n

    cdef int open(self, size_t room) except -1:
        self.bid = _new_array("Q", room)
        self.ask = _new_array("Q", room)
        self.qty = _new_array("q", room)
        self.buyer = _new_array("I", room)
        self.seller = _new_array("I", room)
        self.n = 0
        self._point()
        return 0

    cdef void _point(self) noexcept:
        self.p_bid = <uint64_t*>self.bid.data.as_voidptr
        self.p_ask = <uint64_t*>self.ask.data.as_voidptr
        self.p_qty = <int64_t*>self.qty.data.as_voidptr
        self.p_buyer = <uint32_t*>self.buyer.data.as_voidptr
        self.p_seller = <uint32_t*>self.seller.data.as_voidptr

    cdef inline void push(self, uint64_t bid, uint64_t ask, int64_t qty, uint32_t buyer,
                          uint32_t seller) noexcept nogil:
        self.p_bid[self.n] = bid
        self.p_ask[self.n] = ask
        self.p_qty[self.n] = qty
        self.p_buyer[self.n] = buyer
        self.p_seller[self.n] = seller
        self.n += 1

    cdef int close(self) except -1:
        for column in (self.bid, self.ask, self.qty, self.buyer, self.seller):
            carray.resize(column, self.n)
        self._point()  # resizing may move the data
        return 0

    cdef list to_list(self, int64_t price):
        cdef size_t k
        return [Fill(self.p_bid[k], self.p_ask[k], price, self.p_qty[k], self.p_buyer[k],
                     self.p_seller[k], None) for k in range(self.n)]


cdef dict _TEMPLATES = {tc: array(tc) for tc in "qQIB"}


cdef carray.array _new_array(str typecode, size_t n):
    """An array.array of n items (uninitialised) to fill from C."""
    return carray.clone(_TEMPLATES[typecode], n, False)


cdef carray.array _array(str typecode, void* data, size_t n):
    cdef carray.array a = _new_array(typecode, n)
    memcpy(a.data.as_voidptr, data, n * a.ob_descr.itemsize)
    return a


# ----------------------------------------------------------------------------- hash map
ctypedef struct KeySlot:
    uint64_t key
    int32_t val          # NIL: the slot is empty


cdef class _KeyMap:
    """uint64 key -> int32 slot, open addressing with linear probing and backward-shift
    deletion (no tombstones, so lookups stay short after many cancels). A key and its
    value share a 16-byte slot, so a lookup that finds its key at home reads one cache
    line (with keys and values in two arrays, it missed the cache twice)."""

    cdef KeySlot* slots
    cdef size_t mask
    cdef size_t count

    def __cinit__(self):
        self._alloc(64)

    def __dealloc__(self):
        free(self.slots)

    cdef int _alloc(self, size_t cap) except -1:
        self.slots = <KeySlot*>malloc(cap * sizeof(KeySlot))
        if self.slots == NULL:
            raise MemoryError()
        self.mask = cap - 1
        self.clear()
        return 0

    cdef void clear(self) noexcept:
        cdef size_t i
        for i in range(self.mask + 1):
            self.slots[i].val = NIL
        self.count = 0

    cdef int reserve(self, size_t n) except -1:
        """Make room for n keys at once (no rehash while they go in). Empty map only."""
        cdef size_t cap = self.mask + 1
        while cap < 2 * n + 2:
            cap *= 2
        if cap != self.mask + 1:
            free(self.slots)
            self._alloc(cap)
        return 0

    cdef inline void prefetch(self, uint64_t key) noexcept nogil:
        """Start loading the slot `key` hashes to, for a lookup a little later."""
        wm_prefetch(&self.slots[mix(key) & self.mask])

    cdef inline int32_t get(self, uint64_t key) noexcept nogil:
        cdef size_t h = mix(key) & self.mask
        cdef KeySlot* s = &self.slots[h]
        while s.val != NIL:
            if s.key == key:
                return s.val
            h = (h + 1) & self.mask
            s = &self.slots[h]
        return NIL

    @cython.final
    cdef int put(self, uint64_t key, int32_t val) except -1:
        """Insert a key known to be absent."""
        if (self.count + 1) * 2 > self.mask + 1:
            self._rehash()
        cdef size_t h = mix(key) & self.mask
        while self.slots[h].val != NIL:
            h = (h + 1) & self.mask
        self.slots[h].key = key
        self.slots[h].val = val
        self.count += 1
        return 0

    @cython.final
    cdef int _rehash(self) except -1:
        cdef KeySlot* old = self.slots
        cdef size_t old_cap = self.mask + 1
        cdef size_t i
        cdef size_t n = self.count
        self._alloc(old_cap * 2)
        for i in range(old_cap):
            if old[i].val != NIL:
                self.put(old[i].key, old[i].val)
        self.count = n
        free(old)
        return 0

    cdef inline void remove(self, uint64_t key) noexcept nogil:
        cdef size_t h = mix(key) & self.mask
        cdef size_t j, home
        while self.slots[h].val != NIL:
            if self.slots[h].key == key:
                break
            h = (h + 1) & self.mask
        else:
            return
        self.count -= 1
        # Backward shift: pull later entries of the probe run into the hole.
        j = h
        while True:
            j = (j + 1) & self.mask
            if self.slots[j].val == NIL:
                break
            home = mix(self.slots[j].key) & self.mask
            # Move entry j into hole h unless its home lies cyclically in (h, j].
            if (j > h and (home <= h or home > j)) or (j < h and (home <= h and home > j)):
                self.slots[h] = self.slots[j]
                h = j
        self.slots[h].val = NIL


# ----------------------------------------------------------------------------- accounts
cdef class Accounts:
    """Energy (Wh), money (nano-currency) and Bmax (Wh, or None) per owner handle.

    Shared by the books and auctions that trade for these owners; they update it fill by
    fill. An owner without an account trades without limits.
    """

    cdef int64_t* energy
    cdef int64_t* money
    cdef int64_t* bmax        # -1: no Bmax cap
    cdef uint8_t* present
    # Scratch copies for dry runs (FOK preflight) and per-household commitment walks.
    cdef int64_t* s_energy
    cdef int64_t* s_money
    cdef uint32_t* stamp
    cdef uint32_t cur_stamp
    cdef uint64_t* owner_version  # the value of `version` at each owner's last change
    cdef size_t n             # handles 0..n-1 have slots
    cdef size_t cap
    cdef public uint64_t version  # bumped by every change: set() and every fill
    cdef object user          # weak reference to the Book or Markets trading on them

    def __dealloc__(self):
        free(self.energy); free(self.money); free(self.bmax); free(self.present)
        free(self.s_energy); free(self.s_money); free(self.stamp); free(self.owner_version)

    cdef int _claim(self, object user) except -1:
        """Books that share accounts must re-cross together, so they belong to one
        `Markets`: refuse a second, unrelated user."""
        if self.user is not None:
            other = self.user()
            if other is not None and other is not user:
                raise ValueError(
                    "accounts: already used by another Book or Markets; books that share"
                    " accounts belong to one Markets (docs/matching.md)"
                )
        self.user = weakref.ref(user)
        return 0

    cdef int _ensure(self, size_t handle) except -1:
        cdef size_t old = self.cap
        cdef size_t new_cap
        if handle < self.n:
            return 0
        if handle >= self.cap:
            # The per-owner columns grow together, to one capacity.
            new_cap = next_cap(self.cap, handle + 1)
            self.energy = <int64_t*>resize(self.energy, new_cap, 8)
            self.money = <int64_t*>resize(self.money, new_cap, 8)
            self.bmax = <int64_t*>resize(self.bmax, new_cap, 8)
            self.s_energy = <int64_t*>resize(self.s_energy, new_cap, 8)
            self.s_money = <int64_t*>resize(self.s_money, new_cap, 8)
            self.stamp = <uint32_t*>resize(self.stamp, new_cap, 4)
            self.owner_version = <uint64_t*>resize(self.owner_version, new_cap, 8)
            self.present = <uint8_t*>resize(self.present, new_cap, 1)
            self.cap = new_cap
            memset(self.present + old, 0, new_cap - old)
            memset(self.stamp + old, 0, (new_cap - old) * 4)
            memset(self.owner_version + old, 0, (new_cap - old) * 8)
        self.n = handle + 1
        return 0

    def set(self, owner: int, energy: int, money: int, bmax: int | None = None) -> None:
        """Set an owner's balances (an account line, a deposit, a meter reading)."""
        if owner < 0 or owner >= MAX_ACCOUNT_OWNER:
            # Handles index arrays: they are meant to be dense small integers.
            raise ValueError(
                f"owner: an account handle must be in 0..{MAX_ACCOUNT_OWNER - 1}, got {owner}"
            )
        if energy < 0 or energy >= UNLIMITED:
            raise ValueError(f"energy: must be a non-negative integer below 2**62, got {energy}")
        if money < 0 or money >= UNLIMITED:
            raise ValueError(f"money: must be a non-negative integer below 2**62, got {money}")
        if bmax is not None and (bmax <= 0 or bmax >= UNLIMITED):
            raise ValueError(f"bmax: must be a positive integer or None, got {bmax}")
        if bmax is not None and energy > bmax:
            raise ValueError(f"energy: {energy} is above bmax {bmax}")
        self._ensure(owner)
        self.energy[owner] = energy
        self.money[owner] = money
        self.bmax[owner] = -1 if bmax is None else bmax
        self.present[owner] = 1
        self.version += 1
        self.owner_version[owner] = self.version

    def get(self, owner: int) -> tuple[int, int, int | None] | None:
        """(energy, money, bmax) of an owner, or None if it has no account."""
        if owner < 0 or <size_t>owner >= self.n or not self.present[owner]:
            return None
        b = self.bmax[owner]
        return (self.energy[owner], self.money[owner], None if b < 0 else b)

    def owners(self) -> list[int]:
        """Handles that have an account, ascending."""
        return [i for i in range(self.n) if self.present[i]]

    def __contains__(self, owner) -> bool:
        return 0 <= owner < self.n and self.present[owner] == 1

    def __len__(self) -> int:
        return sum(self.present[i] for i in range(self.n))

    # -- C-level helpers used by the engines ------------------------------------------
    cdef inline bint has(self, uint32_t owner) noexcept nogil:
        return owner < self.n and self.present[owner]

    cdef inline void new_scratch(self) noexcept nogil:
        self.cur_stamp += 1
        if self.cur_stamp == 0:  # wrapped: forget every old stamp
            memset(self.stamp, 0, self.cap * 4)
            self.cur_stamp = 1

    cdef inline void load(self, uint32_t owner) noexcept nogil:
        if self.stamp[owner] != self.cur_stamp:
            self.stamp[owner] = self.cur_stamp
            self.s_energy[owner] = self.energy[owner]
            self.s_money[owner] = self.money[owner]

    cdef inline int64_t sell_cap(self, uint32_t owner, bint dry) noexcept nogil:
        """Energy the owner can still sell: its energy, and no more than keeps its money
        within int64 even at the highest price (a limit no real balance comes near)."""
        cdef int64_t e, m, c
        if not self.has(owner):
            return UNLIMITED
        if dry:
            self.load(owner)
            e = self.s_energy[owner]
            m = self.s_money[owner]
        else:
            e = self.energy[owner]
            m = self.money[owner]
        c = (INT64_MAX - m) // C_MAX_PRICE
        return e if e < c else c

    cdef inline int64_t buy_cap(self, uint32_t owner, int64_t price, bint dry) noexcept nogil:
        """Energy the owner can still buy at `price`: Bmax headroom (without Bmax: what
        keeps its energy within int64) and what its money pays for."""
        cdef int64_t e, m, c
        if not self.has(owner):
            return UNLIMITED
        if dry:
            self.load(owner)
            e = self.s_energy[owner]
            m = self.s_money[owner]
        else:
            e = self.energy[owner]
            m = self.money[owner]
        c = m // price if price > 0 else UNLIMITED
        if self.bmax[owner] >= 0:
            if self.bmax[owner] - e < c:
                c = self.bmax[owner] - e
        elif INT64_MAX - e < c:
            c = INT64_MAX - e
        return c if c > 0 else 0

    cdef inline void settle(self, uint32_t buyer, uint32_t seller, int64_t qty,
                            int64_t price, bint dry) noexcept nogil:
        """Move qty Wh seller -> buyer and qty*price nano-currency buyer -> seller."""
        cdef int64_t cost = qty * price
        if dry:
            if self.has(buyer):
                self.load(buyer)
                self.s_energy[buyer] += qty
                self.s_money[buyer] -= cost
            if self.has(seller):
                self.load(seller)
                self.s_energy[seller] -= qty
                self.s_money[seller] += cost
            return
        self.version += 1  # books sharing these accounts re-cross after this event
        if self.has(buyer):
            self.energy[buyer] += qty
            self.money[buyer] -= cost
            self.owner_version[buyer] = self.version
        if self.has(seller):
            self.energy[seller] -= qty
            self.money[seller] += cost
            self.owner_version[seller] = self.version


# ----------------------------------------------------------------------------- price levels
# A side's price levels by key, for finding a price's level and where a new level goes: a
# sorted array cut into chunks of at most CHUNK entries (as sortedcontainers' list of
# lists), with a directory of the chunks in key order and each one's largest entry. An
# entry is a level's key and slot in one int64, key * 2**32 + slot (keys fit 32 bits,
# slots 31; keys are distinct, so entries sort as their keys): one array to search and
# to move. Adding or removing a level moves at most a chunk's entries, wherever its price
# is; a full chunk is split in two halves, and a chunk that empties, or that fits with
# its lower neighbour in half a chunk, leaves the directory. The book walks its levels
# through their own links (`Level.worse`), not through this index.
cdef enum:
    CHUNK = 64

cdef int64_t KEY_UNIT = (<int64_t>1) << 32  # an entry's key unit: key * KEY_UNIT + slot

ctypedef struct LevelChunk:
    int64_t entries[CHUNK]  # ascending
    int32_t n               # entries in use; a free chunk: the next free chunk

ctypedef struct LevelIndex:
    LevelChunk* chunks   # a pool: a chunk keeps its slot while it is in the directory
    size_t n_chunks
    size_t cap_chunks
    int32_t free_chunk   # first free chunk, or NIL
    int32_t* dir         # the chunks in use, in key order
    int64_t* dmax        # the largest entry of each
    size_t n_dir
    size_t cap_dir


cdef void _lix_free(LevelIndex* x) noexcept nogil:
    free(x.chunks)
    free(x.dir)
    free(x.dmax)


cdef inline int32_t _entry_level(int64_t entry) noexcept nogil:
    """The level slot of an entry: its low 32 bits."""
    return <int32_t><uint32_t><uint64_t>entry


cdef inline bint _has_key(int64_t entry, int64_t low) noexcept nogil:
    """Is `entry` one of key `low` / KEY_UNIT (its slot in the low 32 bits)?"""
    return <uint64_t>(entry - low) < <uint64_t>KEY_UNIT


cdef inline size_t _lix_chunk_of(LevelIndex* x, int64_t low) noexcept nogil:
    """Where in the directory the chunk for entry `low` is: the first whose largest entry
    is at least `low`, else the last. The directory is not empty."""
    cdef size_t n = x.n_dir
    # The top chunk holds the best levels, which see the most traffic: check it first.
    if n == 1 or x.dmax[n - 2] < low:
        return n - 1
    return <size_t>wm_lower_bound(x.dmax, <int>(n - 1), low)


cdef inline int _chunk_pos(LevelChunk* c, int64_t low) noexcept nogil:
    """The first position in `c` whose entry is at least `low` (c.n if none)."""
    # Past the last entry first: where a new best level goes.
    if c.n == 0 or c.entries[c.n - 1] < low:
        return c.n
    return wm_lower_bound(c.entries, c.n, low)


cdef inline int32_t _lix_find(LevelIndex* x, int64_t key, size_t* d, int* p) noexcept nogil:
    """The level with `key`, or NIL; `d` and `p` get the chunk (its place in the
    directory) and the position where it is or would go."""
    cdef int64_t low = key * KEY_UNIT
    cdef LevelChunk* c
    d[0] = 0
    p[0] = 0
    if x.n_dir == 0:
        return NIL
    d[0] = _lix_chunk_of(x, low)
    c = &x.chunks[x.dir[d[0]]]
    p[0] = _chunk_pos(c, low)
    if p[0] < c.n and _has_key(c.entries[p[0]], low):
        return <int32_t>(c.entries[p[0]] - low)
    return NIL


cdef int32_t _lix_new_chunk(LevelIndex* x) except -2:
    """A free chunk, empty (the pool may move)."""
    cdef int32_t ci
    if x.free_chunk != NIL:
        ci = x.free_chunk
        x.free_chunk = x.chunks[ci].n
    else:
        if x.n_chunks == x.cap_chunks:
            x.chunks = <LevelChunk*>grow(x.chunks, &x.cap_chunks, x.n_chunks + 1,
                                         sizeof(LevelChunk))
        ci = <int32_t>x.n_chunks
        x.n_chunks += 1
    x.chunks[ci].n = 0
    return ci


cdef int _lix_dir_insert(LevelIndex* x, size_t d, int32_t ci, int64_t dmax) except -1:
    if x.n_dir == x.cap_dir:
        x.dmax = <int64_t*>resize(x.dmax, next_cap(x.cap_dir, x.n_dir + 1), sizeof(int64_t))
        x.dir = <int32_t*>grow(x.dir, &x.cap_dir, x.n_dir + 1, sizeof(int32_t))
    memmove(&x.dir[d + 1], &x.dir[d], (x.n_dir - d) * sizeof(int32_t))
    memmove(&x.dmax[d + 1], &x.dmax[d], (x.n_dir - d) * sizeof(int64_t))
    x.dir[d] = ci
    x.dmax[d] = dmax
    x.n_dir += 1
    return 0


cdef inline void _lix_dir_remove(LevelIndex* x, size_t d) noexcept nogil:
    """Take chunk `d` out of the directory and free it."""
    cdef int32_t ci = x.dir[d]
    x.chunks[ci].n = x.free_chunk
    x.free_chunk = ci
    x.n_dir -= 1
    memmove(&x.dir[d], &x.dir[d + 1], (x.n_dir - d) * sizeof(int32_t))
    memmove(&x.dmax[d], &x.dmax[d + 1], (x.n_dir - d) * sizeof(int64_t))


cdef int32_t _lix_insert(LevelIndex* x, size_t d, int p, int64_t key,
                         int32_t level) except -2:
    """Add `key` (absent) for `level` where `_lix_find` said it would go (chunk `d`,
    position `p`); return the level of the next higher key (the next better level), or
    NIL."""
    cdef int64_t entry = key * KEY_UNIT + level
    cdef int32_t ci
    cdef LevelChunk* c
    cdef LevelChunk* hi
    if x.n_dir == 0:
        _lix_dir_insert(x, 0, _lix_new_chunk(x), entry)
    elif x.chunks[x.dir[d]].n == CHUNK:
        # Split: the upper half goes to a new chunk after this one.
        ci = _lix_new_chunk(x)
        c = &x.chunks[x.dir[d]]
        hi = &x.chunks[ci]
        memcpy(hi.entries, &c.entries[CHUNK // 2], (CHUNK - CHUNK // 2) * sizeof(int64_t))
        hi.n = CHUNK - CHUNK // 2
        c.n = CHUNK // 2
        _lix_dir_insert(x, d + 1, ci, x.dmax[d])
        x.dmax[d] = c.entries[c.n - 1]
        if p > CHUNK // 2:
            d += 1
            p -= CHUNK // 2
    c = &x.chunks[x.dir[d]]
    if p < c.n:
        memmove(&c.entries[p + 1], &c.entries[p], (c.n - p) * sizeof(int64_t))
    c.entries[p] = entry
    c.n += 1
    if p == c.n - 1:
        x.dmax[d] = entry
    if p + 1 < c.n:
        return _entry_level(c.entries[p + 1])
    if d + 1 < x.n_dir:
        return _entry_level(x.chunks[x.dir[d + 1]].entries[0])
    return NIL


cdef inline void _lix_remove(LevelIndex* x, int64_t key) noexcept nogil:
    """Take out `key` (present)."""
    cdef int64_t low = key * KEY_UNIT
    cdef size_t d = _lix_chunk_of(x, low)
    cdef LevelChunk* c = &x.chunks[x.dir[d]]
    cdef LevelChunk* lo
    cdef int p
    # The best level, emptied by fills, is the top chunk's last entry: no search for it.
    if _has_key(c.entries[c.n - 1], low):
        p = c.n - 1
    else:
        p = wm_lower_bound(c.entries, c.n, low)
    c.n -= 1
    if p < c.n:
        memmove(&c.entries[p], &c.entries[p + 1], (c.n - p) * sizeof(int64_t))
    if c.n == 0:
        _lix_dir_remove(x, d)
        return
    if p == c.n:
        x.dmax[d] = c.entries[c.n - 1]
    # Keep chunks from thinning out (a directory of near-empty chunks would make its own
    # moves long): a chunk that fits with its lower neighbour in half a chunk joins it.
    if d == 0:
        if x.n_dir == 1:
            return
        d = 1  # the pair (0, 1)
        c = &x.chunks[x.dir[1]]
    lo = &x.chunks[x.dir[d - 1]]
    if lo.n + c.n <= CHUNK // 2:
        memcpy(&lo.entries[lo.n], c.entries, c.n * sizeof(int64_t))
        lo.n += c.n
        x.dmax[d - 1] = x.dmax[d]
        _lix_dir_remove(x, d)


# ----------------------------------------------------------------------------- the book
ctypedef struct Order:
    uint64_t oid
    int64_t qty          # remaining
    uint64_t seq         # arrival: time priority within a level
    int32_t price        # prices fit 31 bits (MAX_PRICE)
    int32_t prev
    int32_t next
    int32_t level        # its price level's slot
    uint32_t owner
    uint8_t side

ctypedef struct Level:
    int64_t key          # price for bids, -price for asks: the higher, the better
    int64_t total
    int32_t head
    int32_t tail
    int32_t worse        # the next level of its side in priority, or NIL; a free level:
                         # the next free level
    int32_t better       # the level before it in priority, or NIL: it is the side's best

cdef enum:
    # Households a book remembers stepping over per side (see `Book._first`).
    SKIP_MAX = 64
    # How many rows ahead `Book.run` prefetches the index slot of a row's id, and from
    # how many slots (1 MiB of them) on.
    LOOKAHEAD = 8
    PREFETCH_MIN_SLOTS = 1 << 16


cdef class Book:
    """A continuous double auction: price-time priority, fills at the resting price,
    Energo caps from `accounts` (None: no caps), self-trade prevention `stp`.

    Books that share accounts are made by one `Markets`. See docs/matching.md for the
    rules and examples.
    """

    cdef Order* pool
    cdef size_t n_slots
    cdef size_t cap_slots
    cdef int32_t free_head
    cdef _KeyMap index
    cdef Level* levels        # both sides' price levels, a pool: a level keeps its slot
    cdef size_t n_levels
    cdef size_t cap_levels
    cdef int32_t free_level
    cdef int32_t best[2]      # each side's best level, or NIL
    cdef LevelIndex by_key[2]  # each side's levels by key
    cdef uint64_t seq
    cdef int stp
    cdef Accounts acc
    cdef uint64_t seen_version
    cdef _FillBuffer fills    # shared by the books of one Markets, with the event counter
    cdef size_t n_live
    cdef list peers           # the books of its Markets by name (itself included), or None
    cdef uint32_t market_index  # its index in its Markets (a fill's `market`)
    cdef readonly object name  # its market name in a Markets, else None
    # Blocked prefix, per side: every order ahead of `cur` belongs to one of the `skip`
    # owners, cannot execute at its price, and that was last checked when the owner's
    # balances were at `skip_ver`; `skip_price` is the lowest price among that owner's
    # bids in the prefix (a bid is easiest to execute at its lowest price).
    cdef int32_t cur[2]
    cdef bint cur_known[2]
    cdef int n_skip[2]
    cdef uint32_t skip_owner[2][SKIP_MAX]
    cdef uint64_t skip_ver[2][SKIP_MAX]
    cdef int64_t skip_price[2][SKIP_MAX]
    cdef object __weakref__

    def __cinit__(self, accounts: Accounts | None = None, stp="none"):
        self.index = _KeyMap()
        self.fills = _FillBuffer()
        self.free_head = NIL
        self.free_level = NIL
        self.best[0] = self.best[1] = NIL
        self.by_key[0].free_chunk = self.by_key[1].free_chunk = NIL
        self.stp = _stp_code(stp)
        if accounts is not None:
            accounts._claim(self)
            self.acc = accounts
            self.seen_version = accounts.version

    def __dealloc__(self):
        free(self.pool)
        free(self.levels)
        _lix_free(&self.by_key[0])
        _lix_free(&self.by_key[1])

    # -- pool and levels ---------------------------------------------------------------
    # The hot methods are `final`: called directly rather than through the type's method
    # table, so the C compiler can inline them into the walks and `run`.
    @cython.final
    cdef int32_t _alloc_order(self) except -2:
        cdef int32_t i
        if self.free_head != NIL:
            i = self.free_head
            self.free_head = self.pool[i].next
            return i
        if self.n_slots == self.cap_slots:
            self.pool = <Order*>grow(self.pool, &self.cap_slots, self.n_slots + 1,
                                        sizeof(Order))
        i = <int32_t>self.n_slots
        self.n_slots += 1
        return i

    @cython.final
    cdef int32_t _add_level(self, int side, int64_t key, size_t d, int p) except -2:
        """A new, empty level of `side` with `key` (absent; `_lix_find` said it goes at
        chunk `d`, position `p`), linked in priority order."""
        cdef int32_t li, better
        cdef Level* lv
        if self.free_level != NIL:
            li = self.free_level
            self.free_level = self.levels[li].worse
        else:
            if self.n_levels == self.cap_levels:
                self.levels = <Level*>grow(self.levels, &self.cap_levels, self.n_levels + 1,
                                           sizeof(Level))
            li = <int32_t>self.n_levels
            self.n_levels += 1
        better = _lix_insert(&self.by_key[side], d, p, key, li)
        lv = &self.levels[li]
        lv.key = key
        lv.total = 0
        lv.head = NIL
        lv.tail = NIL
        lv.better = better
        if better != NIL:
            lv.worse = self.levels[better].worse
            self.levels[better].worse = li
        else:
            lv.worse = self.best[side]
            self.best[side] = li
        if lv.worse != NIL:
            self.levels[lv.worse].better = li
        return li

    @cython.final
    cdef int _rest(self, int32_t o) except -1:
        """Append order slot `o` to the tail of its price level."""
        cdef Order* od = &self.pool[o]
        cdef int side = od.side
        cdef int64_t key = <int64_t>od.price if side == C_BID else -<int64_t>od.price
        cdef int32_t li = self.best[side]
        cdef Level* lv
        cdef int32_t c
        cdef size_t d
        cdef int p
        # The best level sees the most traffic: check it before the index.
        if li == NIL or self.levels[li].key != key:
            li = _lix_find(&self.by_key[side], key, &d, &p)
            if li == NIL:
                li = self._add_level(side, key, d, p)
        lv = &self.levels[li]
        od.level = li
        od.prev = lv.tail
        od.next = NIL
        if lv.tail != NIL:
            self.pool[lv.tail].next = o
        else:
            lv.head = o
        lv.tail = o
        lv.total += od.qty
        self.n_live += 1
        if self.cur_known[side]:
            # A newcomer ahead of the cursor is not known to be blocked: the cursor moves
            # back to it (a newcomer at the cursor's price is behind it: it is later).
            c = self.cur[side]
            if c == NIL or (od.price > self.pool[c].price if side == C_BID
                            else od.price < self.pool[c].price):
                self.cur[side] = o
        return 0

    @cython.final
    cdef void _unlink(self, int32_t o, int32_t li) noexcept nogil:
        """Take order `o` out of level `li` (dropping the level if it empties) and free it."""
        cdef Order* od = &self.pool[o]
        cdef int side = od.side
        cdef Level* lv = &self.levels[li]
        if self.cur_known[side] and self.cur[side] == o:
            self.cur[side] = self._after(o, li)
        if od.prev != NIL:
            self.pool[od.prev].next = od.next
        else:
            lv.head = od.next
        if od.next != NIL:
            self.pool[od.next].prev = od.prev
        else:
            lv.tail = od.prev
        lv.total -= od.qty
        if lv.head == NIL:
            self._drop_level(side, li)
        self.index.remove(od.oid)
        od.next = self.free_head
        self.free_head = o
        self.n_live -= 1

    cdef inline void _drop_level(self, int side, int32_t li) noexcept nogil:
        """Take empty level `li` out of its side's index and links, and free it."""
        cdef Level* lv = &self.levels[li]
        _lix_remove(&self.by_key[side], lv.key)
        if lv.worse != NIL:
            self.levels[lv.worse].better = lv.better
        if lv.better != NIL:
            self.levels[lv.better].worse = lv.worse
        else:
            self.best[side] = lv.worse
        lv.worse = self.free_level
        self.free_level = li

    cdef inline int32_t _level_of(self, int32_t o) noexcept nogil:
        return self.pool[o].level

    cdef inline int32_t _after(self, int32_t o, int32_t li) noexcept nogil:
        """The order after `o` (on level `li`) in priority, or NIL: the next in its level,
        else the head of the next level (a level keeps its slot while others come and
        go, so this holds across the drop of `li`)."""
        cdef int32_t w
        if self.pool[o].next != NIL:
            return self.pool[o].next
        w = self.levels[li].worse
        if w != NIL:
            return self.levels[w].head
        return NIL

    cdef inline int32_t _next_level(self, int32_t o, int32_t li) noexcept nogil:
        """The level of `_after(o, li)`."""
        return li if self.pool[o].next != NIL else self.levels[li].worse

    cdef inline int32_t _pass(self, int32_t o, int32_t* li, bint unlink) noexcept nogil:
        """Move a walk past order `o` (on level `li[0]`), taking it off the book if
        `unlink`; return the next order in priority (its level in `li`)."""
        cdef int32_t lo = li[0]
        cdef int32_t nxt = self._after(o, lo)
        li[0] = self._next_level(o, lo)
        if unlink:
            self._unlink(o, lo)
        return nxt

    # -- the blocked prefix --------------------------------------------------------------
    # With caps, a busy book has many crossing orders whose owners cannot execute (Energo's
    # overlap: buyers at Bmax, sellers with no energy). Walking over them for every
    # incoming order would make its cost grow with their number. Each side remembers the
    # first order not known to be blocked and the households it stepped over to get
    # there, with their balance versions; a walk or a re-cross starts there while those
    # households still cannot execute. Blocked-ness depends only on the owner's balances
    # and the order's own price, so an owner whose balances did not change is still
    # blocked, and one whose balances changed is checked once at its lowest prefix price.
    @cython.final
    cdef int32_t _first(self, int side, int32_t* li):
        """Where a walk or a re-cross starts on `side` (its level in `li`), or NIL."""
        cdef int k
        cdef bint valid
        cdef int32_t top = self.best[side]
        cdef int32_t o
        cdef uint32_t owner
        if self.acc is None:
            li[0] = top
            return self.levels[top].head if top != NIL else NIL
        if self.cur_known[side]:
            valid = True
            for k in range(self.n_skip[side]):
                owner = self.skip_owner[side][k]
                if self.acc.owner_version[owner] != self.skip_ver[side][k]:
                    if not self._still_blocked(side, k):
                        valid = False
                        break
                    self.skip_ver[side][k] = self.acc.owner_version[owner]
            if valid:
                o = self.cur[side]
                li[0] = self._level_of(o) if o != NIL else NIL
                return o
        self.cur_known[side] = True
        self.n_skip[side] = 0
        li[0] = top
        self.cur[side] = self.levels[top].head if top != NIL else NIL
        return self.cur[side]

    cdef inline bint _still_blocked(self, int side, int k) noexcept:
        """Can remembered owner k still execute none of its orders in the prefix?"""
        if side == C_BID:
            return self.acc.buy_cap(self.skip_owner[side][k], self.skip_price[side][k],
                                    False) <= 0
        return self.acc.sell_cap(self.skip_owner[side][k], False) <= 0

    @cython.final
    cdef void _step_over(self, int side, int32_t o, int32_t li) noexcept:
        """Order `o` (on level `li`) cannot execute. If the cursor is on it, remember its
        owner (balance version, lowest price) and move the cursor past it."""
        cdef uint32_t owner = self.pool[o].owner
        cdef uint64_t ver
        cdef int k, n = self.n_skip[side]
        if not self.cur_known[side] or self.cur[side] != o:
            return
        ver = self.acc.owner_version[owner]  # a blocked owner has an account
        for k in range(n):
            if self.skip_owner[side][k] == owner:
                if self.skip_ver[side][k] != ver:
                    if not self._still_blocked(side, k):
                        self.cur_known[side] = False  # its earlier orders may execute
                        return
                    self.skip_ver[side][k] = ver
                if self.pool[o].price < self.skip_price[side][k]:
                    self.skip_price[side][k] = self.pool[o].price
                self.cur[side] = self._after(o, li)
                return
        if n == SKIP_MAX:
            return  # no room to remember another household: the cursor stays here
        self.skip_owner[side][n] = owner
        self.skip_ver[side][n] = ver
        self.skip_price[side][n] = self.pool[o].price
        self.n_skip[side] = n + 1
        self.cur[side] = self._after(o, li)

    cdef inline bint _executable(self, int32_t o, bint dry) noexcept:
        """Can the owner of resting order `o` trade at least 1 Wh at the order's price?"""
        cdef Order* od = &self.pool[o]
        if od.side == C_BID:
            return self.acc.buy_cap(od.owner, od.price, dry) > 0
        return self.acc.sell_cap(od.owner, dry) > 0

    # -- matching ----------------------------------------------------------------------
    @cython.final
    cdef int64_t _walk_plain(self, int side, int64_t limit, int64_t qty, uint32_t owner,
                             uint64_t oid) except -1:
        """`_walk` without caps, self-trade prevention or dry run: the common hot path."""
        cdef int opp = 1 - side
        cdef Level* lv
        cdef int64_t price, f
        cdef int32_t o, top
        cdef Order* r
        cdef _FillBuffer fills = self.fills
        while qty > 0 and self.best[opp] != NIL:
            top = self.best[opp]
            lv = &self.levels[top]
            price = -lv.key if opp == C_ASK else lv.key
            if (side == C_BID and price > limit) or (side == C_ASK and price < limit):
                break
            o = lv.head
            # Every resting order here can trade, so the level empties from its head.
            while o != NIL and qty > 0:
                r = &self.pool[o]
                f = qty if qty < r.qty else r.qty
                qty -= f
                lv.total -= f
                if side == C_BID:
                    fills.push(oid, r.oid, price, f, owner, r.owner, C_BID, fills.event,
                               self.market_index)
                else:
                    fills.push(r.oid, oid, price, f, r.owner, owner, C_ASK, fills.event,
                               self.market_index)
                if f == r.qty:
                    o = r.next
                    if o == NIL:
                        r.qty = 0
                        self._unlink(lv.head, top)  # drops the level
                        break
                    r.qty = 0
                    self._unlink(lv.head, top)
                else:
                    r.qty -= f
        return qty

    @cython.final
    cdef int64_t _walk(self, int side, int64_t limit, int64_t qty, uint32_t owner,
                       uint64_t oid, bint dry, bint* cancelled) except -1:
        """Trade an incoming order against the opposite side; return the quantity left.

        The walk stays on a resting order while prices cross and both owners can still
        execute. With `dry` nothing changes: balances go to the accounts' scratch copies
        and resting orders are only read (`left` tracks what the walk has taken of the
        current one). FOK preflight uses the dry run, so the preflight and the real match
        cannot disagree. `cancelled` is set when self-trade prevention cancels the rest of
        the incoming order.
        """
        cdef int opp = 1 - side
        cdef Accounts acc = self.acc
        cdef bint caps = acc is not None
        cdef int32_t li = NIL
        cdef int64_t price, f, c = 0, own = 0, left = 0
        cdef int32_t o
        cdef Order* r
        cdef bint self_match
        if caps and dry:
            acc.new_scratch()
        o = self._first(opp, &li)
        if o != NIL:
            left = self.pool[o].qty
        while qty > 0 and o != NIL:
            r = &self.pool[o]
            price = r.price
            if (side == C_BID and price > limit) or (side == C_ASK and price < limit):
                break
            if caps:
                # The incoming order stops as soon as its own owner can do no more,
                # before it meets (and perhaps cancels) the next resting order.
                own = acc.buy_cap(owner, price, dry) if side == C_BID \
                    else acc.sell_cap(owner, dry)
                if own <= 0:
                    return qty
                # What the resting order's owner can do; if nothing, it waits untouched
                # (self-trade prevention does not act on it either).
                c = acc.sell_cap(r.owner, dry) if side == C_BID \
                    else acc.buy_cap(r.owner, price, dry)
                if c <= 0:
                    if not dry:
                        self._step_over(opp, o, li)
                    o = self._pass(o, &li, False)
                    if o != NIL:
                        left = self.pool[o].qty
                    continue
            self_match = r.owner == owner
            if self_match and self.stp != S_NONE:
                if self.stp == S_INCOMING:
                    cancelled[0] = True
                    return 0
                # cancel-resting: the resting order goes; matching continues.
                o = self._pass(o, &li, not dry)
                if o != NIL:
                    left = self.pool[o].qty
                continue
            f = qty if qty < left else left
            if caps and not self_match:
                # A self-match moves nothing, so no cap binds its size.
                if c < f:
                    f = c
                if own < f:
                    f = own
                if side == C_BID:
                    acc.settle(owner, r.owner, f, price, dry)
                else:
                    acc.settle(r.owner, owner, f, price, dry)
            qty -= f
            left -= f
            if not dry:
                if side == C_BID:
                    self.fills.push(oid, r.oid, price, f, owner, r.owner, C_BID,
                                    self.fills.event, self.market_index)
                else:
                    self.fills.push(r.oid, oid, price, f, r.owner, owner, C_ASK,
                                    self.fills.event, self.market_index)
                r.qty -= f
                self.levels[li].total -= f
            if left == 0:
                o = self._pass(o, &li, not dry)
                if o != NIL:
                    left = self.pool[o].qty
            # else: stay on this resting order while both owners can still execute
        return qty

    @cython.final
    cdef int _submit(self, uint64_t oid, int side, int64_t price, int64_t qty,
                     uint32_t owner, int tif, bint market) except -2:
        """Apply one incoming order. Returns 0, or 1 if refused (bad input, duplicate)."""
        cdef bint cancelled = False
        cdef int64_t left
        cdef int64_t limit
        cdef int32_t o
        cdef Order* od
        if side != C_BID and side != C_ASK:
            return 1
        if qty <= 0 or qty > C_MAX_QTY or tif < 0 or tif > 2:
            return 1
        if market:
            limit = (<int64_t>1) << 62 if side == C_BID else 0
        else:
            if price <= 0 or price > C_MAX_PRICE:
                return 1
            limit = price
        if self.index.get(oid) != NIL:
            return 1
        self._catch_up()
        if tif == C_FOK:
            left = self._walk(side, limit, qty, owner, oid, True, &cancelled)
            if left > 0 or cancelled:
                return 0  # cannot fill completely: nothing happens
            cancelled = False
        if self.acc is None and self.stp == S_NONE:
            left = self._walk_plain(side, limit, qty, owner, oid)
        else:
            left = self._walk(side, limit, qty, owner, oid, False, &cancelled)
        if left > 0 and tif == C_GTC and not market and not cancelled:
            o = self._alloc_order()
            od = &self.pool[o]
            od.oid = oid
            od.price = <int32_t>price
            od.qty = left
            od.owner = owner
            od.side = <uint8_t>side
            self.seq += 1
            od.seq = self.seq
            self.index.put(oid, o)
            self._rest(o)
        self._after_event()
        return 0

    # -- re-crossing -------------------------------------------------------------------
    @cython.final
    cdef int _recross(self) except -1:
        """Re-cross if balances changed since the book last looked."""
        if self.acc is not None and self.acc.version != self.seen_version:
            self._uncross()
            self.seen_version = self.acc.version
        return 0

    @cython.final
    cdef int _catch_up(self) except -1:
        """Before an accepted event: balance changes made outside any event
        (`Accounts.set`) take effect first, so orders they made executable keep the
        priority they had over the event."""
        if self.peers is not None:
            _recross_all(self.peers, False)
        else:
            self._recross()
        return 0

    @cython.final
    cdef int _after_event(self) except -1:
        """After an accepted event: this book re-crosses, then every book of its Markets
        whose accounts changed, by market name, until none changes."""
        self._recross()
        if self.peers is not None:
            _recross_all(self.peers, False)
        return 0

    @cython.final
    cdef int32_t _best_executable(self, int side, int32_t* level_out):
        """First order in priority whose owner can execute now, or NIL.

        Per household, earlier orders commit first; an order before the first executable
        one commits nothing, so the first executable order is simply the first whose owner
        has capacity left at the order's own price.
        """
        cdef int32_t li = NIL
        cdef int32_t o = self._first(side, &li)
        while o != NIL:
            if self.acc is None or self._executable(o, False):
                level_out[0] = li
                return o
            self._step_over(side, o, li)
            o = self._pass(o, &li, False)
        return NIL

    @cython.final
    cdef int _uncross(self) except -1:
        """While the best executable bid crosses the best executable ask, trade them at the
        earlier one's price (the later one is the aggressor and, for self-trade
        prevention, the incoming order)."""
        cdef int32_t b, a, later, earlier
        cdef int32_t lb = NIL, la = NIL
        cdef Order* ob
        cdef Order* oa
        cdef int64_t price, f, c
        cdef Accounts acc = self.acc
        while True:
            b = self._best_executable(C_BID, &lb)
            if b == NIL:
                return 0
            a = self._best_executable(C_ASK, &la)
            if a == NIL:
                return 0
            ob = &self.pool[b]
            oa = &self.pool[a]
            if ob.price < oa.price:
                return 0
            if ob.seq < oa.seq:
                earlier, later = b, a
            else:
                earlier, later = a, b
            price = self.pool[earlier].price
            f = ob.qty if ob.qty < oa.qty else oa.qty
            if ob.owner == oa.owner:
                if self.stp == S_RESTING:
                    self._unlink(earlier, lb if earlier == b else la)
                    continue
                if self.stp == S_INCOMING:
                    self._unlink(later, lb if later == b else la)
                    continue
                # none: a self-match moves nothing, so no cap binds its size
            else:
                c = acc.sell_cap(oa.owner, False)
                if c < f:
                    f = c
                c = acc.buy_cap(ob.owner, price, False)
                if c < f:
                    f = c
                acc.settle(ob.owner, oa.owner, f, price, False)
            self.fills.push(ob.oid, oa.oid, price, f, ob.owner, oa.owner,
                            C_BID if later == b else C_ASK, self.fills.event,
                            self.market_index)
            ob.qty -= f
            self.levels[lb].total -= f
            oa.qty -= f
            self.levels[la].total -= f
            if ob.qty == 0:
                self._unlink(b, lb)
            if oa.qty == 0:
                self._unlink(a, la)

    @cython.final
    cdef int _cancel(self, uint64_t oid) except -1:
        """1 applied (the order was live), 0 refused (it was not)."""
        cdef int32_t o = self.index.get(oid)
        if o == NIL:
            return 0
        self._catch_up()
        o = self.index.get(oid)  # outside changes may have filled it
        if o != NIL:
            self._unlink(o, self._level_of(o))
        self._after_event()
        return 1

    @cython.final
    cdef int _reduce(self, uint64_t oid, int64_t by) except -2:
        """1 reduced, 0 not live, -1 bad amount."""
        cdef int32_t o = self.index.get(oid)
        cdef int32_t li
        if o == NIL:
            return 0
        if by <= 0 or by > self.pool[o].qty:
            return -1
        self._catch_up()
        o = self.index.get(oid)  # outside changes may have filled some or all of it
        if o != NIL:
            li = self._level_of(o)
            if by >= self.pool[o].qty:
                self._unlink(o, li)
            else:
                self.pool[o].qty -= by
                self.levels[li].total -= by
        self._after_event()
        return 1

    # -- Python API: per order -----------------------------------------------------------
    def submit(self, uint64_t oid, int side, int64_t price, int64_t qty,
               uint32_t owner=0, int tif=0) -> int:
        """Submit a limit order; returns the number of fills it caused (in a `Markets`,
        in every book)."""
        cdef size_t before = self.fills.n
        self.fills.event += 1
        if self._submit(oid, side, price, qty, owner, tif, False):
            self._refuse(oid, side, price, qty, tif, False)
        return self.fills.n - before

    def market(self, uint64_t oid, int side, int64_t qty, uint32_t owner=0,
               int tif=1) -> int:
        """Submit a market order (no price limit; IOC, or FOK). Returns the fills caused."""
        cdef size_t before = self.fills.n
        if tif == C_GTC:
            raise ValueError("tif: a market order never rests; use IOC or FOK")
        self.fills.event += 1
        if self._submit(oid, side, 0, qty, owner, tif, True):
            self._refuse(oid, side, 0, qty, tif, True)
        return self.fills.n - before

    cdef _refuse(self, uint64_t oid, int side, int64_t price, int64_t qty, int tif,
                 bint market):
        if side != C_BID and side != C_ASK:
            raise ValueError(f"side: must be BID (0) or ASK (1), got {side}")
        if qty <= 0 or qty > C_MAX_QTY:
            raise ValueError(f"qty: must be a positive integer up to {C_MAX_QTY}, got {qty}")
        if tif < 0 or tif > 2:
            raise ValueError(f"tif: must be GTC (0), IOC (1) or FOK (2), got {tif}")
        if not market and (price <= 0 or price > C_MAX_PRICE):
            raise ValueError(f"price: must be an integer in 1..{C_MAX_PRICE}, got {price}")
        raise ValueError(f"oid: order {oid} is already live")

    def cancel(self, uint64_t oid) -> bool:
        """Cancel a live order; False (and nothing changes) if it is not live."""
        self.fills.event += 1
        return self._cancel(oid) == 1

    def reduce(self, uint64_t oid, int64_t by) -> bool:
        """Remove `by` from a live order's remaining quantity, keeping its priority.

        Reducing by the whole remainder cancels it. False if the order is not live.
        """
        self.fills.event += 1
        cdef int r = self._reduce(oid, by)
        if r < 0:
            raise ValueError(f"by: must be in 1..{self.pool[self.index.get(oid)].qty}, got {by}")
        return r == 1

    def replace(self, uint64_t oid, uint64_t new_oid, int64_t price, int64_t qty) -> int:
        """Cancel `oid` and submit `new_oid` (same side and owner, GTC) at a new price and
        quantity, losing priority; the new order may trade at once. Returns the number of
        fills, or -1 if `oid` is not live (then nothing changes)."""
        cdef int32_t o
        cdef int side
        cdef uint32_t owner
        cdef size_t before = self.fills.n
        self.fills.event += 1
        o = self.index.get(oid)
        if o == NIL:
            return -1
        if qty <= 0 or qty > C_MAX_QTY:
            raise ValueError(f"qty: must be a positive integer up to {C_MAX_QTY}, got {qty}")
        if price <= 0 or price > C_MAX_PRICE:
            raise ValueError(f"price: must be an integer in 1..{C_MAX_PRICE}, got {price}")
        if new_oid != oid and self.index.get(new_oid) != NIL:
            raise ValueError(f"new_oid: order {new_oid} is already live")
        side = self.pool[o].side
        owner = self.pool[o].owner
        self._catch_up()
        o = self.index.get(oid)  # outside changes may have filled it
        if o != NIL:
            self._unlink(o, self._level_of(o))
        self._submit(new_oid, side, price, qty, owner, C_GTC, False)
        return self.fills.n - before

    def uncross(self) -> int:
        """Trade whatever became executable and crosses after `Accounts.set` (in a
        `Markets`: every book, by name, until none changes). Returns the number of fills.
        Every accepted event does this by itself."""
        cdef size_t before = self.fills.n
        if self.peers is not None:
            _recross_all(self.peers, True)
        elif self.acc is not None:
            self._uncross()
            self.seen_version = self.acc.version
        return self.fills.n - before

    # -- Python API: fills, quotes, book ------------------------------------------------
    cdef int _own_fills(self) except -1:
        if self.peers is not None:
            raise ValueError(
                f"this book is market {self.name!r} of a Markets: take the fills from the"
                " Markets, which names each fill's market"
            )
        return 0

    def take_fills(self) -> list:
        """Fills since the last take, as a list of `Fill`; the buffer is emptied."""
        self._own_fills()
        out = self.fills.to_list(0)
        self.fills.n = 0
        return out

    def take_fill_arrays(self) -> tuple:
        """Fills since the last take as columns: (event, bid, ask, price, qty, buyer,
        seller, aggressor), each an `array.array`; the buffer is emptied. `event` numbers
        the book's events from 1: every per-order call and every batch row, refused or
        not."""
        self._own_fills()
        out = self.fills.to_columns(0, 0)[:8]
        self.fills.n = 0
        return out

    @property
    def pending_fills(self) -> int:
        """Fills recorded and not yet taken (in a `Markets`: of all its books)."""
        return self.fills.n

    def quotes(self):
        """`Quote(bid, ask, exec_bid, exec_ask)`: prices, or None for an empty side."""
        cdef int32_t li = NIL
        cdef int32_t b = self._best_executable(C_BID, &li)
        cdef int32_t a = self._best_executable(C_ASK, &li)
        cdef int32_t tb = self.best[C_BID], ta = self.best[C_ASK]
        return Quote(
            self.levels[tb].key if tb != NIL else None,
            -self.levels[ta].key if ta != NIL else None,
            self.pool[b].price if b != NIL else None,
            self.pool[a].price if a != NIL else None,
        )

    def orders(self, int side) -> list:
        """Resting orders of one side in priority order, as `RestingOrder`."""
        if side != C_BID and side != C_ASK:
            raise ValueError(f"side: must be BID (0) or ASK (1), got {side}")
        out = []
        cdef int32_t li = self.best[side]
        cdef int32_t o
        cdef Order* od
        while li != NIL:
            o = self.levels[li].head
            while o != NIL:
                od = &self.pool[o]
                out.append(RestingOrder(od.oid, od.side, od.price, od.qty, od.owner))
                o = od.next
            li = self.levels[li].worse
        return out

    def order(self, uint64_t oid):
        """The live order with this key as a `RestingOrder`, or None."""
        cdef int32_t o = self.index.get(oid)
        if o == NIL:
            return None
        cdef Order* od = &self.pool[o]
        return RestingOrder(od.oid, od.side, od.price, od.qty, od.owner)

    def depth(self, int side) -> list:
        """[(price, total qty)] per level of one side, best first."""
        if side != C_BID and side != C_ASK:
            raise ValueError(f"side: must be BID (0) or ASK (1), got {side}")
        out = []
        cdef int32_t li = self.best[side]
        while li != NIL:
            k = self.levels[li].key
            out.append((k if side == C_BID else -k, self.levels[li].total))
            li = self.levels[li].worse
        return out

    def __len__(self) -> int:
        return self.n_live

    def __contains__(self, oid) -> bool:
        return self.index.get(oid) != NIL

    @property
    def stp(self) -> str:
        return ("none", "cancel-resting", "cancel-incoming")[self.stp]

    # -- Python API: batch --------------------------------------------------------------
    def run(self, const uint8_t[::1] kinds, const uint8_t[::1] sides,
            const int64_t[::1] prices, const int64_t[::1] qtys,
            const uint64_t[::1] oids, const uint32_t[::1] owners=None,
            const uint8_t[::1] tifs=None):
        """Apply a batch of events given as columns; see docs/matching.md.

        Returns a `BatchResult` (in a `Markets`, with the fills of every book its events
        caused). Fills already pending are left in the buffer and not included.
        """
        cdef size_t n = kinds.shape[0]
        cdef size_t i
        cdef size_t start = self.fills.n
        cdef int64_t event_base = self.fills.event
        cdef uint8_t kind
        cdef int r
        if (sides.shape[0] != n or prices.shape[0] != n or qtys.shape[0] != n
                or oids.shape[0] != n or (owners is not None and owners.shape[0] != n)
                or (tifs is not None and tifs.shape[0] != n)):
            raise ValueError("run: all columns must have the same length")
        cdef uint8_t* status = <uint8_t*>malloc(n + 1)
        if status == NULL:
            raise MemoryError()
        cdef bint has_owner = owners is not None
        cdef bint has_tif = tifs is not None
        # Row i is event event_base + 1 + i, applied or refused, so a fill's event column
        # is the row index.
        try:
            for i in range(n):
                # Every kind looks its id up in the index first: start loading the slot of
                # the id a few rows ahead, so that its cache miss overlaps these rows (a
                # table that the caches hold would only pay for the hashing).
                if i + LOOKAHEAD < n and self.index.mask >= PREFETCH_MIN_SLOTS - 1:
                    self.index.prefetch(oids[i + LOOKAHEAD])
                kind = kinds[i]
                self.fills.event = event_base + 1 + <int64_t>i
                if kind == K_MARKET and has_tif and tifs[i] == C_GTC:
                    r = 1  # a market order never rests
                elif kind == K_LIMIT or kind == K_MARKET:
                    r = self._submit(oids[i], sides[i], prices[i], qtys[i],
                                     owners[i] if has_owner else 0,
                                     tifs[i] if has_tif else (C_IOC if kind == K_MARKET
                                                              else C_GTC),
                                     kind == K_MARKET)
                elif kind == K_CANCEL:
                    r = 0 if self._cancel(oids[i]) else 1
                elif kind == K_REDUCE:
                    r = 0 if self._reduce(oids[i], qtys[i]) == 1 else 1
                else:
                    r = 1
                status[i] = <uint8_t>r
            self.fills.event = event_base + <int64_t>n
            cols = self.fills.to_columns(start, event_base + 1)
            st = _array("B", status, n)
        finally:
            free(status)
        self.fills.n = start
        return BatchResult(st, *cols)


cdef int _recross_all(list books, bint force) except -1:
    """Re-cross the books of one `Markets`, by market name, until a whole pass makes no
    fill; `force` re-crosses each once even if no balance changed."""
    cdef Book b
    cdef size_t before
    cdef bint moved = True
    while moved:
        moved = False
        for b in books:
            before = b.fills.n
            if force:
                b._uncross()
                b.seen_version = b.acc.version
            else:
                b._recross()
            if b.fills.n != before:
                moved = True
        force = False
    return 0


cdef class Markets:
    """The continuous books of several markets over one `Accounts`.

    A fill in one market changes balances, which can make orders in another executable;
    so after every accepted event in any of its books, that book re-crosses, then every
    book whose accounts changed, by market name, until none changes. No book rests
    crossed. The books share one event counter and one fill stream, in which each fill
    names its market. See docs/matching.md.
    """

    cdef Accounts acc
    cdef int stp
    cdef _FillBuffer fills
    cdef list books      # in the order they were added: a fill's `market` indexes this
    cdef list by_name    # the same books by name: the order in which they re-cross
    cdef dict named
    cdef object __weakref__

    def __cinit__(self, accounts: Accounts, stp="none"):
        if not isinstance(accounts, Accounts):
            raise ValueError("accounts: a Markets needs the Accounts its books share")
        self.stp = _stp_code(stp)
        accounts._claim(self)
        self.acc = accounts
        self.fills = _FillBuffer()
        self.books = []
        self.by_name = []
        self.named = {}

    def add(self, name: str) -> Book:
        """A new, empty book for market `name` (names are unique), trading on the
        shared accounts."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: a market name must be a non-empty string, got {name!r}")
        if name in self.named:
            raise ValueError(f"name: market {name!r} already has a book")
        cdef Book b = Book.__new__(Book)
        b.acc = self.acc
        b.stp = self.stp
        b.fills = self.fills
        b.seen_version = self.acc.version
        b.market_index = <uint32_t>len(self.books)
        b.name = name
        b.peers = self.by_name
        self.books.append(b)
        self.named[name] = b
        self.by_name.append(b)
        self.by_name.sort(key=lambda book: book.name)  # in place: the books share the list
        return b

    def __getitem__(self, name: str) -> Book:
        return self.named[name]

    def __contains__(self, name) -> bool:
        return name in self.named

    def __len__(self) -> int:
        return len(self.books)

    @property
    def names(self) -> list:
        """Market names in the order their books were added (a fill's `market` index)."""
        return [b.name for b in self.books]

    def uncross(self) -> int:
        """After `Accounts.set`: every book re-crosses, by name, until none changes.
        Returns the number of fills."""
        cdef size_t before = self.fills.n
        _recross_all(self.by_name, True)
        return self.fills.n - before

    def take_fills(self) -> list:
        """Fills since the last take, as (market name, `Fill`) in the order they happened;
        the buffer is emptied."""
        out = self.fills.to_market_list(0, self.names)
        self.fills.n = 0
        return out

    def take_fill_arrays(self) -> tuple:
        """Fills since the last take as columns (event, bid, ask, price, qty, buyer,
        seller, aggressor, market), `market` indexing `names`; the buffer is emptied."""
        out = self.fills.to_columns(0, 0)
        self.fills.n = 0
        return out

    @property
    def pending_fills(self) -> int:
        """Fills recorded and not yet taken."""
        return self.fills.n


# ----------------------------------------------------------------------------- call auction
ctypedef struct CallOrder:
    uint64_t oid
    int64_t price
    int64_t qty
    int64_t ts
    uint32_t owner
    uint8_t side
    uint8_t live


cdef class CallAuction:
    """One interval's orders, cleared together at one uniform price.

    Priority is price, then `ts`, then `oid`, so the result depends only on the set of
    orders. See docs/matching.md.
    """

    cdef CallOrder* rows
    cdef size_t n
    cdef size_t cap
    cdef size_t n_live
    cdef _KeyMap index
    cdef Accounts acc
    cdef int stp
    cdef _PairColumns fills  # of the clearing being walked, or the last one
    cdef wm_key* keys
    cdef size_t keys_cap
    # scratch kept across clearings (wm_sort_keys, wm_find_duplicate): a clearing of a
    # million orders would otherwise fault in tens of megabytes each time
    cdef wm_key* sort_tmp
    cdef size_t sort_tmp_cap
    cdef uint64_t* dup_buf
    cdef size_t dup_cap
    cdef uint64_t* dup_table
    cdef size_t dup_table_cap
    cdef size_t* counters  # wm_dup_buckets's 2049
    # results of the last clearing
    cdef int64_t last_price
    cdef int64_t last_volume
    cdef int64_t last_exec
    # its bids and asks: the first last_nb keys are its bids, the next last_na its asks,
    # each side in priority order with its committed executable quantity (last_depth)
    cdef size_t last_nb
    cdef size_t last_na
    # Keys placed by wm_bucket_place are sorted a bucket at a time, when the walk reaches
    # them: per side, the keys before ready[side] are sorted, bucket_ends[side] are the
    # ends of its buckets (2048 each), next_bucket[side] the first one not yet sorted.
    cdef size_t* bucket_ends
    cdef size_t ready[2]
    cdef size_t next_bucket[2]

    def __cinit__(self, accounts: Accounts | None = None, stp="none"):
        self.index = _KeyMap()
        self.fills = _PairColumns()
        self.fills.open(0)
        self.acc = accounts
        self.stp = _stp_code(stp)

    def __dealloc__(self):
        free(self.rows)
        free(self.keys)
        free(self.sort_tmp)
        free(self.dup_buf)
        free(self.dup_table)
        free(self.counters)
        free(self.bucket_ends)

    cdef int _add(self, uint64_t oid, int side, int64_t price, int64_t qty,
                  uint32_t owner, int64_t ts) except -2:
        cdef CallOrder* o
        if side != C_BID and side != C_ASK:
            return 1
        if qty <= 0 or qty > C_MAX_QTY or price <= 0 or price > C_MAX_PRICE:
            return 1
        if self.index.get(oid) != NIL:
            return 1
        if self.n == self.cap:
            self.rows = <CallOrder*>grow(self.rows, &self.cap, self.n + 1,
                                            sizeof(CallOrder))
        o = &self.rows[self.n]
        o.oid = oid
        o.side = <uint8_t>side
        o.price = price
        o.qty = qty
        o.owner = owner
        o.ts = ts
        o.live = 1
        self.index.put(oid, <int32_t>self.n)
        self.n += 1
        self.n_live += 1
        return 0

    def add(self, uint64_t oid, int side, int64_t price, int64_t qty, uint32_t owner=0,
            int64_t ts=0) -> None:
        """Add an order to the pending interval."""
        if self._add(oid, side, price, qty, owner, ts):
            if side != C_BID and side != C_ASK:
                raise ValueError(f"side: must be BID (0) or ASK (1), got {side}")
            if qty <= 0 or qty > C_MAX_QTY:
                raise ValueError(f"qty: must be a positive integer up to {C_MAX_QTY}, got {qty}")
            if price <= 0 or price > C_MAX_PRICE:
                raise ValueError(f"price: must be an integer in 1..{C_MAX_PRICE}, got {price}")
            raise ValueError(f"oid: order {oid} is already pending")

    def cancel(self, uint64_t oid) -> bool:
        """Withdraw a pending order; False if it is not pending."""
        cdef int32_t i = self.index.get(oid)
        if i == NIL:
            return False
        self.rows[i].live = 0
        self.index.remove(oid)
        self.n_live -= 1
        return True

    def __len__(self) -> int:
        return self.n_live

    def __contains__(self, oid) -> bool:
        return self.index.get(oid) != NIL

    cdef size_t _sorted_keys(self, int side, wm_key* out) noexcept nogil:
        cdef size_t i, k = 0
        cdef CallOrder* o
        for i in range(self.n):
            o = &self.rows[i]
            if o.live and o.side == side:
                out[k].pkey = <int32_t>(-o.price if side == C_BID else o.price)
                out[k].ts = o.ts
                out[k].oid = o.oid
                out[k].owner = o.owner
                out[k].qty = <int32_t>o.qty
                out[k].exec_qty = <int32_t>o.qty
                k += 1
        wm_sort_keys(out, k, self.sort_tmp)
        return k

    cdef int _ensure_scratch(self, size_t n) except -1:
        """Room for the keys of n orders and for sorting them."""
        if self.keys_cap < n + 1:
            self.keys = <wm_key*>grow_scratch(self.keys, &self.keys_cap, n + 1, sizeof(wm_key))
        if self.sort_tmp_cap < n + 1:
            self.sort_tmp = <wm_key*>grow_scratch(self.sort_tmp, &self.sort_tmp_cap, n + 1,
                                          sizeof(wm_key))
        return 0

    cdef void _sort_next_bucket(self, int side) noexcept nogil:
        """Sort the next bucket of keys of `side` (see wm_bucket_place), the one holding
        key ready[side]."""
        cdef size_t* ends = self.bucket_ends + side * 2048
        cdef size_t v = self.next_bucket[side]
        cdef size_t start = self.ready[side]
        while ends[v] <= start:  # skip empty buckets; the caller has a key left to sort
            v += 1
        wm_sort_keys(self.keys + start, ends[v] - start, self.sort_tmp)
        self.ready[side] = ends[v]
        self.next_bucket[side] = v + 1

    cdef void _sort_all(self) noexcept nogil:
        """Sort every bucket of the last clearing's keys not sorted yet."""
        while self.ready[C_BID] < self.last_nb:
            self._sort_next_bucket(C_BID)
        while self.ready[C_ASK] < self.last_nb + self.last_na:
            self._sort_next_bucket(C_ASK)

    cdef int64_t _commit(self, wm_key* k, size_t nk, int side) noexcept:
        """Executable quantity of each order, in priority order, per household; returns
        how many orders can execute at all. Without accounts every key already has its
        whole quantity."""
        cdef Accounts acc = self.acc
        cdef size_t i
        cdef wm_key* o
        cdef int64_t c, price, n_exec = 0
        if acc is None:
            return nk
        acc.new_scratch()
        for i in range(nk):
            o = &k[i]
            if not acc.has(o.owner):
                o.exec_qty = o.qty
                n_exec += 1
                continue
            if side == C_BID:
                # Checked at the bid's own limit: the clearing price is never higher.
                price = -o.pkey
                c = acc.buy_cap(o.owner, price, True)
            else:
                c = acc.sell_cap(o.owner, True)
            o.exec_qty = o.qty if o.qty < c else <int32_t>c
            if o.exec_qty > 0:
                n_exec += 1
                if side == C_BID:
                    acc.s_energy[o.owner] += o.exec_qty
                    acc.s_money[o.owner] -= o.exec_qty * price
                else:
                    acc.s_energy[o.owner] -= o.exec_qty
        return n_exec

    cdef int _clear(self) except -1:
        """Clear every pending order into the fill buffer; empty the auction."""
        cdef size_t nb, na
        cdef wm_key* bk
        cdef wm_key* ak
        self._ensure_scratch(self.n)
        bk = self.keys
        nb = self._sorted_keys(C_BID, bk)
        ak = self.keys + nb
        na = self._sorted_keys(C_ASK, ak)
        # The ask keys were written after the bid keys; both fit in n slots.
        self.ready[C_BID] = nb
        self.ready[C_ASK] = nb + na
        return self._clear_sorted(bk, nb, ak, na)

    cdef int _clear_sorted(self, wm_key* bk, size_t nb, wm_key* ak, size_t na) except -1:
        """Clear the orders whose keys are `bk` (bids, at the start of `keys`) and `ak`
        (asks, right after them) into `fills`; empty the auction. Each side is in
        priority order up to ready[side] and in sorted buckets after it
        (wm_bucket_place)."""
        cdef size_t i = 0, j = 0
        cdef wm_key* b
        cdef wm_key* a
        cdef int64_t rb = 0, ra = 0, f, pb = 0, pa = 0, price, volume = 0
        cdef size_t k
        cdef _PairColumns fills = self.fills
        cdef Accounts acc = self.acc
        cdef int64_t n_exec = 0
        self.last_nb = nb
        self.last_na = na
        if acc is not None:  # caps are committed in priority order, across every price
            self._sort_all()
        n_exec = self._commit(bk, nb, C_BID)
        # A household that both buys and sells: its scratch balances restart per side,
        # so each side is checked against the balances before the clearing.
        n_exec += self._commit(ak, na, C_ASK)
        fills.open(nb + na)
        # Walk executable bids and asks in priority while they cross.
        while True:
            while i < nb and rb == 0:
                if i == self.ready[C_BID]:
                    self._sort_next_bucket(C_BID)
                rb = bk[i].exec_qty
                if rb == 0:
                    i += 1
            while j < na and ra == 0:
                if nb + j == self.ready[C_ASK]:
                    self._sort_next_bucket(C_ASK)
                ra = ak[j].exec_qty
                if ra == 0:
                    j += 1
            if i >= nb or j >= na:
                break
            b = &bk[i]
            a = &ak[j]
            if -b.pkey < a.pkey:
                break
            if self.stp != S_NONE and b.owner == a.owner:
                # One household on both sides: drop the earlier (cancel-resting) or the
                # later (cancel-incoming) order from the walk, by (ts, oid).
                if (b.ts < a.ts or (b.ts == a.ts and b.oid < a.oid)) == (self.stp == S_RESTING):
                    rb = 0
                    i += 1
                else:
                    ra = 0
                    j += 1
                continue
            f = rb if rb < ra else ra
            fills.push(b.oid, a.oid, f, b.owner, a.owner)
            volume += f
            pb = -b.pkey
            pa = a.pkey
            rb -= f
            ra -= f
            if rb == 0:
                i += 1
            if ra == 0:
                j += 1
        fills.close()
        price = (pb + pa) // 2 if fills.n else -1
        if acc is not None:
            for k in range(fills.n):
                acc.settle(fills.p_buyer[k], fills.p_seller[k], fills.p_qty[k], price, False)
        self.last_price = price
        self.last_volume = volume
        self.last_exec = n_exec
        self.n = 0
        self.n_live = 0
        self.index.clear()
        return 0

    def clear(self):
        """Clear the pending orders at one price, settle the fills into the accounts and
        empty the auction. Returns a `Clearing`."""
        cdef size_t orders = self.n_live
        self._clear()
        fills = self.fills.to_list(self.last_price)
        return Clearing(self.last_price if self.last_price >= 0 else None, fills,
                        self.last_volume, orders, self.last_exec)

    def clear_arrays(self, const uint8_t[::1] sides, const int64_t[::1] prices,
                     const int64_t[::1] qtys, const uint64_t[::1] oids,
                     const uint32_t[::1] owners=None, const int64_t[::1] ts=None):
        """Add the orders given as columns and clear; returns `ClearingArrays`.

        Same result as `add` for each row followed by `clear()`. Raises ValueError (and
        clears nothing) on a bad row or a duplicate oid.
        """
        cdef size_t n = sides.shape[0]
        if (prices.shape[0] != n or qtys.shape[0] != n or oids.shape[0] != n
                or (owners is not None and owners.shape[0] != n)
                or (ts is not None and ts.shape[0] != n)):
            raise ValueError("clear_arrays: all columns must have the same length")
        if self.n_live:
            raise ValueError("clear_arrays: the auction already holds pending orders")
        # Only cancelled rows may remain: drop them, so a refused batch leaves nothing.
        self.n = 0
        self.index.clear()
        # The orders go straight from the columns into the sort keys, bids first, then
        # asks: no rows and no index, since the auction is empty again at the end. One pass
        # checks every row (nothing is written before a bad row is refused) and finds what
        # the sort needs, how many bids and the price bits that vary, and counts the ids of
        # each bucket of the duplicate check.
        cdef size_t i, nb = 0
        cdef const uint32_t* owner_of = &owners[0] if owners is not None and n else NULL
        cdef const int64_t* ts_of = &ts[0] if ts is not None and n else NULL
        cdef wm_key* bk
        cdef wm_key* ak
        cdef uint8_t side
        cdef int64_t row_price, row_qty
        cdef uint64_t dupval = 0
        cdef size_t largest
        # the bits of each side's sort key ((uint32)pkey) set in some key and clear in some
        cdef uint32_t bid_or = 0, bid_and = 0xFFFFFFFF, ask_or = 0, ask_and = 0xFFFFFFFF
        cdef uint32_t side_key, bid_mask
        if self.counters == NULL:
            self.counters = <size_t*>malloc(2049 * sizeof(size_t))
            if self.counters == NULL:
                raise MemoryError()
        cdef size_t* dup_count = self.counters
        memset(dup_count, 0, 2049 * sizeof(size_t))
        for i in range(n):
            side = sides[i]
            row_price = prices[i]
            row_qty = qtys[i]
            if (side > 1 or row_qty <= 0 or row_qty > C_MAX_QTY or row_price <= 0
                    or row_price > C_MAX_PRICE):
                raise ValueError(f"row {i}: bad side, price or quantity")
            # Without branches on the side: sides come in no order, so a branch would be
            # mispredicted every other row. bid_mask is all ones for a bid, else zero.
            bid_mask = <uint32_t>0 - <uint32_t>(side == C_BID)
            nb += side == C_BID
            side_key = <uint32_t>(-row_price if side == C_BID else row_price)
            bid_or |= side_key & bid_mask
            bid_and &= side_key | ~bid_mask
            ask_or |= side_key & ~bid_mask
            ask_and &= side_key | bid_mask
            dup_count[wm_dup_bucket(oids[i]) + 1] += 1
        if n:
            if self.dup_cap < n:
                self.dup_buf = <uint64_t*>grow_scratch(self.dup_buf, &self.dup_cap, n, 8)
            largest = wm_dup_buckets(&oids[0], n, self.dup_buf, dup_count)
            # a bucket of m ids takes the power of two at or above 2m, under 4m + 16
            if self.dup_table_cap < 4 * largest + 16:
                self.dup_table = <uint64_t*>grow_scratch(self.dup_table, &self.dup_table_cap,
                                                         4 * largest + 16, 8)
            if wm_find_duplicate(self.dup_buf, self.counters, self.dup_table, &dupval):
                raise ValueError(f"oid: {dupval} appears more than once")
        # Only now, the rows accepted: growing the keys' buffer drops the last clearing's
        # keys, which last_depth reads until this clearing replaces them.
        self._ensure_scratch(n)
        bk = self.keys
        if n:
            if self.bucket_ends == NULL:
                self.bucket_ends = <size_t*>malloc(2 * 2048 * sizeof(size_t))
                if self.bucket_ends == NULL:
                    raise MemoryError()
            wm_bucket_place(&sides[0], &prices[0], &qtys[0], &oids[0], owner_of, ts_of, n,
                            nb, bid_or ^ bid_and, ask_or ^ ask_and, bk, self.bucket_ends)
        self.ready[C_BID] = 0
        self.ready[C_ASK] = nb
        self.next_bucket[C_BID] = self.next_bucket[C_ASK] = 0
        ak = bk + nb
        orders = n
        self._clear_sorted(bk, nb, ak, n - nb)
        fills = self.fills
        return ClearingArrays(self.last_price if self.last_price >= 0 else None,
                              self.last_volume, orders, self.last_exec,
                              fills.bid, fills.ask, fills.qty, fills.buyer, fills.seller)

    def last_depth(self) -> tuple:
        """The book of the last clearing per price level, as columns ``(side, price, qty,
        executable)`` (``array`` B, q, q, q): bids best first, then asks best first;
        ``qty`` is what the orders at that price asked for, ``executable`` what the caps
        let them commit (step 2 of the clearing: balances, Bmax headroom, money). The
        plain and the executable depth of the Energo overlap, without clearing again."""
        sides = array("B")
        prices = array("q")
        qtys = array("q")
        execs = array("q")
        cdef size_t i, start, end
        cdef int side
        cdef wm_key* k
        cdef int64_t level = -1, q = 0, e = 0
        cdef bint open_level
        self._sort_all()  # a clearing sorts only the buckets its walk reached
        for side in (C_BID, C_ASK):
            start = 0 if side == C_BID else self.last_nb
            end = self.last_nb if side == C_BID else self.last_nb + self.last_na
            open_level = False
            for i in range(start, end):
                k = &self.keys[i]
                if open_level and k.pkey != level:
                    sides.append(side)
                    prices.append(-level if side == C_BID else level)
                    qtys.append(q)
                    execs.append(e)
                    q = e = 0
                level = k.pkey
                q += k.qty
                e += k.exec_qty
                open_level = True
            if open_level:
                sides.append(side)
                prices.append(-level if side == C_BID else level)
                qtys.append(q)
                execs.append(e)
                q = e = 0
        return sides, prices, qtys, execs

    def quotes(self):
        """`Quote` over the pending orders; executable means the owner has capacity at the
        order's own price."""
        best = [None, None, None, None]
        bestkey = [None, None, None, None]
        cdef size_t i
        cdef CallOrder* o
        cdef Accounts acc = self.acc
        cdef bint ok
        for i in range(self.n):
            o = &self.rows[i]
            if not o.live:
                continue
            key = (-o.price if o.side == C_BID else o.price, o.ts, o.oid)
            if best[o.side] is None or key < bestkey[o.side]:
                best[o.side] = o.price
                bestkey[o.side] = key
            if acc is None:
                ok = True
            elif o.side == C_BID:
                ok = acc.buy_cap(o.owner, o.price, False) > 0
            else:
                ok = acc.sell_cap(o.owner, False) > 0
            if ok and (best[2 + o.side] is None or key < bestkey[2 + o.side]):
                best[2 + o.side] = o.price
                bestkey[2 + o.side] = key
        return Quote(best[0], best[1], best[2], best[3])

    def orders(self, int side) -> list:
        """Pending orders of one side in priority order, as `RestingOrder`."""
        rows = [(-o["price"] if side == C_BID else o["price"], o["ts"], o["oid"], o)
                for o in self._pending() if o["side"] == side]
        rows.sort(key=lambda r: r[:3])
        return [RestingOrder(o["oid"], o["side"], o["price"], o["qty"], o["owner"])
                for *_, o in rows]

    cdef list _pending(self):
        cdef size_t i
        out = []
        for i in range(self.n):
            if self.rows[i].live:
                out.append(self.rows[i])
        return out
