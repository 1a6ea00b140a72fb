// The int8 GEMM (Sources/CKernels/gemm_q8.c) and depthwise convolution (conv_q8.c) against naive loops written here from the
// specification in cg_kernels.h, bit for bit (memcmp of every float), in every variant this CPU
// executes: packing, quantization (clamps both sides, ties to even, NaN), every row count and
// column tail, k across the kernels' 2048-value passes up to 65536, zero points 0, 1, 128, 255,
// bias or none, the three activations, panel subranges, strides wider than the matrices; and
// that nothing outside the requested columns is written. Then a few GEMMs of the networks' shapes
// timed (informative only).
//
// Build and run from the repository root (one line):
//   CLANG=$(dirname $(readlink -f $(command -v swift)))/clang; mkdir -p .build && $CLANG -O2 -ISources/CKernels -ISources/CKernels/include Tests/c/q8_test.c Sources/CKernels/gemm_q8.c Sources/CKernels/conv_q8.c Sources/CKernels/isa.c -o .build/q8_test -lm && .build/q8_test
// Under the sanitizers, as the project's sanitizer builds compile the kernels (lld: gold warns
// about every sanitizer symbol it cannot export):
//   $CLANG -O1 -g -DCGK_NO_MULTIVERSION -fsanitize=address,undefined -fno-sanitize-recover=all -fuse-ld=lld
//       -ISources/CKernels -ISources/CKernels/include Tests/c/q8_test.c Sources/CKernels/gemm_q8.c
//       Sources/CKernels/conv_q8.c Sources/CKernels/isa.c -o .build/q8_test_asan -lm && .build/q8_test_asan --no-timing
//
// Usage: q8_test [--no-timing]
// The kernel variant is chosen once per process (cgk_isa(), from COVERGENRE_ISA), so the test
// runs itself (/proc/self/exe) once per variant, generic, avx2 and avx512, with COVERGENRE_ISA
// set, and each child checks the kernel it got. A variant the CPU lacks is reported as not
// executed. Exit status 0 only when every child ran and every comparison matched.
#pragma STDC FP_CONTRACT OFF

#include "cg_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// ---- reference ------------------------------------------------------------------------------

static uint8_t ref_quantize(float a, float inv_scale, int32_t zero) {
    const float lo = (float)(-zero), hi = (float)(255 - zero);
    float t = a * inv_scale;
    t = t > lo ? t : lo;
    t = t < hi ? t : hi;
    return (uint8_t)((int32_t)rintf(t) + zero); // rintf: the current rounding mode, to nearest even
}

static float ref_activate(float v, int activation) {
    if (activation == CGK_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (activation == CGK_ACT_RELU6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    return v;
}

// The layout cgk_q8_pack documents, byte by byte.
// The random weights' range: [-63, 63] (narrow) or [-127, 127] (wide, which the AVX2 kernel runs
// with split activations); cgk_q8_pack's verdict on the last packed matrix goes to cgk_gemm_q8.
static int weight_max = 63, packed_wide = 0;

static void ref_pack(const int8_t *b, ptrdiff_t ldb, int32_t k, int32_t n, int8_t *packed) {
    const int32_t kq = (k + 3) / 4 * 4, panels = (n + 15) / 16;
    for (int32_t p = 0; p < panels; p++)
        for (int32_t kk = 0; kk < kq; kk++)
            for (int32_t j = 0; j < 16; j++) {
                const int32_t col = p * 16 + j;
                int v = kk < k && col < n ? b[(ptrdiff_t)kk * ldb + col] : 0;
                v = v < -127 ? -127 : v; // -128 only: the kernels' weights are [-127, 127]
                packed[(size_t)p * kq * 16 + (size_t)(kk / 4) * 64 + j * 4 + kk % 4] = (int8_t)v;
            }
}

static void ref_gemm(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale, int32_t zero,
                     const int8_t *b, ptrdiff_t ldb, const int32_t *offset, const float *scale, const float *bias,
                     int activation, float *c, ptrdiff_t ldc) {
    uint8_t *q = malloc((size_t)k + 1);
    int64_t *acc = malloc(sizeof(int64_t) * (size_t)n);
    for (int32_t i = 0; i < m; i++) {
        for (int32_t kk = 0; kk < k; kk++) q[kk] = ref_quantize(a[(ptrdiff_t)i * lda + kk], inv_scale, zero);
        for (int32_t j = 0; j < n; j++) acc[j] = 0;
        for (int32_t kk = 0; kk < k; kk++) {
            const int64_t qv = q[kk];
            const int8_t *row = b + (ptrdiff_t)kk * ldb;
            for (int32_t j = 0; j < n; j++) acc[j] += qv * row[j];
        }
        for (int32_t j = 0; j < n; j++) {
            const int64_t sum = acc[j] + offset[j];
            if (sum < INT32_MIN || sum > INT32_MAX) { // the tests stay in range: acc + offset is an int32
                fprintf(stderr, "test bug: sum out of int32 range\n");
                exit(2);
            }
            float v = (float)(int32_t)sum;
            v = v * scale[j];
            if (bias) v = v + bias[j];
            c[(ptrdiff_t)i * ldc + j] = ref_activate(v, activation);
        }
    }
    free(q);
    free(acc);
}

// ---- random data ----------------------------------------------------------------------------

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) { // xorshift64*
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}
static uint32_t next_below(uint32_t bound) { return (uint32_t)((next_u64() >> 32) % bound); }
static float next_unit(void) { return (float)(next_u64() >> 40) / (float)(1u << 24); } // [0, 1)

// One activation: in the quantization range and beyond it on both sides, exact ties after
// scaling (exact when inv_scale is a power of two), integers, huge values, infinities, zeros of
// both signs, and now and then a NaN.
static float next_activation(float inv_scale) {
    const uint32_t kind = next_below(1000);
    const float u = (float)((int)next_below(601) - 300); // an integer in [-300, 300]
    if (kind < 400) return (next_unit() * 600.0f - 300.0f) / inv_scale;
    if (kind < 700) return (u + 0.5f) / inv_scale;
    if (kind < 850) return u / inv_scale;
    if (kind < 900) return (next_below(2) ? 1.0f : -1.0f) * 1e30f;
    if (kind < 915) return next_below(2) ? INFINITY : -INFINITY;
    if (kind < 960) return next_below(2) ? 0.0f : -0.0f;
    if (kind < 995) return (next_unit() - 0.5f) / inv_scale; // rounds to 0 (or to -0.0 before the zero point)
    return NAN;
}

static const float inv_scales[] = {8.0f, 0.25f, 1.0f, 37.37f, 0.0137f, 2.0f};
static const int32_t zeros[] = {0, 1, 128, 255};

// ---- checks ---------------------------------------------------------------------------------

static int64_t checked, failed;
static const uint32_t sentinel_bits = 0x7FC0DEADu; // a NaN payload the kernels never produce

static int same_bits(float x, float y) { return memcmp(&x, &y, sizeof x) == 0; }
static uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

typedef struct {
    int32_t m, n, k;
    ptrdiff_t lda, ldb, ldc;
    float inv_scale;
    int32_t zero;
    int with_bias, activation;
    int random_offset; // offsets not derived from the zero point (any int32 is valid)
    int odd_epilogue;  // a NaN bias, an infinite scale, a zero scale: NaN, infinities and -0 reach the activation
} q8_case;

static void describe(const q8_case *t, int32_t pb, int32_t pe) {
    fprintf(stderr, "  case m=%d n=%d k=%d lda=%td ldb=%td ldc=%td inv_scale=%g zero=%d bias=%d act=%d panels [%d, %d)\n",
            t->m, t->n, t->k, t->lda, t->ldb, t->ldc, (double)t->inv_scale, t->zero, t->with_bias, t->activation, pb, pe);
}

// Fills C with the sentinel, runs the GEMM for each [ranges[2i], ranges[2i+1]), compares: columns
// of the ranges bit for bit with the reference, everything else still the sentinel.
static int compare_calls(const q8_case *t, const float *a, const int8_t *packed, const int32_t *offset, const float *scale,
                         const float *bias, const float *expected, float *c, const int32_t *ranges, int calls) {
    const size_t c_floats = (size_t)t->m * (size_t)t->ldc;
    float sentinel;
    memcpy(&sentinel, &sentinel_bits, sizeof sentinel);
    for (size_t i = 0; i < c_floats; i++) c[i] = sentinel;
    for (int call = 0; call < calls; call++)
        cgk_gemm_q8(t->m, t->n, t->k, a, t->lda, t->inv_scale, NULL, t->zero, packed, packed_wide, offset, scale, c, t->ldc, bias,
                    t->activation, ranges[2 * call], ranges[2 * call + 1]);
    int bad = 0;
    for (int32_t i = 0; i < t->m; i++)
        for (ptrdiff_t j = 0; j < t->ldc; j++) {
            int inside = 0;
            for (int call = 0; call < calls; call++)
                inside |= j < t->n && j / 16 >= ranges[2 * call] && j / 16 < ranges[2 * call + 1];
            const float got = c[(ptrdiff_t)i * t->ldc + j];
            const int ok = inside ? same_bits(got, expected[(ptrdiff_t)i * t->n + j]) : bits(got) == sentinel_bits;
            checked++;
            if (!ok) {
                if (bad < 3) {
                    fprintf(stderr, "MISMATCH c[%d][%td] = %a (0x%08x), expected %s%a (0x%08x)\n", i, j, (double)got,
                            bits(got), inside ? "" : "untouched sentinel, not ",
                            inside ? (double)expected[(ptrdiff_t)i * t->n + j] : (double)sentinel,
                            inside ? bits(expected[(ptrdiff_t)i * t->n + j]) : sentinel_bits);
                    describe(t, ranges[0], ranges[2 * calls - 1]);
                }
                bad++;
            }
        }
    failed += bad;
    return bad;
}

// cgk_gemm_q8_io: A given as the bytes cgk_q8_quantize makes of it gives the same C; C asked as
// bytes (k <= 2048) is the reference output quantized per column; nothing else written.
static int compare_io(const q8_case *t, const float *a, const int8_t *packed, const int32_t *offset, const float *scale,
                      const float *bias, const float *expected) {
    const int32_t m = t->m, n = t->n, k = t->k, panels = (n + 15) / 16;
    uint8_t *a8 = malloc((size_t)m * (size_t)t->lda + 1), *c8 = malloc((size_t)m * (size_t)t->ldc + 1);
    float *c = malloc(sizeof(float) * (size_t)m * (size_t)t->ldc + 4), *out_inv = malloc(sizeof(float) * (size_t)n);
    for (int32_t i = 0; i < m; i++) cgk_q8_quantize(a + (ptrdiff_t)i * t->lda, k, t->inv_scale, NULL, t->zero, a8 + (ptrdiff_t)i * t->lda);
    for (int32_t j = 0; j < n; j++) out_inv[j] = inv_scales[(size_t)(j + k) % (sizeof inv_scales / sizeof *inv_scales)];
    const int32_t out_zero = zeros[(size_t)(m + n) % 4];
    int bad = 0;
    float sentinel;
    memcpy(&sentinel, &sentinel_bits, sizeof sentinel);
    for (size_t i = 0; i < (size_t)m * (size_t)t->ldc; i++) c[i] = sentinel;
    const cgk_q8_io in = {.a = a8};
    cgk_gemm_q8_io(m, n, k, NULL, t->lda, t->inv_scale, NULL, t->zero, packed, packed_wide, offset, scale, c, t->ldc, bias,
                   t->activation, 0, panels, &in);
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < n; j++) {
            checked++;
            if (!same_bits(c[(ptrdiff_t)i * t->ldc + j], expected[(ptrdiff_t)i * n + j])) {
                if (bad++ < 3) fprintf(stderr, "MISMATCH uint8 input: c[%d][%d]\n", i, j), describe(t, 0, panels);
            }
        }
    if (k <= 2048) {
        memset(c8, 0xA5, (size_t)m * (size_t)t->ldc);
        const cgk_q8_io out = {.c = c8, .out_inv_scales = out_inv, .out_zero = out_zero};
        const int32_t s = panels > 1 ? 1 : 0; // two calls, as two threads would split the panels
        cgk_gemm_q8_io(m, n, k, a, t->lda, t->inv_scale, NULL, t->zero, packed, packed_wide, offset, scale, NULL, t->ldc, bias,
                       t->activation, s, panels, &out);
        if (s > 0)
            cgk_gemm_q8_io(m, n, k, a, t->lda, t->inv_scale, NULL, t->zero, packed, packed_wide, offset, scale, NULL, t->ldc, bias,
                           t->activation, 0, s, &out);
        for (int32_t i = 0; i < m; i++)
            for (ptrdiff_t j = 0; j < t->ldc; j++) {
                const uint8_t got = c8[(ptrdiff_t)i * t->ldc + j];
                const uint8_t want = j < n ? ref_quantize(expected[(ptrdiff_t)i * n + j], out_inv[j], out_zero) : 0xA5;
                checked++;
                if (got != want && bad++ < 3)
                    fprintf(stderr, "MISMATCH uint8 output: c[%d][%td] = %d, expected %d\n", i, j, got, want), describe(t, 0, panels);
            }
    }
    failed += bad;
    free(a8); free(c8); free(c); free(out_inv);
    return bad;
}

static int run_case(const q8_case *t) {
    const int32_t m = t->m, n = t->n, k = t->k, panels = (n + 15) / 16;
    float *a = malloc(sizeof(float) * (size_t)m * (size_t)t->lda);
    int8_t *b = malloc((size_t)k * (size_t)t->ldb);
    const size_t packed_bytes = cgk_q8_pack_bytes(k, n);
    int8_t *packed = malloc(packed_bytes + 64), *want = malloc(packed_bytes + 64);
    int32_t *offset = malloc(sizeof(int32_t) * (size_t)n);
    float *scale = malloc(sizeof(float) * (size_t)n), *bias = malloc(sizeof(float) * (size_t)n);
    float *expected = malloc(sizeof(float) * (size_t)m * (size_t)n), *c = malloc(sizeof(float) * (size_t)m * (size_t)t->ldc);
    for (size_t i = 0; i < (size_t)m * (size_t)t->lda; i++) a[i] = next_activation(t->inv_scale);
    if (m * k > 3) a[next_below((uint32_t)(m * t->lda))] = NAN; // one NaN at least, wherever it lands
    for (size_t i = 0; i < (size_t)k * (size_t)t->ldb; i++) b[i] = (int8_t)((int)next_below(2 * weight_max + 1) - weight_max);
    for (int32_t j = 0; j < n; j++) {
        int64_t sum = 0;
        for (int32_t kk = 0; kk < k; kk++) sum += b[(ptrdiff_t)kk * t->ldb + j];
        offset[j] = t->random_offset ? (int32_t)next_below(1u << 24) - (1 << 23) : (int32_t)(-t->zero * sum);
        // Mostly small positive scales (outputs around the ReLU6 range), some negative.
        scale[j] = (next_unit() * 0.02f + 1e-4f) * (next_below(4) == 0 ? -1.0f : 1.0f);
        bias[j] = next_unit() * 6.0f - 3.0f;
    }
    if (t->odd_epilogue) {
        bias[0] = NAN;
        scale[n - 1] = next_below(2) ? INFINITY : -INFINITY;
        scale[n / 2] = next_below(2) ? 0.0f : -0.0f;
    }
    int bad = 0;
    // Packing: the documented layout; the bytes past the packed size untouched.
    memset(packed, 0x5A, packed_bytes + 64);
    packed_wide = cgk_q8_pack(b, t->ldb, k, n, packed);
    ref_pack(b, t->ldb, k, n, want);
    for (int i = 0; i < 64; i++) want[packed_bytes + (size_t)i] = 0x5A;
    checked++;
    if (memcmp(packed, want, packed_bytes + 64) != 0) {
        fprintf(stderr, "MISMATCH packed weights\n");
        describe(t, 0, panels);
        failed++;
        bad++;
    }
    const float *bias_or_null = t->with_bias ? bias : NULL;
    ref_gemm(m, n, k, a, t->lda, t->inv_scale, t->zero, b, t->ldb, offset, scale, bias_or_null, t->activation, expected, n);
    const int32_t full[2] = {0, panels};
    bad += compare_calls(t, a, packed, offset, scale, bias_or_null, expected, c, full, 1);
    if (panels > 1) {
        const int32_t tail[2] = {1, panels}, head[2] = {0, panels - 1};
        bad += compare_calls(t, a, packed, offset, scale, bias_or_null, expected, c, tail, 1);
        bad += compare_calls(t, a, packed, offset, scale, bias_or_null, expected, c, head, 1);
        // Two threads' share: odd split points land on the VNNI kernel's second panel of a pair.
        const int32_t s = 1 + (int32_t)next_below((uint32_t)(panels - 1));
        const int32_t split[4] = {s, panels, 0, s};
        bad += compare_calls(t, a, packed, offset, scale, bias_or_null, expected, c, split, 2);
    }
    if (panels > 2) {
        const int32_t middle[2] = {1, panels - 1};
        bad += compare_calls(t, a, packed, offset, scale, bias_or_null, expected, c, middle, 1);
    }
    bad += compare_io(t, a, packed, offset, scale, bias_or_null, expected);
    free(a); free(b); free(packed); free(want); free(offset); free(scale); free(bias); free(expected); free(c);
    return bad;
}

// cgk_q8_quantize against the reference, n = 0 .. 200 and longer, unaligned starts; nothing
// written past n.
static int check_quantize(void) {
    enum { max_n = 4099 };
    float *x = malloc(sizeof(float) * (max_n + 3));
    uint8_t *q = malloc(max_n + 64 + 3);
    int bad = 0;
    for (int round = 0; round < 400; round++) {
        const int32_t n = round < 200 ? round : (int32_t)next_below(max_n + 1);
        const int32_t start = (int32_t)next_below(4);
        const float inv_scale = inv_scales[next_below(sizeof inv_scales / sizeof *inv_scales)];
        const int32_t zero = round % 5 == 4 ? (int32_t)next_below(256) : zeros[round % 4];
        for (int32_t i = 0; i < n + start; i++) x[i] = next_activation(inv_scale);
        memset(q, 0xA5, max_n + 64 + 3);
        cgk_q8_quantize(x + start, n, inv_scale, NULL, zero, q + start);
        for (int32_t i = 0; i < n + start + 64; i++) {
            const int inside = i >= start && i < n + start;
            const uint8_t want = inside ? ref_quantize(x[i], inv_scale, zero) : 0xA5;
            checked++;
            if (q[i] != want) {
                if (bad < 3)
                    fprintf(stderr, "MISMATCH quantize n=%d start=%d inv_scale=%g zero=%d: q[%d] = %d, expected %d (x = %a)\n",
                            n, start, (double)inv_scale, zero, i - start, q[i], want, inside ? (double)x[i] : 0.0);
                bad++;
            }
        }
    }
    // Every tie and boundary of the range at one zero point each: t = j / 2 for j in [-600, 600].
    for (int zi = 0; zi < 4; zi++) {
        const int32_t zero = zeros[zi];
        for (int32_t i = 0; i < 1201; i++) x[i] = (float)(i - 600) * 0.5f;
        x[1201] = NAN;
        x[1202] = -0.0f;
        cgk_q8_quantize(x, 1203, 1.0f, NULL, zero, q);
        for (int32_t i = 0; i < 1203; i++) {
            checked++;
            if (q[i] != ref_quantize(x[i], 1.0f, zero)) {
                if (bad < 3) fprintf(stderr, "MISMATCH quantize tie x=%a zero=%d: %d\n", (double)x[i], zero, q[i]);
                bad++;
            }
        }
    }
    free(x);
    free(q);
    failed += bad;
    return bad;
}

// Packing every int8 value: -128 clamped to -127, the rest kept, per the header.
static int check_pack_clamp(void) {
    static const int32_t shapes[][2] = {{1, 1}, {5, 17}, {33, 100}, {4, 16}, {300, 48}};
    int bad = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int32_t k = shapes[s][0], n = shapes[s][1];
        const size_t bytes = cgk_q8_pack_bytes(k, n);
        int8_t *b = malloc((size_t)k * n), *packed = malloc(bytes), *want = malloc(bytes);
        for (int32_t i = 0; i < k * n; i++) b[i] = (int8_t)(i % 2 ? -128 + (int)next_below(256) : (int)next_below(2) ? 127 : -128);
        cgk_q8_pack(b, n, k, n, packed);
        ref_pack(b, n, k, n, want);
        checked++;
        if (memcmp(packed, want, bytes) != 0) {
            fprintf(stderr, "MISMATCH packing out-of-range weights (k=%d n=%d): not packed as documented (-128 clamped to -127)\n", k, n);
            bad++;
        }
        free(b); free(packed); free(want);
    }
    failed += bad;
    return bad;
}

// The deepest k: every A value quantized to 255 against weights of +-63, the largest sums the
// kernels must hold (65536 * 255 * 63 = 1,052,835,840), with and without the zero point.
static int check_extremes(void) {
    const int32_t m = 3, n = 17, k = 65536, panels = 2;
    float *a = malloc(sizeof(float) * (size_t)m * k), *expected = malloc(sizeof(float) * m * n), *c = malloc(sizeof(float) * m * n);
    int8_t *b = malloc((size_t)k * n), *packed = malloc(cgk_q8_pack_bytes(k, n));
    int32_t offset[17];
    float scale[17];
    int bad = 0;
    // Narrow weights (+-63), then wide ones (+-127: 65536 * 255 * 127 = 2,122,383,360 < 2^31).
    for (int zi = 0; zi < 8; zi++) {
        const int32_t zero = zeros[zi % 4], w = zi < 4 ? 63 : 127;
        for (size_t i = 0; i < (size_t)m * k; i++) a[i] = i % 1000 == 7 ? -1e30f : 1e30f; // 255 - a few 0s
        for (int32_t kk = 0; kk < k; kk++)
            for (int32_t j = 0; j < n; j++) b[(ptrdiff_t)kk * n + j] = (int8_t)(j % 2 ? -w : w);
        for (int32_t j = 0; j < n; j++) {
            offset[j] = -zero * (j % 2 ? -w : w) * k;
            scale[j] = 1e-6f * (float)(j + 1);
        }
        const int wide = cgk_q8_pack(b, n, k, n, packed);
        ref_gemm(m, n, k, a, k, 1.0f, zero, b, n, offset, scale, NULL, CGK_ACT_NONE, expected, n);
        cgk_gemm_q8(m, n, k, a, k, 1.0f, NULL, zero, packed, wide, offset, scale, c, n, NULL, CGK_ACT_NONE, 0, panels);
        for (int32_t i = 0; i < m * n; i++) {
            checked++;
            if (!same_bits(c[i], expected[i])) {
                if (bad < 3)
                    fprintf(stderr, "MISMATCH k=65536 weights +-%d zero=%d c[%d] = %a, expected %a\n", w, zero, i, (double)c[i],
                            (double)expected[i]);
                bad++;
            }
        }
    }
    free(a); free(expected); free(c); free(b); free(packed);
    failed += bad;
    return bad;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// GOPS (2 m n k per product) on one thread, best of 5 runs of >= 50 ms each.
static void time_shape(int32_t m, int32_t k, int32_t n) {
    float *a = malloc(sizeof(float) * (size_t)m * k), *c = malloc(sizeof(float) * (size_t)m * n);
    int8_t *b = malloc((size_t)k * n), *packed = malloc(cgk_q8_pack_bytes(k, n));
    int32_t *offset = malloc(sizeof(int32_t) * n);
    float *scale = malloc(sizeof(float) * n), *bias = malloc(sizeof(float) * n);
    for (size_t i = 0; i < (size_t)m * k; i++) a[i] = next_unit() * 4.0f - 1.0f;
    for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (int8_t)((int)next_below(2 * weight_max + 1) - weight_max);
    for (int32_t j = 0; j < n; j++) offset[j] = 0, scale[j] = 1e-3f, bias[j] = 0.1f;
    const int wide = cgk_q8_pack(b, n, k, n, packed);
    const int32_t panels = (n + 15) / 16;
    double best = 1e30;
    int reps = 1;
    for (int trial = 0; trial < 6; trial++) {
        const double t0 = now();
        for (int r = 0; r < reps; r++)
            cgk_gemm_q8(m, n, k, a, k, 63.0f, NULL, 64, packed, wide, offset, scale, c, n, bias, CGK_ACT_RELU6, 0, panels);
        const double dt = (now() - t0) / reps;
        if (trial > 0 && dt < best) best = dt;
        if (trial == 0) reps = (int)(0.05 / dt) + 1; // the first run warms up and sizes the others
    }
    printf("  %5d x %4d x %4d (m x k x n): %6.1f GOPS (%.3f ms)\n", m, k, n, 2.0 * m * n * k / best * 1e-9, best * 1e3);
    free(a); free(c); free(b); free(packed); free(offset); free(scale); free(bias);
}

// ---- int8 depthwise convolution --------------------------------------------------------------

// cgk_depthwise_q8 from its specification in cg_kernels.h: taps inside the image only, the int32
// sum, then convert, scale, bias, activation, and the byte of ref_quantize when asked.
static void ref_depthwise_q8(const uint8_t *x, const cgk_window *w, const cgk_dwq8 *p, int32_t oh_begin, int32_t oh_end,
                             int32_t c_begin, int32_t c_end, float *yf, uint8_t *yb) {
    const int32_t C = w->channels;
    for (int32_t oh = oh_begin; oh < oh_end; oh++)
        for (int32_t ow = 0; ow < w->out_width; ow++)
            for (int32_t c = c_begin; c < c_end; c++) {
                int64_t acc = 0;
                for (int32_t kh = 0; kh < w->kernel_h; kh++)
                    for (int32_t kw = 0; kw < w->kernel_w; kw++) {
                        const int32_t ih = oh * w->stride_h - w->pad_top + kh, iw = ow * w->stride_w - w->pad_left + kw;
                        if (ih < 0 || ih >= w->height || iw < 0 || iw >= w->width) continue;
                        acc += ((int64_t)x[((ptrdiff_t)ih * w->width + iw) * C + c] - p->zero)
                               * p->weight[((ptrdiff_t)kh * w->kernel_w + kw) * C + c];
                    }
                float v = (float)(int32_t)acc;
                v = v * p->scale[c];
                if (p->bias) v = v + p->bias[c];
                v = ref_activate(v, p->activation);
                const ptrdiff_t at = ((ptrdiff_t)oh * w->out_width + ow) * C + c;
                if (p->out_inv_scales) yb[at] = ref_quantize(v, p->out_inv_scales[c], p->out_zero);
                else yf[at] = v;
            }
}

// One shape: every output compared bit for bit (floats) or byte for byte, for the whole image and
// for a band of rows and channels (what one thread computes), with nothing outside written; and
// the rows one at a time (cgk_depthwise_q8_row) and in pairs from a ring of row pointers.
static int run_depthwise_case(int32_t H, int32_t W, int32_t C, int32_t K, int32_t S, int32_t KW, int32_t SW, unsigned counter) {
    cgk_window w = {.height = H, .width = W, .channels = C, .kernel_h = K, .kernel_w = KW, .stride_h = S, .stride_w = SW,
                    .pad_top = (K - 1) / 2, .pad_left = (KW - 1) / 2};
    w.out_height = (H + 2 * w.pad_top - K) / S + 1;
    w.out_width = (W + 2 * w.pad_left - KW) / SW + 1;
    const size_t in_count = (size_t)H * W * C, out_count = (size_t)w.out_height * w.out_width * C;
    uint8_t *x = malloc(in_count), *yb = malloc(out_count), *want_b = malloc(out_count);
    float *yf = malloc(sizeof(float) * out_count), *want_f = malloc(sizeof(float) * out_count);
    int16_t *weight = malloc(sizeof(int16_t) * (size_t)K * KW * C);
    float *scale = malloc(sizeof(float) * C), *bias = malloc(sizeof(float) * C), *out_inv = malloc(sizeof(float) * C);
    const int32_t zero = zeros[counter % 4];
    for (size_t i = 0; i < in_count; i++) x[i] = (uint8_t)(counter % 7 == 3 ? (next_below(2) ? 255 : 0) : next_below(256));
    // Extreme weights now and then: the largest sums (25 taps of 255 x 32767) must stay exact.
    for (size_t i = 0; i < (size_t)K * KW * C; i++)
        weight[i] = (int16_t)(counter % 5 == 1 ? (next_below(2) ? 32767 : -32767) : (int32_t)next_below(65535) - 32767);
    for (int32_t c = 0; c < C; c++) {
        scale[c] = (next_unit() * 2e-6f + 1e-8f) * (next_below(4) == 0 ? -1.0f : 1.0f);
        bias[c] = next_unit() * 6.0f - 3.0f;
        out_inv[c] = inv_scales[(size_t)(c + (int32_t)counter) % (sizeof inv_scales / sizeof *inv_scales)] * 4.0f;
    }
    if (counter % 13 == 6) bias[0] = NAN;
    cgk_dwq8 p = {.weight = weight, .scale = scale, .bias = counter / 2 % 2 ? bias : NULL, .zero = zero,
                  .activation = (int32_t)(counter % 3), .out_zero = zeros[(counter + 1) % 4]};
    int bad = 0;
    for (int bytes = 0; bytes <= 1; bytes++) {
        p.out_inv_scales = bytes ? out_inv : NULL;
        ref_depthwise_q8(x, &w, &p, 0, w.out_height, 0, C, want_f, want_b);
        // Whole image; a band of rows from an odd row and a band of channels.
        const int32_t bands[3][4] = {{0, w.out_height, 0, C},
                                     {w.out_height > 2 ? 1 : 0, w.out_height, 0, C},
                                     {0, w.out_height > 1 ? w.out_height - 1 : 1, C > 17 ? 3 : 0, C > 17 ? C - 1 : C}};
        for (int b = 0; b < 3; b++) {
            memset(yb, 0xA5, out_count);
            for (size_t i = 0; i < out_count; i++) memcpy(&yf[i], &sentinel_bits, sizeof(float));
            cgk_depthwise_q8(x, &w, &p, bands[b][0], bands[b][1], bands[b][2], bands[b][3], bytes ? (void *)yb : (void *)yf);
            for (int32_t oh = 0; oh < w.out_height; oh++)
                for (int32_t ow = 0; ow < w.out_width; ow++)
                    for (int32_t c = 0; c < C; c++) {
                        const ptrdiff_t at = ((ptrdiff_t)oh * w.out_width + ow) * C + c;
                        const int inside = oh >= bands[b][0] && oh < bands[b][1] && c >= bands[b][2] && c < bands[b][3];
                        int ok;
                        if (bytes) ok = yb[at] == (inside ? want_b[at] : 0xA5);
                        else ok = inside ? same_bits(yf[at], want_f[at]) : bits(yf[at]) == sentinel_bits;
                        checked++;
                        if (!ok && bad++ < 3)
                            fprintf(stderr, "MISMATCH depthwise %dx%dx%d %dx%d/%dx%d %s out, band %d: y[%d][%d][%d]\n", H, W, C, K,
                                    KW, S, SW, bytes ? "uint8" : "float", b, oh, ow, c);
                    }
        }
        // Row by row through cgk_depthwise_q8_row, against the whole image's bytes.
        if (bytes) {
            memset(yb, 0xA5, out_count);
            const uint8_t *rows[64];
            for (int32_t oh = 0; oh < w.out_height; oh++) {
                const int32_t ih0 = oh * S - w.pad_top, lo = ih0 < 0 ? -ih0 : 0, hi = H - ih0 < K ? H - ih0 : K;
                for (int32_t kh = lo; kh < hi; kh++) rows[kh] = x + (ptrdiff_t)(ih0 + kh) * W * C;
                cgk_depthwise_q8_row(rows, lo, hi, &w, &p, 0, C, yb + (ptrdiff_t)oh * w.out_width * C);
            }
            checked++;
            if (memcmp(yb, want_b, out_count) != 0 && bad++ < 3)
                fprintf(stderr, "MISMATCH depthwise %dx%dx%d %dx%d/%d rows one at a time\n", H, W, C, K, KW, S);
            // Pairs of rows from row pointers into separate buffers (as the fused step's ring),
            // the last row alone when the count is odd.
            memset(yb, 0xA5, out_count);
            uint8_t **copies = malloc(sizeof(uint8_t *) * (size_t)H);
            for (int32_t h = 0; h < H; h++) {
                copies[h] = malloc((size_t)W * C);
                memcpy(copies[h], x + (ptrdiff_t)h * W * C, (size_t)W * C);
            }
            int32_t oh = 0;
            for (; oh + 1 < w.out_height; oh += 2) {
                const int32_t ih0 = oh * S - w.pad_top;
                for (int32_t r = 0; r < K + S; r++) rows[r] = ih0 + r >= 0 && ih0 + r < H ? copies[ih0 + r] : NULL;
                uint8_t *top = yb + (ptrdiff_t)oh * w.out_width * C;
                cgk_depthwise_q8_row_pair(rows, oh, &w, &p, 0, C, top, top + (ptrdiff_t)w.out_width * C);
            }
            if (oh < w.out_height) {
                const int32_t ih0 = oh * S - w.pad_top, lo = ih0 < 0 ? -ih0 : 0, hi = H - ih0 < K ? H - ih0 : K;
                for (int32_t kh = lo; kh < hi; kh++) rows[kh] = copies[ih0 + kh];
                cgk_depthwise_q8_row(rows, lo, hi, &w, &p, 0, C, yb + (ptrdiff_t)oh * w.out_width * C);
            }
            for (int32_t h = 0; h < H; h++) free(copies[h]);
            free(copies);
            checked++;
            if (memcmp(yb, want_b, out_count) != 0 && bad++ < 3)
                fprintf(stderr, "MISMATCH depthwise %dx%dx%d %dx%d/%d rows in pairs from separate buffers\n", H, W, C, K, KW, S);
        }
    }
    failed += bad;
    free(x); free(yb); free(want_b); free(yf); free(want_f); free(weight); free(scale); free(bias); free(out_inv);
    return bad;
}

static int check_depthwise(int *cases) {
    // EfficientNet's kernels (3x3, 5x5, stride 1 and 2) on odd and even sizes, images narrower
    // than the kernel, channel counts around the 16-channel vectors, and the generic path (a
    // kernel width of 7, horizontal stride 3, unequal kernel sides).
    static const int32_t shapes[][7] = {
        {8, 8, 16, 3, 1, 3, 1}, {9, 11, 32, 3, 1, 3, 1}, {7, 7, 48, 3, 2, 3, 2}, {12, 10, 17, 3, 2, 3, 2},
        {11, 13, 33, 5, 1, 5, 1}, {6, 9, 64, 5, 2, 5, 2}, {14, 14, 80, 5, 2, 5, 2}, {5, 5, 1, 3, 1, 3, 1},
        {3, 2, 15, 5, 1, 5, 1},  {1, 1, 19, 3, 1, 3, 1}, {2, 17, 40, 3, 2, 3, 2}, {10, 12, 24, 3, 1, 7, 3},
        {9, 9, 31, 5, 2, 3, 1},  {16, 18, 144, 3, 1, 3, 1}, {13, 13, 96, 5, 1, 5, 1}};
    int bad_cases = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (unsigned round = 0; round < 4; round++) {
            const int32_t *t = shapes[i];
            bad_cases += run_depthwise_case(t[0], t[1], t[2], t[3], t[4], t[5], t[6], (unsigned)i * 4 + round) != 0;
            (*cases)++;
        }
    return bad_cases;
}

// ---- one variant (a child process) ----------------------------------------------------------

static int run_variant(const char *requested, int timing) {
    const int best = cgk_isa_best();
    const char *kernel = cgk_q8_kernel(), *expected_kernel;
    __builtin_cpu_init();
    if (strcmp(requested, "generic") == 0) {
        expected_kernel = "generic";
    } else if (strcmp(requested, "avx2") == 0) {
        if (best < CGK_ISA_AVX2) {
            printf("avx2: not executed (CPU lacks AVX2)\n");
            return 0;
        }
        expected_kernel = "avx2";
    } else {
        if (best < CGK_ISA_AVX512) {
            printf("avx512-vnni: not executed (CPU lacks AVX-512)\n");
            return 0;
        }
#if defined(__x86_64__)
        const int vnni = __builtin_cpu_supports("avx512vnni");
#else
        const int vnni = 0;
#endif
        if (!vnni) printf("avx512-vnni: not executed (CPU lacks AVX-512 VNNI); COVERGENRE_ISA=avx512 runs the avx2 kernel:\n");
        expected_kernel = vnni ? "avx512-vnni" : "avx2";
    }
    printf("COVERGENRE_ISA=%s: cgk_isa() = %s, int8 kernel %s\n", requested, cgk_isa_name(cgk_isa()), kernel);
    if (strcmp(kernel, expected_kernel) != 0) {
        fprintf(stderr, "FAIL: expected the %s kernel\n", expected_kernel);
        return 1;
    }
    fflush(stdout);

    int cases = 0, bad_cases = 0;
    bad_cases += check_quantize() != 0;
    bad_cases += check_pack_clamp() != 0;
    cases += 2;
    // 1 to 13 rows: every row count of the kernels' blocks (12 rows in the VNNI kernel, 4 in AVX2).
    static const int32_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 25, 97};
    // 8, 24 and 40 end in half a panel: the VNNI kernel's ymm (8 and 24 column) forms.
    static const int32_t ns[] = {1, 8, 15, 16, 17, 24, 31, 32, 33, 40, 100};
    static const int32_t ks[] = {1, 2, 3, 4, 5, 7, 16, 33, 100, 1152, 5000};
    unsigned counter = 0;
    // Twice: narrow weights, then wide ones (the AVX2 kernel's split activations).
    for (int pass = 0; pass < 2; pass++, weight_max = 127)
    for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++)
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++, counter++) {
                // The other parameters cycle with the shape, so each meets every value many times.
                q8_case t = {.m = ms[mi], .n = ns[ni], .k = ks[ki]};
                t.zero = zeros[counter % 4];
                t.activation = (int)(counter / 4 % 3);
                t.with_bias = (int)(counter / 12 % 2);
                t.inv_scale = inv_scales[counter % 6];
                t.lda = t.k + (counter % 3 == 0 ? 0 : 1 + (ptrdiff_t)next_below(9));
                t.ldb = t.n + (counter % 5 == 0 ? 0 : 1 + (ptrdiff_t)next_below(9));
                t.ldc = t.n + (counter % 7 == 0 ? 0 : 1 + (ptrdiff_t)next_below(9));
                t.random_offset = counter % 11 == 5;
                t.odd_epilogue = counter % 13 == 6;
                bad_cases += run_case(&t) != 0;
                cases++;
            }
    // The rest with wide weights.
    // k around the kernels' passes of 2048 values (the int32 partial sums kept in C between them).
    static const int32_t deep[][3] = {{13, 33, 2048}, {12, 32, 2049}, {5, 24, 4097}, {1, 8, 2052}, {25, 40, 6144}};
    for (size_t d = 0; d < sizeof deep / sizeof *deep; d++, counter++) {
        const q8_case t = {.m = deep[d][0], .n = deep[d][1], .k = deep[d][2], .lda = deep[d][2] + (ptrdiff_t)d,
                           .ldb = deep[d][1] + 1, .ldc = deep[d][1] + (ptrdiff_t)d, .inv_scale = inv_scales[d],
                           .zero = zeros[d % 4], .with_bias = (int)(d % 2), .activation = (int)(d % 3)};
        bad_cases += run_case(&t) != 0;
        cases++;
    }
    // Every combination of zero point, bias and activation on two shapes.
    static const int32_t small[2][3] = {{13, 33, 100}, {7, 17, 5}};
    for (int s = 0; s < 2; s++)
        for (int zi = 0; zi < 4; zi++)
            for (int with_bias = 0; with_bias <= 1; with_bias++)
                for (int activation = CGK_ACT_NONE; activation <= CGK_ACT_RELU6; activation++) {
                    const q8_case t = {.m = small[s][0], .n = small[s][1], .k = small[s][2], .lda = small[s][2] + 3,
                                       .ldb = small[s][1], .ldc = small[s][1] + 2, .inv_scale = 8.0f, .zero = zeros[zi],
                                       .with_bias = with_bias, .activation = activation};
                    bad_cases += run_case(&t) != 0;
                    cases++;
                }
    bad_cases += check_extremes() != 0;
    cases++;
    bad_cases += check_depthwise(&cases);
    printf("%s: %d cases, %d failed (%lld values compared, %lld mismatched)\n", kernel, cases, bad_cases,
           (long long)checked, (long long)failed);
    if (timing && bad_cases == 0) {
        printf("%s timing, one thread (informative):\n", kernel);
        for (weight_max = 63; weight_max <= 127; weight_max += 64) {
            printf("  weights in [-%d, %d]:\n", weight_max, weight_max);
            time_shape(3136, 144, 24);
            time_shape(784, 480, 80);
            time_shape(12544, 16, 96);
            time_shape(196, 1152, 192);
        }
    }
    return bad_cases != 0;
}

int main(int argc, char **argv) {
    int timing = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-timing") == 0) timing = 0;
        else {
            fprintf(stderr, "usage: %s [--no-timing]\n", argv[0]);
            return 2;
        }
    }
    const char *child = getenv("Q8_TEST_CHILD");
    if (child != NULL) {
        const char *requested = getenv("COVERGENRE_ISA");
        return run_variant(requested ? requested : "(unset)", timing);
    }
    static const char *const variants[] = {"generic", "avx2", "avx512"};
    int failures = 0;
    for (int v = 0; v < 3; v++) {
        fflush(stdout);
        const pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            setenv("COVERGENRE_ISA", variants[v], 1);
            setenv("Q8_TEST_CHILD", "1", 1);
            execv("/proc/self/exe", argv);
            perror("execv /proc/self/exe");
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0) {
            perror("waitpid");
            return 1;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (WIFSIGNALED(status)) fprintf(stderr, "COVERGENRE_ISA=%s: killed by signal %d\n", variants[v], WTERMSIG(status));
            else fprintf(stderr, "COVERGENRE_ISA=%s: FAILED (exit status %d)\n", variants[v], WEXITSTATUS(status));
            failures++;
        }
    }
    printf(failures ? "q8_test: %d variant(s) FAILED\n" : "q8_test: every variant bit-identical to the reference\n", failures);
    return failures != 0;
}
