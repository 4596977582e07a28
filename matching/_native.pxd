# The C helpers the compiled modules share: the engine (_engine.pyx), the replay scanner
# (exchange/replay/_logscan.pyx), the ledger's fold (settlement/ledger/_fastfold.pyx) and
# the node's order index (exchange/node/_order_index.pyx). Growable arrays, the 64-bit mix
# their hash tables use, a prefetch hint, SHA-256. Each cimports these inline functions (no
# module is imported at run time); setup.py puts this folder on Cython's include path.

from libc.stdint cimport uint32_t, uint64_t
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
    # A hint to start loading the cache line at p (never faults): a hash slot looked up
    # a few rows later, so that its cache miss overlaps the work in between.
    void wm_prefetch "__builtin_prefetch"(const void* p) nogil


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


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* SHA-256 (FIPS 180-4): the replay scanner's keys for ids that are not 64 hex digits
       and the ledger's chained entry hashes. Blocks go through the CPU's SHA extensions
       where it has them (x86-64 with SHA-NI, checked once at run time), otherwise through
       the portable rounds below; a property test holds both to hashlib. */
    static const uint32_t WM_K[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    };
    #define WM_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
    static void wm_sha256_portable(uint32_t* h, const unsigned char* p, size_t blocks) {
        for (; blocks; blocks--, p += 64) {
            uint32_t w[64];
            for (int i = 0; i < 16; i++)
                w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16
                       | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
            for (int i = 16; i < 64; i++) {
                uint32_t s0 = WM_ROR(w[i - 15], 7) ^ WM_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
                uint32_t s1 = WM_ROR(w[i - 2], 17) ^ WM_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16] + s0 + w[i - 7] + s1;
            }
            uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6],
                     k = h[7];
            for (int i = 0; i < 64; i++) {
                uint32_t t1 = k + (WM_ROR(e, 6) ^ WM_ROR(e, 11) ^ WM_ROR(e, 25))
                              + ((e & f) ^ (~e & g)) + WM_K[i] + w[i];
                uint32_t t2 = (WM_ROR(a, 2) ^ WM_ROR(a, 13) ^ WM_ROR(a, 22))
                              + ((a & b) ^ (a & c) ^ (b & c));
                k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
            }
            h[0] += a; h[1] += b; h[2] += c; h[3] += d;
            h[4] += e; h[5] += f; h[6] += g; h[7] += k;
        }
    }
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <immintrin.h>
    #define WM_HAVE_SHANI 1
    /* The same rounds with the SHA-NI instructions: the state as ABEF and CDGH, four
       rounds per 128-bit message group, the schedule kept in four registers. */
    __attribute__((target("sha,sse4.1,ssse3")))
    static void wm_sha256_shani(uint32_t* h, const unsigned char* p, size_t blocks) {
        const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
        __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i*)&h[0]), 0xB1);
        __m128i cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i*)&h[4]), 0x1B);
        __m128i abef = _mm_alignr_epi8(t, cdgh, 8);
        cdgh = _mm_blend_epi16(cdgh, t, 0xF0);
        for (; blocks; blocks--, p += 64) {
            __m128i abef0 = abef, cdgh0 = cdgh, w[4], m;
            #pragma GCC unroll 16
            for (int g = 0; g < 16; g++) {
                if (g < 4)
                    w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i*)(p + 16 * g)), bswap);
                m = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i*)&WM_K[4 * g]));
                cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
                if (g >= 3 && g < 15) {
                    __m128i next = _mm_add_epi32(w[(g + 1) & 3],
                                                 _mm_alignr_epi8(w[g & 3], w[(g + 3) & 3], 4));
                    w[(g + 1) & 3] = _mm_sha256msg2_epu32(next, w[g & 3]);
                }
                abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
                if (g >= 1 && g < 13)
                    w[(g + 3) & 3] = _mm_sha256msg1_epu32(w[(g + 3) & 3], w[g & 3]);
            }
            abef = _mm_add_epi32(abef, abef0);
            cdgh = _mm_add_epi32(cdgh, cdgh0);
        }
        t = _mm_shuffle_epi32(abef, 0x1B);
        cdgh = _mm_shuffle_epi32(cdgh, 0xB1);
        _mm_storeu_si128((__m128i*)&h[0], _mm_blend_epi16(t, cdgh, 0xF0));
        _mm_storeu_si128((__m128i*)&h[4], _mm_alignr_epi8(cdgh, t, 8));
    }
    #endif
    #ifdef WM_HAVE_SHANI
    #include <cpuid.h>
    /* CPUID itself rather than __builtin_cpu_supports("sha"), which older compilers lack:
       SHA is leaf 7 EBX bit 29, SSSE3 and SSE4.1 leaf 1 ECX bits 9 and 19. */
    static int wm_cpu_has_shani(void) {
        unsigned int a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 9)) || !(c & (1u << 19)))
            return 0;
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
        return (b >> 29) & 1;
    }
    #endif
    static void (*wm_sha256_blocks)(uint32_t*, const unsigned char*, size_t) = NULL;
    static void wm_sha256_choose(void) {
        /* WM_SHA256_PORTABLE set to anything but "" or "0": the portable rounds (tests) */
        const char* portable = getenv("WM_SHA256_PORTABLE");
        wm_sha256_blocks = wm_sha256_portable;
    #ifdef WM_HAVE_SHANI
        if (wm_cpu_has_shani() && !(portable && portable[0] && strcmp(portable, "0") != 0))
            wm_sha256_blocks = wm_sha256_shani;
    #else
        (void)portable;
    #endif
    }
    /* The digest of p[0, n) as eight big-endian words in h. */
    static void wm_sha256(const unsigned char* p, size_t n, uint32_t* h) {
        static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        unsigned char block[128];
        if (!wm_sha256_blocks) wm_sha256_choose();
        memcpy(h, iv, sizeof(iv));
        size_t whole = n / 64, r = n % 64;
        if (whole) wm_sha256_blocks(h, p, whole);
        memset(block, 0, sizeof(block));
        memcpy(block, p + 64 * whole, r);
        block[r] = 0x80;
        size_t tail = r >= 56 ? 2 : 1;
        uint64_t bits = (uint64_t)n * 8;
        for (int j = 0; j < 8; j++) block[64 * tail - 1 - j] = (unsigned char)(bits >> (8 * j));
        wm_sha256_blocks(h, block, tail);
    }
    /* The digest as 32 bytes. */
    static void wm_sha256_bytes(const unsigned char* p, size_t n, unsigned char* out) {
        uint32_t h[8];
        wm_sha256(p, n, h);
        for (int i = 0; i < 8; i++) {
            out[4 * i] = (unsigned char)(h[i] >> 24); out[4 * i + 1] = (unsigned char)(h[i] >> 16);
            out[4 * i + 2] = (unsigned char)(h[i] >> 8); out[4 * i + 3] = (unsigned char)h[i];
        }
    }
    """
    void wm_sha256(const unsigned char* p, size_t n, uint32_t* h) nogil
    void wm_sha256_bytes(const unsigned char* p, size_t n, unsigned char* out) nogil
