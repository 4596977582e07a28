# The C helpers the engine (_engine.pyx) and the replay scanner
# (exchange/replay/_logscan.pyx) share: growable arrays and the 64-bit mix their hash
# tables use. Both cimport these inline functions (no module is imported at run time);
# setup.py puts this folder on Cython's include path.

from libc.stdint cimport uint64_t
from libc.stdlib cimport free, realloc


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


cdef extern from *:
    """
    #include <stdlib.h>
    #ifdef __linux__
    #include <sys/mman.h>
    #endif
    /* Scratch that a clearing scatters into (sort keys, id buckets): 2 MiB-aligned and, on
       Linux, backed by huge pages where the kernel allows (THP "madvise" mode), so that
       writing into thousands of buckets at once does not miss the TLB on nearly every
       store. Small scratch is plain malloc. */
    static void* wm_scratch_alloc(size_t bytes) {
        size_t align = (size_t)2 << 20;
        void* p = NULL;
        if (bytes < align) return malloc(bytes ? bytes : 1);
        bytes = (bytes + align - 1) & ~(align - 1);
        if (posix_memalign(&p, align, bytes) != 0) return NULL;
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        madvise(p, bytes, MADV_HUGEPAGE);
    #endif
        return p;
    }
    """
    void* wm_scratch_alloc(size_t bytes) nogil


cdef inline void* grow_scratch(void* ptr, size_t* cap, size_t need, size_t item) except NULL:
    """Like `grow`, for scratch whose contents need not survive: the new block is fresh
    (`wm_scratch_alloc`) and the old one is freed."""
    cdef size_t new_cap = next_cap(cap[0], need)
    cdef void* p = wm_scratch_alloc(new_cap * item)
    if p == NULL:
        raise MemoryError()
    free(ptr)
    cap[0] = new_cap
    return p
