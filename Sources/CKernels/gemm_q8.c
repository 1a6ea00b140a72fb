// The int8 GEMM of quantized inference: C = act(scale * (quantize(A) * W + offset) + bias).
//
// W (the weights, int8 in [-127, 127]) is packed once at load; A (the activations, float) is
// quantized to uint8 on the fly, a block of rows at a time into a stack buffer, and multiplied
// exactly in int32; only the epilogue is floating point, one conversion, one multiply, one add
// and the activation, in that order and never fused. So every variant, and the naive loops of
// Tests/c/q8_test.c, produce the same bits.
//
// Variants (cgk_q8_kernel): with AVX-512 VNNI, vpdpbusd adds four u8 x s8 products into each
// int32 lane, a 12 x 32 block of C in 24 zmm registers; with AVX2, vpmaddubsw (pairs of products
// into int16) and vpmaddwd against ones (pairs of int16 into int32), a 4 x 16 block in 8 ymm
// registers; the portable C otherwise. vpmaddubsw saturates its int16 sums: with weights in
// [-63, 63] 2 * 255 * 63 = 32130 stays below the limit; a "wide" matrix (cgk_q8_pack says so)
// splits each activation byte in two to stay below it (q8_avx2_rxc), at twice the multiplies. So
// the AVX2 sums are exact too.
//
// Packed layout (cgk_q8_pack): panels of 16 columns, panel p at p * kq * 16 bytes (kq = k rounded
// up to 4); within a panel, group g (k values 4g .. 4g + 3) at g * 64 bytes, column j's four
// values at bytes 4j .. 4j + 3. One group of one panel is one zmm (vpdpbusd's operand, whose
// int32 lane j is column j) or two ymm (columns 0-7, 8-15) for AVX2.
//
// K beyond Q8_KC: A is quantized Q8_KC values at a time; between passes the int32 partial sums
// wait in C itself (the bits of an int32 in a float's place), and the last pass applies the
// epilogue. Stack use: the quantized rows, 12 x 2048 bytes, and about 2 KB more (27 KB in all
// optimized; about 66 KB in an unoptimized build, see Q8_INSTANCE).
//
// The float epilogue must not become a fused multiply-add (the portable C would round once where
// the vector code rounds twice, or the reverse): separate statements and no contraction, which
// holds with clang's default -ffp-contract=on; Q8_ROUNDED also hides each product from the
// optimizer (an empty asm that claims to change it), so not even -ffp-contract=fast, which
// disregards the pragma, can fuse it.
#pragma STDC FP_CONTRACT OFF

#include "kernel_internal.h"

#include <stdatomic.h>
#include <string.h>

#if CGK_X86
#include <immintrin.h>
// x86-64-v4 plus VNNI (Ice Lake, Zen 4 and later); tuned as the project's other AVX-512 kernels.
#define CGK_TARGET_VNNI __attribute__((target("arch=x86-64-v4,avx512vnni,tune=znver4"), min_vector_width(512)))
#define Q8_ROUNDED(v) __asm__("" : "+v"(v)) // in its vector register (any, xmm0-31 with AVX-512)
#else
#define Q8_ROUNDED(v) ((void)0)
#endif

#define Q8_NR 16         // columns per panel
#define Q8_GROUP 64      // bytes of one group (4 k values) of one panel
#define Q8_KC 2048       // k values of A quantized per pass: one pass for every layer of the networks
#define Q8_MR_VNNI 12    // rows per block: 12 x 2 zmm accumulators + 2 of W + 1 of A = 27 of 32 registers
#define Q8_MR_AVX2 4     // 4 x 2 ymm accumulators + ones + 2 of W + A + 2 products = 14 of 16
#define Q8_MR_GENERIC 4

enum { Q8_GENERIC = 0, Q8_AVX2 = 1, Q8_VNNI = 2 };

static inline int32_t q8_kq(int32_t k) { return k > 0 ? (k + 3) & ~3 : 0; }

size_t cgk_q8_pack_bytes(int32_t k, int32_t n) {
    if (k <= 0 || n <= 0) return 0;
    return (size_t)q8_kq(k) * (size_t)((n + Q8_NR - 1) / Q8_NR) * Q8_NR;
}

// -128 is clamped to -127 (so |w| fits 7 bits of magnitude, which the AVX2 kernel's split relies
// on); the caller's offsets must come from the same values. Returns 1 when a weight lies outside
// [-63, 63] (the matrix is "wide": see cgk_gemm_q8), else 0.
int cgk_q8_pack(const int8_t *b, ptrdiff_t ldb, int32_t k, int32_t n, int8_t *packed) {
    int wide = 0;
    if (k <= 0 || n <= 0) return 0;
    const int32_t panels = (n + Q8_NR - 1) / Q8_NR, groups = q8_kq(k) / 4;
    for (int32_t p = 0; p < panels; p++) {
        const int32_t c0 = p * Q8_NR, width = n - c0 < Q8_NR ? n - c0 : Q8_NR;
        for (int32_t g = 0; g < groups; g++) {
            int8_t *dst = packed + ((ptrdiff_t)p * groups + g) * Q8_GROUP;
            memset(dst, 0, Q8_GROUP);
            for (int32_t t = 0; t < 4 && 4 * g + t < k; t++) {
                const int8_t *src = b + (ptrdiff_t)(4 * g + t) * ldb + c0;
                for (int32_t j = 0; j < width; j++) {
                    const int8_t w = src[j] < -127 ? -127 : src[j];
                    wide |= w < -63 || w > 63;
                    dst[4 * j + t] = w;
                }
            }
        }
    }
    return wide;
}

// ---- quantization ---------------------------------------------------------------------------

static inline int32_t q8_clamp_zero(int32_t zero) { return zero < 0 ? 0 : zero > 255 ? 255 : zero; }

// The portable quantizer, which clang vectorizes. Rounding to nearest even: for |t| <= 2^22,
// t + 1.5 * 2^23 lies in [2^23, 2^24), where floats are the integers, so the addition rounds t
// as cvtps2dq does (1.5 * 2^23 is even: ties go to the even integer); subtracting it is exact.
CGK_INLINE void q8_quantize_c(const float *x, ptrdiff_t n, float inv_scale, const float *inv_scales, int32_t zero,
                              uint8_t *q) {
    const float lo = (float)-zero, hi = (float)(255 - zero), magic = 12582912.0f;
    for (ptrdiff_t i = 0; i < n; i++) {
        float t = x[i] * (inv_scales ? inv_scales[i] : inv_scale);
        t = t > lo ? t : lo; // NaN becomes lo
        t = t < hi ? t : hi;
        float r = t + magic;
        r = r - magic;
        q[i] = (uint8_t)((int32_t)r + zero);
    }
}

static void q8_quantize_generic(const float *x, ptrdiff_t n, float inv_scale, const float *inv_scales, int32_t zero,
                                uint8_t *q) {
    q8_quantize_c(x, n, inv_scale, inv_scales, zero, q);
}

#if CGK_X86
// _mm_max_ps(t, lo) is t > lo ? t : lo and _mm_min_ps(t, hi) is t < hi ? t : hi, NaN included.
CGK_TARGET_AVX2 CGK_INLINE __m256i q8_quantize8_avx2(__m256 x, __m256 s, __m256 lo, __m256 hi, __m256i z) {
    __m256 t = _mm256_mul_ps(x, s);
    t = _mm256_max_ps(t, lo);
    t = _mm256_min_ps(t, hi);
    return _mm256_add_epi32(_mm256_cvtps_epi32(t), z);
}

// Eight int32 in [0, 255] to eight bytes.
CGK_TARGET_AVX2 CGK_INLINE __m128i q8_bytes8_avx2(__m256i v) {
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packus_epi16(w, w);
}

// inv_scales (one per value, or NULL: inv_scale for all): S(i) is the multiplier vector at i.
#define Q8_S8(i) (inv_scales ? _mm256_loadu_ps(inv_scales + (i)) : s)
#define Q8_S16(i) (inv_scales ? _mm512_loadu_ps(inv_scales + (i)) : s)

CGK_TARGET_AVX2 static void q8_quantize_avx2(const float *x, ptrdiff_t n, float inv_scale, const float *inv_scales,
                                             int32_t zero, uint8_t *q) {
    const __m256 s = _mm256_set1_ps(inv_scale), lo = _mm256_set1_ps((float)-zero), hi = _mm256_set1_ps((float)(255 - zero));
    const __m256i z = _mm256_set1_epi32(zero);
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i v0 = q8_quantize8_avx2(_mm256_loadu_ps(x + i), Q8_S8(i), lo, hi, z);
        const __m256i v1 = q8_quantize8_avx2(_mm256_loadu_ps(x + i + 8), Q8_S8(i + 8), lo, hi, z);
        const __m256i v2 = q8_quantize8_avx2(_mm256_loadu_ps(x + i + 16), Q8_S8(i + 16), lo, hi, z);
        const __m256i v3 = q8_quantize8_avx2(_mm256_loadu_ps(x + i + 24), Q8_S8(i + 24), lo, hi, z);
        // Packing works within 128-bit lanes: dwords come out as v0 0-3, v1 0-3, v2 0-3, v3 0-3,
        // v0 4-7, v1 4-7, ...; the permutation puts them back in order.
        const __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(v0, v1), _mm256_packus_epi32(v2, v3));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    for (; i + 8 <= n; i += 8)
        _mm_storel_epi64((__m128i *)(q + i), q8_bytes8_avx2(q8_quantize8_avx2(_mm256_loadu_ps(x + i), Q8_S8(i), lo, hi, z)));
    if (i < n) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        uint8_t tail[16];
        const __m256 st = inv_scales ? _mm256_maskload_ps(inv_scales + i, mask) : s;
        _mm_storeu_si128((__m128i *)tail, q8_bytes8_avx2(q8_quantize8_avx2(_mm256_maskload_ps(x + i, mask), st, lo, hi, z)));
        memcpy(q + i, tail, (size_t)(n - i));
    }
}

CGK_TARGET_VNNI CGK_INLINE __m512i q8_quantize16_avx512(__m512 x, __m512 s, __m512 lo, __m512 hi, __m512i z) {
    __m512 t = _mm512_mul_ps(x, s);
    t = _mm512_max_ps(t, lo);
    t = _mm512_min_ps(t, hi);
    return _mm512_add_epi32(_mm512_cvtps_epi32(t), z);
}

// vpmovdb would narrow 16 int32 to bytes in one instruction, but on Zen 4 its store form (which
// clang folds it into) took two thirds of the quantizer's time: the packs and a permutation
// instead, as in the AVX2 quantizer, 64 values at a time.
CGK_TARGET_VNNI static void q8_quantize_avx512(const float *x, ptrdiff_t n, float inv_scale, const float *inv_scales,
                                               int32_t zero, uint8_t *q) {
    const __m512 s = _mm512_set1_ps(inv_scale), lo = _mm512_set1_ps((float)-zero), hi = _mm512_set1_ps((float)(255 - zero));
    const __m512i z = _mm512_set1_epi32(zero);
    // After the packs, dword 4i + j holds values 4i .. 4i + 3 of vector j (i: 128-bit lane).
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m512i v0 = q8_quantize16_avx512(_mm512_loadu_ps(x + i), Q8_S16(i), lo, hi, z);
        const __m512i v1 = q8_quantize16_avx512(_mm512_loadu_ps(x + i + 16), Q8_S16(i + 16), lo, hi, z);
        const __m512i v2 = q8_quantize16_avx512(_mm512_loadu_ps(x + i + 32), Q8_S16(i + 32), lo, hi, z);
        const __m512i v3 = q8_quantize16_avx512(_mm512_loadu_ps(x + i + 48), Q8_S16(i + 48), lo, hi, z);
        const __m512i b = _mm512_packus_epi16(_mm512_packus_epi32(v0, v1), _mm512_packus_epi32(v2, v3));
        _mm512_storeu_si512(q + i, _mm512_permutexvar_epi32(order, b));
    }
    for (; i < n; i += 16) {
        const __mmask16 mask = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 st = inv_scales ? _mm512_maskz_loadu_ps(mask, inv_scales + i) : s;
        const __m512i v = q8_quantize16_avx512(_mm512_maskz_loadu_ps(mask, x + i), st, lo, hi, z);
        const __m512i w = _mm512_packus_epi32(v, v);
        const __m512i b = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(w, w)); // bytes 0-15: the 16 values
        // A masked store costs far more than a plain one on Zen 4: only for the last few bytes.
        if (mask == 0xFFFF) _mm_storeu_si128((__m128i *)(q + i), _mm512_castsi512_si128(b));
        else _mm_mask_storeu_epi8(q + i, mask, _mm512_castsi512_si128(b));
    }
}
#endif

// ---- variant --------------------------------------------------------------------------------

static _Atomic int q8_variant_decided = -1;

// Follows cgk_isa(); the AVX-512 variant needs VNNI besides, else it runs the AVX2 kernel.
static int q8_variant(void) {
    int variant = atomic_load_explicit(&q8_variant_decided, memory_order_relaxed);
    if (variant >= 0) return variant;
    variant = Q8_GENERIC;
#if CGK_X86
    const int isa = cgk_isa();
    if (isa == CGK_ISA_AVX512) {
        __builtin_cpu_init();
        variant = __builtin_cpu_supports("avx512vnni") ? Q8_VNNI : Q8_AVX2;
    } else if (isa == CGK_ISA_AVX2) {
        variant = Q8_AVX2;
    }
#endif
    atomic_store_explicit(&q8_variant_decided, variant, memory_order_relaxed);
    return variant;
}

const char *cgk_q8_kernel(void) {
    static const char *const names[] = {"generic", "avx2", "avx512-vnni"};
    return names[q8_variant()];
}

void cgk_q8_quantize(const float *x, ptrdiff_t n, float inv_scale, const float *inv_scales, int32_t zero, uint8_t *q) {
    zero = q8_clamp_zero(zero);
    switch (q8_variant()) {
#if CGK_X86
    case Q8_VNNI: q8_quantize_avx512(x, n, inv_scale, inv_scales, zero, q); break;
    case Q8_AVX2: q8_quantize_avx2(x, n, inv_scale, inv_scales, zero, q); break;
#endif
    default: q8_quantize_generic(x, n, inv_scale, inv_scales, zero, q); break;
    }
}

// ---- the loops around the microkernels --------------------------------------------------------

// The epilogue of one row of `width` int32 sums, in C: the partial-width columns of the vector
// kernels and every column of the portable one. `first`: C holds no partial sums yet; `last`:
// finish (offset, convert, scale, bias, activation), else store the int32 sums into C.
CGK_INLINE void q8_finish(float *c, const int32_t *acc, int32_t width, int first, int last, const int32_t *offset,
                          const float *scale, const float *bias, int activation) {
    for (int32_t j = 0; j < width; j++) {
        uint32_t s = (uint32_t)acc[j]; // unsigned: wraps as the vector adds do, never undefined
        if (!first) {
            uint32_t partial;
            memcpy(&partial, c + j, sizeof partial);
            s += partial;
        }
        if (!last) {
            memcpy(c + j, &s, sizeof s);
            continue;
        }
        s += (uint32_t)offset[j];
        float v = (float)(int32_t)s;
        v = v * scale[j];
        Q8_ROUNDED(v);
        if (bias) v = v + bias[j];
        c[j] = cgk_activate(v, activation);
    }
}

// C[rows x width] (partial sums or finished, see q8_finish) for `groups` groups of 4 quantized k
// values: rows of qa qs bytes apart, the panels from wp, panel_stride bytes apart; width <= 16 *
// the panels a kernel takes at once. offset, scale and bias start at the block's first column.
// Bytes out (cgk_q8_io) for a kernel that writes them itself (the VNNI kernel): the block's first
// byte, the row stride, and the multipliers from the block's first column.
typedef struct {
    uint8_t *c;
    ptrdiff_t ldc;
    const float *inv;
    int32_t zero;
} q8_bytes;
typedef void (*q8_kernel)(int32_t rows, int32_t groups, const uint8_t *qa, ptrdiff_t qs, const int8_t *wp,
                          ptrdiff_t panel_stride, int32_t width, float *c, ptrdiff_t ldc, int first, int last,
                          const int32_t *offset, const float *scale, const float *bias, int activation, const q8_bytes *bytes);
typedef void (*q8_quantizer)(const float *x, ptrdiff_t n, float inv_scale, const float *inv_scales, int32_t zero, uint8_t *q);

// Blocks of mr rows: their k values quantized (Q8_KC at a time) into qa (mr x Q8_KC bytes), then
// multiplied by every panel in [panel_begin, panel_end), `step` panels per kernel call. Inlined
// with constant mr, step, quantizer and kernel, so the calls are direct.
CGK_INLINE void q8_gemm_blocked(const int32_t mr, const int32_t step, const int kernel_bytes, q8_quantizer quantize, q8_kernel kernel,
                                uint8_t *qa,
                                int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale,
                                const float *inv_scales, int32_t zero, const int8_t *packed, const int32_t *offset, const float *scale, float *c,
                                ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin, int32_t panel_end,
                                const cgk_q8_io *io) {
    const ptrdiff_t panel_stride = (ptrdiff_t)q8_kq(k) * Q8_NR;
    const uint8_t *a8 = io ? io->a : NULL;
    uint8_t *c8 = io ? io->c : NULL;
    // uint8 output: each kernel call finishes its block into this tile of floats, which is then
    // quantized into c8 (one pass over k: cgk_gemm_q8_io requires k <= Q8_KC).
    _Alignas(64) float tile[Q8_MR_VNNI * 2 * Q8_NR];
    for (int32_t i0 = 0; i0 < m; i0 += mr) {
        const int32_t rows = m - i0 < mr ? m - i0 : mr;
        for (int32_t k0 = 0;; k0 += Q8_KC) {
            const int32_t kc = k - k0 < Q8_KC ? k - k0 : Q8_KC, kcq = q8_kq(kc);
            const int first = k0 == 0, last = k - k0 <= Q8_KC;
            const uint8_t *qrows = qa;
            ptrdiff_t qs = kcq;
            if (a8 != NULL && kc == kcq) {
                // Quantized already, and whole groups of 4: the kernel reads the rows in place.
                qrows = a8 + (ptrdiff_t)i0 * lda + k0;
                qs = lda;
            } else {
                for (int32_t r = 0; r < rows; r++) {
                    uint8_t *qr = qa + (ptrdiff_t)r * kcq;
                    if (a8 != NULL) memcpy(qr, a8 + (ptrdiff_t)(i0 + r) * lda + k0, (size_t)kc);
                    else quantize(a + (ptrdiff_t)(i0 + r) * lda + k0, kc, inv_scale, inv_scales ? inv_scales + k0 : NULL, zero, qr);
                    // Past k the packed weights are zero; the padding is zeroed all the same.
                    for (int32_t kk = kc; kk < kcq; kk++) qr[kk] = 0;
                }
            }
            for (int32_t p = panel_begin; p < panel_end; p += step) {
                const int32_t panels = panel_end - p < step ? panel_end - p : step;
                const int32_t c0 = p * Q8_NR, width = n - c0 < panels * Q8_NR ? n - c0 : panels * Q8_NR;
                if (width <= 0) break;
                const int tiled = c8 != NULL && !kernel_bytes;
                float *out = tiled ? tile : c8 != NULL ? NULL : c + (ptrdiff_t)i0 * ldc + c0;
                const ptrdiff_t ldo = tiled ? 2 * Q8_NR : ldc;
                const q8_bytes bytes = {c8 != NULL ? c8 + (ptrdiff_t)i0 * ldc + c0 : NULL, ldc, c8 != NULL ? io->out_inv_scales + c0 : NULL,
                                        io != NULL ? io->out_zero : 0};
                kernel(rows, kcq / 4, qrows, qs, packed + p * panel_stride + (ptrdiff_t)k0 * Q8_NR, panel_stride, width,
                       out, ldo, first, last, offset + c0, scale + c0, bias ? bias + c0 : NULL, activation,
                       c8 != NULL && kernel_bytes ? &bytes : NULL);
                if (tiled)
                    for (int32_t r = 0; r < rows; r++)
                        quantize(tile + (ptrdiff_t)r * ldo, width, 0.0f, io->out_inv_scales + c0, io->out_zero,
                                 c8 + (ptrdiff_t)(i0 + r) * ldc + c0);
            }
            if (last) break;
        }
    }
}

// ---- portable kernel ------------------------------------------------------------------------

static void q8_kernel_generic(int32_t rows, int32_t groups, const uint8_t *qa, ptrdiff_t qs, const int8_t *wp,
                              ptrdiff_t panel_stride, int32_t width, float *c, ptrdiff_t ldc, int first, int last,
                              const int32_t *offset, const float *scale, const float *bias, int activation,
                              const q8_bytes *bytes) {
    (void)panel_stride;
    (void)bytes; // never asked: the loop around it quantizes a tile
    int32_t acc[Q8_MR_GENERIC][Q8_NR] = {{0}};
    for (int32_t g = 0; g < groups; g++) {
        const int8_t *w = wp + (ptrdiff_t)g * Q8_GROUP;
        // The group transposed (4 rows of 16 columns), so the row loops below run down columns.
        int16_t wt[4][Q8_NR];
        for (int j = 0; j < Q8_NR; j++)
            for (int t = 0; t < 4; t++) wt[t][j] = w[4 * j + t];
        for (int32_t r = 0; r < rows; r++) {
            const uint8_t *ar = qa + (ptrdiff_t)r * qs + 4 * g;
            const int32_t a0 = ar[0], a1 = ar[1], a2 = ar[2], a3 = ar[3];
            for (int j = 0; j < Q8_NR; j++) acc[r][j] += a0 * wt[0][j] + a1 * wt[1][j] + a2 * wt[2][j] + a3 * wt[3][j];
        }
    }
    for (int32_t r = 0; r < rows; r++)
        q8_finish(c + (ptrdiff_t)r * ldc, acc[r], width, first, last, offset, scale, bias, activation);
}

// Not inlined into cgk_gemm_q8, whose frame would then hold this buffer under the other variants'.
__attribute__((noinline)) static void q8_gemm_generic(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda,
                                                      float inv_scale, const float *inv_scales, int32_t zero, const int8_t *packed,
                                                      const int32_t *offset, const float *scale, float *c, ptrdiff_t ldc,
                                                      const float *bias, int activation, int32_t panel_begin,
                                                      int32_t panel_end, const cgk_q8_io *io) {
    _Alignas(64) uint8_t qa[Q8_MR_GENERIC * Q8_KC];
    q8_gemm_blocked(Q8_MR_GENERIC, 1, 0, q8_quantize_generic, q8_kernel_generic, qa, m, n, k, a, lda, inv_scale, inv_scales, zero, packed,
                    offset, scale, c, ldc, bias, activation, panel_begin, panel_end, io);
}

#if CGK_X86
static inline uint32_t q8_load4(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

// A q8_kernel's parameters, for the functions below that instantiate one kernel each (one row
// count and width). Optimized, each is inlined into the switch that picks it; unoptimized (SwiftPM's
// debug configuration, the sanitizer builds), each stays a function of its own, since such a build
// gives every inlined copy its own stack slots: 2 MB for the VNNI kernel's 48, against about 40 KB
// for the one a call runs.
#ifdef __OPTIMIZE__
#define Q8_INSTANCE CGK_INLINE
#else
#define Q8_INSTANCE __attribute__((noinline)) static
#endif
#define Q8_KERNEL_PARAMS                                                                                              \
    int32_t rows, int32_t groups, const uint8_t *qa, ptrdiff_t qs, const int8_t *wp, ptrdiff_t panel_stride,          \
        int32_t width, float *c, ptrdiff_t ldc, int first, int last, const int32_t *offset, const float *scale,         \
        const float *bias, int activation, const q8_bytes *bytes
// The vector kernels' other epilogue: sums they left in acc (rows of Q8_ACC_STRIDE int32) finished
// in C, for a last panel narrower than the kernel and for passes over k beyond Q8_KC. Rare, so one
// out-of-line copy (scalar, the same arithmetic) serves every instantiation of the kernels.
#define Q8_ACC_STRIDE 32
__attribute__((noinline)) static void q8_finish_rows(const int32_t *acc, int32_t rows, int32_t width, float *c,
                                                     ptrdiff_t ldc, int first, int last, const int32_t *offset,
                                                     const float *scale, const float *bias, int activation) {
    for (int32_t r = 0; r < rows; r++)
        q8_finish(c + (ptrdiff_t)r * ldc, acc + (ptrdiff_t)r * Q8_ACC_STRIDE, width, first, last, offset, scale, bias,
                  activation);
}

// The epilogue of 8 finished sums: offset, convert, scale, bias (-0.0 when there is none: x + -0.0
// is x for every float, -0.0 and NaN included), activation. max(v, 0) is v > 0 ? v : 0 (NaN: 0) and
// min(., 6) follows: cgk_activate's results exactly. Inlined into the AVX-512 kernel too.
CGK_TARGET_AVX2 CGK_INLINE __m256 q8_finish8(__m256i acc, __m256i offset, __m256 scale, __m256 bias, int activation) {
    __m256 v = _mm256_cvtepi32_ps(_mm256_add_epi32(acc, offset));
    v = _mm256_mul_ps(v, scale);
    Q8_ROUNDED(v);
    v = _mm256_add_ps(v, bias);
    if (activation == CGK_ACT_RELU) v = _mm256_max_ps(v, _mm256_setzero_ps());
    else if (activation == CGK_ACT_RELU6) v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
    return v;
}

// ---- AVX2 kernel ----------------------------------------------------------------------------

// `rows` rows (1..4) against one panel, `cols` 8 (its first half: a last panel of <= 8 columns)
// or 16; both constants where this is inlined. Per group of 4 k values and row: a broadcast of
// the row's 4 bytes, vpmaddubsw (u8 x s8, adjacent pairs summed into int16: column j's k 0+1 and
// 2+3) and vpmaddwd against ones (the two int16 into int32) per 8 columns.
//
// `wide` weights (up to +-127) could saturate vpmaddubsw's int16 (2 x 255 x 127 > 32767), so each
// activation byte a is split into a >> 1 (at most 127: 2 x 127 x 127 = 32258 fits) and a & 1,
// multiplied apart, and joined in int32 as 2 x high + low: exact, at twice the multiplies.
CGK_TARGET_AVX2 CGK_INLINE void q8_avx2_rxc(const int wide, const int rows, const int cols, int32_t groups, const uint8_t *qa,
                                            ptrdiff_t qs,
                                            const int8_t *restrict wp, int32_t width, float *c, ptrdiff_t ldc, int first,
                                            int last, const int32_t *offset, const float *scale, const float *bias,
                                            int activation, const q8_bytes *bytes) {
    __m256i acc0[Q8_MR_AVX2], acc1[Q8_MR_AVX2];
#pragma clang loop unroll(full)
    for (int r = 0; r < rows; r++) acc0[r] = acc1[r] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1), twos = _mm256_set1_epi16(2), low7 = _mm256_set1_epi8(0x7F),
                  bit0 = _mm256_set1_epi8(1);
    for (int32_t g = 0; g < groups; g++, wp += Q8_GROUP, qa += 4) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)wp);
        const __m256i x1 = cols == 16 ? _mm256_loadu_si256((const __m256i *)(wp + 32)) : x0;
#pragma clang loop unroll(full)
        for (int r = 0; r < rows; r++) {
            const __m256i x = _mm256_set1_epi32((int)q8_load4(qa + r * qs));
            if (wide) {
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 1), low7), lo = _mm256_and_si256(x, bit0);
                acc0[r] = _mm256_add_epi32(acc0[r], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(hi, x0), twos),
                                                                     _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), ones)));
                if (cols == 16)
                    acc1[r] = _mm256_add_epi32(acc1[r], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), twos),
                                                                         _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x1), ones)));
                continue;
            }
            acc0[r] = _mm256_add_epi32(acc0[r], _mm256_madd_epi16(_mm256_maddubs_epi16(x, x0), ones));
            if (cols == 16) acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(_mm256_maddubs_epi16(x, x1), ones));
        }
    }
    if (first && last && width == cols) {
        const __m256i o0 = _mm256_loadu_si256((const __m256i *)offset);
        const __m256i o1 = cols == 16 ? _mm256_loadu_si256((const __m256i *)(offset + 8)) : o0;
        const __m256 s0 = _mm256_loadu_ps(scale), s1 = cols == 16 ? _mm256_loadu_ps(scale + 8) : s0;
        const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_set1_ps(-0.0f);
        const __m256 b1 = bias && cols == 16 ? _mm256_loadu_ps(bias + 8) : _mm256_set1_ps(-0.0f);
        if (bytes != NULL) {
            // Bytes out, quantized in registers (cgk_q8_quantize's steps).
            const __m256 qlo = _mm256_set1_ps((float)-bytes->zero), qhi = _mm256_set1_ps((float)(255 - bytes->zero));
            const __m256i zp = _mm256_set1_epi32(bytes->zero);
            const __m256 i0 = _mm256_loadu_ps(bytes->inv), i1 = cols == 16 ? _mm256_loadu_ps(bytes->inv + 8) : i0;
#pragma clang loop unroll(full)
            for (int r = 0; r < rows; r++) {
                uint8_t *br = bytes->c + r * bytes->ldc;
                const __m128i q0 = q8_bytes8_avx2(q8_quantize8_avx2(q8_finish8(acc0[r], o0, s0, b0, activation), i0, qlo, qhi, zp));
                _mm_storel_epi64((__m128i *)br, q0);
                if (cols == 16) {
                    const __m128i q1 = q8_bytes8_avx2(q8_quantize8_avx2(q8_finish8(acc1[r], o1, s1, b1, activation), i1, qlo, qhi, zp));
                    _mm_storel_epi64((__m128i *)(br + 8), q1);
                }
            }
            return;
        }
#pragma clang loop unroll(full)
        for (int r = 0; r < rows; r++) {
            float *cr = c + r * ldc;
            _mm256_storeu_ps(cr, q8_finish8(acc0[r], o0, s0, b0, activation));
            if (cols == 16) _mm256_storeu_ps(cr + 8, q8_finish8(acc1[r], o1, s1, b1, activation));
        }
        return;
    }
    _Alignas(32) int32_t tmp[Q8_MR_AVX2 * Q8_ACC_STRIDE];
#pragma clang loop unroll(full)
    for (int r = 0; r < rows; r++) {
        _mm256_store_si256((__m256i *)(tmp + r * Q8_ACC_STRIDE), acc0[r]);
        if (cols == 16) _mm256_store_si256((__m256i *)(tmp + r * Q8_ACC_STRIDE + 8), acc1[r]);
    }
    if (bytes != NULL) {
        // Bytes out, a partial panel (one pass over k): finished as floats, then quantized.
        _Alignas(32) float f[Q8_MR_AVX2 * Q8_ACC_STRIDE];
        q8_finish_rows(tmp, rows, width, f, Q8_ACC_STRIDE, first, last, offset, scale, bias, activation);
        for (int r = 0; r < rows; r++) q8_quantize_c(f + r * Q8_ACC_STRIDE, width, 0.0f, bytes->inv, bytes->zero, bytes->c + r * bytes->ldc);
        return;
    }
    q8_finish_rows(tmp, rows, width, c, ldc, first, last, offset, scale, bias, activation);
}

#define Q8_AVX2_FN(name, wide, r, cols)                                                                               \
    CGK_TARGET_AVX2 Q8_INSTANCE void name##_##r##x##cols(Q8_KERNEL_PARAMS) {                                       \
        (void)rows;                                                                                                   \
        (void)panel_stride;                                                                                           \
        q8_avx2_rxc(wide, r, cols, groups, qa, qs, wp, width, c, ldc, first, last, offset, scale, bias, activation,    \
                    bytes);                                                                                           \
    }
#define Q8_AVX2_FNS(name, wide)                                                                                       \
    Q8_AVX2_FN(name, wide, 1, 16) Q8_AVX2_FN(name, wide, 1, 8) Q8_AVX2_FN(name, wide, 2, 16) Q8_AVX2_FN(name, wide, 2, 8) \
    Q8_AVX2_FN(name, wide, 3, 16) Q8_AVX2_FN(name, wide, 3, 8) Q8_AVX2_FN(name, wide, 4, 16) Q8_AVX2_FN(name, wide, 4, 8)
Q8_AVX2_FNS(q8_avx2, 0)
Q8_AVX2_FNS(q8_avx2w, 1)
#undef Q8_AVX2_FNS
#undef Q8_AVX2_FN

#define Q8_AVX2_CALL(name, r, cols)                                                                                   \
    name##_##r##x##cols(rows, groups, qa, qs, wp, panel_stride, width, c, ldc, first, last, offset, scale, bias, activation, bytes)
#define Q8_AVX2_ROWS(name, r)                                                                                         \
    case r:                                                                                                           \
        if (width > 8) Q8_AVX2_CALL(name, r, 16);                                                                     \
        else Q8_AVX2_CALL(name, r, 8);                                                                                \
        break;
CGK_TARGET_AVX2 static void q8_kernel_avx2(Q8_KERNEL_PARAMS) {
    switch (rows) { Q8_AVX2_ROWS(q8_avx2, 4) Q8_AVX2_ROWS(q8_avx2, 3) Q8_AVX2_ROWS(q8_avx2, 2) Q8_AVX2_ROWS(q8_avx2, 1) }
}
CGK_TARGET_AVX2 static void q8_kernel_avx2_wide(Q8_KERNEL_PARAMS) {
    switch (rows) { Q8_AVX2_ROWS(q8_avx2w, 4) Q8_AVX2_ROWS(q8_avx2w, 3) Q8_AVX2_ROWS(q8_avx2w, 2) Q8_AVX2_ROWS(q8_avx2w, 1) }
}
#undef Q8_AVX2_ROWS
#undef Q8_AVX2_CALL

CGK_TARGET_AVX2 static void q8_gemm_avx2(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale, const float *inv_scales,
                                         int32_t zero, const int8_t *packed, int wide, const int32_t *offset, const float *scale,
                                         float *c, ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin,
                                         int32_t panel_end, const cgk_q8_io *io) {
    _Alignas(64) uint8_t qa[Q8_MR_AVX2 * Q8_KC];
    if (wide)
        q8_gemm_blocked(Q8_MR_AVX2, 1, 1, q8_quantize_avx2, q8_kernel_avx2_wide, qa, m, n, k, a, lda, inv_scale, inv_scales, zero,
                        packed, offset, scale, c, ldc, bias, activation, panel_begin, panel_end, io);
    else
        q8_gemm_blocked(Q8_MR_AVX2, 1, 1, q8_quantize_avx2, q8_kernel_avx2, qa, m, n, k, a, lda, inv_scale, inv_scales, zero, packed, offset,
                    scale, c, ldc, bias, activation, panel_begin, panel_end, io);
}

// ---- AVX-512 VNNI kernel --------------------------------------------------------------------

// q8_finish8 for 16 sums. The activation goes through masks (all lanes or none) rather than
// branches: one copy of the epilogue per kernel instantiation instead of three.
CGK_TARGET_VNNI CGK_INLINE __m512 q8_finish16(__m512i acc, __m512i offset, __m512 scale, __m512 bias, __mmask16 relu,
                                              __mmask16 relu6) {
    __m512 v = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, offset));
    v = _mm512_mul_ps(v, scale);
    Q8_ROUNDED(v);
    v = _mm512_add_ps(v, bias);
    v = _mm512_mask_max_ps(v, relu, v, _mm512_setzero_ps());
    return _mm512_mask_min_ps(v, relu6, v, _mm512_set1_ps(6.0f));
}

// `rows` rows (1..12) against `cols` columns: 32 (two panels), 24 (a panel and the first half of
// the next, a last panel of <= 8 columns), 16 (one panel) or 8 (half of one); both constants where
// this is inlined, so a half panel costs a ymm (half a zmm's work on Zen 4) and a short block only
// its rows. Rows are addressed from three pointers (rows 0-3, 4-7, 8-11) as in gemm_avx512.h, and
// the k loop is not unrolled, so 24 accumulators, two of W and the broadcast fit in 32 registers.
CGK_TARGET_VNNI CGK_INLINE void q8_vnni_rxc(const int rows, const int cols, int32_t groups, const uint8_t *qa, ptrdiff_t qs,
                                            const int8_t *restrict wp, ptrdiff_t panel_stride, int32_t width, float *c,
                                            ptrdiff_t ldc, int first, int last, const int32_t *offset, const float *scale,
                                            const float *bias, int activation, const q8_bytes *bytes) {
    __m512i z0[Q8_MR_VNNI], z1[Q8_MR_VNNI];
    __m256i y0[Q8_MR_VNNI], y1[Q8_MR_VNNI];
#pragma clang loop unroll(full)
    for (int r = 0; r < rows; r++) {
        if (cols >= 16) z0[r] = _mm512_setzero_si512();
        else y0[r] = _mm256_setzero_si256();
        if (cols == 32) z1[r] = _mm512_setzero_si512();
        else if (cols == 24) y1[r] = _mm256_setzero_si256();
    }
    const int8_t *w0 = wp, *w1 = wp + (cols > 16 ? panel_stride : 0);
    const uint8_t *a0 = qa, *a4 = rows > 4 ? qa + 4 * qs : qa, *a8 = rows > 8 ? qa + 8 * qs : qa;
    const ptrdiff_t qs3 = 3 * qs;
#define Q8_ROW(r, base, at)                                                                                           \
    if (r < rows) {                                                                                                   \
        const int x = (int)q8_load4(base + at);                                                                       \
        if (cols >= 16) z0[r] = _mm512_dpbusd_epi32(z0[r], _mm512_set1_epi32(x), x0);                                 \
        else y0[r] = _mm256_dpbusd_epi32(y0[r], _mm256_set1_epi32(x), h0);                                            \
        if (cols == 32) z1[r] = _mm512_dpbusd_epi32(z1[r], _mm512_set1_epi32(x), x1);                                 \
        else if (cols == 24) y1[r] = _mm256_dpbusd_epi32(y1[r], _mm256_set1_epi32(x), h1);                            \
    }
#pragma clang loop unroll(disable)
    for (int32_t g = 0; g < groups; g++) {
        const __m512i x0 = cols >= 16 ? _mm512_loadu_si512(w0) : _mm512_setzero_si512();
        const __m256i h0 = cols < 16 ? _mm256_loadu_si256((const __m256i *)w0) : _mm256_setzero_si256();
        const __m512i x1 = cols == 32 ? _mm512_loadu_si512(w1) : _mm512_setzero_si512();
        const __m256i h1 = cols == 24 ? _mm256_loadu_si256((const __m256i *)w1) : _mm256_setzero_si256();
        w0 += Q8_GROUP;
        w1 += Q8_GROUP;
        Q8_ROW(0, a0, 0) Q8_ROW(1, a0, qs) Q8_ROW(2, a0, 2 * qs) Q8_ROW(3, a0, qs3)
        Q8_ROW(4, a4, 0) Q8_ROW(5, a4, qs) Q8_ROW(6, a4, 2 * qs) Q8_ROW(7, a4, qs3)
        Q8_ROW(8, a8, 0) Q8_ROW(9, a8, qs) Q8_ROW(10, a8, 2 * qs) Q8_ROW(11, a8, qs3)
        a0 += 4;
        a4 += 4;
        a8 += 4;
    }
#undef Q8_ROW
    if (first && last && width == cols) {
        // The common case (one pass over k, every column in C): offset, scale and bias in
        // registers, the rows unrolled.
        const __mmask16 relu = activation != CGK_ACT_NONE ? 0xFFFF : 0, relu6 = activation == CGK_ACT_RELU6 ? 0xFFFF : 0;
        const int32_t hi = cols >= 16 ? 16 : 0; // where the second accumulator's columns start
        __m512i o0 = _mm512_setzero_si512(), o1 = o0;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, b0 = _mm512_set1_ps(-0.0f), b1 = b0;
        __m256i p0 = _mm256_setzero_si256(), p1 = p0;
        __m256 t0 = _mm256_setzero_ps(), t1 = t0, d0 = _mm256_set1_ps(-0.0f), d1 = d0;
        if (cols >= 16) {
            o0 = _mm512_loadu_si512(offset);
            s0 = _mm512_loadu_ps(scale);
            if (bias) b0 = _mm512_loadu_ps(bias);
        } else {
            p0 = _mm256_loadu_si256((const __m256i *)offset);
            t0 = _mm256_loadu_ps(scale);
            if (bias) d0 = _mm256_loadu_ps(bias);
        }
        if (cols == 32) {
            o1 = _mm512_loadu_si512(offset + hi);
            s1 = _mm512_loadu_ps(scale + hi);
            if (bias) b1 = _mm512_loadu_ps(bias + hi);
        } else if (cols == 24) {
            p1 = _mm256_loadu_si256((const __m256i *)(offset + hi));
            t1 = _mm256_loadu_ps(scale + hi);
            if (bias) d1 = _mm256_loadu_ps(bias + hi);
        }
        if (bytes != NULL) {
            // Bytes out: each finished vector quantized in registers (cgk_q8_quantize's steps).
            const __m512 qlo = _mm512_set1_ps((float)-bytes->zero), qhi = _mm512_set1_ps((float)(255 - bytes->zero));
            const __m512i zp = _mm512_set1_epi32(bytes->zero);
            const __mmask16 m0 = cols >= 16 ? 0xFFFF : 0x00FF, m1 = cols == 32 ? 0xFFFF : cols == 24 ? 0x00FF : 0;
            const __m512 i0 = _mm512_maskz_loadu_ps(m0, bytes->inv), i1 = _mm512_maskz_loadu_ps(m1, bytes->inv + hi);
            // The 8-column forms' sums widened to a zmm (the upper lanes are never stored).
            const __m512i p0z = _mm512_castsi256_si512(p0), p1z = _mm512_castsi256_si512(p1);
            const __m512 t0z = _mm512_castps256_ps512(t0), t1z = _mm512_castps256_ps512(t1);
            const __m512 d0z = _mm512_castps256_ps512(d0), d1z = _mm512_castps256_ps512(d1);
#pragma clang loop unroll(full)
            for (int r = 0; r < rows; r++) {
                uint8_t *br = bytes->c + r * bytes->ldc;
                const __m512 v0 = cols >= 16 ? q8_finish16(z0[r], o0, s0, b0, relu, relu6)
                                             : q8_finish16(_mm512_castsi256_si512(y0[r]), p0z, t0z, d0z, relu, relu6);
                const __m128i q0 = _mm512_cvtusepi32_epi8(q8_quantize16_avx512(v0, i0, qlo, qhi, zp));
                if (cols >= 16) _mm_storeu_si128((__m128i *)br, q0);
                else _mm_storel_epi64((__m128i *)br, q0);
                if (cols > 16) {
                    const __m512 v1 = cols == 32 ? q8_finish16(z1[r], o1, s1, b1, relu, relu6)
                                                 : q8_finish16(_mm512_castsi256_si512(y1[r]), p1z, t1z, d1z, relu, relu6);
                    const __m128i q1 = _mm512_cvtusepi32_epi8(q8_quantize16_avx512(v1, i1, qlo, qhi, zp));
                    if (cols == 32) _mm_storeu_si128((__m128i *)(br + hi), q1);
                    else _mm_storel_epi64((__m128i *)(br + hi), q1);
                }
            }
            return;
        }
#pragma clang loop unroll(full)
        for (int r = 0; r < rows; r++) {
            float *cr = c + r * ldc;
            if (cols >= 16) _mm512_storeu_ps(cr, q8_finish16(z0[r], o0, s0, b0, relu, relu6));
            else _mm256_storeu_ps(cr, q8_finish8(y0[r], p0, t0, d0, activation));
            if (cols == 32) _mm512_storeu_ps(cr + hi, q8_finish16(z1[r], o1, s1, b1, relu, relu6));
            else if (cols == 24) _mm256_storeu_ps(cr + hi, q8_finish8(y1[r], p1, t1, d1, activation));
        }
        return;
    }
    _Alignas(64) int32_t tmp[Q8_MR_VNNI * Q8_ACC_STRIDE];
#pragma clang loop unroll(full)
    for (int r = 0; r < rows; r++) {
        int32_t *t = tmp + r * Q8_ACC_STRIDE;
        if (cols >= 16) _mm512_store_si512(t, z0[r]);
        else _mm256_store_si256((__m256i *)t, y0[r]);
        if (cols == 32) _mm512_store_si512(t + 16, z1[r]);
        else if (cols == 24) _mm256_store_si256((__m256i *)(t + 16), y1[r]);
    }
    if (bytes != NULL) {
        // Bytes out, a partial panel (one pass over k: first and last): finished as floats, then
        // quantized by the portable steps (the same bits).
        _Alignas(64) float f[Q8_MR_VNNI * Q8_ACC_STRIDE];
        q8_finish_rows(tmp, rows, width, f, Q8_ACC_STRIDE, first, last, offset, scale, bias, activation);
        for (int r = 0; r < rows; r++) q8_quantize_c(f + r * Q8_ACC_STRIDE, width, 0.0f, bytes->inv, bytes->zero, bytes->c + r * bytes->ldc);
        return;
    }
    q8_finish_rows(tmp, rows, width, c, ldc, first, last, offset, scale, bias, activation);
}

// One function per row count and width, inlined into q8_kernel_vnni's switch when optimizing.
#define Q8_VNNI_FN(r, cols)                                                                                           \
    CGK_TARGET_VNNI Q8_INSTANCE void q8_vnni_##r##x##cols(Q8_KERNEL_PARAMS) {                                      \
        (void)rows;                                                                                                   \
        q8_vnni_rxc(r, cols, groups, qa, qs, wp, panel_stride, width, c, ldc, first, last, offset, scale, bias,        \
                    activation, bytes);                                                                               \
    }
#define Q8_VNNI_FNS(r) Q8_VNNI_FN(r, 32) Q8_VNNI_FN(r, 24) Q8_VNNI_FN(r, 16) Q8_VNNI_FN(r, 8)
Q8_VNNI_FNS(1) Q8_VNNI_FNS(2) Q8_VNNI_FNS(3) Q8_VNNI_FNS(4) Q8_VNNI_FNS(5) Q8_VNNI_FNS(6)
Q8_VNNI_FNS(7) Q8_VNNI_FNS(8) Q8_VNNI_FNS(9) Q8_VNNI_FNS(10) Q8_VNNI_FNS(11) Q8_VNNI_FNS(12)
#undef Q8_VNNI_FNS
#undef Q8_VNNI_FN

CGK_TARGET_VNNI static void q8_kernel_vnni(Q8_KERNEL_PARAMS) {
#define Q8_VNNI_CALL(r, cols)                                                                                         \
    q8_vnni_##r##x##cols(rows, groups, qa, qs, wp, panel_stride, width, c, ldc, first, last, offset, scale, bias, activation, bytes)
#define Q8_VNNI_ROWS(r)                                                                                               \
    case r:                                                                                                           \
        if (width > 24) Q8_VNNI_CALL(r, 32);                                                                          \
        else if (width > 16) Q8_VNNI_CALL(r, 24);                                                                     \
        else if (width > 8) Q8_VNNI_CALL(r, 16);                                                                      \
        else Q8_VNNI_CALL(r, 8);                                                                                      \
        break;
    switch (rows) {
        Q8_VNNI_ROWS(12) Q8_VNNI_ROWS(11) Q8_VNNI_ROWS(10) Q8_VNNI_ROWS(9) Q8_VNNI_ROWS(8) Q8_VNNI_ROWS(7)
        Q8_VNNI_ROWS(6) Q8_VNNI_ROWS(5) Q8_VNNI_ROWS(4) Q8_VNNI_ROWS(3) Q8_VNNI_ROWS(2) Q8_VNNI_ROWS(1)
    }
#undef Q8_VNNI_ROWS
#undef Q8_VNNI_CALL
}

CGK_TARGET_VNNI static void q8_gemm_vnni(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale, const float *inv_scales,
                                         int32_t zero, const int8_t *packed, const int32_t *offset, const float *scale,
                                         float *c, ptrdiff_t ldc, const float *bias, int activation, int32_t panel_begin,
                                         int32_t panel_end, const cgk_q8_io *io) {
    _Alignas(64) uint8_t qa[Q8_MR_VNNI * Q8_KC];
    q8_gemm_blocked(Q8_MR_VNNI, 2, 1, q8_quantize_avx512, q8_kernel_vnni, qa, m, n, k, a, lda, inv_scale, inv_scales, zero, packed, offset,
                    scale, c, ldc, bias, activation, panel_begin, panel_end, io);
}
#endif

void cgk_gemm_q8_io(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale, const float *inv_scales,
                    int32_t zero, const int8_t *packed, int wide, const int32_t *offset, const float *scale, float *c, ptrdiff_t ldc,
                    const float *bias, int activation, int32_t panel_begin, int32_t panel_end, const cgk_q8_io *io) {
    if (m <= 0 || n <= 0 || panel_begin >= panel_end) return;
    if (k < 0) k = 0;
    if (io != NULL && io->c != NULL && (k > Q8_KC || io->out_inv_scales == NULL)) return; // documented: not done
    zero = q8_clamp_zero(zero);
    cgk_q8_io clamped;
    if (io != NULL) { // the output's zero point clamped as cgk_q8_quantize clamps its own
        clamped = *io;
        clamped.out_zero = q8_clamp_zero(clamped.out_zero);
        io = &clamped;
    }
    switch (q8_variant()) {
#if CGK_X86
    case Q8_VNNI:
        q8_gemm_vnni(m, n, k, a, lda, inv_scale, inv_scales, zero, packed, offset, scale, c, ldc, bias, activation, panel_begin,
                     panel_end, io);
        break;
    case Q8_AVX2:
        q8_gemm_avx2(m, n, k, a, lda, inv_scale, inv_scales, zero, packed, wide, offset, scale, c, ldc, bias, activation, panel_begin,
                     panel_end, io);
        break;
#endif
    default:
        (void)wide; // the portable and VNNI kernels never saturate
        q8_gemm_generic(m, n, k, a, lda, inv_scale, inv_scales, zero, packed, offset, scale, c, ldc, bias, activation, panel_begin,
                        panel_end, io);
        break;
    }
}

void cgk_gemm_q8(int32_t m, int32_t n, int32_t k, const float *a, ptrdiff_t lda, float inv_scale, const float *inv_scales,
                 int32_t zero, const int8_t *packed, int wide, const int32_t *offset, const float *scale, float *c, ptrdiff_t ldc,
                 const float *bias, int activation, int32_t panel_begin, int32_t panel_end) {
    cgk_gemm_q8_io(m, n, k, a, lda, inv_scale, inv_scales, zero, packed, wide, offset, scale, c, ldc, bias, activation, panel_begin,
                   panel_end, NULL);
}
