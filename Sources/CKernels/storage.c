// Model-file support: the XXH64 checksum and IEEE half-precision conversion.
#include "kernel_internal.h"

#include <string.h>

// XXH64 as specified by its author (github.com/Cyan4973/xxHash, doc/xxhash_spec.md): fast enough
// to verify a 20 MB model in a few milliseconds, and a 64-bit hash catches any accidental damage.
static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL, P3 = 0x165667B19E3779F9ULL,
                      P4 = 0x85EBCA77C2B2AE63ULL, P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t read64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; } // little-endian hosts
static inline uint32_t read32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t xxh_round(uint64_t acc, uint64_t input) { return rotl64(acc + input * P2, 31) * P1; }
static inline uint64_t xxh_merge(uint64_t acc, uint64_t v) { return (acc ^ xxh_round(0, v)) * P1 + P4; }

uint64_t cgk_xxh64(const void *data, size_t length, uint64_t seed) {
    const uint8_t *p = (const uint8_t *)data;
    const uint8_t *end = p + length;
    uint64_t h;
    if (length >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        const uint8_t *limit = end - 32;
        do {
            v1 = xxh_round(v1, read64(p));
            v2 = xxh_round(v2, read64(p + 8));
            v3 = xxh_round(v3, read64(p + 16));
            v4 = xxh_round(v4, read64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)length;
    while (end - p >= 8) {
        h ^= xxh_round(0, read64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)read32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

CGK_INLINE float bits_to_float(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
CGK_INLINE uint32_t float_to_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

CGK_DISPATCH(, cgk_half_to_float, (const uint16_t *src, float *dst, size_t n), (src, dst, n)) {
    for (size_t i = 0; i < n; i++) {
        const uint32_t h = src[i];
        const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
        float v;
        if (exponent == 0) {
            v = (float)mantissa * 5.9604644775390625e-8f; // subnormal: mantissa * 2^-24
            v = bits_to_float(float_to_bits(v) | sign);
        } else if (exponent == 31) {
            v = bits_to_float(sign | 0x7F800000u | (mantissa << 13));
        } else {
            v = bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
        }
        dst[i] = v;
    }
}

CGK_DISPATCH(, cgk_float_to_half, (const float *src, uint16_t *dst, size_t n), (src, dst, n)) {
    for (size_t i = 0; i < n; i++) {
        const uint32_t x = float_to_bits(src[i]);
        const uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7FFFFFFFu;
        uint32_t h;
        if (a >= 0x7F800000u) {                // inf or NaN (NaN stays a quiet NaN)
            h = 0x7C00u | (a > 0x7F800000u ? 0x200u | ((a >> 13) & 0x3FFu) : 0u);
        } else if (a >= 0x47800000u) {         // >= 65536: beyond half's range
            h = 0x7C00u;
        } else if (a >= 0x38800000u) {         // normal half; rounding may carry into the exponent
            h = ((a >> 23) - 112) << 10 | ((a >> 13) & 0x3FFu);
            const uint32_t rest = a & 0x1FFFu;
            h += rest > 0x1000u || (rest == 0x1000u && (h & 1u));
        } else if (a >= 0x33000000u) {         // subnormal half
            const uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u, shift = 126 - e;
            const uint32_t rest = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
            h = m >> shift;
            h += rest > halfway || (rest == halfway && (h & 1u));
        } else {
            h = 0;
        }
        dst[i] = (uint16_t)(sign | h);
    }
}
