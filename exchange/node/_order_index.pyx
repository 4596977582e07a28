# cython: language_level=3
"""The message store's index of open orders, compiled: order id -> the numbers of the held
messages that carry it, with no Python object per order.

An order id is the lower-case hex of 32 bytes (a SHA-256); the index keeps those 32 bytes
and a 32-bit message number in one slot of an open-addressing table (linear probing,
backward-shift deletion, at most three quarters full), 36 bytes a slot: about 50 to 100
bytes per order, against about 120 for a dict of 32-byte ``bytes`` keys. A key may be
held more than once (two messages carrying one order), each time with its own number.

Where a key lands is a keyed mix of its first eight bytes, with a key drawn when the
module loads, so that no one can choose order ids that pile up in one place of the table.
``tests/exchange/node/test_order_index.py`` holds it to a dict of lists.
"""

import os

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy

from _native cimport mix

cdef struct Entry:
    unsigned char key[32]
    uint32_t value  # 0 marks an empty slot


cdef uint64_t _SEED = int.from_bytes(os.urandom(8), "little")


cdef extern from "Python.h":
    int PyUnicode_KIND(object)
    void* PyUnicode_DATA(object)
    int PyUnicode_1BYTE_KIND


cdef signed char _DIGIT[256]  # the value of a lower-case hex digit, -1 for any other byte
cdef int _c
for _c in range(256):
    _DIGIT[_c] = -1
for _c in range(10):
    _DIGIT[48 + _c] = _c  # 0-9
for _c in range(6):
    _DIGIT[97 + _c] = 10 + _c  # a-f (lower case only: an id is written so)


cdef bint _unhex(str text, unsigned char* out) noexcept:
    """``text`` as 32 bytes into ``out``; False if it is not an order id as written."""
    if len(text) != 64 or PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return False
    cdef const unsigned char* chars = <const unsigned char*>PyUnicode_DATA(text)
    cdef Py_ssize_t i
    cdef int hi, lo
    for i in range(32):
        hi = _DIGIT[chars[2 * i]]
        lo = _DIGIT[chars[2 * i + 1]]
        if hi < 0 or lo < 0:
            return False
        out[i] = <unsigned char>((hi << 4) | lo)
    return True


cdef class OrderIndex:
    """Order ids -> message numbers (1 to 2**32 - 1), a multiset of pairs."""

    cdef Entry* table
    cdef size_t mask
    cdef size_t count

    def __cinit__(self):
        self.table = <Entry*>calloc(16, sizeof(Entry))
        if self.table == NULL:
            raise MemoryError()
        self.mask = 15
        self.count = 0

    def __dealloc__(self):
        free(self.table)

    def __len__(self):
        """The pairs held."""
        return self.count

    def nbytes(self):
        """The bytes its table takes."""
        return (self.mask + 1) * sizeof(Entry)

    cdef inline size_t _home(self, const unsigned char* key) noexcept:
        cdef uint64_t h
        memcpy(&h, key, 8)
        return <size_t>(mix(h ^ _SEED) & self.mask)

    cdef int _grow(self) except -1:
        cdef size_t old_size = self.mask + 1, i, j
        cdef Entry* old = self.table
        cdef Entry* table = <Entry*>calloc(old_size * 2, sizeof(Entry))
        if table == NULL:
            raise MemoryError()
        self.table = table
        self.mask = old_size * 2 - 1
        for i in range(old_size):
            if old[i].value:
                j = self._home(old[i].key)
                while table[j].value:
                    j = (j + 1) & self.mask
                table[j] = old[i]
        free(old)
        return 0

    cdef int _add(self, str order_id, uint32_t value) except -1:
        cdef unsigned char key[32]
        if not _unhex(order_id, key):
            raise ValueError(f"not an order id: {order_id!r:.80}")
        if value == 0:
            raise ValueError("message numbers start at 1")
        if (self.count + 1) * 4 > (self.mask + 1) * 3:
            self._grow()
        cdef size_t i = self._home(key)
        while self.table[i].value:
            i = (i + 1) & self.mask
        memcpy(self.table[i].key, key, 32)
        self.table[i].value = value
        self.count += 1
        return 0

    def add(self, str order_id, uint32_t value):
        """Hold the pair (``order_id``, ``value``); ValueError if ``order_id`` is not the
        lower-case hex of 32 bytes or ``value`` is 0."""
        self._add(order_id, value)

    def add_all(self, list order_ids, uint32_t value):
        """:meth:`add` each of ``order_ids`` with ``value`` (the orders of one message)."""
        cdef object order_id
        for order_id in order_ids:
            self._add(order_id, value)

    cdef list _find(self, str order_id, list found):
        cdef unsigned char key[32]
        if not _unhex(order_id, key):
            return found
        cdef size_t i = self._home(key)
        while self.table[i].value:
            if memcmp(self.table[i].key, key, 32) == 0:
                if found is None:
                    found = []
                found.append(self.table[i].value)
            i = (i + 1) & self.mask
        return found

    def find(self, str order_id):
        """The numbers held with ``order_id``, in no set order; [] for anything that is
        not an order id as written."""
        return self._find(order_id, [])

    def find_all(self, list order_ids):
        """{order id: :meth:`find`} for those of ``order_ids`` that are held (most are
        not: one lookup per order of each message heard)."""
        cdef dict hits = {}
        cdef list found
        cdef object order_id
        for order_id in order_ids:
            found = self._find(order_id, None)
            if found is not None:
                hits[order_id] = found
        return hits

    def discard(self, str order_id, uint32_t value):
        """Drop the pair (``order_id``, ``value``) if held; True if it was."""
        cdef unsigned char key[32]
        if not _unhex(order_id, key) or value == 0:
            return False
        cdef size_t i = self._home(key), j, home
        while True:
            if not self.table[i].value:
                return False
            if self.table[i].value == value and memcmp(self.table[i].key, key, 32) == 0:
                break
            i = (i + 1) & self.mask
        # Backward shift: move up each later entry of the run that may sit in slot i (its
        # home is not cyclically in (i, j]), so that no probe stops short of it.
        j = i
        while True:
            j = (j + 1) & self.mask
            if not self.table[j].value:
                break
            home = self._home(self.table[j].key)
            if (j > i and i < home <= j) or (j < i and (home > i or home <= j)):
                continue
            self.table[i] = self.table[j]
            i = j
        self.table[i].value = 0
        self.count -= 1
        return True
