/*
 * pool._sharecheck - the whole Stratum share check in one C call.
 *
 * Why this exists: every submitted share costs one double SHA-256 of the coinbase, one double SHA-256 per
 * merkle branch level and one of the block header.  Done through hashlib that is ~50 Python-level calls per
 * share; here it is one call, and on CPUs with the SHA extensions (SHA-NI) the hashing itself runs in
 * hardware.  The pure-Python function pool.bitcoin.sharecheck.check_share_py is the specification: this file
 * must return byte-identical results (and raise the same exception types) for every input.
 *
 * Layout:
 *   1. SHA-256 constants (FIPS 180-4, section 4.2.2 and 5.3.3).
 *   2. A portable C back end (any CPU).
 *   3. An x86 SHA-NI back end, compiled per function with target attributes so the module needs no -march
 *      flag; it is chosen at import time with cpuid.  POOL_SHARECHECK_PORTABLE=1 forces the portable one.
 *   4. Common code (streaming over the coinbase pieces, comparison) and the Python bindings.
 *
 * A back end provides four operations, chosen to keep the hot merkle loop inside one function:
 *   compress(H, p, n)          run n 64-byte blocks into the standard state words H[0..7]
 *   hash32(in, out)            out = SHA-256 state words of the 32-byte message whose big-endian words are in
 *   merkle(first, br, n, root) root = sha256d chain: second hash of the coinbase, then n branch steps
 *   header80(hdr, digest)      digest = sha256d(hdr[0..79]) as bytes
 * Digests are passed between steps as big-endian message words (a digest's bytes read as big-endian words
 * are exactly the state words), so no byte swapping happens between the chained hashes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define SHARECHECK_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define SHARECHECK_X86 0
#endif

/* ------------------------------------------------------------------------------------------------------ */
/* 1. Constants                                                                                            */
/* ------------------------------------------------------------------------------------------------------ */

/* First 32 bits of the fractional parts of the cube roots of the first 64 primes (FIPS 180-4, 4.2.2). */
static const uint32_t K256[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

/* Initial hash value (FIPS 180-4, 5.3.3). */
#define IV0 0x6a09e667u
#define IV1 0xbb67ae85u
#define IV2 0x3c6ef372u
#define IV3 0xa54ff53au
#define IV4 0x510e527fu
#define IV5 0x9b05688cu
#define IV6 0x1f83d9abu
#define IV7 0x5be0cd19u

static const uint32_t IV256[8] = {IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7};

/*
 * W[t] + K[t] for the padding block of a 64-byte message (0x80, zeros, bit length 512).  Every merkle step
 * hashes a 64-byte message, so its second block never changes: precomputing the whole schedule removes the
 * message expansion from a third of all compressions.  Filled in at import time by init_constants().
 */
static uint32_t PAD64_WK[64];

static inline uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#define ROTR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define BSIG0(x) (ROTR32((x), 2) ^ ROTR32((x), 13) ^ ROTR32((x), 22))
#define BSIG1(x) (ROTR32((x), 6) ^ ROTR32((x), 11) ^ ROTR32((x), 25))
#define SSIG0(x) (ROTR32((x), 7) ^ ROTR32((x), 18) ^ ((x) >> 3))
#define SSIG1(x) (ROTR32((x), 17) ^ ROTR32((x), 19) ^ ((x) >> 10))
#define CH(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJ(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))

static void init_constants(void)
{
    uint32_t w[64];
    int t;
    memset(w, 0, sizeof(w));
    w[0] = 0x80000000u;
    w[15] = 512u;
    for (t = 16; t < 64; t++)
        w[t] = SSIG1(w[t - 2]) + w[t - 7] + SSIG0(w[t - 15]) + w[t - 16];
    for (t = 0; t < 64; t++)
        PAD64_WK[t] = w[t] + K256[t];
}

/* ------------------------------------------------------------------------------------------------------ */
/* 2. Portable back end                                                                                    */
/* ------------------------------------------------------------------------------------------------------ */

/* One round; the caller rotates the variable names instead of moving values. */
#define P_ROUND(a, b, c, d, e, f, g, h, wk)                                                                 \
    do {                                                                                                    \
        uint32_t t1_ = (h) + BSIG1(e) + CH((e), (f), (g)) + (wk);                                         \
        uint32_t t2_ = BSIG0(a) + MAJ((a), (b), (c));                                                       \
        (d) += t1_;                                                                                         \
        (h) = t1_ + t2_;                                                                                    \
    } while (0)

#define P_8ROUNDS(WK, i)                                                                                    \
    do {                                                                                                    \
        P_ROUND(a, b, c, d, e, f, g, h, WK((i) + 0));                                                       \
        P_ROUND(h, a, b, c, d, e, f, g, WK((i) + 1));                                                       \
        P_ROUND(g, h, a, b, c, d, e, f, WK((i) + 2));                                                       \
        P_ROUND(f, g, h, a, b, c, d, e, WK((i) + 3));                                                       \
        P_ROUND(e, f, g, h, a, b, c, d, WK((i) + 4));                                                       \
        P_ROUND(d, e, f, g, h, a, b, c, WK((i) + 5));                                                       \
        P_ROUND(c, d, e, f, g, h, a, b, WK((i) + 6));                                                       \
        P_ROUND(b, c, d, e, f, g, h, a, WK((i) + 7));                                                       \
    } while (0)

/* Rounds 0..15 read the message words; later rounds extend the schedule in a 16-word ring. */
#define P_WK_FIRST(t) (w[(t)] + K256[(t)])
#define P_WK_SCHED(t)                                                                                       \
    (w[(t) & 15] += SSIG1(w[((t) - 2) & 15]) + w[((t) - 7) & 15] + SSIG0(w[((t) - 15) & 15]),              \
     w[(t) & 15] + K256[(t)])
#define P_WK_TABLE(t) (wk[(t)])

/* Compress one block given as 16 message words (the ring w is clobbered). */
static inline void p_block_words(uint32_t s[8], uint32_t w[16])
{
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    int i;
    P_8ROUNDS(P_WK_FIRST, 0);
    P_8ROUNDS(P_WK_FIRST, 8);
    for (i = 16; i < 64; i += 16) {
        P_8ROUNDS(P_WK_SCHED, i);
        P_8ROUNDS(P_WK_SCHED, i + 8);
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

/* Compress one block whose W[t] + K[t] values are precomputed. */
static inline void p_block_wk(uint32_t s[8], const uint32_t wk[64])
{
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    int i;
    for (i = 0; i < 64; i += 16) {
        P_8ROUNDS(P_WK_TABLE, i);
        P_8ROUNDS(P_WK_TABLE, i + 8);
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

static void p_compress(uint32_t s[8], const uint8_t *p, size_t nblocks)
{
    uint32_t w[16];
    int i;
    while (nblocks--) {
        for (i = 0; i < 16; i++)
            w[i] = load_be32(p + 4 * i);
        p_block_words(s, w);
        p += 64;
    }
}

static void p_hash32(const uint32_t in[8], uint32_t out[8])
{
    uint32_t w[16];
    int i;
    for (i = 0; i < 8; i++) {
        w[i] = in[i];
        out[i] = IV256[i];
    }
    w[8] = 0x80000000u;
    for (i = 9; i < 15; i++)
        w[i] = 0;
    w[15] = 256u;
    p_block_words(out, w);
}

static void p_merkle(const uint32_t first[8], const uint8_t *branch, size_t n, uint32_t root[8])
{
    uint32_t w[16], s[8];
    size_t k;
    int i;
    p_hash32(first, root);
    for (k = 0; k < n; k++, branch += 32) {
        for (i = 0; i < 8; i++) {
            w[i] = root[i];
            w[8 + i] = load_be32(branch + 4 * i);
            s[i] = IV256[i];
        }
        p_block_words(s, w);
        p_block_wk(s, PAD64_WK);
        p_hash32(s, root);
    }
}

static void p_header80(const uint8_t hdr[80], uint8_t digest[32])
{
    uint32_t w[16], s[8], out[8];
    int i;
    memcpy(s, IV256, sizeof(s));
    p_compress(s, hdr, 1);
    for (i = 0; i < 4; i++)
        w[i] = load_be32(hdr + 64 + 4 * i);
    w[4] = 0x80000000u;
    for (i = 5; i < 15; i++)
        w[i] = 0;
    w[15] = 640u;
    p_block_words(s, w);
    p_hash32(s, out);
    for (i = 0; i < 8; i++)
        store_be32(digest + 4 * i, out[i]);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 3. SHA-NI back end (x86 only, selected at run time)                                                     */
/* ------------------------------------------------------------------------------------------------------ */

#if SHARECHECK_X86

#define NI_FN __attribute__((target("sha,sse4.1,ssse3")))
#define NI_INLINE NI_FN static inline __attribute__((always_inline))

/*
 * SHA256RNDS2 keeps the eight working variables in two registers ordered {A,B,E,F} and {C,D,G,H} (highest
 * lane first).  Between blocks we hold the state that way; at hash boundaries it is converted to the plain
 * word order H0..H3 / H4..H7, which is also the message-word order of the next hash's input.
 */
NI_INLINE void ni_from_words(__m128i h0123, __m128i h4567, __m128i *abef, __m128i *cdgh)
{
    __m128i badc = _mm_shuffle_epi32(h0123, 0xB1); /* lanes low..high: B A D C */
    __m128i hgfe = _mm_shuffle_epi32(h4567, 0x1B); /* lanes low..high: H G F E */
    *abef = _mm_alignr_epi8(badc, hgfe, 8);        /* F E B A */
    *cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);     /* H G D C */
}

NI_INLINE void ni_to_words(__m128i abef, __m128i cdgh, __m128i *h0123, __m128i *h4567)
{
    __m128i abef_r = _mm_shuffle_epi32(abef, 0x1B); /* A B E F */
    __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);   /* G H C D */
    *h0123 = _mm_blend_epi16(abef_r, ghcd, 0xF0);   /* A B C D */
    *h4567 = _mm_alignr_epi8(ghcd, abef_r, 8);      /* E F G H */
}

NI_INLINE __m128i ni_bswap_mask(void)
{
    return _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
}

NI_INLINE __m128i ni_load_be(const uint8_t *p, __m128i mask)
{
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)p), mask);
}

NI_INLINE __m128i ni_k(int i)
{
    return _mm_loadu_si128((const __m128i *)(const void *)&K256[4 * i]);
}

/* Four rounds with the four W[t]+K[t] values in wk. */
#define NI_QROUND(wk)                                                                                       \
    do {                                                                                                    \
        __m128i q_ = (wk);                                                                                  \
        s1 = _mm_sha256rnds2_epu32(s1, s0, q_);                                                             \
        q_ = _mm_shuffle_epi32(q_, 0x0E);                                                                   \
        s0 = _mm_sha256rnds2_epu32(s0, s1, q_);                                                             \
    } while (0)

/* Next four schedule words from the previous sixteen (ma oldest ... md newest). */
NI_INLINE __m128i ni_sched(__m128i ma, __m128i mb, __m128i mc, __m128i md)
{
    __m128i t = _mm_sha256msg1_epu32(ma, mb);
    t = _mm_add_epi32(t, _mm_alignr_epi8(md, mc, 4));
    return _mm_sha256msg2_epu32(t, md);
}

/* Compress one block given as message words m0..m3 (W0 in the lowest lane of m0). */
NI_INLINE void ni_block(__m128i *abef, __m128i *cdgh, __m128i m0, __m128i m1, __m128i m2, __m128i m3)
{
    __m128i s0 = *abef, s1 = *cdgh;
    int i;
    NI_QROUND(_mm_add_epi32(m0, ni_k(0)));
    NI_QROUND(_mm_add_epi32(m1, ni_k(1)));
    NI_QROUND(_mm_add_epi32(m2, ni_k(2)));
    NI_QROUND(_mm_add_epi32(m3, ni_k(3)));
    for (i = 4; i < 16; i += 4) {
        m0 = ni_sched(m0, m1, m2, m3);
        NI_QROUND(_mm_add_epi32(m0, ni_k(i)));
        m1 = ni_sched(m1, m2, m3, m0);
        NI_QROUND(_mm_add_epi32(m1, ni_k(i + 1)));
        m2 = ni_sched(m2, m3, m0, m1);
        NI_QROUND(_mm_add_epi32(m2, ni_k(i + 2)));
        m3 = ni_sched(m3, m0, m1, m2);
        NI_QROUND(_mm_add_epi32(m3, ni_k(i + 3)));
    }
    *abef = _mm_add_epi32(*abef, s0);
    *cdgh = _mm_add_epi32(*cdgh, s1);
}

/* Compress one block whose W[t] + K[t] values are precomputed (no message expansion at all). */
NI_INLINE void ni_block_wk(__m128i *abef, __m128i *cdgh, const uint32_t wk[64])
{
    __m128i s0 = *abef, s1 = *cdgh;
    int i;
    for (i = 0; i < 16; i++)
        NI_QROUND(_mm_loadu_si128((const __m128i *)(const void *)&wk[4 * i]));
    *abef = _mm_add_epi32(*abef, s0);
    *cdgh = _mm_add_epi32(*cdgh, s1);
}

NI_INLINE void ni_iv(__m128i *abef, __m128i *cdgh)
{
    *abef = _mm_set_epi32((int)IV0, (int)IV1, (int)IV4, (int)IV5);
    *cdgh = _mm_set_epi32((int)IV2, (int)IV3, (int)IV6, (int)IV7);
}

/* SHA-256 of a 32-byte message given as words; result as words. */
NI_INLINE void ni_hash32_words(__m128i *h0123, __m128i *h4567)
{
    __m128i abef, cdgh;
    ni_iv(&abef, &cdgh);
    ni_block(&abef, &cdgh, *h0123, *h4567, _mm_set_epi32(0, 0, 0, (int)0x80000000u),
             _mm_set_epi32(256, 0, 0, 0));
    ni_to_words(abef, cdgh, h0123, h4567);
}

NI_FN static void ni_compress(uint32_t s[8], const uint8_t *p, size_t nblocks)
{
    const __m128i mask = ni_bswap_mask();
    __m128i abef, cdgh, lo, hi;
    ni_from_words(_mm_loadu_si128((const __m128i *)(const void *)s),
                  _mm_loadu_si128((const __m128i *)(const void *)(s + 4)), &abef, &cdgh);
    while (nblocks--) {
        ni_block(&abef, &cdgh, ni_load_be(p, mask), ni_load_be(p + 16, mask), ni_load_be(p + 32, mask),
                 ni_load_be(p + 48, mask));
        p += 64;
    }
    ni_to_words(abef, cdgh, &lo, &hi);
    _mm_storeu_si128((__m128i *)(void *)s, lo);
    _mm_storeu_si128((__m128i *)(void *)(s + 4), hi);
}

NI_FN static void ni_hash32(const uint32_t in[8], uint32_t out[8])
{
    __m128i lo = _mm_loadu_si128((const __m128i *)(const void *)in);
    __m128i hi = _mm_loadu_si128((const __m128i *)(const void *)(in + 4));
    ni_hash32_words(&lo, &hi);
    _mm_storeu_si128((__m128i *)(void *)out, lo);
    _mm_storeu_si128((__m128i *)(void *)(out + 4), hi);
}

NI_FN static void ni_merkle(const uint32_t first[8], const uint8_t *branch, size_t n, uint32_t root[8])
{
    const __m128i mask = ni_bswap_mask();
    __m128i lo = _mm_loadu_si128((const __m128i *)(const void *)first);
    __m128i hi = _mm_loadu_si128((const __m128i *)(const void *)(first + 4));
    __m128i abef, cdgh;
    size_t k;
    ni_hash32_words(&lo, &hi);
    for (k = 0; k < n; k++, branch += 32) {
        ni_iv(&abef, &cdgh);
        ni_block(&abef, &cdgh, lo, hi, ni_load_be(branch, mask), ni_load_be(branch + 16, mask));
        ni_block_wk(&abef, &cdgh, PAD64_WK);
        ni_to_words(abef, cdgh, &lo, &hi);
        ni_hash32_words(&lo, &hi);
    }
    _mm_storeu_si128((__m128i *)(void *)root, lo);
    _mm_storeu_si128((__m128i *)(void *)(root + 4), hi);
}

NI_FN static void ni_header80(const uint8_t hdr[80], uint8_t digest[32])
{
    const __m128i mask = ni_bswap_mask();
    __m128i abef, cdgh, lo, hi;
    ni_iv(&abef, &cdgh);
    ni_block(&abef, &cdgh, ni_load_be(hdr, mask), ni_load_be(hdr + 16, mask), ni_load_be(hdr + 32, mask),
             ni_load_be(hdr + 48, mask));
    ni_block(&abef, &cdgh, ni_load_be(hdr + 64, mask), _mm_set_epi32(0, 0, 0, (int)0x80000000u),
             _mm_setzero_si128(), _mm_set_epi32(640, 0, 0, 0));
    ni_to_words(abef, cdgh, &lo, &hi);
    ni_hash32_words(&lo, &hi);
    _mm_storeu_si128((__m128i *)(void *)digest, _mm_shuffle_epi8(lo, mask));
    _mm_storeu_si128((__m128i *)(void *)(digest + 16), _mm_shuffle_epi8(hi, mask));
}

/* SHA-NI needs CPUID.(EAX=7,ECX=0):EBX[29]; the code also uses SSSE3 (pshufb) and SSE4.1 (pblendw). */
static int cpu_has_sha_ni(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return 0;
    if (!(ecx & (1u << 19)) || !(ecx & (1u << 9)))
        return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    return (ebx & (1u << 29)) != 0;
}

#endif /* SHARECHECK_X86 */

/* ------------------------------------------------------------------------------------------------------ */
/* 4. Common code                                                                                          */
/* ------------------------------------------------------------------------------------------------------ */

typedef struct {
    void (*compress)(uint32_t s[8], const uint8_t *p, size_t nblocks);
    void (*hash32)(const uint32_t in[8], uint32_t out[8]);
    void (*merkle)(const uint32_t first[8], const uint8_t *branch, size_t n, uint32_t root[8]);
    void (*header80)(const uint8_t hdr[80], uint8_t digest[32]);
} backend_t;

static const backend_t PORTABLE = {p_compress, p_hash32, p_merkle, p_header80};
#if SHARECHECK_X86
static const backend_t SHA_NI = {ni_compress, ni_hash32, ni_merkle, ni_header80};
#endif

static const backend_t *BE = &PORTABLE;
static int USING_SHA_NI = 0;

/* Streaming SHA-256 over several pieces: whole blocks are compressed straight from the caller's memory, so
 * no coinbase of any size is ever copied into (or allocated on) a temporary buffer. */
typedef struct {
    uint32_t s[8];
    uint8_t buf[64];
    size_t buflen;
    uint64_t total;
} stream_t;

static inline void stream_init(stream_t *st)
{
    memcpy(st->s, IV256, sizeof(st->s));
    st->buflen = 0;
    st->total = 0;
}

static void stream_update(stream_t *st, const uint8_t *p, size_t n)
{
    st->total += n;
    if (st->buflen) {
        size_t take = 64 - st->buflen;
        if (take > n)
            take = n;
        memcpy(st->buf + st->buflen, p, take);
        st->buflen += take;
        p += take;
        n -= take;
        if (st->buflen < 64)
            return;
        BE->compress(st->s, st->buf, 1);
        st->buflen = 0;
    }
    if (n >= 64) {
        BE->compress(st->s, p, n / 64);
        p += n & ~(size_t)63;
        n &= 63;
    }
    if (n) {
        memcpy(st->buf, p, n);
        st->buflen = n;
    }
}

/* Finish the first hash; the state words are the digest's big-endian words. */
static void stream_final(stream_t *st)
{
    uint8_t pad[128];
    size_t len = st->buflen, nblocks = len < 56 ? 1 : 2;
    uint64_t bits = st->total << 3;
    int i;
    memcpy(pad, st->buf, len);
    pad[len] = 0x80;
    memset(pad + len + 1, 0, nblocks * 64 - len - 1);
    for (i = 0; i < 8; i++)
        pad[nblocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    BE->compress(st->s, pad, nblocks);
}

/* A borrowed bytes-like argument: bytes objects are read directly, anything else through the buffer
 * protocol (the "y*" rules: C-contiguous, read-only is fine). */
typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    int has_view;
    Py_buffer view;
} arg_buf;

static int arg_buf_get(PyObject *obj, arg_buf *b)
{
    if (PyBytes_Check(obj)) {
        b->p = (const uint8_t *)PyBytes_AS_STRING(obj);
        b->n = PyBytes_GET_SIZE(obj);
        b->has_view = 0;
        return 0;
    }
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_SIMPLE) < 0)
        return -1;
    b->has_view = 1;
    b->p = (const uint8_t *)b->view.buf;
    b->n = b->view.len;
    return 0;
}

static void arg_buf_release(arg_buf *b)
{
    if (b->has_view) {
        PyBuffer_Release(&b->view);
        b->has_view = 0;
    }
}

/* The Python reference computes `value & 0xFFFFFFFF`: ints (any size or sign) are masked to their low 32
 * bits; other objects go through the very same `&` operator so their result or exception matches. */
static int arg_u32(PyObject *obj, uint32_t *out)
{
    unsigned long long v;
    if (PyLong_Check(obj)) {
        v = PyLong_AsUnsignedLongLongMask(obj);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        *out = (uint32_t)v;
        return 0;
    } else {
        PyObject *mask, *res, *idx;
        mask = PyLong_FromUnsignedLong(0xFFFFFFFFul);
        if (mask == NULL)
            return -1;
        res = PyNumber_And(obj, mask);
        Py_DECREF(mask);
        if (res == NULL)
            return -1;
        idx = PyNumber_Index(res); /* struct.pack("<I", ...) accepts __index__ objects */
        Py_DECREF(res);
        if (idx == NULL)
            return -1;
        v = PyLong_AsUnsignedLongLongMask(idx);
        Py_DECREF(idx);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        *out = (uint32_t)v;
        return 0;
    }
}

/* 256-bit little-endian compare, most significant byte first: returns 1 if hash <= target. */
static inline int le256_le(const uint8_t hash[32], const uint8_t target[32])
{
    int i;
    for (i = 31; i >= 0; i--) {
        if (hash[i] != target[i])
            return hash[i] < target[i];
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Python bindings                                                                                         */
/* ------------------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(sha256d_doc, "sha256d($module, data, /)\n--\n\n"
                          "Bitcoin's double SHA-256 of a bytes-like object (32 bytes).");

static PyObject *py_sha256d(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    arg_buf b;
    stream_t st;
    uint32_t out[8];
    uint8_t digest[32];
    int i;
    (void)self;
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "sha256d() takes exactly one argument (%zd given)", nargs);
        return NULL;
    }
    if (arg_buf_get(args[0], &b) < 0)
        return NULL;
    stream_init(&st);
    stream_update(&st, b.p, (size_t)b.n);
    arg_buf_release(&b);
    stream_final(&st);
    BE->hash32(st.s, out);
    for (i = 0; i < 8; i++)
        store_be32(digest + 4 * i, out[i]);
    return PyBytes_FromStringAndSize((const char *)digest, 32);
}

PyDoc_STRVAR(has_sha_ni_doc, "has_sha_ni($module, /)\n--\n\n"
                             "True if the SHA-NI code path is in use (CPU support and no "
                             "POOL_SHARECHECK_PORTABLE=1 at import).");

static PyObject *py_has_sha_ni(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    (void)args;
    if (nargs != 0) {
        PyErr_Format(PyExc_TypeError, "has_sha_ni() takes no arguments (%zd given)", nargs);
        return NULL;
    }
    return PyBool_FromLong(USING_SHA_NI);
}

enum {
    A_COINB1, A_EN1, A_EN2, A_COINB2, A_BRANCH, A_VERSION, A_PREVHASH, A_NTIME, A_NBITS, A_NONCE,
    A_SHARE_TARGET, A_NETWORK_TARGET, N_ARGS
};

static const char *const ARG_NAMES[N_ARGS] = {
    "coinb1", "extranonce1", "extranonce2", "coinb2", "branch", "version", "prevhash",
    "ntime",  "nbits",       "nonce",       "share_target", "network_target",
};

/* Map positional + keyword arguments onto the twelve parameters (keywords are rare; positional is the
 * fast path and skips all of this). */
static int collect_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    Py_ssize_t i, nkw;
    int j;
    if (nargs > N_ARGS) {
        PyErr_Format(PyExc_TypeError, "check_share() takes %d positional arguments but %zd were given", N_ARGS,
                     nargs);
        return -1;
    }
    for (j = 0; j < N_ARGS; j++)
        out[j] = j < nargs ? args[j] : NULL;
    nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < N_ARGS; j++) {
            if (PyUnicode_CompareWithASCIIString(name, ARG_NAMES[j]) == 0)
                break;
        }
        if (j == N_ARGS) {
            PyErr_Format(PyExc_TypeError, "check_share() got an unexpected keyword argument '%U'", name);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "check_share() got multiple values for argument '%s'", ARG_NAMES[j]);
            return -1;
        }
        out[j] = args[nargs + i];
    }
    for (j = 0; j < N_ARGS; j++) {
        if (out[j] == NULL) {
            PyErr_Format(PyExc_TypeError, "check_share() missing required argument '%s' (pos %d)", ARG_NAMES[j],
                         j + 1);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(check_share_doc,
             "check_share($module, coinb1, extranonce1, extranonce2, coinb2, branch, version, prevhash, "
             "ntime, nbits, nonce, share_target, network_target)\n--\n\n"
             "Return (code, block_hash, header): code 2 if sha256d(header) <= network_target, else 1 if <= "
             "share_target, else 0. Same semantics as pool.bitcoin.sharecheck.check_share_py.");

static PyObject *py_check_share(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[N_ARGS];
    /* Buffer order: the four length-checked arguments first, so bad sizes raise ValueError before anything
     * else is looked at, as in the reference. */
    static const int buf_order[8] = {A_BRANCH,   A_PREVHASH, A_SHARE_TARGET, A_NETWORK_TARGET,
                                     A_COINB1,   A_EN1,      A_EN2,          A_COINB2};
    arg_buf b[N_ARGS];
    int nheld = 0, k, code;
    uint32_t version, ntime, nbits, nonce, first[8], root[8];
    uint8_t header[80], digest[32];
    stream_t st;
    PyObject *result = NULL, *t_code, *t_hash, *t_header;
    (void)self;

    if (kwnames == NULL && nargs == N_ARGS) {
        memcpy(a, args, sizeof(a));
    } else if (collect_args(args, nargs, kwnames, a) < 0) {
        return NULL;
    }

    for (k = 0; k < 4; k++) {
        int j = buf_order[k];
        if (arg_buf_get(a[j], &b[j]) < 0)
            goto done;
        nheld = k + 1;
        if (j == A_BRANCH && (b[j].n % 32) != 0) {
            PyErr_SetString(PyExc_ValueError, "merkle branch length must be a multiple of 32");
            goto done;
        }
        if (j == A_PREVHASH && b[j].n != 32) {
            PyErr_SetString(PyExc_ValueError, "prevhash must be 32 bytes");
            goto done;
        }
    }
    if (b[A_SHARE_TARGET].n != 32 || b[A_NETWORK_TARGET].n != 32) {
        PyErr_SetString(PyExc_ValueError, "targets must be 32 bytes");
        goto done;
    }
    for (; k < 8; k++) {
        if (arg_buf_get(a[buf_order[k]], &b[buf_order[k]]) < 0)
            goto done;
        nheld = k + 1;
    }

    /* Coinbase: first SHA-256 streamed over the four pieces; the merkle back end does the second one. */
    stream_init(&st);
    stream_update(&st, b[A_COINB1].p, (size_t)b[A_COINB1].n);
    stream_update(&st, b[A_EN1].p, (size_t)b[A_EN1].n);
    stream_update(&st, b[A_EN2].p, (size_t)b[A_EN2].n);
    stream_update(&st, b[A_COINB2].p, (size_t)b[A_COINB2].n);
    stream_final(&st);
    memcpy(first, st.s, sizeof(first));
    BE->merkle(first, b[A_BRANCH].p, (size_t)b[A_BRANCH].n / 32, root);

    if (arg_u32(a[A_VERSION], &version) < 0 || arg_u32(a[A_NTIME], &ntime) < 0 ||
        arg_u32(a[A_NBITS], &nbits) < 0 || arg_u32(a[A_NONCE], &nonce) < 0)
        goto done;

    store_le32(header, version);
    memcpy(header + 4, b[A_PREVHASH].p, 32);
    for (k = 0; k < 8; k++)
        store_be32(header + 36 + 4 * k, root[k]);
    store_le32(header + 68, ntime);
    store_le32(header + 72, nbits);
    store_le32(header + 76, nonce);
    BE->header80(header, digest);

    /* The network test comes first: on regtest the network target is easier than any share target. */
    if (le256_le(digest, b[A_NETWORK_TARGET].p))
        code = 2;
    else if (le256_le(digest, b[A_SHARE_TARGET].p))
        code = 1;
    else
        code = 0;

    t_code = PyLong_FromLong(code);
    t_hash = PyBytes_FromStringAndSize((const char *)digest, 32);
    t_header = PyBytes_FromStringAndSize((const char *)header, 80);
    if (t_code && t_hash && t_header && (result = PyTuple_New(3)) != NULL) {
        PyTuple_SET_ITEM(result, 0, t_code);
        PyTuple_SET_ITEM(result, 1, t_hash);
        PyTuple_SET_ITEM(result, 2, t_header);
    } else {
        Py_XDECREF(t_code);
        Py_XDECREF(t_hash);
        Py_XDECREF(t_header);
    }

done:
    for (k = 0; k < nheld; k++)
        arg_buf_release(&b[buf_order[k]]);
    return result;
}

static PyMethodDef methods[] = {
    {"sha256d", (PyCFunction)(void (*)(void))py_sha256d, METH_FASTCALL, sha256d_doc},
    {"has_sha_ni", (PyCFunction)(void (*)(void))py_has_sha_ni, METH_FASTCALL, has_sha_ni_doc},
    {"check_share", (PyCFunction)(void (*)(void))py_check_share, METH_FASTCALL | METH_KEYWORDS,
     check_share_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "pool._sharecheck",
    "Stratum share check (coinbase, merkle branch, header, target compare) with SHA-NI when available.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

/* Any non-empty value other than "0" forces the portable path ("1" is the documented spelling). */
static int portable_forced(void)
{
    const char *v = getenv("POOL_SHARECHECK_PORTABLE");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

PyMODINIT_FUNC PyInit__sharecheck(void)
{
    init_constants();
    BE = &PORTABLE;
    USING_SHA_NI = 0;
#if SHARECHECK_X86
    if (!portable_forced() && cpu_has_sha_ni()) {
        BE = &SHA_NI;
        USING_SHA_NI = 1;
    }
#else
    (void)portable_forced;
#endif
    return PyModule_Create(&moduledef);
}
