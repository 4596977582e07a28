# The C helpers the engine (_engine.pyx) and the replay scanner
# (exchange/replay/_logscan.pyx) share: growable arrays and the 64-bit mix their hash
# tables use. Both cimport these inline functions (no module is imported at run time);
# setup.py puts this folder on Cython's include path.

from libc.stdint cimport uint64_t
from libc.stdlib cimport realloc


cdef inline uint64_t mix(uint64_t x) noexcept nogil:
    """The splitmix64 finaliser: spreads keys (sequential ones too) over a hash table."""
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111eb
    x ^= x >> 31
    return x


cdef inline size_t next_cap(size_t cap, size_t need) noexcept nogil:
    """The capacity to grow to for `need` items: doubling from `cap` (16 at first)."""
    cap = cap if cap else 16
    while cap < need:
        cap *= 2
    return cap


cdef inline void* resize(void* ptr, size_t cap, size_t item) except NULL:
    """realloc to `cap` items, or MemoryError."""
    cdef void* p = realloc(ptr, cap * item)
    if p == NULL:
        raise MemoryError()
    return p


cdef inline void* grow(void* ptr, size_t* cap, size_t need, size_t item) except NULL:
    """Grow one malloc'd array to hold at least `need` items; updates `cap`."""
    cdef size_t new_cap = next_cap(cap[0], need)
    cdef void* p = resize(ptr, new_cap, item)
    cap[0] = new_cap
    return p
